//! VMM drivers behind one trait. This module is the only place that spawns
//! VMM processes.
//!
//! **Invariant:** a VMM process is never tied to the lifetime of a request
//! or of the daemon. Drivers start it detached (its own session, not a child
//! the daemon must reap, no kill-on-drop); it ends only through an explicit
//! stop, kill or delete, or when the guest powers off.

pub mod qemu;

use std::path::{Path, PathBuf};

use crate::accel::AccelChoice;
use crate::disk::Drive;
use crate::process::ProcessIdentity;

/// Starting a VMM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The VMM binary is missing.
    #[error("{binary} not found; install it (Debian: apt-get install {package}) or set {env}")]
    Missing {
        /// Binary name.
        binary: String,
        /// Debian package providing it.
        package: &'static str,
        /// Environment variable overriding its path.
        env: &'static str,
    },
    /// The VMM refused to start.
    #[error("{binary} failed to start: {detail}")]
    Failed {
        /// Binary name.
        binary: String,
        /// What it said.
        detail: String,
    },
    /// File-system trouble around the launch.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The kernel and initramfs a guest boots.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// Compressed kernel (bzImage), for QEMU.
    pub bzimage: PathBuf,
    /// Uncompressed ELF kernel, for Firecracker.
    pub vmlinux: PathBuf,
    /// Initramfs (with the per-host agent segment prepended).
    pub initrd: PathBuf,
}

/// Everything a driver needs to start one VM.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    /// VM name (used for the process title and guest hostname).
    pub name: String,
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Kernel and initramfs.
    pub boot: BootFiles,
    /// Kernel command-line arguments beyond the console and clock ones the
    /// driver adds.
    pub kernel_args: Vec<String>,
    /// Block devices, in attach order.
    pub drives: Vec<Drive>,
    /// Accelerator and why.
    pub accel: AccelChoice,
    /// Host TSC frequency, passed to the guest under emulation.
    pub tsc_khz: Option<u64>,
    /// Directory for sockets and pid files.
    pub runtime_dir: PathBuf,
    /// Where the guest console is appended.
    pub console_log: PathBuf,
}

/// How the host reaches a VM's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// A unix socket carrying the agent's byte stream (QEMU chardev).
    Stream(PathBuf),
    /// Firecracker's hybrid vsock: a unix socket plus `CONNECT <port>`.
    HybridVsock {
        /// The vsock unix socket.
        socket: PathBuf,
        /// Guest port.
        port: u32,
    },
}

/// A VMM driver.
pub trait Vmm: Send + Sync {
    /// Driver name, stored with each VM.
    fn name(&self) -> &'static str;
    /// Starts the VMM detached and returns once its process runs and its
    /// agent endpoint exists. Blocking.
    fn launch(&self, plan: &LaunchPlan) -> Result<ProcessIdentity, VmmError>;
    /// Where the agent of a VM launched with `runtime_dir` is reached; stable
    /// across daemon restarts.
    fn agent_endpoint(&self, runtime_dir: &Path) -> AgentEndpoint;
}

/// The drivers this build has, by name.
pub fn driver(name: &str) -> Option<Box<dyn Vmm>> {
    match name {
        qemu::NAME => Some(Box::new(qemu::Qemu::from_env())),
        _ => None,
    }
}

/// Kernel arguments every banger guest gets.
pub fn base_kernel_args(plan: &LaunchPlan) -> Vec<String> {
    let mut args = vec![
        "console=ttyS0".to_string(),
        "panic=-1".to_string(),
        "quiet".to_string(),
        "systemd.show_status=0".to_string(),
        format!("systemd.hostname={}", plan.name),
    ];
    if plan.accel.accel == crate::accel::Accel::Tcg {
        // Emulated guests without a PIT/HPET can hang calibrating the TSC on
        // a busy host; the host's frequency avoids the calibration.
        if let Some(khz) = plan.tsc_khz {
            args.push(format!("tsc_early_khz={khz}"));
        }
    }
    args.extend(plan.kernel_args.iter().cloned());
    args
}
