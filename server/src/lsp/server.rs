//! The language server: state, the LSP handlers, the sync worker, the
//! file watcher and the guest-change poller.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonrpsee::async_client::Client as DaemonClient;
use jsonrpsee::core::client::Error as ClientError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tower_lsp_server::jsonrpc::{Error as RpcError, ErrorCode, Result as RpcResult};
use tower_lsp_server::ls_types::notification::Notification;
use tower_lsp_server::ls_types::*;
use tower_lsp_server::{Client, LanguageServer, LspService, Server};

use super::detect;
use super::edits::{self, GuestFile};
use super::matchers::{self, Severity};
use super::settings::{self, Settings};
use crate::api::{
    AcceptEntry, BangerApiClient, CreateParams, ExecEvent, ExecParams, GuestChanges, OpEvent,
    PrepareParams, SyncParams, SyncResult, VmView, code,
};
use crate::paths::Dirs;
use crate::workspace::sync::Change;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How long a quiet pause ends a burst of saves and file events.
const COALESCE: Duration = Duration::from_millis(30);
/// The longest a burst is gathered before it syncs anyway.
const COALESCE_MAX: Duration = Duration::from_millis(500);
/// How often the guest is asked what it changed.
const POLL: Duration = Duration::from_millis(1000);
/// Output kept from a run for the problem matchers.
const KEEP_OUTPUT: usize = 8 << 20;

/// `banger/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusParams {
    /// The VM the repository is bound to (or will be).
    pub vm: String,
    /// Its state: `absent`, `stopped`, `starting`, `running`, ….
    pub vm_state: String,
    /// `synced`, `syncing`, `conflict` or `error`.
    pub sync: String,
    /// What the user should know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Files the guest changed since the last sync.
    pub guest_changes: usize,
    /// Files shipped by the last sync.
    pub files_sent: u64,
}

enum StatusNotification {}
impl Notification for StatusNotification {
    type Params = StatusParams;
    const METHOD: &'static str = "banger/status";
}

/// `banger/output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputParams {
    /// The run.
    pub run_id: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Text (invalid UTF-8 replaced).
    pub text: String,
}

enum OutputNotification {}
impl Notification for OutputNotification {
    type Params = OutputParams;
    const METHOD: &'static str = "banger/output";
}

/// A request for the sync worker.
enum SyncJob {
    /// These paths may have changed (empty: only check HEAD).
    Paths(Vec<String>, u64),
    /// Reconcile everything.
    Full(u64),
}

struct Inner {
    client: Client,
    dirs: Dirs,
    daemon: tokio::sync::Mutex<Option<Arc<DaemonClient>>>,
    root: Mutex<Option<PathBuf>>,
    options: Mutex<Value>,
    settings: Mutex<Settings>,
    /// The bound VM's name once bound.
    vm: Mutex<Option<String>>,
    bind_lock: tokio::sync::Mutex<()>,
    status: Mutex<StatusParams>,
    sync_tx: mpsc::UnboundedSender<SyncJob>,
    requested: AtomicU64,
    done: watch::Sender<u64>,
    guest_changes: Mutex<Vec<Change>>,
    conflicts: Mutex<BTreeSet<String>>,
    docs: Mutex<HashMap<Uri, (i32, String)>>,
    test_diags: Mutex<HashMap<Uri, Vec<Diagnostic>>>,
    conflict_diags: Mutex<HashMap<Uri, Diagnostic>>,
    runs: AtomicU64,
    running: AtomicU64,
    progress_ok: AtomicBool,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

/// The LSP service's handle.
struct Backend(Arc<Inner>);

/// Serves LSP on stdin/stdout until the client exits.
pub async fn serve(dirs: Dirs) {
    let (sync_tx, sync_rx) = mpsc::unbounded_channel();
    let (service, socket) = LspService::new(|client| {
        let inner = Arc::new(Inner {
            client,
            dirs,
            daemon: tokio::sync::Mutex::new(None),
            root: Mutex::new(None),
            options: Mutex::new(Value::Null),
            settings: Mutex::new(Settings::default()),
            vm: Mutex::new(None),
            bind_lock: tokio::sync::Mutex::new(()),
            status: Mutex::new(StatusParams {
                sync: "synced".into(),
                vm_state: "absent".into(),
                ..StatusParams::default()
            }),
            sync_tx,
            requested: AtomicU64::new(0),
            done: watch::channel(0).0,
            guest_changes: Mutex::new(Vec::new()),
            conflicts: Mutex::new(BTreeSet::new()),
            docs: Mutex::new(HashMap::new()),
            test_diags: Mutex::new(HashMap::new()),
            conflict_diags: Mutex::new(HashMap::new()),
            runs: AtomicU64::new(0),
            running: AtomicU64::new(0),
            progress_ok: AtomicBool::new(false),
            watcher: Mutex::new(None),
        });
        tokio::spawn(sync_worker(inner.clone(), sync_rx));
        tokio::spawn(poller(inner.clone()));
        Backend(inner)
    });
    Server::new(tokio::io::stdin(), tokio::io::stdout(), socket)
        .serve(service)
        .await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn rpc_error(message: impl Into<String>) -> RpcError {
    RpcError {
        code: ErrorCode::ServerError(-32000),
        message: message.into().into(),
        data: None,
    }
}

fn daemon_error(e: ClientError) -> String {
    match e {
        ClientError::Call(obj) => obj.message().to_string(),
        other => format!("bangerd: {other}"),
    }
}

/// Runs a handler as its own task: a panic becomes an error reply, and
/// dropping the future (`$/cancelRequest`) aborts the task, which drops
/// whatever it holds (a guest command's stream: the daemon then kills the
/// guest process group).
async fn guarded<T: Send + 'static>(
    fut: impl std::future::Future<Output = RpcResult<T>> + Send + 'static,
) -> RpcResult<T> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(fut);
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(r) => {
            // tower-lsp-server merges notifications and responses from two
            // queues; give the notifications this request sent (output,
            // progress end) a moment to go out before its result does.
            tokio::time::sleep(Duration::from_millis(5)).await;
            r
        }
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!("a request panicked: {what}");
            Err(rpc_error(format!(
                "banger lsp: this request failed unexpectedly (a bug: {what}); the server keeps running"
            )))
        }
        Err(_) => Err(RpcError::request_cancelled()),
    }
}

/// A work-done progress, if the client takes them.
struct Progress {
    inner: Arc<Inner>,
    token: Option<ProgressToken>,
}

impl Progress {
    async fn begin(inner: &Arc<Inner>, given: Option<ProgressToken>, title: &str) -> Progress {
        let token = match given {
            Some(t) => Some(t),
            None if inner.progress_ok.load(Ordering::Relaxed) => {
                let n = inner.runs.fetch_add(1, Ordering::Relaxed);
                let t = ProgressToken::String(format!("banger-{}-{n}", std::process::id()));
                // A client that never answers must not hold the work up.
                tokio::time::timeout(
                    Duration::from_secs(5),
                    inner.client.create_work_done_progress(t.clone()),
                )
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|_| t)
            }
            None => None,
        };
        if let Some(t) = &token {
            inner
                .client
                .send_notification::<notification::Progress>(ProgressParams {
                    token: t.clone(),
                    value: ProgressParamsValue::WorkDone(WorkDoneProgress::Begin(
                        WorkDoneProgressBegin {
                            title: title.into(),
                            cancellable: Some(true),
                            message: None,
                            percentage: None,
                        },
                    )),
                })
                .await;
        }
        Progress {
            inner: inner.clone(),
            token,
        }
    }

    async fn report(&self, message: &str) {
        if let Some(t) = &self.token {
            self.inner
                .client
                .send_notification::<notification::Progress>(ProgressParams {
                    token: t.clone(),
                    value: ProgressParamsValue::WorkDone(WorkDoneProgress::Report(
                        WorkDoneProgressReport {
                            message: Some(message.into()),
                            cancellable: Some(true),
                            percentage: None,
                        },
                    )),
                })
                .await;
        }
    }

    async fn end(self, message: &str) {
        if let Some(t) = &self.token {
            self.inner
                .client
                .send_notification::<notification::Progress>(ProgressParams {
                    token: t.clone(),
                    value: ProgressParamsValue::WorkDone(WorkDoneProgress::End(
                        WorkDoneProgressEnd {
                            message: Some(message.into()),
                        },
                    )),
                })
                .await;
        }
    }
}

impl Inner {
    fn root(&self) -> Result<PathBuf, RpcError> {
        lock(&self.root).clone().ok_or_else(|| {
            rpc_error("banger lsp: the workspace folder is not inside a git repository")
        })
    }

    async fn daemon(&self) -> Result<Arc<DaemonClient>, RpcError> {
        let mut slot = self.daemon.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_connected()) {
            return Ok(c.clone());
        }
        let c = crate::cli::client::connect_or_start(&self.dirs)
            .await
            .map_err(|e| rpc_error(format!("cannot reach bangerd: {e}")))?;
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn set_status(&self, f: impl FnOnce(&mut StatusParams)) {
        self.update_status(f, false).await;
    }

    /// Updates the status and notifies when it changed (or always, with
    /// `always`: the end of every sync is reported, with its own count).
    async fn update_status(&self, f: impl FnOnce(&mut StatusParams), always: bool) {
        let now = {
            let mut s = lock(&self.status);
            let before = s.clone();
            f(&mut s);
            (always || *s != before).then(|| s.clone())
        };
        if let Some(s) = now {
            self.client.send_notification::<StatusNotification>(s).await;
        }
    }

    /// The VM name this repository binds to (without creating anything).
    async fn vm_name(&self, daemon: &DaemonClient, root: &Path) -> Result<String, RpcError> {
        if let Some(vm) = lock(&self.settings).vm.clone() {
            return Ok(vm);
        }
        let vms = daemon
            .vm_list(true)
            .await
            .map_err(|e| rpc_error(daemon_error(e)))?;
        Ok(settings::choose_vm_name(
            root,
            vms.iter().map(|v| {
                (
                    v.name.as_str(),
                    v.workspace.as_ref().map(|w| w.source.as_str()),
                )
            }),
        ))
    }

    fn bound(&self) -> Option<String> {
        lock(&self.vm).clone()
    }

    /// Binds to the sandbox: creates and starts the VM, ships the
    /// workspace, starts watching. Idempotent.
    async fn ensure_bound(
        self: &Arc<Self>,
        progress: Option<&Progress>,
    ) -> Result<String, RpcError> {
        if let Some(vm) = self.bound() {
            return Ok(vm);
        }
        let _g = self.bind_lock.lock().await;
        if let Some(vm) = self.bound() {
            return Ok(vm);
        }
        let result = self.bind(progress).await;
        if let Err(e) = &result {
            self.set_status(|s| {
                s.sync = "error".into();
                s.message = Some(e.message.to_string());
            })
            .await;
        }
        result
    }

    async fn bind(self: &Arc<Self>, progress: Option<&Progress>) -> Result<String, RpcError> {
        let root = self.root()?;
        let daemon = self.daemon().await?;
        let name = self.vm_name(&daemon, &root).await?;
        self.set_status(|s| s.vm = name.clone()).await;
        let say = |m: String| async move {
            if let Some(p) = progress {
                p.report(&m).await;
            }
        };
        let view = match daemon.vm_show(name.clone()).await {
            Ok(v) => Some(v),
            Err(ClientError::Call(obj)) if obj.code() == code::NOT_FOUND => None,
            Err(e) => return Err(rpc_error(daemon_error(e))),
        };
        let view = match view {
            None => {
                say(format!("creating sandbox {name}")).await;
                self.set_status(|s| s.vm_state = "starting".into()).await;
                let (vcpu, memory_mib) = {
                    let s = lock(&self.settings);
                    (s.vcpu, s.memory_mib)
                };
                let params = CreateParams {
                    name: Some(name.clone()),
                    vcpu,
                    memory_mib,
                    start: true,
                    delete_on_failure: true,
                    ..CreateParams::default()
                };
                let sub = daemon
                    .vm_create(params)
                    .await
                    .map_err(|e| rpc_error(daemon_error(e)))?;
                self.follow_op(sub, progress).await?
            }
            Some(v) if v.state != "running" => {
                say(format!("starting sandbox {name}")).await;
                self.set_status(|s| s.vm_state = "starting".into()).await;
                let sub = daemon
                    .vm_start(name.clone())
                    .await
                    .map_err(|e| rpc_error(daemon_error(e)))?;
                self.follow_op(sub, progress).await?
            }
            Some(v) => v,
        };
        self.set_status(|s| s.vm_state = view.state.clone()).await;
        let ours = view
            .workspace
            .as_ref()
            .is_some_and(|w| Path::new(&w.source) == root);
        self.set_status(|s| s.sync = "syncing".into()).await;
        if ours {
            say("syncing the workspace".into()).await;
            *lock(&self.vm) = Some(name.clone());
            let r = daemon
                .vm_workspace_sync(SyncParams {
                    vm: name.clone(),
                    paths: None,
                    force: false,
                })
                .await
                .map_err(|e| rpc_error(daemon_error(e)))?;
            self.after_sync(&root, None, Ok(r)).await;
        } else {
            say("shipping the workspace".into()).await;
            let plan = daemon
                .vm_workspace_prepare(PrepareParams {
                    vm: name.clone(),
                    path: root.display().to_string(),
                    ..PrepareParams::default()
                })
                .await
                .map_err(|e| match e {
                    // The VM holds another repository: the daemon never
                    // replaces it unasked (its guest edits would be lost).
                    ClientError::Call(obj) if obj.code() == code::CONFLICT => rpc_error(format!(
                        "{}; or bind this repository to another sandbox (the banger.vm setting)",
                        obj.message()
                    )),
                    other => rpc_error(daemon_error(other)),
                })?;
            *lock(&self.vm) = Some(name.clone());
            self.set_status(|s| {
                s.sync = "synced".into();
                s.message = None;
                s.files_sent = plan.files.len() as u64;
            })
            .await;
        }
        self.start_watcher(&root);
        Ok(name)
    }

    async fn follow_op(
        &self,
        mut sub: jsonrpsee::core::client::Subscription<OpEvent>,
        progress: Option<&Progress>,
    ) -> Result<VmView, RpcError> {
        while let Some(ev) = sub.next().await {
            match ev.map_err(|e| rpc_error(e.to_string()))? {
                OpEvent::Progress { message } => {
                    if let Some(p) = progress {
                        p.report(&message).await;
                    }
                }
                OpEvent::Vm { vm } => return Ok(*vm),
                OpEvent::Failed { message, .. } => return Err(rpc_error(message)),
                OpEvent::Image { .. } => {}
            }
        }
        Err(rpc_error("bangerd closed the operation before it finished"))
    }

    fn start_watcher(self: &Arc<Self>, root: &Path) {
        if !lock(&self.settings).sync_on_save {
            return;
        }
        use notify::Watcher as _;
        let inner = Arc::downgrade(self);
        let base = root.to_path_buf();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            let Some(inner) = inner.upgrade() else { return };
            let mut paths = Vec::new();
            let mut head = false;
            for p in &ev.paths {
                let Ok(rel) = p.strip_prefix(&base) else {
                    continue;
                };
                let rel = rel.to_string_lossy().to_string();
                match watched(&rel) {
                    Watched::File => paths.push(rel),
                    Watched::GitState => head = true,
                    Watched::Ignore => {}
                }
            }
            if !paths.is_empty() || head {
                inner.request_sync(Some(paths));
            }
        };
        match notify::RecommendedWatcher::new(handler, notify::Config::default()) {
            Ok(mut w) => {
                if let Err(e) = w.watch(root, notify::RecursiveMode::Recursive) {
                    tracing::warn!("cannot watch {}: {e}", root.display());
                }
                *lock(&self.watcher) = Some(w);
            }
            Err(e) => tracing::warn!("no file watcher: {e}"),
        }
    }

    /// Queues a sync (paths, or everything with `None`); returns its
    /// generation.
    fn request_sync(&self, paths: Option<Vec<String>>) -> u64 {
        let generation = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let job = match paths {
            Some(p) => SyncJob::Paths(p, generation),
            None => SyncJob::Full(generation),
        };
        let _ = self.sync_tx.send(job);
        generation
    }

    /// Waits until every sync requested so far has run.
    async fn wait_synced(&self) {
        let target = self.requested.load(Ordering::SeqCst);
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d >= target).await;
    }

    /// Records a sync's outcome. `scope`: the paths it decided (`None`: a
    /// full reconcile, which decides every conflict again); conflicts
    /// outside the scope stand until a sync decides them.
    async fn after_sync(
        &self,
        root: &Path,
        scope: Option<&BTreeSet<String>>,
        r: Result<SyncResult, String>,
    ) {
        match r {
            Ok(r) => {
                let conflicts: BTreeSet<String> = {
                    let mut c = lock(&self.conflicts);
                    let mut next: BTreeSet<String> = match scope {
                        Some(scope) => c.difference(scope).cloned().collect(),
                        None => BTreeSet::new(),
                    };
                    next.extend(r.conflicts.iter().cloned());
                    *c = next.clone();
                    next
                };
                self.publish_conflicts(root, &conflicts).await;
                let (sync, message) = if !conflicts.is_empty() {
                    (
                        "conflict",
                        Some(format!(
                            "changed in the sandbox and here: {}; use \"Apply guest changes\" or \"Overwrite guest copy\"",
                            conflicts.iter().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    )
                } else {
                    ("synced", r.warning.clone())
                };
                self.update_status(
                    |s| {
                        s.sync = sync.into();
                        s.message = message;
                        s.files_sent = r.files_sent + r.deleted;
                    },
                    true,
                )
                .await;
            }
            Err(m) => {
                self.set_status(|s| {
                    s.sync = "error".into();
                    s.message = Some(m);
                })
                .await;
            }
        }
    }

    async fn publish(&self, uri: &Uri) {
        let mut all = lock(&self.test_diags).get(uri).cloned().unwrap_or_default();
        if let Some(d) = lock(&self.conflict_diags).get(uri) {
            all.push(d.clone());
        }
        self.client
            .publish_diagnostics(uri.clone(), all, None)
            .await;
    }

    async fn publish_conflicts(&self, root: &Path, conflicts: &BTreeSet<String>) {
        let new: HashMap<Uri, Diagnostic> = conflicts
            .iter()
            .filter_map(|p| Uri::from_file_path(root.join(p)).map(|u| (u, p)))
            .map(|(u, p)| {
                let d = Diagnostic {
                    range: Range::new(Position::new(0, 0), Position::new(0, 0)),
                    severity: Some(DiagnosticSeverity::WARNING),
                    code: Some(NumberOrString::String("guest-conflict".into())),
                    source: Some("banger".into()),
                    message: format!(
                        "{p} changed in the sandbox since the last sync; it was not overwritten. Apply guest changes, or overwrite the guest copy."
                    ),
                    ..Diagnostic::default()
                };
                (u, d)
            })
            .collect();
        let touched: Vec<Uri> = {
            let mut cd = lock(&self.conflict_diags);
            let mut touched: Vec<Uri> = cd.keys().cloned().collect();
            touched.extend(new.keys().cloned());
            *cd = new;
            touched
        };
        for u in touched {
            self.publish(&u).await;
        }
    }

    async fn sync_now(
        &self,
        job_paths: Option<Vec<String>>,
        force: bool,
    ) -> Result<SyncResult, String> {
        let vm = self.bound().ok_or("no sandbox bound")?;
        let daemon = self.daemon().await.map_err(|e| e.message.to_string())?;
        daemon
            .vm_workspace_sync(SyncParams {
                vm,
                paths: job_paths,
                force,
            })
            .await
            .map_err(daemon_error)
    }

    /// Runs a guest command in the workspace, streaming `banger/output`.
    /// Returns the run id, the exit code and the output kept.
    async fn run(self: &Arc<Self>, argv: Vec<String>) -> Result<(String, i32, String), RpcError> {
        let vm = self.bound().ok_or_else(|| rpc_error("no sandbox bound"))?;
        let daemon = self.daemon().await?;
        let run_id = format!("run-{}", self.runs.fetch_add(1, Ordering::Relaxed) + 1);
        let mut sub = daemon
            .vm_exec(ExecParams {
                vm,
                argv,
                ..ExecParams::default()
            })
            .await
            .map_err(|e| rpc_error(daemon_error(e)))?;
        self.running.fetch_add(1, Ordering::SeqCst);
        struct Running<'a>(&'a AtomicU64);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _running = Running(&self.running);
        let mut kept = String::new();
        loop {
            let ev = sub
                .next()
                .await
                .ok_or_else(|| rpc_error("bangerd closed the command's stream"))?
                .map_err(|e| rpc_error(e.to_string()))?;
            let (stream, data) = match ev {
                ExecEvent::Started { .. } => continue,
                ExecEvent::Stdout { data } => ("stdout", data),
                ExecEvent::Stderr { data } => ("stderr", data),
                ExecEvent::Exited { code, signal, .. } => {
                    let status = banger_agent::protocol::ExitStatus { code, signal };
                    return Ok((run_id, status.shell_code(), kept));
                }
                ExecEvent::Failed { message, .. } => return Err(rpc_error(message)),
            };
            let bytes = B64.decode(data).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if kept.len() < KEEP_OUTPUT {
                kept.push_str(&text);
            }
            self.client
                .send_notification::<OutputNotification>(OutputParams {
                    run_id: run_id.clone(),
                    stream: stream.into(),
                    text,
                })
                .await;
        }
    }

    /// Before a run: everything saved is in the guest.
    async fn settle(self: &Arc<Self>) {
        if !lock(&self.settings).sync_on_save {
            self.request_sync(None);
        }
        self.wait_synced().await;
    }

    async fn clear_test_diagnostics(&self) {
        let old: Vec<Uri> = lock(&self.test_diags).drain().map(|(u, _)| u).collect();
        for u in old {
            self.publish(&u).await;
        }
    }

    async fn run_tests(
        self: &Arc<Self>,
        filter: Option<String>,
        token: Option<ProgressToken>,
    ) -> RpcResult<Value> {
        let progress = Progress::begin(self, token, "Banger: running tests").await;
        let result = self.run_tests_inner(filter, &progress).await;
        progress
            .end(match &result {
                Ok(v) if v["exitCode"] == 0 => "passed",
                Ok(_) => "failed",
                Err(_) => "could not run",
            })
            .await;
        result
    }

    async fn run_tests_inner(
        self: &Arc<Self>,
        filter: Option<String>,
        progress: &Progress,
    ) -> RpcResult<Value> {
        let root = self.root()?;
        let configured = lock(&self.settings).test_command.clone();
        let cmd = detect::test_command(&root, configured.as_deref())
            .ok_or_else(|| rpc_error(detect::NONE_FOUND))?;
        self.ensure_bound(Some(progress)).await?;
        progress.report("syncing").await;
        self.settle().await;
        self.clear_test_diagnostics().await;
        progress.report(&format!("running {}", cmd.line)).await;
        let started = Instant::now();
        let (run_id, exit_code, output) = self.run(cmd.argv(filter.as_deref())).await?;
        let duration_ms = started.elapsed().as_millis() as u64;
        let summary = matchers::summary(&output);
        let problems = matchers::problems(&output);
        let index = tracked_files(&root);
        let mut by_uri: HashMap<Uri, Vec<Diagnostic>> = HashMap::new();
        for p in problems {
            let Some(host) = host_path(&root, &p.file, &index) else {
                continue;
            };
            let Some(uri) = Uri::from_file_path(&host) else {
                continue;
            };
            let line = p.line.saturating_sub(1);
            let col = p.col.map(|c| c.saturating_sub(1)).unwrap_or(0);
            by_uri.entry(uri).or_default().push(Diagnostic {
                range: Range::new(
                    Position::new(line, col),
                    Position::new(line, col.max(1) + 200),
                ),
                severity: Some(match p.severity {
                    Severity::Error => DiagnosticSeverity::ERROR,
                    Severity::Warning => DiagnosticSeverity::WARNING,
                    Severity::Info => DiagnosticSeverity::INFORMATION,
                }),
                source: Some("banger".into()),
                message: p.message,
                ..Diagnostic::default()
            });
        }
        let uris: Vec<Uri> = by_uri.keys().cloned().collect();
        *lock(&self.test_diags) = by_uri;
        for u in uris {
            self.publish(&u).await;
        }
        Ok(json!({
            "runId": run_id,
            "exitCode": exit_code,
            "passed": summary.passed,
            "failed": summary.failed,
            "durationMs": duration_ms,
        }))
    }

    async fn refresh_guest_changes(&self) -> Result<GuestChanges, String> {
        let vm = self.bound().ok_or("no sandbox bound")?;
        let daemon = self.daemon().await.map_err(|e| e.message.to_string())?;
        let changes = daemon
            .vm_workspace_changes(vm)
            .await
            .map_err(daemon_error)?;
        let n = changes.changes.len();
        *lock(&self.guest_changes) = changes.changes.clone();
        self.set_status(|s| s.guest_changes = n).await;
        Ok(changes)
    }

    async fn apply_guest_changes(self: &Arc<Self>) -> RpcResult<Value> {
        let root = self.root()?;
        let vm = self.ensure_bound(None).await?;
        self.wait_synced().await;
        let changes = self.refresh_guest_changes().await.map_err(rpc_error)?;
        if !changes.refused.is_empty() {
            let m = format!(
                "refused the guest's changes: paths outside the repository or under .git: {}; nothing was written",
                changes.refused.join(", ")
            );
            self.client.show_message(MessageType::ERROR, &m).await;
            return Err(rpc_error(m));
        }
        if changes.changes.is_empty() {
            return Ok(json!({"files": 0}));
        }
        let daemon = self.daemon().await?;
        let paths: Vec<String> = changes.changes.iter().map(|c| c.path.clone()).collect();
        let fetched = match daemon.vm_workspace_fetch(vm.clone(), paths).await {
            Ok(f) => f,
            Err(e) => {
                let m = daemon_error(e);
                self.client.show_message(MessageType::ERROR, &m).await;
                return Err(rpc_error(m));
            }
        };
        let files: Vec<GuestFile> = fetched
            .iter()
            .map(|f| GuestFile {
                path: f.path.clone(),
                kind: f.kind,
                data: B64.decode(&f.data).unwrap_or_default(),
            })
            .collect();
        let open = lock(&self.docs).clone();
        let n = files.len();
        let binaries: Vec<&str> = files
            .iter()
            .filter(|f| {
                f.kind.is_some() && (f.data.contains(&0) || std::str::from_utf8(&f.data).is_err())
            })
            .map(|f| f.path.as_str())
            .collect();
        let mut description = format!(
            "{n} file{} from the sandbox {vm}",
            if n == 1 { "" } else { "s" }
        );
        if !binaries.is_empty() {
            description.push_str(&format!(
                "; binary files, written once accepted: {}",
                binaries.join(", ")
            ));
        }
        let plan = edits::plan(&root, &files, &open, &description);
        let accepted = match plan.edit {
            Some(edit) => {
                let resp = self.client.apply_edit(edit).await.map_err(|e| {
                    rpc_error(format!("the editor did not apply the edit: {}", e.message))
                })?;
                if !resp.applied {
                    let why = resp.failure_reason.unwrap_or_else(|| "declined".into());
                    return Err(rpc_error(format!("guest changes not applied: {why}")));
                }
                true
            }
            None => {
                let ask = format!(
                    "Apply {} binary or link file{} from the sandbox {vm}?",
                    plan.deferred.len(),
                    if plan.deferred.len() == 1 { "" } else { "s" }
                );
                let choice = self
                    .client
                    .show_message_request(
                        MessageType::INFO,
                        ask,
                        Some(vec![
                            MessageActionItem {
                                title: "Apply".into(),
                                properties: HashMap::new(),
                            },
                            MessageActionItem {
                                title: "Cancel".into(),
                                properties: HashMap::new(),
                            },
                        ]),
                    )
                    .await
                    .ok()
                    .flatten();
                choice.is_some_and(|c| c.title == "Apply")
            }
        };
        if !accepted {
            return Err(rpc_error("guest changes not applied: declined"));
        }
        edits::write_deferred(&root, &plan.deferred)
            .map_err(|e| rpc_error(format!("writing the guest's binary files: {e}")))?;
        // Record as taken only what the host now has: an editor may apply
        // part of an edit (VS Code's preview applies the ticked files and
        // still answers "applied"). A guest copy recorded as taken while
        // the host kept its own would be overwritten by the next sync.
        let mut taken_files = Vec::new();
        for attempt in 0..10 {
            taken_files = fetched
                .iter()
                .zip(&files)
                .filter(|(_, g)| self.host_has(&root, g))
                .map(|(f, _)| f)
                .collect::<Vec<_>>();
            if taken_files.len() == fetched.len() || attempt == 9 {
                break;
            }
            // The editor's didChange for the applied text may trail its
            // reply.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let entries: Vec<AcceptEntry> = taken_files
            .iter()
            .map(|f| AcceptEntry {
                path: f.path.clone(),
                kind: f.kind.unwrap_or(crate::workspace::sync::Kind::File),
                oid: f.oid.clone(),
            })
            .collect();
        let n = entries.len();
        daemon
            .vm_workspace_accept(vm, entries.clone())
            .await
            .map_err(|e| rpc_error(daemon_error(e)))?;
        // Conflicts on these files are settled the guest's way.
        let taken: BTreeSet<String> = entries.iter().map(|f| f.path.clone()).collect();
        let left: BTreeSet<String> = lock(&self.conflicts)
            .iter()
            .filter(|c| !taken.contains(*c))
            .cloned()
            .collect();
        *lock(&self.conflicts) = left.clone();
        self.publish_conflicts(&root, &left).await;
        if left.is_empty() {
            self.set_status(|s| {
                if s.sync == "conflict" {
                    s.sync = "synced".into();
                    s.message = None;
                }
            })
            .await;
        }
        let _ = self.refresh_guest_changes().await;
        Ok(json!({"files": n}))
    }

    /// Whether the host (the editor's open text, else the file on disk)
    /// has the guest's version of a file.
    fn host_has(&self, root: &Path, g: &GuestFile) -> bool {
        let host = root.join(&g.path);
        let Some(kind) = g.kind else {
            return std::fs::symlink_metadata(&host).is_err();
        };
        if kind == crate::workspace::sync::Kind::Symlink {
            use std::os::unix::ffi::OsStrExt;
            return std::fs::read_link(&host).is_ok_and(|t| t.as_os_str().as_bytes() == g.data);
        }
        let open =
            Uri::from_file_path(&host).and_then(|u| lock(&self.docs).get(&u).map(|d| d.1.clone()));
        match open {
            Some(text) if text.as_bytes() == g.data => true,
            _ => std::fs::read(&host).is_ok_and(|d| d == g.data),
        }
    }

    async fn execute(self: &Arc<Self>, params: ExecuteCommandParams) -> RpcResult<Value> {
        let token = params.work_done_progress_params.work_done_token.clone();
        let arg = params.arguments.first().cloned().unwrap_or(Value::Null);
        match params.command.as_str() {
            "banger.runTests" => {
                let filter = arg.get("filter").and_then(|f| f.as_str()).map(String::from);
                self.run_tests(filter, token).await
            }
            "banger.exec" => {
                let argv: Vec<String> = arg
                    .get("argv")
                    .and_then(|a| serde_json::from_value(a.clone()).ok())
                    .filter(|a: &Vec<String>| !a.is_empty())
                    .ok_or_else(|| {
                        RpcError::invalid_params("banger.exec takes [{\"argv\": [\"cmd\", ...]}]")
                    })?;
                let progress = Progress::begin(self, token, "Banger: exec").await;
                let r = async {
                    self.ensure_bound(Some(&progress)).await?;
                    self.settle().await;
                    self.run(argv).await
                }
                .await;
                progress.end("done").await;
                let (run_id, exit_code, _) = r?;
                Ok(json!({"runId": run_id, "exitCode": exit_code}))
            }
            "banger.sync" => {
                let progress = Progress::begin(self, token, "Banger: sync").await;
                let r = async {
                    self.ensure_bound(Some(&progress)).await?;
                    self.wait_synced().await;
                    let root = self.root()?;
                    self.set_status(|s| s.sync = "syncing".into()).await;
                    let r = self.sync_now(None, false).await;
                    self.after_sync(&root, None, r.clone()).await;
                    r.map_err(rpc_error)
                }
                .await;
                progress.end("done").await;
                let r = r?;
                Ok(json!({"files": r.files_sent + r.deleted}))
            }
            "banger.overwriteGuest" => {
                self.ensure_bound(None).await?;
                self.wait_synced().await;
                let root = self.root()?;
                let conflicts: Vec<String> = lock(&self.conflicts).iter().cloned().collect();
                if conflicts.is_empty() {
                    return Ok(json!({"files": 0}));
                }
                let scope: BTreeSet<String> = conflicts.iter().cloned().collect();
                let r = self.sync_now(Some(conflicts), true).await;
                self.after_sync(&root, Some(&scope), r.clone()).await;
                let r = r.map_err(rpc_error)?;
                let _ = self.refresh_guest_changes().await;
                Ok(json!({"files": r.files_sent + r.deleted}))
            }
            "banger.applyGuestChanges" => self.apply_guest_changes().await,
            "banger.stop" => {
                let daemon = self.daemon().await?;
                let root = self.root()?;
                let vm = match self.bound() {
                    Some(v) => v,
                    None => self.vm_name(&daemon, &root).await?,
                };
                let view = daemon
                    .vm_stop(vm)
                    .await
                    .map_err(|e| rpc_error(daemon_error(e)))?;
                *lock(&self.vm) = None;
                *lock(&self.watcher) = None;
                self.set_status(|s| s.vm_state = view.state.clone()).await;
                Ok(json!({"files": 0}))
            }
            other => Err(RpcError::invalid_params(format!("unknown command {other}"))),
        }
    }
}

/// What a watched path means for sync.
#[derive(Debug, PartialEq, Eq)]
enum Watched {
    /// A working-tree file.
    File,
    /// HEAD, refs or the index moved.
    GitState,
    /// Git's objects, logs, locks.
    Ignore,
}

fn watched(rel: &str) -> Watched {
    match rel.strip_prefix(".git") {
        None => Watched::File,
        Some("") => Watched::Ignore,
        Some(rest) => {
            let rest = rest.trim_start_matches('/');
            if rest == "HEAD"
                || rest == "index"
                || rest == "packed-refs"
                || rest.starts_with("refs/")
            {
                if rest.ends_with(".lock") {
                    Watched::Ignore
                } else {
                    Watched::GitState
                }
            } else if !rel.starts_with(".git/") {
                // `.gitignore`, `.github/…`: ordinary files.
                Watched::File
            } else {
                Watched::Ignore
            }
        }
    }
}

fn tracked_files(root: &Path) -> Vec<String> {
    gix::open(root)
        .ok()
        .and_then(|r| r.index_or_empty().ok())
        .map(|i| i.entries().iter().map(|e| e.path(&i).to_string()).collect())
        .unwrap_or_default()
}

/// Maps a path a tool printed in the guest to the host file it names:
/// relative to the workspace, absolute under the guest workspace, or (Go
/// prints package-relative names) the one tracked file it is a suffix of.
fn host_path(root: &Path, printed: &str, tracked: &[String]) -> Option<PathBuf> {
    let guest_root = crate::workspace::transfer::GUEST_PATH;
    let rel = match printed.strip_prefix(guest_root) {
        Some(r) => r.trim_start_matches('/').to_string(),
        None if printed.starts_with('/') => return None,
        None => printed.trim_start_matches("./").to_string(),
    };
    if rel.split('/').any(|c| c == ".." || c == ".git") || rel.is_empty() {
        return None;
    }
    if tracked.contains(&rel) || root.join(&rel).is_file() {
        return Some(root.join(rel));
    }
    let suffix = format!("/{rel}");
    let mut hits = tracked.iter().filter(|t| t.ends_with(&suffix));
    match (hits.next(), hits.next()) {
        (Some(one), None) => Some(root.join(one)),
        _ => None,
    }
}

/// The sync worker: one sync at a time, bursts gathered into one.
async fn sync_worker(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<SyncJob>) {
    while let Some(first) = rx.recv().await {
        // Gather until the events pause (a formatter saving 200 files is
        // one sync), but never hold a sync back for long.
        let mut jobs = vec![first];
        let started = Instant::now();
        loop {
            tokio::time::sleep(COALESCE).await;
            let before = jobs.len();
            while let Ok(j) = rx.try_recv() {
                jobs.push(j);
            }
            if jobs.len() == before || started.elapsed() >= COALESCE_MAX {
                break;
            }
        }
        let mut full = false;
        let mut paths = BTreeSet::new();
        let mut top = 0;
        for j in jobs {
            match j {
                SyncJob::Full(g) => {
                    full = true;
                    top = top.max(g);
                }
                SyncJob::Paths(p, g) => {
                    paths.extend(p);
                    top = top.max(g);
                }
            }
        }
        if inner.bound().is_some()
            && let Ok(root) = inner.root()
        {
            inner.set_status(|s| s.sync = "syncing".into()).await;
            let r = inner
                .sync_now((!full).then(|| paths.iter().cloned().collect()), false)
                .await;
            inner.after_sync(&root, (!full).then_some(&paths), r).await;
        }
        inner.done.send_modify(|d| *d = (*d).max(top));
    }
}

/// Asks the guest what it changed, about once a second, while bound and
/// no command runs.
async fn poller(inner: Arc<Inner>) {
    let weak = Arc::downgrade(&inner);
    drop(inner);
    let mut pause = POLL;
    loop {
        tokio::time::sleep(pause).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.bound().is_none() || inner.running.load(Ordering::SeqCst) > 0 {
            continue;
        }
        // A scan walks the guest workspace; where that is slow (a large
        // repository in an emulated guest) poll less often, so the guest
        // spends at most about a fifth of its time on it.
        let started = Instant::now();
        let _ = inner.refresh_guest_changes().await;
        pause = POLL.max(started.elapsed() * 4);
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> RpcResult<InitializeResult> {
        let inner = &self.0;
        let folder = params
            .workspace_folders
            .as_ref()
            .and_then(|f| f.first())
            .and_then(|f| f.uri.to_file_path().map(|p| p.into_owned()));
        #[allow(deprecated)] // root_uri: older clients send only this
        let folder = folder.or_else(|| {
            params
                .root_uri
                .as_ref()
                .and_then(|u| u.to_file_path().map(|p| p.into_owned()))
        });
        let root = folder.and_then(|f| {
            gix::discover(&f)
                .ok()
                .and_then(|r| r.workdir().map(Path::to_path_buf))
        });
        let options = params.initialization_options.clone().unwrap_or(Value::Null);
        if let Some(root) = &root {
            let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            let (s, warnings) = settings::resolve(&root, &options);
            for w in warnings {
                inner.client.log_message(MessageType::WARNING, w).await;
            }
            *lock(&inner.settings) = s;
            *lock(&inner.root) = Some(root);
        }
        *lock(&inner.options) = options;
        let progress = params
            .capabilities
            .window
            .as_ref()
            .and_then(|w| w.work_done_progress)
            .unwrap_or(false);
        inner.progress_ok.store(progress, Ordering::Relaxed);
        Ok(InitializeResult {
            server_info: Some(ServerInfo {
                name: "banger".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
            capabilities: ServerCapabilities {
                text_document_sync: Some(TextDocumentSyncCapability::Options(
                    TextDocumentSyncOptions {
                        open_close: Some(true),
                        change: Some(TextDocumentSyncKind::FULL),
                        save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                        ..TextDocumentSyncOptions::default()
                    },
                )),
                code_action_provider: Some(CodeActionProviderCapability::Options(
                    CodeActionOptions {
                        code_action_kinds: Some(vec![
                            CodeActionKind::new(super::APPLY_KIND),
                            CodeActionKind::QUICKFIX,
                        ]),
                        ..CodeActionOptions::default()
                    },
                )),
                execute_command_provider: Some(ExecuteCommandOptions {
                    commands: super::COMMANDS.iter().map(|c| c.to_string()).collect(),
                    ..ExecuteCommandOptions::default()
                }),
                ..ServerCapabilities::default()
            },
            ..InitializeResult::default()
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        let inner = self.0.clone();
        tokio::spawn(async move {
            let Ok(root) = inner.root() else {
                inner
                    .set_status(|s| {
                        s.sync = "error".into();
                        s.message =
                            Some("the workspace folder is not inside a git repository".into());
                    })
                    .await;
                return;
            };
            // Report the binding; reuse a running sandbox right away, and
            // create or start one only on first need.
            let Ok(daemon) = inner.daemon().await else {
                inner
                    .set_status(|s| {
                        s.sync = "error".into();
                        s.message = Some("cannot reach bangerd; see banger doctor".into());
                    })
                    .await;
                return;
            };
            let Ok(name) = inner.vm_name(&daemon, &root).await else {
                return;
            };
            let state = match daemon.vm_show(name.clone()).await {
                Ok(v) => v.state,
                Err(_) => "absent".into(),
            };
            inner
                .set_status(|s| {
                    s.vm = name.clone();
                    s.vm_state = state.clone();
                })
                .await;
            if state == "running" {
                let _ = inner.ensure_bound(None).await;
            }
        });
    }

    async fn shutdown(&self) -> RpcResult<()> {
        *lock(&self.0.watcher) = None;
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let d = params.text_document;
        lock(&self.0.docs).insert(d.uri, (d.version, d.text));
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let d = params.text_document;
        if let Some(change) = params.content_changes.into_iter().last() {
            lock(&self.0.docs).insert(d.uri, (d.version, change.text));
        }
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        lock(&self.0.docs).remove(&params.text_document.uri);
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        let inner = &self.0;
        if !lock(&inner.settings).sync_on_save || inner.bound().is_none() {
            return;
        }
        let Ok(root) = inner.root() else { return };
        if let Some(p) = params.text_document.uri.to_file_path()
            && let Ok(rel) = p.strip_prefix(&root)
        {
            inner.request_sync(Some(vec![rel.to_string_lossy().into_owned()]));
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        let inner = &self.0;
        let Ok(root) = inner.root() else { return };
        let mut options = lock(&inner.options).clone();
        merge(&mut options, &params.settings);
        let (s, warnings) = settings::resolve(&root, &options);
        for w in warnings {
            inner.client.log_message(MessageType::WARNING, w).await;
        }
        *lock(&inner.settings) = s;
        *lock(&inner.options) = options;
    }

    async fn code_action(&self, params: CodeActionParams) -> RpcResult<Option<CodeActionResponse>> {
        let inner = &self.0;
        let changes = lock(&inner.guest_changes).clone();
        let conflicts = lock(&inner.conflicts).clone();
        let root = inner.root().ok();
        let rel = root.as_ref().and_then(|r| {
            params.text_document.uri.to_file_path().and_then(|p| {
                p.strip_prefix(r)
                    .ok()
                    .map(|x| x.to_string_lossy().into_owned())
            })
        });
        let wants = |kind: &CodeActionKind| {
            params
                .context
                .only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| kind.as_str().starts_with(o.as_str())))
        };
        let mut out = Vec::new();
        let n = changes.len();
        let apply = |kind: CodeActionKind| CodeAction {
            title: format!(
                "Apply guest changes ({n} file{})",
                if n == 1 { "" } else { "s" }
            ),
            kind: Some(kind),
            command: Some(Command::new(
                "Apply guest changes".into(),
                "banger.applyGuestChanges".into(),
                None,
            )),
            ..CodeAction::default()
        };
        let source = CodeActionKind::new(super::APPLY_KIND);
        if n > 0 && wants(&source) {
            out.push(CodeActionOrCommand::CodeAction(apply(source)));
        }
        let here_changed = rel
            .as_ref()
            .is_some_and(|r| changes.iter().any(|c| &c.path == r));
        let here_conflict = rel.as_ref().is_some_and(|r| conflicts.contains(r));
        if (here_changed || here_conflict) && n > 0 && wants(&CodeActionKind::QUICKFIX) {
            out.push(CodeActionOrCommand::CodeAction(apply(
                CodeActionKind::QUICKFIX,
            )));
        }
        if here_conflict && wants(&CodeActionKind::QUICKFIX) {
            out.push(CodeActionOrCommand::CodeAction(CodeAction {
                title: "Overwrite guest copy".into(),
                kind: Some(CodeActionKind::QUICKFIX),
                command: Some(Command::new(
                    "Overwrite guest copy".into(),
                    "banger.overwriteGuest".into(),
                    None,
                )),
                ..CodeAction::default()
            }));
        }
        Ok(Some(out))
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> RpcResult<Option<Value>> {
        let inner = self.0.clone();
        guarded(async move { inner.execute(params).await.map(Some) }).await
    }
}

/// Merges `didChangeConfiguration` settings over the initial options.
fn merge(base: &mut Value, new: &Value) {
    match (base, new) {
        (Value::Object(b), Value::Object(n)) => {
            for (k, v) in n {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, n) => *b = n.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_request_is_an_error_reply_not_the_end() {
        let r: RpcResult<()> = guarded(async { panic!("boom") }).await;
        let e = r.unwrap_err();
        assert!(e.message.contains("boom"), "{e:?}");
        let ok: RpcResult<u8> = guarded(async { Ok(7) }).await;
        assert_eq!(ok.unwrap(), 7);
    }

    #[test]
    fn git_state_paths_trigger_a_head_check_and_objects_do_not() {
        assert_eq!(watched("src/a.rs"), Watched::File);
        assert_eq!(watched(".gitignore"), Watched::File);
        assert_eq!(watched(".git/HEAD"), Watched::GitState);
        assert_eq!(watched(".git/refs/heads/main"), Watched::GitState);
        assert_eq!(watched(".git/index.lock"), Watched::Ignore);
        assert_eq!(watched(".git/objects/ab/cd"), Watched::Ignore);
    }

    #[test]
    fn guest_paths_map_to_host_files_inside_the_repo() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pkg/m")).unwrap();
        std::fs::write(root.join("pkg/m/m_test.go"), "").unwrap();
        std::fs::write(root.join("a.rs"), "").unwrap();
        let tracked = vec!["a.rs".to_string(), "pkg/m/m_test.go".to_string()];
        assert_eq!(host_path(root, "a.rs", &tracked), Some(root.join("a.rs")));
        assert_eq!(
            host_path(root, "/root/repo/a.rs", &tracked),
            Some(root.join("a.rs"))
        );
        assert_eq!(
            host_path(root, "m_test.go", &tracked),
            Some(root.join("pkg/m/m_test.go"))
        );
        assert_eq!(host_path(root, "/etc/passwd", &tracked), None);
        assert_eq!(host_path(root, "../x.rs", &tracked), None);
        assert_eq!(host_path(root, "nothing.rs", &tracked), None);
    }

    #[test]
    fn configuration_changes_merge_over_the_initial_options() {
        let mut base = json!({"banger": {"vm": "a", "vcpu": 2}});
        merge(&mut base, &json!({"banger": {"vcpu": 4}}));
        assert_eq!(base, json!({"banger": {"vm": "a", "vcpu": 4}}));
    }

    #[test]
    fn status_serializes_as_documented() {
        let s = StatusParams {
            vm: "dev".into(),
            vm_state: "running".into(),
            sync: "synced".into(),
            message: None,
            guest_changes: 2,
            files_sent: 1,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"vm": "dev", "vmState": "running", "sync": "synced", "guestChanges": 2, "filesSent": 1})
        );
    }
}
