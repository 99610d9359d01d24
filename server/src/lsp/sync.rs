//! Keeping the guest workspace in step: the coalescing sync worker (one
//! sync at a time, started at once; what arrives meanwhile is the next),
//! the `notify` watcher that feeds it, and the poller that asks the guest
//! what it changed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::global_state::{GlobalState, daemon_error, lock};
use crate::api::{BangerApiClient, SyncParams, SyncResult};

/// How often the guest is asked what it changed.
const POLL: Duration = Duration::from_millis(1000);

/// A request for the sync worker.
pub(crate) enum SyncJob {
    /// These paths may have changed (empty: only check HEAD).
    Paths(Vec<String>, u64),
    /// Reconcile everything.
    Full(u64),
}

impl GlobalState {
    pub(crate) fn start_watcher(self: &Arc<Self>, root: &Path) {
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
    pub(crate) fn request_sync(&self, paths: Option<Vec<String>>) -> u64 {
        let generation = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let job = match paths {
            Some(p) => SyncJob::Paths(p, generation),
            None => SyncJob::Full(generation),
        };
        let _ = self.sync_tx.send(job);
        generation
    }

    /// Waits until every sync requested so far has run.
    pub(crate) async fn wait_synced(&self) {
        let target = self.requested.load(Ordering::SeqCst);
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d >= target).await;
    }

    /// Records a sync's outcome. `scope`: the paths it decided (`None`: a
    /// full reconcile, which decides every conflict again); conflicts
    /// outside the scope stand until a sync decides them.
    pub(crate) async fn after_sync(
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

    pub(crate) async fn sync_now(
        &self,
        job_paths: Option<Vec<String>>,
        force: bool,
    ) -> Result<SyncResult, String> {
        let vm = self.bound().ok_or(super::NOT_BOUND)?;
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

    /// Before a run: everything saved is in the guest.
    pub(crate) async fn settle(self: &Arc<Self>) {
        if !lock(&self.settings).sync_on_save {
            self.request_sync(None);
        }
        self.wait_synced().await;
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

/// The sync worker: one sync at a time; a lone save syncs at once, and
/// what arrives while a sync runs is gathered into the next one (a
/// formatter saving 200 files is two or three syncs, not 200).
pub(crate) async fn sync_worker(inner: Arc<GlobalState>, mut rx: mpsc::UnboundedReceiver<SyncJob>) {
    while let Some(first) = rx.recv().await {
        // No waiting for a quiet pause: the save an editor is waiting on
        // goes now, with whatever is already queued.
        let mut jobs = vec![first];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
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
pub(crate) async fn poller(inner: Arc<GlobalState>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_state_paths_trigger_a_head_check_and_objects_do_not() {
        assert_eq!(watched("src/a.rs"), Watched::File);
        assert_eq!(watched(".gitignore"), Watched::File);
        assert_eq!(watched(".git/HEAD"), Watched::GitState);
        assert_eq!(watched(".git/refs/heads/main"), Watched::GitState);
        assert_eq!(watched(".git/index.lock"), Watched::Ignore);
        assert_eq!(watched(".git/objects/ab/cd"), Watched::Ignore);
    }
}
