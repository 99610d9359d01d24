//! The lifecycle verbs on a real guest: restart, prune, stats, logs, set
//! and kill. One VM goes through all of them (four boots in all), since
//! every boot costs seconds of emulated CPU; the verbs that need no guest
//! are host tests (`server/tests/it/lifecycle.rs`). And a boot that
//! `/init` fails.

use banger_tests::Env;

fn exec(env: &Env, vm: &str, script: &str) -> String {
    let run = env.banger(&["vm", "exec", vm, "--", "sh", "-c", script]);
    run.ok();
    run.stdout.trim().to_string()
}

fn json(run: &banger_tests::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.stdout, run.stderr))
}

#[test]
fn restart_prune_stats_logs_set_and_kill_on_one_guest() {
    let env = Env::new();
    let create = env.banger(&[
        "vm",
        "create",
        "--name",
        "lc",
        "--vcpu",
        "2",
        "--system-overlay-size",
        "3G",
    ]);
    create.ok();
    assert!(create.stderr.contains("ready in"), "{}", create.stderr);
    assert_eq!(exec(&env, "lc", "nproc"), "2");
    // The root overlay's upper disk has the size asked for: writes outside
    // /root are bounded by it.
    let root_kib: u64 = exec(&env, "lc", "df -k / | tail -1 | awk '{print $2}'")
        .parse()
        .unwrap();
    assert!(
        (2_500_000..=3 * 1024 * 1024).contains(&root_kib),
        "/ is {root_kib} KiB, not about 3G"
    );
    exec(&env, "lc", "echo kept > /root/note && sync");
    let boot1 = exec(&env, "lc", "cat /proc/sys/kernel/random/boot_id");

    // Prune deletes what is not running and never a running VM.
    env.banger(&["vm", "create", "--no-start", "--name", "lc-idle"])
        .ok();
    let pruned = env.banger(&["vm", "prune", "-f", "--json"]);
    pruned.ok();
    assert_eq!(json(&pruned), serde_json::json!(["lc-idle"]));
    let names: Vec<String> = env
        .vms()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["lc"]);
    assert_eq!(env.show("lc")["state"], "running");
    assert_eq!(exec(&env, "lc", "cat /root/note"), "kept");

    // Restart is a real reboot: a new boot id, /root kept.
    let restart = env.banger(&["vm", "restart", "lc"]);
    restart.ok();
    assert!(
        restart.stderr.contains("restarted in"),
        "{}",
        restart.stderr
    );
    let boot2 = exec(&env, "lc", "cat /proc/sys/kernel/random/boot_id");
    assert_ne!(boot1, boot2, "restart did not reboot the guest");
    assert_eq!(env.show("lc")["boot_id"], boot2.as_str());
    assert_eq!(exec(&env, "lc", "cat /root/note"), "kept");

    // Stats of the running VMM.
    let stats = env.banger(&["vm", "stats", "lc", "--json"]);
    stats.ok();
    let stats = json(&stats);
    assert_eq!(stats["state"], "running");
    assert!(stats["pid"].as_i64().is_some(), "{stats}");
    assert!(stats["cpu_secs"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(
        stats["rss_bytes"].as_u64().unwrap() > 64 << 20,
        "a booted guest's VMM holds more than 64 MiB: {stats}"
    );
    assert!(stats["uptime_secs"].as_u64().is_some(), "{stats}");
    assert!(stats["disk_used_bytes"].as_u64().unwrap() > 0, "{stats}");

    // Logs: the guest's console and the daemon's lines about this VM.
    exec(&env, "lc", "echo console-marker-7 > /dev/console");
    let logs = env.banger(&["vm", "logs", "lc"]);
    logs.ok();
    assert!(logs.stdout.contains("console-marker-7"), "{}", logs.stdout);
    assert!(
        logs.stdout.contains("[bangerd]") && logs.stdout.contains("restarting"),
        "{}",
        logs.stdout
    );

    // Set is refused while the VM runs, and applies at the next start.
    let refused = env.banger(&["vm", "set", "lc", "--vcpu", "4", "--json"]);
    refused.expect_code(1);
    let error = json(&refused);
    assert_eq!(error["error"]["code"], "running", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stop it first"),
        "{error}"
    );
    env.banger(&["vm", "stop", "lc"]).ok();
    env.banger(&["vm", "set", "lc", "--vcpu", "4"]).ok();
    env.banger(&["vm", "start", "lc"]).ok();
    assert_eq!(exec(&env, "lc", "nproc"), "4");

    // Kill: the VM ends stopped (not error), its per-boot files gone, its
    // disks kept.
    let id = env.show("lc")["id"].as_str().unwrap().to_string();
    let runtime = env.runtime_dir().join("vms").join(&id);
    assert!(runtime.exists(), "a running vm has a runtime dir");
    env.banger(&["vm", "kill", "lc"]).ok();
    let shown = env.show("lc");
    assert_eq!(shown["state"], "stopped", "{shown}");
    assert!(shown["last_error"].is_null(), "{shown}");
    assert!(!runtime.exists(), "kill left {}", runtime.display());
    assert_eq!(env.vmm_processes(), Vec::<i32>::new(), "kill left the VMM");
    assert!(
        env.state_dir()
            .join("vms")
            .join(&id)
            .join("work.ext4")
            .exists()
    );

    // Another signal: the VMM gets it (QEMU exits on TERM), same outcome.
    env.banger(&["vm", "start", "lc"]).ok();
    assert!(runtime.exists());
    env.banger(&["vm", "kill", "--signal", "TERM", "lc"]).ok();
    assert_eq!(env.show("lc")["state"], "stopped");
    assert!(!runtime.exists(), "kill -s TERM left {}", runtime.display());
    let logs = env.banger(&["vm", "logs", "lc"]);
    assert!(
        logs.stdout.contains("killing the vmm with SIGTERM"),
        "{}",
        logs.stdout
    );
    assert!(
        !logs.stdout.contains("outlived"),
        "the VMM ignored TERM: {}",
        logs.stdout
    );
    assert_eq!(env.vmm_processes(), Vec::<i32>::new());

    env.banger(&["vm", "delete", "lc"]).ok();
    env.assert_nothing_left();
}

/// A boot whose `/init` fails (here: the VM's work disk is no file
/// system any more) ends at once with `/init`'s own words, not at the
/// boot time-out: the guest powers off, the start fails with the
/// console's `banger-init:` line, and nothing of the boot is left.
#[test]
fn a_boot_whose_init_fails_ends_at_once_and_says_why() {
    let env = Env::new();
    env.banger(&["vm", "create", "--name", "broken"]).ok();
    env.banger(&["vm", "stop", "broken"]).ok();
    let id = env.show("broken")["id"].as_str().unwrap().to_string();
    let work = env.state_dir().join("vms").join(&id).join("work.ext4");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut disk = std::fs::OpenOptions::new().write(true).open(&work).unwrap();
        disk.seek(SeekFrom::Start(0)).unwrap();
        disk.write_all(&vec![0u8; 1 << 20]).unwrap();
    }
    let start = env.banger(&["vm", "start", "broken"]);
    assert_ne!(start.code, 0, "{}", start.stderr);
    assert!(
        start.stderr.contains("banger-init: cannot mount disk work"),
        "{}",
        start.stderr
    );
    // Powered off by /init, not waited out.
    assert!(start.stderr.contains("the VMM exited"), "{}", start.stderr);
    let shown = env.show("broken");
    assert_eq!(shown["state"], "error", "{shown}");
    assert!(
        shown["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("banger-init: cannot mount disk work")),
        "{shown}"
    );
    assert_eq!(env.vmm_processes(), Vec::<i32>::new(), "the VMM is left");
    assert!(!env.runtime_dir().join("vms").join(&id).exists());
    env.banger(&["vm", "delete", "broken"]).ok();
    env.assert_nothing_left();
}
