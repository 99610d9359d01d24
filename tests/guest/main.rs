//! Real-guest scenarios: each boots real Debian guests under the host's
//! VMM (QEMU with TCG on hosts whose KVM cannot run a stock kernel) and
//! checks what a user would see: exit codes, output, files in the guest,
//! and that nothing is left behind.
//!
//! Run through `scripts/test.sh`, which builds the binaries first and skips
//! (and says so) this tier on a host without the guest prerequisites.

#![allow(clippy::disallowed_methods)] // tests drive banger as a user would: by spawning it

mod firecracker;
mod images;
mod lifecycle;
mod lsp;
mod mcp;
mod net;
mod nvim;
mod oci;
mod snapshot;
mod ssh;
mod tooling;
mod vscode;
mod workspace;

use std::time::Duration;

use banger_tests::{Env, SpawnScript, make_repo};

#[test]
fn run_passes_exit_code_and_output_through_and_leaves_nothing() {
    let env = Env::new();
    let run = env.banger(&[
        "vm",
        "run",
        "--rm",
        "--",
        "sh",
        "-c",
        "echo \"a  b\"; echo to-stderr >&2; exit 42",
    ]);
    run.expect_code(42);
    assert_eq!(run.stdout, "a  b\n");
    assert!(run.stderr.contains("to-stderr"), "stderr: {}", run.stderr);
    env.assert_nothing_left();
}

#[test]
fn two_runs_at_once_both_succeed() {
    let env = Env::new();
    // Start the daemon first so both runs share it.
    env.banger(&["daemon", "start"]).ok();
    let uname = env
        .cmd(&["vm", "run", "--rm", "--", "uname", "-a"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn first run");
    let piped = env.banger_with_stdin(
        &[
            "vm",
            "run",
            "--rm",
            "--",
            "sh",
            "-c",
            "cat; grep -h PRETTY /etc/os-release",
        ],
        b"from the host\n",
    );
    let uname: banger_tests::Run = uname.wait_with_output().expect("first run").into();
    uname.ok();
    assert!(uname.stdout.starts_with("Linux "), "{}", uname.stdout);
    piped.ok();
    assert!(
        piped.stdout.starts_with("from the host\n"),
        "{}",
        piped.stdout
    );
    assert!(piped.stdout.contains("bookworm"), "{}", piped.stdout);
    env.assert_nothing_left();
}

#[test]
fn vm_survives_daemon_death_and_keeps_root_files_across_stop_start() {
    let env = Env::new();
    env.ensure_image();
    // A create whose client goes away while the guest boots is cancelled:
    // nothing of it is left.
    let mut create = env
        .cmd(&["vm", "create", "--name", "keeper"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn create");
    wait_for_vm(&env, "keeper", |vm| vm["state"] == "starting");
    create.kill().unwrap();
    create.wait().unwrap();
    wait_until_gone(&env, "keeper");
    env.assert_nothing_left();
    // A create that ends is kept, and the VM is not tied to any request.
    env.banger(&["vm", "create", "--name", "keeper"]).ok();
    let shown = env.show("keeper");
    assert_eq!(shown["state"], "running", "{shown}");
    let accel = shown["accel"].as_str().unwrap_or_default().to_string();
    assert!(
        accel.starts_with("tcg (") || accel.starts_with("kvm ("),
        "{accel}"
    );
    let boot1 = shown["boot_id"].as_str().unwrap().to_string();

    // No workspace yet: commands run in root's home.
    assert_eq!(
        env.banger(&["vm", "exec", "keeper", "--", "pwd"]).stdout,
        "/root\n"
    );
    // The guest's hostname is the VM's name.
    assert_eq!(
        env.banger(&["vm", "exec", "keeper", "--", "hostname"])
            .stdout,
        "keeper\n"
    );
    env.banger(&[
        "vm",
        "exec",
        "keeper",
        "--",
        "sh",
        "-c",
        "echo kept > /root/note && sync",
    ])
    .ok();
    let repo = env.root().join("repo");
    make_repo(&repo);
    env.banger(&[
        "vm",
        "workspace",
        "prepare",
        "keeper",
        repo.to_str().unwrap(),
        "--include-untracked",
    ])
    .ok();
    assert_eq!(env.show("keeper")["workspace"]["guest_path"], "/root/repo");
    // Exit codes come back verbatim; the workspace is where commands run.
    env.banger(&["vm", "exec", "keeper", "--", "sh", "-c", "exit 17"])
        .expect_code(17);
    // The host moves on: exec warns and still runs; --auto-prepare
    // re-syncs and the warning is gone.
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.invalid",
        ])
        .args(["commit", "-q", "--allow-empty", "-m", "host moves on"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(out.status.success());
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&repo)
        .output()
        .unwrap();
    let new_head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let run = env.banger(&["vm", "exec", "keeper", "--", "git", "rev-parse", "HEAD"]);
    run.ok();
    assert!(
        run.stderr.contains("workspace stale:") && run.stderr.contains("--auto-prepare"),
        "{}",
        run.stderr
    );
    assert_ne!(run.stdout.trim(), new_head);
    let run = env.banger(&[
        "vm",
        "exec",
        "--auto-prepare",
        "keeper",
        "--",
        "git",
        "rev-parse",
        "HEAD",
    ]);
    run.ok();
    assert_eq!(run.stdout.trim(), new_head);
    assert!(!run.stderr.contains("stale"), "{}", run.stderr);

    // A reader that stops for a while pushes back on the guest program
    // (end-to-end flow control): nothing is lost and nothing is killed.
    let mut slow = env
        .cmd(&[
            "vm",
            "exec",
            "keeper",
            "--",
            "sh",
            "-c",
            "head -c 100000000 /dev/zero | tr '\\0' a",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let mut stdout = slow.stdout.take().unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| *b == b'a'));
        total += n;
    }
    let out = slow.wait_with_output().unwrap();
    assert_eq!(
        (out.status.code(), total),
        (Some(0), 100_000_000),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The guest's own work is never lost to a re-sync: the guest edits a
    // tracked file and commits it on its own branch, and edits another
    // without committing; the host commits changes to both and a new file.
    let guest_sh = |script: &str| {
        let run = env.banger(&["vm", "exec", "keeper", "--", "sh", "-c", script]);
        run.ok();
        run.stdout.trim().to_string()
    };
    let guest_commit = guest_sh(
        "git checkout -q -b guest-work && echo guest-edit >> file.txt && \
         git -c user.name=G -c user.email=g@example.invalid commit -qam 'guest commit' && \
         echo 'echo guest-uncommitted' >> run.sh && git rev-parse HEAD",
    );
    std::fs::write(repo.join("file.txt"), "host changed it\n").unwrap();
    std::fs::write(repo.join("run.sh"), "#!/bin/sh\necho host\n").unwrap();
    std::fs::write(repo.join("host.txt"), "new on the host\n").unwrap();
    banger_tests::git(&repo, &["add", "-A"]);
    banger_tests::git(&repo, &["commit", "-qm", "host commit"]);
    let host_head = banger_tests::git(&repo, &["rev-parse", "HEAD"]);
    let run = env.banger(&["vm", "exec", "--auto-prepare", "keeper", "--", "true"]);
    run.ok();
    assert!(
        run.stderr
            .contains("kept the guest's own copies of file.txt, run.sh")
            && run.stderr.contains("arrived as host/main and main"),
        "{}",
        run.stderr
    );
    let state = guest_sh(
        "git symbolic-ref --short HEAD; git rev-parse guest-work main host/main; \
         tail -n1 file.txt; tail -n1 run.sh; cat host.txt",
    );
    assert_eq!(
        state,
        format!(
            "guest-work\n{guest_commit}\n{host_head}\n{host_head}\nguest-edit\necho guest-uncommitted\nnew on the host"
        )
    );
    // Another repository is refused, not shipped over the guest's work.
    let other = env.root().join("other");
    make_repo(&other);
    let run = env.banger(&[
        "vm",
        "workspace",
        "prepare",
        "keeper",
        other.to_str().unwrap(),
    ]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("already holds the workspace of") && run.stderr.contains("--replace"),
        "{}",
        run.stderr
    );
    // The same repository again goes through live sync.
    let run = env.banger(&[
        "vm",
        "workspace",
        "prepare",
        "keeper",
        repo.to_str().unwrap(),
        "--include-untracked",
    ]);
    run.ok();
    assert!(
        run.stdout.contains("already held this repository"),
        "{}",
        run.stdout
    );
    assert_eq!(
        guest_sh("tail -n1 file.txt; git rev-parse HEAD"),
        format!("guest-edit\n{guest_commit}")
    );

    // Kill the daemon outright: the VM must keep running, and a new daemon
    // must find it running and reach its agent.
    let pid = env.daemon_pid().expect("daemon pid");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let list = env.banger(&["vm", "list"]);
    list.ok();
    assert!(
        list.stdout.contains("keeper") && list.stdout.contains("running"),
        "{}",
        list.stdout
    );
    let run = env.banger(&["vm", "exec", "keeper", "--", "cat", "/root/note"]);
    run.ok();
    assert_eq!(run.stdout, "kept\n");

    // Stop, then start: a new boot, the same /root.
    env.banger(&["vm", "stop", "keeper"]).ok();
    assert_eq!(env.show("keeper")["state"], "stopped");
    assert!(
        env.vmm_processes().is_empty(),
        "VMM still running after stop"
    );
    let run = env.banger(&["vm", "exec", "keeper", "--", "true"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("is not running (state: stopped)"),
        "{}",
        run.stderr
    );
    env.banger(&["vm", "start", "keeper"]).ok();
    let shown = env.show("keeper");
    assert_ne!(shown["boot_id"].as_str().unwrap(), boot1, "not a new boot");
    let run = env.banger(&[
        "vm",
        "exec",
        "keeper",
        "--",
        "sh",
        "-c",
        "cat /root/note; ls -A /root",
    ]);
    run.ok();
    assert!(run.stdout.starts_with("kept\n"), "{}", run.stdout);
    assert!(run.stdout.contains(".hushlogin"), "{}", run.stdout);
    // The workspace survived too, untracked file included, and exec still
    // starts in it.
    let run = env.banger(&[
        "vm",
        "exec",
        "keeper",
        "--",
        "sh",
        "-c",
        "pwd; cat scratch.txt",
    ]);
    run.ok();
    assert_eq!(run.stdout, "/root/repo\nuntracked\n");

    // Space the guest frees goes back to the host (the overlay and /root
    // are mounted with discard): write 200 MB to each, measure, delete.
    let usage = || env.show("keeper")["disk_usage_bytes"].as_u64().unwrap();
    let before = usage();
    env.banger(&[
        "vm",
        "exec",
        "keeper",
        "--",
        "sh",
        "-c",
        "head -c 200000000 /dev/urandom > /var/tmp/fill && head -c 200000000 /dev/urandom > /root/fill && sync",
    ])
    .ok();
    let full = usage();
    assert!(full > before + 350_000_000, "{before} -> {full}");
    env.banger(&[
        "vm",
        "exec",
        "keeper",
        "--",
        "sh",
        "-c",
        "rm /var/tmp/fill /root/fill && sync",
    ])
    .ok();
    let mut freed = usage();
    for _ in 0..50 {
        if freed < full - 350_000_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        freed = usage();
    }
    assert!(
        freed < full - 350_000_000,
        "{full} -> {freed}: not returned"
    );

    // What the guest synced survives its VMM being killed: the disks'
    // write cache passes the guest's flushes through.
    env.banger(&[
        "vm",
        "exec",
        "keeper",
        "--",
        "sh",
        "-c",
        "head -c 3000000 /dev/urandom > /root/blob && sha256sum /root/blob > /root/blob.sum && sync",
    ])
    .ok();
    env.banger(&["vm", "kill", "keeper"]).ok();
    assert_eq!(env.show("keeper")["state"], "stopped");
    env.banger(&["vm", "start", "keeper"]).ok();
    env.banger(&[
        "vm",
        "exec",
        "keeper",
        "--",
        "sha256sum",
        "-c",
        "/root/blob.sum",
    ])
    .ok();

    env.banger(&["vm", "delete", "keeper"]).ok();
    env.assert_nothing_left();
}

#[test]
fn a_catalog_kernel_boots_and_is_recorded() {
    let env = Env::new();
    env.ensure_image();
    // The image's own kernel, imported under another name: the catalog path
    // end to end, with a kernel this host can boot.
    let images: serde_json::Value =
        serde_json::from_str(&env.banger(&["image", "list", "--json"]).stdout).unwrap();
    let dir = images[0]["dir"].as_str().unwrap().to_string();
    let copy = env.root().join("vmlinuz-copy");
    std::fs::copy(format!("{dir}/vmlinuz"), &copy).unwrap();
    env.banger(&[
        "kernel",
        "import",
        copy.to_str().unwrap(),
        "--name",
        "copied",
    ])
    .ok();
    let list = env.banger(&["kernel", "list"]);
    assert!(
        list.stdout.contains("copied") && list.stdout.contains("image:debian-bookworm"),
        "{}",
        list.stdout
    );
    env.banger(&["vm", "create", "--name", "kern", "--kernel", "copied"])
        .ok();
    let shown = env.show("kern");
    let kernel = shown["kernel"].as_str().unwrap();
    assert!(kernel.contains("/kernels/"), "booted {kernel}");
    let run = env.banger(&["vm", "exec", "kern", "--", "uname", "-r"]);
    run.ok();
    assert!(run.stdout.contains("cloud-amd64"), "{}", run.stdout);
    // In use: not deletable; after the vm is gone, it is.
    env.banger(&["kernel", "delete", "copied"]).expect_code(1);
    env.banger(&["vm", "delete", "kern"]).ok();
    env.banger(&["kernel", "delete", "copied"]).ok();
    env.assert_nothing_left();
}

#[test]
fn interactive_shell_through_a_pty_and_detach_rules() {
    let env = Env::new();
    let repo = env.root().join("repo");
    make_repo(&repo);
    // -d with --rm, or with a command, is refused before anything exists.
    env.banger(&["vm", "run", "-d", "--rm", repo.to_str().unwrap()])
        .expect_code(2);
    env.banger(&["vm", "run", "-d", repo.to_str().unwrap(), "--", "true"])
        .expect_code(2);
    env.assert_nothing_left();

    // `vm run PATH` with no command is an interactive login shell in the
    // workspace; `script` gives banger a real terminal, as a user's would.
    let banger = env.bin_dir().join("banger");
    let command = format!(
        "{} vm run --rm --name shelly {}",
        banger.display(),
        repo.display()
    );
    let mut child = env.cmd(&[]).env("TERM", "xterm").spawn_script(&command);
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pwd; echo $((6*7)); exit 5\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("/root/repo\r\n42\r\n"), "{text}");
    env.assert_nothing_left();

    // Detached: the VM stays, and a shell reconnects.
    let run = env.banger(&["vm", "run", "-d", "--name", "bg", repo.to_str().unwrap()]);
    run.ok();
    assert_eq!(run.stdout, "bg\n");
    assert!(run.stderr.contains("banger vm shell bg"), "{}", run.stderr);
    assert_eq!(env.show("bg")["state"], "running");
    env.banger(&["vm", "delete", "bg"]).ok();
    env.assert_nothing_left();
}

/// Waits (at most 3 minutes) until `vm list` shows `name` matching `ok`.
#[track_caller]
fn wait_for_vm(env: &Env, name: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    for _ in 0..900 {
        if env.vms().iter().any(|vm| vm["name"] == name && ok(vm)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("vm {name} never got there: {:?}", env.vms());
}

/// Waits (at most 3 minutes) until no VM is named `name`.
#[track_caller]
fn wait_until_gone(env: &Env, name: &str) {
    for _ in 0..900 {
        if !env.vms().iter().any(|vm| vm["name"] == name) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("vm {name} was never removed: {:?}", env.vms());
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// `--rm` is the daemon's promise: whatever ends the client (Ctrl-C while
/// the guest boots or while the command runs, a daemon killed mid-run),
/// the VM is removed and nothing of it is left.
#[test]
fn rm_runs_leave_nothing_whatever_ends_them() {
    let env = Env::new();
    env.ensure_image();
    // Ctrl-C while the guest boots.
    let mut run = env
        .cmd(&["vm", "run", "--rm", "--name", "b3", "--", "true"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_vm(&env, "b3", |_| true);
    signal(run.id(), "-INT");
    run.wait().unwrap();
    wait_until_gone(&env, "b3");
    env.assert_nothing_left();

    // Ctrl-C while the repository ships (a few thousand files take seconds
    // under emulation).
    let repo = env.root().join("big");
    make_repo(&repo);
    for d in 0..40 {
        let dir = repo.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            std::fs::write(dir.join(format!("f{f}.txt")), vec![b'x'; 8192]).unwrap();
        }
    }
    banger_tests::git(&repo, &["add", "-A"]);
    banger_tests::git(&repo, &["commit", "-qm", "big"]);
    let mut run = env
        .cmd(&[
            "vm",
            "run",
            "--rm",
            "--name",
            "b6",
            repo.to_str().unwrap(),
            "--",
            "true",
        ])
        .env("BANGER_NO_PROGRESS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(run.stderr.take().unwrap()));
    loop {
        let line = lines.next().expect("progress").unwrap();
        if line.contains("shipping") {
            break;
        }
    }
    signal(run.id(), "-INT");
    run.wait().unwrap();
    wait_until_gone(&env, "b6");
    env.assert_nothing_left();

    // Ctrl-C (SIGTERM here) while the command runs.
    let mut run = env
        .cmd(&[
            "vm",
            "run",
            "--rm",
            "--name",
            "b4",
            "--",
            "sh",
            "-c",
            "touch /run/started; sleep 600",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_vm(&env, "b4", |vm| vm["state"] == "running");
    for _ in 0..300 {
        if env
            .banger(&["vm", "exec", "b4", "--", "test", "-e", "/run/started"])
            .code
            == 0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(run.id(), "-TERM");
    run.wait().unwrap();
    wait_until_gone(&env, "b4");
    env.assert_nothing_left();

    // The daemon is killed mid-run: the CLI fails, and the next daemon
    // removes the VM its lease no longer holds.
    let mut run = env
        .cmd(&["vm", "run", "--rm", "--name", "b5", "--", "sleep", "600"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_vm(&env, "b5", |vm| vm["state"] == "running");
    let pid = env.daemon_pid().expect("daemon pid");
    signal(pid as u32, "-KILL");
    let status = run.wait().unwrap();
    assert!(!status.success());
    wait_until_gone(&env, "b5");
    env.assert_nothing_left();
}

/// Whether this test process runs as root.
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// A user without privileges (no /dev/kvm, no kernel log) boots a guest,
/// and under emulation the guest gets the host's TSC frequency (without
/// it an emulated guest can hang calibrating its clock on a busy host).
/// As root (CI), the test drops to `nobody`; as anyone else it runs as is.
#[test]
fn a_user_without_privileges_boots_a_guest_with_a_clock_hint() {
    // The shared image store has the image (built by this user).
    Env::new().ensure_image();
    let env = Env::new();
    let env = if running_as_root() {
        env.as_user(65534)
    } else {
        env
    };
    let doctor = env.banger(&["doctor"]);
    let tcg = doctor.stdout.contains("tcg (");
    if tcg {
        assert!(
            doctor
                .stdout
                .lines()
                .any(|l| l.starts_with("ok   tsc ") && l.contains(" kHz")),
            "{}",
            doctor.stdout
        );
    }
    // Its own network too, without privileges: outbound through pasta in
    // the VM's own user and network namespace.
    let run = env.banger(&[
        "vm",
        "run",
        "--nat",
        "--rm",
        "--",
        "sh",
        "-c",
        "cat /proc/cmdline; apt-get update >/dev/null && echo ok",
    ]);
    run.ok();
    assert_eq!(run.stdout.contains("tsc_early_khz="), tcg, "{}", run.stdout);
    assert_eq!(run.stdout.lines().last(), Some("ok"), "{}", run.stderr);
    env.assert_nothing_left();
}
