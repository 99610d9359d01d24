//! VM lifecycle: create, start, stop, delete, exec, and reconciling records
//! with live processes. Every path that creates something undoes it on
//! failure.

use std::sync::Arc;
use std::time::Duration;

use banger_agent::client::{AgentClient, AgentError, ExecSession};
use banger_agent::protocol::ExecSpec;

use super::boot::connect_endpoint;
use super::{Daemon, OpError, Progress};
use crate::api::{CreateParams, code};
use crate::disk::WorkDisk;
use crate::process::ProcessIdentity;
use crate::spec::{self, VmSpec};
use crate::store::{VmLookup, VmRecord, VmState, now};

/// How long a stop waits for the guest to flush before ending the VMM.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides the state a stored VM is really in, given whether its process
/// lives (pure; the daemon applies it at start-up and before each use).
///
/// A VM whose process is gone is stopped, never running. While the daemon
/// runs, `starting` and `stopping` belong to an operation in flight and
/// stay; at daemon start-up no operation survived, so a live process means
/// the VM runs (the agent connection proves it on first use).
pub(crate) fn reconciled_state(state: VmState, process_alive: bool, at_startup: bool) -> VmState {
    match (state, process_alive) {
        (s, false) if s.may_have_process() => VmState::Stopped,
        (VmState::Starting | VmState::Stopping, true) if at_startup => VmState::Running,
        (s, _) => s,
    }
}

/// Random hex from the kernel; a random source that fails is an error,
/// never zeros (ids and names would collide).
pub(super) fn random_hex(bytes: usize) -> Result<String, OpError> {
    crate::spec::random_hex(bytes)
        .map_err(|e| OpError::internal(format!("cannot read random bytes: {e}")))
}

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "deft", "eager", "fair", "glad", "hazy", "keen", "lucid", "mellow",
    "nimble", "quiet", "rapid", "sunny", "tidy", "vivid", "witty",
];
const NOUNS: &[&str] = &[
    "badger", "comet", "delta", "falcon", "gecko", "harbor", "island", "lagoon", "meadow", "otter",
    "pebble", "quartz", "river", "spruce", "tundra", "walrus",
];

fn generated_name() -> Result<String, OpError> {
    let r = random_hex(4)?;
    let n = u32::from_str_radix(&r, 16).unwrap_or(0) as usize;
    Ok(format!(
        "{}-{}-{}",
        ADJECTIVES[n % ADJECTIVES.len()],
        NOUNS[(n / ADJECTIVES.len()) % NOUNS.len()],
        &r[..4]
    ))
}

impl Daemon {
    /// Checks create parameters, with the defaults of `config.toml`
    /// `[vm_defaults]` where the request gives none; nothing exists yet
    /// when this fails.
    pub(crate) fn validate_create(&self, params: &CreateParams) -> Result<CreatePlan, OpError> {
        let name = match &params.name {
            Some(name) => {
                spec::validate_name(name)
                    .map_err(|e| OpError::new(code::INVALID, e.to_string()))?;
                name.clone()
            }
            None => generated_name()?,
        };
        let config =
            crate::config::Config::load(&self.dirs).map_err(|e| OpError::new(code::INVALID, e))?;
        // A fork of a snapshot of a running VM has that VM's image, kernel,
        // VMM and size.
        let from = match &params.from {
            None => None,
            Some(reference) => {
                let shaped = params.vcpu.is_some()
                    || params.memory_mib.is_some()
                    || params.disk_bytes.is_some()
                    || params.system_overlay_bytes.is_some()
                    || params.image.is_some()
                    || params.kernel.is_some();
                if !params.start {
                    return Err(OpError::new(
                        code::INVALID,
                        "a vm made --from-snapshot starts from it: drop --no-start",
                    ));
                }
                if shaped {
                    return Err(OpError::new(
                        code::INVALID,
                        "a vm started --from-snapshot has the snapshot's image, kernel and size: drop --image, --kernel, --vcpu, --memory, --disk-size and --system-overlay-size",
                    ));
                }
                let (meta, _) = self
                    .find_user_snapshot(reference)
                    .map_err(|e| OpError::new(code::INVALID, e.message))?;
                if let Some(vmm) = &params.vmm
                    && vmm != "auto"
                    && *vmm != meta.vmm
                {
                    return Err(OpError::new(
                        code::INVALID,
                        format!(
                            "snapshot {}:{} is of a {} vm; drop --vmm {vmm}",
                            meta.name, meta.tag, meta.vmm
                        ),
                    ));
                }
                Some(meta)
            }
        };
        let flags = match &from {
            None => crate::config::Flags {
                vcpu: params.vcpu,
                memory_mib: params.memory_mib,
                disk_bytes: params.disk_bytes,
                system_overlay_bytes: params.system_overlay_bytes,
                vmm: params.vmm.clone(),
                kernel: params.kernel.clone(),
                image: params.image.clone(),
                snapshots: params.no_snapshot.then_some(false),
            },
            Some(meta) => crate::config::Flags {
                vcpu: Some(meta.spec.vcpu),
                memory_mib: Some(meta.spec.memory_mib),
                disk_bytes: Some(meta.spec.disk_bytes),
                system_overlay_bytes: Some(meta.spec.overlay_bytes),
                vmm: Some(meta.vmm.clone()),
                kernel: meta.kernel_id.clone(),
                image: Some(meta.image_id.clone()),
                snapshots: Some(false),
            },
        };
        let effective = crate::config::resolve(&config, std::env::var("BANGER_VMM").ok(), &flags)
            .map_err(|e| {
            OpError::new(
                code::INVALID,
                format!("{}: {e}", self.dirs.config_file().display()),
            )
        })?;
        let spec = VmSpec {
            vcpu: effective.vcpu.value,
            memory_mib: effective.memory_mib.value,
            disk_bytes: effective.disk_bytes.value,
            overlay_bytes: effective.system_overlay_bytes.value,
        };
        spec.validate()
            .map_err(|e| OpError::new(code::INVALID, e.to_string()))?;
        if let Some(lease) = &params.lease
            && !super::lock(&self.leases).contains(lease)
        {
            return Err(OpError::new(
                code::INVALID,
                format!("lease {lease:?} is not held; hold it first (lease_hold)"),
            ));
        }
        fits_the_host(&spec)?;
        let allow = params
            .allow
            .iter()
            .map(|a| a.parse::<crate::net::egress::AllowRule>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| OpError::new(code::INVALID, e))?;
        let published = params
            .publish
            .iter()
            .map(|p| p.parse::<crate::net::PortMapping>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| OpError::new(code::INVALID, e))?;
        if self.with_store(|s| s.find_vm(&name))?.is_some() {
            return Err(OpError::new(
                code::INVALID,
                format!(
                    "a vm named {name:?} already exists; pick another name or delete it with: banger vm delete {name}"
                ),
            ));
        }
        let kernel = effective
            .kernel
            .value
            .as_deref()
            .map(|k| self.find_kernel(k))
            .transpose()
            .map_err(|e| OpError::new(code::INVALID, e.message))?;
        let choice = self.vmm_choice(
            Some(&effective.vmm.value),
            kernel.as_ref().is_some_and(|k| k.pvm),
        )?;
        if let Some(k) = &kernel
            && choice.vmm == crate::vmm::firecracker::NAME
            && k.vmlinux.is_none()
        {
            return Err(OpError::new(
                code::INVALID,
                format!(
                    "kernel {} is a bzImage banger cannot decompress, and firecracker boots only an ELF vmlinux; import the vmlinux, or use --vmm qemu",
                    k.name
                ),
            ));
        }
        Ok(CreatePlan {
            name,
            spec,
            choice,
            kernel,
            published,
            allow,
            image: effective.image.value,
            snapshots: effective.snapshots.value,
            from,
        })
    }

    /// Creates a VM (validated by `validate_create`), building the image if
    /// it is missing, and starts it when asked.
    pub(crate) async fn create_vm(
        self: &Arc<Self>,
        params: CreateParams,
        progress: &Progress,
    ) -> Result<VmRecord, OpError> {
        // No image or kernel delete from here until the row names them.
        let catalog = self.catalog.read().await;
        let CreatePlan {
            name,
            spec,
            choice,
            kernel,
            published,
            allow,
            image,
            snapshots,
            from,
        } = self.validate_create(&params)?;
        progress.say(&format!("vmm: {} ({})", choice.vmm, choice.reason));
        let image = self.ensure_image(image.as_deref(), progress).await?;
        let ts = now();
        let mut record = VmRecord {
            id: random_hex(6)?,
            name,
            state: VmState::Stopped,
            spec,
            image_id: image.id.clone(),
            image_name: image.name.clone(),
            vmm: choice.vmm.to_string(),
            vmm_reason: Some(choice.reason.clone()),
            kernel: None,
            // A fork keeps the workspace its snapshot's VM had.
            workspace: from.as_ref().and_then(|m| m.workspace.clone()),
            kernel_id: kernel.map(|k| k.id),
            accel: None,
            accel_reason: None,
            pid: None,
            pid_start_time: None,
            boot_id: None,
            last_error: None,
            // --allow implies a way out (through the rules).
            nat: params.nat || !allow.is_empty(),
            loopback: None,
            published,
            allow,
            tooling: from.as_ref().and_then(|m| m.tooling.clone()),
            cache: params
                .cache
                .as_deref()
                .map(|repo| crate::cache::name_for(std::path::Path::new(repo))),
            created_at: ts,
            updated_at: ts,
        };
        progress.say("creating disks");
        // From its row on, nobody else may start, edit or delete it until it
        // is made (and booted, when asked): a delete meanwhile (a lease that
        // ended, a user) waits here, and cancels the boot, instead of
        // removing a VM this create goes on to build and launch.
        let lock = self.vm_lock(&record.id);
        let guard = lock.lock().await;
        // The loopback address is chosen and the row inserted under one
        // store lock, so two creates never take the same one.
        self.with_store(|s| {
            let taken = s.loopbacks()?;
            record.loopback = crate::net::ports::allocate_loopback(&taken);
            s.insert_vm(&record)?;
            // A fork's workspace and tools, as its snapshot's VM had them.
            if record.workspace.is_some() {
                s.set_workspace(&record.id, record.workspace.as_ref())?;
            }
            if let Some(tooling) = &record.tooling {
                s.set_tooling(&record.id, Some(tooling))?;
            }
            s.set_cache(&record.id, record.cache.as_deref())
        })?;
        if let Some(lease) = &params.lease
            && let Err(e) = self.with_store(|s| s.set_lease(&record.id, lease))
        {
            let _ = self.with_store(|s| s.delete_vm(&record.id));
            return Err(e);
        }
        // Debug builds: a test holds a create here, its row made and its
        // image chosen, before its disks and boot, to show that neither an
        // image delete nor a VM delete can slip in.
        if cfg!(debug_assertions)
            && let Some(ms) = std::env::var("BANGER_TEST_CREATE_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        drop(catalog);
        tracing::info!(vm = %record.name, id = %record.id, "created");
        let dir = self.dirs.vm_state(&record.id);
        let made = {
            let (dir, root, spec) = (dir.clone(), self.root.clone(), record.spec);
            // mkfs and debugfs block: keep them off the async workers.
            tokio::task::spawn_blocking(move || -> Result<(), OpError> {
                crate::paths::Dirs::ensure_private(&dir).map_err(|e| {
                    OpError::internal(format!("cannot create {}: {e}", dir.display()))
                })?;
                root.create(&dir, spec.overlay_bytes)
                    .map_err(OpError::from_display)?;
                WorkDisk::create(&dir, spec.disk_bytes).map_err(OpError::from_display)
            })
            .await
            .unwrap_or_else(|e| Err(OpError::internal(format!("disk task failed: {e}"))))
        };
        if let Err(e) = made {
            // Leave nothing behind: no files, no row.
            let _ = std::fs::remove_dir_all(&dir);
            let _ = self.with_store(|s| s.delete_vm(&record.id));
            return Err(e);
        }
        // The project's cache outlives the VM (it is the point), so it is
        // not "what the create made": made here once, kept on failure.
        if let (Some(repo), Some(name)) = (&params.cache, &record.cache) {
            let root = self.dirs.project_caches();
            if let Err(e) = tokio::task::block_in_place(|| crate::cache::ensure(&root, name, repo))
            {
                progress.say(&format!("no dependency cache for this vm: {e}"));
            }
        }
        if params.start {
            let id = record.id.clone();
            let boot = match &from {
                Some(meta) => {
                    super::boot::Boot::FromUserSnapshot(format!("{}:{}", meta.name, meta.tag))
                }
                None if snapshots => super::boot::Boot::FromSnapshot,
                None => super::boot::Boot::Cold,
            };
            let started = self.start_vm_locked(record, boot, progress).await;
            drop(guard);
            if let Err(mut failure) = started {
                tracing::error!(vm = %id, "create failed: {}", failure.message);
                // A create that fails removes what it made.
                {
                    progress.say("removing the vm that failed to start");
                    if let Err(e) = self.delete_vm(&id).await {
                        tracing::warn!("cleanup after a failed start: {}", e.message);
                    }
                    // Its console log went with it: don't point at it.
                    let console = self.dirs.vm_state(&id).join("console.log");
                    failure.message = failure
                        .message
                        .replace(&format!("; console log: {}", console.display()), "");
                    failure
                        .message
                        .push_str("\n(the vm that failed to start was removed; the console lines above are the end of its log)");
                }
                return Err(failure);
            }
            return started;
        }
        Ok(record)
    }

    /// Stops a VM: flush through the agent, then end the VMM without
    /// waiting for a slow guest shutdown (Ctrl-Alt-Del would reboot a Debian
    /// guest anyway).
    pub(crate) async fn stop_vm(self: &Arc<Self>, name_or_id: &str) -> Result<VmRecord, OpError> {
        let vm = self.find(name_or_id)?;
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        let mut vm = self.refresh(self.find(name_or_id)?)?;
        if vm.state != VmState::Running {
            return Err(not_running(&vm));
        }
        self.stop_locked(&mut vm).await?;
        Ok(vm)
    }

    /// Stops a running VM whose lock the caller holds: the guest flushes
    /// through its agent, then the VMM ends.
    pub(super) async fn stop_locked(&self, vm: &mut VmRecord) -> Result<(), OpError> {
        vm.state = VmState::Stopping;
        self.with_store(|s| s.update_vm(vm))?;
        self.flush_guest(vm).await;
        self.end_process(vm).await?;
        vm.state = VmState::Stopped;
        self.with_store(|s| s.update_vm(vm))?;
        tracing::info!(vm = %vm.name, "stopped");
        Ok(())
    }

    /// Kills the VMM (if any) and removes runtime files. A VMM that will not
    /// die (stuck in the kernel) keeps its record, marked `error`: its
    /// files may still be in use.
    pub(super) async fn end_process(&self, vm: &mut VmRecord) -> Result<(), OpError> {
        self.agents_remove(&vm.id);
        self.stop_forwarding(&vm.id);
        if let (Some(pid), Some(start_time)) = (vm.pid, vm.pid_start_time) {
            let identity = ProcessIdentity { pid, start_time };
            let gone = tokio::task::spawn_blocking(move || {
                identity.kill_and_wait(Duration::from_secs(10))
            })
            .await
            .unwrap_or(false);
            if !gone {
                let message = format!(
                    "the VMM of vm {:?} (pid {pid}) did not exit after SIGKILL; its files are kept",
                    vm.name
                );
                vm.state = VmState::Error;
                vm.last_error = Some(message.clone());
                let _ = self.with_store(|s| s.update_vm(vm));
                return Err(OpError::internal(message));
            }
        }
        self.clear_runtime(&vm.id).await;
        vm.pid = None;
        vm.pid_start_time = None;
        vm.boot_id = None;
        Ok(())
    }

    /// Ends what is left of a VM's run besides its VMM (its network) and
    /// removes its runtime directory (sockets, pid files).
    pub(super) async fn clear_runtime(&self, id: &str) {
        let dir = self.dirs.vm_runtime(id);
        let _ = tokio::task::spawn_blocking(move || {
            crate::vmm::network::end(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        })
        .await;
    }

    /// Deletes a VM and everything of it.
    pub(crate) async fn delete_vm(self: &Arc<Self>, name_or_id: &str) -> Result<(), OpError> {
        let vm = self.find(name_or_id)?;
        // A boot in progress holds the lock: it gives up instead of being
        // waited out (its create removes the VM, or its start fails).
        let _cancel = self.cancel_boot(&vm.id);
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        let Some(vm) = self.with_store(|s| s.find_vm(&vm.id))? else {
            return Ok(());
        };
        self.delete_locked(vm).await
    }

    /// Deletes a VM whose lock the caller holds: VMM process, runtime
    /// directory, disks, row, in that order.
    /// Asks the guest to write what it has cached to its disks (bounded).
    async fn flush_guest(&self, vm: &VmRecord) {
        if let Ok(client) = self.agent(vm).await
            && tokio::time::timeout(SYNC_TIMEOUT, client.sync())
                .await
                .is_err()
        {
            tracing::warn!(vm = %vm.name, "guest did not flush within {SYNC_TIMEOUT:?}; going on");
        }
    }

    pub(super) async fn delete_locked(&self, mut vm: VmRecord) -> Result<(), OpError> {
        // The project's cache outlives the VM: what the guest wrote there
        // must reach the disk before the VMM ends.
        if vm.cache.is_some() && vm.state == VmState::Running {
            self.flush_guest(&vm).await;
        }
        self.end_process(&mut vm).await?;
        let dir = self.dirs.vm_state(&vm.id);
        if let Err(e) = super::offload(|| std::fs::remove_dir_all(&dir))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(OpError::internal(format!(
                "cannot remove {}: {e}",
                dir.display()
            )));
        }
        self.with_store(|s| s.delete_vm(&vm.id))?;
        self.forget_lock(&vm.id);
        // Its host key leaves known_hosts with it (a later VM of the same
        // name has its own).
        if let Err(e) = self.write_known_hosts() {
            tracing::warn!("cannot rewrite known_hosts: {}", e.message);
        }
        tracing::info!(vm = %vm.name, id = %vm.id, "deleted");
        Ok(())
    }

    /// What commands in `vm` take from its image (an OCI image's config;
    /// nothing for banger's own images).
    pub(super) fn image_run_config(&self, vm: &VmRecord) -> crate::image::oci::RunConfig {
        match self.images.find(&vm.image_id) {
            Ok(Some(image)) => image.manifest.run,
            _ => Default::default(),
        }
    }

    /// Starts a command in a running VM: in its workspace when it has one
    /// (unless the spec names a directory), else in its image's working
    /// directory (an OCI image's), else in root's home.
    pub(crate) async fn exec(
        &self,
        name_or_id: &str,
        mut spec: ExecSpec,
    ) -> Result<(VmRecord, ExecSession), OpError> {
        let (vm, client) = self.running_agent(name_or_id).await?;
        // An OCI image's Env and WorkingDir, as a container would have
        // them; the request's own variables and directory win.
        let run = self.image_run_config(&vm);
        if !run.env.is_empty() {
            let mut env: Vec<(String, String)> = run
                .env
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| !spec.env.iter().any(|(own, _)| own == k))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            env.append(&mut spec.env);
            spec.env = env;
        }
        if spec.cwd.is_none() {
            spec.cwd = match (&vm.workspace, run.working_dir) {
                (Some(w), _) => Some(w.guest_path.clone()),
                (None, Some(dir)) => Some(dir),
                // Another user starts in its own home (the agent's choice).
                (None, None) if spec.user.is_some() => None,
                (None, None) => Some("/root".to_string()),
            };
        }
        let session = client.exec(spec).await.map_err(|e| match e {
            // An exec the guest refuses is a program it cannot start.
            AgentError::Guest(m) => OpError::new(code::CANNOT_RUN, m),
            other => OpError::internal(other.to_string()),
        })?;
        Ok((vm, session))
    }

    /// A running VM and its agent; a clear error when it is not running.
    pub(crate) async fn running_agent(
        &self,
        name_or_id: &str,
    ) -> Result<(VmRecord, AgentClient), OpError> {
        let vm = self.refresh(self.find(name_or_id)?)?;
        if vm.state != VmState::Running {
            return Err(not_running(&vm));
        }
        let client = self.agent(&vm).await?;
        Ok((vm, client))
    }

    /// The agent connection of a running VM, reconnecting when needed (the
    /// daemon may have restarted since the VM booted).
    async fn agent(&self, vm: &VmRecord) -> Result<AgentClient, OpError> {
        if let Some(c) = self.agents_get(&vm.id)
            && !c.is_closed()
        {
            return Ok(c);
        }
        // One connection attempt at a time per VM: the agent's channel
        // takes one client (QEMU's chardev socket serves one connection;
        // a second waits unanswered), and a daemon that starts reconnects
        // from several tasks at once (port forwarding, the first request).
        let gate = {
            let mut gates = super::lock(&self.agent_gates);
            gates.entry(vm.id.clone()).or_default().clone()
        };
        let _gate = gate.lock().await;
        if let Some(c) = self.agents_get(&vm.id)
            && !c.is_closed()
        {
            return Ok(c);
        }
        let endpoint = self
            .driver(&vm.vmm)?
            .agent_endpoint(&self.dirs.vm_runtime(&vm.id));
        let client = connect_endpoint(&endpoint)
            .await
            .map_err(|e| OpError::internal(e.to_string()))?;
        match tokio::time::timeout(Duration::from_secs(10), client.hello()).await {
            Ok(Ok(_)) => {
                self.agents_insert(&vm.id, client.clone());
                Ok(client)
            }
            Ok(Err(e)) => Err(OpError::internal(e.to_string())),
            Err(_) => Err(OpError::internal(format!(
                "the agent of vm {:?} does not answer",
                vm.name
            ))),
        }
    }

    /// Brings one record in line with reality: a VM whose process is gone is
    /// stopped, never running.
    pub(crate) fn refresh(&self, vm: VmRecord) -> Result<VmRecord, OpError> {
        self.reconcile(vm, false)
    }

    fn reconcile(&self, mut vm: VmRecord, at_startup: bool) -> Result<VmRecord, OpError> {
        let alive = match (vm.pid, vm.pid_start_time) {
            (Some(pid), Some(start_time)) => ProcessIdentity { pid, start_time }.is_alive(),
            _ => false,
        };
        let state = reconciled_state(vm.state, alive, at_startup);
        if state != vm.state {
            vm.state = state;
            if state == VmState::Stopped {
                vm.pid = None;
                vm.pid_start_time = None;
                vm.boot_id = None;
                self.agents_remove(&vm.id);
                self.stop_forwarding(&vm.id);
                let dir = self.dirs.vm_runtime(&vm.id);
                crate::vmm::network::end(&dir);
                let _ = std::fs::remove_dir_all(&dir);
            }
            self.with_store(|s| s.update_vm(&vm))?;
        }
        Ok(vm)
    }

    /// Reconciles every record at daemon start.
    pub(crate) fn reconcile_all(&self) -> Result<(), OpError> {
        for vm in self.with_store(|s| s.list_vms())? {
            let name = vm.name.clone();
            let before = vm.state;
            let after = self.reconcile(vm, true)?.state;
            if before != after {
                tracing::info!(vm = %name, "reconciled: {before} -> {after}");
            }
        }
        Ok(())
    }

    /// A VM by name, or by a unique id prefix (at least
    /// [`crate::store::MIN_ID_PREFIX`] hex digits).
    pub(crate) fn find(&self, name_or_id: &str) -> Result<VmRecord, OpError> {
        match self.with_store(|s| s.lookup_vm(name_or_id))? {
            VmLookup::Found(vm) => Ok(*vm),
            VmLookup::Ambiguous(candidates) => Err(OpError::new(
                code::AMBIGUOUS,
                format!(
                    "vm id prefix {name_or_id:?} matches {} vms: {}; give more of the id, or the name",
                    candidates.len(),
                    candidates
                        .iter()
                        .map(|(name, id)| format!("{name} ({id})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            VmLookup::Missing => Err(OpError::new(
                code::NOT_FOUND,
                format!("no vm named {name_or_id:?}; list them with: banger vm list --all"),
            )),
        }
    }
}

/// Refuses a spec that asks for more memory than the host has (a VM that
/// could never start).
pub(super) fn fits_the_host(spec: &VmSpec) -> Result<(), OpError> {
    let host_mib = host_memory_mib();
    if host_mib > 0 && spec.memory_mib > host_mib {
        return Err(OpError::new(
            code::INVALID,
            format!(
                "invalid memory: {} MiB is more than this host has ({host_mib} MiB); ask for less with --memory",
                spec.memory_mib
            ),
        ));
    }
    Ok(())
}

/// The host's memory in MiB (0 when unknown).
fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// What `validate_create` decided.
pub(crate) struct CreatePlan {
    pub(crate) name: String,
    pub(crate) spec: VmSpec,
    pub(crate) choice: crate::vmm::VmmChoice,
    pub(crate) kernel: Option<crate::kernel::KernelEntry>,
    pub(crate) published: Vec<crate::net::PortMapping>,
    pub(crate) allow: Vec<crate::net::egress::AllowRule>,
    /// The image asked for (flag, then config); `None`: the default.
    pub(crate) image: Option<String>,
    /// Whether a first boot may restore the image's snapshot.
    pub(crate) snapshots: bool,
    /// The snapshot of a running VM this one is a fork of.
    pub(crate) from: Option<super::user_snapshot::SnapshotMeta>,
}

/// The error for a request that needs a running VM.
pub(super) fn not_running(vm: &VmRecord) -> OpError {
    OpError::new(
        code::NOT_RUNNING,
        format!(
            "vm {:?} is not running (state: {}); start it with: banger vm start {}",
            vm.name, vm.state, vm.name
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_whose_process_is_gone_is_stopped() {
        for s in [VmState::Starting, VmState::Running, VmState::Stopping] {
            for at_startup in [false, true] {
                assert_eq!(reconciled_state(s, false, at_startup), VmState::Stopped);
            }
            assert_eq!(reconciled_state(s, true, true), VmState::Running);
        }
        // An operation in flight owns its transitional state.
        assert_eq!(
            reconciled_state(VmState::Starting, true, false),
            VmState::Starting
        );
        assert_eq!(
            reconciled_state(VmState::Stopping, true, false),
            VmState::Stopping
        );
        assert_eq!(
            reconciled_state(VmState::Running, true, false),
            VmState::Running
        );
        assert_eq!(
            reconciled_state(VmState::Stopped, false, true),
            VmState::Stopped
        );
        assert_eq!(
            reconciled_state(VmState::Error, false, true),
            VmState::Error
        );
    }

    #[test]
    fn generated_names_are_valid() {
        for _ in 0..50 {
            let n = generated_name().unwrap();
            assert_eq!(crate::spec::validate_name(&n), Ok(()), "{n}");
        }
    }
}
