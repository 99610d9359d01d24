//! `banger vm` (and `banger ps`): create, run, start, stop, delete, list,
//! show, exec and shell; `vm workspace` is in `workspace.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee::async_client::Client;

use super::args::{ListArgs, NetArgs, SpecArgs, VmCommand};
use super::exec::{ExecTarget, exec, login_shell};
use super::printer::Printer;
use super::workspace::workspace_notes;
use super::{
    EXIT_RUN_FAILED, Failure, absolute, confirm, follow, human_bytes, pretty, print_table,
    rpc_failure,
};
use crate::api::{BangerApiClient, CreateParams, OpEvent, VmView};
use crate::client;
use crate::paths::Dirs;
use crate::spec;

/// A guest-chosen name made safe for a terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

pub(crate) fn create_params(
    spec: &SpecArgs,
    net: &NetArgs,
    start: bool,
    delete_on_failure: bool,
) -> Result<CreateParams, Failure> {
    // Validate locally too, so obvious mistakes never reach the daemon.
    if let Some(name) = &spec.name {
        spec::validate_name(name).map_err(|e| Failure::new(2, e.to_string()))?;
    }
    // Sizes, the VMM and vCPU bounds were parsed by clap already.
    Ok(CreateParams {
        name: spec.name.clone(),
        vcpu: spec.vcpu,
        memory_mib: spec.memory,
        disk_bytes: spec.disk_size,
        system_overlay_bytes: spec.system_overlay_size,
        image: spec.image.clone(),
        vmm: spec.vmm.map(|v| v.as_str().to_string()),
        kernel: spec.kernel.clone(),
        start,
        delete_on_failure,
        lease: None,
        nat: net.nat,
        publish: net.publish.iter().map(|p| p.to_string()).collect(),
        allow: net.allow.iter().map(|a| a.to_string()).collect(),
        cache: None,
        no_snapshot: spec.no_snapshot,
        from: spec.from_snapshot.clone(),
    })
}

/// A lease the daemon holds for this process: VMs created under it and not
/// released are removed by the daemon when it ends (this process exits,
/// is interrupted or killed, or its terminal closes), so `--rm` is the
/// daemon's promise, not this process's.
pub(crate) struct Lease {
    token: String,
    _held: jsonrpsee::core::client::Subscription<crate::api::LeaseEvent>,
}

async fn hold_lease(client: &Client) -> Result<Lease, Failure> {
    let token = spec::random_hex(16)
        .map_err(|e| Failure::new(1, format!("cannot read random bytes: {e}")))?;
    let mut held = client
        .lease_hold(token.clone())
        .await
        .map_err(rpc_failure)?;
    match held.next().await {
        Some(Ok(crate::api::LeaseEvent::Held)) => Ok(Lease { token, _held: held }),
        other => Err(Failure::new(
            1,
            format!("bangerd did not hold the lease: {other:?}"),
        )),
    }
}

/// Creates a VM under a lease: an interrupted create leaves nothing. With
/// `keep`, the VM is released from the lease once created (it stays);
/// otherwise it lives only as long as the returned lease.
pub(crate) async fn create(
    client: &Client,
    mut params: CreateParams,
    printer: &Printer,
    keep: bool,
) -> Result<(VmView, Lease), Failure> {
    let lease = hold_lease(client).await?;
    params.lease = Some(lease.token.clone());
    let sub = client.vm_create(params).await.map_err(rpc_failure)?;
    let vm = match follow(sub, printer).await? {
        OpEvent::Vm { vm } => *vm,
        other => return Err(Failure::new(1, format!("unexpected result {other:?}"))),
    };
    if keep {
        client
            .lease_release(lease.token.clone(), vm.id.clone())
            .await
            .map_err(rpc_failure)?;
    }
    Ok((vm, lease))
}

pub(crate) async fn run(cmd: VmCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    match cmd {
        VmCommand::Run {
            path,
            mut spec,
            mut net,
            ws,
            dry_run,
            no_bootstrap,
            no_project,
            no_cache,
            rm,
            detach,
            command,
        } => {
            if detach && !command.is_empty() {
                return Err(Failure::new(
                    2,
                    "-d/--detach does not take a command: run it later with banger vm exec VM -- CMD",
                ));
            }
            if path.is_some() && spec.from_snapshot.is_some() {
                return Err(Failure::new(
                    2,
                    "--from-snapshot starts a fork with the workspace its vm had; drop PATH (or sync it later: banger vm workspace sync)",
                ));
            }
            let path = path.map(|p| absolute(&p));
            // The repository's .banger.toml fills in what flags left unset.
            let project = match &path {
                Some(path) if !no_project => {
                    super::project::apply(path, &mut spec, &mut net, printer)?
                }
                _ => super::project::Plan::default(),
            };
            let client = Arc::new(client::connect_or_start(dirs).await?);
            // Check the repository (and any branch) before creating a VM.
            let mut bootstrap = false;
            if let Some(path) = &path {
                let plan = client
                    .workspace_plan(
                        path.clone(),
                        ws.include_untracked,
                        ws.branch.clone(),
                        ws.from.clone(),
                    )
                    .await
                    .map_err(rpc_failure)?;
                bootstrap = !no_bootstrap
                    && crate::daemon::tooling::declares_tools(
                        plan.files.iter().map(|f| f.path.as_str()),
                    );
                if bootstrap && !dry_run && !net.nat && net.allow.is_empty() {
                    return Err(Failure::new(
                        2,
                        "tooling bootstrap requires --nat (or pass --no-bootstrap to skip)",
                    ));
                }
                if dry_run {
                    for f in &plan.files {
                        printer.line(&f.path);
                    }
                    printer.line(&plan.mode);
                    workspace_notes(&plan, printer);
                    return Ok(0);
                }
            }
            let cache = project.cache && !no_cache;
            let prepared = super::project::prepare(&client, project, printer)
                .await
                .map_err(|f| {
                    let exit = if f.code == 2 { 2 } else { EXIT_RUN_FAILED };
                    f.exit(exit)
                })?;
            if prepared.is_some() {
                spec.image = prepared;
            }
            // full_copy writes the disk before the first boot.
            let full_copy = path.is_some() && ws.full_copy();
            let mut params = create_params(&spec, &net, !full_copy, rm)?;
            // The repository's dependency cache, kept across --rm runs.
            if cache {
                params.cache = path.clone();
            }
            // With --rm the VM lives only as long as this lease: whatever
            // ends this process, the daemon removes it.
            let (mut vm, _lease) = create(&client, params, printer, !rm).await.map_err(|f| {
                let exit = if f.code == 2 { 2 } else { EXIT_RUN_FAILED };
                f.exit(exit)
            })?;
            if let Some(path) = path {
                printer.progress(&format!("shipping {path} to /root/repo"));
                let prepared = client
                    .vm_workspace_prepare(ws.params(vm.id.clone(), path))
                    .await
                    .map_err(rpc_failure);
                let started = match prepared {
                    Ok(plan) if full_copy => {
                        workspace_notes(&plan, printer);
                        match client.vm_start(vm.id.clone()).await {
                            Ok(sub) => follow(sub, printer).await.map(|_| plan),
                            Err(e) => Err(rpc_failure(e)),
                        }
                    }
                    other => other,
                };
                let started = match started {
                    Ok(plan) if bootstrap => {
                        printer.progress("installing the workspace's tools with mise");
                        match client.vm_bootstrap(vm.id.clone()).await {
                            Ok(_) => Ok(plan),
                            Err(e) => Err(rpc_failure(e)),
                        }
                    }
                    other => other,
                };
                match started {
                    Ok(plan) => {
                        if !full_copy {
                            workspace_notes(&plan, printer);
                        }
                        vm = client.vm_show(vm.id.clone()).await.map_err(rpc_failure)?;
                    }
                    Err(f) => {
                        if rm {
                            let _ = client.vm_delete(vm.id.clone()).await;
                        }
                        let exit = if f.code == 2 { 2 } else { EXIT_RUN_FAILED };
                        return Err(f.exit(exit));
                    }
                }
            }
            printer.clear_progress();
            if detach {
                printer.line(&vm.name);
                printer.note(&format!(
                    "vm {} is running; connect with: banger vm shell {}  (or: banger vm exec {} -- CMD)",
                    vm.name, vm.name, vm.name
                ));
                return Ok(0);
            }
            let (command, tty) = if command.is_empty() {
                (login_shell(), true)
            } else {
                (command, false)
            };
            let target = ExecTarget {
                vm: &vm.id,
                cwd: None,
                delete_after: rm,
                auto_prepare: false,
                tty,
            };
            exec(&client, target, command, printer).await
        }
        VmCommand::Create {
            spec,
            net,
            no_start,
        } => {
            let started = Instant::now();
            let params = create_params(&spec, &net, !no_start, false)?;
            let client = Arc::new(client::connect_or_start(dirs).await?);
            let (vm, _lease) = create(&client, params, printer, true).await?;
            printer.clear_progress();
            if printer.json() {
                printer.json_value(&vm);
            } else {
                printer.line(&vm.name);
            }
            let elapsed = elapsed(started);
            printer.note(&if no_start {
                format!(
                    "created in {elapsed}; start it with: banger vm start {}",
                    vm.name
                )
            } else {
                format!("ready in {elapsed}")
            });
            Ok(0)
        }
        VmCommand::Start { vms } => {
            let client = client::connect_or_start(dirs).await?;
            for name in vms {
                let sub = client.vm_start(name).await.map_err(rpc_failure)?;
                if let OpEvent::Vm { vm } = follow(sub, printer).await? {
                    printer.clear_progress();
                    printer.line(&vm.name);
                }
            }
            Ok(0)
        }
        VmCommand::Stop { vms } => {
            let client = client::connect_or_start(dirs).await?;
            for name in vms {
                printer.progress(&format!("stopping {name}"));
                let vm = client.vm_stop(name).await.map_err(rpc_failure)?;
                printer.clear_progress();
                printer.line(&vm.name);
            }
            Ok(0)
        }
        VmCommand::Delete { vms } => {
            let client = client::connect_or_start(dirs).await?;
            for name in vms {
                printer.progress(&format!("deleting {name}"));
                client.vm_delete(name.clone()).await.map_err(rpc_failure)?;
                printer.clear_progress();
                printer.line(&name);
            }
            Ok(0)
        }
        VmCommand::List(args) => list(dirs, printer, args).await,
        VmCommand::Workspace(cmd) => super::workspace::run(cmd, dirs, printer).await,
        VmCommand::Show { vm } => {
            let client = client::connect_or_start(dirs).await?;
            let vm = client.vm_show(vm).await.map_err(rpc_failure)?;
            printer.line(&pretty(&vm));
            Ok(0)
        }
        VmCommand::Restart { vm } => {
            let started = Instant::now();
            let client = client::connect_or_start(dirs).await?;
            let sub = client.vm_restart(vm).await.map_err(rpc_failure)?;
            if let OpEvent::Vm { vm } = follow(sub, printer).await? {
                printer.clear_progress();
                if printer.json() {
                    printer.json_value(&vm);
                } else {
                    printer.line(&vm.name);
                }
                printer.note(&format!("restarted in {}", elapsed(started)));
            }
            Ok(0)
        }
        VmCommand::Kill { signal, vm } => {
            let client = client::connect_or_start(dirs).await?;
            printer.progress(&format!("killing {vm}"));
            let view = client.vm_kill(vm, signal).await.map_err(rpc_failure)?;
            printer.clear_progress();
            if printer.json() {
                printer.json_value(&view);
            } else {
                printer.line(&view.name);
            }
            Ok(0)
        }
        VmCommand::Prune { force } => prune(dirs, printer, force).await,
        VmCommand::Set {
            vm,
            vcpu,
            memory,
            nat,
            no_nat,
            allow,
        } => {
            let client = client::connect_or_start(dirs).await?;
            let nat = match (nat, no_nat) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let allow = (!allow.is_empty()).then(|| allow.iter().map(|a| a.to_string()).collect());
            let params = crate::api::SetParams {
                vm,
                vcpu,
                memory_mib: memory,
                nat,
                allow,
            };
            let resources = params.vcpu.is_some() || params.memory_mib.is_some();
            let network = params.nat.is_some() || params.allow.is_some();
            let view = client.vm_set(params).await.map_err(rpc_failure)?;
            if printer.json() {
                printer.json_value(&view);
            } else {
                printer.line(&view.name);
                if resources {
                    printer.note(&format!(
                        "vcpu {}, memory {}M; applies at its next start (banger vm start {})",
                        view.vcpu, view.memory_mib, view.name
                    ));
                }
                if network {
                    let access = match view.network.mode.as_str() {
                        "nat" => "outbound network access on".to_string(),
                        "allow" => format!(
                            "outbound network access only to {}",
                            view.network.allow.join(", ")
                        ),
                        _ => "outbound network access off".to_string(),
                    };
                    printer.note(&if view.state == "running" {
                        format!("{access}, now")
                    } else {
                        format!(
                            "{access} from its next start (banger vm start {})",
                            view.name
                        )
                    });
                }
            }
            Ok(0)
        }
        VmCommand::Logs { vm, follow } => logs(dirs, printer, vm, follow).await,
        VmCommand::Ssh { vm, command } => super::ssh::vm_ssh(dirs, printer, &vm, command).await,
        VmCommand::Ports { vm } => {
            let client = client::connect_or_start(dirs).await?;
            let ports = client.vm_ports(vm).await.map_err(rpc_failure)?;
            if printer.json() {
                printer.json_value(&ports);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = ports
                .iter()
                .map(|p| {
                    vec![
                        p.proto.clone(),
                        p.address.clone(),
                        p.port.to_string(),
                        // Named by the guest: printable characters only.
                        printable(p.process.as_deref().unwrap_or("-")),
                        if p.host.is_empty() {
                            format!("- ({})", p.note.as_deref().unwrap_or("not forwarded"))
                        } else {
                            p.host.join(", ")
                        },
                    ]
                })
                .collect();
            print_table(
                printer,
                &["PROTO", "ADDRESS", "PORT", "PROCESS", "HOST"],
                &rows,
            );
            Ok(0)
        }
        VmCommand::Snapshot(args) => snapshot(dirs, printer, args).await,
        VmCommand::Ip { vm } => {
            let client = client::connect_or_start(dirs).await?;
            let view = client.vm_show(vm).await.map_err(rpc_failure)?;
            match view.network.host_address {
                Some(address) => {
                    printer.line(&address);
                    Ok(0)
                }
                None => Err(Failure::new(
                    1,
                    format!(
                        "vm {:?} has no host address yet; it gets one at its next start",
                        view.name
                    ),
                )),
            }
        }
        VmCommand::Stats { vm } => {
            let client = client::connect_or_start(dirs).await?;
            let s = client.vm_stats(vm).await.map_err(rpc_failure)?;
            if printer.json() {
                printer.json_value(&s);
                return Ok(0);
            }
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            printer.line(&format!("name     {} ({})", s.name, s.id));
            printer.line(&format!("state    {}", s.state));
            printer.line(&format!(
                "uptime   {}",
                or_dash(s.uptime_secs.map(duration))
            ));
            printer.line(&format!(
                "cpu      {}",
                or_dash(s.cpu_secs.map(|c| format!("{c:.1} s")))
            ));
            printer.line(&format!(
                "memory   {}",
                or_dash(s.rss_bytes.map(|b| format!("{} resident", human_bytes(b))))
            ));
            let parts: Vec<String> = s
                .disks
                .iter()
                .map(|d| {
                    format!(
                        "{} {} of {}",
                        d.role,
                        human_bytes(d.used_bytes),
                        spec::format_size(d.size_bytes)
                    )
                })
                .collect();
            printer.line(&format!(
                "disk     {} used ({})",
                human_bytes(s.disk_used_bytes),
                parts.join(", ")
            ));
            Ok(0)
        }
        VmCommand::Exec {
            vm,
            guest_path,
            auto_prepare,
            tty,
            command,
        } => {
            let client = Arc::new(client::connect_or_start(dirs).await?);
            let target = ExecTarget {
                vm: &vm,
                cwd: guest_path,
                delete_after: false,
                auto_prepare,
                tty,
            };
            exec(&client, target, command, printer).await
        }
        VmCommand::Shell { vm } => {
            let client = Arc::new(client::connect_or_start(dirs).await?);
            let target = ExecTarget {
                vm: &vm,
                cwd: None,
                delete_after: false,
                auto_prepare: false,
                tty: true,
            };
            exec(&client, target, login_shell(), printer).await
        }
    }
}

async fn snapshot(
    dirs: &Dirs,
    printer: &Printer,
    args: super::args::SnapshotArgs,
) -> Result<u8, Failure> {
    use super::args::SnapshotCommand;
    let client = client::connect_or_start(dirs).await?;
    match (args.command, args.vm) {
        (Some(SnapshotCommand::List), _) => {
            let snapshots = client.snapshot_list().await.map_err(rpc_failure)?;
            if printer.json() {
                printer.line(&pretty(&snapshots));
            } else {
                let rows: Vec<Vec<String>> = snapshots
                    .iter()
                    .map(|s| {
                        vec![
                            s.reference.clone(),
                            s.image.clone(),
                            s.vcpu.to_string(),
                            format!("{}M", s.memory_mib),
                            human_bytes(s.bytes),
                            s.workspace.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print_table(
                    printer,
                    &["SNAPSHOT", "IMAGE", "VCPU", "MEMORY", "SIZE", "WORKSPACE"],
                    &rows,
                );
            }
        }
        (Some(SnapshotCommand::Delete { snapshot }), _) => {
            client
                .snapshot_delete(snapshot.clone())
                .await
                .map_err(rpc_failure)?;
            printer.line(&snapshot);
        }
        (None, Some(vm)) => {
            printer.progress(&format!("snapshotting {vm}"));
            let made = client
                .vm_snapshot(vm, args.tag)
                .await
                .map_err(rpc_failure)?;
            printer.clear_progress();
            if printer.json() {
                printer.line(&pretty(&made));
            } else {
                printer.line(&made.reference);
            }
        }
        (None, None) => {
            return Err(Failure::new(
                2,
                "name the running vm to snapshot (banger vm snapshot VM [--tag T]), or: banger vm snapshot list | delete NAME[:TAG]",
            ));
        }
    }
    Ok(0)
}

pub(crate) async fn list(dirs: &Dirs, printer: &Printer, args: ListArgs) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    let vms = client.vm_list(args.all).await.map_err(rpc_failure)?;
    if printer.json() {
        printer.line(&pretty(&vms));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|vm| {
            vec![
                vm.name.clone(),
                vm.id.clone(),
                vm.state.clone(),
                vm.vcpu.to_string(),
                format!("{}M", vm.memory_mib),
                spec::format_size(vm.disk_bytes),
                vm.image.clone(),
                vm.accel.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(
        printer,
        &[
            "NAME", "ID", "STATE", "VCPU", "MEMORY", "DISK", "IMAGE", "ACCEL",
        ],
        &rows,
    );
    Ok(0)
}

/// `vm prune`: deletes every VM that is not running, after asking (on a
/// terminal) or with `-f`.
async fn prune(dirs: &Dirs, printer: &Printer, force: bool) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    let vms = client.vm_list(true).await.map_err(rpc_failure)?;
    let doomed: Vec<&VmView> = vms
        .iter()
        .filter(|vm| vm.state == "stopped" || vm.state == "error")
        .collect();
    if doomed.is_empty() {
        if printer.json() {
            printer.json_value(&Vec::<String>::new());
        } else {
            printer.note("nothing to prune: every vm is running");
        }
        return Ok(0);
    }
    let list = doomed
        .iter()
        .map(|vm| format!("{} ({})", vm.name, vm.state))
        .collect::<Vec<_>>()
        .join(", ");
    let plural = if doomed.len() == 1 { "" } else { "s" };
    if !force
        && !confirm(
            printer,
            &format!("vm prune would delete {} vm{plural}: {list}", doomed.len()),
            "banger vm prune -f",
            &format!(
                "delete {} vm{plural} and their disks: {list}?",
                doomed.len()
            ),
        )?
    {
        printer.note("nothing deleted");
        return Ok(1);
    }
    let ids: Vec<String> = doomed.iter().map(|vm| vm.id.clone()).collect();
    printer.progress("deleting");
    let deleted = client.vm_prune(ids).await.map_err(rpc_failure)?;
    printer.clear_progress();
    if printer.json() {
        printer.json_value(&deleted);
    } else {
        for name in &deleted {
            printer.line(name);
        }
    }
    Ok(0)
}

/// `vm logs [-f]`: the console log, then the daemon's lines about the VM
/// (prefixed `[bangerd]`); with `-f`, what is added, until the VM is
/// deleted or Ctrl-C.
async fn logs(dirs: &Dirs, printer: &Printer, vm: String, follow: bool) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    let (mut console, mut daemon, mut network) = (0, 0, 0);
    let mut seen = false;
    loop {
        let chunk = match client
            .vm_logs(vm.clone(), console, daemon, Some(network))
            .await
        {
            Ok(c) => c,
            Err(jsonrpsee::core::client::Error::Call(obj))
                if seen && obj.code() == crate::api::code::NOT_FOUND =>
            {
                printer.note(&format!("vm {vm} was deleted"));
                return Ok(0);
            }
            Err(e) => return Err(rpc_failure(e)),
        };
        if printer.json() && !follow {
            printer.json_value(&chunk);
            return Ok(0);
        }
        printer.stdout_bytes(chunk.console.as_bytes());
        for line in &chunk.daemon {
            printer.line(&format!("[bangerd] {line}"));
        }
        for line in &chunk.network {
            printer.line(&format!("[network] {line}"));
        }
        console = chunk.console_next;
        daemon = chunk.daemon_next;
        network = chunk.network_next;
        if !follow {
            return Ok(0);
        }
        // From here on, a VM that is gone was deleted while we followed.
        seen = true;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

/// `12.3s`, `2m 5s`.
fn elapsed(started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        duration(secs as u64)
    }
}

/// `1h 2m 3s`.
fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(125), "2m 5s");
        assert_eq!(duration(3723), "1h 2m 3s");
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(3 << 29), "1.5G");
    }
}
