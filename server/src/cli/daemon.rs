//! `banger daemon`: start, stop and status of the per-user bangerd.

use super::args::DaemonCommand;
use super::printer::Printer;
use super::{Failure, pretty, rpc_failure};
use crate::api::BangerApiClient;
use crate::client;
use crate::paths::Dirs;

pub(crate) async fn run(cmd: DaemonCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    match cmd {
        DaemonCommand::Start => {
            let client = client::connect_or_start(dirs).await?;
            let info = client.daemon_info().await.map_err(rpc_failure)?;
            printer.line(&format!(
                "bangerd {} running (pid {})",
                info.version, info.pid
            ));
        }
        DaemonCommand::Stop => match client::connect_existing(dirs).await? {
            Some(client) => {
                let info = client.daemon_info().await.map_err(rpc_failure)?;
                client.daemon_stop().await.map_err(rpc_failure)?;
                // Wait until it has let go of its socket.
                for _ in 0..200 {
                    if !dirs.socket().exists() && !pid_alive(info.pid) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                printer.line("bangerd stopped");
            }
            None => printer.line("bangerd is not running"),
        },
        DaemonCommand::Status => match client::connect_existing(dirs).await? {
            Some(client) => {
                let info = client.daemon_info().await.map_err(rpc_failure)?;
                printer.line(&pretty(&info));
            }
            None => {
                if printer.json() {
                    printer.json_value(&serde_json::json!({"running": false}));
                } else {
                    printer.line("bangerd is not running");
                }
                return Ok(3);
            }
        },
    }
    Ok(0)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
