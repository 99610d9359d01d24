//! The daemon's public interface: one JSON-RPC 2.0 trait, its wire types and
//! error codes. The CLI (and later the LSP server) are clients of exactly
//! this; nothing else reaches the daemon.
//!
//! Wire types are not the store's records: [`VmView`] is built from a
//! record at the boundary.

use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::types::ErrorObjectOwned;
use serde::{Deserialize, Serialize};

mod image;
mod net;
mod workspace;

pub use image::{ImageBuildParams, ImageImportParams, ImagePullParams, ImageView, SetupParams};
pub use net::{NetworkView, PortView, SshInfo};
pub use workspace::{
    AcceptEntry, ChangeStatus, ExportResult, FetchedFile, FileKind, GuestChange, GuestChanges,
    PrepareParams, SyncParams, SyncResult, WorkspacePlan,
};

/// Error codes of the daemon's JSON-RPC errors (application range).
pub mod code {
    /// The daemon failed.
    pub const INTERNAL: i32 = -32000;
    /// No such VM or image.
    pub const NOT_FOUND: i32 = -32001;
    /// The request was invalid (bad name, bad spec); nothing was created.
    pub const INVALID: i32 = -32002;
    /// The VM is in the wrong state for the request.
    pub const CONFLICT: i32 = -32003;
    /// The VM is not running and the request needs it running.
    pub const NOT_RUNNING: i32 = -32004;
    /// The VM is running and the request needs it stopped.
    pub const RUNNING: i32 = -32005;
    /// A VM id prefix matches more than one VM.
    pub const AMBIGUOUS: i32 = -32006;
    /// The guest could not start the program (not found, not executable,
    /// no such working directory).
    pub const CANNOT_RUN: i32 = -32007;

    /// The stable name of a code, for scripts (`--json` errors carry it):
    /// these names never change once released.
    pub fn name(code: i32) -> &'static str {
        match code {
            NOT_FOUND => "not_found",
            INVALID => "invalid",
            CONFLICT => "conflict",
            NOT_RUNNING => "not_running",
            RUNNING => "running",
            AMBIGUOUS => "ambiguous",
            CANNOT_RUN => "cannot_run",
            _ => "internal",
        }
    }
}

/// Builds an error object.
pub fn error(code: i32, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message.into(), None::<()>)
}

/// A VM as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `stopped`, `starting`, `running`, `stopping` or `error`.
    pub state: String,
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Work disk size in bytes.
    pub disk_bytes: u64,
    /// Apparent size of the root overlay's upper disk (system writes
    /// outside /root), in bytes.
    #[serde(default)]
    pub system_overlay_bytes: u64,
    /// Image name.
    pub image: String,
    /// Image id.
    pub image_id: String,
    /// VMM driver.
    pub vmm: String,
    /// Why that VMM.
    pub vmm_reason: Option<String>,
    /// Kernel of the last boot.
    pub kernel: Option<String>,
    /// The workspace in the guest (`guest_path`, the host `head` it was
    /// prepared from, the host `source` repository).
    pub workspace: Option<crate::store::WorkspaceRecord>,
    /// Accelerator and why, like `tcg (kvm_pvm cannot run this kernel)`.
    pub accel: Option<String>,
    /// Root strategy (`overlay`).
    pub root: String,
    /// VMM process id, while running.
    pub pid: Option<i32>,
    /// Guest boot id, while running.
    pub boot_id: Option<String>,
    /// While running: the snapshot this run was restored from (its
    /// directory); absent when the guest booted.
    #[serde(default)]
    pub restored_from: Option<String>,
    /// Why the last start failed.
    pub last_error: Option<String>,
    /// Host bytes the VM's own disks use (sparse files count what is written).
    pub disk_usage_bytes: u64,
    /// The guest console log.
    pub console_log: String,
    /// The daemon's log, which holds its lines about this VM (`vm logs`
    /// shows both).
    #[serde(default)]
    pub daemon_log: String,
    /// The VM's network.
    #[serde(default)]
    pub network: NetworkView,
    /// The project dependency cache it mounts (`banger cache list`).
    #[serde(default)]
    pub cache: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A project dependency cache, as `banger cache list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheView {
    /// Its name.
    pub name: String,
    /// The repository it serves.
    pub repo: String,
    /// Bytes it takes on the host.
    pub bytes: u64,
    /// VMs that mount it.
    pub used_by: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Something `system_prune` removes (or would): cache contents nothing
/// can use any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneItem {
    /// `image`, `image-snapshots` (of an image no longer in the store),
    /// `cache` (a project dependency cache) or `layer` (an OCI layer).
    pub kind: String,
    /// What it is: an image's name and short id, a cache's name, a layer's
    /// digest.
    pub name: String,
    /// Why nothing needs it.
    pub reason: String,
    /// Bytes its removal frees (blocks no kept file shares).
    pub bytes: u64,
    /// Its identity, to name it in `system_prune`'s `only`.
    pub key: String,
}

/// Parameters of `vm_create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateParams {
    /// Name; generated when absent.
    pub name: Option<String>,
    /// Virtual CPUs.
    pub vcpu: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Work disk size in bytes.
    pub disk_bytes: Option<u64>,
    /// Root overlay upper disk size in bytes.
    #[serde(default)]
    pub system_overlay_bytes: Option<u64>,
    /// Image name or id; the default image when absent.
    pub image: Option<String>,
    /// `auto`, `firecracker` or `qemu`; the configured default when absent.
    #[serde(default)]
    pub vmm: Option<String>,
    /// A catalog kernel (name or id) instead of the image's.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Start it right away.
    pub start: bool,
    /// Remove the VM again if it fails to start (`vm run --rm`: a failed
    /// run leaves nothing behind).
    #[serde(default)]
    pub delete_on_failure: bool,
    /// Binds the VM to this lease (held with `lease_hold` by the same
    /// client): the VM is removed when the lease ends, unless released
    /// first (`lease_release`). `vm run --rm` never releases; `vm create`
    /// releases once the VM is ready, so an interrupted create leaves
    /// nothing.
    #[serde(default)]
    pub lease: Option<String>,
    /// Outbound network access for the guest (off unless asked).
    #[serde(default)]
    pub nat: bool,
    /// Fixed port forwards, `[HOSTIP:]HOSTPORT:GUESTPORT` each.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Egress rules, `HOST[:PORT]` or `*.DOMAIN` each: only these
    /// destinations (implies outbound access).
    #[serde(default)]
    pub allow: Vec<String>,
    /// The repository (host path) whose dependency cache the VM mounts.
    #[serde(default)]
    pub cache: Option<String>,
    /// Boot cold even when the image has a snapshot (`--no-snapshot`).
    #[serde(default)]
    pub no_snapshot: bool,
    /// Start as a fork of this snapshot of a running VM, `NAME[:TAG]`
    /// (`--from-snapshot`): its image, shape, files, processes and workspace.
    #[serde(default)]
    pub from: Option<String>,
}

/// A snapshot of a running VM (`vm snapshot`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotView {
    /// `NAME:TAG`, what `--from` takes.
    pub reference: String,
    /// The name of the VM it was taken of.
    pub name: String,
    /// Its tag.
    pub tag: String,
    /// The id of the VM it was taken of (which may be gone since).
    pub vm_id: String,
    /// Its image.
    pub image: String,
    /// Virtual CPUs of the VMs started from it.
    pub vcpu: u32,
    /// Their memory in MiB.
    pub memory_mib: u64,
    /// Host bytes its files use.
    pub bytes: u64,
    /// The workspace's guest path, when the VM had one.
    pub workspace: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Progress of a long operation, then its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OpEvent {
    /// A phase began.
    Progress {
        /// Short phrase, like `booting guest`.
        message: String,
    },
    /// The operation finished with this VM.
    Vm {
        /// The VM.
        vm: Box<VmView>,
    },
    /// The operation finished with this image.
    Image {
        /// The image.
        image: Box<ImageView>,
    },
    /// The operation failed.
    Failed {
        /// An error code from [`code`].
        code: i32,
        /// What went wrong and what to do.
        message: String,
    },
}

/// Parameters of `vm_exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecParams {
    /// VM name or id.
    pub vm: String,
    /// Program and arguments, kept as given.
    pub argv: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory in the guest; the VM's workspace when it has one,
    /// else root's home.
    pub cwd: Option<String>,
    /// The client will send stdin with `exec_input`.
    #[serde(default)]
    pub stdin: bool,
    /// Delete the VM once the command ends (or the client goes away).
    #[serde(default)]
    pub delete_after: bool,
    /// Re-ship the workspace first if its host HEAD moved.
    #[serde(default)]
    pub auto_prepare: bool,
    /// Run on a pseudo-terminal of this size (interactive programs).
    #[serde(default)]
    pub tty: Option<Terminal>,
    /// The client acknowledges the output it consumed (`exec_ack`): the
    /// daemon then sends at most [`EXEC_CLIENT_WINDOW`] bytes ahead, and a
    /// client that stops reading stops the guest program (end-to-end flow
    /// control) instead of losing its output.
    #[serde(default)]
    pub flow: bool,
}

/// Output bytes the daemon sends ahead of a `flow` client's
/// acknowledgements.
pub const EXEC_CLIENT_WINDOW: u64 = 4 << 20;

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// What a guest command does, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecEvent {
    /// The command runs; `exec_input`/`exec_signal` take this id.
    Started {
        /// Exec id.
        exec_id: u64,
        /// Something the user should know (a stale workspace).
        #[serde(default)]
        warning: Option<String>,
    },
    /// Bytes on stdout (base64).
    Stdout {
        /// Base64 data.
        data: String,
    },
    /// Bytes on stderr (base64).
    Stderr {
        /// Base64 data.
        data: String,
    },
    /// The command ended (and, with `delete_after`, the VM is gone).
    Exited {
        /// Exit code.
        code: Option<i32>,
        /// Terminating signal.
        signal: Option<i32>,
        /// With `delete_after`: why the VM could not be removed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cleanup_error: Option<String>,
    },
    /// The command could not run or its VM failed.
    Failed {
        /// Error code from [`code`].
        code: i32,
        /// What went wrong.
        message: String,
    },
}

/// A guest kernel: from the catalog, or brought by an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelView {
    /// Name (`image:<name>` for an image's own kernel).
    pub name: String,
    /// Content id (sha256), or the image id.
    pub id: String,
    /// `elf` or `bz_image`.
    pub format: String,
    /// Built with PVM guest support.
    pub pvm: bool,
    /// Where it came from.
    pub source: String,
    /// The file a VMM boots.
    pub path: String,
    /// Firecracker can boot it (an ELF exists).
    pub firecracker: bool,
}

/// Parameters of `vm_set`: what changes at the next start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetParams {
    /// VM name or id.
    pub vm: String,
    /// New vCPU count.
    #[serde(default)]
    pub vcpu: Option<u32>,
    /// New memory in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Outbound network access on or off (at once on a running VM); off
    /// also drops egress rules, on drops them too (anywhere).
    #[serde(default)]
    pub nat: Option<bool>,
    /// New egress rules (replacing the old ones; at once on a running VM).
    #[serde(default)]
    pub allow: Option<Vec<String>>,
}

/// What `vm_logs` returns: the console log and the daemon's lines about
/// the VM from the given offsets on (for `vm logs -f`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmLogs {
    /// Console bytes from `console_from` on (invalid UTF-8 replaced).
    pub console: String,
    /// Where the next read of the console starts.
    pub console_next: u64,
    /// Daemon log lines about this VM from `daemon_from` on.
    pub daemon: Vec<String>,
    /// Where the next read of the daemon log starts.
    pub daemon_next: u64,
    /// The console log file.
    pub console_log: String,
    /// The daemon log file.
    pub daemon_log: String,
    /// The network's own lines (the keeper's: egress changes, refusals)
    /// from `network_from` on.
    #[serde(default)]
    pub network: Vec<String>,
    /// Where the next read of the network log starts.
    #[serde(default)]
    pub network_next: u64,
}

/// One of a VM's disks and what it really uses on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskStats {
    /// `overlay` or `work`.
    pub role: String,
    /// Backing file.
    pub path: String,
    /// Apparent size.
    pub size_bytes: u64,
    /// Bytes allocated on the host (st_blocks * 512).
    pub used_bytes: u64,
}

/// `vm_stats`: a VM's state and what its VMM process and disks use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStats {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// State.
    pub state: String,
    /// VMM process id, while running.
    pub pid: Option<i32>,
    /// Seconds since the VMM process started, while running.
    pub uptime_secs: Option<u64>,
    /// CPU time of the VMM process (user + system), seconds.
    pub cpu_secs: Option<f64>,
    /// Resident memory of the VMM process, bytes.
    pub rss_bytes: Option<u64>,
    /// Its disks.
    pub disks: Vec<DiskStats>,
    /// Sum of the disks' `used_bytes`.
    pub disk_used_bytes: u64,
}

/// About the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Daemon version.
    pub version: String,
    /// Its pid.
    pub pid: u32,
    /// Socket path.
    pub socket: String,
    /// Database schema version.
    pub schema_version: usize,
    /// Accelerator new VMs get, and why.
    pub accel: String,
    /// VMM new VMs get by default, and why.
    #[serde(default)]
    pub vmm: String,
    /// Identifies the build (for `daemon status`).
    #[serde(default)]
    pub build_id: String,
    /// The API it speaks ([`API_VERSION`]); the CLI replaces a daemon of
    /// another API version, and only while it is idle.
    #[serde(default)]
    pub api_version: u32,
    /// Requests it is serving besides the one asking (commands running,
    /// operations streaming).
    #[serde(default)]
    pub busy: usize,
}

/// The daemon API's version. Clients and daemons of one API version work
/// together whatever their builds; bump it with any change a client or
/// daemon of the previous version would misread (a method, a parameter, a
/// wire type). 0 is a daemon from before versions existed.
pub const API_VERSION: u32 = 4;

/// The API version this build speaks, as a daemon and as a client. Debug
/// builds let a test pose as another version (`BANGER_TEST_API_VERSION`),
/// to check how clients and daemons of different versions treat each
/// other.
pub fn api_version() -> u32 {
    if cfg!(debug_assertions)
        && let Some(v) = std::env::var("BANGER_TEST_API_VERSION")
            .ok()
            .and_then(|v| v.parse().ok())
    {
        return v;
    }
    API_VERSION
}

/// `lease_hold`'s one event: the lease is held until this subscription
/// ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LeaseEvent {
    /// The lease is held.
    Held,
}

/// This build's id (see `build.rs`).
pub const BUILD_ID: &str = env!("BANGER_BUILD_ID");

/// The daemon's API.
#[rpc(server, client, namespace = "banger")]
pub trait BangerApi {
    /// About the daemon.
    #[method(name = "daemon_info")]
    async fn daemon_info(&self) -> Result<DaemonInfo, ErrorObjectOwned>;

    /// Stops the daemon; running VMs keep running.
    #[method(name = "daemon_stop")]
    async fn daemon_stop(&self, force: Option<bool>) -> Result<(), ErrorObjectOwned>;

    /// Holds a lease for as long as this subscription lasts; VMs created
    /// with it and not released are removed when it ends (the client went
    /// away: Ctrl-C, a closed terminal, a crash).
    #[subscription(name = "lease_hold" => "lease_hold_event", unsubscribe = "lease_hold_unsubscribe", item = LeaseEvent)]
    async fn lease_hold(&self, lease: String) -> SubscriptionResult;

    /// Releases a VM from its lease: it stays when the lease ends.
    #[method(name = "lease_release")]
    async fn lease_release(&self, lease: String, vm: String) -> Result<(), ErrorObjectOwned>;

    /// VMs: running ones, or all with `all`.
    #[method(name = "vm_list")]
    async fn vm_list(&self, all: bool) -> Result<Vec<VmView>, ErrorObjectOwned>;

    /// One VM by name or id.
    #[method(name = "vm_show")]
    async fn vm_show(&self, vm: String) -> Result<VmView, ErrorObjectOwned>;

    /// Creates (and optionally starts) a VM, streaming progress. Invalid
    /// parameters are rejected before anything is created.
    #[subscription(name = "vm_create" => "vm_create_event", unsubscribe = "vm_create_unsubscribe", item = OpEvent)]
    async fn vm_create(&self, params: CreateParams) -> SubscriptionResult;

    /// Starts a stopped VM, streaming progress.
    #[subscription(name = "vm_start" => "vm_start_event", unsubscribe = "vm_start_unsubscribe", item = OpEvent)]
    async fn vm_start(&self, vm: String) -> SubscriptionResult;

    /// Flushes the guest and stops its VMM; disks are kept.
    #[method(name = "vm_stop")]
    async fn vm_stop(&self, vm: String) -> Result<VmView, ErrorObjectOwned>;

    /// Removes a VM and every file, socket and process of it.
    #[method(name = "vm_delete")]
    async fn vm_delete(&self, vm: String) -> Result<(), ErrorObjectOwned>;

    /// Reboots a running VM: stop (the guest flushes) and start again, so
    /// the guest gets a new boot id and keeps its disks. Streams progress.
    #[subscription(name = "vm_restart" => "vm_restart_event", unsubscribe = "vm_restart_unsubscribe", item = OpEvent)]
    async fn vm_restart(&self, vm: String) -> SubscriptionResult;

    /// Sends `signal` to the VM's VMM without flushing the guest (SIGKILL
    /// after a grace period if it does not exit); the VM ends `stopped`
    /// and its runtime files are removed.
    #[method(name = "vm_kill")]
    async fn vm_kill(&self, vm: String, signal: i32) -> Result<VmView, ErrorObjectOwned>;

    /// Deletes these VMs (names or ids) if they are not running (stopped or
    /// failed); running ones and ones with an operation in flight are
    /// kept. Returns the names deleted.
    #[method(name = "vm_prune")]
    async fn vm_prune(&self, vms: Vec<String>) -> Result<Vec<String>, ErrorObjectOwned>;

    /// Changes a stopped VM's vCPUs or memory, applied at its next start.
    #[method(name = "vm_set")]
    async fn vm_set(&self, params: SetParams) -> Result<VmView, ErrorObjectOwned>;

    /// The guest console, the daemon's log lines about a VM and its
    /// network's (what egress rules refused), from the given byte offsets.
    #[method(name = "vm_logs")]
    async fn vm_logs(
        &self,
        vm: String,
        console_from: u64,
        daemon_from: u64,
        network_from: Option<u64>,
    ) -> Result<VmLogs, ErrorObjectOwned>;

    /// State, uptime, CPU time and memory of the VMM, disk bytes used.
    #[method(name = "vm_stats")]
    async fn vm_stats(&self, vm: String) -> Result<VmStats, ErrorObjectOwned>;

    /// Makes a running VM reachable with ssh: its host key (made in the
    /// guest on first use, learnt through the agent), banger's key
    /// authorized, known_hosts rewritten.
    #[method(name = "vm_ssh_prepare")]
    async fn vm_ssh_prepare(&self, vm: String) -> Result<SshInfo, ErrorObjectOwned>;

    /// Installs the tools a running VM's workspace declares for mise
    /// (mise itself first, when missing); returns mise's output.
    #[method(name = "vm_bootstrap")]
    async fn vm_bootstrap(&self, vm: String) -> Result<String, ErrorObjectOwned>;

    /// A running VM's listening sockets and where the host reaches each.
    #[method(name = "vm_ports")]
    async fn vm_ports(&self, vm: String) -> Result<Vec<PortView>, ErrorObjectOwned>;

    /// Runs a command in a running VM, streaming its output.
    #[subscription(name = "vm_exec" => "vm_exec_event", unsubscribe = "vm_exec_unsubscribe", item = ExecEvent)]
    async fn vm_exec(&self, params: ExecParams) -> SubscriptionResult;

    /// Feeds a running command's stdin (`data` base64); `eof` closes it.
    #[method(name = "exec_input")]
    async fn exec_input(
        &self,
        exec_id: u64,
        data: Option<String>,
        eof: bool,
    ) -> Result<(), ErrorObjectOwned>;

    /// A `flow` exec's client consumed this many more bytes of output.
    #[method(name = "exec_ack")]
    async fn exec_ack(&self, exec_id: u64, bytes: u64) -> Result<(), ErrorObjectOwned>;

    /// Resizes a running command's terminal.
    #[method(name = "exec_resize")]
    async fn exec_resize(&self, exec_id: u64, size: Terminal) -> Result<(), ErrorObjectOwned>;

    /// Signals a running command's process group.
    #[method(name = "exec_signal")]
    async fn exec_signal(&self, exec_id: u64, signal: i32) -> Result<(), ErrorObjectOwned>;

    /// Builds an image: the default one, one from Debian packages, or one
    /// that adds packages to another.
    #[subscription(name = "image_build" => "image_build_event", unsubscribe = "image_build_unsubscribe", item = OpEvent)]
    async fn image_build(&self, params: ImageBuildParams) -> SubscriptionResult;

    /// Pulls an OCI image from a registry and makes it a banger image.
    #[subscription(name = "image_pull" => "image_pull_event", unsubscribe = "image_pull_unsubscribe", item = OpEvent)]
    async fn image_pull(&self, params: ImagePullParams) -> SubscriptionResult;

    /// Makes a banger image of an OCI layout or `docker save` archive.
    #[subscription(name = "image_import" => "image_import_event", unsubscribe = "image_import_unsubscribe", item = OpEvent)]
    async fn image_import(&self, params: ImageImportParams) -> SubscriptionResult;

    /// A project's image: its setup run once over a base image (made now
    /// unless one with the same base, command and inputs exists).
    #[subscription(name = "image_setup" => "image_setup_event", unsubscribe = "image_setup_unsubscribe", item = OpEvent)]
    async fn image_setup(&self, params: SetupParams) -> SubscriptionResult;

    /// Built images.
    #[method(name = "image_list")]
    async fn image_list(&self) -> Result<Vec<ImageView>, ErrorObjectOwned>;

    /// One image by name or id.
    #[method(name = "image_show")]
    async fn image_show(&self, image: String) -> Result<ImageView, ErrorObjectOwned>;

    /// Deletes an image no VM uses.
    #[method(name = "image_delete")]
    async fn image_delete(&self, image: String) -> Result<(), ErrorObjectOwned>;

    /// Snapshots a running VM (memory, device state, disks; it pauses for
    /// about a second), tagged `tag` (default `latest`).
    #[method(name = "vm_snapshot")]
    async fn vm_snapshot(
        &self,
        vm: String,
        tag: Option<String>,
    ) -> Result<SnapshotView, ErrorObjectOwned>;

    /// Snapshots of running VMs.
    #[method(name = "snapshot_list")]
    async fn snapshot_list(&self) -> Result<Vec<SnapshotView>, ErrorObjectOwned>;

    /// Deletes a snapshot (`NAME[:TAG]`) no VM is being started from.
    #[method(name = "snapshot_delete")]
    async fn snapshot_delete(&self, snapshot: String) -> Result<(), ErrorObjectOwned>;

    /// Project dependency caches.
    #[method(name = "cache_list")]
    async fn cache_list(&self) -> Result<Vec<CacheView>, ErrorObjectOwned>;

    /// Removes a project dependency cache no running VM mounts.
    #[method(name = "cache_clear")]
    async fn cache_clear(&self, name: String) -> Result<(), ErrorObjectOwned>;

    /// Cache contents nothing can use any more: images superseded by a
    /// newer one of their name that no VM, snapshot or config names, image
    /// snapshots of deleted images, dependency caches of repositories that
    /// are gone, and OCI layers no image came from. With `apply`, removes
    /// them (only those whose key is in `only`, when given: what a user
    /// confirmed) and returns what it removed; else returns the plan.
    #[method(name = "system_prune")]
    async fn system_prune(
        &self,
        apply: bool,
        only: Option<Vec<String>>,
    ) -> Result<Vec<PruneItem>, ErrorObjectOwned>;

    /// Which files of the repository at `path` would travel (`--dry-run`).
    #[method(name = "workspace_plan")]
    async fn workspace_plan(
        &self,
        path: String,
        include_untracked: bool,
        branch: Option<String>,
        from: Option<String>,
    ) -> Result<WorkspacePlan, ErrorObjectOwned>;

    /// Ships a repository into a VM at `/root/repo`: streamed into a
    /// running guest, or (`full_copy`) written into a stopped VM's disk.
    #[method(name = "vm_workspace_prepare")]
    async fn vm_workspace_prepare(
        &self,
        params: PrepareParams,
    ) -> Result<WorkspacePlan, ErrorObjectOwned>;

    /// The guest workspace's changes as a git patch, validated as untrusted
    /// input; with `apply`, applied to the host repository it came from.
    #[method(name = "vm_workspace_export")]
    async fn vm_workspace_export(
        &self,
        vm: String,
        base_commit: Option<String>,
        apply: bool,
        force: bool,
    ) -> Result<ExportResult, ErrorObjectOwned>;

    /// Live sync: ships the tracked files that differ from what the guest
    /// was last given (and the host's HEAD when it moved). Files the guest
    /// changed since are left alone and reported as conflicts.
    #[method(name = "vm_workspace_sync")]
    async fn vm_workspace_sync(&self, params: SyncParams) -> Result<SyncResult, ErrorObjectOwned>;

    /// What the guest changed since the last sync.
    #[method(name = "vm_workspace_changes")]
    async fn vm_workspace_changes(&self, vm: String) -> Result<GuestChanges, ErrorObjectOwned>;

    /// The guest's copies of `paths`, validated as untrusted input and
    /// refused whole when one breaks a rule. Nothing is written.
    #[method(name = "vm_workspace_fetch")]
    async fn vm_workspace_fetch(
        &self,
        vm: String,
        paths: Vec<String>,
    ) -> Result<Vec<FetchedFile>, ErrorObjectOwned>;

    /// Records the guest's copies the host took as synced; returns the
    /// paths recorded (those the guest still has as taken).
    #[method(name = "vm_workspace_accept")]
    async fn vm_workspace_accept(
        &self,
        vm: String,
        files: Vec<AcceptEntry>,
    ) -> Result<Vec<String>, ErrorObjectOwned>;

    /// Catalog kernels and the images' own kernels.
    #[method(name = "kernel_list")]
    async fn kernel_list(&self) -> Result<Vec<KernelView>, ErrorObjectOwned>;

    /// Imports a kernel file (on the daemon's host) into the catalog.
    #[method(name = "kernel_import")]
    async fn kernel_import(
        &self,
        path: String,
        name: Option<String>,
        pvm: bool,
    ) -> Result<KernelView, ErrorObjectOwned>;

    /// Downloads a kernel, checks its SHA-256 and imports it.
    #[method(name = "kernel_pull")]
    async fn kernel_pull(
        &self,
        url: String,
        sha256: String,
        name: Option<String>,
        pvm: bool,
    ) -> Result<KernelView, ErrorObjectOwned>;

    /// Removes a catalog kernel no VM uses.
    #[method(name = "kernel_delete")]
    async fn kernel_delete(&self, kernel: String) -> Result<(), ErrorObjectOwned>;
}
