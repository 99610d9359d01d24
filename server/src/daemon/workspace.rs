//! Shipping a host repository into a running VM's `/root/repo`, through the
//! agent, as one stream.

use std::sync::Arc;

use banger_agent::client::{ExecControl, ExecEvent};
use banger_agent::protocol::ExecSpec;

use super::{Daemon, OpError};
use crate::api::{WorkspacePlan, code};
use crate::store::WorkspaceRecord;
use crate::workspace::{self, Selection, transfer};

fn plan_of(sel: &Selection, guest_path: Option<&str>) -> WorkspacePlan {
    WorkspacePlan {
        root: sel.root.display().to_string(),
        mode: sel.mode_line().to_string(),
        files: sel.files.clone(),
        untracked_left_out: sel.untracked_left_out,
        submodules: sel.submodules.clone(),
        missing: sel.missing.clone(),
        head: sel.head.clone(),
        guest_path: guest_path.map(str::to_string),
        synced: None,
    }
}

/// Whether a VM that already holds workspace `ws` may be brought up to
/// date by live sync for a prepare of `root` (pure). `Err` is the refusal:
/// a new transfer would throw the guest's repository away, which happens
/// only with `--replace`.
pub(crate) fn existing_workspace(
    vm: &str,
    ws: &WorkspaceRecord,
    root: &std::path::Path,
    include_untracked: bool,
    new_branch: bool,
) -> Result<(), String> {
    let replace = format!(
        "replace it with: banger vm workspace prepare {vm} {} --replace",
        root.display()
    );
    if std::path::Path::new(&ws.source) != root {
        return Err(format!(
            "vm {vm:?} already holds the workspace of {}; banger does not replace it unasked (the guest's edits there would be lost): bring them back first with: banger vm workspace export {vm} --apply, then {replace}",
            ws.source
        ));
    }
    if new_branch {
        return Err(format!(
            "vm {vm:?} already holds this workspace; create the branch in the guest (banger vm exec {vm} -- git checkout -b NAME), or {replace}"
        ));
    }
    if include_untracked != ws.include_untracked {
        let had = if ws.include_untracked {
            "tracked and untracked files"
        } else {
            "tracked files only"
        };
        return Err(format!(
            "vm {vm:?} holds this workspace with {had}; to change that, {replace}"
        ));
    }
    Ok(())
}

/// Writes to a guest program's stdin in chunks.
struct StdinWriter(ExecControl);

impl std::io::Write for StdinWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Blocking: this writer runs on a blocking thread, and holding it
        // back keeps a large workspace from being queued whole in memory.
        self.0
            .write_stdin_blocking(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The git identity guest commits get: the host repository's, else banger's.
fn identity(root: &std::path::Path, vm: &str) -> (String, String) {
    let from_repo = gix::open(root).ok().and_then(|repo| {
        let config = repo.config_snapshot();
        let name = config.string("user.name")?.to_string();
        let email = config.string("user.email")?.to_string();
        Some((name, email))
    });
    from_repo.unwrap_or_else(|| ("banger".into(), format!("banger@{vm}.vm")))
}

async fn select(path: String, include_untracked: bool) -> Result<Selection, OpError> {
    tokio::task::spawn_blocking(move || {
        workspace::select(std::path::Path::new(&path), include_untracked)
    })
    .await
    .map_err(|e| OpError::internal(format!("workspace task failed: {e}")))?
    .map_err(|e| match e {
        workspace::WorkspaceError::Git { .. } => OpError::from_display(e),
        other => OpError::new(code::INVALID, other.to_string()),
    })
}

/// Guest stderr kept for error messages; the rest is dropped (a hostile
/// guest could send it forever).
const STDERR_KEEP: usize = 64 * 1024;

fn keep_some(buf: &mut Vec<u8>, more: &[u8]) {
    let room = STDERR_KEEP.saturating_sub(buf.len());
    buf.extend_from_slice(&more[..more.len().min(room)]);
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The paths a patch touches (after the change; old paths for deletions).
fn patch_paths(files: &[crate::workspace::export::PatchFile]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| f.new_path.clone().or_else(|| f.old_path.clone()))
        .collect()
}

/// The warning for a workspace whose host HEAD moved (pure).
pub(crate) fn stale_warning(ws: &WorkspaceRecord, host_head: Option<&str>) -> Option<String> {
    let short = |h: Option<&str>| {
        h.map(|h| h[..h.len().min(12)].to_string())
            .unwrap_or_else(|| "(none)".into())
    };
    (ws.head.as_deref() != host_head).then(|| {
        format!(
            "workspace stale: {} HEAD is {} but the guest was prepared from {}; run with --auto-prepare to re-sync",
            ws.source,
            short(host_head),
            short(ws.head.as_deref())
        )
    })
}

/// Selects the files and checks a requested branch, before any guest or
/// disk is touched.
async fn select_checked(
    path: String,
    include_untracked: bool,
    branch: Option<&transfer::NewBranch>,
) -> Result<Selection, OpError> {
    let sel = select(path, include_untracked).await?;
    if let Some(b) = branch {
        transfer::resolve_branch(&sel.root, b)
            .map_err(|e| OpError::new(code::INVALID, e.to_string()))?;
    }
    Ok(sel)
}

impl Daemon {
    /// Whether the VM's workspace lags its host repository's HEAD.
    pub(crate) async fn workspace_staleness(&self, vm: &str) -> Result<Option<String>, OpError> {
        let Some(ws) = self.find(vm)?.workspace else {
            return Ok(None);
        };
        let source = ws.source.clone();
        let host_head = tokio::task::spawn_blocking(move || {
            gix::open(&source)
                .ok()
                .and_then(|r| r.head_id().ok().map(|id| id.detach().to_string()))
        })
        .await
        .unwrap_or(None);
        Ok(stale_warning(&ws, host_head.as_deref()))
    }

    /// Brings a VM's workspace up to date with the repository it came from,
    /// by live sync: the guest's own edits and commits are kept (conflicts
    /// and a guest-moved HEAD are reported, never overwritten). Returns
    /// what the user should know.
    pub(crate) async fn resync_workspace(
        self: &Arc<Self>,
        vm: &str,
    ) -> Result<Option<String>, OpError> {
        let record = self.find(vm)?;
        if record.workspace.is_none() {
            return Ok(None);
        }
        let result = self.sync_workspace(vm, None, false).await?;
        Ok(result.notes(&record.name))
    }
    /// The guest's changes as a validated patch; applied on request.
    pub(crate) async fn export_workspace(
        &self,
        vm: &str,
        base_commit: Option<String>,
        apply: bool,
        force: bool,
    ) -> Result<crate::api::ExportResult, OpError> {
        use crate::workspace::export;
        use base64::Engine as _;
        let record = self.find(vm)?;
        let Some(ws) = record.workspace.clone() else {
            return Err(OpError::new(
                code::CONFLICT,
                format!(
                    "vm {:?} has no workspace; ship one with: banger vm workspace prepare {} PATH",
                    record.name, record.name
                ),
            ));
        };
        let limits = export::Limits::from_env();
        let spec = ExecSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                export::GUEST_SCRIPT.into(),
                "banger-export".into(),
                ws.guest_path.clone(),
                base_commit.clone().unwrap_or_default(),
                limits.per_file.to_string(),
            ],
            env: Vec::new(),
            cwd: Some("/root".into()),
            stdin: false,
            tty: None,
            user: None,
        };
        let (_, mut session) = self.exec(vm, spec).await?;
        let (mut patch, mut stderr) = (Vec::new(), Vec::new());
        let limit = super::sync::guest_op_timeout();
        let made = tokio::time::timeout(limit, async {
            loop {
                match session.next().await {
                    Ok(ExecEvent::Stdout(b)) => {
                        patch.extend(b);
                        if patch.len() as u64 > limits.total {
                            return Err(OpError::new(
                                code::INVALID,
                                format!(
                                    "refused the guest's patch: over the {} byte limit for a whole patch (BANGER_EXPORT_MAX_PATCH); nothing was written",
                                    limits.total
                                ),
                            ));
                        }
                    }
                    Ok(ExecEvent::Stderr(b)) => keep_some(&mut stderr, &b),
                    Ok(ExecEvent::Exited(s)) => return Ok(s),
                    Err(e) => return Err(OpError::internal(format!("workspace export: {e}"))),
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(OpError::internal(format!(
                "making the patch in the guest took over {} s (BANGER_GUEST_OP_TIMEOUT); it was stopped",
                limit.as_secs()
            )))
        });
        let status = match made {
            Ok(status) => status,
            Err(e) => {
                // Dropping the session kills the guest command before its
                // trap can remove its temporary index: remove it here.
                drop(session);
                self.remove_export_leftovers(vm, &ws.guest_path).await;
                return Err(e);
            }
        };
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        match status.code {
            Some(0) => {}
            Some(3) => return Err(OpError::new(code::INVALID, stderr)),
            _ => {
                return Err(OpError::internal(format!(
                    "making the patch in the guest failed ({}): {stderr}",
                    status.shell_code()
                )));
            }
        }
        let root = std::path::PathBuf::from(&ws.source);
        // With a sync record, --apply takes what the guest changed since
        // the last sync (the host's own edits that were synced are not
        // in the way); the patch is still validated first, whole.
        let since_sync = apply && base_commit.is_none();
        let (files, applied) = {
            let root = root.clone();
            let patch = patch.clone();
            tokio::task::spawn_blocking(
                move || -> Result<(Vec<export::PatchFile>, bool), OpError> {
                    let files = export::validate(&root, &patch, limits)
                        .map_err(|r| OpError::new(code::INVALID, r.to_string()))?;
                    if apply && !since_sync {
                        export::apply(&root, &patch, &files, force)
                            .map_err(|e| OpError::new(code::CONFLICT, e))?;
                    }
                    Ok((files, apply && !since_sync))
                },
            )
            .await
            .map_err(|e| OpError::internal(format!("export task failed: {e}")))??
        };
        if since_sync {
            match self.take_guest_changes(vm, force).await? {
                Some(written) => {
                    return Ok(crate::api::ExportResult {
                        patch: B64.encode(&patch),
                        files: written,
                        applied: true,
                        source: ws.source,
                    });
                }
                None => {
                    // No sync record: apply the patch as before.
                    let names = patch_paths(&files);
                    let (p, r) = (patch.clone(), root.clone());
                    tokio::task::spawn_blocking(move || {
                        export::apply(&r, &p, &files, force)
                            .map_err(|e| OpError::new(code::CONFLICT, e))
                    })
                    .await
                    .map_err(|e| OpError::internal(format!("export task failed: {e}")))??;
                    return Ok(crate::api::ExportResult {
                        patch: B64.encode(&patch),
                        files: names,
                        applied: true,
                        source: ws.source,
                    });
                }
            }
        }
        Ok(crate::api::ExportResult {
            patch: B64.encode(&patch),
            files: patch_paths(&files),
            applied,
            source: ws.source,
        })
    }

    /// Removes temporary indexes of killed exports from the guest (best
    /// effort: the next export removes them too).
    async fn remove_export_leftovers(&self, vm: &str, guest_path: &str) {
        let spec = ExecSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                crate::workspace::export::CLEANUP_SCRIPT.into(),
                "banger-export-cleanup".into(),
                guest_path.into(),
            ],
            env: Vec::new(),
            cwd: Some("/".into()),
            stdin: false,
            tty: None,
            user: None,
        };
        if let Ok((_, mut session)) = self.exec(vm, spec).await {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                while let Ok(ev) = session.next().await {
                    if matches!(ev, ExecEvent::Exited(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }

    /// What would travel (no VM involved).
    pub(crate) async fn workspace_plan(
        &self,
        path: String,
        include_untracked: bool,
        branch: Option<transfer::NewBranch>,
    ) -> Result<WorkspacePlan, OpError> {
        let sel = select_checked(path, include_untracked, branch.as_ref()).await?;
        Ok(plan_of(&sel, None))
    }

    /// `full_copy`: writes the repository into the stopped VM's work disk
    /// (as /root/repo) before boot, instead of streaming it to a running
    /// guest. The disk is checked with e2fsck first.
    pub(crate) async fn prepare_workspace_full_copy(
        self: &Arc<Self>,
        vm: &str,
        path: String,
        include_untracked: bool,
        branch: Option<transfer::NewBranch>,
    ) -> Result<WorkspacePlan, OpError> {
        let record = self.find(vm)?;
        // The disk is edited: no start, stop or delete meanwhile.
        let lock = self.vm_lock(&record.id);
        let _guard = lock.lock().await;
        let record = self.refresh(self.find(vm)?)?;
        if record.state.may_have_process() {
            return Err(OpError::new(
                code::RUNNING,
                format!(
                    "vm {:?} is {}; full_copy writes its disk before boot: stop it first, or use the default stream mode",
                    record.name, record.state
                ),
            ));
        }
        let sel = select_checked(path, include_untracked, branch.as_ref()).await?;
        let (name, email) = identity(&sel.root, &record.name);
        let disk = crate::disk::WorkDisk::path(&self.dirs.vm_state(&record.id));
        let build_sel = sel.clone();
        let manifest = tokio::task::spawn_blocking(move || -> Result<_, OpError> {
            let tmp = tempfile::tempdir().map_err(|e| OpError::internal(e.to_string()))?;
            let repo = tmp.path().join("repo");
            let manifest =
                transfer::build_on_host(&build_sel, branch.as_ref(), &repo, (&name, &email))
                    .map_err(OpError::from_display)?;
            // /root in the guest is the work disk's root.
            crate::disk::copy_tree_into(&disk, &repo, "/repo").map_err(|e| match e {
                crate::disk::DiskError::Exists { .. } => OpError::new(
                    code::CONFLICT,
                    "the vm already has /root/repo; start it and bring it up to date with: banger vm workspace prepare VM PATH (the default stream mode)",
                ),
                other => OpError::from_display(other),
            })?;
            Ok(manifest)
        })
        .await
        .map_err(|e| OpError::internal(format!("full copy task failed: {e}")))??;
        self.record_manifest(&record.id, &manifest)?;
        self.record_workspace(&record.id, &sel, include_untracked)
    }

    /// Records a shipped workspace and describes it.
    fn record_workspace(
        &self,
        id: &str,
        sel: &Selection,
        include_untracked: bool,
    ) -> Result<WorkspacePlan, OpError> {
        let workspace = WorkspaceRecord {
            guest_path: transfer::GUEST_PATH.to_string(),
            head: sel.head.clone(),
            source: sel.root.display().to_string(),
            include_untracked,
        };
        self.with_store(|s| s.set_workspace(id, Some(&workspace)))?;
        Ok(plan_of(sel, Some(transfer::GUEST_PATH)))
    }

    /// Ships the repository into the VM and records it. A VM that already
    /// holds this repository's workspace is brought up to date by live sync
    /// instead (guest edits kept, conflicts reported); any other guest
    /// repository is replaced only with `replace`.
    pub(crate) async fn prepare_workspace(
        self: &Arc<Self>,
        vm: &str,
        path: String,
        include_untracked: bool,
        branch: Option<transfer::NewBranch>,
        replace: bool,
    ) -> Result<WorkspacePlan, OpError> {
        let sel = select_checked(path, include_untracked, branch.as_ref()).await?;
        let record = self.find(vm)?;
        if let (Some(ws), false) = (&record.workspace, replace) {
            existing_workspace(
                &record.name,
                ws,
                &sel.root,
                include_untracked,
                branch.is_some(),
            )
            .map_err(|m| OpError::new(code::CONFLICT, m))?;
            let synced = self.sync_workspace(vm, None, false).await?;
            let mut plan = plan_of(&sel, Some(&ws.guest_path));
            plan.synced = Some(synced);
            return Ok(plan);
        }
        // One guest repository operation at a time per VM.
        let lock = self.sync_lock(&record.id);
        let _guard = lock.lock().await;
        let (name, email) = identity(&sel.root, vm);
        let spec = ExecSpec {
            argv: transfer::guest_argv(transfer::GUEST_PATH, (&name, &email), replace),
            env: Vec::new(),
            cwd: Some("/root".into()),
            stdin: true,
            tty: None,
            user: None,
        };
        let (record, mut session) = self.exec(vm, spec).await?;
        let control = session.control();
        let writer_sel = sel.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let result =
                transfer::write_archive(&writer_sel, branch.as_ref(), StdinWriter(control.clone()));
            let _ = control.close_stdin();
            result
        });
        let mut stderr = Vec::new();
        let limit = super::sync::guest_op_timeout();
        // On time-out the session is dropped: the guest script is killed
        // and the writer, its window closed, stops.
        let status = tokio::time::timeout(limit, async {
            loop {
                match session.next().await {
                    Ok(ExecEvent::Stdout(_)) => {}
                    Ok(ExecEvent::Stderr(b)) => keep_some(&mut stderr, &b),
                    Ok(ExecEvent::Exited(s)) => return Ok(s),
                    Err(e) => return Err(OpError::internal(format!("workspace transfer: {e}"))),
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(OpError::internal(format!(
                "shipping the workspace took over {} s (BANGER_GUEST_OP_TIMEOUT); it was stopped",
                limit.as_secs()
            )))
        })?;
        // The guest's verdict first: a script that refused or failed early
        // makes the writer fail too, for a reason that says less.
        let written = writer
            .await
            .map_err(|e| OpError::internal(format!("workspace writer failed: {e}")))?;
        if status.code == Some(5) {
            return Err(OpError::new(
                code::CONFLICT,
                format!(
                    "vm {:?} already has {}; banger does not replace it unasked (the guest's edits there would be lost): bring them back first with: banger vm workspace export {} --apply, or replace it with: banger vm workspace prepare {} {} --replace",
                    record.name,
                    transfer::GUEST_PATH,
                    record.name,
                    record.name,
                    sel.root.display()
                ),
            ));
        }
        if status.code == Some(6) {
            return Err(OpError::new(
                code::CANNOT_RUN,
                String::from_utf8_lossy(&stderr).trim().to_string(),
            ));
        }
        if status.code != Some(0) {
            return Err(OpError::internal(format!(
                "unpacking the workspace in the guest failed ({}): {}",
                status.shell_code(),
                String::from_utf8_lossy(&stderr).trim()
            )));
        }
        let manifest = written.map_err(OpError::from_display)?;
        self.record_manifest(&record.id, &manifest)?;
        self.record_workspace(&record.id, &sel, include_untracked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_only_when_the_host_head_moved() {
        let ws = WorkspaceRecord {
            guest_path: "/root/repo".into(),
            head: Some("a".repeat(40)),
            source: "/src/repo".into(),
            include_untracked: false,
        };
        assert_eq!(stale_warning(&ws, Some(&"a".repeat(40))), None);
        let w = stale_warning(&ws, Some(&"b".repeat(40))).unwrap();
        assert!(
            w.starts_with("workspace stale: /src/repo HEAD is bbbbbbbbbbbb"),
            "{w}"
        );
        assert!(w.contains("--auto-prepare"));
    }

    #[test]
    fn an_existing_workspace_is_synced_only_when_it_is_the_same_one() {
        let ws = WorkspaceRecord {
            guest_path: "/root/repo".into(),
            head: None,
            source: "/src/repo".into(),
            include_untracked: false,
        };
        let same = std::path::Path::new("/src/repo");
        assert_eq!(existing_workspace("v", &ws, same, false, false), Ok(()));
        let other = existing_workspace("v", &ws, std::path::Path::new("/src/other"), false, false)
            .unwrap_err();
        assert!(
            other.starts_with("vm \"v\" already holds the workspace of /src/repo;"),
            "{other}"
        );
        assert!(other.ends_with("banger vm workspace prepare v /src/other --replace"));
        assert!(existing_workspace("v", &ws, same, false, true).is_err());
        assert!(existing_workspace("v", &ws, same, true, false).is_err());
    }
}
