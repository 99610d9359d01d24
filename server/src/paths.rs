//! Where banger keeps things, per user, following the XDG base directories.
//!
//! - runtime (`$XDG_RUNTIME_DIR/banger`): the daemon socket and lock, and
//!   per-VM sockets and pid files; gone after a reboot, as running VMs are.
//! - state (`$XDG_STATE_HOME/banger`): the database and per-VM disks.
//! - cache (`$XDG_CACHE_HOME/banger`): images and downloaded packages, which
//!   can be rebuilt.
//! - data (`$XDG_DATA_HOME/banger`): programs banger installs for the user
//!   (`bin/firecracker`).

use std::path::{Path, PathBuf};

/// `PATH` plus the sbin directories, where Debian keeps e2fsprogs and other
/// tools a normal user's `PATH` often lacks.
pub fn tool_search_path() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(PathBuf::from(extra));
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
}

/// The directories of one user's banger.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Sockets, locks, pid files.
    pub runtime: PathBuf,
    /// Database and VM disks.
    pub state: PathBuf,
    /// Images and downloads.
    pub cache: PathBuf,
    /// Programs banger installs.
    pub data: PathBuf,
}

impl Dirs {
    /// Resolves the directories from the environment.
    pub fn from_env() -> Dirs {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let var = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let uid = nix::unistd::getuid().as_raw();
        let runtime = var("XDG_RUNTIME_DIR")
            .or_else(|| {
                let run = PathBuf::from(format!("/run/user/{uid}"));
                run.is_dir().then_some(run)
            })
            .unwrap_or_else(|| std::env::temp_dir().join(format!("banger-runtime-{uid}")));
        Dirs {
            runtime: runtime.join("banger"),
            state: var("XDG_STATE_HOME")
                .unwrap_or_else(|| home.join(".local/state"))
                .join("banger"),
            cache: var("XDG_CACHE_HOME")
                .unwrap_or_else(|| home.join(".cache"))
                .join("banger"),
            data: var("XDG_DATA_HOME")
                .unwrap_or_else(|| home.join(".local/share"))
                .join("banger"),
        }
    }

    /// The user's settings file.
    pub fn config_file(&self) -> PathBuf {
        std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("/etc"))
            .join("banger/config.toml")
    }

    /// Programs banger installs (firecracker, jailer).
    pub fn bin(&self) -> PathBuf {
        self.data.join("bin")
    }

    /// The daemon's JSON-RPC socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime.join("bangerd.sock")
    }

    /// Held (flock) by the one running daemon.
    pub fn lock_file(&self) -> PathBuf {
        // Beside the database it guards: two logins with different
        // XDG_RUNTIME_DIRs must not run two daemons on one state.db.
        self.state.join("bangerd.lock")
    }

    /// The daemon's log, kept with the state so it survives reboots.
    pub fn daemon_log(&self) -> PathBuf {
        self.state.join("bangerd.log")
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.state.join("state.db")
    }

    /// Built images.
    pub fn images(&self) -> PathBuf {
        self.cache.join("images")
    }

    /// Project dependency caches (`cache.rs`).
    pub fn project_caches(&self) -> PathBuf {
        self.cache.join("projects")
    }

    /// A VM's persistent files (disks, console log).
    pub fn vm_state(&self, id: &str) -> PathBuf {
        self.state.join("vms").join(id)
    }

    /// A VM's runtime files (sockets, pid file).
    pub fn vm_runtime(&self, id: &str) -> PathBuf {
        self.runtime.join("vms").join(id)
    }

    /// Creates a directory (and parents) readable only by this user, and
    /// refuses one that another user owns (a shared /tmp fallback could be
    /// planted).
    pub fn ensure_private(dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = std::fs::symlink_metadata(dir)?;
        if !meta.is_dir() || meta.uid() != nix::unistd::getuid().as_raw() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} is not a directory owned by this user", dir.display()),
            ));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
}
