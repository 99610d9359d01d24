//! Starting, joining and ending a VM's network ([`crate::net`]): pasta,
//! with the keeper as its child in the new namespace, is spawned here
//! beside the VMM it serves; the VMM joins the keeper's namespaces before
//! it runs, so its tap is the one the keeper made.
//!
//! Neither process is tied to the daemon: pasta runs in its own session
//! (reaped by a thread while the daemon lives, by init after), the keeper
//! ends when the VMM ends or when [`end`] ends it, and pasta ends with its
//! child.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::{self, Control, Egress, KeeperConfig, NetworkRecord};
use crate::process::ProcessIdentity;
use crate::tool::{self, Tool};

use super::VmmError;

/// How long a new network has to come up (pasta, the keeper, the rules).
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a VMM joins a VM's network: the keeper's namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetAttach {
    /// The keeper's pid (its `/proc/PID/ns/{user,net}`).
    pub keeper_pid: i32,
}

fn failed(detail: String) -> VmmError {
    VmmError::Failed {
        binary: "pasta".into(),
        detail,
    }
}

/// Starts the network of a VM whose runtime directory is `runtime_dir`,
/// with what the guest may reach; pasta's and the keeper's messages go
/// to `log`. Blocking. On failure nothing of it is left running.
pub fn start(runtime_dir: &Path, log: &Path, egress: &Egress) -> Result<NetworkRecord, VmmError> {
    let config_path = runtime_dir.join(net::CONFIG_FILE);
    let config = serde_json::to_string(&KeeperConfig {
        egress: egress.clone(),
    })
    .unwrap_or_default();
    std::fs::write(&config_path, config).map_err(|source| VmmError::Io {
        what: "cannot write",
        path: config_path.display().to_string(),
        source,
    })?;
    let _ = std::fs::remove_file(runtime_dir.join(net::CONTROL_SOCKET));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| VmmError::Io {
            what: "cannot open",
            path: log.display().to_string(),
            source,
        })?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| failed(format!("cannot open {}: {e}", log.display())))?;
    let mut cmd = tool::command(Tool::Pasta);
    cmd.args(pasta_args(nix::unistd::geteuid().is_root()))
        .arg(net::keeper_binary())
        .arg("net-keeper")
        .arg(runtime_dir)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        // Its own session: a terminal's signals never reach it.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(tool::spawn_error(&cmd, e).to_string()))?;
    let pasta = ProcessIdentity::of(child.id() as i32);
    // Reap it when it ends, so it never lingers as a zombie of the daemon;
    // nothing here ends it.
    let _ = std::thread::Builder::new()
        .name("pasta-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    let Some(pasta) = pasta else {
        return Err(failed(format!(
            "pasta exited at once; see {}",
            log.display()
        )));
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    let status = loop {
        match net::control(runtime_dir, &Control::Status) {
            Ok(status) => break status,
            Err(e) => {
                if !pasta.is_alive() || Instant::now() > deadline {
                    pasta.kill_and_wait(Duration::from_secs(5));
                    let why = if pasta.is_alive() {
                        format!("it did not come up in {READY_TIMEOUT:?} ({e})")
                    } else {
                        "it ended".to_string()
                    };
                    return Err(failed(format!(
                        "the vm's network failed: {why}; {}",
                        log_tail(log)
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let Some(keeper) = ProcessIdentity::of(status.pid) else {
        pasta.kill_and_wait(Duration::from_secs(5));
        return Err(failed("the network's keeper ended at once".into()));
    };
    let record = NetworkRecord {
        pasta,
        keeper,
        guest: status.guest,
    };
    if let Err(e) = record.save(runtime_dir) {
        end_record(&record);
        return Err(failed(e.to_string()));
    }
    Ok(record)
}

/// pasta's arguments before the keeper's command line (pure).
fn pasta_args(as_root: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "--config-net",
        "--foreground",
        "--quiet",
        "--ns-ifname",
        net::UPLINK,
        // Nothing of the host is forwarded into the namespace, and the
        // gateway is not the host's loopback: the guest reaches only what
        // the keeper's rules let through to the outside.
        "--tcp-ports",
        "none",
        "--udp-ports",
        "none",
        "--tcp-ns",
        "none",
        "--udp-ns",
        "none",
        "--no-map-gw",
        "--dns-forward",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(net::UPSTREAM_DNS.to_string());
    if as_root {
        // pasta drops root to nobody unless told, and root needs no user
        // namespace (NETWORK-FACTS.md).
        a.extend(["--runas", "0", "--netns-only"].map(String::from));
    }
    a.push("--".into());
    a
}

/// Tells the keeper which process is the VMM: the network ends with it.
pub fn watch(runtime_dir: &Path, vmm: ProcessIdentity) -> Result<(), VmmError> {
    net::control(runtime_dir, &Control::Watch { vmm })
        .map(|_| ())
        .map_err(|e| failed(e.to_string()))
}

/// Makes `cmd` run in the keeper's namespaces (user, when it is not the
/// caller's own, then network).
pub fn join(cmd: &mut Command, attach: NetAttach) -> Result<(), VmmError> {
    let ns = |kind: &str| format!("/proc/{}/ns/{kind}", attach.keeper_pid);
    let open = |kind: &str| {
        File::open(ns(kind)).map_err(|source| VmmError::Io {
            what: "cannot open the vm's namespace",
            path: ns(kind),
            source,
        })
    };
    let user = open("user")?;
    let network = open("net")?;
    let same_user =
        std::fs::read_link("/proc/self/ns/user").ok() == std::fs::read_link(ns("user")).ok();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setns(2), which is async-signal-safe; the files it uses were
    // opened before the fork and stay open until exec closes them.
    unsafe {
        cmd.pre_exec(move || {
            if !same_user && libc::setns(user.as_raw_fd(), libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(network.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Ends the network of a VM whose runtime directory is given (the keeper,
/// then pasta), if it has one. Blocking; idempotent.
pub fn end(runtime_dir: &Path) {
    if let Some(record) = NetworkRecord::load(runtime_dir) {
        end_record(&record);
    }
}

fn end_record(record: &NetworkRecord) {
    record.keeper.kill_and_wait(Duration::from_secs(5));
    // pasta ends with its child; make sure of it.
    if !record.pasta.wait_gone(Duration::from_secs(2)) {
        record.pasta.kill_and_wait(Duration::from_secs(5));
    }
}

/// The last lines of the network's log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("to syslog"))
        .collect();
    if lines.is_empty() {
        format!("see {}", log.display())
    } else {
        format!(
            "its log ({}) says: {}",
            log.display(),
            lines[lines.len().saturating_sub(3)..].join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasta_forwards_nothing_and_keeps_root_only_when_root() {
        let user = pasta_args(false);
        for pair in [
            ["--tcp-ports", "none"],
            ["--udp-ports", "none"],
            ["--tcp-ns", "none"],
            ["--udp-ns", "none"],
        ] {
            assert!(user.windows(2).any(|w| w == pair), "{user:?}");
        }
        assert!(user.contains(&"--no-map-gw".to_string()));
        assert!(!user.contains(&"--runas".to_string()));
        assert_eq!(user.last().map(String::as_str), Some("--"));
        let root = pasta_args(true);
        assert!(root.windows(2).any(|w| w == ["--runas", "0"]), "{root:?}");
        assert!(root.contains(&"--netns-only".to_string()));
    }
}
