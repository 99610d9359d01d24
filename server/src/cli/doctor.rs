//! `banger doctor`: what this host offers banger, what is missing and what
//! to do about it. Reads the host directly; asks the daemon only whether it
//! runs.

use super::Failure;
use super::printer::Printer;
use crate::accel;
use crate::api::BangerApiClient;
use crate::client;
use crate::image::{DEFAULT_IMAGE, ImageStore};
use crate::paths::Dirs;
use crate::vmm::{self, VmmPreference};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, with a limitation worth knowing.
    Warn,
    /// banger cannot do its main job until this is fixed.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// Outcome.
    pub level: Level,
    /// What was checked.
    pub name: &'static str,
    /// What was found, and what to do.
    pub detail: String,
}

fn check(level: Level, name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level,
        name,
        detail: detail.into(),
    }
}

/// One line per kind of need in `tool::PROGRAMS`: which programs are
/// missing and the packages that bring them. A missing core or image-build
/// program fails; a missing test tool only warns.
fn program_checks(found: impl Fn(&str) -> bool) -> Vec<Check> {
    use crate::tool::{Need, PROGRAMS};
    [
        (Need::Core, "programs", Level::Fail),
        (Need::ImageBuild, "image tools", Level::Fail),
        (Need::Tests, "test tools", Level::Warn),
    ]
    .into_iter()
    .map(|(need, name, level)| {
        let wanted: Vec<_> = PROGRAMS.iter().filter(|p| p.need == need).collect();
        let missing: Vec<_> = wanted.iter().filter(|p| !found(p.name)).collect();
        if missing.is_empty() {
            let names: Vec<&str> = wanted.iter().map(|p| p.name).collect();
            return check(Level::Ok, name, format!("found {}", names.join(", ")));
        }
        let mut packages: Vec<&str> = missing.iter().map(|p| p.package).collect();
        packages.dedup();
        let named: Vec<String> = missing
            .iter()
            .map(|p| format!("{} (package {})", p.name, p.package))
            .collect();
        check(
            level,
            name,
            format!(
                "missing {}; install them: apt-get install {} (or scripts/install-host-deps.sh)",
                named.join(", "),
                packages.join(" ")
            ),
        )
    })
    .collect()
}

/// Under this much free space where the cache lives, doctor warns: an
/// image build takes about 1.5 GB, and VM disks grow as guests write.
const LOW_DISK: u64 = 5 << 30;

/// Free space where the cache lives, and what `system prune` would free
/// when the daemon said (pure).
fn disk_check(dir: &std::path::Path, free: Option<u64>, reclaimable: Option<u64>) -> Check {
    let gb = |b: u64| format!("{:.1} GB", b as f64 / f64::from(1u32 << 30));
    let prune = match reclaimable {
        Some(b) if b > 0 => format!("; banger system prune frees {}", gb(b)),
        _ => String::new(),
    };
    match free {
        None => check(
            Level::Warn,
            "disk",
            format!("cannot tell the free space of {}", dir.display()),
        ),
        Some(free) if free < LOW_DISK => check(
            Level::Warn,
            "disk",
            format!(
                "only {} free for {}: image builds and VM disks need room{prune}",
                gb(free),
                dir.display()
            ),
        ),
        Some(free) => check(
            Level::Ok,
            "disk",
            format!("{} free for {}{prune}", gb(free), dir.display()),
        ),
    }
}

/// Bytes free for an unprivileged writer on the file system of `dir` (or
/// of its nearest existing parent).
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let stat = nix::sys::statvfs::statvfs(existing).ok()?;
    Some(stat.blocks_available() * stat.fragment_size())
}

/// Runs every check (the daemon's state, and what it would prune, are
/// passed in).
pub fn report(dirs: &Dirs, daemon: Option<String>, reclaimable: Option<u64>) -> Vec<Check> {
    let mut out = Vec::new();
    let facts = accel::probe();
    let host_accel = accel::choose(&facts);
    out.push(check(
        if host_accel.accel == accel::Accel::Kvm {
            Level::Ok
        } else {
            Level::Warn
        },
        "accel",
        format!(
            "{} ({}){}",
            host_accel.accel.as_str(),
            host_accel.reason,
            if facts.kvm_pvm {
                "; a PVM-enabled guest kernel would run with KVM"
            } else {
                ""
            }
        ),
    ));
    if host_accel.accel == accel::Accel::Tcg {
        out.push(match facts.tsc_khz {
            Some(khz) => check(Level::Ok, "tsc", format!("{khz} kHz (given to emulated guests)")),
            None => check(
                Level::Warn,
                "tsc",
                "no TSC frequency found (kernel log, sysfs or /proc/cpuinfo); emulated guests calibrate their clock themselves and may hang on a busy host",
            ),
        });
    }
    let qemu = vmm::driver(vmm::qemu::NAME).map(|d| d.version());
    out.push(match qemu {
        Some(Ok(v)) => check(Level::Ok, "qemu", v),
        Some(Err(e)) => check(
            Level::Fail,
            "qemu",
            format!("{e}; install it: apt-get install qemu-system-x86"),
        ),
        None => check(Level::Fail, "qemu", "driver missing from this build"),
    });
    let fc_path = vmm::firecracker::locate();
    out.push(match &fc_path {
        Some(path) => match vmm::driver(vmm::firecracker::NAME).map(|d| d.version()) {
            Some(Ok(v)) => check(
                Level::Ok,
                "firecracker",
                format!("{v} at {}", path.display()),
            ),
            Some(Err(e)) => check(Level::Warn, "firecracker", e),
            None => check(Level::Fail, "firecracker", "driver missing from this build"),
        },
        None => check(
            Level::Warn,
            "firecracker",
            "not installed; install it with: banger system install-firecracker",
        ),
    });
    let choice = vmm::choose_vmm(VmmPreference::Auto, &host_accel, fc_path.as_deref());
    out.push(check(
        Level::Ok,
        "vmm",
        format!(
            "{} ({}); accel {} ({})",
            choice.vmm,
            choice.reason,
            choice.accel.accel.as_str(),
            choice.accel.reason
        ),
    ));
    out.extend(program_checks(|name| crate::tool::find(name).is_some()));
    out.push(network_check(
        std::path::Path::new("/dev/net/tun").exists(),
        nix::unistd::geteuid().is_root(),
        std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|v| v.trim().parse().ok()),
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
            .ok()
            .map(|v| v.trim() == "1"),
    ));
    let store = ImageStore::new(dirs.images());
    out.push(match store.find(DEFAULT_IMAGE) {
        Ok(Some(image)) => check(
            Level::Ok,
            "image",
            format!(
                "{} {} (kernel {})",
                image.name,
                &image.id[..12],
                image.manifest.kernel_version
            ),
        ),
        Ok(None) => check(
            Level::Ok,
            "image",
            format!(
                "{DEFAULT_IMAGE} not built yet; the first vm run builds it (or: banger image build)"
            ),
        ),
        Err(e) => check(Level::Fail, "image", e.to_string()),
    });
    out.push(disk_check(
        &dirs.cache,
        free_bytes(&dirs.cache),
        reclaimable,
    ));
    let db = dirs.database();
    out.push(if db.exists() {
        check(Level::Ok, "state", db.display().to_string())
    } else {
        // A fresh install has no database yet; that is normal.
        check(
            Level::Ok,
            "state",
            format!("{} will be created on first daemon start", db.display()),
        )
    });
    out.push(match daemon {
        Some(info) => check(Level::Ok, "daemon", info),
        None => check(
            Level::Ok,
            "daemon",
            "not running; banger starts it when needed",
        ),
    });
    out
}

/// `banger doctor`: prints every check; exits 1 when one fails.
/// Whether this host can give each VM a network of its own (pure): a tun
/// device, and as a user, user namespaces (pasta makes one per VM).
fn network_check(
    tun: bool,
    root: bool,
    max_user_namespaces: Option<u64>,
    unprivileged_userns_clone: Option<bool>,
) -> Check {
    if !tun {
        return check(
            Level::Fail,
            "network",
            "/dev/net/tun is missing: VMs cannot get a network (load the tun module: modprobe tun)",
        );
    }
    if !root && (max_user_namespaces == Some(0) || unprivileged_userns_clone == Some(false)) {
        return check(
            Level::Fail,
            "network",
            "user namespaces are off for users: VMs cannot get a network without root (sysctl user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1)",
        );
    }
    check(
        Level::Ok,
        "network",
        "a user+network namespace per VM (pasta), its own tap and rules",
    )
}

pub(crate) async fn run(dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    let (daemon, reclaimable) = match client::connect_existing(dirs).await {
        Ok(Some(c)) => {
            let info = c.daemon_info().await.ok().map(|i| {
                format!(
                    "bangerd {} running (pid {}), socket {}",
                    i.version, i.pid, i.socket
                )
            });
            let plan = c.system_prune(false, None).await.ok();
            (info, plan.map(|p| p.iter().map(|i| i.bytes).sum()))
        }
        _ => (None, None),
    };
    let dirs2 = dirs.clone();
    let checks = tokio::task::spawn_blocking(move || report(&dirs2, daemon, reclaimable))
        .await
        .map_err(|e| Failure::new(1, format!("doctor failed: {e}")))?;
    let mut failed = false;
    for c in &checks {
        let tag = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => {
                failed = true;
                "FAIL"
            }
        };
        printer.line(&format!("{tag} {:<12} {}", c.name, c.detail));
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_check_warns_when_little_is_free_and_says_what_prune_frees() {
        let dir = std::path::Path::new("/c");
        let ok = disk_check(dir, Some(20 << 30), Some(0));
        assert_eq!(ok.level, Level::Ok);
        assert_eq!(ok.detail, "20.0 GB free for /c");
        let low = disk_check(dir, Some(2 << 30), Some(3 << 29));
        assert_eq!(low.level, Level::Warn);
        assert_eq!(
            low.detail,
            "only 2.0 GB free for /c: image builds and VM disks need room; banger system prune frees 1.5 GB"
        );
        assert_eq!(disk_check(dir, None, None).level, Level::Warn);
        assert!(free_bytes(std::path::Path::new("/no/such/dir/below/root")).is_some());
    }

    #[test]
    fn the_network_check_names_what_is_missing() {
        assert_eq!(
            network_check(true, false, Some(15000), Some(true)).level,
            Level::Ok
        );
        assert_eq!(
            network_check(true, true, Some(0), Some(false)).level,
            Level::Ok
        );
        let tun = network_check(false, true, None, None);
        assert!(tun.level == Level::Fail && tun.detail.contains("modprobe tun"));
        let userns = network_check(true, false, Some(0), None);
        assert!(userns.level == Level::Fail && userns.detail.contains("max_user_namespaces"));
        assert_eq!(
            network_check(true, false, None, Some(false)).level,
            Level::Fail
        );
    }

    #[test]
    fn each_missing_program_is_named_with_its_package() {
        let checks = program_checks(|name| !matches!(name, "debugfs" | "mmdebstrap" | "cpio"));
        let core = &checks[0];
        assert_eq!(core.level, Level::Fail);
        assert!(
            core.detail.starts_with(
                "missing debugfs (package e2fsprogs); install them: apt-get install e2fsprogs"
            ),
            "{}",
            core.detail
        );
        assert_eq!(checks[1].level, Level::Fail);
        assert!(checks[1].detail.contains("mmdebstrap (package mmdebstrap)"));
        assert_eq!(checks[2].level, Level::Warn);
        assert!(checks[2].detail.contains("cpio (package cpio)"));
        let all = program_checks(|_| true);
        assert!(all.iter().all(|c| c.level == Level::Ok));
    }
}
