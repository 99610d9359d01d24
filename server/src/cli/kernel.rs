//! `banger kernel`: the guest kernel catalog.

use super::args::KernelCommand;
use super::printer::Printer;
use super::{Failure, pretty, print_table, rpc_failure};
use crate::api::BangerApiClient;
use crate::client;
use crate::paths::Dirs;

pub(crate) async fn run(cmd: KernelCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    let show = |k: &crate::api::KernelView| {
        format!(
            "{} {} ({}{})",
            k.name,
            &k.id[..12.min(k.id.len())],
            k.format,
            if k.pvm { ", pvm" } else { "" }
        )
    };
    match cmd {
        KernelCommand::List => {
            let kernels = client.kernel_list().await.map_err(rpc_failure)?;
            if printer.json() {
                printer.line(&pretty(&kernels));
            } else {
                let rows: Vec<Vec<String>> = kernels
                    .iter()
                    .map(|k| {
                        vec![
                            k.name.clone(),
                            k.id[..12.min(k.id.len())].to_string(),
                            k.format.clone(),
                            if k.pvm { "yes".into() } else { "no".into() },
                            if k.firecracker {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                            k.source.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    printer,
                    &["NAME", "ID", "FORMAT", "PVM", "FIRECRACKER", "SOURCE"],
                    &rows,
                );
            }
        }
        KernelCommand::Import { path, name, pvm } => {
            let abs = std::path::absolute(&path).unwrap_or_else(|_| path.clone().into());
            let k = client
                .kernel_import(abs.display().to_string(), name, pvm)
                .await
                .map_err(rpc_failure)?;
            printer.line(&show(&k));
        }
        KernelCommand::Pull {
            url,
            sha256,
            name,
            pvm,
        } => {
            printer.progress(&format!("downloading {url}"));
            let k = client
                .kernel_pull(url, sha256, name, pvm)
                .await
                .map_err(rpc_failure)?;
            printer.line(&show(&k));
        }
        KernelCommand::Delete { kernel } => {
            client
                .kernel_delete(kernel.clone())
                .await
                .map_err(rpc_failure)?;
            printer.line(&kernel);
        }
    }
    Ok(0)
}
