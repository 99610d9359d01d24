//! The language server's shared state (rust-analyzer's `GlobalState`):
//! the binding of the editor's repository to a sandbox VM, the status it
//! reports, and the diagnostics it publishes. Handlers, the sync worker
//! and the poller hold it in an `Arc`; it never touches a VM itself, only
//! the daemon's API.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use jsonrpsee::async_client::Client as DaemonClient;
use jsonrpsee::core::client::Error as ClientError;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tower_lsp_server::Client;
use tower_lsp_server::jsonrpc::{Error as RpcError, ErrorCode};
use tower_lsp_server::ls_types::*;

use super::ext::{StatusNotification, StatusParams};
use super::progress::Progress;
use super::settings::{self, Settings};
use super::sync::SyncJob;
use crate::api::GuestChange;
use crate::api::{
    BangerApiClient, CreateParams, GuestChanges, OpEvent, PrepareParams, SetupParams, SyncParams,
    VmView, code,
};
use crate::paths::Dirs;

/// What every handler, the sync worker and the poller share: the editor
/// connection, the daemon client, the binding, the status and the
/// diagnostics published.
pub(crate) struct GlobalState {
    pub(crate) client: Client,
    pub(crate) dirs: Dirs,
    pub(crate) daemon: tokio::sync::Mutex<Option<Arc<DaemonClient>>>,
    pub(crate) root: Mutex<Option<PathBuf>>,
    pub(crate) options: Mutex<Value>,
    pub(crate) settings: Mutex<Settings>,
    /// The bound VM's name once bound.
    pub(crate) vm: Mutex<Option<String>>,
    pub(crate) bind_lock: tokio::sync::Mutex<()>,
    pub(crate) status: Mutex<StatusParams>,
    pub(crate) sync_tx: mpsc::UnboundedSender<SyncJob>,
    pub(crate) requested: AtomicU64,
    pub(crate) done: watch::Sender<u64>,
    pub(crate) guest_changes: Mutex<Vec<GuestChange>>,
    pub(crate) conflicts: Mutex<BTreeSet<String>>,
    pub(crate) docs: Mutex<HashMap<Uri, (i32, String)>>,
    pub(crate) test_diags: Mutex<HashMap<Uri, Vec<Diagnostic>>>,
    pub(crate) conflict_diags: Mutex<HashMap<Uri, Diagnostic>>,
    pub(crate) runs: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) progress_ok: AtomicBool,
    pub(crate) watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl GlobalState {
    pub(crate) fn new(
        client: Client,
        dirs: Dirs,
        sync_tx: mpsc::UnboundedSender<SyncJob>,
    ) -> GlobalState {
        GlobalState {
            client,
            dirs,
            daemon: tokio::sync::Mutex::new(None),
            root: Mutex::new(None),
            options: Mutex::new(Value::Null),
            settings: Mutex::new(Settings::default()),
            vm: Mutex::new(None),
            bind_lock: tokio::sync::Mutex::new(()),
            status: Mutex::new(StatusParams {
                sync: "synced".into(),
                vm_state: "absent".into(),
                ..StatusParams::default()
            }),
            sync_tx,
            requested: AtomicU64::new(0),
            done: watch::channel(0).0,
            guest_changes: Mutex::new(Vec::new()),
            conflicts: Mutex::new(BTreeSet::new()),
            docs: Mutex::new(HashMap::new()),
            test_diags: Mutex::new(HashMap::new()),
            conflict_diags: Mutex::new(HashMap::new()),
            runs: AtomicU64::new(0),
            running: AtomicU64::new(0),
            progress_ok: AtomicBool::new(false),
            watcher: Mutex::new(None),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn rpc_error(message: impl Into<String>) -> RpcError {
    RpcError {
        code: ErrorCode::ServerError(-32000),
        message: message.into().into(),
        data: None,
    }
}

pub(crate) use crate::client::daemon_error;

impl GlobalState {
    pub(crate) fn root(&self) -> Result<PathBuf, RpcError> {
        lock(&self.root).clone().ok_or_else(|| {
            rpc_error("banger lsp: the workspace folder is not inside a git repository")
        })
    }

    pub(crate) async fn daemon(&self) -> Result<Arc<DaemonClient>, RpcError> {
        let mut slot = self.daemon.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_connected()) {
            return Ok(c.clone());
        }
        let c = crate::client::connect_or_start(&self.dirs)
            .await
            .map_err(|e| rpc_error(format!("cannot reach bangerd: {e}")))?;
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }

    pub(crate) async fn set_status(&self, f: impl FnOnce(&mut StatusParams)) {
        self.update_status(f, false).await;
    }

    /// Updates the status and notifies when it changed (or always, with
    /// `always`: the end of every sync is reported, with its own count).
    pub(crate) async fn update_status(&self, f: impl FnOnce(&mut StatusParams), always: bool) {
        let now = {
            let mut s = lock(&self.status);
            let before = s.clone();
            f(&mut s);
            (always || *s != before).then(|| s.clone())
        };
        if let Some(s) = now {
            self.client.send_notification::<StatusNotification>(s).await;
        }
    }

    /// The VM name this repository binds to (without creating anything).
    pub(crate) async fn vm_name(
        &self,
        daemon: &DaemonClient,
        root: &Path,
    ) -> Result<String, RpcError> {
        if let Some(vm) = lock(&self.settings).vm.clone() {
            return Ok(vm);
        }
        let vms = daemon
            .vm_list(true)
            .await
            .map_err(|e| rpc_error(daemon_error(e)))?;
        Ok(settings::choose_vm_name(
            root,
            vms.iter().map(|v| {
                (
                    v.name.as_str(),
                    v.workspace.as_ref().map(|w| w.source.as_str()),
                )
            }),
        ))
    }

    pub(crate) fn bound(&self) -> Option<String> {
        lock(&self.vm).clone()
    }

    /// Binds to the sandbox: creates and starts the VM, ships the
    /// workspace, starts watching. Idempotent.
    pub(crate) async fn ensure_bound(
        self: &Arc<Self>,
        progress: Option<&Progress>,
    ) -> Result<String, RpcError> {
        if let Some(vm) = self.bound() {
            return Ok(vm);
        }
        let _g = self.bind_lock.lock().await;
        if let Some(vm) = self.bound() {
            return Ok(vm);
        }
        let result = self.bind(progress).await;
        if let Err(e) = &result {
            self.set_status(|s| {
                s.sync = "error".into();
                s.message = Some(e.message.to_string());
            })
            .await;
        }
        result
    }

    pub(crate) async fn bind(
        self: &Arc<Self>,
        progress: Option<&Progress>,
    ) -> Result<String, RpcError> {
        let root = self.root()?;
        let daemon = self.daemon().await?;
        let name = self.vm_name(&daemon, &root).await?;
        self.set_status(|s| s.vm = name.clone()).await;
        let say = |m: String| async move {
            if let Some(p) = progress {
                p.report(&m).await;
            }
        };
        let view = match daemon.vm_show(name.clone()).await {
            Ok(v) => Some(v),
            Err(ClientError::Call(obj)) if obj.code() == code::NOT_FOUND => None,
            Err(e) => return Err(rpc_error(daemon_error(e))),
        };
        let view = match view {
            None => {
                say(format!("creating sandbox {name}")).await;
                self.set_status(|s| s.vm_state = "starting".into()).await;
                let (vcpu, memory_mib, nat, allow, mut image, mut setup, cache, trusted, inputs) = {
                    let s = lock(&self.settings);
                    (
                        s.vcpu,
                        s.memory_mib,
                        s.nat,
                        s.allow.clone(),
                        s.image.clone(),
                        s.setup.clone().map(|command| {
                            let named = (!s.setup_inputs.is_empty()).then_some(&s.setup_inputs[..]);
                            (command, crate::project::setup_inputs(&root, named))
                        }),
                        s.cache.then(|| root.display().to_string()),
                        s.trusted,
                        {
                            let named = (!s.setup_inputs.is_empty()).then_some(&s.setup_inputs[..]);
                            crate::project::setup_inputs(&root, named)
                        },
                    )
                };
                // A Dev Container definition (trusted workspaces only: its
                // commands run), unless settings name the image or setup.
                let mut env = Vec::new();
                if trusted && image.is_none() && setup.is_none() {
                    let local = |k: &str| std::env::var(k).ok();
                    match crate::project::devcontainer(&root, &local) {
                        Ok(Some(dc)) => {
                            if !dc.unsupported.is_empty() {
                                let m = format!(
                                    "{}: banger does not carry out {}; they are ignored",
                                    dc.file,
                                    dc.unsupported.join(", ")
                                );
                                self.client.show_message(MessageType::WARNING, &m).await;
                            }
                            if let Some(reference) = &dc.image {
                                say(format!("pulling {reference}")).await;
                                let sub = daemon
                                    .image_pull(crate::api::ImagePullParams {
                                        reference: reference.clone(),
                                        name: None,
                                    })
                                    .await
                                    .map_err(|e| rpc_error(daemon_error(e)))?;
                                if let OpEvent::Image { image: pulled } =
                                    self.follow_event(sub, progress).await?
                                {
                                    image = Some(pulled.id);
                                }
                            }
                            let command = dc
                                .setup
                                .clone()
                                .or_else(|| (!dc.env.is_empty()).then(|| ":".to_string()));
                            setup = command.map(|c| (c, inputs));
                            env = dc.env;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            self.client.show_message(MessageType::WARNING, &e).await;
                        }
                    }
                }
                // The project's setup (trusted .banger.toml only) makes, once,
                // the image its sandbox boots.
                if let Some((command, inputs)) = setup {
                    say("project setup: looking for its image".into()).await;
                    let params = SetupParams {
                        repo: root.display().to_string(),
                        command,
                        inputs,
                        image: image.clone(),
                        nat,
                        allow: allow.clone(),
                        vcpu,
                        memory_mib,
                        env,
                        cache: cache.is_some(),
                    };
                    let sub = daemon
                        .image_setup(params)
                        .await
                        .map_err(|e| rpc_error(daemon_error(e)))?;
                    match self.follow_event(sub, progress).await? {
                        OpEvent::Image { image: made } => image = Some(made.id),
                        other => return Err(rpc_error(format!("unexpected result {other:?}"))),
                    }
                }
                let params = CreateParams {
                    name: Some(name.clone()),
                    vcpu,
                    memory_mib,
                    nat,
                    allow,
                    image,
                    cache,
                    start: true,
                    delete_on_failure: true,
                    ..CreateParams::default()
                };
                let sub = daemon
                    .vm_create(params)
                    .await
                    .map_err(|e| rpc_error(daemon_error(e)))?;
                self.follow_op(sub, progress).await?
            }
            Some(v) if v.state != "running" => {
                say(format!("starting sandbox {name}")).await;
                self.set_status(|s| s.vm_state = "starting".into()).await;
                let sub = daemon
                    .vm_start(name.clone())
                    .await
                    .map_err(|e| rpc_error(daemon_error(e)))?;
                self.follow_op(sub, progress).await?
            }
            Some(v) => v,
        };
        self.set_status(|s| s.vm_state = view.state.clone()).await;
        let ours = view
            .workspace
            .as_ref()
            .is_some_and(|w| Path::new(&w.source) == root);
        self.set_status(|s| s.sync = "syncing".into()).await;
        if ours {
            say("syncing the workspace".into()).await;
            *lock(&self.vm) = Some(name.clone());
            let r = daemon
                .vm_workspace_sync(SyncParams {
                    vm: name.clone(),
                    paths: None,
                    force: false,
                })
                .await
                .map_err(|e| rpc_error(daemon_error(e)))?;
            self.after_sync(&root, None, Ok(r)).await;
        } else {
            say("shipping the workspace".into()).await;
            let plan = daemon
                .vm_workspace_prepare(PrepareParams {
                    vm: name.clone(),
                    path: root.display().to_string(),
                    ..PrepareParams::default()
                })
                .await
                .map_err(|e| match e {
                    // The VM holds another repository: the daemon never
                    // replaces it unasked (its guest edits would be lost).
                    ClientError::Call(obj) if obj.code() == code::CONFLICT => rpc_error(format!(
                        "{}; or bind this repository to another sandbox (the banger.vm setting)",
                        obj.message()
                    )),
                    other => rpc_error(daemon_error(other)),
                })?;
            *lock(&self.vm) = Some(name.clone());
            // Its tools, as `vm run PATH` installs them: only with a way
            // out; without one the status says what to set.
            let mut note = None;
            if crate::daemon::tooling::declares_tools(plan.files.iter().map(|f| f.path.as_str())) {
                if view.network.mode == "none" {
                    note = Some(
                        "this workspace declares tools for mise; give the sandbox network access (banger.nat or banger.allow) to install them".to_string(),
                    );
                } else {
                    say("installing the workspace's tools with mise".into()).await;
                    daemon
                        .vm_bootstrap(name.clone())
                        .await
                        .map_err(|e| rpc_error(daemon_error(e)))?;
                }
            }
            self.set_status(|s| {
                s.sync = "synced".into();
                s.message = note;
                s.files_sent = plan.files.len() as u64;
            })
            .await;
        }
        self.start_watcher(&root);
        Ok(name)
    }

    pub(crate) async fn follow_op(
        &self,
        sub: jsonrpsee::core::client::Subscription<OpEvent>,
        progress: Option<&Progress>,
    ) -> Result<VmView, RpcError> {
        match self.follow_event(sub, progress).await? {
            OpEvent::Vm { vm } => Ok(*vm),
            other => Err(rpc_error(format!("unexpected result {other:?}"))),
        }
    }

    /// Reports an operation's progress (work-done progress in the editor)
    /// and returns how it ended; a failure is an error.
    pub(crate) async fn follow_event(
        &self,
        mut sub: jsonrpsee::core::client::Subscription<OpEvent>,
        progress: Option<&Progress>,
    ) -> Result<OpEvent, RpcError> {
        while let Some(ev) = sub.next().await {
            match ev.map_err(|e| rpc_error(e.to_string()))? {
                OpEvent::Progress { message } => {
                    if let Some(p) = progress {
                        p.report(&message).await;
                    }
                }
                OpEvent::Failed { message, .. } => return Err(rpc_error(message)),
                done => return Ok(done),
            }
        }
        Err(rpc_error("bangerd closed the operation before it finished"))
    }

    pub(crate) async fn publish(&self, uri: &Uri) {
        let mut all = lock(&self.test_diags).get(uri).cloned().unwrap_or_default();
        if let Some(d) = lock(&self.conflict_diags).get(uri) {
            all.push(d.clone());
        }
        self.client
            .publish_diagnostics(uri.clone(), all, None)
            .await;
    }

    pub(crate) async fn publish_conflicts(&self, root: &Path, conflicts: &BTreeSet<String>) {
        let new: HashMap<Uri, Diagnostic> = conflicts
            .iter()
            .filter_map(|p| Uri::from_file_path(root.join(p)).map(|u| (u, p)))
            .map(|(u, p)| {
                let d = Diagnostic {
                    range: Range::new(Position::new(0, 0), Position::new(0, 0)),
                    severity: Some(DiagnosticSeverity::WARNING),
                    code: Some(NumberOrString::String("guest-conflict".into())),
                    source: Some("banger".into()),
                    message: format!(
                        "{p} changed in the sandbox since the last sync; it was not overwritten. Apply guest changes, or overwrite the guest copy."
                    ),
                    ..Diagnostic::default()
                };
                (u, d)
            })
            .collect();
        let touched: Vec<Uri> = {
            let mut cd = lock(&self.conflict_diags);
            let mut touched: Vec<Uri> = cd.keys().cloned().collect();
            touched.extend(new.keys().cloned());
            *cd = new;
            touched
        };
        for u in touched {
            self.publish(&u).await;
        }
    }

    pub(crate) async fn refresh_guest_changes(&self) -> Result<GuestChanges, String> {
        let vm = self.bound().ok_or(super::NOT_BOUND)?;
        let daemon = self.daemon().await.map_err(|e| e.message.to_string())?;
        let changes = daemon
            .vm_workspace_changes(vm)
            .await
            .map_err(daemon_error)?;
        let n = changes.changes.len();
        *lock(&self.guest_changes) = changes.changes.clone();
        self.set_status(|s| s.guest_changes = n).await;
        Ok(changes)
    }
}
