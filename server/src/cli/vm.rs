//! `banger vm` (and `banger ps`): create, run, start, stop, delete, list,
//! show, exec and shell; `vm workspace` is in `workspace.rs`.

use std::sync::Arc;

use jsonrpsee::async_client::Client;

use super::args::{ListArgs, SpecArgs, VmCommand};
use super::exec::{ExecTarget, exec, login_shell};
use super::printer::Printer;
use super::workspace::workspace_notes;
use super::{EXIT_RUN_FAILED, Failure, absolute, follow, pretty, print_table, rpc_failure};
use crate::api::{BangerApiClient, CreateParams, OpEvent, VmView};
use crate::client;
use crate::paths::Dirs;
use crate::spec;

pub(crate) fn create_params(
    spec: &SpecArgs,
    start: bool,
    delete_on_failure: bool,
) -> Result<CreateParams, Failure> {
    // Validate locally too, so obvious mistakes never reach the daemon.
    if let Some(name) = &spec.name {
        spec::validate_name(name).map_err(|e| Failure::new(2, e.to_string()))?;
    }
    let disk_bytes = spec
        .disk_size
        .as_deref()
        .map(spec::parse_size)
        .transpose()
        .map_err(|e| Failure::new(2, e.to_string()))?;
    Ok(CreateParams {
        name: spec.name.clone(),
        vcpu: spec.vcpu,
        memory_mib: spec.memory,
        disk_bytes,
        image: None,
        vmm: spec.vmm.clone(),
        kernel: spec.kernel.clone(),
        start,
        delete_on_failure,
    })
}

async fn create(
    client: &Client,
    params: CreateParams,
    printer: &Printer,
) -> Result<VmView, Failure> {
    let sub = client.vm_create(params).await.map_err(rpc_failure)?;
    match follow(sub, printer).await? {
        OpEvent::Vm { vm } => Ok(*vm),
        other => Err(Failure::new(1, format!("unexpected result {other:?}"))),
    }
}

pub(crate) async fn run(cmd: VmCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    match cmd {
        VmCommand::Run {
            path,
            spec,
            ws,
            dry_run,
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
            let path = path.map(|p| absolute(&p));
            let client = Arc::new(client::connect_or_start(dirs).await?);
            // Check the repository (and any branch) before creating a VM.
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
                if dry_run {
                    for f in &plan.files {
                        printer.line(&f.path);
                    }
                    printer.line(&plan.mode);
                    workspace_notes(&plan, printer);
                    return Ok(0);
                }
            }
            // full_copy writes the disk before the first boot.
            let full_copy = path.is_some() && ws.full_copy();
            let params = create_params(&spec, !full_copy, rm)?;
            let mut vm = create(&client, params, printer).await.map_err(|f| {
                Failure::new(if f.code == 2 { 2 } else { EXIT_RUN_FAILED }, f.message)
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
                        return Err(Failure::new(
                            if f.code == 2 { 2 } else { EXIT_RUN_FAILED },
                            f.message,
                        ));
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
        VmCommand::Create { spec, no_start } => {
            let params = create_params(&spec, !no_start, false)?;
            let client = Arc::new(client::connect_or_start(dirs).await?);
            let vm = create(&client, params, printer).await?;
            printer.clear_progress();
            printer.line(&vm.name);
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

pub(crate) async fn list(dirs: &Dirs, printer: &Printer, args: ListArgs) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    let vms = client.vm_list(args.all).await.map_err(rpc_failure)?;
    if args.json {
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
