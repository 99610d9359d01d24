//! ssh on a real guest: `banger vm ssh` (banger's own client) passes argv
//! and exit codes through exactly; `banger ssh-config --install` makes the
//! user's own `ssh NAME.vm` work with the host key the agent reported
//! (a fake HOME whose config has an entry of its own, kept; a second
//! install adds nothing; uninstall removes only banger's lines; a
//! symlinked config is refused); sshd costs nothing until used and `vm
//! ports` names it. One VM, no `--nat`: none of it needs the network.

use banger_tests::Env;

#[test]
fn vm_ssh_and_ssh_name_vm_reach_the_guest_with_its_own_host_key() {
    let env = Env::new();
    env.banger(&["vm", "create", "--name", "sshvm"]).ok();

    // Exact argv and exit code (the seed's bug joined argv into a string).
    env.banger(&["vm", "ssh", "sshvm", "--", "sh", "-c", "exit 42"])
        .expect_code(42);
    let quoted = env.banger(&["vm", "ssh", "sshvm", "--", "sh", "-c", "echo \"a  b\""]);
    quoted.ok();
    assert_eq!(quoted.stdout, "a  b\n");
    let odd = env.banger(&[
        "vm", "ssh", "sshvm", "--", "printf", "[%s]", "it's", "", "$HOME",
    ]);
    odd.ok();
    assert_eq!(odd.stdout, "[it's][][$HOME]");

    // The host key in known_hosts is the guest's own, as its agent read it.
    let guest_key = env.banger(&[
        "vm",
        "exec",
        "sshvm",
        "--",
        "cut",
        "-d",
        " ",
        "-f1,2",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ]);
    guest_key.ok();
    let known_hosts = env.state_dir().join("ssh/known_hosts");
    let known = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(
        known.contains(&format!("sshvm.vm {}", guest_key.stdout.trim())),
        "{known}"
    );

    // A HOME of the user's own, with an entry of its own.
    let home = tempfile::tempdir().unwrap();
    let ssh_dir = home.path().join(".ssh");
    std::fs::create_dir(&ssh_dir).unwrap();
    let user_config = "Host myserver\n    HostName 192.0.2.9\n";
    std::fs::write(ssh_dir.join("config"), user_config).unwrap();
    let home_str = home.path().to_str().unwrap();
    let with_home = |args: &[&str]| {
        let mut cmd = env.cmd(args);
        cmd.env("HOME", home_str);
        banger_tests::Run::from(cmd.output().unwrap())
    };
    with_home(&["ssh-config", "--install"]).ok();
    let once = std::fs::read_to_string(ssh_dir.join("config")).unwrap();
    with_home(&["ssh-config", "--install"]).ok();
    let twice = std::fs::read_to_string(ssh_dir.join("config")).unwrap();
    assert_eq!(once, twice, "a second install changed the file");
    assert!(once.ends_with(user_config), "{once}");
    assert_eq!(once.matches("Include").count(), 1, "{once}");

    // The user's own ssh (OpenSSH reads the config named here: it takes
    // the home directory from the password database, not from HOME).
    let ssh = |args: &[&str]| {
        let mut cmd = std::process::Command::new("ssh");
        cmd.arg("-F")
            .arg(ssh_dir.join("config"))
            .args(args)
            // The ProxyCommand's banger talks to this environment's daemon.
            .env("XDG_RUNTIME_DIR", env.root().join("run"))
            .env("XDG_STATE_HOME", env.root().join("state"))
            .stdin(std::process::Stdio::null());
        banger_tests::Run::from(cmd.output().unwrap())
    };
    let ok = ssh(&["sshvm.vm", "--", "echo", "ok"]);
    ok.ok();
    assert_eq!(ok.stdout, "ok\n", "{}", ok.stderr);
    ssh(&["sshvm.vm", "--", "true"]).ok();
    ssh(&["sshvm.vm", "--", "sh", "-c", "'exit 7'"]).expect_code(7);

    // sshd listens only through systemd's socket until used, and `vm
    // ports` names the program behind it.
    let ports = env.banger(&["vm", "ports", "sshvm", "--json"]);
    ports.ok();
    let list: serde_json::Value = serde_json::from_str(&ports.stdout).unwrap();
    let ssh22 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 22)
        .unwrap_or_else(|| panic!("no port 22 in {list}"));
    assert!(
        ssh22["process"].as_str().unwrap().contains("sshd"),
        "{ssh22}"
    );
    let boot_sshd = env.banger(&[
        "vm",
        "exec",
        "sshvm",
        "--",
        "systemctl",
        "is-active",
        "ssh.service",
    ]);
    assert_eq!(boot_sshd.stdout.trim(), "inactive", "sshd runs from boot");

    // Uninstall removes banger's lines only.
    with_home(&["ssh-config", "--uninstall"]).ok();
    assert_eq!(
        std::fs::read_to_string(ssh_dir.join("config")).unwrap(),
        user_config
    );
    // A symlinked config is not written through.
    let real = home.path().join("real-config");
    std::fs::write(&real, user_config).unwrap();
    std::fs::remove_file(ssh_dir.join("config")).unwrap();
    std::os::unix::fs::symlink(&real, ssh_dir.join("config")).unwrap();
    let refused = with_home(&["ssh-config", "--install"]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("symbolic link"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), user_config);

    // Its key leaves known_hosts with it.
    env.banger(&["vm", "delete", "sshvm"]).ok();
    assert!(
        !std::fs::read_to_string(&known_hosts)
            .unwrap()
            .contains("sshvm.vm")
    );
    env.assert_nothing_left();
}

/// The seed's demo, end to end, as a user without privileges (when the
/// tests run as root): a detached VM with outbound access, the user's own
/// `ssh demo.vm`, a web server in the guest reached from the host on the
/// VM's own address, `vm ports`, stop/start, kill and delete.
#[test]
fn the_seed_demo_as_a_user_without_privileges() {
    Env::new().ensure_image();
    let env = Env::new();
    let user = crate::running_as_root().then_some(65534u32);
    let env = match user {
        Some(uid) => env.as_user(uid),
        None => env,
    };
    env.banger(&["vm", "run", "--nat", "--name", "demo", "-d"])
        .ok();
    env.banger(&["ssh-config", "--install"]).ok();
    let config = env.root().join(".ssh/config");
    let ssh = |args: &[&str]| {
        let mut cmd = match user {
            Some(uid) => {
                let mut c = std::process::Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .args(["--clear-groups", "--", "ssh"]);
                c
            }
            None => std::process::Command::new("ssh"),
        };
        cmd.arg("-F")
            .arg(&config)
            .args(args)
            .env("HOME", env.root())
            .env("XDG_RUNTIME_DIR", env.root().join("run"))
            .env("XDG_STATE_HOME", env.root().join("state"))
            .env("XDG_CACHE_HOME", env.root().join("cache"))
            .stdin(std::process::Stdio::null());
        banger_tests::Run::from(cmd.output().unwrap())
    };
    let uname = ssh(&["demo.vm", "--", "uname", "-a"]);
    uname.ok();
    assert!(uname.stdout.starts_with("Linux demo "), "{}", uname.stdout);
    let ok = ssh(&["demo.vm", "--", "echo", "ok"]);
    assert_eq!(ok.stdout, "ok\n", "{}", ok.stderr);

    env.banger(&[
        "vm",
        "exec",
        "demo",
        "--",
        "sh",
        "-c",
        "cd /tmp && nohup python3 -m http.server 8000 >/dev/null 2>&1 &",
    ])
    .ok();
    let ip = env.banger(&["vm", "ip", "demo"]);
    ip.ok();
    crate::net::wait_for_page(&format!("{}:8000", ip.stdout.trim()), "<!DOCTYPE HTML");
    let ports = env.banger(&["vm", "ports", "demo"]);
    ports.ok();
    assert!(
        ports.stdout.contains("python3") && ports.stdout.contains("sshd"),
        "{}",
        ports.stdout
    );

    // Files and host key survive stop/start; ssh needs no new trust.
    env.banger(&["vm", "stop", "demo"]).ok();
    env.banger(&["vm", "start", "demo"]).ok();
    ssh(&["demo.vm", "--", "true"]).ok();
    assert_eq!(env.banger(&["vm", "ip", "demo"]).stdout, ip.stdout);

    env.banger(&["vm", "kill", "demo"]).ok();
    env.banger(&["vm", "delete", "demo"]).ok();
    env.assert_nothing_left();
}
