//! `banger vm workspace`: ship a repository into a VM, sync it, list and
//! export the guest's changes.

use super::args::{WorkspaceArgs, WorkspaceCommand};
use super::exec::decode;
use super::printer::Printer;
use super::{Failure, absolute, pretty, rpc_failure};
use crate::api::BangerApiClient;
use crate::client;
use crate::paths::Dirs;

impl WorkspaceArgs {
    pub(crate) fn params(&self, vm: String, path: String) -> crate::api::PrepareParams {
        crate::api::PrepareParams {
            vm,
            path,
            include_untracked: self.include_untracked,
            branch: self.branch.clone(),
            from: self.from.clone(),
            mode: self.mode.map(|m| m.as_str().to_string()),
            replace: false,
        }
    }

    pub(crate) fn full_copy(&self) -> bool {
        self.mode == Some(super::args::ModeArg::FullCopy)
    }
}

pub(crate) async fn run(
    cmd: WorkspaceCommand,
    dirs: &Dirs,
    printer: &Printer,
) -> Result<u8, Failure> {
    match cmd {
        WorkspaceCommand::Export {
            vm,
            output,
            base_commit,
            apply,
            force,
        } => {
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
        WorkspaceCommand::Sync { vm, paths, force } => {
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
            if printer.json() {
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
        WorkspaceCommand::Changes { vm } => {
            let client = client::connect_or_start(dirs).await?;
            let r = client.vm_workspace_changes(vm).await.map_err(rpc_failure)?;
            if printer.json() {
                printer.line(&pretty(&r));
            } else {
                for c in &r.changes {
                    let tag = match c.status {
                        crate::api::ChangeStatus::Added => "A",
                        crate::api::ChangeStatus::Modified => "M",
                        crate::api::ChangeStatus::Deleted => "D",
                    };
                    printer.line(&format!("{tag} {}", c.path));
                }
                for p in &r.refused {
                    printer.note(&format!("refused a guest path: {p:?}"));
                }
            }
            Ok(0)
        }
        WorkspaceCommand::Prepare {
            vm,
            path,
            ws,
            replace,
        } => {
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
    }
}

/// What the user should know about a transfer: files left out.
pub(crate) fn workspace_notes(plan: &crate::api::WorkspacePlan, printer: &Printer) {
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
