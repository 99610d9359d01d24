//! An isolated banger for host tests: every XDG directory (runtime, state,
//! cache, data, config) in one temporary directory, so each test has its own
//! daemon, database and image store, and the user's are never touched.
//! Whatever a test started is torn down when its [`Env`] drops, also when
//! the test fails: the daemon is stopped (killed if need be) and any process
//! whose command line names the environment is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One isolated banger installation.
pub(crate) struct Env {
    root: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

/// What a banger command did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub(crate) fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless it exited 0.
    #[track_caller]
    pub(crate) fn ok(&self) -> &Run {
        self.expect_code(0)
    }
}

impl From<std::process::Output> for Run {
    fn from(o: std::process::Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// The directory of the built `banger`, `bangerd` and `banger-agent`.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_banger"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

impl Env {
    /// A fresh installation. Panics with what to do when the daemon's
    /// agent binary is not built (cargo builds only this package's
    /// binaries for its tests).
    pub(crate) fn new() -> Env {
        let agent = bin_dir().join("banger-agent");
        assert!(
            agent.exists(),
            "{} is missing; build first: cargo build --workspace --bins",
            agent.display()
        );
        // Short paths: unix socket paths are limited to 108 bytes.
        let root = tempfile::Builder::new()
            .prefix("bh")
            .tempdir_in("/tmp")
            .expect("temp dir");
        Env {
            root,
            vars: Vec::new(),
        }
    }

    /// Sets a variable for every banger command (and so for the daemon the
    /// first command starts).
    pub(crate) fn with_var(mut self, key: &str, value: &str) -> Env {
        self.vars.push((key.to_string(), value.to_string()));
        self
    }

    /// The environment's root directory.
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// `$XDG_STATE_HOME/banger`.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.root().join("state/banger")
    }

    /// `$XDG_RUNTIME_DIR/banger`.
    pub(crate) fn runtime_dir(&self) -> PathBuf {
        self.root().join("run/banger")
    }

    /// `$XDG_CACHE_HOME/banger/images`.
    pub(crate) fn image_dir(&self) -> PathBuf {
        self.root().join("cache/banger/images")
    }

    /// A `banger` command in this environment.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_dir().join("banger"));
        cmd.args(args)
            .env("XDG_RUNTIME_DIR", self.root().join("run"))
            .env("XDG_STATE_HOME", self.root().join("state"))
            .env("XDG_CACHE_HOME", self.root().join("cache"))
            .env("XDG_DATA_HOME", self.root().join("data"))
            .env("XDG_CONFIG_HOME", self.root().join("config"))
            .env("BANGER_LOG", "info")
            .env_remove("BANGER_VMM")
            .env_remove("BANGER_TEST_VMM")
            .env_remove("BANGER_AGENT")
            .env_remove("BANGER_DAEMON")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `banger ARGS` to completion.
    pub(crate) fn banger(&self, args: &[&str]) -> Run {
        self.cmd(args).output().expect("run banger").into()
    }

    /// `banger vm list --all --json`, parsed.
    pub(crate) fn vms(&self) -> Vec<serde_json::Value> {
        let run = self.banger(&["vm", "list", "--all", "--json"]);
        run.ok();
        serde_json::from_str(&run.stdout).expect("vm list json")
    }

    /// `banger vm show VM`, parsed.
    pub(crate) fn show(&self, vm: &str) -> serde_json::Value {
        let run = self.banger(&["vm", "show", vm]);
        run.ok();
        serde_json::from_str(&run.stdout).expect("vm show json")
    }

    /// Pid of this environment's daemon, if one runs.
    pub(crate) fn daemon_pid(&self) -> Option<i32> {
        let marker = format!("XDG_STATE_HOME={}", self.root().join("state").display());
        all_processes().into_iter().find_map(|(pid, cmdline)| {
            if !is_daemon(&cmdline) {
                return None;
            }
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            environ
                .split(|b| *b == 0)
                .any(|kv| kv == marker.as_bytes())
                .then_some(pid)
        })
    }

    /// Processes other than the daemon whose command lines name this
    /// environment (VMMs, the fake VMM's agents, each VM's pasta and
    /// network keeper).
    pub(crate) fn vm_processes(&self) -> Vec<i32> {
        let needle = self.root().display().to_string();
        let me = std::process::id() as i32;
        all_processes()
            .into_iter()
            .filter(|(pid, args)| {
                *pid != me && args.iter().any(|a| a.contains(&needle)) && !is_daemon(args)
            })
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Asserts that nothing of any VM is left: no row, no disk, no socket,
    /// no process.
    #[track_caller]
    pub(crate) fn assert_nothing_left(&self) {
        assert_eq!(self.vms(), Vec::<serde_json::Value>::new(), "vm rows left");
        for dir in [self.state_dir().join("vms"), self.runtime_dir().join("vms")] {
            let left: Vec<_> = std::fs::read_dir(&dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "files left in {}: {left:?}", dir.display());
        }
        assert_eq!(self.vm_processes(), Vec::<i32>::new(), "VM processes left");
    }

    /// Puts a stand-in `debian-bookworm` image in this environment's store
    /// (files of a few bytes with a valid manifest): enough for the daemon
    /// to create disks and start the fake VMM, which boots none of it.
    pub(crate) fn fake_image(&self) {
        self.add_image(
            banger::image::DEFAULT_IMAGE,
            1000,
            banger::image::Source::Debian {
                recipe: banger::image::default_recipe(),
                packages: Vec::new(),
            },
        );
    }

    /// A stand-in image named `name`, made at `created_at` (unix seconds)
    /// from `source`, in this environment's store; its id.
    pub(crate) fn add_image(
        &self,
        name: &str,
        created_at: u64,
        source: banger::image::Source,
    ) -> String {
        use banger::image::{FileEntry, Manifest, PackageRef};
        use sha2::Digest;
        let mut files = std::collections::BTreeMap::new();
        let roles = [
            ("rootfs", "rootfs.ext4"),
            ("kernel", "vmlinuz"),
            ("vmlinux", "vmlinux"),
            ("initrd", "initrd.img"),
        ];
        for (role, file) in roles {
            files.insert(
                role.to_string(),
                FileEntry {
                    path: PathBuf::from(file),
                    sha256: format!("{:x}", sha2::Sha256::digest(file.as_bytes())),
                    size: file.len() as u64,
                },
            );
        }
        let package = |name: &str| PackageRef {
            name: name.into(),
            version: "0".into(),
        };
        let mut manifest = Manifest {
            format: 1,
            name: name.into(),
            id: String::new(),
            created_at,
            suite: "bookworm".into(),
            kernel_version: "0.0.0-fake".into(),
            kernel_package: package("linux-image-fake"),
            busybox_package: package("busybox-static"),
            agent_sha256: "00".repeat(32),
            root_modes: vec!["overlay".into()],
            files,
            source: Some(source),
            run: Default::default(),
            agent_init: false,
            kernel_hz: None,
        };
        manifest.id = manifest.compute_id();
        let dir = self.image_dir().join(&manifest.id);
        std::fs::create_dir_all(&dir).unwrap();
        for (_, file) in roles {
            std::fs::write(dir.join(file), file).unwrap();
        }
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest).unwrap(),
        )
        .unwrap();
        manifest.id
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.cmd(&["daemon", "stop", "--force"]).output();
        if let Some(pid) = self.daemon_pid() {
            signal(pid, Signal::SIGKILL);
        }
        for pid in self.vm_processes() {
            signal(pid, Signal::SIGKILL);
        }
    }
}

/// Sends `sig` to `pid`; a process already gone is fine.
pub(crate) fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    state != Some('Z')
}

/// Polls `check` every 50 ms until it holds; panics with `what` after
/// `limit` (a bound on a wait, not a timing assertion).
#[track_caller]
pub(crate) fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn all_processes() -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.is_empty() {
            out.push((pid, args));
        }
    }
    out
}

/// Runs git in `dir` with a fixed identity; panics with git's message when
/// it fails; returns its trimmed stdout.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git repository in `dir`, as the guest tests' `make_repo` makes it:
/// `file.txt` and an executable `run.sh` committed on `main`, an untracked
/// `scratch.txt` and an ignored `build.log`.
pub(crate) fn make_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("file.txt"), "hello from the host\n").unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join(".gitignore"), "*.log\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "first"]);
    std::fs::write(dir.join("scratch.txt"), "untracked\n").unwrap();
    std::fs::write(dir.join("build.log"), "ignored\n").unwrap();
}

/// Whether a command line is a daemon's (`bangerd`, not a VM's network
/// keeper `bangerd net-keeper DIR`, which inherits the daemon's
/// environment).
fn is_daemon(cmdline: &[String]) -> bool {
    cmdline.first().is_some_and(|c| c.ends_with("bangerd"))
        && cmdline.get(1).is_none_or(|a| a != "net-keeper")
}
