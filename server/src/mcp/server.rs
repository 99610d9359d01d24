//! The MCP tools: each a thin translation into bangerd's API (the server
//! never touches a VM itself), confined to the sandboxes of one host
//! repository. Bad input is a tool error (`isError`) with a message an
//! agent can act on, never a failed server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::async_client::Client;
use jsonrpsee::core::client::Error as ClientError;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Serialize;

use super::guest::{self, Bounds, Capture, Progress, REFUSED};
use super::tools::*;
use crate::api::{BangerApiClient, ExecParams, VmView, code};
use crate::paths::Dirs;

/// Default and longest run of `exec` and `run_tests`.
const DEFAULT_TIMEOUT: u64 = 600;
const MAX_TIMEOUT: u64 = 3600;

/// What every session of the server shares.
pub(crate) struct Shared {
    pub(crate) dirs: Dirs,
    /// The host repository the server is confined to.
    pub(crate) root: PathBuf,
    /// `--read-only-host`: nothing writes to the host repository.
    pub(crate) read_only_host: bool,
    /// `--ephemeral`: the leases of the sandboxes this server made are
    /// held here, never released; they end with the server, and bangerd
    /// removes their VMs.
    pub(crate) ephemeral: bool,
    pub(crate) held:
        std::sync::Mutex<Vec<jsonrpsee::core::client::Subscription<crate::api::LeaseEvent>>>,
    daemon: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Shared {
    pub(crate) fn new(dirs: Dirs, root: PathBuf, read_only_host: bool) -> Shared {
        Shared {
            dirs,
            root,
            read_only_host,
            ephemeral: false,
            held: std::sync::Mutex::new(Vec::new()),
            daemon: tokio::sync::Mutex::new(None),
        }
    }

    /// With `on`, the sandboxes this server makes go when it ends.
    pub(crate) fn ephemeral(mut self, on: bool) -> Shared {
        self.ephemeral = on;
        self
    }
}

/// One MCP session's handler.
#[derive(Clone)]
pub(crate) struct Sandboxes {
    pub(super) shared: Arc<Shared>,
    tool_router: ToolRouter<Sandboxes>,
}

pub(super) type Reply<T> = Result<(String, T), String>;

/// A tool's answer: readable text plus the structured result, or a tool
/// error.
fn reply<T: Serialize>(r: Reply<T>) -> Result<CallToolResult, ErrorData> {
    match r {
        Ok((text, value)) => {
            let value = serde_json::to_value(value)
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(value);
            Ok(result)
        }
        Err(message) => Ok(CallToolResult::error(vec![ContentBlock::text(message)])),
    }
}

pub(super) use crate::client::daemon_error;

pub(super) fn progress(ctx: &RequestContext<RoleServer>) -> Option<Progress> {
    ctx.meta.get_progress_token().map(|token| Progress {
        peer: ctx.peer.clone(),
        token,
    })
}

/// The progress notifications of one call (when it asked for them): each
/// message with a `progress` one higher than the last, as MCP requires.
pub(super) struct Reporter {
    to: Option<Progress>,
    sent: std::sync::atomic::AtomicU64,
}

impl Reporter {
    pub(super) fn new(ctx: &RequestContext<RoleServer>) -> Reporter {
        Reporter {
            to: progress(ctx),
            sent: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(super) async fn say(&self, message: impl Into<String>) {
        let Some(p) = &self.to else { return };
        let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let _ = p
            .peer
            .notify_progress(
                rmcp::model::ProgressNotificationParam::new(p.token.clone(), n as f64)
                    .with_message(message),
            )
            .await;
    }
}

pub(super) fn timeout(secs: Option<u64>) -> Result<Duration, String> {
    match secs.unwrap_or(DEFAULT_TIMEOUT) {
        0 => Err("timeout_secs must be at least 1".into()),
        s if s > MAX_TIMEOUT => Err(format!("timeout_secs is at most {MAX_TIMEOUT}")),
        s => Ok(Duration::from_secs(s)),
    }
}

impl Sandboxes {
    pub(crate) fn new(shared: Arc<Shared>) -> Sandboxes {
        let mut tool_router = Self::tool_router();
        if shared.read_only_host {
            tool_router.remove_route("apply_changes");
        }
        Sandboxes {
            shared,
            tool_router,
        }
    }

    /// The tools this server lists.
    pub(crate) fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tool_router.list_all()
    }

    pub(super) async fn daemon(&self) -> Result<Arc<Client>, String> {
        let mut slot = self.shared.daemon.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_connected()) {
            return Ok(c.clone());
        }
        let c = crate::client::connect_or_start(&self.shared.dirs)
            .await
            .map_err(|e| format!("cannot reach bangerd: {e}"))?;
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }

    pub(super) fn root(&self) -> &Path {
        &self.shared.root
    }

    /// The sandbox named `name`, when it holds this server's repository,
    /// and the guest path of its workspace.
    pub(super) async fn sandbox(
        &self,
        name: &str,
    ) -> Result<(Arc<Client>, VmView, String), String> {
        if name.is_empty() {
            return Err("sandbox is empty; name one from sandbox_list".into());
        }
        let daemon = self.daemon().await?;
        let view = daemon.vm_show(name.to_string()).await.map_err(|e| match e {
            ClientError::Call(obj) if obj.code() == code::NOT_FOUND => format!(
                "no sandbox named {name:?}; sandbox_list shows this repository's sandboxes, sandbox_create makes one"
            ),
            other => daemon_error(other),
        })?;
        let ours = view
            .workspace
            .as_ref()
            .filter(|w| Path::new(&w.source) == self.root());
        let Some(ws) = ours else {
            return Err(format!(
                "{name:?} is not a sandbox of {} (this server serves only that repository's sandboxes)",
                self.root().display()
            ));
        };
        let guest_path = ws.guest_path.clone();
        Ok((daemon, view, guest_path))
    }

    /// Like `sandbox`, and the sandbox must be running.
    pub(super) async fn running(
        &self,
        name: &str,
    ) -> Result<(Arc<Client>, VmView, String), String> {
        let (daemon, view, path) = self.sandbox(name).await?;
        if view.state != "running" {
            return Err(format!(
                "sandbox {name:?} is {}; it must be running (banger vm start {name})",
                view.state
            ));
        }
        Ok((daemon, view, path))
    }

    /// Live sync of the whole workspace, host → guest: files the guest
    /// changed since the last sync are kept and reported as conflicts.
    pub(super) async fn sync_all(
        &self,
        daemon: &Client,
        vm: &str,
    ) -> Result<crate::api::SyncResult, String> {
        daemon
            .vm_workspace_sync(crate::api::SyncParams {
                vm: vm.to_string(),
                paths: None,
                force: false,
            })
            .await
            .map_err(daemon_error)
    }

    /// Runs a file script (`guest::*_script`) in the running sandbox
    /// `vm`: `ROOT ARGS..` (the root its workspace), keeping `head` bytes
    /// of its stdout.
    pub(super) async fn script(
        &self,
        vm: &str,
        script: String,
        args: Vec<String>,
        stdin: Option<Vec<u8>>,
        head: usize,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Capture, String> {
        let (daemon, _, guest_path) = self.running(vm).await?;
        let mut argv = vec![
            "sh".into(),
            "-c".into(),
            script,
            "banger-mcp".into(),
            guest_path,
        ];
        argv.extend(args);
        let ran = guest::run(
            &daemon,
            ExecParams {
                vm: vm.to_string(),
                argv,
                cwd: Some("/".into()),
                ..ExecParams::default()
            },
            stdin,
            Bounds {
                head,
                tail: 0,
                timeout: Duration::from_secs(120),
            },
            None,
            &ctx.ct,
        )
        .await?;
        match ran.exit_code {
            0 => Ok(ran.stdout),
            REFUSED => Err(ran.stderr.text().trim().to_string()),
            code => Err(format!(
                "the guest side of the tool failed (exit code {code}): {}",
                ran.stderr.text().trim()
            )),
        }
    }
}

#[tool_router]
impl Sandboxes {
    /// Creates a sandbox: a fresh microVM with this repository's
    /// git-tracked files in its workspace. Returns its `name`, the
    /// `sandbox` argument of the other tools.
    #[tool(
        output_schema = schema_for_output::<Created>(),
        description = "Create a sandbox: a new Linux microVM holding the repository's git-tracked files in its workspace (the host is never touched). It runs the repository's .banger.toml or devcontainer.json setup first when it has one. No network unless nat or allow is given. Returns the sandbox's name, which every other tool takes as `sandbox`. Booting takes seconds; progress is reported."
    )]
    async fn sandbox_create(
        &self,
        Parameters(args): Parameters<CreateArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        // rmcp cancels the token and lets the task run on: dropping the
        // create ends its lease, and bangerd removes the half-made VM.
        let r = tokio::select! {
            r = self.create(args, &ctx) => r,
            _ = ctx.ct.cancelled() => Err("cancelled: the sandbox being made is removed".into()),
        };
        reply(r)
    }

    #[tool(
        output_schema = schema_for_output::<SandboxList>(),
        description = "List this repository's sandboxes with their state."
    )]
    async fn sandbox_list(&self) -> Result<CallToolResult, ErrorData> {
        reply(self.list_sandboxes().await)
    }

    #[tool(
        output_schema = schema_for_output::<Done>(),
        description = "Delete a sandbox: stops its VM and removes it with its disks. Guest changes not applied with apply_changes are lost.",
        annotations(destructive_hint = true)
    )]
    async fn sandbox_delete(
        &self,
        Parameters(args): Parameters<SandboxArg>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.delete(args).await)
    }

    #[tool(
        output_schema = schema_for_output::<Done>(),
        description = "Stop a sandbox's VM. Its files stay; start it again with banger vm start NAME."
    )]
    async fn sandbox_stop(
        &self,
        Parameters(args): Parameters<SandboxArg>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.stop(args).await)
    }

    #[tool(
        output_schema = schema_for_output::<Exec>(),
        description = "Run a command in the sandbox's workspace: `argv` (program and arguments, no shell) or `command` (a shell line). Returns exit_code, stdout and stderr (long output keeps its start and end). Output is streamed as progress notifications while it runs; cancelling the call kills the command."
    )]
    async fn exec(
        &self,
        Parameters(args): Parameters<ExecArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.exec_tool(args, &ctx).await)
    }

    #[tool(
        output_schema = schema_for_output::<FileContent>(),
        description = "Read a text file of the sandbox's workspace. `path` is relative to the workspace; links that lead out of it are refused.",
        annotations(read_only_hint = true)
    )]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.read(args, &ctx).await)
    }

    #[tool(
        output_schema = schema_for_output::<Written>(),
        description = "Write a file in the sandbox's workspace (the whole content; missing directories are made). `path` is relative to the workspace; .git and links out of it are refused. The host repository is not touched: see changes and apply_changes."
    )]
    async fn write_file(
        &self,
        Parameters(args): Parameters<WriteArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.write(args, &ctx).await)
    }

    #[tool(
        output_schema = schema_for_output::<Listing>(),
        description = "List a directory of the sandbox's workspace (default: its root), `depth` levels deep.",
        annotations(read_only_hint = true)
    )]
    async fn list_files(
        &self,
        Parameters(args): Parameters<ListArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.list(args, &ctx).await)
    }

    #[tool(
        output_schema = schema_for_output::<Matches>(),
        description = "Search the sandbox's workspace for lines containing `pattern` (plain text, or an extended regular expression with regex=true). Returns file, line and text of each match.",
        annotations(read_only_hint = true)
    )]
    async fn search_files(
        &self,
        Parameters(args): Parameters<SearchArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.search(args, &ctx).await)
    }

    #[tool(
        output_schema = schema_for_output::<Synced>(),
        description = "Bring the host repository's current files into the sandbox (live sync). Files the guest changed since the last sync are never overwritten: they are reported as conflicts."
    )]
    async fn sync(
        &self,
        Parameters(args): Parameters<SandboxArg>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.sync_host(args).await)
    }

    #[tool(
        output_schema = schema_for_output::<Changes>(),
        description = "What the guest changed in its workspace since the last sync, as a unified diff per file (from the host's copy to the guest's). Nothing is written.",
        annotations(read_only_hint = true)
    )]
    async fn changes(
        &self,
        Parameters(args): Parameters<SandboxArg>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.changes_tool(args).await)
    }

    #[tool(
        output_schema = schema_for_output::<Applied>(),
        description = "Bring the guest's changes into the host repository's working tree, validated first (paths inside the repository, nothing under .git, sizes bounded) and refused whole if one breaks a rule. With dry_run=true only report which files would change."
    )]
    async fn apply_changes(
        &self,
        Parameters(args): Parameters<ApplyArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.apply(args).await)
    }

    #[tool(
        output_schema = schema_for_output::<Ports>(),
        description = "The sandbox's listening TCP and UDP ports, with the host addresses that reach them.",
        annotations(read_only_hint = true)
    )]
    async fn ports(
        &self,
        Parameters(args): Parameters<SandboxArg>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.ports_tool(args).await)
    }

    #[tool(
        output_schema = schema_for_output::<Tests>(),
        description = "Run the repository's tests in the sandbox (.banger.toml test-command, else detected: cargo test, go test, npm test, pytest, bats, make test), after syncing the host's files. Returns the exit code, pass/fail counts and each failure's file, line and message. `filter` narrows the run to a test or a file."
    )]
    async fn run_tests(
        &self,
        Parameters(args): Parameters<TestArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.tests(args, &ctx).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Sandboxes {
    /// The router's call, with a panic in a tool turned into a tool error:
    /// one bad call must not leave its client waiting or end the server.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        use futures_util::FutureExt as _;
        let name = request.name.clone();
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        match std::panic::AssertUnwindSafe(self.tool_router.call(tcc))
            .catch_unwind()
            .await
        {
            Ok(r) => r,
            Err(_) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "{name} failed inside banger (a bug; the server goes on): see the server's stderr"
            ))])
            .into()),
        }
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(rmcp::model::Implementation::new(
                "banger",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(format!(
                "Sandboxes of the repository {}: Linux microVMs holding its git-tracked files. Create one with sandbox_create, run commands with exec and tests with run_tests, edit with write_file, review with changes; apply_changes brings the guest's edits into the host repository{}.",
                self.root().display(),
                if self.shared.read_only_host {
                    " (turned off here: --read-only-host)"
                } else {
                    ""
                }
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_bounded() {
        assert_eq!(timeout(None).unwrap(), Duration::from_secs(600));
        assert!(timeout(Some(0)).is_err());
        assert!(timeout(Some(MAX_TIMEOUT + 1)).is_err());
    }
}
