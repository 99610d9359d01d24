//! Each VM's network (pasta, the keeper, the namespace and its rules)
//! through the `fake` VMM, which joins the network like a VMM does: it
//! lives with the VM, its rules follow `--nat` at once and across
//! restarts, and nothing of it outlives the VM however the VM ends. Real
//! traffic through a guest is the real-guest tier's (`tests/guest/net.rs`).

use std::path::Path;
use std::time::Duration;

use banger::process::ProcessIdentity;
use nix::sys::signal::Signal;

use crate::env::{Env, alive, signal, wait_until};

fn fake_env() -> Env {
    let env = Env::new()
        .with_var("BANGER_TEST_VMM", "fake")
        .with_var("BANGER_TEST_VMM_BOOT_MS", "0");
    env.fake_image();
    env
}

fn runtime_of(env: &Env, name: &str) -> std::path::PathBuf {
    let id = env.show(name)["id"].as_str().unwrap().to_string();
    env.runtime_dir().join("vms").join(id)
}

/// The VM's network record, which must exist while it runs.
fn record(env: &Env, name: &str) -> banger::net::NetworkRecord {
    banger::net::NetworkRecord::load(&runtime_of(env, name)).expect("a network record")
}

/// The nftables ruleset of the keeper's namespace (`nft` run inside it,
/// joined the way a VMM joins it).
fn ruleset(keeper: i32) -> String {
    let mut cmd = banger::tool::for_test(banger::tool::Tool::Nft);
    cmd.args(["list", "ruleset"]);
    banger::vmm::network::join(
        &mut cmd,
        banger::vmm::network::NetAttach { keeper_pid: keeper },
    )
    .unwrap();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn outbound_rules(keeper: i32) -> usize {
    ruleset(keeper).matches("masquerade").count()
}

fn gone(process: ProcessIdentity) -> bool {
    !process.is_alive()
}

fn assert_network_gone(net: &banger::net::NetworkRecord, runtime: &Path, when: &str) {
    wait_until(Duration::from_secs(10), when, || {
        gone(net.keeper) && gone(net.pasta)
    });
    assert!(
        !runtime.join(banger::net::CONTROL_SOCKET).exists(),
        "{when}: the control socket is left"
    );
}

#[test]
fn a_vms_network_follows_nat_and_ends_with_it_however_it_ends() {
    let env = fake_env();
    env.banger(&["vm", "create", "--name", "n1"]).ok();
    let shown = env.show("n1");
    assert_eq!(shown["network"]["mode"], "none");
    let net = record(&env, "n1");
    assert!(net.keeper.is_alive() && net.pasta.is_alive());
    assert_eq!(
        shown["network"]["guest_address"],
        format!("{}/{}", net.guest.address, net.guest.prefix)
    );
    // The VMM runs in the keeper's network namespace, with its tap.
    let vmm = shown["pid"].as_i64().unwrap() as i32;
    assert_eq!(
        std::fs::read_link(format!("/proc/{vmm}/ns/net")).unwrap(),
        std::fs::read_link(format!("/proc/{}/ns/net", net.keeper.pid)).unwrap()
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{vmm}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the VMM must not share the host's network"
    );
    let dev = std::fs::read_to_string(format!("/proc/{vmm}/net/dev")).unwrap();
    assert!(dev.contains("tap0:"), "{dev}");
    // Without --nat: no way out.
    assert_eq!(outbound_rules(net.keeper.pid), 0);

    // --nat on a running VM applies at once, and says so.
    let run = env.banger(&["vm", "set", "n1", "--nat"]);
    run.ok();
    assert!(run.stderr.contains("on, now"), "{}", run.stderr);
    assert_eq!(outbound_rules(net.keeper.pid), 1);
    assert_eq!(env.show("n1")["network"]["mode"], "nat");
    env.banger(&["vm", "set", "n1", "--no-nat"]).ok();
    assert_eq!(outbound_rules(net.keeper.pid), 0);
    env.banger(&["vm", "set", "n1", "--nat"]).ok();

    // Stop: the network ends; start: a new one with exactly one rule out.
    let runtime = runtime_of(&env, "n1");
    env.banger(&["vm", "stop", "n1"]).ok();
    assert_network_gone(&net, &runtime, "after stop");
    env.banger(&["vm", "start", "n1"]).ok();
    let second = record(&env, "n1");
    assert_ne!(second.keeper, net.keeper);
    assert_eq!(outbound_rules(second.keeper.pid), 1);

    // Kill: gone too.
    env.banger(&["vm", "kill", "n1"]).ok();
    assert_network_gone(&second, &runtime, "after kill");

    // A VMM that ends on its own (a guest power-off) takes its network
    // with it, with no daemon involved.
    env.banger(&["vm", "start", "n1"]).ok();
    let third = record(&env, "n1");
    let vmm = env.show("n1")["pid"].as_i64().unwrap() as i32;
    signal(vmm, Signal::SIGKILL);
    wait_until(Duration::from_secs(10), "the VMM to die", || !alive(vmm));
    wait_until(
        Duration::from_secs(10),
        "the network to end with its VMM",
        || gone(third.keeper) && gone(third.pasta),
    );

    // Delete: nothing left.
    env.banger(&["vm", "start", "n1"]).ok();
    let fourth = record(&env, "n1");
    env.banger(&["vm", "delete", "n1"]).ok();
    assert_network_gone(&fourth, &runtime, "after delete");
    env.assert_nothing_left();
}

#[test]
fn nat_set_on_a_stopped_vm_applies_at_its_next_start() {
    let env = fake_env();
    env.banger(&["vm", "create", "--name", "n2", "--no-start"])
        .ok();
    let run = env.banger(&["vm", "set", "n2", "--nat"]);
    run.ok();
    assert!(run.stderr.contains("from its next start"), "{}", run.stderr);
    env.banger(&["vm", "start", "n2"]).ok();
    assert_eq!(outbound_rules(record(&env, "n2").keeper.pid), 1);
    // --nat and --no-nat together are refused before anything is sent.
    env.banger(&["vm", "set", "n2", "--nat", "--no-nat"])
        .expect_code(2);
    env.banger(&["vm", "delete", "n2"]).ok();
    env.assert_nothing_left();
}
