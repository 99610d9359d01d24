//! The `banger` command line: parses arguments, translates them into daemon
//! API calls and prints the results. It never touches VMs itself.
//!
//! Exit codes: a guest command's exit code comes back verbatim from
//! `vm run` and `vm exec` (128 + N for a signal); banger's own failures
//! there exit [`EXIT_RUN_FAILED`] (125) and a program the guest cannot
//! start [`EXIT_CANNOT_RUN`] (127). Other commands exit 1 on failure and 2
//! on invalid input.

pub mod client;
pub mod doctor;
pub mod printer;
mod terminal;

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use jsonrpsee::async_client::Client;
use jsonrpsee::core::client::Error as ClientError;

use crate::api::{
    BangerApiClient, CreateParams, ExecEvent, ExecParams, ImageView, OpEvent, VmView, code,
};
use crate::paths::Dirs;
use crate::spec;
use printer::Printer;

/// Exit code of banger's own failures in `vm run` / `vm exec`.
pub const EXIT_RUN_FAILED: u8 = 125;
/// Exit code when the guest cannot start the program.
pub const EXIT_CANNOT_RUN: u8 = 127;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One-command Linux development sandboxes in microVMs.
#[derive(Debug, Parser)]
#[command(name = "banger", version, about, propagate_version = true)]
pub struct Cli {
    /// Print progress as plain lines.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, run and manage VMs.
    #[command(subcommand)]
    Vm(VmCommand),
    /// List running VMs (same as `banger vm list`).
    Ps(ListArgs),
    /// Build and manage guest images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Control the per-user daemon.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Check this host: accelerator, VMMs, image tools, state, daemon.
    Doctor,
    /// The guest kernel catalog.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Install helper programs for this user.
    #[command(subcommand)]
    System(SystemCommand),
    /// The editor backend: a Language Server on stdin/stdout (started by
    /// the VS Code extension and the Neovim plugin; see docs/lsp.md).
    Lsp {
        /// Accepted for clients that pass it; stdio is the only transport.
        #[arg(long, hide = true)]
        stdio: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KernelCommand {
    /// Catalog kernels and the images' own kernels.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy a kernel file (ELF vmlinux or bzImage) into the catalog.
    Import {
        /// The kernel file.
        path: String,
        /// Catalog name; derived from its checksum when omitted.
        #[arg(long)]
        name: Option<String>,
        /// It is built with PVM guest support (runs with KVM on kvm_pvm hosts).
        #[arg(long)]
        pvm: bool,
    },
    /// Download a kernel, check it against a SHA-256 and add it.
    Pull {
        /// http(s) URL of the kernel file.
        url: String,
        /// Its expected SHA-256 (hex).
        #[arg(long)]
        sha256: String,
        /// Catalog name.
        #[arg(long)]
        name: Option<String>,
        /// It is built with PVM guest support.
        #[arg(long)]
        pvm: bool,
    },
    /// Remove a catalog kernel no VM uses.
    Delete {
        /// Name or id.
        kernel: String,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Download the official Firecracker release for this architecture,
    /// check its published SHA-256 and install firecracker and jailer where
    /// banger looks for them.
    #[command(disable_version_flag = true)]
    InstallFirecracker {
        /// Release to install.
        #[arg(long, default_value = crate::install::DEFAULT_FIRECRACKER_VERSION)]
        version: String,
    },
}

#[derive(Debug, Args)]
struct SpecArgs {
    /// VM name (lowercase letters, digits, '-'); generated when omitted.
    #[arg(long)]
    name: Option<String>,
    /// Virtual CPUs.
    #[arg(long)]
    vcpu: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    memory: Option<u64>,
    /// Size of the work disk mounted at /root, like 8G.
    #[arg(long, value_name = "SIZE")]
    disk_size: Option<String>,
    /// Boot a kernel from the catalog instead of the image's (see `banger
    /// kernel list`).
    #[arg(long, value_name = "KERNEL")]
    kernel: Option<String>,
    /// VMM: auto (Firecracker where it can run the guest, else QEMU),
    /// firecracker or qemu. Default: `vmm` in config.toml, else auto.
    #[arg(long, value_name = "VMM")]
    vmm: Option<String>,
}

#[derive(Debug, Subcommand)]
enum VmCommand {
    /// Boot a fresh VM, run a command in it and exit with its exit code.
    /// With PATH, the git repository there is shipped to /root/repo first
    /// and the command runs in it.
    Run {
        /// A git repository to ship into the guest.
        path: Option<String>,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        ws: WorkspaceArgs,
        /// Print which files would travel, and create nothing.
        #[arg(long, requires = "path")]
        dry_run: bool,
        /// Delete the VM when the command (or the shell) ends.
        #[arg(long)]
        rm: bool,
        /// Create and prepare the VM, then return (reconnect with
        /// `banger vm shell` or `banger vm exec`).
        #[arg(short, long, conflicts_with = "rm")]
        detach: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Create a VM and start it.
    Create {
        #[command(flatten)]
        spec: SpecArgs,
        /// Only create it; start it later with `banger vm start`.
        #[arg(long)]
        no_start: bool,
    },
    /// Start stopped VMs.
    Start {
        /// VM names or ids.
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Flush and stop VMs; their disks are kept.
    Stop {
        /// VM names or ids.
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Delete VMs and everything of them.
    Delete {
        /// VM names or ids.
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// List VMs (running ones unless --all).
    List(ListArgs),
    /// Show one VM as JSON.
    Show {
        /// VM name or id.
        vm: String,
    },
    /// Ship repositories into running VMs.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// An interactive login shell in a running VM (in its workspace, if any).
    Shell {
        /// VM name or id.
        vm: String,
    },
    /// Run a command in a running VM.
    Exec {
        /// VM name or id.
        vm: String,
        /// Working directory in the guest (default: the VM's workspace, else
        /// /root).
        #[arg(long)]
        guest_path: Option<String>,
        /// Re-ship the workspace first if the host repository's HEAD moved.
        #[arg(long)]
        auto_prepare: bool,
        /// Run on a pseudo-terminal (interactive programs).
        #[arg(short, long)]
        tty: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct WorkspaceArgs {
    /// Also ship untracked files that no ignore rule matches.
    #[arg(long)]
    include_untracked: bool,
    /// Create and check out this new branch in the guest.
    #[arg(long, value_name = "NAME")]
    branch: Option<String>,
    /// Start the new branch here (a host ref; default HEAD).
    #[arg(long, value_name = "REF", requires = "branch")]
    from: Option<String>,
    /// stream: through the agent into the running guest (default);
    /// full_copy: written into the VM's disk image before boot.
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
}

impl WorkspaceArgs {
    fn params(&self, vm: String, path: String) -> crate::api::PrepareParams {
        crate::api::PrepareParams {
            vm,
            path,
            include_untracked: self.include_untracked,
            branch: self.branch.clone(),
            from: self.from.clone(),
            mode: self.mode.clone(),
            replace: false,
        }
    }

    fn full_copy(&self) -> bool {
        self.mode.as_deref() == Some("full_copy")
    }
}

#[derive(Debug, Subcommand)]
enum WorkspaceCommand {
    /// Ship a git repository's files (tracked only, by default) into a
    /// running VM at /root/repo, with the host's HEAD, branch and index.
    Prepare {
        /// VM name or id.
        vm: String,
        /// The repository (default: the current directory).
        path: Option<String>,
        #[command(flatten)]
        ws: WorkspaceArgs,
        /// Replace a repository already in the guest, losing its guest
        /// edits (without it, the same repository is brought up to date by
        /// live sync and any other is refused).
        #[arg(long)]
        replace: bool,
    },
    /// The guest workspace's changes as a binary git patch (guest-created
    /// files included), checked as untrusted input before anything is
    /// written.
    Export {
        /// VM name or id.
        vm: String,
        /// Write the patch here instead of stdout.
        #[arg(long, short)]
        output: Option<String>,
        /// Diff against this commit (include commits made in the guest);
        /// default: the guest's HEAD.
        #[arg(long, value_name = "SHA")]
        base_commit: Option<String>,
        /// Apply the guest's changes to the host repository the workspace
        /// came from: what the guest changed since the last transfer or
        /// sync, validated like the patch (with --base-commit: the patch).
        #[arg(long)]
        apply: bool,
        /// With --apply: overwrite host files changed since the last sync
        /// (with --base-commit: apply over uncommitted host changes).
        #[arg(long, requires = "apply")]
        force: bool,
    },
    /// Send the host's changes since the last transfer or sync (tracked
    /// files that differ, deletions, a moved HEAD). Files the guest changed
    /// meanwhile are left alone and listed as conflicts.
    Sync {
        /// VM name or id.
        vm: String,
        /// Only these paths (relative to the repository root); default:
        /// everything.
        paths: Vec<String>,
        /// Overwrite the guest's copy even where the guest changed it.
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the guest changed since the last transfer or sync.
    Changes {
        /// VM name or id.
        vm: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Include stopped VMs.
    #[arg(short, long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build the default image (debian-bookworm) from Debian's packages.
    Build {
        /// Image name.
        name: Option<String>,
    },
    /// List built images.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one image's manifest as JSON.
    Show {
        /// Image name or id.
        image: String,
    },
    /// Delete an image no VM uses.
    Delete {
        /// Image name or id.
        image: String,
    },
}

#[derive(Debug, Subcommand)]
enum DaemonCommand {
    /// Start bangerd if it is not running.
    Start,
    /// Stop bangerd; running VMs keep running. Refused while it serves
    /// other requests (commands, operations) unless --force.
    Stop {
        /// Stop even though other requests run (their commands are killed;
        /// their --rm VMs are removed when it next starts).
        #[arg(long)]
        force: bool,
    },
    /// Show whether bangerd runs, and how.
    Status,
}

/// A failure of a CLI command, with the exit code to use.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<client::ConnectError> for Failure {
    fn from(e: client::ConnectError) -> Failure {
        Failure::new(1, chain(&e))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Maps an RPC error to a failure: invalid input exits 2.
fn rpc_failure(e: ClientError) -> Failure {
    match e {
        ClientError::Call(obj) => {
            let exit = if obj.code() == code::INVALID { 2 } else { 1 };
            Failure::new(exit, obj.message().to_string())
        }
        ClientError::RestartNeeded(_) => {
            Failure::new(1, "lost the connection to bangerd; see its log")
        }
        other => Failure::new(1, format!("talking to bangerd failed: {other}")),
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli, &printer));
    printer.clear_progress();
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            printer.error(&f.message);
            f.code
        }
    };
    // Don't wait for a stdin reader thread blocked on a terminal.
    runtime.shutdown_background();
    ExitCode::from(code)
}

async fn run(cli: Cli, printer: &Printer) -> Result<u8, Failure> {
    let dirs = Dirs::from_env();
    match cli.command {
        Command::Vm(cmd) => vm(cmd, &dirs, printer).await,
        Command::Ps(args) => list(&dirs, printer, args).await,
        Command::Image(cmd) => image(cmd, &dirs, printer).await,
        Command::Daemon(cmd) => daemon(cmd, &dirs, printer).await,
        Command::Doctor => doctor(&dirs, printer).await,
        Command::Kernel(cmd) => kernel(cmd, &dirs, printer).await,
        Command::Lsp { .. } => {
            crate::lsp::serve(dirs).await;
            Ok(0)
        }
        Command::System(SystemCommand::InstallFirecracker { version }) => {
            let bin = dirs.bin();
            let installed = tokio::task::spawn_blocking(move || {
                crate::install::install_firecracker(&version, &bin, &mut |m| {
                    tracing::debug!("{m}");
                })
            })
            .await
            .map_err(|e| Failure::new(1, format!("install task failed: {e}")))?
            .map_err(|e| Failure::new(1, e.to_string()))?;
            for f in &installed.files {
                printer.line(&format!("installed {}", f.display()));
            }
            printer.note(&format!("sha256 {} verified", installed.sha256));
            Ok(0)
        }
    }
}

fn create_params(
    spec: &SpecArgs,
    start: bool,
    delete_on_failure: bool,
) -> Result<CreateParams, Failure> {
    // Validate locally too, so obvious mistakes never reach the daemon.
    if let Some(name) = &spec.name {
        spec::validate_name(name).map_err(|e| Failure::new(2, e.to_string()))?;
    }
    let disk_bytes = spec
        .disk_size
        .as_deref()
        .map(spec::parse_size)
        .transpose()
        .map_err(|e| Failure::new(2, e.to_string()))?;
    Ok(CreateParams {
        name: spec.name.clone(),
        vcpu: spec.vcpu,
        memory_mib: spec.memory,
        disk_bytes,
        image: None,
        vmm: spec.vmm.clone(),
        kernel: spec.kernel.clone(),
        start,
        delete_on_failure,
        lease: None,
    })
}

/// Follows a long operation's events to its outcome.
async fn follow(
    mut sub: jsonrpsee::core::client::Subscription<OpEvent>,
    printer: &Printer,
) -> Result<OpEvent, Failure> {
    while let Some(event) = sub.next().await {
        match event {
            Ok(OpEvent::Progress { message }) => printer.progress(&message),
            Ok(OpEvent::Failed { code: c, message }) => {
                return Err(Failure::new(
                    if c == code::INVALID { 2 } else { 1 },
                    message,
                ));
            }
            Ok(done) => return Ok(done),
            Err(e) => return Err(Failure::new(1, format!("bad event from bangerd: {e}"))),
        }
    }
    Err(Failure::new(
        1,
        "bangerd closed the operation without a result; see its log",
    ))
}

/// A lease the daemon holds for this process: VMs created under it and not
/// released are removed by the daemon when it ends (this process exits,
/// is interrupted or killed, or its terminal closes), so `--rm` is the
/// daemon's promise, not this process's.
struct Lease {
    token: String,
    _held: jsonrpsee::core::client::Subscription<crate::api::LeaseEvent>,
}

async fn hold_lease(client: &Client) -> Result<Lease, Failure> {
    let token = spec::random_hex(16)
        .map_err(|e| Failure::new(1, format!("cannot read random bytes: {e}")))?;
    let mut held = client
        .lease_hold(token.clone())
        .await
        .map_err(rpc_failure)?;
    match held.next().await {
        Some(Ok(crate::api::LeaseEvent::Held)) => Ok(Lease { token, _held: held }),
        other => Err(Failure::new(
            1,
            format!("bangerd did not hold the lease: {other:?}"),
        )),
    }
}

/// Creates a VM under a lease: an interrupted create leaves nothing. With
/// `keep`, the VM is released from the lease once created (it stays);
/// otherwise it lives only as long as the returned lease.
async fn create(
    client: &Client,
    mut params: CreateParams,
    printer: &Printer,
    keep: bool,
) -> Result<(VmView, Lease), Failure> {
    let lease = hold_lease(client).await?;
    params.lease = Some(lease.token.clone());
    let sub = client.vm_create(params).await.map_err(rpc_failure)?;
    let vm = match follow(sub, printer).await? {
        OpEvent::Vm { vm } => *vm,
        other => return Err(Failure::new(1, format!("unexpected result {other:?}"))),
    };
    if keep {
        client
            .lease_release(lease.token.clone(), vm.id.clone())
            .await
            .map_err(rpc_failure)?;
    }
    Ok((vm, lease))
}

async fn vm(cmd: VmCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    match cmd {
        VmCommand::Run {
            path,
            spec,
            ws,
            dry_run,
            rm,
            detach,
            command,
        } => {
            if detach && !command.is_empty() {
                return Err(Failure::new(
                    2,
                    "-d/--detach does not take a command: run it later with banger vm exec VM -- CMD",
                ));
            }
            let path = path.map(|p| absolute(&p));
            let client = std::sync::Arc::new(client::connect_or_start(dirs).await?);
            // Check the repository (and any branch) before creating a VM.
            if let Some(path) = &path {
                let plan = client
                    .workspace_plan(
                        path.clone(),
                        ws.include_untracked,
                        ws.branch.clone(),
                        ws.from.clone(),
                    )
                    .await
                    .map_err(rpc_failure)?;
                if dry_run {
                    for f in &plan.files {
                        printer.line(&f.path);
                    }
                    printer.line(&plan.mode);
                    workspace_notes(&plan, printer);
                    return Ok(0);
                }
            }
            // full_copy writes the disk before the first boot.
            let full_copy = path.is_some() && ws.full_copy();
            let params = create_params(&spec, !full_copy, rm)?;
            // With --rm the VM lives only as long as this lease: whatever
            // ends this process, the daemon removes it.
            let (mut vm, _lease) = create(&client, params, printer, !rm).await.map_err(|f| {
                Failure::new(if f.code == 2 { 2 } else { EXIT_RUN_FAILED }, f.message)
            })?;
            if let Some(path) = path {
                printer.progress(&format!("shipping {path} to /root/repo"));
                let prepared = client
                    .vm_workspace_prepare(ws.params(vm.id.clone(), path))
                    .await
                    .map_err(rpc_failure);
                let started = match prepared {
                    Ok(plan) if full_copy => {
                        workspace_notes(&plan, printer);
                        match client.vm_start(vm.id.clone()).await {
                            Ok(sub) => follow(sub, printer).await.map(|_| plan),
                            Err(e) => Err(rpc_failure(e)),
                        }
                    }
                    other => other,
                };
                match started {
                    Ok(plan) => {
                        if !full_copy {
                            workspace_notes(&plan, printer);
                        }
                        vm = client.vm_show(vm.id.clone()).await.map_err(rpc_failure)?;
                    }
                    Err(f) => {
                        if rm {
                            let _ = client.vm_delete(vm.id.clone()).await;
                        }
                        return Err(Failure::new(
                            if f.code == 2 { 2 } else { EXIT_RUN_FAILED },
                            f.message,
                        ));
                    }
                }
            }
            printer.clear_progress();
            if detach {
                printer.line(&vm.name);
                printer.note(&format!(
                    "vm {} is running; connect with: banger vm shell {}  (or: banger vm exec {} -- CMD)",
                    vm.name, vm.name, vm.name
                ));
                return Ok(0);
            }
            let (command, tty) = if command.is_empty() {
                (login_shell(), true)
            } else {
                (command, false)
            };
            let target = ExecTarget {
                vm: &vm.id,
                cwd: None,
                delete_after: rm,
                auto_prepare: false,
                tty,
            };
            exec(&client, target, command, printer).await
        }
        VmCommand::Create { spec, no_start } => {
            let params = create_params(&spec, !no_start, false)?;
            let client = std::sync::Arc::new(client::connect_or_start(dirs).await?);
            let (vm, _lease) = create(&client, params, printer, true).await?;
            printer.clear_progress();
            printer.line(&vm.name);
            Ok(0)
        }
        VmCommand::Start { vms } => {
            let client = client::connect_or_start(dirs).await?;
            for name in vms {
                let sub = client.vm_start(name).await.map_err(rpc_failure)?;
                if let OpEvent::Vm { vm } = follow(sub, printer).await? {
                    printer.clear_progress();
                    printer.line(&vm.name);
                }
            }
            Ok(0)
        }
        VmCommand::Stop { vms } => {
            let client = client::connect_or_start(dirs).await?;
            for name in vms {
                printer.progress(&format!("stopping {name}"));
                let vm = client.vm_stop(name).await.map_err(rpc_failure)?;
                printer.clear_progress();
                printer.line(&vm.name);
            }
            Ok(0)
        }
        VmCommand::Delete { vms } => {
            let client = client::connect_or_start(dirs).await?;
            for name in vms {
                printer.progress(&format!("deleting {name}"));
                client.vm_delete(name.clone()).await.map_err(rpc_failure)?;
                printer.clear_progress();
                printer.line(&name);
            }
            Ok(0)
        }
        VmCommand::List(args) => list(dirs, printer, args).await,
        VmCommand::Workspace(WorkspaceCommand::Export {
            vm,
            output,
            base_commit,
            apply,
            force,
        }) => {
            let client = client::connect_or_start(dirs).await?;
            let result = client
                .vm_workspace_export(vm, base_commit, apply, force)
                .await
                .map_err(rpc_failure)?;
            let patch = decode(&result.patch).map_err(|f| Failure::new(1, f.message))?;
            match output {
                Some(file) => std::fs::write(&file, &patch)
                    .map_err(|e| Failure::new(1, format!("cannot write {file}: {e}")))?,
                None if !apply => printer.stdout_bytes(&patch),
                None => {}
            }
            if result.applied {
                printer.note(&format!(
                    "applied {} file{} to {}",
                    result.files.len(),
                    if result.files.len() == 1 { "" } else { "s" },
                    result.source
                ));
            }
            Ok(0)
        }
        VmCommand::Workspace(WorkspaceCommand::Sync {
            vm,
            paths,
            force,
            json,
        }) => {
            let client = client::connect_or_start(dirs).await?;
            let params = crate::api::SyncParams {
                vm,
                paths: (!paths.is_empty()).then_some(paths),
                force,
            };
            let r = client
                .vm_workspace_sync(params)
                .await
                .map_err(rpc_failure)?;
            if json {
                printer.line(&pretty(&r));
            } else {
                printer.line(&format!(
                    "{} sent, {} deleted{}",
                    r.files_sent,
                    r.deleted,
                    if r.head_moved { ", HEAD moved" } else { "" }
                ));
                for c in &r.conflicts {
                    printer.note(&format!(
                        "conflict: {c} changed in the guest; left alone (--force overwrites it)"
                    ));
                }
                if let Some(w) = &r.warning {
                    printer.note(w);
                }
            }
            Ok(if r.conflicts.is_empty() { 0 } else { 1 })
        }
        VmCommand::Workspace(WorkspaceCommand::Changes { vm, json }) => {
            let client = client::connect_or_start(dirs).await?;
            let r = client.vm_workspace_changes(vm).await.map_err(rpc_failure)?;
            if json {
                printer.line(&pretty(&r));
            } else {
                for c in &r.changes {
                    let tag = match c.status {
                        crate::workspace::sync::Status::Added => "A",
                        crate::workspace::sync::Status::Modified => "M",
                        crate::workspace::sync::Status::Deleted => "D",
                    };
                    printer.line(&format!("{tag} {}", c.path));
                }
                for p in &r.refused {
                    printer.note(&format!("refused a guest path: {p:?}"));
                }
            }
            Ok(0)
        }
        VmCommand::Workspace(WorkspaceCommand::Prepare {
            vm,
            path,
            ws,
            replace,
        }) => {
            let path = absolute(path.as_deref().unwrap_or("."));
            let client = client::connect_or_start(dirs).await?;
            printer.progress(&format!("shipping {path} to {vm}"));
            let params = crate::api::PrepareParams {
                replace,
                ..ws.params(vm.clone(), path)
            };
            let plan = client
                .vm_workspace_prepare(params)
                .await
                .map_err(rpc_failure)?;
            printer.clear_progress();
            let guest_path = plan.guest_path.as_deref().unwrap_or("/root/repo");
            match &plan.synced {
                Some(r) => {
                    printer.line(&format!(
                        "{guest_path} already held this repository: live sync sent {} files, deleted {}",
                        r.files_sent, r.deleted
                    ));
                    if let Some(notes) = r.notes(&vm) {
                        printer.note(&format!("warning: {notes}"));
                    }
                }
                None => printer.line(&format!(
                    "{} files -> {guest_path} ({})",
                    plan.files.len(),
                    plan.mode
                )),
            }
            workspace_notes(&plan, printer);
            Ok(0)
        }
        VmCommand::Show { vm } => {
            let client = client::connect_or_start(dirs).await?;
            let vm = client.vm_show(vm).await.map_err(rpc_failure)?;
            printer.line(&pretty(&vm));
            Ok(0)
        }
        VmCommand::Exec {
            vm,
            guest_path,
            auto_prepare,
            tty,
            command,
        } => {
            let client = std::sync::Arc::new(client::connect_or_start(dirs).await?);
            let target = ExecTarget {
                vm: &vm,
                cwd: guest_path,
                delete_after: false,
                auto_prepare,
                tty,
            };
            exec(&client, target, command, printer).await
        }
        VmCommand::Shell { vm } => {
            let client = std::sync::Arc::new(client::connect_or_start(dirs).await?);
            let target = ExecTarget {
                vm: &vm,
                cwd: None,
                delete_after: false,
                auto_prepare: false,
                tty: true,
            };
            exec(&client, target, login_shell(), printer).await
        }
    }
}

fn absolute(path: &str) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.into())
        .display()
        .to_string()
}

/// What the user should know about a transfer: files left out.
fn workspace_notes(plan: &crate::api::WorkspacePlan, printer: &Printer) {
    if plan.untracked_left_out > 0 {
        printer.note(&format!(
            "note: {} untracked file{} left out; ship them too with --include-untracked",
            plan.untracked_left_out,
            if plan.untracked_left_out == 1 {
                " was"
            } else {
                "s were"
            }
        ));
    }
    if !plan.submodules.is_empty() {
        printer.note(&format!(
            "note: submodules are not shipped: {}",
            plan.submodules.join(", ")
        ));
    }
    if !plan.missing.is_empty() {
        printer.note(&format!(
            "note: {} tracked file{} deleted in the working tree and not shipped",
            plan.missing.len(),
            if plan.missing.len() == 1 {
                " is"
            } else {
                "s are"
            }
        ));
    }
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Where and how a guest command runs.
struct ExecTarget<'a> {
    vm: &'a str,
    cwd: Option<String>,
    delete_after: bool,
    auto_prepare: bool,
    tty: bool,
}

fn login_shell() -> Vec<String> {
    vec!["/bin/bash".into(), "--login".into()]
}

/// Runs a guest command, passing its output and exit code through.
async fn exec(
    client: &std::sync::Arc<Client>,
    target: ExecTarget<'_>,
    argv: Vec<String>,
    printer: &Printer,
) -> Result<u8, Failure> {
    // Without a tty, a terminal's input is not forwarded; piped or
    // redirected stdin streams to the guest. With one, every keystroke
    // goes through (the host terminal in raw mode).
    let forward_stdin = target.tty || !std::io::stdin().is_terminal();
    let size = terminal::size().unwrap_or(crate::api::Terminal { rows: 24, cols: 80 });
    let mut env = Vec::new();
    if target.tty {
        env.push((
            "TERM".to_string(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
        ));
    }
    let params = ExecParams {
        vm: target.vm.to_string(),
        argv,
        env,
        cwd: target.cwd,
        stdin: forward_stdin,
        delete_after: target.delete_after,
        auto_prepare: target.auto_prepare,
        tty: target.tty.then_some(size),
    };
    let mut sub = client.vm_exec(params).await.map_err(|e| match e {
        ClientError::Call(obj) if obj.message().starts_with("cannot run") => {
            Failure::new(EXIT_CANNOT_RUN, obj.message().to_string())
        }
        other => {
            let f = rpc_failure(other);
            Failure::new(EXIT_RUN_FAILED, f.message)
        }
    })?;
    let mut interrupts = 0u32;
    let mut running: Option<u64> = None;
    // Raw mode for the whole session; restored on every way out.
    let _raw = if target.tty {
        printer.clear_progress();
        terminal::RawMode::enter()
    } else {
        None
    };
    let mut resized =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    loop {
        let event = tokio::select! {
            ev = sub.next() => ev,
            Some(()) = async { match resized.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                if let (Some(id), Some(size)) = (running, terminal::size()) {
                    let _ = client.exec_resize(id, size).await;
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if let Some(id) = running {
                    let sig = if interrupts == 1 { libc::SIGINT } else { libc::SIGKILL };
                    let _ = client.exec_signal(id, sig).await;
                }
                continue;
            }
        };
        match event {
            Some(Ok(ExecEvent::Started { exec_id, warning })) => {
                running = Some(exec_id);
                if let Some(w) = warning {
                    printer.note(&format!("warning: {w}"));
                }
                if forward_stdin {
                    start_stdin_forwarder(client.clone(), exec_id);
                }
            }
            Some(Ok(ExecEvent::Stdout { data })) => printer.stdout_bytes(&decode(&data)?),
            Some(Ok(ExecEvent::Stderr { data })) => printer.stderr_bytes(&decode(&data)?),
            Some(Ok(ExecEvent::Exited {
                code,
                signal,
                cleanup_error,
            })) => {
                if let Some(e) = cleanup_error {
                    printer.error(&format!("warning: {e}"));
                }
                let status = banger_agent::protocol::ExitStatus { code, signal };
                return Ok(status.shell_code().clamp(0, 255) as u8);
            }
            Some(Ok(ExecEvent::Failed { message, .. })) => {
                return Err(Failure::new(EXIT_RUN_FAILED, message));
            }
            Some(Err(e)) => {
                return Err(Failure::new(
                    EXIT_RUN_FAILED,
                    format!("bad event from bangerd: {e}"),
                ));
            }
            None => {
                return Err(Failure::new(
                    EXIT_RUN_FAILED,
                    "the connection to bangerd closed before the command ended",
                ));
            }
        }
    }
}

fn decode(data: &str) -> Result<Vec<u8>, Failure> {
    B64.decode(data).map_err(|e| {
        Failure::new(
            EXIT_RUN_FAILED,
            format!("bad output data from bangerd: {e}"),
        )
    })
}

/// Streams this process's stdin to the guest command on a blocking thread.
fn start_stdin_forwarder(client: std::sync::Arc<Client>, exec_id: u64) {
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            let data = (n > 0).then(|| B64.encode(&buf[..n]));
            let eof = n == 0;
            if handle
                .block_on(client.exec_input(exec_id, data, eof))
                .is_err()
                || eof
            {
                return;
            }
        }
    });
}

async fn list(dirs: &Dirs, printer: &Printer, args: ListArgs) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    let vms = client.vm_list(args.all).await.map_err(rpc_failure)?;
    if args.json {
        printer.line(&pretty(&vms));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|vm| {
            vec![
                vm.name.clone(),
                vm.id.clone(),
                vm.state.clone(),
                vm.vcpu.to_string(),
                format!("{}M", vm.memory_mib),
                spec::format_size(vm.disk_bytes),
                vm.image.clone(),
                vm.accel.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(
        printer,
        &[
            "NAME", "ID", "STATE", "VCPU", "MEMORY", "DISK", "IMAGE", "ACCEL",
        ],
        &rows,
    );
    Ok(0)
}

fn print_table(printer: &Printer, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    printer.line(&fmt(header.to_vec()));
    for row in rows {
        printer.line(&fmt(row.iter().map(String::as_str).collect()));
    }
}

async fn image(cmd: ImageCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    match cmd {
        ImageCommand::Build { name } => {
            let sub = client.image_build(name).await.map_err(rpc_failure)?;
            if let OpEvent::Image { image } = follow(sub, printer).await? {
                printer.clear_progress();
                printer.line(&format!("{} {}", image.name, image.id));
            }
        }
        ImageCommand::List { json } => {
            let images = client.image_list().await.map_err(rpc_failure)?;
            if json {
                printer.line(&pretty(&images));
            } else {
                let rows: Vec<Vec<String>> = images.iter().map(image_row).collect();
                print_table(printer, &["NAME", "ID", "KERNEL", "SIZE", "CREATED"], &rows);
            }
        }
        ImageCommand::Show { image } => {
            let image = client.image_show(image).await.map_err(rpc_failure)?;
            printer.line(&pretty(&image));
        }
        ImageCommand::Delete { image } => {
            client
                .image_delete(image.clone())
                .await
                .map_err(rpc_failure)?;
            printer.line(&image);
        }
    }
    Ok(0)
}

async fn kernel(cmd: KernelCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    let show = |k: &crate::api::KernelView| {
        format!(
            "{} {} ({}{})",
            k.name,
            &k.id[..12.min(k.id.len())],
            k.format,
            if k.pvm { ", pvm" } else { "" }
        )
    };
    match cmd {
        KernelCommand::List { json } => {
            let kernels = client.kernel_list().await.map_err(rpc_failure)?;
            if json {
                printer.line(&pretty(&kernels));
            } else {
                let rows: Vec<Vec<String>> = kernels
                    .iter()
                    .map(|k| {
                        vec![
                            k.name.clone(),
                            k.id[..12.min(k.id.len())].to_string(),
                            k.format.clone(),
                            if k.pvm { "yes".into() } else { "no".into() },
                            if k.firecracker {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                            k.source.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    printer,
                    &["NAME", "ID", "FORMAT", "PVM", "FIRECRACKER", "SOURCE"],
                    &rows,
                );
            }
        }
        KernelCommand::Import { path, name, pvm } => {
            let abs = std::path::absolute(&path).unwrap_or_else(|_| path.clone().into());
            let k = client
                .kernel_import(abs.display().to_string(), name, pvm)
                .await
                .map_err(rpc_failure)?;
            printer.line(&show(&k));
        }
        KernelCommand::Pull {
            url,
            sha256,
            name,
            pvm,
        } => {
            printer.progress(&format!("downloading {url}"));
            let k = client
                .kernel_pull(url, sha256, name, pvm)
                .await
                .map_err(rpc_failure)?;
            printer.line(&show(&k));
        }
        KernelCommand::Delete { kernel } => {
            client
                .kernel_delete(kernel.clone())
                .await
                .map_err(rpc_failure)?;
            printer.line(&kernel);
        }
    }
    Ok(0)
}

fn image_row(i: &ImageView) -> Vec<String> {
    vec![
        i.name.clone(),
        i.id[..12.min(i.id.len())].to_string(),
        i.kernel_version.clone(),
        format!("{}M", i.size_bytes >> 20),
        utc_time(i.created_at),
    ]
}

/// `2026-11-22 08:59 UTC` from unix seconds (civil-from-days, no time
/// zone database needed).
fn utc_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

async fn daemon(cmd: DaemonCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    match cmd {
        DaemonCommand::Start => {
            let client = client::connect_or_start(dirs).await?;
            let info = client.daemon_info().await.map_err(rpc_failure)?;
            printer.line(&format!(
                "bangerd {} running (pid {})",
                info.version, info.pid
            ));
        }
        DaemonCommand::Stop { force } => match client::connect_existing(dirs).await? {
            Some(client) => {
                let info = client.daemon_info().await.map_err(rpc_failure)?;
                client.daemon_stop(Some(force)).await.map_err(rpc_failure)?;
                // It lets operations in flight record what they started
                // (up to two minutes) before it lets go of its socket.
                let started = std::time::Instant::now();
                let mut said = false;
                while dirs.socket().exists() || pid_alive(info.pid) {
                    let waited = started.elapsed();
                    if waited > std::time::Duration::from_secs(150) {
                        return Err(Failure::new(
                            1,
                            format!(
                                "bangerd (pid {}) is still stopping; see its log: {}",
                                info.pid,
                                dirs.daemon_log().display()
                            ),
                        ));
                    }
                    if !said && waited > std::time::Duration::from_secs(2) {
                        said = true;
                        printer.progress(&format!(
                            "bangerd (pid {}) is stopping: operations in flight finish first",
                            info.pid
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                printer.clear_progress();
                printer.line("bangerd stopped");
            }
            None => printer.line("bangerd is not running"),
        },
        DaemonCommand::Status => match client::connect_existing(dirs).await? {
            Some(client) => {
                let info = client.daemon_info().await.map_err(rpc_failure)?;
                printer.line(&pretty(&info));
                printer.note(&format!("log: {}", dirs.daemon_log().display()));
            }
            None => {
                printer.line("bangerd is not running");
                return Ok(3);
            }
        },
    }
    Ok(0)
}

async fn doctor(dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    let daemon = match client::connect_existing(dirs).await {
        Ok(Some(c)) => c.daemon_info().await.ok().map(|i| {
            format!(
                "bangerd {} running (pid {}), socket {}",
                i.version, i.pid, i.socket
            )
        }),
        _ => None,
    };
    let dirs2 = dirs.clone();
    let checks = tokio::task::spawn_blocking(move || doctor::report(&dirs2, daemon))
        .await
        .map_err(|e| Failure::new(1, format!("doctor failed: {e}")))?;
    let mut failed = false;
    for c in &checks {
        let tag = match c.level {
            doctor::Level::Ok => "ok  ",
            doctor::Level::Warn => "warn",
            doctor::Level::Fail => {
                failed = true;
                "FAIL"
            }
        };
        printer.line(&format!("{tag} {:<12} {}", c.name, c.detail));
    }
    Ok(if failed { 1 } else { 0 })
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_time(1_795_338_181), "2026-11-22 09:03 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn words_after_dashes_are_kept_as_given() {
        let cli = Cli::try_parse_from([
            "banger",
            "vm",
            "run",
            "--rm",
            "--",
            "sh",
            "-c",
            "echo \"a  b\"",
            "--rm",
        ])
        .unwrap();
        let Command::Vm(VmCommand::Run { rm, command, .. }) = cli.command else {
            panic!("not vm run");
        };
        assert!(rm);
        assert_eq!(command, ["sh", "-c", "echo \"a  b\"", "--rm"]);
    }
}
