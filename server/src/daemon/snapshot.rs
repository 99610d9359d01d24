//! Image snapshots: a guest of an image booted once to "agent ready" and
//! saved (device state, memory, and its two writable disks as they were at
//! that moment), so a new VM of the same shape is restored instead of
//! booted.
//!
//! A snapshot lives in `CACHE/snapshots/IMAGE_ID/KEY/`. The key covers
//! everything the saved guest saw at boot but its name and file paths
//! ([`key`]): the image's files, kernel, initramfs (so this host's agent),
//! kernel arguments, drive shapes and sizes, vCPUs, memory, accelerator and
//! the VMM's version. Anything else changes the key, and a VM of the new
//! shape makes a new snapshot on its first start; the newest few per image
//! are kept. A snapshot is never written after it is made: every VM maps
//! its memory privately and gets its own copies of its disks.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use banger_agent::client::AgentClient;
use banger_agent::protocol::IdentitySpec;
use sha2::Digest;

use super::vm::random_hex;
use super::{Daemon, Progress, lock};
use crate::disk::WorkDisk;
use crate::spec::VmSpec;
use crate::store::VmRecord;
use crate::vmm::{LaunchPlan, Memory, Vmm};

/// The snapshot's memory file (the template guest's RAM).
const MEMORY: &str = "memory";
/// Its device state (QEMU's migration stream without the RAM).
const STATE: &str = "state";
/// The template guest's console, copied into each restored VM's log.
const CONSOLE: &str = "console.log";
/// Written last: a directory without it is not a snapshot.
const META: &str = "snapshot.json";
/// Runtime directories of template guests are `TEMPLATE_PREFIX` + random.
const TEMPLATE_PREFIX: &str = "snapshot-";
/// A template guest's name (its QEMU process is `banger-snapshot`).
const TEMPLATE_NAME: &str = "banger-snapshot";
/// Snapshots kept per image (the most recently used).
const KEEP_PER_IMAGE: usize = 4;

/// The daemon's snapshot bookkeeping.
#[derive(Default)]
pub(crate) struct Snapshots {
    /// `--version` of each driver's binary, asked once per daemon.
    versions: Mutex<HashMap<String, String>>,
}

/// A lock on a directory, `DIR/.lock` (flock). On a directory of
/// snapshots (one image's, or the snapshots of running VMs) restores share
/// it, making, pruning and removing take it alone; on the OCI layer store
/// pulls and imports share it and `system prune` takes it alone. It holds across
/// processes (daemons of one user, or tests, may share a cache) and
/// between tasks of one daemon (each takes its own open file). Released
/// when dropped.
pub(super) struct DirLock(#[allow(dead_code)] std::fs::File);

impl DirLock {
    /// Waits for the lock, shared or alone.
    pub(super) async fn take(dir: &Path, exclusive: bool) -> Result<DirLock, String> {
        let dir = dir.to_path_buf();
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        tokio::task::spawn_blocking(move || DirLock::flock(&dir, op))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|l| l.ok_or_else(|| "the lock was not taken".to_string()))
    }

    /// The lock alone if nobody holds it now; `None` if someone does.
    /// Blocking (briefly).
    pub(super) fn try_alone(dir: &Path) -> Result<Option<DirLock>, String> {
        DirLock::flock(dir, libc::LOCK_EX | libc::LOCK_NB)
    }

    /// `flock(op)` on `DIR/.lock`, made (and `DIR` made private: snapshots
    /// hold guests' memory) if missing; `None` when a non-blocking lock
    /// is held by someone else.
    fn flock(dir: &Path, op: libc::c_int) -> Result<Option<DirLock>, String> {
        crate::paths::Dirs::ensure_private(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(".lock");
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), op) } == 0 {
            return Ok(Some(DirLock(file)));
        }
        let e = std::io::Error::last_os_error();
        if op & libc::LOCK_NB != 0 && e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(format!("cannot lock {}: {e}", path.display()))
        }
    }
}

/// Makes the writable disks of `plan` copies of the snapshot's in `dir`
/// (same file names) and starts its console log with `console`. Blocking.
pub(super) fn copy_into_plan(dir: &Path, plan: &LaunchPlan, console: &[u8]) -> Result<(), String> {
    // Not the cache disk: the project's own, used in place.
    for drive in plan
        .drives
        .iter()
        .filter(|d| !d.read_only && d.role != crate::disk::DriveRole::Cache)
    {
        let name = drive
            .path
            .file_name()
            .ok_or("a drive without a file name")?;
        crate::disk::copy_sparse(&dir.join(name), &drive.path)
            .map_err(|e| format!("cannot copy {}: {e}", dir.join(name).display()))?;
    }
    std::fs::write(&plan.console_log, console)
        .map_err(|e| format!("cannot write {}: {e}", plan.console_log.display()))
}

impl Snapshots {
    /// The driver's version, asked once per daemon (a key part).
    pub(super) fn cached_version(&self, driver: &dyn Vmm) -> Result<String, String> {
        self.version(driver)
    }

    fn version(&self, driver: &dyn Vmm) -> Result<String, String> {
        if let Some(v) = lock(&self.versions).get(driver.name()) {
            return Ok(v.clone());
        }
        let v = driver.version()?;
        lock(&self.versions).insert(driver.name().to_string(), v.clone());
        Ok(v)
    }
}

/// What a restore needs from the snapshot it uses.
pub(super) struct Restore {
    /// Held until the VMM has read the snapshot's files (released when
    /// this is dropped).
    #[allow(dead_code)]
    pub(super) guard: DirLock,
    /// The snapshot's directory (for messages).
    pub(super) dir: PathBuf,
}

/// In a restored VM's runtime directory (cleared when it stops): the
/// snapshot it was restored from.
const RESTORED_FROM: &str = "restored-from";

/// Records, for `vm show`, that the VM of `runtime_dir` was restored.
pub(super) fn mark_restored(runtime_dir: &Path, snapshot: &Path) {
    let _ = std::fs::write(
        runtime_dir.join(RESTORED_FROM),
        snapshot.display().to_string(),
    );
}

/// The snapshot the VM of `runtime_dir` was restored from, if it was.
pub(crate) fn restored_from(runtime_dir: &Path) -> Option<String> {
    std::fs::read_to_string(runtime_dir.join(RESTORED_FROM)).ok()
}

/// A snapshot's identity for a launch plan: a digest of everything the
/// saved guest saw at boot except the VM's name and its file paths.
pub(crate) fn key(plan: &LaunchPlan, vmm: &str, vmm_version: &str) -> std::io::Result<String> {
    fn file(path: &Path) -> std::io::Result<String> {
        let meta = std::fs::metadata(path)?;
        let mtime = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Ok(format!("{} {} {mtime}", path.display(), meta.len()))
    }
    let mut lines = vec![
        "banger snapshot 1".to_string(),
        format!("vmm {vmm} {vmm_version}"),
        format!("accel {}", plan.accel.accel.as_str()),
        format!("tsc {:?}", plan.tsc_khz),
        format!("vcpu {} memory {}", plan.vcpu, plan.memory_mib),
        format!("kernel {}", file(&plan.boot.bzimage)?),
        format!("vmlinux {}", file(&plan.boot.vmlinux)?),
        format!("initrd {}", file(&plan.boot.initrd)?),
        format!("args {}", plan.kernel_args.join(" ")),
        format!("network {}", plan.network.is_some()),
    ];
    for drive in &plan.drives {
        lines.push(if drive.read_only {
            format!("drive {} ro {}", drive.role.serial(), file(&drive.path)?)
        } else {
            let len = std::fs::metadata(&drive.path)?.len();
            format!("drive {} rw {len}", drive.role.serial())
        });
    }
    Ok(format!("{:x}", sha2::Sha256::digest(lines.join("\n").as_bytes()))[..24].to_string())
}

/// A MAC address of the VM's own (locally administered, unicast), from its
/// id: stable across its boots, different from its siblings'.
pub(crate) fn guest_mac(vm_id: &str) -> String {
    let d = sha2::Sha256::digest(vm_id.as_bytes());
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2], d[3])
}

impl Daemon {
    /// Image snapshots: `<cache>/snapshots/IMAGE_ID/KEY/`.
    pub(super) fn snapshot_root(&self) -> PathBuf {
        self.dirs.cache.join("snapshots")
    }

    /// Makes `plan` restore its image's snapshot (made now if there is
    /// none): the VM's writable disks become copies of the snapshot's, its
    /// console log starts with the template's, and its memory maps the
    /// snapshot's. Errors are reasons to boot cold instead.
    pub(super) async fn prepare_restore(
        &self,
        vm: &VmRecord,
        plan: &mut LaunchPlan,
        driver: &Arc<dyn Vmm>,
        progress: &Progress,
    ) -> Result<Restore, String> {
        if !driver.snapshots() {
            return Err(format!(
                "the {} driver cannot restore snapshots yet",
                driver.name()
            ));
        }
        let version = {
            let d = driver.clone();
            let snapshots = self.snapshots.clone();
            tokio::task::spawn_blocking(move || snapshots.version(d.as_ref()))
                .await
                .map_err(|e| e.to_string())??
        };
        let key = key(plan, driver.name(), &version)
            .map_err(|e| format!("cannot read the boot files: {e}"))?;
        let image_dir = self.snapshot_root().join(&vm.image_id);
        let dir = image_dir.join(&key);
        let guard = loop {
            let shared = DirLock::take(&image_dir, false).await?;
            if dir.join(META).exists() {
                break shared;
            }
            drop(shared);
            let _alone = DirLock::take(&image_dir, true).await?;
            if !dir.join(META).exists() {
                progress.say(&format!(
                    "making the snapshot of image {} (once per image and vm shape; later vms restore it)",
                    vm.image_name
                ));
                let started = std::time::Instant::now();
                self.make_snapshot(&dir, plan, vm.spec, driver).await?;
                tracing::info!(image = %vm.image_name, key = %key, "snapshot made in {:.1} s", started.elapsed().as_secs_f64());
                let (root, keep) = (image_dir.clone(), dir.clone());
                let _ = tokio::task::spawn_blocking(move || prune(&root, &keep)).await;
            }
        };
        progress.say("restoring the image's snapshot");
        let (d, p, meta) = (dir.clone(), plan.clone(), dir.join(META));
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            // The VM's log begins with the boot it was restored from.
            let mut log = std::fs::read(d.join(CONSOLE)).unwrap_or_default();
            log.extend_from_slice(b"\n[banger] restored from the snapshot of this boot\n");
            copy_into_plan(&d, &p, &log)?;
            // Most recently used, for pruning.
            let _ = std::fs::File::options()
                .append(true)
                .open(&meta)
                .and_then(|f| f.set_modified(SystemTime::now()));
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())??;
        plan.memory = Memory::Restore {
            memory: Some(dir.join(MEMORY)),
            state: dir.join(STATE),
        };
        Ok(Restore { guard, dir })
    }

    /// Boots a template guest of `plan`'s shape with its memory in a file,
    /// waits for its agent, saves it and moves the result to `dir`.
    async fn make_snapshot(
        &self,
        dir: &Path,
        plan: &LaunchPlan,
        spec: VmSpec,
        driver: &Arc<dyn Vmm>,
    ) -> Result<(), String> {
        let parent = dir.parent().ok_or("snapshot directory has no parent")?;
        let tmp = parent.join(format!(".making-{}", random_hex(4).map_err(|e| e.message)?));
        let rt = self.dirs.vm_runtime(&format!(
            "snapshot-{}",
            random_hex(4).map_err(|e| e.message)?
        ));
        let made = self.boot_and_save(&tmp, &rt, plan, spec, driver).await;
        let (t, r, d) = (tmp.clone(), rt.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || {
            crate::vmm::network::end(&r);
            let _ = std::fs::remove_dir_all(&r);
            let moved = made.and_then(|()| {
                std::fs::rename(&t, &d)
                    .map_err(|e| format!("cannot move the snapshot to {}: {e}", d.display()))
            });
            if moved.is_err() {
                let _ = std::fs::remove_dir_all(&t);
            }
            moved
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn boot_and_save(
        &self,
        tmp: &Path,
        rt: &Path,
        plan: &LaunchPlan,
        spec: VmSpec,
        driver: &Arc<dyn Vmm>,
    ) -> Result<(), String> {
        let (t, r, root) = (tmp.to_path_buf(), rt.to_path_buf(), self.root.clone());
        let network = tokio::task::spawn_blocking(move || -> Result<_, String> {
            for d in [&t, &r] {
                crate::paths::Dirs::ensure_private(d)
                    .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            }
            root.create(&t, spec.overlay_bytes)
                .map_err(|e| e.to_string())?;
            WorkDisk::create(&t, spec.disk_bytes).map_err(|e| e.to_string())?;
            crate::vmm::network::start(
                &r,
                &t.join(crate::net::LOG_FILE),
                &crate::net::Egress {
                    nat: false,
                    allow: Vec::new(),
                },
            )
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        let mut template = plan.clone();
        template.name = TEMPLATE_NAME
            .strip_prefix("banger-")
            .unwrap_or(TEMPLATE_NAME)
            .into();
        template.runtime_dir = rt.to_path_buf();
        template.console_log = tmp.join(CONSOLE);
        template.network = Some(crate::vmm::network::NetAttach {
            keeper_pid: network.keeper.pid,
        });
        template.memory = Memory::Template(tmp.join(MEMORY));
        for drive in template.drives.iter_mut().filter(|d| !d.read_only) {
            let name = drive
                .path
                .file_name()
                .ok_or("a drive without a file name")?;
            let placeholder = tmp.join(name);
            if drive.role == crate::disk::DriveRole::Cache {
                // An empty disk of the cache's size, never mounted by the
                // template; a restored VM has its project's in its place.
                let len = std::fs::metadata(&drive.path)
                    .map_err(|e| format!("cannot read {}: {e}", drive.path.display()))?
                    .len();
                std::fs::File::create(&placeholder)
                    .and_then(|f| f.set_len(len))
                    .map_err(|e| format!("cannot create {}: {e}", placeholder.display()))?;
            }
            drive.path = placeholder;
        }
        let launcher = driver.clone();
        let identity = tokio::task::spawn_blocking(move || launcher.launch(&template))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let result = async {
            let r = rt.to_path_buf();
            let _ =
                tokio::task::spawn_blocking(move || crate::vmm::network::watch(&r, identity)).await;
            let (client, _) = self
                .wait_ready(
                    &driver.agent_endpoint(rt),
                    identity,
                    &tmp.join(CONSOLE),
                    None,
                )
                .await?;
            settle(&client).await;
            // What the guest wrote is on its disks before they are copied.
            client
                .sync()
                .await
                .map_err(|e| format!("guest sync: {e}"))?;
            let (d, r) = (driver.clone(), rt.to_path_buf());
            let (memory, state) = (tmp.join(MEMORY), tmp.join(STATE));
            tokio::task::spawn_blocking(move || d.save(&r, &memory, &state))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
        .await;
        // Saved: QEMU quits by itself; otherwise it is ended here.
        let _ = tokio::task::spawn_blocking(move || identity.kill_and_wait(Duration::from_secs(5)))
            .await;
        result?;
        let meta = serde_json::json!({
            "vmm_version": self.snapshots.version(driver.as_ref()).unwrap_or_default(),
            "vcpu": plan.vcpu,
            "memory_mib": plan.memory_mib,
            "kernel_args": plan.kernel_args,
            "made_at": SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
        });
        std::fs::write(tmp.join(META), meta.to_string())
            .map_err(|e| format!("cannot write {}: {e}", tmp.join(META).display()))
    }

    /// Gives a guest restored from a snapshot an identity of its own,
    /// before anything else runs in it.
    pub(super) async fn give_identity(
        &self,
        client: &AgentClient,
        vm: &VmRecord,
        mac: &str,
    ) -> Result<(), String> {
        let mut entropy = vec![0u8; 64];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut entropy))
            .map_err(|e| format!("cannot read random bytes: {e}"))?;
        let spec = IdentitySpec {
            hostname: vm.name.clone(),
            machine_id: random_hex(16).map_err(|e| e.message)?,
            unix_nanos: u64::try_from(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            )
            .unwrap_or(u64::MAX),
            entropy,
            mac: Some(mac.to_string()),
        };
        match tokio::time::timeout(Duration::from_secs(10), client.identity(spec)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the guest refused its identity: {e}")),
            Err(_) => Err("the guest did not take its identity within 10 s".into()),
        }
    }

    /// Ends what a daemon that died while making a snapshot left: the
    /// template's VMM (recognised by its process name), its network and
    /// runtime directory. The half-made snapshot itself is pruned the next
    /// time one of that image is made.
    pub(crate) fn end_stale_templates(&self) {
        let Some(root) = self.dirs.vm_runtime("x").parent().map(Path::to_path_buf) else {
            return;
        };
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let dir = entry.path();
            if !entry
                .file_name()
                .to_string_lossy()
                .starts_with(TEMPLATE_PREFIX)
            {
                continue;
            }
            let pid = std::fs::read_to_string(dir.join(crate::vmm::qemu::PID_FILE))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            if let Some(process) = pid.and_then(crate::process::ProcessIdentity::of) {
                let cmdline =
                    std::fs::read(format!("/proc/{}/cmdline", process.pid)).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(TEMPLATE_NAME) {
                    process.kill_and_wait(Duration::from_secs(5));
                }
            }
            crate::vmm::network::end(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            tracing::info!(
                "ended a snapshot template left by an earlier daemon: {}",
                dir.display()
            );
        }
    }

    /// Removes an image's snapshots (the image is being deleted).
    pub(crate) async fn remove_snapshots(&self, image_id: &str) {
        let dir = self.snapshot_root().join(image_id);
        if !dir.exists() {
            return;
        }
        let _alone = DirLock::take(&dir, true).await;
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
}

/// Keeps `keep` and the most recently used others of one image, up to
/// [`KEEP_PER_IMAGE`]; removes the rest and any unfinished one.
fn prune(image_dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(image_dir) else {
        return;
    };
    let mut done: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep || !path.is_dir() {
            continue;
        }
        match std::fs::metadata(path.join(META)).and_then(|m| m.modified()) {
            Ok(used) => done.push((used, path)),
            // Half made, by a daemon that died meanwhile (this one holds
            // the image's lock, so no other is being made now).
            Err(_) => {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
    done.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, path) in done.into_iter().skip(KEEP_PER_IMAGE - 1) {
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// How long a template guest may take to finish its boot before it is
/// saved anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the template guest's systemd has finished booting (at most
/// [`SETTLE_TIMEOUT`]; at once for an image without systemd). "Ready"
/// comes before the rest of the boot (journald, the units after the
/// agent): saved then, every VM restored from the snapshot would run that
/// rest itself. (8 restored at once: no measurable change either way on a
/// 2-core host; see docs/benchmarks.md.)
async fn settle(client: &AgentClient) {
    let spec = banger_agent::protocol::ExecSpec {
        argv: ["systemctl", "is-system-running", "--wait"]
            .map(String::from)
            .to_vec(),
        env: Vec::new(),
        cwd: Some("/".into()),
        stdin: false,
        tty: None,
        user: None,
    };
    let Ok(mut session) = client.exec(spec).await else {
        return;
    };
    let _ = tokio::time::timeout(SETTLE_TIMEOUT, async {
        loop {
            match session.next().await {
                Ok(banger_agent::client::ExecEvent::Exited(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::{Accel, AccelChoice};
    use crate::disk::{Drive, DriveRole};
    use crate::vmm::BootFiles;

    fn plan(dir: &Path) -> LaunchPlan {
        for f in ["vmlinuz", "vmlinux", "initrd", "rootfs.ext4"] {
            std::fs::write(dir.join(f), f).unwrap();
        }
        for (f, len) in [("overlay.ext4", 4096), ("work.ext4", 8192)] {
            std::fs::File::create(dir.join(f))
                .unwrap()
                .set_len(len)
                .unwrap();
        }
        LaunchPlan {
            name: "a".into(),
            vcpu: 2,
            memory_mib: 1024,
            boot: BootFiles {
                pvh: false,
                bzimage: dir.join("vmlinuz"),
                vmlinux: dir.join("vmlinux"),
                initrd: dir.join("initrd"),
                hz: None,
            },
            kernel_args: vec!["banger.root=overlay".into()],
            drives: vec![
                Drive {
                    role: DriveRole::Rootfs,
                    path: dir.join("rootfs.ext4"),
                    read_only: true,
                },
                Drive {
                    role: DriveRole::Overlay,
                    path: dir.join("overlay.ext4"),
                    read_only: false,
                },
                Drive {
                    role: DriveRole::Work,
                    path: dir.join("work.ext4"),
                    read_only: false,
                },
            ],
            accel: AccelChoice {
                accel: Accel::Tcg,
                reason: "test".into(),
            },
            tsc_khz: Some(1),
            runtime_dir: dir.join("run"),
            console_log: dir.join("console.log"),
            network: None,
            mac: guest_mac("x"),
            memory: Memory::Anonymous,
        }
    }

    #[test]
    fn the_key_ignores_name_paths_and_mac_but_not_the_guests_view() {
        let dir = tempfile::tempdir().unwrap();
        let base = plan(dir.path());
        let k = key(&base, "qemu", "7.2").unwrap();
        assert_eq!(k.len(), 24);

        // Another VM of the same shape: same key.
        let other = tempfile::tempdir().unwrap();
        let mut p = base.clone();
        p.name = "b".into();
        p.mac = guest_mac("y");
        p.runtime_dir = other.path().join("run");
        p.console_log = other.path().join("console.log");
        for (d, f) in p.drives.iter_mut().zip(["", "overlay.ext4", "work.ext4"]) {
            if !d.read_only {
                std::fs::copy(&d.path, other.path().join(f)).unwrap();
                d.path = other.path().join(f);
            }
        }
        assert_eq!(key(&p, "qemu", "7.2").unwrap(), k);

        // What the guest sees, or what runs it: a new key.
        type Change = Box<dyn Fn(&mut LaunchPlan)>;
        let changes: Vec<Change> = vec![
            Box::new(|p| p.vcpu = 4),
            Box::new(|p| p.memory_mib = 2048),
            Box::new(|p| p.kernel_args.push("banger.cache=1".into())),
            Box::new(|p| p.network = Some(crate::vmm::network::NetAttach { keeper_pid: 1 })),
            Box::new(|p| p.accel.accel = Accel::Kvm),
            Box::new(|p| p.drives.truncate(2)),
        ];
        for change in changes {
            let mut p = base.clone();
            change(&mut p);
            assert_ne!(key(&p, "qemu", "7.2").unwrap(), k);
        }
        assert_ne!(key(&base, "qemu", "8.0").unwrap(), k);
        // A rebuilt initramfs (another agent) or a resized disk: new key.
        std::fs::write(dir.path().join("initrd"), "another agent").unwrap();
        assert_ne!(key(&base, "qemu", "7.2").unwrap(), k);
        let k2 = key(&base, "qemu", "7.2").unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("work.ext4"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        assert_ne!(key(&base, "qemu", "7.2").unwrap(), k2);
        // A boot file that is gone is an error, not a key.
        std::fs::remove_file(dir.path().join("vmlinux")).unwrap();
        assert!(key(&base, "qemu", "7.2").is_err());
    }

    #[test]
    fn macs_are_unicast_stable_and_per_vm() {
        let a = guest_mac("0123456789ab");
        assert_eq!(a, guest_mac("0123456789ab"));
        assert_ne!(a, guest_mac("0123456789ac"));
        assert!(banger_agent::identity::parse_mac(&a).is_some(), "{a}");
    }

    #[test]
    fn pruning_keeps_the_newest_and_removes_half_made_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |name: &str, age: u64| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            let f = std::fs::File::create(d.join(META)).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
            d
        };
        let keep = mk("new", 100);
        mk("a", 10);
        mk("b", 20);
        mk("c", 30);
        std::fs::create_dir(dir.path().join(".making-1")).unwrap();
        let pruned = || {
            prune(dir.path(), &keep);
            let mut left: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            left
        };
        assert_eq!(pruned(), ["a", "b", "c", "new"]);
        mk("d", 5);
        assert_eq!(pruned(), ["a", "b", "d", "new"]);
    }
}
