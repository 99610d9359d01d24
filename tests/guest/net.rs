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

/// `GET /` from the host, or `None` when nothing answers.
pub(crate) fn http_get(at: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = at.parse().ok()?;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/").then_some(body)
}

pub(crate) fn wait_for_page(at: &str, wanted: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if http_get(at).is_some_and(|b| b.contains(wanted)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{at} never served {wanted:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A web server in the guest, serving `page` on `port` (and `bind`).
fn serve(env: &Env, vm: &str, page: &str, port: u16, bind: &str) {
    sh(
        env,
        vm,
        &format!(
            "mkdir -p /srv/{port} && echo {page} > /srv/{port}/index.html && cd /srv/{port} && \
             nohup python3 -m http.server {port} --bind {bind} >/dev/null 2>&1 &"
        ),
    )
    .ok();
}

#[test]
fn guest_ports_reach_the_host_on_each_vms_own_address_and_by_publish() {
    let env = Env::new();
    // A free host port for the fixed forward.
    let fixed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.banger(&["vm", "create", "--name", "web1"]).ok();
    env.banger(&[
        "vm",
        "create",
        "--name",
        "web2",
        "-p",
        &format!("127.0.0.1:{fixed}:8000"),
    ])
    .ok();
    let ip = |vm: &str| {
        let run = env.banger(&["vm", "ip", vm]);
        run.ok();
        run.stdout.trim().to_string()
    };
    let (a, b) = (ip("web1"), ip("web2"));
    assert_ne!(a, b);
    assert!(
        a.starts_with("127.66.") && b.starts_with("127.66."),
        "{a} {b}"
    );
    // Both serve port 8000; neither collides with the other.
    serve(&env, "web1", "page-one", 8000, "0.0.0.0");
    serve(&env, "web2", "page-two", 8000, "0.0.0.0");
    serve(&env, "web1", "hidden", 8001, "127.0.0.1");
    wait_for_page(&format!("{a}:8000"), "page-one");
    wait_for_page(&format!("{b}:8000"), "page-two");
    wait_for_page(&format!("127.0.0.1:{fixed}"), "page-two");

    let ports = env.banger(&["vm", "ports", "web1", "--json"]);
    ports.ok();
    let list: serde_json::Value = serde_json::from_str(&ports.stdout).unwrap();
    let entry = |port: u16| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == port && p["proto"] == "tcp")
            .unwrap_or_else(|| panic!("no port {port} in {list}"))
            .clone()
    };
    let web = entry(8000);
    assert_eq!(web["process"], "python3", "{web}");
    assert_eq!(web["host"], serde_json::json!([format!("{a}:8000")]));
    // Bound to the guest's loopback: listed, not forwarded, and said why.
    let hidden = entry(8001);
    assert_eq!(hidden["host"], serde_json::json!([]));
    assert!(
        hidden["note"].as_str().unwrap().contains("loopback"),
        "{hidden}"
    );
    assert!(http_get(&format!("{a}:8001")).is_none());
    let forwarded = env.show("web1")["network"]["forwarded"].to_string();
    assert!(
        forwarded.contains(&format!("{a}:8000 -> 8000")),
        "{forwarded}"
    );
    let table = env.banger(&["vm", "ports", "web1"]);
    table.ok();
    assert!(
        table.stdout.contains("python3") && table.stdout.contains(&format!("{a}:8000")),
        "{}",
        table.stdout
    );

    // The forwards end with the VM.
    env.banger(&["vm", "delete", "web1", "web2"]).ok();
    assert!(http_get(&format!("{a}:8000")).is_none());
    assert!(http_get(&format!("127.0.0.1:{fixed}")).is_none());
    env.assert_nothing_left();
}

/// `--allow`: only the named registry is reachable, however the guest
/// tries otherwise (its own name lookup, an address directly, an allowed
/// name in SNI while connecting elsewhere); refusals are named in `vm
/// show`; `vm set --allow` changes the rules at once.
#[test]
fn allow_rules_hold_against_names_addresses_and_sni_and_say_what_they_refused() {
    let env = Env::new();
    env.banger(&["vm", "create", "--name", "eg", "--allow", "deb.debian.org"])
        .ok();
    let shown = env.show("eg");
    assert_eq!(shown["network"]["mode"], "allow");
    assert_eq!(
        shown["network"]["allow"],
        serde_json::json!(["deb.debian.org"])
    );

    let apt = sh(&env, "eg", "apt-get update >/dev/null && echo ok");
    assert_eq!(apt.stdout.trim(), "ok", "{}", apt.stderr);
    // Another registry: its name does not resolve (6)...
    assert_eq!(fetch(&env, "eg", "https://pypi.org/simple/"), "000 exit=6");
    // ...and resolved by the guest itself (the registries share one
    // address here), the connection is refused by its SNI (35: reset in
    // the TLS handshake), by its Host header when it names an address
    // directly (56: reset), never timed out.
    let registry_ip = {
        let r = sh(
            &env,
            "eg",
            "getent ahostsv4 deb.debian.org | head -1 | cut -d' ' -f1",
        );
        r.ok();
        r.stdout.trim().to_string()
    };
    let forced = env.banger(&[
        "vm",
        "exec",
        "eg",
        "--",
        "curl",
        "-sS",
        "-m",
        "30",
        "-o",
        "/dev/null",
        "--resolve",
        &format!("pypi.org:443:{registry_ip}"),
        "https://pypi.org/simple/",
    ]);
    assert_eq!(forced.code, 35, "{}", forced.stderr);
    assert_eq!(
        fetch(&env, "eg", &format!("http://{registry_ip}/debian/")),
        "000 exit=56"
    );
    // An allowed name in SNI while connecting elsewhere (an address where
    // nothing answers): banger dials the allowed name itself, so the
    // guest reaches the registry and never "elsewhere".
    let elsewhere = env.banger(&[
        "vm",
        "exec",
        "eg",
        "--",
        "curl",
        "-sS",
        "-m",
        "30",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        "deb.debian.org:443:192.0.2.77",
        "https://deb.debian.org/debian/",
    ]);
    assert_eq!(elsewhere.stdout, "200", "{}", elsewhere.stderr);

    let refused = env.show("eg")["network"]["refused"].clone();
    let text = refused.to_string();
    assert!(text.contains("name pypi.org"), "{text}");
    assert!(text.contains("pypi.org:443 (connection"), "{text}");
    assert!(text.contains(&format!("{registry_ip}:80")), "{text}");
    let logs = env.banger(&["vm", "logs", "eg"]);
    logs.ok();
    assert!(
        logs.stdout
            .contains("[network] refused pypi.org:443 (connection"),
        "{}",
        logs.stdout
    );

    // New rules at once: now PyPI and not Debian.
    let set = env.banger(&["vm", "set", "eg", "--allow", "pypi.org"]);
    set.ok();
    assert!(
        set.stderr.contains("only to pypi.org, now"),
        "{}",
        set.stderr
    );
    assert_eq!(
        fetch(&env, "eg", "https://pypi.org/simple/pip/"),
        "200 exit=0"
    );
    assert_eq!(
        fetch(&env, "eg", "http://deb.debian.org/debian/"),
        "000 exit=6"
    );
    env.banger(&["vm", "delete", "eg"]).ok();
    env.assert_nothing_left();
}
