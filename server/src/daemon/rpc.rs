//! The JSON-RPC face of the daemon: translates [`crate::api`] calls into
//! daemon operations and their results into wire types.

use std::sync::Arc;

use jsonrpsee::core::{SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{PendingSubscriptionSink, SubscriptionSink};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Daemon, OpError, Progress};
use crate::api::{
    BangerApiServer, CreateParams, DaemonInfo, ExecParams, ImageView, OpEvent, VmView, code,
};
use crate::store::VmRecord;

/// The RPC server object.
pub(super) struct Rpc(pub(super) Arc<Daemon>);

pub(super) async fn send<T: Serialize>(sink: &SubscriptionSink, item: &T) -> bool {
    match serde_json::value::to_raw_value(item) {
        Ok(raw) => sink.send(raw).await.is_ok(),
        Err(_) => false,
    }
}

/// Relays a detached operation's events to a subscriber until the operation
/// ends; a subscriber that leaves stops the relay, not the operation.
async fn relay(sink: SubscriptionSink, mut rx: mpsc::UnboundedReceiver<OpEvent>) {
    while let Some(event) = rx.recv().await {
        if !send(&sink, &event).await {
            return;
        }
    }
}

/// Runs a VM operation detached from the request (it finishes even if
/// the subscriber leaves) and relays its progress and outcome.
async fn vm_operation<F, Fut>(sink: SubscriptionSink, daemon: Arc<Daemon>, op: F)
where
    F: FnOnce(Progress) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<VmRecord, OpError>> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let event = match op(Progress::to(tx.clone())).await {
            Ok(vm) => OpEvent::Vm {
                vm: Box::new(daemon.view(&vm)),
            },
            Err(e) => failed(e),
        };
        let _ = tx.send(event);
    });
    relay(sink, rx).await;
}

/// An operation that ends with an image, detached from the request like
/// [`vm_operation`].
async fn image_operation<F, Fut>(pending: PendingSubscriptionSink, op: F) -> SubscriptionResult
where
    F: FnOnce(Progress) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<crate::image::Image, OpError>> + Send + 'static,
{
    let sink = pending.accept().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let event = match op(Progress::to(tx.clone())).await {
            Ok(image) => OpEvent::Image {
                image: Box::new(super::images::image_view(&image)),
            },
            Err(e) => failed(e),
        };
        let _ = tx.send(event);
    });
    relay(sink, rx).await;
    Ok(())
}

/// A long operation on an existing VM: refused before the subscription
/// when there is no such VM, else streamed like [`vm_operation`].
async fn operation_on_vm<F, Fut>(
    daemon: &Arc<Daemon>,
    pending: PendingSubscriptionSink,
    vm: &str,
    op: F,
) -> SubscriptionResult
where
    F: FnOnce(Progress) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<VmRecord, OpError>> + Send + 'static,
{
    if let Err(e) = daemon.find(vm) {
        pending.reject(ErrorObjectOwned::from(e)).await;
        return Ok(());
    }
    let sink = pending.accept().await?;
    vm_operation(sink, daemon.clone(), op).await;
    Ok(())
}

fn failed(e: OpError) -> OpEvent {
    OpEvent::Failed {
        code: e.code,
        message: e.message,
    }
}

impl Daemon {
    pub(crate) fn view(&self, vm: &VmRecord) -> VmView {
        let dir = self.dirs.vm_state(&vm.id);
        let disk_usage_bytes = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| crate::disk::allocated_bytes(&e.path()))
                    .sum()
            })
            .unwrap_or(0);
        VmView {
            id: vm.id.clone(),
            name: vm.name.clone(),
            state: vm.state.to_string(),
            vcpu: vm.spec.vcpu,
            memory_mib: vm.spec.memory_mib,
            disk_bytes: vm.spec.disk_bytes,
            system_overlay_bytes: vm.spec.overlay_bytes,
            image: vm.image_name.clone(),
            image_id: vm.image_id.clone(),
            vmm: vm.vmm.clone(),
            vmm_reason: vm.vmm_reason.clone(),
            kernel: vm.kernel.clone(),
            workspace: vm.workspace.clone(),
            accel: vm.accel.as_ref().map(|a| match &vm.accel_reason {
                Some(reason) => format!("{a} ({reason})"),
                None => a.clone(),
            }),
            root: self.root.name().to_string(),
            pid: vm.pid,
            boot_id: vm.boot_id.clone(),
            restored_from: vm
                .state
                .may_have_process()
                .then(|| super::snapshot::restored_from(&self.dirs.vm_runtime(&vm.id)))
                .flatten(),
            last_error: vm.last_error.clone(),
            disk_usage_bytes,
            console_log: dir.join("console.log").display().to_string(),
            daemon_log: self.dirs.daemon_log().display().to_string(),
            cache: vm.cache.clone(),
            network: {
                let running = crate::net::NetworkRecord::load(&self.dirs.vm_runtime(&vm.id))
                    .filter(|_| vm.state.may_have_process());
                crate::api::NetworkView {
                    mode: vm.egress().mode().to_string(),
                    allow: vm.allow.iter().map(|a| a.to_string()).collect(),
                    refused: Vec::new(),
                    guest_address: running
                        .as_ref()
                        .map(|r| format!("{}/{}", r.guest.address, r.guest.prefix)),
                    gateway: running.as_ref().map(|r| r.guest.gateway.to_string()),
                    log: dir.join(crate::net::LOG_FILE).display().to_string(),
                    host_address: vm.loopback.map(|a| a.to_string()),
                    published: vm.published.iter().map(|p| p.to_string()).collect(),
                    forwarded: self
                        .reach(&vm.id)
                        .into_iter()
                        .flat_map(|(port, at)| {
                            at.into_iter()
                                .filter_map(Result::ok)
                                .map(move |a| format!("{a} -> {port}"))
                        })
                        .collect(),
                }
            },
            created_at: vm.created_at,
        }
    }
}

fn kernel_view(k: &crate::kernel::KernelEntry) -> crate::api::KernelView {
    crate::api::KernelView {
        name: k.name.clone(),
        id: k.id.clone(),
        format: match k.format {
            crate::kernel::KernelFormat::Elf => "elf".into(),
            crate::kernel::KernelFormat::BzImage => "bz_image".into(),
        },
        pvm: k.pvm,
        source: k.source.clone(),
        path: k.path.display().to_string(),
        firecracker: k.vmlinux.is_some(),
    }
}

fn kernel_error(e: crate::kernel::KernelError) -> ErrorObjectOwned {
    use crate::kernel::KernelError;
    let code = match &e {
        KernelError::Format(_) | KernelError::Name(_) | KernelError::Checksum { .. } => {
            code::INVALID
        }
        _ => code::INTERNAL,
    };
    crate::api::error(code, OpError::from_display(e).message)
}

#[async_trait]
impl BangerApiServer for Rpc {
    async fn daemon_info(&self) -> Result<DaemonInfo, ErrorObjectOwned> {
        let d = &self.0;
        Ok(DaemonInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            socket: d.dirs.socket().display().to_string(),
            schema_version: d.with_store(|s| s.schema_version())?,
            accel: format!("{} ({})", d.accel.accel.as_str(), d.accel.reason),
            build_id: crate::api::BUILD_ID.to_string(),
            api_version: crate::api::api_version(),
            // This request is one of them.
            busy: d
                .in_flight
                .load(std::sync::atomic::Ordering::SeqCst)
                .saturating_sub(1),
            vmm: {
                let c = d.vmm_choice(None, false).map_err(ErrorObjectOwned::from)?;
                format!("{} ({})", c.vmm, c.reason)
            },
        })
    }

    async fn daemon_stop(&self, force: Option<bool>) -> Result<(), ErrorObjectOwned> {
        let busy = self
            .0
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            .saturating_sub(1);
        if busy > 0 && force != Some(true) {
            return Err(crate::api::error(
                code::CONFLICT,
                format!(
                    "bangerd is serving {busy} other request{} (commands or operations running); stop it when they end, or now with: banger daemon stop --force (their commands are killed, and their --rm vms removed when it next starts)",
                    if busy == 1 { "" } else { "s" }
                ),
            ));
        }
        // Let this reply reach the caller before the server stops.
        let daemon = self.0.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            daemon.shutdown.notify_one();
        });
        Ok(())
    }

    async fn lease_hold(
        &self,
        pending: PendingSubscriptionSink,
        lease: String,
    ) -> SubscriptionResult {
        if lease.is_empty() || lease.len() > 128 {
            pending
                .reject(crate::api::error(
                    code::INVALID,
                    "a lease is 1 to 128 characters",
                ))
                .await;
            return Ok(());
        }
        // Whatever happens to this request, the lease ends with it.
        let _held = match super::LeaseGuard::take(&self.0, lease) {
            Ok(held) => held,
            Err(e) => {
                pending.reject(ErrorObjectOwned::from(e)).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        if send(&sink, &crate::api::LeaseEvent::Held).await {
            sink.closed().await;
        }
        Ok(())
    }

    async fn lease_release(&self, lease: String, vm: String) -> Result<(), ErrorObjectOwned> {
        let d = &self.0;
        let record = d.find(&vm)?;
        match d.with_store(|s| s.lease_of(&record.id))? {
            Some(held) if held == lease => {
                d.with_store(|s| s.clear_lease(&record.id))?;
                Ok(())
            }
            _ => Err(crate::api::error(
                code::CONFLICT,
                format!("vm {:?} is not bound to that lease", record.name),
            )),
        }
    }

    async fn vm_list(&self, all: bool) -> Result<Vec<VmView>, ErrorObjectOwned> {
        let d = &self.0;
        let mut out = Vec::new();
        for vm in d.with_store(|s| s.list_vms())? {
            let vm = d.refresh(vm)?;
            if all || vm.state.may_have_process() {
                out.push(d.view(&vm));
            }
        }
        Ok(out)
    }

    async fn vm_show(&self, vm: String) -> Result<VmView, ErrorObjectOwned> {
        let d = &self.0;
        let vm = d.refresh(d.find(&vm)?)?;
        let mut view = d.view(&vm);
        // What its rules refused lately, from the keeper of a running VM.
        if vm.state == crate::store::VmState::Running {
            let dir = d.dirs.vm_runtime(&vm.id);
            if let Ok(status) =
                super::offload(|| crate::net::control(&dir, &crate::net::Control::Status))
            {
                view.network.refused = status.refusals;
            }
        }
        Ok(view)
    }

    async fn vm_create(
        &self,
        pending: PendingSubscriptionSink,
        params: CreateParams,
    ) -> SubscriptionResult {
        // Bad input is refused before anything exists.
        if let Err(e) = self.0.validate_create(&params) {
            pending.reject(ErrorObjectOwned::from(e)).await;
            return Ok(());
        }
        let sink = pending.accept().await?;
        let daemon = self.0.clone();
        vm_operation(sink, daemon.clone(), move |progress| async move {
            daemon.create_vm(params, &progress).await
        })
        .await;
        Ok(())
    }

    async fn vm_start(&self, pending: PendingSubscriptionSink, vm: String) -> SubscriptionResult {
        let daemon = self.0.clone();
        operation_on_vm(&self.0, pending, &vm.clone(), move |progress| async move {
            daemon.start_vm(&vm, &progress).await
        })
        .await
    }

    async fn vm_stop(&self, vm: String) -> Result<VmView, ErrorObjectOwned> {
        let daemon = self.0.clone();
        // Detached: a client that gives up does not leave a half-stopped VM.
        let stopped = tokio::spawn(async move { daemon.stop_vm(&vm).await })
            .await
            .map_err(|e| OpError::internal(format!("stop task failed: {e}")))??;
        Ok(self.0.view(&stopped))
    }

    async fn vm_delete(&self, vm: String) -> Result<(), ErrorObjectOwned> {
        let daemon = self.0.clone();
        tokio::spawn(async move { daemon.delete_vm(&vm).await })
            .await
            .map_err(|e| OpError::internal(format!("delete task failed: {e}")))??;
        Ok(())
    }

    async fn vm_restart(&self, pending: PendingSubscriptionSink, vm: String) -> SubscriptionResult {
        let daemon = self.0.clone();
        operation_on_vm(&self.0, pending, &vm.clone(), move |progress| async move {
            daemon.restart_vm(&vm, &progress).await
        })
        .await
    }

    async fn vm_kill(&self, vm: String, signal: i32) -> Result<VmView, ErrorObjectOwned> {
        let daemon = self.0.clone();
        // Detached: the VM ends stopped even if the client leaves.
        let killed = tokio::spawn(async move { daemon.kill_vm(&vm, signal).await })
            .await
            .map_err(|e| OpError::internal(format!("kill task failed: {e}")))??;
        Ok(self.0.view(&killed))
    }

    async fn vm_prune(&self, vms: Vec<String>) -> Result<Vec<String>, ErrorObjectOwned> {
        let daemon = self.0.clone();
        Ok(tokio::spawn(async move { daemon.prune_vms(&vms).await })
            .await
            .map_err(|e| OpError::internal(format!("prune task failed: {e}")))??)
    }

    async fn vm_set(&self, params: crate::api::SetParams) -> Result<VmView, ErrorObjectOwned> {
        let vm = self.0.set_vm(&params).await?;
        Ok(self.0.view(&vm))
    }

    async fn vm_logs(
        &self,
        vm: String,
        console_from: u64,
        daemon_from: u64,
        network_from: Option<u64>,
    ) -> Result<crate::api::VmLogs, ErrorObjectOwned> {
        let daemon = self.0.clone();
        let network_from = network_from.unwrap_or(0);
        Ok(tokio::task::spawn_blocking(move || {
            daemon.vm_logs(&vm, console_from, daemon_from, network_from)
        })
        .await
        .map_err(|e| OpError::internal(format!("logs task failed: {e}")))??)
    }

    async fn vm_bootstrap(&self, vm: String) -> Result<String, ErrorObjectOwned> {
        Ok(self.0.bootstrap_tools(&vm).await?)
    }

    async fn vm_ssh_prepare(&self, vm: String) -> Result<crate::api::SshInfo, ErrorObjectOwned> {
        Ok(self.0.ssh_prepare(&vm).await?)
    }

    async fn vm_ports(&self, vm: String) -> Result<Vec<crate::api::PortView>, ErrorObjectOwned> {
        Ok(self.0.vm_ports(&vm).await?)
    }

    async fn vm_stats(&self, vm: String) -> Result<crate::api::VmStats, ErrorObjectOwned> {
        let daemon = self.0.clone();
        Ok(tokio::task::spawn_blocking(move || daemon.vm_stats(&vm))
            .await
            .map_err(|e| OpError::internal(format!("stats task failed: {e}")))??)
    }

    async fn vm_exec(
        &self,
        pending: PendingSubscriptionSink,
        params: ExecParams,
    ) -> SubscriptionResult {
        super::exec::vm_exec(self.0.clone(), pending, params).await
    }

    async fn exec_input(
        &self,
        exec_id: u64,
        data: Option<String>,
        eof: bool,
    ) -> Result<(), ErrorObjectOwned> {
        Ok(self.0.execs.input(exec_id, data, eof).await?)
    }

    async fn exec_ack(&self, exec_id: u64, bytes: u64) -> Result<(), ErrorObjectOwned> {
        Ok(self.0.execs.ack(exec_id, bytes)?)
    }

    async fn exec_resize(
        &self,
        exec_id: u64,
        size: crate::api::Terminal,
    ) -> Result<(), ErrorObjectOwned> {
        Ok(self.0.execs.resize(exec_id, size)?)
    }

    async fn exec_signal(&self, exec_id: u64, signal: i32) -> Result<(), ErrorObjectOwned> {
        Ok(self.0.execs.signal(exec_id, signal)?)
    }

    async fn image_build(
        &self,
        pending: PendingSubscriptionSink,
        params: crate::api::ImageBuildParams,
    ) -> SubscriptionResult {
        // Bad options are refused before anything starts.
        let plan = match super::images::plan_build(params) {
            Ok(plan) => plan,
            Err(e) => {
                pending.reject(ErrorObjectOwned::from(e)).await;
                return Ok(());
            }
        };
        let daemon = self.0.clone();
        image_operation(pending, move |progress| async move {
            daemon.run_build(plan, &progress).await
        })
        .await
    }

    async fn image_pull(
        &self,
        pending: PendingSubscriptionSink,
        params: crate::api::ImagePullParams,
    ) -> SubscriptionResult {
        if let Some(name) = &params.name
            && let Err(e) = crate::image::validate_name(name)
        {
            pending
                .reject(crate::api::error(code::INVALID, e.to_string()))
                .await;
            return Ok(());
        }
        let daemon = self.0.clone();
        image_operation(pending, move |progress| async move {
            daemon.pull_image(params, &progress).await
        })
        .await
    }

    async fn image_import(
        &self,
        pending: PendingSubscriptionSink,
        params: crate::api::ImageImportParams,
    ) -> SubscriptionResult {
        if let Err(e) = super::images::check_import(&params) {
            pending.reject(ErrorObjectOwned::from(e)).await;
            return Ok(());
        }
        let daemon = self.0.clone();
        image_operation(pending, move |progress| async move {
            daemon.import_image(params, &progress).await
        })
        .await
    }

    async fn image_setup(
        &self,
        pending: PendingSubscriptionSink,
        params: crate::api::SetupParams,
    ) -> SubscriptionResult {
        if let Err(e) = super::images::check_setup(&params) {
            pending.reject(ErrorObjectOwned::from(e)).await;
            return Ok(());
        }
        let daemon = self.0.clone();
        image_operation(pending, move |progress| async move {
            daemon.setup_image(params, &progress).await
        })
        .await
    }

    async fn workspace_plan(
        &self,
        path: String,
        include_untracked: bool,
        branch: Option<String>,
        from: Option<String>,
    ) -> Result<crate::api::WorkspacePlan, ErrorObjectOwned> {
        if from.is_some() && branch.is_none() {
            return Err(crate::api::error(
                code::INVALID,
                "--from needs --branch NAME",
            ));
        }
        let branch = branch.map(|name| crate::workspace::transfer::NewBranch { name, from });
        Ok(self
            .0
            .workspace_plan(path, include_untracked, branch)
            .await?)
    }

    async fn vm_workspace_prepare(
        &self,
        params: crate::api::PrepareParams,
    ) -> Result<crate::api::WorkspacePlan, ErrorObjectOwned> {
        let daemon = self.0.clone();
        if params.from.is_some() && params.branch.is_none() {
            return Err(crate::api::error(
                code::INVALID,
                "--from needs --branch NAME",
            ));
        }
        let full_copy = match params.mode.as_deref() {
            None | Some("stream") => false,
            Some("full_copy") => true,
            Some(other) => {
                return Err(crate::api::error(
                    code::INVALID,
                    format!("invalid --mode {other:?}: use stream or full_copy"),
                ));
            }
        };
        let branch = params
            .branch
            .map(|name| crate::workspace::transfer::NewBranch {
                name,
                from: params.from,
            });
        let (vm, path, untracked, replace) = (
            params.vm,
            params.path,
            params.include_untracked,
            params.replace,
        );
        // Detached: a client that leaves mid-transfer does not leave the
        // record half-written.
        let plan = tokio::spawn(async move {
            if full_copy {
                daemon
                    .prepare_workspace_full_copy(&vm, path, untracked, branch)
                    .await
            } else {
                daemon
                    .prepare_workspace(&vm, path, untracked, branch, replace)
                    .await
            }
        })
        .await
        .map_err(|e| OpError::internal(format!("prepare task failed: {e}")))??;
        Ok(plan)
    }

    async fn vm_workspace_export(
        &self,
        vm: String,
        base_commit: Option<String>,
        apply: bool,
        force: bool,
    ) -> Result<crate::api::ExportResult, ErrorObjectOwned> {
        let daemon = self.0.clone();
        Ok(tokio::spawn(async move {
            daemon
                .export_workspace(&vm, base_commit, apply, force)
                .await
        })
        .await
        .map_err(|e| OpError::internal(format!("export task failed: {e}")))??)
    }

    async fn vm_workspace_sync(
        &self,
        params: crate::api::SyncParams,
    ) -> Result<crate::api::SyncResult, ErrorObjectOwned> {
        let daemon = self.0.clone();
        // Detached: a sync half done (guest written, manifest not) must
        // not be cut short by a client that goes away.
        Ok(tokio::spawn(async move {
            daemon
                .sync_workspace(&params.vm, params.paths, params.force)
                .await
        })
        .await
        .map_err(|e| OpError::internal(format!("sync task failed: {e}")))??)
    }

    async fn vm_workspace_changes(
        &self,
        vm: String,
    ) -> Result<crate::api::GuestChanges, ErrorObjectOwned> {
        Ok(self.0.guest_changes(&vm).await?)
    }

    async fn vm_workspace_fetch(
        &self,
        vm: String,
        paths: Vec<String>,
    ) -> Result<Vec<crate::api::FetchedFile>, ErrorObjectOwned> {
        Ok(self.0.fetch_guest_files(&vm, paths).await?)
    }

    async fn vm_workspace_accept(
        &self,
        vm: String,
        files: Vec<crate::api::AcceptEntry>,
    ) -> Result<Vec<String>, ErrorObjectOwned> {
        let daemon = self.0.clone();
        Ok(
            tokio::spawn(async move { daemon.accept_guest_files(&vm, files).await })
                .await
                .map_err(|e| OpError::internal(format!("accept task failed: {e}")))??,
        )
    }

    async fn kernel_list(&self) -> Result<Vec<crate::api::KernelView>, ErrorObjectOwned> {
        let d = &self.0;
        let mut out: Vec<crate::api::KernelView> = d
            .kernels()
            .list()
            .map_err(kernel_error)?
            .iter()
            .map(kernel_view)
            .collect();
        for image in d.images.list().map_err(OpError::from_display)? {
            out.push(crate::api::KernelView {
                name: format!("image:{}", image.name),
                id: image.id.clone(),
                format: "bz_image".into(),
                pvm: false,
                source: format!(
                    "{} {} ({})",
                    image.manifest.kernel_package.name,
                    image.manifest.kernel_package.version,
                    &image.id[..12]
                ),
                path: image.kernel().display().to_string(),
                firecracker: image.vmlinux().exists(),
            });
        }
        Ok(out)
    }

    async fn kernel_import(
        &self,
        path: String,
        name: Option<String>,
        pvm: bool,
    ) -> Result<crate::api::KernelView, ErrorObjectOwned> {
        let store = self.0.kernels();
        let entry = tokio::task::spawn_blocking(move || {
            let abs = std::path::absolute(&path).unwrap_or_else(|_| path.clone().into());
            store.import(
                &abs,
                name.as_deref(),
                pvm,
                format!("import:{}", abs.display()),
            )
        })
        .await
        .map_err(|e| OpError::internal(format!("import task failed: {e}")))?
        .map_err(kernel_error)?;
        Ok(kernel_view(&entry))
    }

    async fn kernel_pull(
        &self,
        url: String,
        sha256: String,
        name: Option<String>,
        pvm: bool,
    ) -> Result<crate::api::KernelView, ErrorObjectOwned> {
        let store = self.0.kernels();
        let entry =
            tokio::task::spawn_blocking(move || store.pull(&url, &sha256, name.as_deref(), pvm))
                .await
                .map_err(|e| OpError::internal(format!("pull task failed: {e}")))?
                .map_err(kernel_error)?;
        Ok(kernel_view(&entry))
    }

    async fn kernel_delete(&self, kernel: String) -> Result<(), ErrorObjectOwned> {
        let d = &self.0;
        let _alone = d.catalog.write().await;
        let entry = d.find_kernel(&kernel)?;
        let users: Vec<String> = d
            .with_store(|s| s.list_vms())?
            .into_iter()
            .filter(|vm| vm.kernel_id.as_deref() == Some(entry.id.as_str()))
            .map(|vm| vm.name)
            .collect();
        if !users.is_empty() {
            return Err(crate::api::error(
                code::CONFLICT,
                format!(
                    "kernel {} is used by vm {}; delete those vms first",
                    entry.name,
                    users.join(", ")
                ),
            ));
        }
        super::offload(|| d.kernels().delete(&entry.id)).map_err(kernel_error)?;
        Ok(())
    }

    async fn image_list(&self) -> Result<Vec<ImageView>, ErrorObjectOwned> {
        let images = self.0.images.list().map_err(OpError::from_display)?;
        Ok(images.iter().map(super::images::image_view).collect())
    }

    async fn image_show(&self, image: String) -> Result<ImageView, ErrorObjectOwned> {
        match self.0.images.find(&image).map_err(OpError::from_display)? {
            Some(img) => Ok(super::images::image_view(&img)),
            None => Err(crate::api::error(
                code::NOT_FOUND,
                format!("no image named {image:?}; list them with: banger image list"),
            )),
        }
    }

    async fn cache_list(&self) -> Result<Vec<crate::api::CacheView>, ErrorObjectOwned> {
        Ok(self.0.cache_views()?)
    }

    async fn cache_clear(&self, name: String) -> Result<(), ErrorObjectOwned> {
        Ok(self.0.clear_cache(&name).await?)
    }

    async fn vm_snapshot(
        &self,
        vm: String,
        tag: Option<String>,
    ) -> Result<crate::api::SnapshotView, ErrorObjectOwned> {
        let daemon = self.0.clone();
        // Detached: a client that gives up does not leave a paused VM.
        Ok(
            tokio::spawn(async move { daemon.snapshot_vm(&vm, tag.as_deref()).await })
                .await
                .map_err(|e| OpError::internal(format!("snapshot task failed: {e}")))??,
        )
    }

    async fn snapshot_list(&self) -> Result<Vec<crate::api::SnapshotView>, ErrorObjectOwned> {
        Ok(super::offload(|| self.0.user_snapshot_views()))
    }

    async fn snapshot_delete(&self, snapshot: String) -> Result<(), ErrorObjectOwned> {
        Ok(self.0.delete_user_snapshot(&snapshot).await?)
    }

    async fn system_prune(
        &self,
        apply: bool,
        only: Option<Vec<String>>,
    ) -> Result<Vec<crate::api::PruneItem>, ErrorObjectOwned> {
        let daemon = self.0.clone();
        // Detached: a client that gives up does not stop a removal halfway.
        Ok(
            tokio::spawn(async move { daemon.system_prune(apply, only).await })
                .await
                .map_err(|e| OpError::internal(format!("prune task failed: {e}")))??,
        )
    }

    async fn image_delete(&self, image: String) -> Result<(), ErrorObjectOwned> {
        Ok(self.0.delete_image(&image).await?)
    }
}
