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

fn on_path(tool: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&crate::paths::tool_search_path())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs every check (the daemon's state is passed in).
pub fn report(dirs: &Dirs, daemon: Option<String>) -> Vec<Check> {
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
    let missing: Vec<&str> = ["mmdebstrap", "mkfs.ext4", "debugfs", "apt-get", "dpkg-deb"]
        .into_iter()
        .filter(|t| on_path(t).is_none())
        .collect();
    out.push(if missing.is_empty() {
        check(
            Level::Ok,
            "image tools",
            "mmdebstrap, e2fsprogs, apt and dpkg found",
        )
    } else {
        check(
            Level::Fail,
            "image tools",
            format!(
                "missing {}; install them: apt-get install mmdebstrap e2fsprogs",
                missing.join(", ")
            ),
        )
    });
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
pub(crate) async fn run(dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    let daemon = match client::connect_existing(dirs).await {
        Ok(Some(c)) => c.daemon_info().await.ok().map(|i| {
            format!(
                "bangerd {} running (pid {}), socket {}",
                i.version, i.pid, i.socket
            )
        }),
        _ => None,
    };
    let dirs2 = dirs.clone();
    let checks = tokio::task::spawn_blocking(move || report(&dirs2, daemon))
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
