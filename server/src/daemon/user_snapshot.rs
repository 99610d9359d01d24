//! Snapshots of running VMs (`vm snapshot NAME [--tag T]`): the guest's
//! memory and device state and its two writable disks, taken while it is
//! paused for a moment, so that `vm run|create --from NAME[:T]` starts new
//! VMs that are forks of it (its files, its processes, its workspace).
//!
//! A snapshot lives in `STATE/snapshots/NAME@TAG/` and is never written
//! after it is made. `STATE/snapshots/.lock` (flock) is held shared by a VM
//! being restored from one and alone by making and deleting, so a snapshot
//! in use cannot be deleted. QEMU only: its memory travels in the state
//! stream (the source VM's memory is ordinary memory).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::snapshot::DirLock;
use super::vm::random_hex;
use super::{Daemon, OpError};
use crate::api::{SnapshotView, code};
use crate::spec::VmSpec;
use crate::store::{VmState, WorkspaceRecord};

/// The device state and memory, one QEMU migration stream.
const STATE: &str = "state";
/// Written last: a directory without it is not a snapshot.
const META: &str = "snapshot.json";
/// The tag of a snapshot taken without `--tag`.
pub(crate) const DEFAULT_TAG: &str = "latest";
/// The launch key of a running VM, in its runtime directory.
const LAUNCH_KEY: &str = "launch-key";

/// What a snapshot records besides its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotMeta {
    pub(crate) name: String,
    pub(crate) tag: String,
    pub(crate) vm_id: String,
    pub(crate) image_id: String,
    pub(crate) image_name: String,
    pub(crate) vmm: String,
    pub(crate) spec: VmSpec,
    /// The catalog kernel it booted, if not its image's.
    pub(crate) kernel_id: Option<String>,
    /// The source VM's launch key ([`super::snapshot::key`]): a VM restored
    /// from it must launch with the same one.
    pub(crate) key: String,
    pub(crate) workspace: Option<WorkspaceRecord>,
    pub(crate) tooling: Option<String>,
    pub(crate) created_at: i64,
}

/// `NAME[:TAG]` split and checked (pure).
pub(crate) fn parse_reference(text: &str) -> Result<(String, String), String> {
    let (name, tag) = match text.split_once(':') {
        Some((n, t)) => (n, t),
        None => (text, DEFAULT_TAG),
    };
    crate::spec::validate_name(name).map_err(|e| format!("bad snapshot {text:?}: {e}"))?;
    validate_tag(tag).map_err(|e| format!("bad snapshot {text:?}: {e}"))?;
    Ok((name.to_string(), tag.to_string()))
}

/// A tag: 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`, not starting with `.`.
pub(crate) fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && !tag.starts_with('.')
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1-64 of a-z, 0-9, '.', '_', '-' (not starting with '.')"
        ))
    }
}

/// Records the launch key of a VM just started, for snapshots of it.
pub(super) fn record_launch_key(runtime_dir: &Path, key: &str) {
    let _ = std::fs::write(runtime_dir.join(LAUNCH_KEY), key);
}

impl Daemon {
    fn user_snapshots(&self) -> PathBuf {
        self.dirs.state.join("snapshots")
    }

    fn user_snapshot_dir(&self, name: &str, tag: &str) -> PathBuf {
        self.user_snapshots().join(format!("{name}@{tag}"))
    }

    /// A snapshot's record by `NAME[:TAG]`; a clear error when it is not
    /// there.
    pub(crate) fn find_user_snapshot(
        &self,
        reference: &str,
    ) -> Result<(SnapshotMeta, PathBuf), OpError> {
        let (name, tag) = parse_reference(reference).map_err(|e| OpError::new(code::INVALID, e))?;
        let dir = self.user_snapshot_dir(&name, &tag);
        let meta = std::fs::read_to_string(dir.join(META)).map_err(|_| {
            OpError::new(
                code::NOT_FOUND,
                format!("no snapshot {name}:{tag}; list them with: banger vm snapshot list"),
            )
        })?;
        let meta: SnapshotMeta = serde_json::from_str(&meta).map_err(|e| {
            OpError::internal(format!("{} is damaged: {e}", dir.join(META).display()))
        })?;
        Ok((meta, dir))
    }

    /// Takes a snapshot of a running VM: pauses it, saves its memory and
    /// device state, copies its disks, and lets it run again.
    pub(crate) async fn snapshot_vm(
        self: &Arc<Self>,
        name_or_id: &str,
        tag: Option<&str>,
    ) -> Result<SnapshotView, OpError> {
        let tag = tag.unwrap_or(DEFAULT_TAG);
        validate_tag(tag).map_err(|e| OpError::new(code::INVALID, e))?;
        let vm = self.find(name_or_id)?;
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        let vm = self.refresh(self.find(name_or_id)?)?;
        if vm.state != VmState::Running {
            return Err(super::vm::not_running(&vm));
        }
        if vm.cache.is_some() {
            return Err(OpError::new(
                code::INVALID,
                format!(
                    "vm {:?} mounts a dependency cache, which is the project's and cannot be part of a snapshot",
                    vm.name
                ),
            ));
        }
        let driver = self.driver(&vm.vmm)?;
        if vm.vmm != crate::vmm::qemu::NAME {
            return Err(OpError::new(
                code::INVALID,
                format!(
                    "vm {:?} runs under {}: snapshots of running vms need qemu for now",
                    vm.name, vm.vmm
                ),
            ));
        }
        let runtime = self.dirs.vm_runtime(&vm.id);
        let key = std::fs::read_to_string(runtime.join(LAUNCH_KEY)).map_err(|_| {
            OpError::new(
                code::INVALID,
                format!(
                    "vm {:?} was started by an older banger; restart it to snapshot it",
                    vm.name
                ),
            )
        })?;
        let root = self.user_snapshots();
        let dir = self.user_snapshot_dir(&vm.name, tag);
        let _alone = DirLock::take(&root, true)
            .await
            .map_err(OpError::internal)?;
        if dir.join(META).exists() {
            return Err(OpError::new(
                code::CONFLICT,
                format!(
                    "snapshot {}:{tag} exists; delete it first (banger vm snapshot delete {}:{tag}) or pick another --tag",
                    vm.name, vm.name
                ),
            ));
        }
        let tmp = root.join(format!(".making-{}", random_hex(4)?));
        // What the guest wrote reaches its disks before they are copied.
        if let Ok((_, client)) = self.running_agent(&vm.id).await {
            let _ = tokio::time::timeout(Duration::from_secs(30), client.sync()).await;
        }
        let state_dir = self.dirs.vm_state(&vm.id);
        let (d, rt, t, sd) = (driver.clone(), runtime.clone(), tmp.clone(), state_dir);
        let saved = tokio::task::spawn_blocking(move || -> Result<(), String> {
            crate::paths::Dirs::ensure_private(&t).map_err(|e| e.to_string())?;
            d.snapshot_running(&rt, &t.join(STATE))
                .map_err(|e| e.to_string())?;
            // Paused: the disks are as the saved memory knows them.
            for file in [
                crate::disk::OverlayRoot::path(&sd),
                crate::disk::WorkDisk::path(&sd),
            ] {
                let name = file.file_name().ok_or("a disk without a name")?;
                crate::disk::copy_sparse(&file, &t.join(name))
                    .map_err(|e| format!("cannot copy {}: {e}", file.display()))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| OpError::internal(format!("snapshot task failed: {e}")))?;
        // The VM runs again whatever happened (a failed save may not have
        // paused it; cont on a running guest is harmless).
        let (d, rt) = (driver.clone(), runtime.clone());
        let resumed = tokio::task::spawn_blocking(move || d.resume(&rt)).await;
        if let Ok((_, client)) = self.running_agent(&vm.id).await {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), client.set_clock(now_nanos())).await;
        }
        let made = saved.and_then(|()| {
            let meta = SnapshotMeta {
                name: vm.name.clone(),
                tag: tag.to_string(),
                vm_id: vm.id.clone(),
                image_id: vm.image_id.clone(),
                image_name: vm.image_name.clone(),
                vmm: vm.vmm.clone(),
                spec: vm.spec,
                kernel_id: vm.kernel_id.clone(),
                key: key.trim().to_string(),
                workspace: vm.workspace.clone(),
                tooling: vm.tooling.clone(),
                created_at: crate::store::now(),
            };
            let text = serde_json::to_string_pretty(&meta).map_err(|e| e.to_string())?;
            std::fs::write(tmp.join(META), text).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &dir).map_err(|e| e.to_string())?;
            Ok(meta)
        });
        match (made, resumed) {
            (Ok(meta), Ok(Ok(()))) => Ok(view(&meta, &dir)),
            (made, resumed) => {
                let _ = std::fs::remove_dir_all(&tmp);
                if made.is_ok() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                let mut message = match made {
                    Err(e) => format!("cannot snapshot vm {:?}: {e}", vm.name),
                    Ok(_) => format!("vm {:?} was saved but", vm.name),
                };
                match resumed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => message.push_str(&format!("; it did not resume: {e}")),
                    Err(e) => message.push_str(&format!("; resume task failed: {e}")),
                }
                Err(OpError::internal(message))
            }
        }
    }

    /// Every snapshot of a running VM with its directory (unordered).
    fn user_snapshot_dirs(&self) -> Vec<(SnapshotMeta, PathBuf)> {
        std::fs::read_dir(self.user_snapshots())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let dir = e.path();
                let text = std::fs::read_to_string(dir.join(META)).ok()?;
                let meta: SnapshotMeta = serde_json::from_str(&text).ok()?;
                Some((meta, dir))
            })
            .collect()
    }

    /// What every snapshot of a running VM records (unordered).
    pub(super) fn user_snapshot_metas(&self) -> Vec<SnapshotMeta> {
        self.user_snapshot_dirs()
            .into_iter()
            .map(|(meta, _)| meta)
            .collect()
    }

    /// Every snapshot of a running VM, by name and tag.
    pub(crate) fn user_snapshot_views(&self) -> Vec<SnapshotView> {
        let mut views: Vec<SnapshotView> = self
            .user_snapshot_dirs()
            .iter()
            .map(|(meta, dir)| view(meta, dir))
            .collect();
        views.sort_by(|a, b| a.reference.cmp(&b.reference));
        views
    }

    /// Deletes a snapshot no VM is being started from.
    pub(crate) async fn delete_user_snapshot(&self, reference: &str) -> Result<(), OpError> {
        let (meta, dir) = self.find_user_snapshot(reference)?;
        let root = self.user_snapshots();
        let lock = tokio::task::spawn_blocking(move || DirLock::try_alone(&root))
            .await
            .map_err(|e| OpError::internal(e.to_string()))?
            .map_err(OpError::internal)?;
        if lock.is_none() {
            return Err(OpError::new(
                code::CONFLICT,
                format!(
                    "snapshot {}:{} is in use: a vm is being started from it; try again when it is up",
                    meta.name, meta.tag
                ),
            ));
        }
        std::fs::remove_dir_all(&dir)
            .map_err(|e| OpError::internal(format!("cannot remove {}: {e}", dir.display())))
    }

    /// For a VM created `--from` a snapshot: takes the snapshots' lock
    /// (shared, held until the VMM has read it), checks that the VM
    /// launches as the snapshot's VM did, and points its plan at it.
    pub(super) async fn prepare_user_restore(
        &self,
        reference: &str,
        plan: &mut crate::vmm::LaunchPlan,
        key: &str,
        progress: &super::Progress,
    ) -> Result<super::snapshot::Restore, String> {
        let guard = DirLock::take(&self.user_snapshots(), false).await?;
        let (meta, dir) = self.find_user_snapshot(reference).map_err(|e| e.message)?;
        if meta.key != key {
            return Err(format!(
                "snapshot {}:{} was taken of a vm launched differently (another banger, QEMU, kernel or image files); start a vm without --from instead",
                meta.name, meta.tag
            ));
        }
        progress.say(&format!("restoring snapshot {}:{}", meta.name, meta.tag));
        let line = format!(
            "[banger] restored from snapshot {}:{} of vm {}\n",
            meta.name, meta.tag, meta.vm_id
        );
        let (d, p) = (dir.clone(), plan.clone());
        tokio::task::spawn_blocking(move || {
            super::snapshot::copy_into_plan(&d, &p, line.as_bytes())
        })
        .await
        .map_err(|e| e.to_string())??;
        plan.memory = crate::vmm::Memory::Restore {
            memory: None,
            state: dir.join(STATE),
        };
        Ok(super::snapshot::Restore { guard, dir })
    }
}

fn view(meta: &SnapshotMeta, dir: &Path) -> SnapshotView {
    let bytes = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| crate::disk::allocated_bytes(&e.path()))
        .sum();
    SnapshotView {
        reference: format!("{}:{}", meta.name, meta.tag),
        name: meta.name.clone(),
        tag: meta.tag.clone(),
        vm_id: meta.vm_id.clone(),
        image: meta.image_name.clone(),
        vcpu: meta.spec.vcpu,
        memory_mib: meta.spec.memory_mib,
        bytes,
        workspace: meta.workspace.as_ref().map(|w| w.guest_path.clone()),
        created_at: meta.created_at,
    }
}

fn now_nanos() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_default_their_tag_and_refuse_bad_parts() {
        assert_eq!(
            parse_reference("web").unwrap(),
            ("web".to_string(), DEFAULT_TAG.to_string())
        );
        assert_eq!(
            parse_reference("web:v1.2_x").unwrap(),
            ("web".to_string(), "v1.2_x".to_string())
        );
        for bad in [
            "",
            "web:",
            "Web",
            "web:V1",
            "web:../x",
            "web:.hidden",
            "a/b:c",
            "web:a:b",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_snapshot_in_use_cannot_be_taken_alone() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shared = rt.block_on(DirLock::take(dir.path(), false)).unwrap();
        // A restore holds it: a delete is refused at once, not made to wait.
        assert!(DirLock::try_alone(dir.path()).unwrap().is_none());
        drop(shared);
        assert!(DirLock::try_alone(dir.path()).unwrap().is_some());
    }
}
