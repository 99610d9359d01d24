//! Harness for banger's real-guest tests: an isolated banger installation
//! per test (its own runtime and state directories, so its own daemon and
//! database) that shares the user's image cache, so a machine builds the
//! guest image once.
//!
//! Everything a test starts is torn down when its [`Env`] drops, also when
//! the test fails: the daemon is stopped and any VMM process that belongs to
//! the environment is killed.

#![allow(clippy::disallowed_methods)] // tests drive banger as a user would: by spawning it

pub mod lsp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// One isolated banger installation.
pub struct Env {
    root: tempfile::TempDir,
    bin: PathBuf,
    vars: Vec<(String, String)>,
    /// Run every banger command as this uid (and gid), through `setpriv`.
    user: Option<u32>,
    /// Whether a VM may boot cold after its image's snapshot failed to
    /// restore (otherwise the test fails when it is dropped: the guest tier
    /// runs restored VMs, and a fallback would hide a broken restore).
    cold_fallback_allowed: bool,
}

/// What a banger command did.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless it exited 0.
    #[track_caller]
    pub fn ok(&self) -> &Run {
        self.expect_code(0)
    }
}

/// Runs a shell command line under `script`, which gives it a real
/// pseudo-terminal (what a person at a terminal has); the command's exit
/// code becomes `script`'s.
pub trait SpawnScript {
    /// Spawns `script -qec COMMAND /dev/null` with this command's
    /// environment and stdio.
    fn spawn_script(&mut self, command: &str) -> std::process::Child;
}

impl SpawnScript for Command {
    fn spawn_script(&mut self, command: &str) -> std::process::Child {
        let mut script = Command::new("script");
        script.args(["-qec", command, "/dev/null"]);
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => script.env(k, v),
                None => script.env_remove(k),
            };
        }
        script
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn script (util-linux)")
    }
}

/// Directory holding the built `banger`, `bangerd` and `banger-agent`:
/// the test binary lives in `<profile>/deps/`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BANGER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .to_path_buf()
}

impl Env {
    /// A fresh installation. Panics with what to do when the binaries are
    /// not built.
    pub fn new() -> Env {
        let bin = bin_dir();
        for b in ["banger", "bangerd", "banger-agent"] {
            assert!(
                bin.join(b).exists(),
                "{} is missing; build first: cargo build --workspace --bins",
                bin.join(b).display()
            );
        }
        let root = tempfile::Builder::new()
            .prefix("bg")
            .tempdir_in("/tmp")
            .expect("temp dir");
        Env {
            root,
            bin,
            vars: Vec::new(),
            user: None,
            cold_fallback_allowed: false,
        }
    }

    /// Sets a variable for every banger command (and so for the daemon the
    /// first command starts).
    pub fn with_var(mut self, key: &str, value: &str) -> Env {
        self.vars.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs every banger command as `uid` (a root test process only): the
    /// environment's directories become that user's, and its image cache
    /// is the shared store's images, hard-linked (the store is immutable:
    /// the files stay root's, readable by all).
    pub fn as_user(mut self, uid: u32) -> Env {
        let cache = self.root().join("cache");
        link_tree(&Env::image_dir(), &cache.join("banger/images"));
        chown_dirs(self.root(), uid);
        self.vars
            .push(("XDG_CACHE_HOME".into(), cache.display().to_string()));
        self.vars
            .push(("HOME".into(), self.root().display().to_string()));
        self.user = Some(uid);
        self
    }

    /// Lets a failed restore of an image's snapshot become a cold boot
    /// (for a test that breaks a snapshot, or a host that cannot boot the
    /// template).
    pub fn allowing_cold_fallback(mut self) -> Env {
        self.cold_fallback_allowed = true;
        self
    }

    /// Gives the environment a cache of its own (its snapshots too), with
    /// the shared store's images hard-linked into it: for a test that
    /// breaks what it finds in the cache.
    pub fn with_own_cache(mut self) -> Env {
        let cache = self.root().join("cache");
        link_tree(&Env::image_dir(), &cache.join("banger/images"));
        self.vars
            .push(("XDG_CACHE_HOME".into(), cache.display().to_string()));
        self
    }

    /// The image snapshots of this environment's cache.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.vars
            .iter()
            .find(|(k, _)| k == "XDG_CACHE_HOME")
            .map(|(_, v)| PathBuf::from(v).join("banger"))
            .unwrap_or_else(|| Env::image_dir().parent().expect("cache dir").to_path_buf())
            .join("snapshots")
    }

    /// The built binaries' directory.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The environment's root directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The shared image store (the user's cache).
    pub fn image_dir() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
            })
            .join("banger/images")
    }

    /// `$XDG_STATE_HOME/banger`.
    pub fn state_dir(&self) -> PathBuf {
        self.root().join("state/banger")
    }

    /// `$XDG_RUNTIME_DIR/banger`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root().join("run/banger")
    }

    /// A `banger` command in this environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = match self.user {
            None => Command::new(self.bin.join("banger")),
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .args(["--clear-groups", "--"])
                    .arg(self.bin.join("banger"));
                c
            }
        };
        cmd.args(args)
            .env("XDG_RUNTIME_DIR", self.root().join("run"))
            .env("XDG_STATE_HOME", self.root().join("state"))
            .env("BANGER_LOG", "info")
            .env_remove("NO_COLOR")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `banger ARGS` to completion.
    pub fn banger(&self, args: &[&str]) -> Run {
        self.cmd(args).output().expect("run banger").into()
    }

    /// Runs `banger ARGS` with `input` on stdin.
    pub fn banger_with_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn banger");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("wait banger").into()
    }

    /// Makes sure the default image exists (building it on a fresh
    /// machine), without making a VM.
    pub fn ensure_image(&self) {
        let images = self.banger(&["image", "list", "--json"]);
        images.ok();
        let list: serde_json::Value = serde_json::from_str(&images.stdout).unwrap();
        let recipe = banger::image::default_recipe();
        let current = list.as_array().into_iter().flatten().any(|i| {
            i["name"] == banger::image::DEFAULT_IMAGE
                && i["manifest"]["source"]["recipe"].as_str() == Some(recipe.as_str())
        });
        if current {
            return;
        }
        self.banger(&["vm", "create", "--no-start", "--name", "image-probe"])
            .ok();
        self.banger(&["vm", "delete", "image-probe"]).ok();
    }

    /// `banger vm list --all --json`, parsed.
    pub fn vms(&self) -> Vec<serde_json::Value> {
        let run = self.banger(&["vm", "list", "--all", "--json"]);
        run.ok();
        serde_json::from_str(&run.stdout).expect("vm list json")
    }

    /// `banger vm show VM`, parsed.
    pub fn show(&self, vm: &str) -> serde_json::Value {
        let run = self.banger(&["vm", "show", vm]);
        run.ok();
        serde_json::from_str(&run.stdout).expect("vm show json")
    }

    /// Pid of this environment's daemon, if one runs.
    pub fn daemon_pid(&self) -> Option<i32> {
        self.daemon_pid_from_environ()
    }

    fn daemon_pid_from_environ(&self) -> Option<i32> {
        let marker = format!("XDG_STATE_HOME={}", self.root().join("state").display());
        for (pid, cmdline) in all_processes() {
            if !is_daemon(&cmdline) {
                continue;
            }
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
                return Some(pid);
            }
        }
        None
    }

    /// VMM processes started for this environment (their command lines
    /// name its directories).
    pub fn vmm_processes(&self) -> Vec<i32> {
        processes_mentioning(&self.root().display().to_string())
            .into_iter()
            .filter(|(_, cmdline)| !is_daemon(cmdline))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Asserts that nothing of any VM is left: no row, no disk, no socket,
    /// no process.
    #[track_caller]
    pub fn assert_nothing_left(&self) {
        assert_eq!(self.vms(), Vec::<serde_json::Value>::new(), "vm rows left");
        for dir in [self.state_dir().join("vms"), self.runtime_dir().join("vms")] {
            let left: Vec<_> = std::fs::read_dir(&dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "files left in {}: {left:?}", dir.display());
        }
        assert_eq!(
            self.vmm_processes(),
            Vec::<i32>::new(),
            "VMM processes left"
        );
    }
}

impl Default for Env {
    fn default() -> Env {
        Env::new()
    }
}

impl Env {
    /// Removes the dependency caches of this environment's repositories
    /// from the shared cache (a test's repository never comes back, and
    /// each cache takes a few MB: hundreds of runs filled a disk).
    fn remove_project_caches(&self) {
        let shared = Env::image_dir()
            .parent()
            .expect("cache dir")
            .join("projects");
        for entry in std::fs::read_dir(&shared).into_iter().flatten().flatten() {
            let meta = std::fs::read(entry.path().join("meta.json")).unwrap_or_default();
            let repo = serde_json::from_slice::<serde_json::Value>(&meta)
                .ok()
                .and_then(|m| m["repo"].as_str().map(PathBuf::from));
            if repo.is_some_and(|r| r.starts_with(self.root())) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.cmd(&["daemon", "stop", "--force"]).output();
        if let Some(pid) = self.daemon_pid() {
            kill(pid);
        }
        for pid in self.vmm_processes() {
            kill(pid);
        }
        // Give killed processes a moment to release their files.
        std::thread::sleep(Duration::from_millis(100));
        self.remove_project_caches();
        if !self.cold_fallback_allowed && !std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.state_dir().join("bangerd.log")).unwrap_or_default();
            let fell_back: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("snapshot not used"))
                .collect();
            assert!(
                fell_back.is_empty(),
                "a VM booted cold because its image's snapshot did not restore:\n{}",
                fell_back.join("\n")
            );
        }
    }
}

fn kill(pid: i32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).output();
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
pub fn git(dir: &Path, args: &[&str]) -> String {
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

/// Makes a git repository in `dir`: `file.txt` and an executable `run.sh`
/// committed on branch `main`, plus an untracked `scratch.txt` and an
/// ignored `build.log`. Returns its HEAD.
pub fn make_repo(dir: &Path) -> String {
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
    git(dir, &["rev-parse", "HEAD"])
}

/// `src/calc.sh` of [`make_calc_project`], with its bug.
pub const CALC_BUGGY: &str = "# adds two numbers\nadd() { echo $(($1 + $2 + 1)); }\n";
/// `src/calc.sh`, fixed.
pub const CALC_FIXED: &str = "# adds two numbers\nadd() { echo $(($1 + $2)); }\n";

/// The editor tests' repository, committed on `main`: a shell test suite
/// (the guest image has no compilers) that fails with `src/calc.sh:2: add
/// 2 2 gave 5, want 4` and prints the filter it was given;
/// `.banger.toml` names it; a tracked `notes.txt`; `*.log` ignored.
pub fn make_calc_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("src/calc.sh"), CALC_BUGGY).unwrap();
    std::fs::write(
        dir.join("tests/run.sh"),
        r#". src/calc.sh
got=$(add 2 2)
echo "running 1 test (filter: ${1:-none})"
if [ "$got" != 4 ]; then
    echo "src/calc.sh:2: add 2 2 gave $got, want 4" >&2
    exit 1
fi
echo ok
"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "tracked notes\n").unwrap();
    std::fs::write(
        dir.join(".banger.toml"),
        "[sandbox]\ntest-command = \"sh tests/run.sh\"\n",
    )
    .unwrap();
    std::fs::write(dir.join(".gitignore"), "*.log\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "first"]);
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, Vec<String>)> {
    let me = std::process::id() as i32;
    all_processes()
        .into_iter()
        .filter(|(pid, args)| *pid != me && args.iter().any(|a| a.contains(needle)))
        .collect()
}

/// Recreates the tree at `from` under `to`: directories made, files
/// hard-linked (same file system), symlinks copied.
fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            link_tree(&src, &dst);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::hard_link(&src, &dst).unwrap();
        }
    }
}

/// Gives every directory under `dir` (and `dir`) to `uid`; files are left
/// alone (hard links would change the originals' owner too).
fn chown_dirs(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            chown_dirs(&entry.path(), uid);
        }
    }
}

/// Whether a command line is a daemon's (`bangerd`, not a VM's network
/// keeper `bangerd net-keeper DIR`, which inherits the daemon's
/// environment).
fn is_daemon(cmdline: &[String]) -> bool {
    cmdline.first().is_some_and(|c| c.ends_with("bangerd"))
        && cmdline.get(1).is_none_or(|a| a != "net-keeper")
}
