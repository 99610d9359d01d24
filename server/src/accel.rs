//! Choosing how the guest CPU runs: hardware virtualisation (KVM) when the
//! host's KVM can run a stock guest kernel, software emulation (TCG)
//! otherwise, and always saying why.
//!
//! Probing reads the host; deciding is a pure function of what was probed.

use serde::{Deserialize, Serialize};

/// What the host offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostFacts {
    /// `/dev/kvm` exists.
    pub kvm_device: bool,
    /// `/dev/kvm` opens read-write for this user.
    pub kvm_accessible: bool,
    /// The `kvm_pvm` module provides KVM (runs only PVM-enabled guest kernels).
    pub kvm_pvm: bool,
    /// `kvm_intel` or `kvm_amd` is loaded.
    pub kvm_hw_module: bool,
    /// The CPU advertises vmx or svm.
    pub cpu_virt_flags: bool,
    /// Host TSC frequency in kHz, when known.
    pub tsc_khz: Option<u64>,
}

/// The accelerator chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    /// Its name on QEMU's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A choice and its reason, shown to users as `accel: tcg (reason)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    /// The accelerator.
    pub accel: Accel,
    /// Why, in a few words.
    pub reason: String,
}

/// Picks the accelerator for a guest kernel: a PVM-enabled kernel runs with
/// KVM on a `kvm_pvm` host; otherwise as [`choose`].
pub fn choose_for(facts: &HostFacts, pvm_kernel: bool) -> AccelChoice {
    if pvm_kernel && facts.kvm_device && facts.kvm_pvm {
        return if facts.kvm_accessible {
            AccelChoice {
                accel: Accel::Kvm,
                reason: "pvm guest kernel on kvm_pvm".into(),
            }
        } else {
            AccelChoice {
                accel: Accel::Tcg,
                reason: "/dev/kvm is not accessible to this user (add it to the kvm group)".into(),
            }
        };
    }
    choose(facts)
}

/// Picks the accelerator for a stock (non-PVM) guest kernel.
pub fn choose(facts: &HostFacts) -> AccelChoice {
    let (accel, reason) = if !facts.kvm_device {
        (Accel::Tcg, "no /dev/kvm on this host")
    } else if facts.kvm_pvm && !facts.kvm_hw_module {
        (Accel::Tcg, "kvm_pvm cannot run this kernel")
    } else if !facts.kvm_accessible {
        (
            Accel::Tcg,
            "/dev/kvm is not accessible to this user (add it to the kvm group)",
        )
    } else if !facts.kvm_hw_module && !facts.cpu_virt_flags {
        (Accel::Tcg, "the cpu has no vmx/svm virtualisation")
    } else {
        (Accel::Kvm, "hardware virtualisation available")
    };
    AccelChoice {
        accel,
        reason: reason.to_string(),
    }
}

/// Reads the host.
pub fn probe() -> HostFacts {
    let kvm_device = std::path::Path::new("/dev/kvm").exists();
    let kvm_accessible = kvm_device
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
    let module = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    HostFacts {
        kvm_device,
        kvm_accessible,
        kvm_pvm: module("kvm_pvm"),
        kvm_hw_module: module("kvm_intel") || module("kvm_amd"),
        cpu_virt_flags: cpu_has_virt_flags(&cpuinfo),
        tsc_khz: tsc_khz_from_kmsg()
            .or_else(|| {
                std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            })
            .or_else(|| tsc_khz_from_cpuinfo(&cpuinfo)),
    }
}

fn cpu_has_virt_flags(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The kernel logs the calibrated TSC as `tsc: Detected 2596.122 MHz
/// processor`. The kernel log may be root-only; then this is `None`.
fn tsc_khz_from_kmsg() -> Option<u64> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut buf = vec![0u8; 8192];
    // Each read returns one record; stop at EAGAIN (end of the buffer).
    for _ in 0..20000 {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => return None,
        };
        if let Some(khz) = parse_tsc_line(&String::from_utf8_lossy(&buf[..n])) {
            return Some(khz);
        }
    }
    None
}

fn parse_tsc_line(line: &str) -> Option<u64> {
    let rest = &line[line.find("tsc: Detected ")? + "tsc: Detected ".len()..];
    let mhz = rest.split_whitespace().next()?;
    mhz_to_khz(mhz)
}

fn mhz_to_khz(mhz: &str) -> Option<u64> {
    let (int, frac) = mhz.split_once('.').unwrap_or((mhz, "0"));
    let frac3: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
    Some(int.parse::<u64>().ok()? * 1000 + frac3.parse::<u64>().ok()?)
}

/// Fallbacks every user can read (the kernel log may be root-only): the
/// nominal frequency in the model name ("@ 2.60GHz"), else the `cpu MHz`
/// line (on a virtual machine, the TSC frequency its hypervisor gives).
fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let nominal = || {
        let line = cpuinfo.lines().find(|l| l.starts_with("model name"))?;
        let ghz = line.rsplit('@').next()?.trim().strip_suffix("GHz")?;
        let (int, frac) = ghz.split_once('.').unwrap_or((ghz, "0"));
        let frac6: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        Some(int.parse::<u64>().ok()? * 1_000_000 + frac6.parse::<u64>().ok()?)
    };
    let current = || {
        let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
        mhz_to_khz(line.split_once(':')?.1.trim()).filter(|khz| *khz > 0)
    };
    nominal().or_else(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            kvm_device: true,
            kvm_accessible: true,
            kvm_pvm: false,
            kvm_hw_module: true,
            cpu_virt_flags: true,
            tsc_khz: None,
        }
    }

    #[test]
    fn choices() {
        assert_eq!(choose(&facts()).accel, Accel::Kvm);
        let pvm = HostFacts {
            kvm_pvm: true,
            kvm_hw_module: false,
            cpu_virt_flags: false,
            ..facts()
        };
        assert_eq!(
            choose(&pvm),
            AccelChoice {
                accel: Accel::Tcg,
                reason: "kvm_pvm cannot run this kernel".into()
            }
        );
        let none = HostFacts {
            kvm_device: false,
            ..facts()
        };
        assert_eq!(choose(&none).accel, Accel::Tcg);
        let denied = HostFacts {
            kvm_accessible: false,
            ..facts()
        };
        assert!(choose(&denied).reason.contains("not accessible"));
    }

    #[test]
    fn a_pvm_kernel_runs_with_kvm_on_a_pvm_host() {
        let pvm = HostFacts {
            kvm_pvm: true,
            kvm_hw_module: false,
            cpu_virt_flags: false,
            ..facts()
        };
        assert_eq!(choose_for(&pvm, true).accel, Accel::Kvm);
        assert_eq!(choose_for(&pvm, false).accel, Accel::Tcg);
        // On an ordinary KVM host a PVM kernel changes nothing.
        assert_eq!(choose_for(&facts(), true), choose(&facts()));
    }

    #[test]
    fn tsc_parsing() {
        assert_eq!(
            parse_tsc_line("6,42,66,-;tsc: Detected 2596.122 MHz processor"),
            Some(2_596_122)
        );
        assert_eq!(
            parse_tsc_line("tsc: Detected 2600.000 MHz processor"),
            Some(2_600_000)
        );
        assert_eq!(parse_tsc_line("other"), None);
        assert_eq!(
            tsc_khz_from_cpuinfo("model name\t: Intel(R) Xeon(R) CPU @ 2.60GHz\n"),
            Some(2_600_000)
        );
        // This machine's model name has no "@ N GHz": the cpu MHz line.
        assert_eq!(
            tsc_khz_from_cpuinfo("model name\t: AMD EPYC\ncpu MHz\t\t: 2596.120\n"),
            Some(2_596_120)
        );
        assert_eq!(tsc_khz_from_cpuinfo("model name\t: AMD EPYC\n"), None);
        assert!(cpu_has_virt_flags("flags\t: fpu vmx sse\n"));
        assert!(!cpu_has_virt_flags("flags\t: fpu sse\n"));
    }
}
