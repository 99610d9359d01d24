//! A VMM test double (debug builds only): the "VM" is the real
//! `banger-agent` running as a plain host process, serving its session on
//! the unix socket the daemon connects to (`banger-agent serve-unix`), as a
//! QEMU guest's agent is reached through QEMU's chardev socket. Lifecycle
//! decisions (cleanup order, reconcile, cancel, leases) run through it in
//! seconds, without QEMU; the real-guest tests stay the proof for guests.
//!
//! Chosen only when `BANGER_TEST_VMM=fake` and the daemon is a debug build
//! (see [`choice`]); release builds have no such driver. Guest commands run
//! on the host as the daemon's user: this is for tests, never for users.
//!
//! `BANGER_TEST_VMM_BOOT_MS` delays the agent's first answer, as a booting
//! guest does, so a test can end a lease while the "guest" boots.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{AgentEndpoint, LaunchPlan, Vmm, VmmChoice, VmmError};
use crate::accel::AccelChoice;
use crate::process::ProcessIdentity;

/// Driver name, stored with each VM.
pub const NAME: &str = "fake";
/// The agent's socket in the VM's runtime directory.
const AGENT_SOCKET: &str = "agent.sock";
/// The variable that selects this driver for new VMs.
const SELECT_VAR: &str = "BANGER_TEST_VMM";
/// How long launch waits for the agent to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The test double: runs `banger-agent serve-unix`.
#[derive(Debug, Clone)]
pub struct FakeVmm {
    agent: Result<PathBuf, String>,
    ready_after: Duration,
}

impl FakeVmm {
    /// The agent the daemon ships (`$BANGER_AGENT`, else next to this
    /// executable) and the boot delay from `BANGER_TEST_VMM_BOOT_MS`.
    pub fn from_env() -> FakeVmm {
        FakeVmm {
            agent: crate::daemon::AgentBinary::locate_path(),
            ready_after: Duration::from_millis(
                std::env::var("BANGER_TEST_VMM_BOOT_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ),
        }
    }
}

/// The VMM choice `BANGER_TEST_VMM` asks for: `None` when unset, an error
/// for a value other than `fake`.
pub fn choice(host_accel: &AccelChoice) -> Option<Result<VmmChoice, String>> {
    let value = std::env::var(SELECT_VAR).ok()?;
    Some(if value == NAME {
        Ok(VmmChoice {
            vmm: NAME,
            reason: format!("{SELECT_VAR}={NAME}: a host process stands in for the VM (tests)"),
            accel: host_accel.clone(),
        })
    } else {
        Err(format!(
            "invalid {SELECT_VAR} {value:?}: only {NAME:?} is known"
        ))
    })
}

impl Vmm for FakeVmm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn launch(&self, plan: &LaunchPlan) -> Result<ProcessIdentity, VmmError> {
        let agent = self.agent.clone().map_err(|detail| VmmError::Failed {
            binary: "banger-agent".into(),
            detail,
        })?;
        let binary = agent.display().to_string();
        let failed = |detail: String| VmmError::Failed {
            binary: binary.clone(),
            detail,
        };
        let socket = plan.runtime_dir.join(AGENT_SOCKET);
        let _ = std::fs::remove_file(&socket);
        // The agent's messages are this "VM"'s console.
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&plan.console_log)
            .map_err(|source| VmmError::Io {
                what: "cannot open",
                path: plan.console_log.display().to_string(),
                source,
            })?;
        let console_err = console.try_clone().map_err(|e| failed(e.to_string()))?;
        // Its own process group: a signal to the daemon's group (a
        // terminal's Ctrl-C) does not reach it, as it does not reach a VMM.
        #[allow(clippy::disallowed_methods)] // the VMM driver module spawns its "VMM"
        let mut cmd = Command::new(&agent);
        // It joins the VM's network like a VMM, so that tests see the
        // network live and end with it.
        if let Some(attach) = plan.network {
            super::network::join(&mut cmd, attach)?;
        }
        let mut child = cmd
            .arg("serve-unix")
            .arg(&socket)
            .arg(self.ready_after.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .process_group(0)
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        let identity = ProcessIdentity::of(child.id() as i32);
        // Unlike `qemu -daemonize`, this process is the daemon's child:
        // reap it when it ends so that it never lingers as a zombie. It is
        // never killed on the daemon's behalf (no kill-on-drop, no
        // parent-death signal), so it outlives a daemon like a VMM does.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let identity = identity.ok_or_else(|| failed("exited right after starting".into()))?;
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while !socket.exists() {
            if !identity.is_alive() {
                return Err(failed(format!(
                    "exited before listening on {}; see {}",
                    socket.display(),
                    plan.console_log.display()
                )));
            }
            if Instant::now() > deadline {
                identity.kill_and_wait(Duration::from_secs(5));
                return Err(failed(format!(
                    "did not listen on {} within {LISTEN_TIMEOUT:?}",
                    socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(identity)
    }

    fn agent_endpoint(&self, runtime_dir: &Path) -> AgentEndpoint {
        AgentEndpoint::Stream(runtime_dir.join(AGENT_SOCKET))
    }

    fn version(&self) -> Result<String, String> {
        self.agent
            .as_ref()
            .map(|p| format!("test double: {} serve-unix", p.display()))
            .map_err(Clone::clone)
    }
}
