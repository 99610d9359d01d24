//! Live workspace sync after the first transfer: host → guest by content id
//! against the per-VM manifest (never overwriting a guest edit), the host's
//! HEAD followed, and guest → host as validated, untrusted files.
//!
//! The guest half is `banger_agent::sync`, run inside the agent (the
//! `WorkspaceSync` request), or as `banger-agent sync …` through an exec
//! for inputs too large to send in one request.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_agent::client::ExecEvent;
use banger_agent::protocol::ExecSpec;

use super::{Daemon, OpError, lock};
use crate::api::{
    AcceptEntry, ChangeStatus, FetchedFile, FileKind, GuestChange, GuestChanges, SyncResult, code,
};
use crate::store::{VmRecord, WorkspaceRecord};
use crate::workspace::export::{self, Limits};
use crate::workspace::sync::{self as wsync, ApplyReport, Change, Kind, Record, Step, SyncedFile};
use crate::workspace::{self, host_pack};

use crate::workspace::transfer::GUEST_AGENT;

/// Inputs up to this size go to the agent in one request; larger ones
/// stream to `banger-agent sync` run as a program.
const IN_AGENT_INPUT: usize = 8 << 20;

/// Most a guest's JSON report may take (a scan of a huge tree included).
const MAX_REPORT_BYTES: usize = 64 << 20;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The host's HEAD and branch.
struct HostHead {
    head: Option<String>,
    branch: String,
}

fn host_head(root: &Path) -> HostHead {
    let repo = gix::open(root).ok();
    let head = repo
        .as_ref()
        .and_then(|r| r.head_id().ok().map(|id| id.detach().to_string()));
    let branch = repo
        .as_ref()
        .and_then(|r| r.head_name().ok().flatten())
        .map(|n| n.shorten().to_string())
        .unwrap_or_default();
    HostHead { head, branch }
}

/// A path a client named, as the manifest spells it (`None`: not a
/// repository path this sync can decide alone).
fn normalize_hint(p: &str) -> Option<String> {
    let p = p.trim_start_matches("./").trim_end_matches('/');
    let ok = !p.is_empty()
        && !p.starts_with('/')
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c != ".git");
    ok.then(|| p.to_string())
}

/// The paths a sync must decide, with the kind each should have (`None`:
/// it should not be in the guest). `None` overall: fall back to a full
/// reconcile (a hint named a directory or an untracked path).
fn hinted_wanted(
    root: &Path,
    hints: &[String],
    manifest: &BTreeMap<String, SyncedFile>,
    synced_under: impl Fn(&str) -> Result<bool, OpError>,
) -> Result<Option<BTreeMap<String, Option<Kind>>>, OpError> {
    let repo = gix::open(root).map_err(|e| OpError::internal(e.to_string()))?;
    let index = repo
        .index_or_empty()
        .map_err(|e| OpError::internal(e.to_string()))?;
    let mut wanted = BTreeMap::new();
    for hint in hints {
        if hint.starts_with(".git/") || hint == ".git" {
            continue;
        }
        let Some(path) = normalize_hint(hint) else {
            continue;
        };
        use gix::index::entry::Mode;
        let entry = index
            .entry_by_path(path.as_str().into())
            .filter(|e| !e.mode.contains(Mode::COMMIT));
        match entry {
            Some(e) => {
                let kind = if e.mode.contains(Mode::SYMLINK) {
                    Kind::Symlink
                } else if e.mode.contains(Mode::FILE_EXECUTABLE) {
                    Kind::Executable
                } else {
                    Kind::File
                };
                wanted.insert(path, Some(kind));
            }
            None if manifest.contains_key(&path) => {
                // No longer tracked (or untracked-included): decide fully.
                return Ok(None);
            }
            None => {
                // A directory (made, removed or renamed) or something gone:
                // only worth a full reconcile when tracked or synced files
                // lived under it; build output never did.
                let prefix = format!("{path}/");
                if index
                    .prefixed_entries(prefix.as_str().into())
                    .is_some_and(|e| !e.is_empty())
                    || synced_under(&prefix)?
                {
                    return Ok(None);
                }
                // An untracked file: never travels in a tracked-only
                // workspace.
                continue;
            }
        }
    }
    Ok(Some(wanted))
}

/// How long one guest operation of live sync or a workspace transfer may
/// take: 10 minutes (a first sync of a large repository under emulation
/// takes well under that), `BANGER_GUEST_OP_TIMEOUT` seconds if set.
pub(crate) fn guest_op_timeout() -> std::time::Duration {
    std::env::var("BANGER_GUEST_OP_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(std::time::Duration::from_secs(600))
}

/// Checks a guest-reported path (pure: no host file system).
fn acceptable(path: &str) -> bool {
    normalize_hint(path).as_deref() == Some(path) && !path.contains('\0') && path.len() < 4096
}

impl Daemon {
    pub(super) fn sync_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.sync_locks);
        locks.entry(id.to_string()).or_default().clone()
    }

    fn workspace_of(&self, vm: &str) -> Result<(VmRecord, WorkspaceRecord), OpError> {
        let record = self.find(vm)?;
        match record.workspace.clone() {
            Some(ws) => Ok((record, ws)),
            None => Err(OpError::new(
                code::CONFLICT,
                format!(
                    "vm {:?} has no workspace; ship one with: banger vm workspace prepare {} PATH",
                    record.name, record.name
                ),
            )),
        }
    }

    /// Runs a shell script in the guest with `args` as `$1`...; returns its
    /// stdout (bounded) when it exits 0, else its exit code and stderr.
    pub(super) async fn guest_script(
        &self,
        vm: &str,
        script: &str,
        args: &[&str],
        max_out: usize,
    ) -> Result<Vec<u8>, (Option<i32>, String)> {
        let mut argv: Vec<String> = vec!["sh".into(), "-c".into(), script.into(), "sh".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.guest_run(vm, argv, Vec::new(), max_out).await
    }

    /// Runs a guest program with `input` on stdin; returns its stdout
    /// (bounded) when it exits 0, else its exit code and stderr.
    pub(super) async fn guest_run(
        &self,
        vm: &str,
        argv: Vec<String>,
        input: Vec<u8>,
        max_out: usize,
    ) -> Result<Vec<u8>, (Option<i32>, String)> {
        let spec = ExecSpec {
            argv,
            env: Vec::new(),
            cwd: Some("/".into()),
            stdin: true,
            tty: None,
            user: None,
        };
        let (_, mut session) = self.exec(vm, spec).await.map_err(|e| (None, e.message))?;
        let control = session.control();
        let writer = tokio::task::spawn_blocking(move || {
            for chunk in input.chunks(256 << 10) {
                control.write_stdin_blocking(chunk)?;
            }
            control.close_stdin()
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let limit = guest_op_timeout();
        // On time-out the session is dropped, which kills the guest
        // program (and ends the writer), so the sync lock is not held
        // forever by a guest that stopped answering.
        let status = tokio::time::timeout(limit, async {
            loop {
                match session.next().await {
                    Ok(ExecEvent::Stdout(b)) => {
                        if out.len() + b.len() > max_out {
                            return Err((
                                None,
                                format!("the guest's reply is over {max_out} bytes"),
                            ));
                        }
                        out.extend(b);
                    }
                    Ok(ExecEvent::Stderr(b)) => {
                        let room = (64usize << 10).saturating_sub(err.len());
                        err.extend_from_slice(&b[..b.len().min(room)]);
                    }
                    Ok(ExecEvent::Exited(s)) => return Ok(s),
                    Err(e) => return Err((None, e.to_string())),
                }
            }
        })
        .await
        .map_err(|_| {
            (
                None,
                format!(
                    "the guest did not finish within {} s (BANGER_GUEST_OP_TIMEOUT); the guest program was killed",
                    limit.as_secs()
                ),
            )
        })??;
        let _ = writer.await;
        if status.code == Some(0) {
            Ok(out)
        } else {
            Err((
                status.code,
                String::from_utf8_lossy(&err).trim().to_string(),
            ))
        }
    }

    async fn agent_sync(
        &self,
        vm: &str,
        op: &str,
        ws: &WorkspaceRecord,
        input: Vec<u8>,
        max_out: usize,
    ) -> Result<Vec<u8>, OpError> {
        let failed =
            |m: String| OpError::internal(format!("workspace sync ({op}) in the guest: {m}"));
        if input.len() <= IN_AGENT_INPUT {
            // In the agent itself: no process to start in the guest.
            let (_, client) = self.running_agent(vm).await?;
            let limit = guest_op_timeout();
            return tokio::time::timeout(
                limit,
                client.workspace_sync(op, &ws.guest_path, &input, max_out),
            )
            .await
            .map_err(|_| {
                failed(format!(
                    "no answer within {} s (BANGER_GUEST_OP_TIMEOUT)",
                    limit.as_secs()
                ))
            })?
            .map_err(|e| failed(e.to_string()));
        }
        // Large inputs stream to the helper program, with backpressure.
        let argv = vec![
            GUEST_AGENT.into(),
            "sync".into(),
            op.into(),
            ws.guest_path.clone(),
        ];
        self.guest_run(vm, argv, input, max_out)
            .await
            .map_err(|(_, m)| failed(m))
    }

    /// Records the manifest of a full transfer.
    pub(crate) fn record_manifest(&self, id: &str, files: &[SyncedFile]) -> Result<(), OpError> {
        super::offload(|| self.with_store(|s| s.replace_manifest(id, files)))
    }

    /// Makes the guest's HEAD follow the host's. `Ok(Some(warning))` when
    /// the guest moved its own HEAD (left as it is).
    async fn follow_head(
        &self,
        record: &VmRecord,
        ws: &WorkspaceRecord,
        host: &HostHead,
    ) -> Result<Option<String>, OpError> {
        let Some(new) = host.head.clone() else {
            return Ok(None);
        };
        let root = PathBuf::from(&ws.source);
        let old = ws.head.clone();
        let (pack, shallow) = {
            let new = new.clone();
            tokio::task::spawn_blocking(move || host_pack::head_pack(&root, &new, old.as_deref()))
                .await
                .map_err(|e| OpError::internal(format!("pack task failed: {e}")))?
                .map_err(OpError::from_display)?
        };
        let argv = vec![
            "sh".into(),
            "-c".into(),
            wsync::HEAD_SCRIPT.into(),
            "banger-head".into(),
            ws.guest_path.clone(),
            ws.head.clone().unwrap_or_default(),
            new.clone(),
            host.branch.clone(),
            if shallow { "shallow" } else { "" }.into(),
        ];
        let warning = match self.guest_run(&record.name, argv, pack, 1 << 20).await {
            Ok(_) => None,
            // The guest moved its own HEAD: the host's commit arrived
            // beside it, so the guest now has the host's HEAD too.
            Err((Some(4), m)) => Some(m),
            Err((_, m)) => {
                return Err(OpError::internal(format!(
                    "moving the guest's HEAD failed: {m}"
                )));
            }
        };
        let mut ws = ws.clone();
        ws.head = Some(new);
        self.with_store(|s| s.set_workspace(&record.id, Some(&ws)))?;
        Ok(warning)
    }

    /// `vm_workspace_sync`.
    pub(crate) async fn sync_workspace(
        self: &Arc<Self>,
        vm: &str,
        hints: Option<Vec<String>>,
        force: bool,
    ) -> Result<SyncResult, OpError> {
        let (record, _) = self.workspace_of(vm)?;
        let lock = self.sync_lock(&record.id);
        let _guard = lock.lock().await;
        // Read again under the lock: the sync before this one may have
        // moved the recorded HEAD.
        let (record, ws) = self.workspace_of(&record.id)?;
        let root = PathBuf::from(&ws.source);
        let mut result = SyncResult::default();
        let started = std::time::Instant::now();
        let mut guest = std::time::Duration::ZERO;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;

        let host = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || host_head(&root))
                .await
                .map_err(|e| OpError::internal(e.to_string()))?
        };
        if host.head.is_some() && host.head != ws.head {
            let t = std::time::Instant::now();
            result.warning = self.follow_head(&record, &ws, &host).await?;
            guest += t.elapsed();
            result.head_moved = result.warning.is_none();
        }
        result.head = self.workspace_of(&record.id)?.1.head;

        let daemon = self.clone();
        let id = record.id.clone();
        let include_untracked = ws.include_untracked;
        let steps = tokio::task::spawn_blocking(move || -> Result<Vec<Step>, OpError> {
            let wanted = match &hints {
                Some(h) => {
                    let known: BTreeMap<String, SyncedFile> = daemon
                        .with_store(|s| {
                            s.manifest_entries(
                                &id,
                                &h.iter()
                                    .filter_map(|p| normalize_hint(p))
                                    .collect::<Vec<_>>(),
                            )
                        })?
                        .into_iter()
                        .map(|f| (f.path.clone(), f))
                        .collect();
                    if include_untracked {
                        None
                    } else {
                        let under = |prefix: &str| {
                            daemon.with_store(|s| s.manifest_has_prefix(&id, prefix))
                        };
                        hinted_wanted(&root, h, &known, under)?.map(|w| (w, known))
                    }
                }
                None => None,
            };
            let (wanted, known) = match wanted {
                Some(w) => w,
                None => {
                    let sel = workspace::select(&root, include_untracked)
                        .map_err(OpError::from_display)?;
                    let wanted: BTreeMap<String, Option<Kind>> = sel
                        .files
                        .iter()
                        .map(|f| (f.path.clone(), Some(wsync::kind_of(f.kind))))
                        .collect();
                    let known: BTreeMap<String, SyncedFile> = daemon
                        .with_store(|s| s.manifest(&id))?
                        .into_iter()
                        .map(|f| (f.path.clone(), f))
                        .collect();
                    let mut all = wanted;
                    for p in known.keys() {
                        all.entry(p.clone()).or_insert(None);
                    }
                    (all, known)
                }
            };
            let mut steps = Vec::new();
            for (path, kind) in &wanted {
                match wsync::decide(&root, path, *kind, known.get(path)) {
                    Ok(Some(step)) => steps.push(step),
                    Ok(None) => {}
                    // A file that vanished between listing and reading is
                    // the next sync's business.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(OpError::internal(format!("reading {path}: {e}")));
                    }
                }
            }
            Ok(steps)
        })
        .await
        .map_err(|e| OpError::internal(format!("sync task failed: {e}")))??;

        let restats: Vec<SyncedFile> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Restat(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        let moving = steps
            .iter()
            .filter(|s| !matches!(s, Step::Restat(_)))
            .count();
        if moving == 0 {
            if !restats.is_empty() {
                super::offload(|| {
                    self.with_store(|s| s.update_manifest(&record.id, &restats, &[]))
                })?;
            }
            result.guest_ms = ms(guest);
            result.host_ms = ms(started.elapsed().saturating_sub(guest));
            return Ok(result);
        }
        let stream = wsync::encode(&steps, |_| force);
        let t = std::time::Instant::now();
        let reply = self
            .agent_sync(&record.name, "apply", &ws, stream, MAX_REPORT_BYTES)
            .await?;
        guest += t.elapsed();
        let report: ApplyReport = serde_json::from_slice(&reply)
            .map_err(|e| OpError::internal(format!("the guest's sync report is not valid: {e}")))?;
        let conflicts: BTreeSet<String> = report.conflicts.into_iter().map(|c| c.path).collect();
        let unchanged: BTreeSet<String> = report.unchanged.into_iter().collect();
        let mut upserts = restats;
        let mut removed = Vec::new();
        for step in steps {
            if conflicts.contains(step.path()) {
                continue;
            }
            match step {
                Step::Write { file, .. } => {
                    if !unchanged.contains(&file.path) {
                        result.files_sent += 1;
                    }
                    upserts.push(file);
                }
                Step::Delete { path, .. } => {
                    if !unchanged.contains(&path) {
                        result.deleted += 1;
                    }
                    removed.push(path);
                }
                Step::Restat(_) => {}
            }
        }
        super::offload(|| self.with_store(|s| s.update_manifest(&record.id, &upserts, &removed)))?;
        // Only paths this sync sent can be conflicts (the guest is not
        // trusted to name others).
        result.conflicts = conflicts.into_iter().collect();
        result.guest_ms = ms(guest);
        result.host_ms = ms(started.elapsed().saturating_sub(guest));
        Ok(result)
    }

    /// `vm_workspace_changes`.
    pub(crate) async fn guest_changes(&self, vm: &str) -> Result<GuestChanges, OpError> {
        let (record, ws) = self.workspace_of(vm)?;
        let reply = self
            .agent_sync(&record.name, "scan", &ws, Vec::new(), MAX_REPORT_BYTES)
            .await?;
        let all: Vec<Change> = serde_json::from_slice(&reply)
            .map_err(|e| OpError::internal(format!("the guest's change list is not valid: {e}")))?;
        let mut out = GuestChanges::default();
        for c in all {
            let oid_ok = c
                .oid
                .as_deref()
                .is_none_or(|o| o.len() == 40 && o.bytes().all(|b| b.is_ascii_hexdigit()));
            if acceptable(&c.path) && oid_ok {
                out.changes.push(wire_change(c));
            } else {
                out.refused.push(c.path.chars().take(200).collect());
            }
        }
        Ok(out)
    }

    /// `vm_workspace_fetch`: the guest's copies, refused whole when one
    /// breaks a rule.
    pub(crate) async fn fetch_guest_files(
        &self,
        vm: &str,
        paths: Vec<String>,
    ) -> Result<Vec<FetchedFile>, OpError> {
        let (record, ws) = self.workspace_of(vm)?;
        let root = PathBuf::from(&ws.source);
        for p in &paths {
            export::check_path(&root, p).map_err(|r| OpError::new(code::INVALID, r.to_string()))?;
        }
        let limits = Limits::from_env();
        let input = serde_json::to_vec(&paths).expect("serializes");
        let max = usize::try_from(limits.total)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 20);
        let reply = self
            .agent_sync(&record.name, "read", &ws, input, max)
            .await
            .map_err(|e| {
                OpError::new(code::INVALID, format!("{}; nothing was written", e.message))
            })?;
        let files = parse_read_reply(&reply, &paths, limits).map_err(|m| {
            OpError::new(
                code::INVALID,
                format!("refused the guest's files: {m}; nothing was written"),
            )
        })?;
        for f in &files {
            if f.kind == Some(FileKind::Symlink) {
                use base64::Engine as _;
                let target =
                    String::from_utf8_lossy(&B64.decode(&f.data).unwrap_or_default()).into_owned();
                if let Some(rule) = export::symlink_refusal(&f.path, &target) {
                    return Err(OpError::new(
                        code::INVALID,
                        format!(
                            "refused the guest's files: {}: {rule}; nothing was written",
                            f.path
                        ),
                    ));
                }
            }
        }
        Ok(files)
    }

    /// Takes the guest's changes since the last sync into the host tree
    /// (`export --apply` from the CLI): validated like "Apply guest
    /// changes", refused whole where the host changed a file since the last
    /// sync (unless `force`), then recorded as synced. Returns the paths
    /// written. `None`: the VM has no sync record (made by an older banger).
    pub(crate) async fn take_guest_changes(
        &self,
        vm: &str,
        force: bool,
    ) -> Result<Option<Vec<String>>, OpError> {
        let (record, _) = self.workspace_of(vm)?;
        // No sync may write the guest's files or the manifest between
        // reading the changes and recording them as taken.
        let lock = self.sync_lock(&record.id);
        let _guard = lock.lock().await;
        let (record, ws) = self.workspace_of(&record.id)?;
        if !self.with_store(|s| s.manifest_has_prefix(&record.id, ""))? {
            return Ok(None);
        }
        let changes = self.guest_changes(vm).await?;
        if !changes.refused.is_empty() {
            return Err(OpError::new(
                code::INVALID,
                format!(
                    "refused the guest's changes: {}: outside the repository or under .git; nothing was written",
                    changes.refused.join(", ")
                ),
            ));
        }
        let paths: Vec<String> = changes.changes.iter().map(|c| c.path.clone()).collect();
        if paths.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let fetched = self.fetch_guest_files(vm, paths.clone()).await?;
        // Debug builds: a test holds this here, between reading the guest's
        // changes and recording them, to show no sync runs in between.
        if cfg!(debug_assertions)
            && let Some(ms) = std::env::var("BANGER_TEST_TAKE_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
        {
            tracing::info!(vm = %record.name, "holding the guest's changes for {ms} ms (BANGER_TEST_TAKE_PAUSE_MS)");
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let root = PathBuf::from(&ws.source);
        let synced: BTreeMap<String, SyncedFile> = self
            .with_store(|s| s.manifest_entries(&record.id, &paths))?
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect();
        let files = fetched.clone();
        let written = tokio::task::spawn_blocking(move || -> Result<Vec<String>, OpError> {
            use base64::Engine as _;
            // Decide everything before writing anything.
            let mut plan = Vec::new();
            let mut dirty = Vec::new();
            for f in &files {
                let host = wsync::host_version(&root, &f.path)
                    .map_err(|e| OpError::internal(format!("{}: {e}", f.path)))?;
                let guest = f.kind.map(|k| (agent_kind(k), f.oid.clone()));
                if host == guest {
                    continue;
                }
                let last = synced.get(&f.path).map(|s| (s.kind, s.oid.clone()));
                if host != last && !force {
                    dirty.push(f.path.clone());
                }
                plan.push((
                    f.path.clone(),
                    f.kind.map(agent_kind),
                    B64.decode(&f.data).unwrap_or_default(),
                ));
            }
            if !dirty.is_empty() {
                return Err(OpError::new(
                    code::CONFLICT,
                    format!(
                        "the host changed these files since the last sync: {}; nothing was written (--force overwrites them)",
                        dirty.join(", ")
                    ),
                ));
            }
            let mut written = Vec::new();
            for (path, kind, data) in plan {
                export::check_path(&root, &path)
                    .map_err(|r| OpError::new(code::INVALID, r.to_string()))?;
                wsync::write_host(&root, &path, kind, &data)
                    .map_err(|e| OpError::internal(format!("writing {path}: {e}")))?;
                written.push(path);
            }
            Ok(written)
        })
        .await
        .map_err(|e| OpError::internal(format!("apply task failed: {e}")))??;
        let entries = fetched
            .iter()
            .map(|f| AcceptEntry {
                path: f.path.clone(),
                kind: f.kind.unwrap_or(FileKind::File),
                oid: f.oid.clone(),
            })
            .collect();
        self.accept_guest_files_locked(&record, &ws, entries)
            .await?;
        Ok(Some(written))
    }

    /// `vm_workspace_accept`.
    pub(crate) async fn accept_guest_files(
        &self,
        vm: &str,
        files: Vec<AcceptEntry>,
    ) -> Result<Vec<String>, OpError> {
        let (record, ws) = self.workspace_of(vm)?;
        let lock = self.sync_lock(&record.id);
        let _guard = lock.lock().await;
        self.accept_guest_files_locked(&record, &ws, files).await
    }

    /// [`Daemon::accept_guest_files`], with the VM's sync lock held.
    async fn accept_guest_files_locked(
        &self,
        record: &VmRecord,
        ws: &WorkspaceRecord,
        files: Vec<AcceptEntry>,
    ) -> Result<Vec<String>, OpError> {
        if let Some(bad) = files.iter().find(|f| !acceptable(&f.path)) {
            return Err(OpError::new(
                code::INVALID,
                format!("invalid path {:?}", bad.path),
            ));
        }
        let entries: Vec<wsync::ManifestEntry> = files
            .iter()
            .map(|f| wsync::ManifestEntry {
                path: f.path.clone(),
                kind: agent_kind(f.kind),
                oid: f.oid.clone(),
            })
            .collect();
        let input = serde_json::to_vec(&entries).expect("serializes");
        let reply = self
            .agent_sync(&record.name, "accept", ws, input, MAX_REPORT_BYTES)
            .await?;
        let accepted: BTreeSet<String> = serde_json::from_slice::<Vec<String>>(&reply)
            .map_err(|e| OpError::internal(format!("the guest's reply is not valid: {e}")))?
            .into_iter()
            .collect();
        let (mut upserts, mut removed) = (Vec::new(), Vec::new());
        for f in &files {
            if !accepted.contains(&f.path) {
                continue;
            }
            if f.oid.is_empty() {
                removed.push(f.path.clone());
            } else {
                // No stat: the next sync reads the host file and finds it
                // equal once the editor has written it.
                upserts.push(SyncedFile {
                    path: f.path.clone(),
                    kind: agent_kind(f.kind),
                    oid: f.oid.clone(),
                    stat: None,
                });
            }
        }
        super::offload(|| self.with_store(|s| s.update_manifest(&record.id, &upserts, &removed)))?;
        Ok(files
            .into_iter()
            .map(|f| f.path)
            .filter(|p| accepted.contains(p))
            .collect())
    }
}

/// The API's kind for the agent's: guest-protocol types stop here.
fn wire_kind(k: Kind) -> FileKind {
    match k {
        Kind::File => FileKind::File,
        Kind::Executable => FileKind::Executable,
        Kind::Symlink => FileKind::Symlink,
    }
}

/// The agent's kind for the API's.
fn agent_kind(k: FileKind) -> Kind {
    match k {
        FileKind::File => Kind::File,
        FileKind::Executable => Kind::Executable,
        FileKind::Symlink => Kind::Symlink,
    }
}

/// The API's guest change for the agent's scan result.
fn wire_change(c: Change) -> GuestChange {
    GuestChange {
        status: match c.status {
            wsync::Status::Modified => ChangeStatus::Modified,
            wsync::Status::Added => ChangeStatus::Added,
            wsync::Status::Deleted => ChangeStatus::Deleted,
        },
        kind: c.kind.map(wire_kind),
        path: c.path,
        oid: c.oid,
    }
}

/// Parses a `read` reply (untrusted): only the asked paths, each once,
/// within the size limits.
fn parse_read_reply(
    mut reply: &[u8],
    asked: &[String],
    limits: Limits,
) -> Result<Vec<FetchedFile>, String> {
    use base64::Engine as _;
    let asked: BTreeSet<&str> = asked.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut total = 0u64;
    while !reply.is_empty() {
        let nl = reply
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("a record without a header")?;
        let record: Record =
            serde_json::from_slice(&reply[..nl]).map_err(|e| format!("a bad record: {e}"))?;
        reply = &reply[nl + 1..];
        let (path, kind, data) = match record {
            Record::Write {
                path, kind, size, ..
            } => {
                if size > limits.per_file {
                    return Err(format!(
                        "{path}: over the {} byte file limit",
                        limits.per_file
                    ));
                }
                total += size;
                if total > limits.total {
                    return Err(format!("over the {} byte limit", limits.total));
                }
                let size = size as usize;
                if reply.len() < size {
                    return Err(format!("{path}: short content"));
                }
                let data = &reply[..size];
                reply = &reply[size..];
                (path, Some(kind), data)
            }
            Record::Missing { path } => (path, None, &[][..]),
            Record::Delete { path, .. } => return Err(format!("{path}: unexpected record")),
        };
        if !asked.contains(path.as_str()) || !seen.insert(path.clone()) {
            return Err(format!("{path}: not asked for"));
        }
        out.push(FetchedFile {
            oid: if kind.is_some() {
                banger_agent::sync::blob_oid(data)
            } else {
                String::new()
            },
            data: B64.encode(data),
            path,
            kind: kind.map(wire_kind),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_kinds_and_changes_serialize_as_the_agents_did() {
        for k in [Kind::File, Kind::Executable, Kind::Symlink] {
            assert_eq!(
                serde_json::to_value(wire_kind(k)).unwrap(),
                serde_json::to_value(k).unwrap()
            );
            assert_eq!(agent_kind(wire_kind(k)), k);
        }
        for status in [
            wsync::Status::Modified,
            wsync::Status::Added,
            wsync::Status::Deleted,
        ] {
            let c = Change {
                path: "a/b".into(),
                status,
                kind: Some(Kind::Executable),
                oid: Some("0".repeat(40)),
            };
            assert_eq!(
                serde_json::to_value(wire_change(c.clone())).unwrap(),
                serde_json::to_value(c).unwrap()
            );
        }
    }

    #[test]
    fn hints_are_repository_paths_only() {
        assert_eq!(normalize_hint("./src/a.rs").as_deref(), Some("src/a.rs"));
        assert_eq!(normalize_hint("src/").as_deref(), Some("src"));
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            ".git/config",
            "x/.git/hooks",
            "a//b",
        ] {
            assert_eq!(normalize_hint(bad), None, "{bad}");
        }
        assert!(!acceptable("./a"));
        assert!(acceptable("a/b"));
    }

    #[test]
    fn a_read_reply_carries_only_what_was_asked_within_limits() {
        let mut reply = Vec::new();
        let rec = Record::Write {
            path: "a".into(),
            kind: Kind::File,
            size: 3,
            expect: None,
            force: false,
        };
        serde_json::to_writer(&mut reply, &rec).unwrap();
        reply.extend_from_slice(b"\nabc");
        let limits = Limits::default();
        let files = parse_read_reply(&reply, &["a".into()], limits).unwrap();
        assert_eq!(files[0].oid, banger_agent::sync::blob_oid(b"abc"));
        assert!(
            parse_read_reply(&reply, &["b".into()], limits)
                .unwrap_err()
                .contains("not asked")
        );
        let small = Limits {
            per_file: 2,
            total: 10,
        };
        assert!(parse_read_reply(&reply, &["a".into()], small).is_err());
        assert!(parse_read_reply(&reply[..reply.len() - 1], &["a".into()], limits).is_err());
    }
}
