//! Guests on the network, on a real guest: outbound access through the
//! VM's own namespace with `--nat` (a Debian and a PyPI registry, the only
//! outside addresses tests may reach), nothing reachable without it (and
//! failing fast, never hanging), `vm set --nat` applied at once on a
//! running VM. One VM for all of it. Processes, rules and their end with
//! the VM are the host tier's (`server/tests/it/network.rs`).

use banger_tests::{Env, Run};

fn sh(env: &Env, vm: &str, script: &str) -> Run {
    env.banger(&["vm", "exec", vm, "--", "sh", "-c", script])
}

/// HTTP status of a fetch from the guest, or curl's exit code.
const FETCH: &str = "curl -sS -m 60 -o /dev/null -w '%{http_code}' \"$0\"; echo \" exit=$?\"";

fn fetch(env: &Env, vm: &str, url: &str) -> String {
    let run = env.banger(&["vm", "exec", vm, "--", "sh", "-c", FETCH, url]);
    run.stdout.trim().to_string()
}

#[test]
fn nat_reaches_the_registries_and_without_it_nothing_answers() {
    let env = Env::new();
    env.banger(&["vm", "create", "--name", "net", "--nat"]).ok();
    let shown = env.show("net");
    assert_eq!(shown["network"]["mode"], "nat");
    let address = shown["network"]["guest_address"]
        .as_str()
        .unwrap()
        .to_string();
    let gateway = shown["network"]["gateway"].as_str().unwrap().to_string();
    // The guest has the address the host recorded, and its router answers
    // its names.
    let ip = sh(&env, "net", "ip -4 -o addr show eth0; cat /etc/resolv.conf");
    ip.ok();
    assert!(ip.stdout.contains(&address), "{}", ip.stdout);
    assert!(
        ip.stdout.contains(&format!("nameserver {gateway}")),
        "{}",
        ip.stdout
    );

    // With --nat: the Debian registry over HTTP (apt) and PyPI over HTTPS.
    let apt = sh(&env, "net", "apt-get update >/dev/null && echo ok");
    apt.ok();
    assert_eq!(apt.stdout.trim(), "ok", "{}", apt.stderr);
    assert_eq!(
        fetch(&env, "net", "https://pypi.org/simple/pip/"),
        "200 exit=0"
    );
    // The registry's address, resolved in the guest, for a direct-IP try.
    let resolved = sh(
        &env,
        "net",
        "getent ahostsv4 deb.debian.org | head -1 | cut -d' ' -f1",
    );
    resolved.ok();
    let registry_ip = resolved.stdout.trim().to_string();
    assert!(
        registry_ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "{registry_ip:?}"
    );

    // --no-nat on the running VM: at once, nothing answers, and fast: a
    // refused connection (curl exit 7), no time-out (28).
    let set = env.banger(&["vm", "set", "net", "--no-nat"]);
    set.ok();
    assert!(set.stderr.contains("off, now"), "{}", set.stderr);
    assert_eq!(env.show("net")["network"]["mode"], "none");
    assert_eq!(
        fetch(&env, "net", &format!("http://{registry_ip}/debian/")),
        "000 exit=7"
    );
    let dns = sh(&env, "net", "getent hosts pypi.org; echo exit=$?");
    assert_eq!(dns.stdout.trim(), "exit=2", "{}", dns.stdout);

    // And back.
    env.banger(&["vm", "set", "net", "--nat"]).ok();
    assert_eq!(
        fetch(&env, "net", "http://deb.debian.org/debian/"),
        "200 exit=0"
    );
    env.banger(&["vm", "delete", "net"]).ok();
    env.assert_nothing_left();
}
