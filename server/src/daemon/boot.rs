//! Starting a VM: its network, boot files (with this host's agent and
//! certificate authorities), the VMM, and waiting until its agent answers;
//! a start that fails ends and removes what it made.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_agent::client::{AgentClient, AgentError};

use super::{Daemon, OpError, Progress};
use crate::api::code;
use crate::disk::WorkDisk;
use crate::process::ProcessIdentity;
use crate::store::{VmRecord, VmState};
use crate::vmm::{AgentEndpoint, BootFiles, LaunchPlan};

impl Daemon {
    /// Starts a VM by name or id.
    pub(crate) async fn start_vm(
        self: &Arc<Self>,
        name_or_id: &str,
        progress: &Progress,
    ) -> Result<VmRecord, OpError> {
        let vm = self.find(name_or_id)?;
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        let vm = self.refresh(self.find(name_or_id)?)?;
        if vm.state.may_have_process() {
            return Err(OpError::new(
                code::RUNNING,
                format!("vm {:?} is already {}", vm.name, vm.state),
            ));
        }
        self.start_vm_locked(vm, Boot::Cold, progress).await
    }

    /// Starts a VM whose lock the caller holds. `Boot::FromSnapshot` (a
    /// VM's first start, its disks fresh) restores the image's snapshot
    /// when it can; when it cannot, it says why and boots cold on fresh
    /// disks. `Boot::FromUserSnapshot` restores that snapshot or fails.
    pub(super) async fn start_vm_locked(
        self: &Arc<Self>,
        vm: VmRecord,
        boot: Boot,
        progress: &Progress,
    ) -> Result<VmRecord, OpError> {
        if let Boot::FromUserSnapshot(reference) = &boot {
            let from = RestoreFrom::User(reference.clone());
            return match self.start_once(vm, Some(&from), progress).await {
                Ok(vm) => Ok(vm),
                Err(StartError::Fatal(e)) => Err(e),
                Err(StartError::Restore(reason)) => Err(OpError::internal(format!(
                    "cannot start from snapshot {reference}: {reason}"
                ))),
            };
        }
        // A driver that cannot restore boots as it always has, unremarked.
        let restorable = boot == Boot::FromSnapshot && self.driver(&vm.vmm)?.snapshots();
        if restorable {
            let reason = match self
                .start_once(vm.clone(), Some(&RestoreFrom::Image), progress)
                .await
            {
                Ok(vm) => return Ok(vm),
                Err(StartError::Fatal(e)) => return Err(e),
                Err(StartError::Restore(reason)) => reason,
            };
            // The copies may be half made: fresh disks again.
            let (dir, root, spec) = (self.dirs.vm_state(&vm.id), self.root.clone(), vm.spec);
            tokio::task::spawn_blocking(move || -> Result<(), OpError> {
                root.create(&dir, spec.overlay_bytes)
                    .map_err(OpError::from_display)?;
                WorkDisk::create(&dir, spec.disk_bytes).map_err(OpError::from_display)
            })
            .await
            .unwrap_or_else(|e| Err(OpError::internal(format!("disk task failed: {e}"))))?;
            tracing::warn!(vm = %vm.name, "snapshot not used: {reason}");
            progress.say(&format!("booting cold: {reason}"));
        }
        match self.start_once(vm, None, progress).await {
            Ok(vm) => Ok(vm),
            Err(StartError::Fatal(e)) => Err(e),
            Err(StartError::Restore(reason)) => Err(OpError::internal(reason)),
        }
    }

    /// One attempt: boots, or with `restore` restores the image's
    /// snapshot. A failed restore ends what it started and answers
    /// `StartError::Restore` (the caller boots cold); anything else that
    /// fails leaves the VM `error`.
    async fn start_once(
        self: &Arc<Self>,
        mut vm: VmRecord,
        restore: Option<&RestoreFrom>,
        progress: &Progress,
    ) -> Result<VmRecord, StartError> {
        let image = self
            .images
            .find(&vm.image_id)
            .map_err(OpError::from_display)?
            .ok_or_else(|| {
                OpError::new(
                    code::NOT_FOUND,
                    format!(
                        "image {} ({}) of vm {:?} is gone; delete the vm or rebuild the image",
                        vm.image_name, vm.image_id, vm.name
                    ),
                )
            })?;
        let driver = self.driver(&vm.vmm)?;
        let kernel = match &vm.kernel_id {
            Some(id) => Some(self.find_kernel(id)?),
            None => None,
        };
        let host_accel =
            crate::accel::choose_for(&self.host, kernel.as_ref().is_some_and(|k| k.pvm));
        let accel = if vm.vmm == crate::vmm::qemu::NAME {
            host_accel
        } else {
            crate::vmm::choose_vmm(crate::vmm::VmmPreference::Firecracker, &host_accel, None).accel
        };
        progress.say("preparing boot files");
        // Reads and writes whole initramfs files: off the async workers.
        let (initrd, initrd_hold) = tokio::task::block_in_place(|| self.agent_initrd(&image))?;
        let runtime_dir = self.dirs.vm_runtime(&vm.id);
        crate::paths::Dirs::ensure_private(&runtime_dir).map_err(|e| {
            OpError::internal(format!("cannot create {}: {e}", runtime_dir.display()))
        })?;
        let state_dir = self.dirs.vm_state(&vm.id);
        if vm.loopback.is_none() {
            // A VM made before ports were forwarded gets its address now.
            let id = vm.id.clone();
            vm.loopback = self.with_store(|s| {
                let taken = s.loopbacks()?;
                let address = crate::net::ports::allocate_loopback(&taken);
                let mut row = s
                    .find_vm(&id)?
                    .ok_or(crate::store::StoreError::Corrupt(format!(
                        "vm {id} vanished"
                    )))?;
                row.loopback = address;
                s.update_vm(&row)?;
                Ok(address)
            })?;
        }
        progress.say("starting the vm's network");
        let network = {
            let (rt, log, egress) = (
                runtime_dir.clone(),
                state_dir.join(crate::net::LOG_FILE),
                vm.egress(),
            );
            tokio::task::spawn_blocking(move || crate::vmm::network::start(&rt, &log, &egress))
                .await
                .map_err(|e| OpError::internal(format!("network task failed: {e}")))?
        };
        let network = match network {
            Ok(n) => n,
            Err(e) => return Err(self.start_failed(&mut vm, e.to_string()).await.into()),
        };
        let layers = image.layers();
        let mut drives = self.root.drives(&image.rootfs(), &layers, &state_dir);
        drives.push(WorkDisk::drive(&state_dir));
        // The project's cache, mounted by one VM at a time: the lock is
        // held until this VM's row says it starts.
        let cache_guard = match &vm.cache {
            Some(_) => Some(self.cache_lock.lock().await),
            None => None,
        };
        let cache_disk = match &vm.cache {
            Some(name) => self.claim_cache(&vm, name, progress),
            None => None,
        };
        if let Some(path) = &cache_disk {
            drives.push(crate::disk::Drive {
                role: crate::disk::DriveRole::Cache,
                path: path.clone(),
                read_only: false,
            });
        }
        let plan = LaunchPlan {
            name: vm.name.clone(),
            vcpu: vm.spec.vcpu,
            memory_mib: vm.spec.memory_mib,
            boot: {
                let (bzimage, vmlinux, hz) = match &kernel {
                    Some(k) => (
                        k.path.clone(),
                        k.vmlinux.clone().unwrap_or_else(|| k.path.clone()),
                        None,
                    ),
                    None => (image.kernel(), image.vmlinux(), image.manifest.kernel_hz),
                };
                BootFiles {
                    pvh: crate::image::boots_as_pvh(&vmlinux),
                    bzimage,
                    vmlinux,
                    initrd,
                    hz,
                }
            },
            kernel_args: [
                self.root.kernel_arg().to_string(),
                network.guest.kernel_arg(),
            ]
            .into_iter()
            .chain((!layers.is_empty()).then(|| format!("banger.layers={}", layers.len())))
            .chain(cache_disk.is_some().then(|| CACHE_ARG.to_string()))
            // An OCI image (and one derived from it) has no init that
            // would start the agent.
            .chain(
                image
                    .manifest
                    .agent_init
                    .then(|| "banger.init=agent".to_string()),
            )
            .collect(),
            drives,
            accel: accel.clone(),
            tsc_khz: self.host.tsc_khz,
            runtime_dir: runtime_dir.clone(),
            console_log: state_dir.join("console.log"),
            network: Some(crate::vmm::network::NetAttach {
                keeper_pid: network.keeper.pid,
            }),
            mac: super::snapshot::guest_mac(&vm.id),
            memory: crate::vmm::Memory::Anonymous,
        };
        let mut plan = plan;
        // A restored guest does not boot: its dependency cache, if any, is
        // mounted through the agent once it runs (the image's snapshot has
        // a placeholder disk in its place, unmounted).
        let mounts_cache = plan
            .drives
            .iter()
            .any(|d| d.role == crate::disk::DriveRole::Cache);
        if matches!(restore, Some(RestoreFrom::Image)) {
            plan.kernel_args.retain(|a| a != CACHE_ARG);
        }
        // What the guest sees at boot: a snapshot of this VM records it,
        // and a VM restored from one must launch the same.
        let key = {
            let (snapshots, d) = (self.snapshots.clone(), driver.clone());
            tokio::task::block_in_place(|| {
                let version = snapshots.cached_version(d.as_ref())?;
                super::snapshot::key(&plan, d.name(), &version).map_err(|e| e.to_string())
            })
        };
        let prepared = match (restore, &key) {
            (None, _) => None,
            (Some(RestoreFrom::Image), _) => Some(
                self.prepare_restore(&vm, &mut plan, &driver, progress)
                    .await,
            ),
            (Some(RestoreFrom::User(reference)), Ok(key)) => Some(
                self.prepare_user_restore(reference, &mut plan, key, progress)
                    .await,
            ),
            (Some(RestoreFrom::User(_)), Err(e)) => Some(Err(e.clone())),
        };
        let restoring = if let Some(prepared) = prepared {
            match prepared {
                Ok(r) => Some(r),
                Err(reason) => {
                    drop(cache_guard);
                    self.clear_runtime(&vm.id).await;
                    return Err(StartError::Restore(reason));
                }
            }
        } else {
            progress.say(&format!(
                "starting {} (accel: {} ({}))",
                driver.name(),
                accel.accel.as_str(),
                accel.reason
            ));
            None
        };
        let mac = plan.mac.clone();
        let plan_kernel = (plan.boot.bzimage.clone(), plan.boot.vmlinux.clone());
        let launcher = driver.clone();
        let launched = tokio::task::spawn_blocking(move || launcher.launch(&plan))
            .await
            .map_err(|e| OpError::internal(format!("launch task failed: {e}")))?;
        // The VMM has read the initramfs (or failed): it may be pruned.
        drop(initrd_hold);
        let identity = match (launched, &restoring) {
            (Ok(id), _) => id,
            (Err(e), Some(r)) => {
                self.clear_runtime(&vm.id).await;
                return Err(StartError::Restore(format!(
                    "{e} (snapshot {})",
                    r.dir.display()
                )));
            }
            (Err(e), None) => return Err(self.start_failed(&mut vm, e.to_string()).await.into()),
        };
        // The VMM has read the snapshot: it may be pruned from here on.
        let restored = restoring
            .map(|r| super::snapshot::mark_restored(&runtime_dir, &r.dir))
            .is_some();
        if let Ok(key) = &key {
            super::user_snapshot::record_launch_key(&runtime_dir, key);
        }
        vm.state = VmState::Starting;
        vm.pid = Some(identity.pid);
        vm.pid_start_time = Some(identity.start_time);
        vm.accel = Some(accel.accel.as_str().to_string());
        vm.accel_reason = Some(accel.reason.clone());
        vm.kernel = Some(match vm.vmm.as_str() {
            crate::vmm::qemu::NAME => plan_kernel.0.display().to_string(),
            _ => plan_kernel.1.display().to_string(),
        });
        vm.last_error = None;
        vm.boot_id = None;
        self.with_store(|s| s.update_vm(&vm))?;
        drop(cache_guard);
        // From here the network ends with the VMM, whoever ends it.
        {
            let rt = runtime_dir.clone();
            let watched =
                tokio::task::spawn_blocking(move || crate::vmm::network::watch(&rt, identity))
                    .await;
            if let Ok(Err(e)) = watched {
                tracing::warn!(vm = %vm.name, "the network does not watch the VMM: {e}");
            }
        }

        if !restored {
            progress.say("booting guest (waiting for the agent)");
        }
        let endpoint = driver.agent_endpoint(&runtime_dir);
        let mut ready = self
            .wait_ready(
                &endpoint,
                identity,
                &state_dir.join("console.log"),
                Some(&vm.id),
            )
            .await;
        if restored {
            // Its own identity (and its cache) before anyone else reaches
            // the guest. A restore that fails anywhere ends here: the
            // caller boots cold instead of an image's snapshot, and fails a
            // fork (unless the VM is being deleted, which fails it anyway).
            let given = match &ready {
                Ok((client, _)) => match self.give_identity(client, &vm, &mac).await {
                    Ok(()) if mounts_cache => mount_cache(client).await,
                    other => other,
                },
                Err(message) => Err(message.clone()),
            };
            if let Err(reason) = given
                && !self.is_cancelled(&vm.id)
            {
                let _ = tokio::task::spawn_blocking(move || {
                    identity.kill_and_wait(Duration::from_secs(5))
                })
                .await;
                self.clear_runtime(&vm.id).await;
                return Err(StartError::Restore(reason));
            }
            if let (Ok(_), true) = (&ready, self.is_cancelled(&vm.id)) {
                ready = Err("the boot was cancelled: the vm is being deleted".into());
            }
        }
        match ready {
            Ok((client, boot_id)) => {
                self.agents_insert(&vm.id, client);
                vm.state = VmState::Running;
                tracing::info!(vm = %vm.name, boot_id = %boot_id, "running");
                vm.boot_id = Some(boot_id);
                self.with_store(|s| s.update_vm(&vm))?;
                // Recorded as running first: both ask for a running VM.
                self.start_forwarding(&vm);
                // Its ssh host key (made now, on its first boot) and
                // known_hosts, before anyone runs ssh; off the boot's path.
                // Never for the debug builds' fake VMM, whose "guest" is
                // this host.
                if !(cfg!(debug_assertions) && vm.vmm == "fake") {
                    let daemon = self.clone();
                    let id = vm.id.clone();
                    tokio::spawn(async move {
                        if let Err(e) = daemon.ssh_prepare(&id).await {
                            // A VM deleted or stopped meanwhile (a `vm run
                            // --rm` whose command ended first) needs none.
                            let gone = daemon.is_cancelled(&id)
                                || match daemon.find(&id) {
                                    Ok(vm) => vm.state != VmState::Running,
                                    Err(e) => e.code == code::NOT_FOUND,
                                };
                            if gone {
                                tracing::debug!(vm = %id, "ssh not prepared, the vm ended: {}", e.message);
                            } else {
                                tracing::warn!(vm = %id, "ssh not prepared: {}", e.message);
                            }
                        }
                    });
                }
                Ok(vm)
            }
            Err(message) => {
                let vmm_exited = !identity.is_alive();
                let _ = tokio::task::spawn_blocking(move || {
                    identity.kill_and_wait(Duration::from_secs(5))
                })
                .await;
                self.clear_runtime(&vm.id).await;
                let console = state_dir.join("console.log");
                let tail = console_tail(&console, 8);
                // The VMM's own word on why it ended comes first: the
                // console's last lines are often harmless boot noise.
                let message = match (driver.failure_hint(&state_dir), vmm_exited) {
                    (Some(hint), _) => format!("{message} ({hint})"),
                    (None, true) => format!(
                        "{message} (it left no message: killed with SIGKILL, by a user or the kernel's out-of-memory killer)"
                    ),
                    (None, false) => message,
                };
                let message = format!(
                    "{message}; console log: {}{}",
                    console.display(),
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!("\nthe console's last lines:\n{tail}")
                    }
                );
                tracing::warn!(vm = %vm.name, "start failed: {message}");
                vm.state = VmState::Error;
                vm.pid = None;
                vm.pid_start_time = None;
                vm.last_error = Some(message.clone());
                let _ = self.with_store(|s| s.update_vm(&vm));
                Err(OpError::internal(message).into())
            }
        }
    }

    /// Waits until the agent answers hello, or the VMM dies, or time runs
    /// out, or the guest's console stays silent for longer than any boot
    /// needs (a guest stuck before its kernel prints a line, e.g. while
    /// calibrating its clock, would otherwise use the whole boot timeout).
    pub(super) async fn wait_ready(
        &self,
        endpoint: &AgentEndpoint,
        identity: ProcessIdentity,
        console: &std::path::Path,
        cancel_id: Option<&str>,
    ) -> Result<(AgentClient, String), String> {
        let timeout = self.boot_timeout;
        let silent_limit = silent_console_limit(timeout);
        let console_len = || std::fs::metadata(console).map_or(0, |m| m.len());
        // The log may hold earlier boots: only growth counts.
        let console_at_start = console_len();
        let started = Instant::now();
        let deadline = started + timeout;
        let mut client: Option<AgentClient> = None;
        loop {
            if !identity.is_alive() {
                return Err(format!(
                    "guest did not become ready: the VMM exited after {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
            }
            if let Some(id) = cancel_id
                && self.is_cancelled(id)
            {
                return Err(
                    "the boot was cancelled: the vm is being deleted (by its user, or because the client that asked for it went away)".into(),
                );
            }
            if started.elapsed() > silent_limit && console_len() <= console_at_start {
                return Err(format!(
                    "guest did not become ready: its console stayed silent for {} s (the kernel never started; `banger doctor` shows the accelerator and the TSC frequency guests get)",
                    silent_limit.as_secs()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "guest did not become ready within {} s",
                    timeout.as_secs()
                ));
            }
            if client.as_ref().is_none_or(AgentClient::is_closed) {
                client = connect_endpoint(endpoint).await.ok();
            }
            if let Some(c) = &client {
                // A hello sent before the agent opens its port waits in the
                // socket; re-asking now and then covers an agent restart.
                match tokio::time::timeout(Duration::from_secs(2), c.hello()).await {
                    Ok(Ok(info)) => return Ok((c.clone(), info.boot_id)),
                    Ok(Err(AgentError::Version { guest, host })) => {
                        return Err(AgentError::Version { guest, host }.to_string());
                    }
                    Ok(Err(_)) => client = None,
                    Err(_) => {}
                }
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A start that failed before its VMM ran: what it made is ended and
    /// removed, and the VM is `error` with the reason.
    async fn start_failed(&self, vm: &mut VmRecord, message: String) -> OpError {
        self.clear_runtime(&vm.id).await;
        vm.state = VmState::Error;
        vm.last_error = Some(message.clone());
        let _ = self.with_store(|s| s.update_vm(vm));
        OpError::internal(message)
    }

    /// The image's initramfs followed by a segment with this host's `/init`
    /// and agent, cached per (image, host segment) pair (`initrd.rs`), held
    /// until the VMM has read it. The guest always runs the boot logic and
    /// agent that match this daemon, whatever image it boots. Making a new
    /// file prunes old ones.
    fn agent_initrd(
        &self,
        image: &crate::image::Image,
    ) -> Result<(PathBuf, super::initrd::InitrdHold), OpError> {
        let segment = crate::image::host_segment(&self.agent.bytes, &host_cas())
            .map_err(|e| OpError::internal(format!("cannot write the host initramfs: {e}")))?;
        let dir = self.dirs.cache.join("initrd");
        let (path, hold, made) = super::initrd::hold(&dir, &image.id, &image.initrd(), &segment)
            .map_err(OpError::internal)?;
        if made {
            self.prune_initrds(Some(&path));
        }
        Ok((path, hold))
    }

    /// Prunes the boot initramfs cache (`initrd.rs`), never `keep`.
    pub(super) fn prune_initrds(&self, keep: Option<&std::path::Path>) {
        let images = match self.images.list() {
            Ok(list) => list.into_iter().map(|i| i.id).collect::<Vec<_>>(),
            // Without the store's list every file would look orphaned.
            Err(e) => {
                tracing::warn!("not pruning the initramfs cache: {e}");
                return;
            }
        };
        for path in super::initrd::prune(&self.dirs.cache.join("initrd"), &images, keep) {
            tracing::info!("pruned {}", path.display());
        }
    }
}

/// The kernel argument that has the initramfs mount the cache disk.
const CACHE_ARG: &str = "banger.cache=1";

/// Mounts a restored guest's dependency cache as the initramfs does at
/// boot (`crate::cache::MOUNTS`).
async fn mount_cache(client: &AgentClient) -> Result<(), String> {
    let binds = crate::cache::MOUNTS
        .iter()
        .map(|(dir, at)| (dir.to_string(), at.to_string()))
        .collect();
    match tokio::time::timeout(
        Duration::from_secs(30),
        client.mount_disk("cache", crate::cache::GUEST_DIR, binds),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the guest did not mount its dependency cache: {e}")),
        Err(_) => Err("the guest did not mount its dependency cache within 30 s".into()),
    }
}

/// How a VM's guest begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Boot {
    /// Boot its kernel.
    Cold,
    /// Restore its image's snapshot if it can (only for a VM whose disks
    /// were never booted), else boot.
    FromSnapshot,
    /// Restore this snapshot of a running VM (`NAME:TAG`), or fail.
    FromUserSnapshot(String),
}

/// Which snapshot one start attempt restores.
pub(super) enum RestoreFrom {
    /// The image's.
    Image,
    /// A running VM's, `NAME[:TAG]`.
    User(String),
}

/// Why one start attempt failed.
pub(super) enum StartError {
    /// The VM is `error` with this.
    Fatal(OpError),
    /// The snapshot could not be restored; nothing of the attempt is left.
    Restore(String),
}

impl From<OpError> for StartError {
    fn from(e: OpError) -> StartError {
        StartError::Fatal(e)
    }
}

/// The host's own certificate authorities (Debian's local ones, in
/// `/usr/local/share/ca-certificates`), concatenated in name order: the
/// guest trusts them too, so a TLS proxy the host trusts works in it.
fn host_cas() -> Vec<u8> {
    fn collect(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect(&path, out);
            } else if path.extension().is_some_and(|e| e == "crt") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    collect(
        std::path::Path::new("/usr/local/share/ca-certificates"),
        &mut files,
    );
    files.sort();
    let mut out = Vec::new();
    for file in files {
        if let Ok(pem) = std::fs::read(&file)
            && pem.starts_with(b"-----BEGIN CERTIFICATE-----")
        {
            out.extend_from_slice(&pem);
            if !pem.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
    out
}

/// How long a booting guest's console may stay empty: a third of the boot
/// timeout (60 s under emulation), `BANGER_SILENT_CONSOLE` seconds if set.
fn silent_console_limit(boot_timeout: Duration) -> Duration {
    std::env::var("BANGER_SILENT_CONSOLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(boot_timeout / 3)
}

pub(super) async fn connect_endpoint(endpoint: &AgentEndpoint) -> Result<AgentClient, AgentError> {
    match endpoint {
        AgentEndpoint::Stream(path) => AgentClient::connect_unix(path).await,
        AgentEndpoint::HybridVsock { socket, port } => {
            AgentClient::connect_hybrid_vsock(socket, *port).await
        }
    }
}

fn console_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
