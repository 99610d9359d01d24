//! VMM drivers behind one trait. This module is the only place that spawns
//! VMM processes (and, in debug builds, the host process of the `fake`
//! test double).
//!
//! **Invariant:** a VMM process is never tied to the lifetime of a request
//! or of the daemon. Drivers start it detached (its own session, not a child
//! the daemon must reap, no kill-on-drop); it ends only through an explicit
//! stop, kill or delete, or when the guest powers off.

pub mod api_socket;
#[cfg(debug_assertions)]
pub mod fake;
pub mod firecracker;
#[cfg(test)]
mod firecracker_api_check;
pub mod network;

#[cfg(test)]
mod choice_tests {
    use super::*;
    use crate::accel::Accel;

    fn accel(accel: Accel, reason: &str) -> AccelChoice {
        AccelChoice {
            accel,
            reason: reason.into(),
        }
    }

    #[test]
    fn auto_on_a_pvm_host_chooses_qemu_and_says_why() {
        let host = accel(Accel::Tcg, "kvm_pvm cannot run this kernel");
        let fc = Path::new("/usr/bin/firecracker");
        let c = choose_vmm(VmmPreference::Auto, &host, Some(fc));
        assert_eq!(c.vmm, "qemu");
        assert!(
            c.reason.contains("kvm_pvm cannot run this kernel"),
            "{}",
            c.reason
        );
        let c = choose_vmm(VmmPreference::Auto, &host, None);
        assert_eq!(c.vmm, "qemu");
        assert!(c.reason.contains("not installed"), "{}", c.reason);
    }

    #[test]
    fn auto_with_kvm_and_firecracker_chooses_firecracker() {
        let host = accel(Accel::Kvm, "hardware virtualisation available");
        let c = choose_vmm(
            VmmPreference::Auto,
            &host,
            Some(Path::new("/x/firecracker")),
        );
        assert_eq!(c.vmm, "firecracker");
        assert_eq!(c.accel.accel, Accel::Kvm);
        let c = choose_vmm(VmmPreference::Auto, &host, None);
        assert_eq!((c.vmm, c.accel.accel), ("qemu", Accel::Kvm));
    }

    #[test]
    fn forced_firecracker_on_a_pvm_host_warns() {
        let host = accel(Accel::Tcg, "kvm_pvm cannot run this kernel");
        let c = choose_vmm(VmmPreference::Firecracker, &host, None);
        assert_eq!((c.vmm, c.accel.accel), ("firecracker", Accel::Kvm));
        assert!(
            c.accel.reason.contains("will not boot"),
            "{}",
            c.accel.reason
        );
        assert_eq!("qemu".parse::<VmmPreference>(), Ok(VmmPreference::Qemu));
        assert!("kvm".parse::<VmmPreference>().is_err());
    }
}
pub mod qemu;
pub mod qmp;

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
    /// Uncompressed ELF kernel, for Firecracker (and for QEMU when `pvh`).
    pub vmlinux: PathBuf,
    /// `vmlinux` has a PVH entry ([`crate::image::boots_as_pvh`]): QEMU
    /// under emulation boots it instead of the bzImage, without
    /// decompressing in the guest.
    pub pvh: bool,
    /// Initramfs (with the per-host agent segment prepended).
    pub initrd: PathBuf,
    /// The kernel's tick rate, when known (an image's own kernel).
    pub hz: Option<u32>,
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
    /// The VM's network to join (its tap is [`crate::net::TAP`]), if any.
    pub network: Option<network::NetAttach>,
    /// The MAC address of the guest's network interface.
    pub mac: String,
    /// Where guest memory lives, and whether the guest boots or is restored.
    pub memory: Memory,
}

/// A guest's memory and how it begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memory {
    /// Ordinary private memory; the guest boots.
    Anonymous,
    /// Memory in this file, shared with it: a snapshot template boots, and
    /// its memory is the file when it is saved.
    Template(PathBuf),
    /// The guest is restored, not booted: memory mapped privately (copy on
    /// write) from a snapshot's memory file, or (`None`, a snapshot of a
    /// running VM) read with the device state from its state file. The
    /// snapshot's files are never written.
    Restore {
        /// The snapshot's memory file, if its memory is not in `state`.
        memory: Option<PathBuf>,
        /// The snapshot's device state.
        state: PathBuf,
    },
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
    /// The VMM binary's version line, or why it cannot run.
    fn version(&self) -> Result<String, String>;
    /// What the VMM's own log says went wrong, for error messages.
    fn failure_hint(&self, _log_dir: &Path) -> Option<String> {
        None
    }
    /// Whether this driver can save a guest and restore it
    /// ([`Memory::Template`], [`Memory::Restore`], [`Vmm::save`]).
    fn snapshots(&self) -> bool {
        false
    }
    /// Pauses a running guest and writes its snapshot (device state and
    /// memory together in `state`); the guest stays paused until
    /// [`Vmm::resume`]. Blocking.
    fn snapshot_running(&self, _runtime_dir: &Path, _state: &Path) -> Result<(), VmmError> {
        Err(VmmError::Failed {
            binary: self.name().to_string(),
            detail: "this driver cannot snapshot a running vm yet".into(),
        })
    }
    /// Lets a guest paused by [`Vmm::snapshot_running`] run again.
    fn resume(&self, _runtime_dir: &Path) -> Result<(), VmmError> {
        Err(VmmError::Failed {
            binary: self.name().to_string(),
            detail: "this driver cannot resume a vm".into(),
        })
    }
    /// Pauses a guest launched with [`Memory::Template`] and writes its
    /// snapshot: device state to `state`, memory to `memory` (for QEMU
    /// the template's memory file already is it). The VMM may end; the
    /// caller ends it in any case. Blocking.
    fn save(&self, _runtime_dir: &Path, _memory: &Path, _state: &Path) -> Result<(), VmmError> {
        Err(VmmError::Failed {
            binary: self.name().to_string(),
            detail: "this driver cannot save a guest".into(),
        })
    }
}

/// The drivers this build has, by name.
pub fn driver(name: &str) -> Option<Box<dyn Vmm>> {
    match name {
        qemu::NAME => Some(Box::new(qemu::Qemu::from_env())),
        firecracker::NAME => Some(Box::new(firecracker::Firecracker::from_env())),
        #[cfg(debug_assertions)]
        fake::NAME => Some(Box::new(fake::FakeVmm::from_env())),
        _ => None,
    }
}

/// Runs `binary --version` and returns its first line.
fn version_of(binary: &Path) -> Result<String, String> {
    #[allow(clippy::disallowed_methods)] // VMM binaries, spawned by their drivers' module
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(str::to_string)
        .filter(|_| out.status.success())
        .ok_or_else(|| format!("{} --version failed", binary.display()))
}

/// Which VMM the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmPreference {
    /// Firecracker where it can run the guest, else QEMU.
    Auto,
    /// Firecracker, even where the guest cannot boot (the error says why).
    Firecracker,
    /// QEMU.
    Qemu,
}

impl std::str::FromStr for VmmPreference {
    type Err = String;

    fn from_str(s: &str) -> Result<VmmPreference, String> {
        match s {
            "auto" => Ok(VmmPreference::Auto),
            "firecracker" => Ok(VmmPreference::Firecracker),
            "qemu" => Ok(VmmPreference::Qemu),
            other => Err(format!(
                "invalid vmm {other:?}: use auto, firecracker or qemu"
            )),
        }
    }
}

/// A VMM decision and the accelerator it implies, each with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmChoice {
    /// Driver name.
    pub vmm: &'static str,
    /// Why this VMM.
    pub reason: String,
    /// Accelerator and why.
    pub accel: AccelChoice,
}

/// Chooses the VMM (pure). `host_accel` is what QEMU would use for this
/// guest kernel; Firecracker always needs KVM.
pub fn choose_vmm(
    preference: VmmPreference,
    host_accel: &AccelChoice,
    firecracker_binary: Option<&Path>,
) -> VmmChoice {
    use crate::accel::Accel;
    let kvm_ok = host_accel.accel == Accel::Kvm;
    let firecracker = |reason: String| VmmChoice {
        vmm: firecracker::NAME,
        reason,
        accel: if kvm_ok {
            host_accel.clone()
        } else {
            AccelChoice {
                accel: Accel::Kvm,
                reason: format!("{}; the guest will not boot", host_accel.reason),
            }
        },
    };
    let qemu = |reason: String| VmmChoice {
        vmm: qemu::NAME,
        reason,
        accel: host_accel.clone(),
    };
    match preference {
        VmmPreference::Qemu => qemu("requested".into()),
        VmmPreference::Firecracker => firecracker("requested".into()),
        VmmPreference::Auto => match (firecracker_binary, kvm_ok) {
            (Some(_), true) => firecracker(
                "auto: firecracker is installed and KVM can run the guest kernel".into(),
            ),
            (None, _) => qemu(
                "auto: firecracker is not installed (banger system install-firecracker)".into(),
            ),
            (Some(_), false) => qemu(format!(
                "auto: firecracker needs KVM, and {}",
                host_accel.reason
            )),
        },
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
        // The guest carries no AppArmor profiles (nor the parser): with
        // the LSM on, a container engine in the guest cannot confine its
        // containers and refuses to run them.
        "apparmor=0".to_string(),
    ];
    if plan.accel.accel == crate::accel::Accel::Tcg {
        // Emulated guests without a PIT/HPET can hang calibrating the TSC on
        // a busy host; the host's frequency avoids the calibration.
        if let Some(khz) = plan.tsc_khz {
            args.push(format!("tsc_early_khz={khz}"));
        }
        // The kernel's crypto self-tests at boot: under emulation one of
        // them was seen to spin for minutes ("soft lockup ...
        // [cryptomgr_test]"), and they are boot time a sandbox does not
        // need (the algorithms are the distribution kernel's own).
        args.push("cryptomgr.notests".to_string());
        // Debian's kernel zeroes every page it hands out (init_on_alloc=1,
        // hardening against a kernel bug leaking a page's old contents).
        // Under emulation each zeroed page is emulated stores: a cold boot
        // to ready took ~0.33 s longer with it (medians of 5, two
        // alternating rounds). The guest is one user's sandbox: what a page
        // held before is that same user's, and the boundary that matters is
        // the VM's, which this does not touch.
        args.push("init_on_alloc=0".to_string());
        // An emulated CPU has no invariant-TSC flag, so with two vCPUs the
        // kernel called the TSC unsynchronized and fell back to the only
        // other clock a microVM has: jiffies. The guest then kept time in
        // 4 ms ticks (clock_getres 4 ms, no high-resolution timers, every
        // sleep rounded up to a tick). QEMU's emulated TSC is the host's,
        // shared by all vCPUs and at a constant rate: it is reliable.
        args.push("tsc=reliable".to_string());
        // Each vCPU but the first measured its delay loop at boot
        // (calibrate_delay: the emulated TSC is not flagged constant, so
        // it could not take the first one's), while the first waited:
        // ~60 ms of an emulated boot. Loops per jiffy is TSC cycles per
        // tick, given here when the kernel's tick rate is known.
        if let (Some(khz), Some(hz)) = (plan.tsc_khz, plan.boot.hz)
            && hz > 0
        {
            args.push(format!("lpj={}", khz * 1000 / u64::from(hz)));
        }
    }
    args.extend(plan.kernel_args.iter().cloned());
    args
}
