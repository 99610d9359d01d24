//! Image snapshots on real guests: VMs restored from one snapshot are
//! machines of their own, the snapshot is never written, `--no-snapshot`
//! boots cold, and a snapshot that cannot be restored becomes a cold boot
//! that says why. (Every other guest scenario runs restored VMs too:
//! snapshots are on by default.)

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use banger_tests::Env;

const RESTORED: &str = "restoring the image's snapshot";
const COLD: &str = "booting guest (waiting for the agent)";

fn exec(env: &Env, vm: &str, script: &str) -> String {
    let run = env.banger(&["vm", "exec", vm, "--", "sh", "-c", script]);
    run.ok();
    run.stdout.trim().to_string()
}

/// A VM's ssh host key (made in the guest off its boot's path: waited
/// for).
fn host_key(env: &Env, vm: &str) -> String {
    for _ in 0..60 {
        let out = env.banger(&[
            "vm",
            "exec",
            vm,
            "--",
            "cat",
            "/etc/ssh/ssh_host_ed25519_key.pub",
        ]);
        if out.code == 0 && out.stdout.starts_with("ssh-ed25519 ") {
            return out.stdout.split_whitespace().nth(1).unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{vm} has no ssh host key");
}

/// A snapshot's memory file: its size and mtime.
fn memory_file(snapshot: &Path) -> (u64, SystemTime) {
    let m = std::fs::metadata(snapshot.join("memory")).expect("the snapshot's memory file");
    (m.len(), m.modified().unwrap())
}

#[test]
fn vms_restored_from_one_snapshot_are_machines_of_their_own() {
    let env = Env::new();
    // The first may make the snapshot; both are restored from it.
    for name in ["twin-a", "twin-b"] {
        let create = env.banger(&["vm", "create", "--name", name]);
        create.ok();
        assert!(create.stderr.contains(RESTORED), "{}", create.stderr);
        assert!(!create.stderr.contains("booting cold"), "{}", create.stderr);
    }
    let from = |vm: &str| {
        PathBuf::from(
            env.show(vm)["restored_from"]
                .as_str()
                .unwrap_or_else(|| panic!("{vm} was not restored")),
        )
    };
    let snapshot = from("twin-a");
    assert_eq!(from("twin-b"), snapshot, "one snapshot for both");
    assert!(
        snapshot.starts_with(env.snapshot_dir()),
        "{}",
        snapshot.display()
    );
    let before = memory_file(&snapshot);

    let script = "hostname; cat /etc/hostname; cat /etc/machine-id; \
                  cat /sys/class/net/eth0/address; \
                  for i in 1 2 3; do cat /proc/sys/kernel/random/uuid; done; \
                  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; \
                  dd if=/dev/urandom of=/dev/shm/fill bs=1M count=64 2>/dev/null; sync";
    let facts: Vec<Vec<String>> = ["twin-a", "twin-b"]
        .iter()
        .map(|vm| {
            let out = exec(&env, vm, script);
            let lines: Vec<String> = out.lines().map(str::to_string).collect();
            assert_eq!(lines.len(), 9, "{out}");
            let host_now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let guest_now: u64 = lines[8].parse().unwrap();
            assert!(
                guest_now.abs_diff(host_now) <= 5,
                "{vm}: guest clock {guest_now}, host {host_now}"
            );
            assert_eq!(lines[0], *vm, "hostname");
            assert_eq!(lines[1], *vm, "/etc/hostname");
            assert!(
                lines[2].len() == 32 && lines[2].bytes().all(|b| b.is_ascii_hexdigit()),
                "machine-id {:?}",
                lines[2]
            );
            lines
        })
        .collect();
    let (a, b) = (&facts[0], &facts[1]);
    assert_ne!(a[2], b[2], "machine-ids");
    assert_ne!(a[3], b[3], "MAC addresses");
    // Same generator state from the snapshot would give the same streams.
    for i in 4..=7 {
        assert_ne!(a[i], b[i], "random stream line {i}");
    }
    // Addresses as the host reaches them.
    let address = |vm: &str| env.show(vm)["network"]["host_address"].clone();
    assert!(address("twin-a").is_string());
    assert_ne!(address("twin-a"), address("twin-b"));

    // ssh host keys, made in each guest after it is restored.
    assert_ne!(
        host_key(&env, "twin-a"),
        host_key(&env, "twin-b"),
        "ssh host keys"
    );

    // The guests wrote 64 MiB each: none of it reached the snapshot.
    assert_eq!(memory_file(&snapshot), before);

    for vm in ["twin-a", "twin-b"] {
        env.banger(&["vm", "delete", vm]).ok();
    }
    env.assert_nothing_left();
}

/// Says whether the agent (which answering makes the guest "ready") started
/// only once systemd's tmpfiles setup had finished (by systemd's own
/// clock: a fact of the boot, not a race this command may or may not see),
/// whether the guest keeps time with a real clock (an emulated guest once
/// fell back to 4 ms jiffies), whether `/init` wrote the static device
/// nodes' list as kmod would (and tmpfiles made them), writes to /tmp, waits until the boot has finished, prints the hostname
/// and reads the file back.
const FIRST_COMMAND: &str = "agent=$(systemctl show -P ExecMainStartTimestampMonotonic banger-agent.service); \
    setup=$(systemctl show -P ActiveEnterTimestampMonotonic systemd-tmpfiles-setup.service); \
    if [ \"$setup\" -gt 0 ] && [ \"$agent\" -ge \"$setup\" ]; then echo ordered; \
    else echo \"agent started at $agent us, tmpfiles setup done at $setup us\"; fi; \
    clock=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource); \
    fine=$(python3 -c 'import time; print(time.clock_getres(time.CLOCK_MONOTONIC) < 1e-6)'); \
    if [ \"$fine\" = True ] && [ \"${clock%jiffies}\" = \"$clock\" ]; then echo clock ok; \
    else echo \"clock $clock, fine resolution: $fine\"; fi; \
    want=$(kmod static-nodes --format=tmpfiles); have=$(cat /run/tmpfiles.d/static-nodes.conf); \
    if [ -n \"$want\" ] && [ \"$want\" = \"$have\" ] && [ -c /dev/net/tun ]; then echo nodes ok; \
    else echo \"static nodes: kmod writes [$want], /init wrote [$have]\"; fi; \
    echo written early >/tmp/first-command && \
    systemctl is-system-running --wait >/dev/null; hostname; cat /tmp/first-command";

#[test]
fn a_snapshot_that_cannot_be_restored_becomes_a_cold_boot_and_no_snapshot_boots_cold() {
    let env = Env::new().with_own_cache().allowing_cold_fallback();
    // The boot initramfs cache left by earlier agent builds: four files per
    // image (made long ago), and one of an image that is gone.
    let initrds = env.snapshot_dir().with_file_name("initrd");
    std::fs::create_dir_all(&initrds).unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let images: Vec<String> = std::fs::read_dir(Env::image_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() >= 16 && !n.starts_with('.'))
        .collect();
    for image in images.iter().map(|i| &i[..16]).chain(["0123456789abcdef"]) {
        for build in 0..4 {
            let path = initrds.join(format!("{image}-{build:016}.img"));
            std::fs::write(&path, b"an older agent's initramfs").unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(long_ago + Duration::from_secs(build))
                .unwrap();
        }
    }
    // Made ahead: the next VM of that shape restores it.
    let warm = env.banger(&["image", "warm"]);
    warm.ok();
    // The daemon pruned them: the gone image's files, and each image's
    // beyond the newest three (the file this daemon booted counts as one).
    let mut per_image = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(&initrds).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        *per_image.entry(name[..16].to_string()).or_default() += 1;
    }
    assert!(!per_image.contains_key("0123456789abcdef"), "{per_image:?}");
    assert!(per_image.values().all(|&n| n <= 3), "{per_image:?}");
    assert_eq!(per_image.len(), images.len(), "{per_image:?}");
    assert!(
        warm.stderr.contains("making the snapshot"),
        "{}",
        warm.stderr
    );
    let made = warm
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("snapshot dir")
        .to_string();
    assert!(Path::new(&made).join("memory").exists(), "{}", warm.stdout);
    assert!(made.starts_with(&env.snapshot_dir().display().to_string()));
    // The first command may run before the guest has finished booting; what
    // it writes to /tmp must outlive the rest of the boot (systemd's tmpfiles
    // setup empties /tmp: the agent answers only after it).
    let first = env.banger(&["vm", "run", "--rm", "--", "sh", "-c", FIRST_COMMAND]);
    first.ok();
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"ordered"), "{}", first.stdout);
    assert_eq!(lines.get(1), Some(&"clock ok"), "{}", first.stdout);
    assert_eq!(lines.get(2), Some(&"nodes ok"), "{}", first.stdout);
    assert_eq!(lines.last(), Some(&"written early"), "{}", first.stderr);
    assert!(
        !first.stderr.contains("making the snapshot"),
        "{}",
        first.stderr
    );
    assert!(first.stderr.contains(RESTORED), "{}", first.stderr);
    // An image that does not exist: refused, nothing made.
    let bad = env.banger(&["image", "warm", "no-such-image"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("no-such-image"), "{}", bad.stderr);

    // --no-snapshot boots, and the guest is the same to a command.
    let cold = env.banger(&[
        "vm",
        "run",
        "--rm",
        "--no-snapshot",
        "--name",
        "cold-1",
        "--",
        "sh",
        "-c",
        FIRST_COMMAND,
    ]);
    cold.ok();
    assert_eq!(
        cold.stdout, "ordered\nclock ok\nnodes ok\ncold-1\nwritten early\n",
        "{}",
        cold.stderr
    );
    assert!(cold.stderr.contains(COLD), "{}", cold.stderr);
    assert!(!cold.stderr.contains(RESTORED), "{}", cold.stderr);

    // Break every snapshot's device state.
    let mut broken = 0;
    for image in std::fs::read_dir(env.snapshot_dir()).unwrap().flatten() {
        for snap in std::fs::read_dir(image.path()).unwrap().flatten() {
            let state = snap.path().join("state");
            if state.exists() {
                std::fs::write(&state, b"not a migration stream").unwrap();
                broken += 1;
            }
        }
    }
    assert!(broken > 0);
    let run = env.banger(&["vm", "run", "--rm", "--name", "fell-back", "--", "hostname"]);
    run.ok();
    assert_eq!(run.stdout.trim(), "fell-back");
    assert!(run.stderr.contains(RESTORED), "{}", run.stderr);
    assert!(
        run.stderr.contains("booting cold: ") && run.stderr.contains("cannot restore the snapshot"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(COLD), "{}", run.stderr);
    env.assert_nothing_left();
}

#[test]
fn a_daemon_killed_while_it_makes_a_snapshot_leaves_nothing_once_restarted() {
    let env = Env::new().with_own_cache();
    env.banger(&["daemon", "start"]).ok();
    let mut create = env
        .cmd(&["vm", "create", "--name", "k"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn create");
    // The template guest runs (its runtime directory is snapshot-*).
    let template_running = || {
        std::fs::read_dir(env.runtime_dir().join("vms"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with("snapshot-")
                    && e.path().join("qemu.pid").exists()
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !template_running() {
        assert!(std::time::Instant::now() < deadline, "no template guest");
        std::thread::sleep(Duration::from_millis(100));
    }
    let daemon = env.daemon_pid().expect("daemon pid");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &daemon.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = create.wait();
    assert!(
        !env.vmm_processes().is_empty(),
        "the template outlived its daemon"
    );
    // The next daemon ends the template and its network at once, and
    // removes the VM its lease left.
    env.banger(&["vm", "list"]).ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !env.vms().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the leased vm stays");
        std::thread::sleep(Duration::from_millis(200));
    }
    env.assert_nothing_left();
}

#[test]
fn a_snapshot_of_a_running_vm_starts_forks_with_its_files_processes_and_workspace() {
    let env = Env::new();
    let repo = env.root().join("repo");
    banger_tests::make_repo(&repo);
    // (A dependency cache is the project's: a VM with one is not
    // snapshotted.)
    env.banger(&[
        "vm",
        "run",
        "-d",
        "--no-cache",
        "--name",
        "src",
        repo.to_str().unwrap(),
    ])
    .ok();
    exec(
        &env,
        "src",
        "echo on-disk > new.txt; echo in-memory > /dev/shm/x; \
         setsid sleep 1000 </dev/null >/dev/null 2>&1 & sync",
    );
    let src_id = exec(&env, "src", "cat /etc/machine-id");
    let src_key = host_key(&env, "src");
    // A command still running when the snapshot is taken: its host is not
    // the forks' host, so it must not run (or print) in them.
    let mut inflight = env
        .cmd(&[
            "vm",
            "exec",
            "src",
            "--",
            "sh",
            "-c",
            "cp /bin/sleep /tmp/inflight && exec /tmp/inflight 600",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    exec(
        &env,
        "src",
        "for i in $(seq 100); do pgrep -x inflight && exit; sleep 0.1; done; exit 1",
    );

    let taken = env.banger(&["vm", "snapshot", "src", "--tag", "t1"]);
    taken.ok();
    assert_eq!(taken.stdout.trim(), "src:t1");
    // The VM goes on, its clock right again after the pause.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let guest_now: u64 = exec(&env, "src", "date +%s").parse().unwrap();
    assert!(
        guest_now.abs_diff(now) <= 5,
        "src's clock {guest_now}, host {now}"
    );
    // One name and tag, one snapshot.
    let again = env.banger(&["vm", "snapshot", "src", "--tag", "t1"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);

    // A fork: the workspace (its commands run there), the file, the
    // memory-only file and the process, under its own name and identity.
    let fork = env.banger(&[
        "vm",
        "run",
        "--rm",
        "--from-snapshot",
        "src:t1",
        "--name",
        "fork-a",
        "--",
        "sh",
        "-c",
        "pwd; cat new.txt /dev/shm/x; pgrep -x sleep >/dev/null && echo sleeping; hostname; cat /etc/machine-id; ! pgrep -x inflight >/dev/null || echo the in-flight exec runs",
    ]);
    fork.ok();
    let lines: Vec<&str> = fork.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", fork.stdout);
    assert_eq!(
        &lines[..6],
        [
            "/root/repo",
            "on-disk",
            "in-memory",
            "sleeping",
            "fork-a",
            lines[5]
        ],
        "{}",
        fork.stdout
    );
    assert_ne!(lines[5], src_id, "the fork kept the machine-id");
    assert!(
        fork.stderr.contains("restoring snapshot src:t1"),
        "{}",
        fork.stderr
    );

    env.banger(&[
        "vm",
        "create",
        "--from-snapshot",
        "src:t1",
        "--name",
        "fork-b",
    ])
    .ok();
    let b_id = exec(&env, "fork-b", "cat /etc/machine-id");
    assert!(b_id != src_id && b_id != lines[5]);
    assert_ne!(
        host_key(&env, "fork-b"),
        src_key,
        "fork-b kept src's ssh host key"
    );
    assert_eq!(env.show("fork-b")["workspace"]["guest_path"], "/root/repo");

    let list = env.banger(&["vm", "snapshot", "list", "--json"]);
    list.ok();
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["reference"], "src:t1");
    assert_eq!(list[0]["workspace"], "/root/repo");

    // Bad input: refused before anything exists.
    let before = env.vms().len();
    for args in [
        &["vm", "run", "--rm", "--from-snapshot", "nope", "--", "true"][..],
        &[
            "vm",
            "run",
            "--rm",
            "--from-snapshot",
            "src:t1",
            "--vcpu",
            "1",
            "--",
            "true",
        ],
        &["vm", "create", "--from-snapshot", "src:t1", "--no-start"],
        &["vm", "snapshot", "src", "--tag", "Bad/Tag"],
    ] {
        let run = env.banger(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    assert_eq!(env.vms().len(), before);

    // The snapshot outlives its VM; a fork still starts from it.
    env.banger(&["vm", "delete", "src", "fork-b"]).ok();
    let _ = inflight.kill();
    let _ = inflight.wait();
    let late = env.banger(&[
        "vm",
        "run",
        "--rm",
        "--from-snapshot",
        "src:t1",
        "--",
        "cat",
        "new.txt",
    ]);
    late.ok();
    assert_eq!(late.stdout.trim(), "on-disk");
    env.banger(&["vm", "snapshot", "delete", "src:t1"]).ok();
    let gone = env.banger(&["vm", "snapshot", "delete", "src:t1"]);
    assert_ne!(gone.code, 0);
    env.assert_nothing_left();
}
