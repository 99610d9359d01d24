//! `bangerd`: the per-user daemon. It alone talks to VMMs, agents and (later)
//! the root helper; clients reach it only through [`crate::api`].
//!
//! **Invariant:** a VMM process outlives any request and the daemon itself.
//! Long operations run in tasks detached from the request that asked for
//! them; a client that goes away stops receiving progress, not the work.

mod boot;
mod cache;
mod derive;
mod exec;
mod images;
mod initrd;
mod lifecycle;
mod ports;
mod prune;
mod rpc;
pub mod server;
mod snapshot;
mod ssh;
mod sync;
pub(crate) mod tooling;
mod user_snapshot;
mod vm;
mod workspace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_agent::client::AgentClient;
use tokio::sync::mpsc;

use crate::accel::{AccelChoice, HostFacts};
use crate::api::{OpEvent, code};
use crate::disk::{OverlayRoot, RootStrategy};
use crate::image::{BuildOptions, DEFAULT_IMAGE, Image, ImageStore};
use crate::paths::Dirs;
use crate::store::{Store, StoreError};
use crate::vmm::{Vmm, VmmChoice, VmmPreference};

/// An operation failed; `code` is one of [`crate::api::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// Error code.
    pub code: i32,
    /// Message for a person.
    pub message: String,
}

impl OpError {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> OpError {
        OpError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> OpError {
        OpError::new(code::INTERNAL, message)
    }

    /// Wraps any error, keeping its causes in the message.
    pub(crate) fn from_display(e: impl std::error::Error) -> OpError {
        OpError::internal(crate::error_chain(&e))
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> OpError {
        match e {
            StoreError::NameTaken(_) => OpError::new(code::INVALID, e.to_string()),
            other => OpError::from_display(other),
        }
    }
}

impl From<OpError> for jsonrpsee::types::ErrorObjectOwned {
    fn from(e: OpError) -> Self {
        // The daemon's own failures go to its log with their cause; a
        // client's bad input or a wrong state is the client's business.
        if e.code == crate::api::code::INTERNAL {
            tracing::error!("request failed: {}", e.message);
        }
        crate::api::error(e.code, e.message)
    }
}

/// Where progress of a long operation goes (a subscription, or nowhere).
#[derive(Clone)]
pub(crate) struct Progress(Option<mpsc::UnboundedSender<OpEvent>>);

impl Progress {
    pub(crate) fn to(tx: mpsc::UnboundedSender<OpEvent>) -> Progress {
        Progress(Some(tx))
    }

    pub(crate) fn say(&self, message: &str) {
        tracing::info!("{message}");
        if let Some(tx) = &self.0 {
            let _ = tx.send(OpEvent::Progress {
                message: message.to_string(),
            });
        }
    }
}

fn remove_stale_builds(root: &std::path::Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(".build-") {
            tracing::info!(
                "removing an interrupted image build: {}",
                entry.path().display()
            );
            let _ = make_writable_and_remove(&entry.path());
        }
    }
}

/// Removes a tree whose directories may be read-only (finished image
/// directories are 0555).
fn make_writable_and_remove(dir: &std::path::Path) -> std::io::Result<()> {
    fn open_up(dir: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&entry.path());
            }
        }
    }
    open_up(dir);
    std::fs::remove_dir_all(dir)
}

/// Takes an exclusive file lock, waiting at most `timeout` for it (saying
/// so through `waiting` once); released when the file drops. Callers run
/// it off the async workers.
fn lock_exclusive(
    path: &std::path::Path,
    timeout: Duration,
    waiting: impl FnOnce(),
) -> Result<std::fs::File, String> {
    let fail = |e: std::io::Error| format!("cannot lock {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(fail)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut waiting = Some(waiting);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
        }
        if let Some(say) = waiting.take() {
            say();
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{} is still locked after {timeout:?} (another image build); try again when it ends",
                path.display(),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs blocking work (large SQLite writes, removing a VM's files) off the
/// async workers: on the daemon's multi-threaded runtime the worker hands
/// its other tasks to another thread meanwhile; elsewhere (a test's
/// current-thread runtime) it just runs.
pub(crate) fn offload<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// See [`Daemon::cancel_boot`].
pub(crate) struct CancelBoot<'a>(&'a Daemon, String);

impl Drop for CancelBoot<'_> {
    fn drop(&mut self) {
        let mut cancelled = lock(&self.0.cancelled);
        if let Some(n) = cancelled.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                cancelled.remove(&self.1);
            }
        }
    }
}

/// A std mutex, whatever a panicking holder left in it (the data here are
/// plain sets and maps that stay consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The longest an image build waits for another one (a build takes a few
/// minutes; a cold one with slow mirrors, more).
const BUILD_LOCK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The guest agent binary this daemon ships into every guest.
pub struct AgentBinary {
    /// Its bytes.
    pub bytes: Arc<[u8]>,
    /// Their sha256 (hex).
    pub sha256: String,
    /// Where it was found.
    pub path: PathBuf,
}

impl AgentBinary {
    /// Finds `banger-agent`: `$BANGER_AGENT`, else next to this executable.
    pub fn locate() -> Result<AgentBinary, String> {
        let path = AgentBinary::locate_path()?;
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read the guest agent {}: {e}; install banger-agent next to bangerd or set BANGER_AGENT",
                path.display()
            )
        })?;
        use sha2::Digest;
        let sha256 = format!("{:x}", sha2::Sha256::digest(&bytes));
        Ok(AgentBinary {
            bytes: bytes.into(),
            sha256,
            path,
        })
    }
}

impl AgentBinary {
    /// Where `banger-agent` is: `$BANGER_AGENT`, else next to this
    /// executable (not read).
    pub fn locate_path() -> Result<PathBuf, String> {
        Ok(match std::env::var_os("BANGER_AGENT") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find this executable: {e}"))?
                .with_file_name("banger-agent"),
        })
    }
}

/// The daemon's state, shared by every request.
pub struct Daemon {
    pub(crate) dirs: Dirs,
    store: Mutex<Store>,
    pub(crate) images: ImageStore,
    pub(crate) host: HostFacts,
    pub(crate) accel: AccelChoice,
    pub(crate) root: Arc<dyn RootStrategy>,
    pub(crate) agent: AgentBinary,
    pub(crate) boot_timeout: Duration,
    agents: Mutex<HashMap<String, AgentClient>>,
    vm_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One live sync at a time per VM.
    sync_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    build_lock: tokio::sync::Mutex<()>,
    /// One derived image made at a time (`derive.rs`).
    derive_lock: tokio::sync::Mutex<()>,
    /// Held from choosing whether a starting VM mounts its project cache
    /// until its row says it starts (and by `cache_clear`): two VMs never
    /// mount one cache.
    pub(crate) cache_lock: tokio::sync::Mutex<()>,
    pub(crate) execs: exec::ExecTable,
    pub(crate) shutdown: tokio::sync::Notify,
    /// Held (shared) by a create from choosing its image and kernel until
    /// its row names them; held alone by image and kernel deletes, so a
    /// delete never removes what a create is about to use.
    pub(crate) catalog: tokio::sync::RwLock<()>,
    /// Requests being served (a subscription counts until it ends).
    pub(crate) in_flight: std::sync::atomic::AtomicUsize,
    /// Leases held by connected clients (`lease_hold`).
    pub(crate) leases: Mutex<std::collections::HashSet<String>>,
    /// VMs whose lease ended while they booted: the boot gives up.
    /// (How many deletes want it; two may at once.)
    pub(crate) cancelled: Mutex<HashMap<String, usize>>,
    /// One agent connection attempt at a time per VM (`Daemon::agent`).
    pub(crate) agent_gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One ssh preparation at a time per VM (`ssh.rs`).
    pub(crate) ssh_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Each running VM's port forwarding (`ports.rs`).
    pub(crate) forwards: Mutex<HashMap<String, ports::VmForwards>>,
    /// Image snapshots (`snapshot.rs`).
    pub(crate) snapshots: Arc<snapshot::Snapshots>,
}

impl Daemon {
    /// Opens the store, probes the host and reconciles records with live
    /// processes.
    pub fn open(dirs: Dirs) -> Result<Arc<Daemon>, String> {
        let store = Store::open(&dirs.database()).map_err(|e| OpError::from_display(e).message)?;
        let host = crate::accel::probe();
        let accel = crate::accel::choose(&host);
        let boot_timeout = std::env::var("BANGER_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(match accel.accel {
                crate::accel::Accel::Kvm => Duration::from_secs(60),
                crate::accel::Accel::Tcg => Duration::from_secs(180),
            });
        let daemon = Arc::new(Daemon {
            images: ImageStore::new(dirs.images()),
            store: Mutex::new(store),
            host,
            accel,
            root: Arc::new(OverlayRoot),
            agent: AgentBinary::locate()?,
            boot_timeout,
            agents: Mutex::default(),
            vm_locks: Mutex::default(),
            sync_locks: Mutex::default(),
            build_lock: tokio::sync::Mutex::new(()),
            derive_lock: tokio::sync::Mutex::new(()),
            cache_lock: tokio::sync::Mutex::new(()),
            execs: exec::ExecTable::default(),
            shutdown: tokio::sync::Notify::new(),
            catalog: tokio::sync::RwLock::new(()),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            leases: Mutex::default(),
            cancelled: Mutex::default(),
            forwards: Mutex::default(),
            snapshots: Arc::default(),
            ssh_locks: Mutex::default(),
            agent_gates: Mutex::default(),
            dirs,
        });
        daemon.reconcile_all().map_err(|e| e.message)?;
        daemon.end_stale_templates();
        daemon.prune_initrds(None);
        Ok(daemon)
    }

    /// The VMs bound to `lease`, or to any lease (`None`).
    /// (Held by clients through `lease_hold`, or by the daemon itself
    /// through [`LeaseGuard`].)
    pub fn leased(&self, lease: Option<&str>) -> Vec<String> {
        self.with_store(|s| s.leased_vms(lease))
            .unwrap_or_else(|e| {
                tracing::error!("cannot read leases: {}", e.message);
                Vec::new()
            })
    }

    /// Removes VMs whose lease ended: their client is gone (or, at startup,
    /// every lease is: none outlives the daemon that held it). A VM still
    /// booting gives up first.
    pub async fn remove_leased(self: &Arc<Self>, ids: Vec<String>) {
        for id in ids {
            tracing::info!(vm = %id, "removing a vm whose client went away (--rm, or a create that did not finish)");
            match self.delete_vm(&id).await {
                Ok(()) => {}
                Err(e) if e.code == code::NOT_FOUND => {}
                Err(e) => tracing::error!(
                    vm = %id,
                    "cannot remove a vm whose client went away: {}; remove it with: banger vm delete {id}",
                    e.message
                ),
            }
        }
    }

    /// Whether a VM's boot was cancelled (it is being deleted).
    pub(crate) fn is_cancelled(&self, id: &str) -> bool {
        lock(&self.cancelled).contains_key(id)
    }

    /// Makes a boot of VM `id` in progress give up until the guard drops:
    /// a delete then waits seconds, not the whole boot time-out.
    pub(crate) fn cancel_boot(&self, id: &str) -> CancelBoot<'_> {
        *lock(&self.cancelled).entry(id.to_string()).or_insert(0) += 1;
        CancelBoot(self, id.to_string())
    }

    /// The driver for a VM's recorded VMM.
    pub(crate) fn driver(&self, name: &str) -> Result<Arc<dyn Vmm>, OpError> {
        crate::vmm::driver(name)
            .map(Arc::from)
            .ok_or_else(|| OpError::internal(format!("this banger has no {name:?} driver")))
    }

    /// Decides the VMM for a new VM: the request's preference, else the
    /// configured one (`$BANGER_VMM` or `vmm` in config.toml), else auto.
    pub(crate) fn vmm_choice(
        &self,
        requested: Option<&str>,
        pvm_kernel: bool,
    ) -> Result<VmmChoice, OpError> {
        // The host-process test double, in debug builds only (tests).
        #[cfg(debug_assertions)]
        if let Some(choice) =
            crate::vmm::fake::choice(&crate::accel::choose_for(&self.host, pvm_kernel))
        {
            return choice.map_err(|e| OpError::new(code::INVALID, e));
        }
        let configured = std::env::var("BANGER_VMM").ok().or_else(|| {
            crate::config::Config::load(&self.dirs)
                .ok()
                .and_then(|c| c.vmm)
        });
        let preference: VmmPreference = requested
            .map(str::to_string)
            .or(configured)
            .unwrap_or_else(|| "auto".into())
            .parse()
            .map_err(|e: String| OpError::new(code::INVALID, e))?;
        let firecracker = crate::vmm::firecracker::locate();
        Ok(crate::vmm::choose_vmm(
            preference,
            &crate::accel::choose_for(&self.host, pvm_kernel),
            firecracker.as_deref(),
        ))
    }

    /// The kernel catalog.
    pub(crate) fn kernels(&self) -> crate::kernel::KernelStore {
        crate::kernel::KernelStore::new(self.dirs.cache.join("kernels"))
    }

    /// A catalog kernel by name or id, or a NOT_FOUND error.
    pub(crate) fn find_kernel(&self, name: &str) -> Result<crate::kernel::KernelEntry, OpError> {
        self.kernels()
            .find(name)
            .map_err(OpError::from_display)?
            .ok_or_else(|| {
                OpError::new(
                    code::NOT_FOUND,
                    format!("no kernel named {name:?}; list them with: banger kernel list"),
                )
            })
    }

    pub(crate) fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, OpError> {
        let store = self
            .store
            .lock()
            .map_err(|_| OpError::internal("the state database lock is poisoned"))?;
        f(&store).map_err(OpError::from)
    }

    fn vm_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.vm_locks);
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Waits (bounded) until no VM operation is in flight, so stopping the
    /// daemon never abandons a VMM it launched but has not recorded yet.
    pub async fn quiesce(&self, timeout: Duration) {
        let locks: Vec<Arc<tokio::sync::Mutex<()>>> =
            lock(&self.vm_locks).values().cloned().collect();
        let all = async {
            for lock in locks {
                let _held = lock.lock().await;
            }
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("stopping with a vm operation still running after {timeout:?}");
        }
    }

    fn forget_lock(&self, id: &str) {
        lock(&self.vm_locks).remove(id);
        lock(&self.agent_gates).remove(id);
        lock(&self.ssh_locks).remove(id);
    }

    fn agents_get(&self, id: &str) -> Option<AgentClient> {
        let agents = lock(&self.agents);
        agents.get(id).cloned()
    }

    fn agents_insert(&self, id: &str, client: AgentClient) {
        let mut agents = lock(&self.agents);
        agents.insert(id.to_string(), client);
    }

    fn agents_remove(&self, id: &str) {
        let mut agents = lock(&self.agents);
        agents.remove(id);
    }

    /// Finds an image; the default one (no name, or its name) is the
    /// newest built with this banger's recipe, and is built when there is
    /// none (missing, or only older recipes).
    pub(crate) async fn ensure_image(
        &self,
        name: Option<&str>,
        progress: &Progress,
    ) -> Result<Image, OpError> {
        match name.filter(|n| *n != DEFAULT_IMAGE) {
            Some(wanted) => self
                .images
                .find(wanted)
                .map_err(OpError::from_display)?
                .ok_or_else(|| {
                    OpError::new(
                        code::NOT_FOUND,
                        format!("no image named {wanted:?}; list them with: banger image list"),
                    )
                }),
            None => {
                let recipe = self.default_build_options().recipe();
                if let Some(image) = current_default(&self.images, &recipe)? {
                    return Ok(image);
                }
                let why = if self.images.find(DEFAULT_IMAGE).ok().flatten().is_some() {
                    "was built by an older banger"
                } else {
                    "is missing"
                };
                progress.say(&format!("image {DEFAULT_IMAGE} {why}; building it (once)"));
                self.build_image(progress, true).await
            }
        }
    }

    fn default_build_options(&self) -> BuildOptions {
        BuildOptions::default_for(self.agent.path.clone(), &self.dirs.cache)
    }

    /// Builds the default image; with `only_if_missing`, whoever waited
    /// for another build finds the image built and builds nothing.
    pub(crate) async fn build_image(
        &self,
        progress: &Progress,
        only_if_missing: bool,
    ) -> Result<Image, OpError> {
        self.build_with(self.default_build_options(), progress, only_if_missing)
            .await
    }

    /// Builds an image from Debian packages. One build at a time, also
    /// across daemons sharing the cache (a file lock).
    pub(crate) async fn build_with(
        &self,
        opts: BuildOptions,
        progress: &Progress,
        only_if_missing: bool,
    ) -> Result<Image, OpError> {
        let _guard = self.build_lock.lock().await;
        let store = ImageStore::new(self.images.root());
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            let lock_path = store.root().join(".build.lock");
            let _lock = lock_exclusive(&lock_path, BUILD_LOCK_TIMEOUT, || {
                progress.say(&format!(
                    "waiting for another build in the image store to finish (lock {})",
                    lock_path.display()
                ));
            })
            .map_err(OpError::internal)?;
            // Holding the lock, any half-built directory is from a build that
            // was killed: nobody else can be writing it.
            remove_stale_builds(store.root());
            if only_if_missing && let Some(image) = current_default(&store, &opts.recipe())? {
                return Ok(image);
            }
            let image = crate::image::build(&store, &opts, &mut |msg: &str| progress.say(msg))
                .map_err(OpError::from_display)?;
            let older = store
                .list()
                .map_or(0, |all| all.iter().filter(|i| i.name == image.name && i.id != image.id).count());
            if older > 0 {
                progress.say(&format!(
                    "{older} earlier build{} of {} stay{} in the cache; banger system prune removes what no vm uses",
                    if older == 1 { "" } else { "s" },
                    image.name,
                    if older == 1 { "s" } else { "" }
                ));
            }
            Ok(image)
        })
        .await
        .map_err(|e| OpError::internal(format!("image build task failed: {e}")))?
    }
}

/// A lease: VMs created under it are removed when it drops (whatever ends
/// its holder), or by the next daemon if this one dies first.
pub(crate) struct LeaseGuard(Arc<Daemon>, String);

impl LeaseGuard {
    /// Holds `token` (refused if it is held already).
    pub(crate) fn take(daemon: &Arc<Daemon>, token: String) -> Result<LeaseGuard, OpError> {
        if !lock(&daemon.leases).insert(token.clone()) {
            return Err(OpError::new(
                code::CONFLICT,
                format!("lease {token:?} is already held"),
            ));
        }
        Ok(LeaseGuard(daemon.clone(), token))
    }

    /// A new lease of the daemon's own.
    pub(crate) fn hold(daemon: &Arc<Daemon>) -> Result<LeaseGuard, OpError> {
        LeaseGuard::take(daemon, format!("bangerd-{}", vm::random_hex(12)?))
    }

    /// Its token (for `CreateParams::lease`).
    pub(crate) fn token(&self) -> &str {
        &self.1
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let (daemon, lease) = (self.0.clone(), std::mem::take(&mut self.1));
        lock(&daemon.leases).remove(&lease);
        let ids = daemon.leased(Some(&lease));
        // Without a runtime (the daemon is going away) the next daemon
        // removes them at its start.
        if let (false, Ok(rt)) = (ids.is_empty(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move { daemon.remove_leased(ids).await });
        }
    }
}

/// The newest default image built with `recipe`.
fn current_default(store: &ImageStore, recipe: &str) -> Result<Option<Image>, OpError> {
    Ok(store
        .list()
        .map_err(OpError::from_display)?
        .into_iter()
        .find(|i| {
            i.name == DEFAULT_IMAGE
                && matches!(&i.manifest.source, Some(crate::image::Source::Debian { recipe: r, packages })
                    if r == recipe && packages.is_empty())
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waiting for another build's lock says so once, and gives up after
    /// its time-out with a message naming the lock; a free lock is taken
    /// at once.
    #[test]
    fn a_held_lock_is_waited_for_with_a_message_and_a_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".build.lock");
        let holder = lock_exclusive(&path, Duration::from_secs(1), || {
            panic!("a free lock was waited for")
        })
        .unwrap();
        let mut said = 0;
        let err = lock_exclusive(&path, Duration::from_millis(300), || said += 1).unwrap_err();
        assert_eq!(said, 1);
        assert!(
            err.contains(".build.lock is still locked after 300ms (another image build)"),
            "{err}"
        );
        drop(holder);
        // Free again once dropped. (Not "at once": a process another test
        // forks at that moment shares the open lock file until its exec.)
        lock_exclusive(&path, Duration::from_secs(5), || {}).unwrap();
    }
}
