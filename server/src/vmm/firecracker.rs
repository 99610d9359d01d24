//! The Firecracker driver: spawns `firecracker` with its API socket,
//! configures the VM through the API and starts it; the agent is reached
//! over Firecracker's hybrid vsock (a unix socket plus `CONNECT <port>`).
//!
//! Every request body comes from [`Firecracker::config_requests`], a pure
//! function whose output the tests validate against Firecracker's own API
//! description (`firecracker-v1.16.1.yaml`). Error bodies (`fault_message`)
//! reach the user as Firecracker wrote them.
//!
//! **Invariant:** the process is started in its own session and never tied
//! to a request (seed bug: an SDK killed the VMM ~150 ms after the RPC that
//! started it returned). Stop flushes through the agent and then ends the
//! process; Ctrl-Alt-Del is never used (it reboots a Debian guest).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_agent::protocol::VSOCK_PORT;
use serde_json::{Value, json};

use super::api_socket::{self, ApiResponse};
use super::{AgentEndpoint, LaunchPlan, Memory, Vmm, VmmError, base_kernel_args};
use crate::process::ProcessIdentity;

/// Driver name.
pub const NAME: &str = "firecracker";

const API_SOCKET: &str = "firecracker.sock";
const VSOCK_SOCKET: &str = "vsock.sock";
const LOG_FILE: &str = "firecracker.log";
const METRICS_FILE: &str = "firecracker-metrics.json";
/// Each Firecracker VM has its own vsock namespace, so one CID serves all.
const GUEST_CID: u32 = 3;
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// One call to Firecracker's API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    /// HTTP method.
    pub method: &'static str,
    /// Request path.
    pub path: String,
    /// JSON body.
    pub body: Value,
}

impl ApiCall {
    fn put(path: impl Into<String>, body: Value) -> ApiCall {
        ApiCall {
            method: "PUT",
            path: path.into(),
            body,
        }
    }
}

/// The Firecracker driver.
pub struct Firecracker {
    binary: PathBuf,
}

/// Where banger looks for `firecracker`: `$BANGER_FIRECRACKER`, then
/// banger's own install directory, then `PATH`.
pub fn locate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BANGER_FIRECRACKER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let own = crate::paths::Dirs::from_env().bin().join("firecracker");
    if own.is_file() {
        return Some(own);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("firecracker"))
        .find(|p| p.is_file())
}

impl Firecracker {
    /// The driver for a located binary (or `firecracker`, failing at launch
    /// with a clear error when there is none).
    pub fn from_env() -> Firecracker {
        Firecracker {
            binary: locate().unwrap_or_else(|| PathBuf::from("firecracker")),
        }
    }

    /// Kernel arguments Firecracker guests need on top of banger's own:
    /// no PCI, reboot through the keyboard controller, no i8042 probing.
    fn kernel_args(plan: &LaunchPlan) -> String {
        let mut args = vec![
            "reboot=k".to_string(),
            "pci=off".to_string(),
            "i8042.noaux".to_string(),
            "i8042.nomux".to_string(),
            "i8042.dumbkbd".to_string(),
        ];
        args.extend(base_kernel_args(plan));
        args.join(" ")
    }

    /// Where Firecracker writes its log and metrics (first, before a boot
    /// or a restore).
    fn log_requests(plan: &LaunchPlan) -> Vec<ApiCall> {
        let logs = log_dir(plan);
        vec![
            ApiCall::put(
                "/logger",
                json!({
                    "log_path": logs.join(LOG_FILE).display().to_string(),
                    "level": "Info",
                    "show_level": true,
                    "show_log_origin": false,
                }),
            ),
            ApiCall::put(
                "/metrics",
                json!({ "metrics_path": logs.join(METRICS_FILE).display().to_string() }),
            ),
        ]
    }

    /// The API calls that configure and start a VM, in order (pure). A
    /// snapshot template's writable drives are named relative to the
    /// process's directory ([`snapshot_dir`]): the snapshot records them
    /// so, and each VM restored from it opens its own copies.
    pub fn config_requests(plan: &LaunchPlan) -> Vec<ApiCall> {
        let rt = &plan.runtime_dir;
        let template = matches!(plan.memory, Memory::Template(_));
        let mut calls = Firecracker::log_requests(plan);
        calls.extend([
            ApiCall::put(
                "/machine-config",
                json!({
                    "vcpu_count": plan.vcpu,
                    "mem_size_mib": plan.memory_mib,
                    "smt": false,
                }),
            ),
            ApiCall::put(
                "/boot-source",
                json!({
                    "kernel_image_path": plan.boot.vmlinux.display().to_string(),
                    "initrd_path": plan.boot.initrd.display().to_string(),
                    "boot_args": Firecracker::kernel_args(plan),
                }),
            ),
        ]);
        for drive in &plan.drives {
            // Firecracker reports the drive id as the virtio-blk serial,
            // which is how the initramfs finds each disk.
            let id = drive.role.serial();
            let path = match drive.path.file_name() {
                Some(name) if template && !drive.read_only => PathBuf::from(name),
                _ => drive.path.clone(),
            };
            calls.push(ApiCall::put(
                format!("/drives/{id}"),
                json!({
                    "drive_id": id,
                    "path_on_host": path.display().to_string(),
                    "is_root_device": false,
                    "is_read_only": drive.read_only,
                    "cache_type": "Writeback",
                }),
            ));
        }
        if plan.network.is_some() {
            calls.push(ApiCall::put(
                "/network-interfaces/eth0",
                json!({
                    "iface_id": "eth0",
                    "host_dev_name": crate::net::TAP,
                    "guest_mac": plan.mac,
                }),
            ));
        }
        calls.push(ApiCall::put(
            "/vsock",
            json!({
                "guest_cid": GUEST_CID,
                "uds_path": rt.join(VSOCK_SOCKET).display().to_string(),
            }),
        ));
        calls.push(ApiCall::put("/entropy", json!({})));
        calls.push(ApiCall::put(
            "/actions",
            json!({ "action_type": "InstanceStart" }),
        ));
        calls
    }

    /// The API calls that restore a snapshot instead of booting (pure):
    /// its memory file mapped privately (Firecracker's `File` backend), its
    /// vsock socket moved to this VM's runtime directory, the VM resumed.
    pub fn restore_requests(plan: &LaunchPlan, memory: &Path, state: &Path) -> Vec<ApiCall> {
        let mut calls = Firecracker::log_requests(plan);
        calls.push(ApiCall::put(
            "/snapshot/load",
            json!({
                "snapshot_path": state.display().to_string(),
                "mem_backend": {
                    "backend_type": "File",
                    "backend_path": memory.display().to_string(),
                },
                "resume_vm": true,
                "vsock_override": {
                    "uds_path": plan.runtime_dir.join(VSOCK_SOCKET).display().to_string(),
                },
            }),
        ));
        calls
    }

    /// The API calls that save a template guest (pure): pause, then a full
    /// snapshot of its state and memory.
    pub fn save_requests(memory: &Path, state: &Path) -> Vec<ApiCall> {
        vec![
            Firecracker::pause_request(true),
            ApiCall::put(
                "/snapshot/create",
                json!({
                    "snapshot_type": "Full",
                    "snapshot_path": state.display().to_string(),
                    "mem_file_path": memory.display().to_string(),
                }),
            ),
        ]
    }

    /// Sends calls in order; the first refusal is the error.
    fn send_all(&self, runtime_dir: &Path, calls: &[ApiCall]) -> Result<(), VmmError> {
        for call in calls {
            let resp = Firecracker::call(runtime_dir, call)?;
            if !resp.is_success() {
                return Err(VmmError::Failed {
                    binary: self.binary.display().to_string(),
                    detail: format!(
                        "{} {} was refused: {}",
                        call.method,
                        call.path,
                        resp.fault_message()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The body that pauses or resumes a running VM.
    pub fn pause_request(paused: bool) -> ApiCall {
        ApiCall {
            method: "PATCH",
            path: "/vm".into(),
            body: json!({ "state": if paused { "Paused" } else { "Resumed" } }),
        }
    }

    /// Sends one call to a VM's API socket.
    pub fn call(runtime_dir: &Path, call: &ApiCall) -> Result<ApiResponse, VmmError> {
        let socket = runtime_dir.join(API_SOCKET);
        let body = call.body.to_string();
        api_socket::request(&socket, call.method, &call.path, Some(&body), API_TIMEOUT).map_err(
            |e| VmmError::Failed {
                binary: NAME.into(),
                detail: format!("{} {}: {e}", call.method, call.path),
            },
        )
    }

    /// Pauses or resumes a running VM.
    pub fn set_paused(runtime_dir: &Path, paused: bool) -> Result<(), VmmError> {
        let call = Firecracker::pause_request(paused);
        let resp = Firecracker::call(runtime_dir, &call)?;
        if resp.is_success() {
            Ok(())
        } else {
            Err(VmmError::Failed {
                binary: NAME.into(),
                detail: format!("{} {}: {}", call.method, call.path, resp.fault_message()),
            })
        }
    }

    fn spawn(&self, plan: &LaunchPlan) -> Result<ProcessIdentity, VmmError> {
        let binary = self.binary.display().to_string();
        let io = |what: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| VmmError::Io { what, path, source }
        };
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&plan.console_log)
            .map_err(io("cannot open", &plan.console_log))?;
        let console2 = console
            .try_clone()
            .map_err(io("cannot open", &plan.console_log))?;
        // Firecracker wants its log and metrics files to exist.
        for f in [LOG_FILE, METRICS_FILE] {
            let path = log_dir(plan).join(f);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io("cannot create", &path))?;
        }
        let api = plan.runtime_dir.join(API_SOCKET);
        let _ = std::fs::remove_file(&api);
        let _ = std::fs::remove_file(plan.runtime_dir.join(VSOCK_SOCKET));
        #[allow(clippy::disallowed_methods)] // the VMM driver spawns its VMM
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--api-sock")
            .arg(&api)
            .arg("--id")
            .arg(&plan.name)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2);
        if let Some(attach) = plan.network {
            super::network::join(&mut cmd, attach)?;
        }
        if let Some(dir) = snapshot_dir(plan) {
            cmd.current_dir(dir);
        }
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of the
        // parent; it runs in the child between fork and exec. The VMM gets
        // its own session so no terminal or process-group signal reaches it.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VmmError::Missing {
                    binary: binary.clone(),
                    package: "firecracker (not in Debian; run: banger system install-firecracker)",
                    env: "BANGER_FIRECRACKER",
                }
            } else {
                VmmError::Failed {
                    binary: binary.clone(),
                    detail: e.to_string(),
                }
            }
        })?;
        let pid = child.id() as i32;
        // The daemon is the parent but never the owner: a thread only reaps
        // the process when it ends, so no zombie stays behind. After a
        // daemon restart, init reaps it.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        ProcessIdentity::of(pid).ok_or_else(|| VmmError::Failed {
            binary,
            detail: "the VMM exited right after starting".into(),
        })
    }

    fn wait_for_api(&self, plan: &LaunchPlan, id: &ProcessIdentity) -> Result<(), VmmError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let api = plan.runtime_dir.join(API_SOCKET);
        loop {
            if !id.is_alive() {
                return Err(VmmError::Failed {
                    binary: self.binary.display().to_string(),
                    detail: format!(
                        "exited before its API came up; see {}",
                        plan.console_log.display()
                    ),
                });
            }
            if let Ok(r) = api_socket::request(&api, "GET", "/", None, API_TIMEOUT)
                && r.is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(VmmError::Failed {
                    binary: self.binary.display().to_string(),
                    detail: format!("its API socket {} did not answer", api.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// For a template or a restore: the directory of the VM's writable
/// drives, which the process runs in (the snapshot names them relative to
/// it).
fn snapshot_dir(plan: &LaunchPlan) -> Option<&Path> {
    if plan.memory == Memory::Anonymous {
        return None;
    }
    plan.drives
        .iter()
        .find(|d| !d.read_only)
        .and_then(|d| d.path.parent())
}

fn log_dir(plan: &LaunchPlan) -> PathBuf {
    plan.console_log
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| plan.runtime_dir.clone())
}

impl Vmm for Firecracker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn launch(&self, plan: &LaunchPlan) -> Result<ProcessIdentity, VmmError> {
        let calls = match &plan.memory {
            Memory::Restore {
                memory: Some(memory),
                state,
            } => Firecracker::restore_requests(plan, memory, state),
            Memory::Restore { memory: None, .. } => {
                return Err(VmmError::Failed {
                    binary: self.binary.display().to_string(),
                    detail: "a snapshot without a memory file is QEMU's, not Firecracker's".into(),
                });
            }
            Memory::Anonymous | Memory::Template(_) => Firecracker::config_requests(plan),
        };
        let id = self.spawn(plan)?;
        let configured = self
            .wait_for_api(plan, &id)
            .and_then(|()| self.send_all(&plan.runtime_dir, &calls));
        match configured {
            Ok(()) => Ok(id),
            Err(e) => {
                id.kill_and_wait(Duration::from_secs(5));
                Err(e)
            }
        }
    }

    fn version(&self) -> Result<String, String> {
        super::version_of(&self.binary)
    }

    fn snapshots(&self) -> bool {
        true
    }

    fn save(&self, runtime_dir: &Path, memory: &Path, state: &Path) -> Result<(), VmmError> {
        // The caller ends the process once this returns.
        self.send_all(runtime_dir, &Firecracker::save_requests(memory, state))
    }

    fn failure_hint(&self, log_dir: &Path) -> Option<String> {
        let log = std::fs::read_to_string(log_dir.join(LOG_FILE)).ok()?;
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(":ERROR]"))
            .map(|l| l.rsplit(":ERROR] ").next().unwrap_or(l))
            .collect();
        (!errors.is_empty())
            .then(|| format!("firecracker: {}", errors[..errors.len().min(2)].join("; ")))
    }

    fn agent_endpoint(&self, runtime_dir: &Path) -> AgentEndpoint {
        AgentEndpoint::HybridVsock {
            socket: runtime_dir.join(VSOCK_SOCKET),
            port: VSOCK_PORT,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::accel::{Accel, AccelChoice};
    use crate::disk::{Drive, DriveRole};
    use crate::vmm::BootFiles;

    /// A plan like the daemon makes.
    pub(crate) fn plan() -> LaunchPlan {
        LaunchPlan {
            name: "dev".into(),
            vcpu: 2,
            memory_mib: 1024,
            boot: BootFiles {
                pvh: false,
                bzimage: "/img/vmlinuz".into(),
                vmlinux: "/img/vmlinux".into(),
                initrd: "/cache/initrd.img".into(),
                hz: None,
            },
            kernel_args: vec!["banger.root=overlay".into()],
            drives: vec![
                Drive {
                    role: DriveRole::Rootfs,
                    path: "/img/rootfs.ext4".into(),
                    read_only: true,
                },
                Drive {
                    role: DriveRole::Overlay,
                    path: "/vm/overlay.ext4".into(),
                    read_only: false,
                },
                Drive {
                    role: DriveRole::Work,
                    path: "/vm/work.ext4".into(),
                    read_only: false,
                },
            ],
            accel: AccelChoice {
                accel: Accel::Kvm,
                reason: "test".into(),
            },
            tsc_khz: Some(2_600_000),
            runtime_dir: "/run/vm".into(),
            console_log: "/vm/console.log".into(),
            network: None,
            mac: crate::net::GUEST_MAC.into(),
            memory: crate::vmm::Memory::Anonymous,
        }
    }

    #[test]
    fn configures_then_starts() {
        let calls = Firecracker::config_requests(&plan());
        let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/logger",
                "/metrics",
                "/machine-config",
                "/boot-source",
                "/drives/rootfs",
                "/drives/overlay",
                "/drives/work",
                "/vsock",
                "/entropy",
                "/actions"
            ]
        );
        let boot = &calls[3].body;
        assert_eq!(boot["kernel_image_path"], "/img/vmlinux");
        let args = boot["boot_args"].as_str().unwrap();
        assert!(args.contains("banger.root=overlay") && args.contains("console=ttyS0"));
        // KVM guests need no TSC hint.
        assert!(!args.contains("tsc_early_khz"), "{args}");
        assert_eq!(calls[4].body["is_read_only"], true);
        assert_eq!(calls[6].body["is_read_only"], false);
        assert_eq!(calls[9].body["action_type"], "InstanceStart");
    }

    #[test]
    fn a_networked_vm_gets_the_keepers_tap() {
        let mut p = plan();
        p.network = Some(crate::vmm::network::NetAttach { keeper_pid: 1 });
        let calls = Firecracker::config_requests(&p);
        let nic = calls
            .iter()
            .find(|c| c.path == "/network-interfaces/eth0")
            .expect("a network interface");
        assert_eq!(nic.body["host_dev_name"], "tap0");
        assert_eq!(nic.body["guest_mac"], "52:54:00:66:00:02");
        assert_eq!(calls.last().unwrap().body["action_type"], "InstanceStart");
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan();
        p.runtime_dir = dir.path().into();
        p.console_log = dir.path().join("console.log");
        let fc = Firecracker {
            binary: "/nonexistent/firecracker".into(),
        };
        let err = fc.launch(&p).unwrap_err();
        assert!(err.to_string().contains("install-firecracker"), "{err}");
    }
}
