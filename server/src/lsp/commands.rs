//! `workspace/executeCommand`: run tests, exec, sync, apply guest changes,
//! overwrite the guest copy, stop. Each runs as its own task
//! (`handlers::guarded`); output streams as `banger/output`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tower_lsp_server::jsonrpc::{Error as RpcError, Result as RpcResult};
use tower_lsp_server::ls_types::*;

use super::detect;
use super::edits::{self, GuestFile};
use super::ext::{OutputNotification, OutputParams};
use super::global_state::{GlobalState, daemon_error, lock, rpc_error};
use super::matchers::{self, Severity};
use super::progress::Progress;
use crate::api::{AcceptEntry, BangerApiClient, ExecEvent, ExecParams};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Output kept from a run for the problem matchers.
const KEEP_OUTPUT: usize = 8 << 20;

impl GlobalState {
    pub(crate) async fn execute(
        self: &Arc<Self>,
        params: ExecuteCommandParams,
    ) -> RpcResult<Value> {
        let token = params.work_done_progress_params.work_done_token.clone();
        let arg = params.arguments.first().cloned().unwrap_or(Value::Null);
        match params.command.as_str() {
            "banger.runTests" => {
                let filter = arg.get("filter").and_then(|f| f.as_str()).map(String::from);
                self.run_tests(filter, token).await
            }
            "banger.exec" => {
                let argv: Vec<String> = arg
                    .get("argv")
                    .and_then(|a| serde_json::from_value(a.clone()).ok())
                    .filter(|a: &Vec<String>| !a.is_empty())
                    .ok_or_else(|| {
                        RpcError::invalid_params("banger.exec takes [{\"argv\": [\"cmd\", ...]}]")
                    })?;
                let progress = Progress::begin(self, token, "Banger: exec").await;
                let r = async {
                    self.ensure_bound(Some(&progress)).await?;
                    self.settle().await;
                    self.run(argv).await
                }
                .await;
                progress.end("done").await;
                let (run_id, exit_code, _) = r?;
                Ok(json!({"runId": run_id, "exitCode": exit_code}))
            }
            "banger.sync" => {
                let progress = Progress::begin(self, token, "Banger: sync").await;
                let r = async {
                    self.ensure_bound(Some(&progress)).await?;
                    self.wait_synced().await;
                    let root = self.root()?;
                    self.set_status(|s| s.sync = "syncing".into()).await;
                    let r = self.sync_now(None, false).await;
                    self.after_sync(&root, None, r.clone()).await;
                    r.map_err(rpc_error)
                }
                .await;
                progress.end("done").await;
                let r = r?;
                Ok(json!({"files": r.files_sent + r.deleted}))
            }
            "banger.overwriteGuest" => {
                self.ensure_bound(None).await?;
                self.wait_synced().await;
                let root = self.root()?;
                let conflicts: Vec<String> = lock(&self.conflicts).iter().cloned().collect();
                if conflicts.is_empty() {
                    return Ok(json!({"files": 0}));
                }
                let scope: BTreeSet<String> = conflicts.iter().cloned().collect();
                let r = self.sync_now(Some(conflicts), true).await;
                self.after_sync(&root, Some(&scope), r.clone()).await;
                let r = r.map_err(rpc_error)?;
                let _ = self.refresh_guest_changes().await;
                Ok(json!({"files": r.files_sent + r.deleted}))
            }
            "banger.applyGuestChanges" => self.apply_guest_changes().await,
            "banger.stop" => {
                let daemon = self.daemon().await?;
                let root = self.root()?;
                let vm = match self.bound() {
                    Some(v) => v,
                    None => self.vm_name(&daemon, &root).await?,
                };
                let view = daemon
                    .vm_stop(vm)
                    .await
                    .map_err(|e| rpc_error(daemon_error(e)))?;
                *lock(&self.vm) = None;
                *lock(&self.watcher) = None;
                self.set_status(|s| s.vm_state = view.state.clone()).await;
                Ok(json!({"files": 0}))
            }
            other => Err(RpcError::invalid_params(format!("unknown command {other}"))),
        }
    }

    /// Runs a guest command in the workspace, streaming `banger/output`.
    /// Returns the run id, the exit code and the output kept.
    async fn run(self: &Arc<Self>, argv: Vec<String>) -> Result<(String, i32, String), RpcError> {
        let vm = self.bound().ok_or_else(|| rpc_error(super::NOT_BOUND))?;
        let daemon = self.daemon().await?;
        let run_id = format!("run-{}", self.runs.fetch_add(1, Ordering::Relaxed) + 1);
        let mut sub = daemon
            .vm_exec(ExecParams {
                vm,
                argv,
                ..ExecParams::default()
            })
            .await
            .map_err(|e| rpc_error(daemon_error(e)))?;
        self.running.fetch_add(1, Ordering::SeqCst);
        struct Running<'a>(&'a AtomicU64);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _running = Running(&self.running);
        let mut kept = String::new();
        loop {
            let ev = sub
                .next()
                .await
                .ok_or_else(|| rpc_error("bangerd closed the command's stream"))?
                .map_err(|e| rpc_error(e.to_string()))?;
            let (stream, data) = match ev {
                ExecEvent::Started { .. } => continue,
                ExecEvent::Stdout { data } => ("stdout", data),
                ExecEvent::Stderr { data } => ("stderr", data),
                ExecEvent::Exited { code, signal, .. } => {
                    let status = banger_agent::protocol::ExitStatus { code, signal };
                    return Ok((run_id, status.shell_code(), kept));
                }
                ExecEvent::Failed { message, .. } => return Err(rpc_error(message)),
            };
            let bytes = B64.decode(data).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if kept.len() < KEEP_OUTPUT {
                kept.push_str(&text);
            }
            self.client
                .send_notification::<OutputNotification>(OutputParams {
                    run_id: run_id.clone(),
                    stream: stream.into(),
                    text,
                })
                .await;
        }
    }

    async fn clear_test_diagnostics(&self) {
        let old: Vec<Uri> = lock(&self.test_diags).drain().map(|(u, _)| u).collect();
        for u in old {
            self.publish(&u).await;
        }
    }

    async fn run_tests(
        self: &Arc<Self>,
        filter: Option<String>,
        token: Option<ProgressToken>,
    ) -> RpcResult<Value> {
        let progress = Progress::begin(self, token, "Banger: running tests").await;
        let result = self.run_tests_inner(filter, &progress).await;
        progress
            .end(match &result {
                Ok(v) if v["exitCode"] == 0 => "passed",
                Ok(_) => "failed",
                Err(_) => "could not run",
            })
            .await;
        result
    }

    async fn run_tests_inner(
        self: &Arc<Self>,
        filter: Option<String>,
        progress: &Progress,
    ) -> RpcResult<Value> {
        let root = self.root()?;
        let configured = lock(&self.settings).test_command.clone();
        let cmd = detect::test_command(&root, configured.as_deref())
            .ok_or_else(|| rpc_error(detect::NONE_FOUND))?;
        self.ensure_bound(Some(progress)).await?;
        progress.report("syncing").await;
        self.settle().await;
        self.clear_test_diagnostics().await;
        progress.report(&format!("running {}", cmd.line)).await;
        let started = Instant::now();
        let (run_id, exit_code, output) = self.run(cmd.argv(filter.as_deref())).await?;
        let duration_ms = started.elapsed().as_millis() as u64;
        let summary = matchers::summary(&output);
        let problems = matchers::problems(&output);
        let index = {
            // A walk of the index: off the async workers.
            let root = root.clone();
            tokio::task::spawn_blocking(move || super::places::tracked_files(&root))
                .await
                .unwrap_or_default()
        };
        let mut by_uri: HashMap<Uri, Vec<Diagnostic>> = HashMap::new();
        for p in problems {
            let Some(host) = super::places::repo_file(&root, &p.file, &index).map(|r| root.join(r))
            else {
                continue;
            };
            let Some(uri) = Uri::from_file_path(&host) else {
                continue;
            };
            let line = p.line.saturating_sub(1);
            let col = p.col.map(|c| c.saturating_sub(1)).unwrap_or(0);
            by_uri.entry(uri).or_default().push(Diagnostic {
                range: Range::new(
                    Position::new(line, col),
                    Position::new(line, col.max(1) + 200),
                ),
                severity: Some(match p.severity {
                    Severity::Error => DiagnosticSeverity::ERROR,
                    Severity::Warning => DiagnosticSeverity::WARNING,
                    Severity::Info => DiagnosticSeverity::INFORMATION,
                }),
                source: Some("banger".into()),
                message: p.message,
                ..Diagnostic::default()
            });
        }
        let uris: Vec<Uri> = by_uri.keys().cloned().collect();
        *lock(&self.test_diags) = by_uri;
        for u in uris {
            self.publish(&u).await;
        }
        Ok(json!({
            "runId": run_id,
            "exitCode": exit_code,
            "passed": summary.passed,
            "failed": summary.failed,
            "durationMs": duration_ms,
        }))
    }

    async fn apply_guest_changes(self: &Arc<Self>) -> RpcResult<Value> {
        let root = self.root()?;
        let vm = self.ensure_bound(None).await?;
        self.wait_synced().await;
        let changes = self.refresh_guest_changes().await.map_err(rpc_error)?;
        if !changes.refused.is_empty() {
            let m = format!(
                "refused the guest's changes: paths outside the repository or under .git: {}; nothing was written",
                changes.refused.join(", ")
            );
            self.client.show_message(MessageType::ERROR, &m).await;
            return Err(rpc_error(m));
        }
        if changes.changes.is_empty() {
            return Ok(json!({"files": 0}));
        }
        let daemon = self.daemon().await?;
        let paths: Vec<String> = changes.changes.iter().map(|c| c.path.clone()).collect();
        let fetched = match daemon.vm_workspace_fetch(vm.clone(), paths).await {
            Ok(f) => f,
            Err(e) => {
                let m = daemon_error(e);
                self.client.show_message(MessageType::ERROR, &m).await;
                return Err(rpc_error(m));
            }
        };
        let files: Vec<GuestFile> = fetched
            .iter()
            .map(|f| GuestFile {
                path: f.path.clone(),
                kind: f.kind,
                data: B64.decode(&f.data).unwrap_or_default(),
            })
            .collect();
        let open = lock(&self.docs).clone();
        let n = files.len();
        let binaries: Vec<&str> = files
            .iter()
            .filter(|f| {
                f.kind.is_some() && (f.data.contains(&0) || std::str::from_utf8(&f.data).is_err())
            })
            .map(|f| f.path.as_str())
            .collect();
        let mut description = format!(
            "{n} file{} from the sandbox {vm}",
            if n == 1 { "" } else { "s" }
        );
        if !binaries.is_empty() {
            description.push_str(&format!(
                "; binary files, written once accepted: {}",
                binaries.join(", ")
            ));
        }
        let plan = edits::plan(&root, &files, &open, &description);
        let accepted = match plan.edit {
            Some(edit) => {
                let resp = self.client.apply_edit(edit).await.map_err(|e| {
                    rpc_error(format!("the editor did not apply the edit: {}", e.message))
                })?;
                if !resp.applied {
                    let why = resp.failure_reason.unwrap_or_else(|| "declined".into());
                    return Err(rpc_error(format!("guest changes not applied: {why}")));
                }
                true
            }
            None => {
                let ask = format!(
                    "Apply {} binary or link file{} from the sandbox {vm}?",
                    plan.deferred.len(),
                    if plan.deferred.len() == 1 { "" } else { "s" }
                );
                let choice = self
                    .client
                    .show_message_request(
                        MessageType::INFO,
                        ask,
                        Some(vec![
                            MessageActionItem {
                                title: "Apply".into(),
                                properties: HashMap::new(),
                            },
                            MessageActionItem {
                                title: "Cancel".into(),
                                properties: HashMap::new(),
                            },
                        ]),
                    )
                    .await
                    .ok()
                    .flatten();
                choice.is_some_and(|c| c.title == "Apply")
            }
        };
        if !accepted {
            return Err(rpc_error("guest changes not applied: declined"));
        }
        edits::write_deferred(&root, &plan.deferred)
            .map_err(|e| rpc_error(format!("writing the guest's binary files: {e}")))?;
        // Record as taken only what the host now has: an editor may apply
        // part of an edit (VS Code's preview applies the ticked files and
        // still answers "applied"). A guest copy recorded as taken while
        // the host kept its own would be overwritten by the next sync.
        let mut taken_files = Vec::new();
        for attempt in 0..10 {
            taken_files = fetched
                .iter()
                .zip(&files)
                .filter(|(_, g)| self.host_has(&root, g))
                .map(|(f, _)| f)
                .collect::<Vec<_>>();
            if taken_files.len() == fetched.len() || attempt == 9 {
                break;
            }
            // The editor's didChange for the applied text may trail its
            // reply.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let entries: Vec<AcceptEntry> = taken_files
            .iter()
            .map(|f| AcceptEntry {
                path: f.path.clone(),
                kind: f.kind.unwrap_or(crate::api::FileKind::File),
                oid: f.oid.clone(),
            })
            .collect();
        let n = entries.len();
        daemon
            .vm_workspace_accept(vm, entries.clone())
            .await
            .map_err(|e| rpc_error(daemon_error(e)))?;
        // Conflicts on these files are settled the guest's way.
        let taken: BTreeSet<String> = entries.iter().map(|f| f.path.clone()).collect();
        let left: BTreeSet<String> = lock(&self.conflicts)
            .iter()
            .filter(|c| !taken.contains(*c))
            .cloned()
            .collect();
        *lock(&self.conflicts) = left.clone();
        self.publish_conflicts(&root, &left).await;
        if left.is_empty() {
            self.set_status(|s| {
                if s.sync == "conflict" {
                    s.sync = "synced".into();
                    s.message = None;
                }
            })
            .await;
        }
        let _ = self.refresh_guest_changes().await;
        Ok(json!({"files": n}))
    }

    /// Whether the host (the editor's open text, else the file on disk)
    /// has the guest's version of a file.
    fn host_has(&self, root: &Path, g: &GuestFile) -> bool {
        let host = root.join(&g.path);
        let Some(kind) = g.kind else {
            return std::fs::symlink_metadata(&host).is_err();
        };
        if kind == crate::api::FileKind::Symlink {
            use std::os::unix::ffi::OsStrExt;
            return std::fs::read_link(&host).is_ok_and(|t| t.as_os_str().as_bytes() == g.data);
        }
        let open =
            Uri::from_file_path(&host).and_then(|u| lock(&self.docs).get(&u).map(|d| d.1.clone()));
        match open {
            Some(text) if text.as_bytes() == g.data => true,
            _ => std::fs::read(&host).is_ok_and(|d| d == g.data),
        }
    }
}
