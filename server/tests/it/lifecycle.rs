//! The lifecycle verbs that need no guest, against the real binary, a real
//! daemon and a real SQLite database: VMs created with `--no-start` on a
//! stand-in image (a manifest only: nothing boots), so create, set, show,
//! stats, logs, prune, id prefixes, `--json` errors, `config show` and
//! completions run in seconds. Booting verbs are in `tests/guest/main.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// An isolated banger: its own state, runtime, cache and config dirs.
struct Host {
    root: tempfile::TempDir,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    fn ok(&self) -> &Run {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    /// The `--json` error: its stable code, and its message.
    fn json_error(&self) -> (String, String) {
        let v = self.json();
        (
            v["error"]["code"].as_str().unwrap_or_default().to_string(),
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

impl Host {
    fn new() -> Host {
        let host = Host {
            root: tempfile::Builder::new()
                .prefix("banger-it-")
                .tempdir_in("/tmp")
                .unwrap(),
        };
        host.stand_in_image();
        host
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_banger"));
        cmd.args(args)
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env_remove("BANGER_VMM")
            .env_remove("BANGER_COMPLETE")
            .stdin(Stdio::null());
        cmd
    }

    fn banger(&self, args: &[&str]) -> Run {
        self.cmd(args).output().unwrap().into()
    }

    /// A `debian-bookworm` image that is a manifest only: enough to create
    /// VMs that are never started.
    fn stand_in_image(&self) {
        let mut manifest = banger::image::Manifest {
            format: 1,
            name: banger::image::DEFAULT_IMAGE.to_string(),
            id: String::new(),
            created_at: 1,
            suite: "bookworm".into(),
            kernel_version: "0-test".into(),
            kernel_package: banger::image::PackageRef {
                name: "none".into(),
                version: "0".into(),
            },
            busybox_package: banger::image::PackageRef {
                name: "none".into(),
                version: "0".into(),
            },
            agent_sha256: String::new(),
            root_modes: Vec::new(),
            files: Default::default(),
            source: Some(banger::image::Source::Debian {
                recipe: banger::image::default_recipe(),
                packages: Vec::new(),
            }),
            run: Default::default(),
            agent_init: false,
            kernel_hz: None,
        };
        manifest.id = manifest.compute_id();
        let dir = self.path("cache/banger/images").join(&manifest.id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }

    fn show(&self, vm: &str) -> Value {
        self.banger(&["vm", "show", vm]).ok().json()
    }

    fn names(&self) -> Vec<String> {
        let list = self.banger(&["vm", "list", "--all", "--json"]);
        list.ok()
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // --force: a test that failed may leave a request in flight, and a
        // daemon stop refuses then; none may outlive its test.
        let _ = self.cmd(&["daemon", "stop", "--force"]).output();
    }
}

fn apparent_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn stopped_vms_are_created_set_shown_logged_and_pruned() {
    let host = Host::new();
    std::fs::create_dir_all(host.path("config/banger")).unwrap();
    std::fs::write(
        host.path("config/banger/config.toml"),
        "[vm_defaults]\nvcpu = 3\nmemory = \"512M\"\nsystem_overlay_size = \"2G\"\nvmm = \"qemu\"\n",
    )
    .unwrap();

    // The file's defaults apply; flags win.
    let a = host.banger(&["vm", "create", "--no-start", "--name", "a"]);
    a.ok();
    assert_eq!(a.stdout.trim(), "a");
    assert!(a.stderr.contains("created in"), "{}", a.stderr);
    let view = host.show("a");
    assert_eq!(view["state"], "stopped");
    assert_eq!(view["vcpu"], 3);
    assert_eq!(view["memory_mib"], 512);
    assert_eq!(view["system_overlay_bytes"], 2u64 << 30);
    assert_eq!(view["vmm"], "qemu");
    let a_id = view["id"].as_str().unwrap().to_string();
    let a_dir = host.path("state/banger/vms").join(&a_id);
    assert_eq!(apparent_size(&a_dir.join("overlay.ext4")), 2 << 30);
    host.banger(&[
        "vm",
        "create",
        "--no-start",
        "--name",
        "b",
        "--vcpu",
        "1",
        "--memory",
        "1G",
        "--system-overlay-size",
        "1G",
    ])
    .ok();
    let b = host.show("b");
    assert_eq!(
        (b["vcpu"].as_u64(), b["memory_mib"].as_u64()),
        (Some(1), Some(1024))
    );
    let b_dir = host
        .path("state/banger/vms")
        .join(b["id"].as_str().unwrap());
    assert_eq!(apparent_size(&b_dir.join("overlay.ext4")), 1 << 30);

    // A VM by a unique id prefix.
    assert_eq!(host.show(&a_id[..8])["name"], "a");

    // vm set on a stopped VM: applied to the record for the next start.
    host.banger(&["vm", "set", &a_id[..8], "--vcpu", "4", "--memory", "1G"])
        .ok();
    let view = host.show("a");
    assert_eq!(
        (view["vcpu"].as_u64(), view["memory_mib"].as_u64()),
        (Some(4), Some(1024))
    );
    // More memory than the host has is refused, as at create.
    let huge = host.banger(&["vm", "set", "a", "--memory", "1048576"]);
    assert_eq!(huge.code, Some(2), "{}", huge.stderr);
    assert!(
        huge.stderr.contains("more than this host has"),
        "{}",
        huge.stderr
    );
    assert_eq!(host.show("a")["memory_mib"].as_u64(), Some(1024));
    let nothing = host.banger(&["vm", "set", "a"]);
    assert_eq!(nothing.code, Some(2), "{}", nothing.stderr);
    assert!(
        nothing.stderr.contains("nothing to change"),
        "{}",
        nothing.stderr
    );

    // Verbs that need a running VM say so, with a stable code.
    for verb in [
        &["vm", "kill", "a", "--json"][..],
        &["vm", "restart", "a", "--json"],
    ] {
        let run = host.banger(verb);
        assert_eq!(run.code, Some(1), "{verb:?}");
        let (code, message) = run.json_error();
        assert_eq!(code, "not_running", "{verb:?}: {message}");
        assert!(message.contains("banger vm start a"), "{message}");
    }
    let (code, _) = host.banger(&["vm", "show", "nope", "--json"]).json_error();
    assert_eq!(code, "not_found");
    let bad = host.banger(&["vm", "create", "--vmm", "kvm", "--json"]);
    assert_eq!(bad.code, Some(2));
    assert_eq!(bad.json_error().0, "invalid");

    // Stats of a stopped VM: no process, the disks' real usage.
    let stats = host.banger(&["vm", "stats", "a", "--json"]).ok().json();
    assert_eq!(stats["state"], "stopped");
    assert!(stats["uptime_secs"].is_null() && stats["rss_bytes"].is_null());
    let disks = stats["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2, "{stats}");
    let mut sum = 0;
    for d in disks {
        let (used, size) = (
            d["used_bytes"].as_u64().unwrap(),
            d["size_bytes"].as_u64().unwrap(),
        );
        assert!(used > 0 && used < size, "{d}");
        sum += used;
    }
    assert_eq!(stats["disk_used_bytes"].as_u64(), Some(sum));
    let human = host.banger(&["vm", "stats", "a"]);
    assert!(
        human.ok().stdout.contains("state    stopped"),
        "{}",
        human.stdout
    );

    // Logs: the daemon's lines about this VM, not about the other.
    let logs = host.banger(&["vm", "logs", "a"]);
    logs.ok();
    assert!(
        logs.stdout.contains("[bangerd]") && logs.stdout.contains("vm=a"),
        "{}",
        logs.stdout
    );
    assert!(!logs.stdout.contains("vm=b"), "{}", logs.stdout);

    // Completion asks the daemon for VM names.
    let complete = host
        .cmd(&["--", "banger", "vm", "stop", ""])
        .env("BANGER_COMPLETE", "fish")
        .output()
        .unwrap();
    let candidates = String::from_utf8_lossy(&complete.stdout).into_owned();
    let names: Vec<&str> = candidates
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert!(names.contains(&"a") && names.contains(&"b"), "{candidates}");

    // Prune: refused without -f when stdin is not a terminal, then done.
    let refused = host.banger(&["vm", "prune"]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("vm prune -f"), "{}", refused.stderr);
    assert_eq!(host.names(), ["a", "b"]);
    let pruned = host.banger(&["vm", "prune", "-f", "--json"]).ok().json();
    assert_eq!(pruned, serde_json::json!(["a", "b"]));
    assert!(host.names().is_empty());
    assert!(
        !a_dir.exists() && !b_dir.exists(),
        "pruned vms left their disks"
    );
}

#[test]
fn an_ambiguous_id_prefix_lists_the_candidates() {
    let host = Host::new();
    // Ids are random: write two records that share a prefix straight into
    // the database, before any daemon runs.
    let db = host.path("state/banger/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let store = banger::store::Store::open(&db).unwrap();
    for (id, name) in [("abcd00000001", "first"), ("abcd00000002", "second")] {
        store
            .insert_vm(&banger::store::VmRecord {
                id: id.into(),
                name: name.into(),
                state: banger::store::VmState::Stopped,
                spec: banger::spec::VmSpec::default(),
                image_id: "x".into(),
                image_name: "x".into(),
                vmm: "qemu".into(),
                vmm_reason: None,
                kernel: None,
                kernel_id: None,
                workspace: None,
                accel: None,
                accel_reason: None,
                pid: None,
                pid_start_time: None,
                boot_id: None,
                last_error: None,
                nat: false,
                loopback: None,
                published: Vec::new(),
                allow: Vec::new(),
                tooling: None,
                cache: None,
                created_at: 1,
                updated_at: 1,
            })
            .unwrap();
    }
    drop(store);
    let run = host.banger(&["vm", "show", "abcd", "--json"]);
    assert_eq!(run.code, Some(1));
    let (code, message) = run.json_error();
    assert_eq!(code, "ambiguous");
    assert!(
        message.contains("first (abcd00000001)") && message.contains("second (abcd00000002)"),
        "{message}"
    );
    let plain = host.banger(&["vm", "delete", "abcd"]);
    assert_eq!(plain.code, Some(1));
    assert!(plain.stderr.contains("matches 2 vms"), "{}", plain.stderr);
    assert_eq!(host.names(), ["first", "second"], "nothing was deleted");
    assert_eq!(host.show("abcd00000002")["name"], "second");
}

#[test]
fn config_show_says_where_each_setting_comes_from() {
    let host = Host::new();
    let show = |extra: &[&str], vmm_env: Option<&str>| {
        let mut args = vec!["config", "show"];
        args.extend_from_slice(extra);
        let mut cmd = host.cmd(&args);
        if let Some(v) = vmm_env {
            cmd.env("BANGER_VMM", v);
        }
        Run::from(cmd.output().unwrap())
    };
    let line = |run: &Run, key: &str| -> String {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in {}", run.stdout))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let defaults = show(&[], None);
    defaults.ok();
    assert!(defaults.stdout.contains("(absent)"), "{}", defaults.stdout);
    assert_eq!(line(&defaults, "vcpu"), "2 default");
    assert_eq!(line(&defaults, "system_overlay_size"), "16G default");

    std::fs::create_dir_all(host.path("config/banger")).unwrap();
    std::fs::write(
        host.path("config/banger/config.toml"),
        "[vm_defaults]\nvcpu = 6\ndisk_size = \"20G\"\nvmm = \"qemu\"\n",
    )
    .unwrap();
    let run = show(&["--vcpu", "8"], Some("firecracker"));
    run.ok();
    assert_eq!(line(&run, "vcpu"), "8 flag");
    assert_eq!(line(&run, "disk_size"), "20G config file");
    assert_eq!(line(&run, "vmm"), "firecracker env BANGER_VMM");
    assert_eq!(line(&run, "memory"), "1024M default");
    let json = show(&["--json"], None).ok().json();
    assert_eq!(json["vm_defaults"]["vcpu"]["value"], 6);
    assert_eq!(json["vm_defaults"]["vcpu"]["source"], "config_file");

    std::fs::write(
        host.path("config/banger/config.toml"),
        "[vm_defaults]\nmemory = \"lots\"\n",
    )
    .unwrap();
    let bad = show(&[], None);
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr.contains("memory") && bad.stderr.contains("config.toml"),
        "{}",
        bad.stderr
    );
    // The daemon refuses a create on the same grounds, creating nothing.
    let create = host.banger(&["vm", "create", "--no-start", "--name", "x"]);
    assert_eq!(create.code, Some(2), "{}", create.stderr);
    assert!(create.stderr.contains("memory"), "{}", create.stderr);
    assert!(host.names().is_empty());
}

#[test]
fn completion_scripts_for_each_shell() {
    let host = Host::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = host.banger(&["completions", shell]);
        run.ok();
        assert!(
            run.stdout.contains("BANGER_COMPLETE=") || run.stdout.contains("BANGER_COMPLETE\""),
            "{shell}: {}",
            run.stdout
        );
    }
    let tcsh = host.banger(&["completions", "tcsh"]);
    assert_eq!(tcsh.code, Some(2));
}

impl Host {
    /// Runs banger on a pseudo-terminal (`script`), as a person at a
    /// terminal does, feeding `input`.
    fn on_terminal(&self, args: &[&str], env: &[(&str, &str)], input: &str) -> Run {
        use std::io::Write;
        let line = std::iter::once(env!("CARGO_BIN_EXE_banger"))
            .chain(args.iter().copied())
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        // The environment of this host's banger, passed through script.
        let cmd = self.cmd(&[]);
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().into()
    }
}

#[test]
fn on_a_terminal_prune_asks_and_progress_can_be_plain() {
    let host = Host::new();
    // Progress rewrites one line on a terminal; BANGER_NO_PROGRESS=1 makes
    // plain lines.
    let rewriting = host.on_terminal(&["vm", "create", "--no-start", "--name", "p1"], &[], "");
    assert_eq!(rewriting.code, Some(0), "{}", rewriting.stdout);
    assert!(
        rewriting.stdout.contains("\r\x1b[2K"),
        "{:?}",
        rewriting.stdout
    );
    assert!(
        !rewriting.stdout.contains("banger: creating disks"),
        "{:?}",
        rewriting.stdout
    );
    let plain = host.on_terminal(
        &["vm", "create", "--no-start", "--name", "p2"],
        &[("BANGER_NO_PROGRESS", "1")],
        "",
    );
    assert_eq!(plain.code, Some(0), "{}", plain.stdout);
    assert!(
        plain.stdout.contains("banger: creating disks"),
        "{:?}",
        plain.stdout
    );
    assert!(!plain.stdout.contains("\x1b[2K"), "{:?}", plain.stdout);

    // Prune asks; anything but yes deletes nothing.
    let no = host.on_terminal(&["vm", "prune"], &[], "n\n");
    assert_eq!(no.code, Some(1), "{}", no.stdout);
    assert!(
        no.stdout.contains("delete 2 vms") && no.stdout.contains("p1 (stopped)"),
        "{}",
        no.stdout
    );
    assert_eq!(host.names(), ["p1", "p2"]);
    let yes = host.on_terminal(&["vm", "prune"], &[], "y\n");
    assert_eq!(yes.code, Some(0), "{}", yes.stdout);
    assert!(host.names().is_empty());
}

#[test]
fn logs_follow_ends_when_the_vm_is_deleted() {
    let host = Host::new();
    host.banger(&["vm", "create", "--no-start", "--name", "f"])
        .ok();
    let mut follow = host
        .cmd(&["vm", "logs", "f", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert!(follow.try_wait().unwrap().is_none(), "-f returned at once");
    host.banger(&["vm", "delete", "f"]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while follow.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "-f outlived the vm");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = follow.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("created vm=f"), "{stdout}");
    assert!(stderr.contains("vm f was deleted"), "{stderr}");
}
