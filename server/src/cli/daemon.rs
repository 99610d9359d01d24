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
        DaemonCommand::Stop { force } => match client::connect_existing(dirs).await? {
            Some(client) => {
                let info = client.daemon_info().await.map_err(rpc_failure)?;
                client.daemon_stop(Some(force)).await.map_err(rpc_failure)?;
                // It lets operations in flight record what they started
                // (up to two minutes) before it lets go of its socket.
                let started = std::time::Instant::now();
                let mut said = false;
                while dirs.socket().exists() || pid_alive(info.pid) {
                    let waited = started.elapsed();
                    if waited > std::time::Duration::from_secs(150) {
                        return Err(Failure::new(
                            1,
                            format!(
                                "bangerd (pid {}) is still stopping; see its log: {}",
                                info.pid,
                                dirs.daemon_log().display()
                            ),
                        ));
                    }
                    if !said && waited > std::time::Duration::from_secs(2) {
                        said = true;
                        printer.progress(&format!(
                            "bangerd (pid {}) is stopping: operations in flight finish first",
                            info.pid
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                printer.clear_progress();
                printer.line("bangerd stopped");
            }
            None => printer.line("bangerd is not running"),
        },
        DaemonCommand::Status => match client::connect_existing(dirs).await? {
            Some(client) => {
                let info = client.daemon_info().await.map_err(rpc_failure)?;
                printer.line(&pretty(&info));
                printer.note(&format!("log: {}", dirs.daemon_log().display()));
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
