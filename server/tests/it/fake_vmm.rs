//! The daemon's VM lifecycle decisions, through the host-process VMM test
//! double (`BANGER_TEST_VMM=fake`, debug builds: the "VM" is the real
//! `banger-agent` serving its session on the socket the daemon connects
//! to). Cleanup order, reconcile, cancel and leases run in seconds without
//! QEMU; the real-guest scenarios in `tests/guest/` stay the proof for
//! guests.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::env::{Env, alive, signal, wait_until};

/// An environment whose VMs are host processes, with an image in place.
fn fake_env(boot_ms: u64) -> Env {
    let env = Env::new()
        .with_var("BANGER_TEST_VMM", "fake")
        .with_var("BANGER_TEST_VMM_BOOT_MS", &boot_ms.to_string());
    env.fake_image();
    env
}

/// `vm create --name NAME` in the background, its stderr kept (what a
/// failed create says).
fn spawn_create(env: &Env, name: &str) -> std::process::Child {
    env.cmd(&["vm", "create", "--name", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// A VM's id and the pid of its (fake) VMM, from `vm show`.
fn id_and_pid(env: &Env, name: &str) -> (String, i32) {
    let shown = env.show(name);
    (
        shown["id"].as_str().expect("id").to_string(),
        shown["pid"].as_i64().expect("pid") as i32,
    )
}

fn vm_dirs(env: &Env, id: &str) -> (PathBuf, PathBuf) {
    (
        env.runtime_dir().join("vms").join(id),
        env.state_dir().join("vms").join(id),
    )
}

fn state_of(env: &Env, name: &str) -> Option<String> {
    env.vms()
        .into_iter()
        .find(|vm| vm["name"] == name)
        .map(|vm| vm["state"].as_str().unwrap_or_default().to_string())
}

#[test]
fn delete_ends_the_process_then_removes_runtime_dir_disks_and_row() {
    let env = fake_env(0);
    env.banger(&["vm", "create", "--name", "d1"]).ok();
    assert_eq!(state_of(&env, "d1").as_deref(), Some("running"));
    // The agent session works through the daemon: exit codes come back.
    env.banger(&["vm", "exec", "d1", "--", "sh", "-c", "exit 7"])
        .expect_code(7);
    let (id, pid) = id_and_pid(&env, "d1");
    // `vm show` names the daemon's log, which holds its lines about the VM.
    let log = std::path::PathBuf::from(env.show("d1")["daemon_log"].as_str().unwrap());
    assert!(log.ends_with("bangerd.log"), "{}", log.display());
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("vm=d1"),
        "no line about d1 in {}",
        log.display()
    );
    let (runtime, state) = vm_dirs(&env, &id);
    assert!(alive(pid), "vmm {pid} is not running");
    assert!(runtime.join("agent.sock").exists(), "no agent socket");
    assert!(state.join("work.ext4").exists(), "no work disk");
    let db = rusqlite::Connection::open_with_flags(
        env.state_dir().join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let row = || {
        db.query_row("SELECT count(*) FROM vms WHERE id = ?1", [&id], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            == 1
    };
    assert!(row());

    // Sample what exists while the delete runs: each thing may go only
    // after the one before it (process, runtime dir, disks, row), so no
    // sample may show a later one gone while an earlier one is there. A
    // sample reads them last-first: what goes later is read earlier, so a
    // delete that moves on between two reads cannot fake a wrong order.
    let delete = env.cmd(&["vm", "delete", "d1"]).spawn().unwrap();
    let mut samples = Vec::new();
    loop {
        let row_gone = !row();
        let disks_gone = !state.exists();
        let runtime_gone = !runtime.exists();
        let process_gone = !alive(pid);
        let sample = [process_gone, runtime_gone, disks_gone, row_gone];
        samples.push(sample);
        if sample.iter().all(|gone| *gone) {
            break;
        }
        assert!(samples.len() < 200_000, "delete never finished: {sample:?}");
    }
    let status = delete.wait_with_output().unwrap();
    assert!(status.status.success(), "{status:?}");
    for sample in &samples {
        let first_kept = sample.iter().position(|gone| !gone).unwrap_or(4);
        assert!(
            sample[first_kept..].iter().all(|gone| !gone),
            "out of order (gone: process, runtime dir, disks, row): {sample:?}"
        );
    }
    env.assert_nothing_left();
}

#[test]
fn a_vm_whose_process_died_is_stopped_never_running() {
    let env = fake_env(0);
    env.banger(&["vm", "create", "--name", "r1"]).ok();
    let (id, pid) = id_and_pid(&env, "r1");
    let (runtime, _) = vm_dirs(&env, &id);

    // The VMM dies under a running daemon.
    signal(pid, Signal::SIGKILL);
    wait_until(Duration::from_secs(10), "vmm gone", || !alive(pid));
    assert_eq!(state_of(&env, "r1").as_deref(), Some("stopped"));
    assert!(env.show("r1")["pid"].is_null());
    assert!(!runtime.exists(), "runtime dir of a stopped vm left");
    let exec = env.banger(&["vm", "exec", "r1", "--", "true"]);
    // banger's own failure to run a guest command: 125, not a guest code.
    exec.expect_code(125);
    assert!(exec.stderr.contains("is not running"), "{}", exec.stderr);

    // A VMM outlives its daemon: a new daemon finds it running and reaches
    // its agent again.
    env.banger(&["vm", "start", "r1"]).ok();
    let (_, pid) = id_and_pid(&env, "r1");
    let daemon = env.daemon_pid().expect("daemon pid");
    signal(daemon, Signal::SIGKILL);
    wait_until(Duration::from_secs(10), "daemon gone", || !alive(daemon));
    assert!(alive(pid), "the vmm died with its daemon");
    assert_eq!(state_of(&env, "r1").as_deref(), Some("running"));
    env.banger(&["vm", "exec", "r1", "--", "true"]).ok();

    // The VMM dies while no daemon runs: the next daemon reconciles it.
    let daemon = env.daemon_pid().expect("daemon pid");
    signal(daemon, Signal::SIGKILL);
    signal(pid, Signal::SIGKILL);
    wait_until(Duration::from_secs(10), "both gone", || {
        !alive(daemon) && !alive(pid)
    });
    assert_eq!(state_of(&env, "r1").as_deref(), Some("stopped"));
    assert!(!runtime.exists(), "runtime dir of a stopped vm left");
    env.banger(&["vm", "delete", "r1"]).ok();
    env.assert_nothing_left();
}

/// The boot never finishes within the test (the agent answers after ten
/// minutes), so only a cancel can end it.
const NEVER_BOOTS: u64 = 600_000;

#[test]
fn a_create_whose_client_dies_while_booting_is_cancelled_and_leaves_nothing() {
    let env = fake_env(NEVER_BOOTS);
    env.banger(&["daemon", "start"]).ok();
    let mut create = env
        .cmd(&["vm", "create", "--name", "c1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "vm c1 starting", || {
        state_of(&env, "c1").as_deref() == Some("starting")
    });
    let (_, pid) = id_and_pid(&env, "c1");
    assert!(alive(pid));
    // The client crashes: it can clean nothing up itself.
    signal(create.id() as i32, Signal::SIGKILL);
    create.wait().unwrap();
    wait_until(Duration::from_secs(30), "vm c1 removed", || {
        state_of(&env, "c1").is_none()
    });
    assert!(!alive(pid), "the vmm of a cancelled create still runs");
    env.assert_nothing_left();
    let log = std::fs::read_to_string(env.state_dir().join("bangerd.log")).unwrap();
    assert!(log.contains("the boot was cancelled"), "{log}");
}

#[test]
fn a_starting_daemon_removes_vms_a_previous_daemon_left_bound_to_a_lease() {
    let env = fake_env(NEVER_BOOTS);
    env.banger(&["daemon", "start"]).ok();
    let mut create = env
        .cmd(&["vm", "create", "--name", "l1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "vm l1 starting", || {
        state_of(&env, "l1").as_deref() == Some("starting")
    });
    let (_, pid) = id_and_pid(&env, "l1");
    // The daemon dies while the create's lease is held; the VMM lives on.
    let daemon = env.daemon_pid().expect("daemon pid");
    signal(daemon, Signal::SIGKILL);
    assert!(!create.wait().unwrap().success());
    assert!(alive(pid), "the vmm died with its daemon");
    // Any command starts a new daemon, which removes it.
    wait_until(Duration::from_secs(30), "vm l1 removed", || {
        state_of(&env, "l1").is_none()
    });
    wait_until(Duration::from_secs(10), "vmm gone", || !alive(pid));
    env.assert_nothing_left();
}

/// The daemon's JSON from `daemon status`.
fn daemon_info(env: &Env) -> serde_json::Value {
    let run = env.banger(&["daemon", "status"]);
    run.ok();
    serde_json::from_str(&run.stdout).expect("daemon status json")
}

/// `daemon stop` does not kill what other clients run: refused while a
/// command runs, with what to do; `--force` stops it anyway.
#[test]
fn daemon_stop_refuses_while_a_command_runs_unless_forced() {
    let env = fake_env(0);
    env.banger(&["vm", "create", "--name", "s1"]).ok();
    // Its stdin stays open: no input request of its own comes and goes
    // beside it.
    let mut running = env
        .cmd(&["vm", "exec", "s1", "--", "sleep", "60"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the command runs", || {
        daemon_info(&env)["busy"].as_u64() == Some(1)
    });
    let stop = env.banger(&["daemon", "stop"]);
    assert_ne!(stop.code, 0);
    assert!(
        stop.stderr.contains("serving 1 other request") && stop.stderr.contains("--force"),
        "{}",
        stop.stderr
    );
    assert!(
        running.try_wait().unwrap().is_none(),
        "the command was ended"
    );
    assert!(env.daemon_pid().is_some());
    let stop = env.banger(&["daemon", "stop", "--force"]);
    stop.ok();
    assert!(stop.stdout.contains("bangerd stopped"), "{}", stop.stdout);
    assert!(env.daemon_pid().is_none());
    let status = running.wait().unwrap();
    assert!(!status.success());
    env.banger(&["vm", "delete", "s1"]).ok();
    env.assert_nothing_left();
}

/// One daemon per database: a second one, even with another runtime
/// directory (another login), refuses to start on the same state.
#[test]
fn one_daemon_per_state_directory_whatever_the_runtime_directory() {
    let env = Env::new();
    env.banger(&["daemon", "start"]).ok();
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_bangerd"))
        .env("XDG_RUNTIME_DIR", env.root().join("other-run"))
        .env("XDG_STATE_HOME", env.root().join("state"))
        .env("XDG_CACHE_HOME", env.root().join("cache"))
        .env("XDG_DATA_HOME", env.root().join("data"))
        .env("XDG_CONFIG_HOME", env.root().join("config"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("already running") && stderr.contains("state/banger/bangerd.lock"),
        "{stderr}"
    );
    assert!(!env.root().join("other-run/banger/bangerd.sock").exists());
}

/// A request line past the limit is refused after reading just past the
/// limit, and the connection is closed; the daemon serves on.
#[test]
fn an_oversize_request_is_refused_and_the_daemon_serves_on() {
    use std::io::{BufRead, Write};
    let env = Env::new();
    env.banger(&["daemon", "start"]).ok();
    let stream =
        std::os::unix::net::UnixStream::connect(env.runtime_dir().join("bangerd.sock")).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..17 {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut reply = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut reply)
        .unwrap();
    assert!(reply.contains("request over 16777216 bytes"), "{reply}");
    sender.join().unwrap();
    env.banger(&["daemon", "status"]).ok();
}

/// A VMM that dies during boot is named as the cause (not the console's
/// last harmless line), and the failed create leaves nothing.
#[test]
fn a_vmm_killed_during_boot_is_the_reported_cause_and_nothing_is_left() {
    let env = fake_env(30_000);
    let create = spawn_create(&env, "c1");
    let mut pid = None;
    wait_until(Duration::from_secs(20), "the vm is booting", || {
        pid = env
            .vms()
            .into_iter()
            .find(|vm| vm["name"] == "c1" && vm["state"] == "starting")
            .and_then(|vm| vm["pid"].as_i64());
        pid.is_some()
    });
    signal(pid.unwrap() as i32, Signal::SIGKILL);
    let out = create.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the VMM exited after")
            && stderr.contains("killed with SIGKILL")
            && stderr.contains("the vm that failed to start was removed"),
        "{stderr}"
    );
    env.assert_nothing_left();
}

/// A banger of another API version never stops a daemon that serves
/// someone: it waits (and says so), and replaces it once it is idle. One
/// of the same version uses it whatever its build.
#[test]
fn a_daemon_of_another_api_version_is_replaced_only_when_idle() {
    let env = fake_env(0).with_var("BANGER_TEST_API_VERSION", "999");
    env.banger(&["vm", "create", "--name", "a1"]).ok();
    let old = env.daemon_pid().expect("daemon");
    assert_eq!(daemon_info(&env)["api_version"], 999);
    // Its stdin stays open: no input request of its own comes and goes
    // beside it.
    let mut running = env
        .cmd(&["vm", "exec", "a1", "--", "sleep", "60"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the command runs", || {
        daemon_info(&env)["busy"].as_u64() == Some(1)
    });
    // This build speaks another version: it waits for the busy daemon.
    let newer = env
        .cmd(&["vm", "list"])
        .env_remove("BANGER_TEST_API_VERSION")
        .env("BANGER_DAEMON_WAIT", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&newer.stderr);
    assert_eq!(newer.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("waiting for bangerd of another version")
            && stderr.contains("still serving other clients (requests in flight: 1)"),
        "{stderr}"
    );
    assert!(
        running.try_wait().unwrap().is_none(),
        "the command was ended"
    );
    assert_eq!(env.daemon_pid(), Some(old));
    // Idle: it is replaced, and the VM lives on under the new daemon.
    running.kill().unwrap();
    running.wait().unwrap();
    wait_until(Duration::from_secs(20), "the command ended", || {
        daemon_info(&env)["busy"].as_u64() == Some(0)
    });
    let newer = env
        .cmd(&["vm", "list"])
        .env_remove("BANGER_TEST_API_VERSION")
        .output()
        .unwrap();
    assert!(
        newer.status.success(),
        "{}",
        String::from_utf8_lossy(&newer.stderr)
    );
    assert!(String::from_utf8_lossy(&newer.stdout).contains("a1"));
    let new = env.daemon_pid().expect("daemon");
    assert_ne!(new, old);
    env.banger(&["vm", "delete", "a1"]).ok();
}

/// When `--rm` cannot remove its VM, the run still ends with the command's
/// exit code, and the warning names the VM and the command that removes it.
#[test]
fn a_failed_rm_cleanup_names_the_vm_and_how_to_remove_it() {
    let env = fake_env(0);
    // The "guest" of the fake VMM is the host: pin a directory in the VM's
    // state so that removing it fails (immutable as root, read-only as
    // anyone else).
    let pin = format!(
        "d=$(ls -d {}/vms/*/ | head -1)pin; mkdir \"$d\" && touch \"$d/x\" && chmod 555 \"$d\" && (chattr +i \"$d\" 2>/dev/null || true); exit 3",
        env.state_dir().display()
    );
    let run = env.banger(&["vm", "run", "--rm", "--name", "r1", "--", "sh", "-c", &pin]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("warning: vm ")
            && run.stderr.contains("was not removed")
            && run.stderr.contains("remove it with: banger vm delete "),
        "{}",
        run.stderr
    );
    // The daemon tries once more when the run's lease ends; that try must
    // fail on the pin too, not race the unpinning below.
    let log = env.state_dir().join("bangerd.log");
    wait_until(Duration::from_secs(10), "the lease's removal tried", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cannot remove a vm whose client went away")
    });
    // Unpinned, the named command removes it.
    let unpin = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for d in {}/vms/*/pin; do chattr -i \"$d\" 2>/dev/null; chmod 755 \"$d\"; done",
            env.state_dir().display()
        ))
        .status()
        .unwrap();
    assert!(unpin.success());
    env.banger(&["vm", "delete", "r1"]).ok();
    env.assert_nothing_left();
}

/// An image delete never removes what a create has chosen and not yet
/// recorded: it waits for the create, then refuses (the image is in use).
#[test]
fn an_image_delete_waits_for_a_create_that_chose_the_image() {
    let env = fake_env(0).with_var("BANGER_TEST_CREATE_PAUSE_MS", "3000");
    env.banger(&["daemon", "start"]).ok();
    let create = spawn_create(&env, "c2");
    // The create has chosen the image and pauses before it is made.
    std::thread::sleep(Duration::from_millis(1000));
    let delete = env.banger(&["image", "delete", "debian-bookworm"]);
    assert_ne!(delete.code, 0, "the image was deleted under a create");
    assert!(
        delete.stderr.contains("is used by vm c2"),
        "{}",
        delete.stderr
    );
    let out = create.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.banger(&["vm", "exec", "c2", "--", "true"]).ok();
    env.banger(&["vm", "delete", "c2"]).ok();
    env.banger(&["image", "delete", "debian-bookworm"]).ok();
}

/// A program the guest cannot start is exit 127 (decided on the error's
/// code, not its text), whatever the program's name says.
#[test]
fn a_program_the_guest_cannot_start_is_exit_127() {
    let env = fake_env(0);
    env.banger(&["vm", "create", "--name", "n1"]).ok();
    let run = env.banger(&["vm", "exec", "n1", "--", "/nonexistent/cannot-run-me"]);
    run.expect_code(127);
    assert!(run.stderr.contains("cannot run"), "{}", run.stderr);
    let run = env.banger(&[
        "vm",
        "exec",
        "n1",
        "--guest-path",
        "/nonexistent",
        "--",
        "true",
    ]);
    run.expect_code(127);
    assert!(
        run.stderr
            .contains("working directory /nonexistent does not exist"),
        "{}",
        run.stderr
    );
    // A program that runs and fails keeps its own code.
    env.banger(&["vm", "exec", "n1", "--", "sh", "-c", "exit 126"])
        .expect_code(126);
    env.banger(&["vm", "delete", "n1"]).ok();
    env.assert_nothing_left();
}

/// Deleting a VM while it boots does not wait the boot out: the boot gives
/// up, and nothing of the VM is left.
#[test]
fn deleting_a_booting_vm_cancels_its_boot() {
    let env = fake_env(120_000);
    let create = spawn_create(&env, "b1");
    wait_until(Duration::from_secs(20), "the vm is booting", || {
        state_of(&env, "b1").as_deref() == Some("starting")
    });
    env.banger(&["vm", "delete", "b1"]).ok();
    // Had the delete waited the boot out, the create would have succeeded.
    let out = create.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the vm is being deleted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_nothing_left();
}

/// A VM deleted while it is being created (its row made, its disks and
/// boot to come: a lease that ended, or a user) is not built and launched
/// afterwards: the delete waits for the create, which gives up, and
/// nothing is left, no process above all.
#[test]
fn a_vm_deleted_while_it_is_created_is_not_launched_after() {
    let env = fake_env(0).with_var("BANGER_TEST_CREATE_PAUSE_MS", "3000");
    env.banger(&["daemon", "start"]).ok();
    let create = spawn_create(&env, "c3");
    wait_until(Duration::from_secs(20), "the row exists", || {
        state_of(&env, "c3").is_some()
    });
    env.banger(&["vm", "delete", "c3"]).ok();
    let out = create.wait_with_output().unwrap();
    assert!(!out.status.success(), "the create went on");
    env.assert_nothing_left();
}
