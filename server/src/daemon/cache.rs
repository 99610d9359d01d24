//! Projects' dependency caches as the daemon keeps them (`crate::cache`
//! has the disks): which VMs mount one, listing and clearing them, and
//! whether a starting VM gets its cache (one VM at a time).

use std::path::PathBuf;

use super::{Daemon, OpError, Progress};
use crate::api::{CacheView, code};
use crate::store::VmRecord;

impl Daemon {
    /// The VMs (other than `except`) that mount cache `name` or may be
    /// about to: any VM whose state may have a process.
    fn cache_holders(&self, name: &str, except: Option<&str>) -> Result<Vec<String>, OpError> {
        Ok(self
            .with_store(|s| s.list_vms())?
            .into_iter()
            .filter(|vm| {
                Some(vm.id.as_str()) != except
                    && vm.cache.as_deref() == Some(name)
                    && vm.state.may_have_process()
            })
            .map(|vm| vm.name)
            .collect())
    }

    /// Every cache, with the VMs that use it (mounted now or at their next
    /// start).
    pub(crate) fn cache_views(&self) -> Result<Vec<CacheView>, OpError> {
        let vms = self.with_store(|s| s.list_vms())?;
        Ok(crate::cache::list(&self.dirs.project_caches())
            .into_iter()
            .map(|c| CacheView {
                used_by: vms
                    .iter()
                    .filter(|vm| vm.cache.as_deref() == Some(c.name.as_str()))
                    .map(|vm| vm.name.clone())
                    .collect(),
                name: c.name,
                repo: c.repo,
                bytes: c.bytes,
                created_at: c.created_at,
            })
            .collect())
    }

    /// Removes cache `name`, refused while a VM mounts it.
    pub(crate) async fn clear_cache(&self, name: &str) -> Result<(), OpError> {
        // No VM starts with it meanwhile.
        let _held = self.cache_lock.lock().await;
        let holders = self.cache_holders(name, None)?;
        if !holders.is_empty() {
            return Err(OpError::new(
                code::CONFLICT,
                format!(
                    "cache {name} is mounted by vm {}; stop them first",
                    holders.join(", ")
                ),
            ));
        }
        let root = self.dirs.project_caches();
        super::offload(|| crate::cache::remove(&root, name))
            .map_err(|e| OpError::new(code::NOT_FOUND, e))
    }

    /// The disk of project cache `name` for `vm`, made when missing; `None`
    /// (said as progress) when another VM mounts it or it cannot be made:
    /// the cache saves downloads, it is never a reason not to start. The
    /// caller holds `cache_lock` until `vm`'s row says it starts.
    pub(super) fn claim_cache(
        &self,
        vm: &VmRecord,
        name: &str,
        progress: &Progress,
    ) -> Option<PathBuf> {
        let holders = self.cache_holders(name, Some(&vm.id)).unwrap_or_default();
        if !holders.is_empty() {
            progress.say(&format!(
                "the project's dependency cache {name} is mounted by vm {}; this vm starts without it",
                holders.join(", ")
            ));
            return None;
        }
        let repo = vm
            .workspace
            .as_ref()
            .map(|w| w.source.clone())
            .unwrap_or_default();
        let root = self.dirs.project_caches();
        match tokio::task::block_in_place(|| crate::cache::ensure(&root, name, &repo)) {
            Ok(disk) => Some(disk),
            Err(e) => {
                progress.say(&format!("no dependency cache for this vm: {e}"));
                None
            }
        }
    }
}
