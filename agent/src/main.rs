//! `banger-agent`: runs inside the guest and serves the agent protocol.
//!
//! The same binary is the initramfs's `/init` (`init.rs`).
//!
//! It starts early in boot (a `DefaultDependencies=no` systemd unit) and
//! serves on the virtio-serial port named [`SERIAL_PORT_NAME`] when the VMM
//! offers one, and on vsock port [`VSOCK_PORT`] when the guest has vsock.
//! It must never exit on its own: the host decides when a guest is ready by
//! whether this process answers.

mod transport;

use banger_agent::protocol::{SERIAL_PORT_NAME, VSOCK_PORT};

fn main() {
    // Run as the initramfs's `/init` (PID 1): assemble the root and hand
    // over to the image's init.
    if std::env::args()
        .next()
        .is_some_and(|a| banger_agent::init::is_init(&a))
    {
        banger_agent::init::main();
    }
    // `banger-agent sync ...` (live sync) and `banger-agent workspace
    // unpack ...` (a workspace's first transfer) are helpers the host runs
    // through an ordinary exec; everything else is the agent itself.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sync") {
        std::process::exit(banger_agent::sync::main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("workspace") {
        std::process::exit(banger_agent::unpack::main(&args[1..]));
    }
    // `banger-agent serve-unix SOCKET [READY_AFTER_MS]`: the daemon's
    // host-process VMM test double (debug builds only, never in a guest).
    #[cfg(debug_assertions)]
    if args.first().map(String::as_str) == Some("serve-unix") {
        std::process::exit(serve_unix(&args[1..]));
    }
    // The agent itself takes no arguments: a command this build does not
    // know must not start a second agent (it would wait forever on the
    // channel the running one holds).
    if let Some(other) = args.first() {
        eprintln!("banger-agent: unknown command {other:?} (known: sync, workspace)");
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("banger-agent: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        // Before serving: the host calls the guest ready once the agent
        // answers, and a command run then may need the network.
        guest_network().await;
        trust_host_cas();
        transport::serve(SERIAL_PORT_NAME, VSOCK_PORT).await
    });
}

/// Adds the host's certificate authorities (installed by `/init` as
/// `banger-host.crt`, possibly empty) to the guest's CA bundle; the image's
/// own bundle is kept beside it, so every boot starts from it.
fn trust_host_cas() {
    let host = std::path::Path::new("/usr/local/share/ca-certificates/banger-host.crt");
    let bundle = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    let original = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt.banger-image");
    let Ok(extra) = std::fs::read(host) else {
        return;
    };
    if !original.exists() {
        if extra.is_empty() {
            return;
        }
        if let Err(e) = std::fs::copy(bundle, original) {
            eprintln!("banger-agent: cannot keep the image's CA bundle: {e}");
            return;
        }
    }
    let result = std::fs::read(original).and_then(|mut all| {
        all.extend_from_slice(&extra);
        let tmp = bundle.with_extension("crt.banger-tmp");
        std::fs::write(&tmp, &all)?;
        std::fs::rename(&tmp, bundle)
    });
    if let Err(e) = result {
        eprintln!("banger-agent: cannot add the host's certificate authorities: {e}");
    }
}

/// Configures the network the host described on the kernel command line
/// (`banger.net=`): the first ethernet link gets the address and the
/// default route, and the gateway becomes the name server. Failures are
/// reported on the console and never stop the agent.
async fn guest_network() {
    use banger_agent::netconf::{GuestNet, Netlink};
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let net = match GuestNet::from_cmdline(&cmdline) {
        None => return,
        Some(Err(e)) => {
            eprintln!("banger-agent: no network: {e}");
            return;
        }
        Some(Ok(net)) => net,
    };
    let result = async {
        let netlink = Netlink::open()?;
        // The driver is loaded by the initramfs; give its link a moment.
        let mut ifname = None;
        for _ in 0..60 {
            ifname = netlink.first_ethernet().await?;
            if ifname.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let Some(ifname) = ifname else {
            return Err(banger_agent::netconf::NetconfError::NoLink(
                "ethernet".into(),
            ));
        };
        netlink.configure_guest(&ifname, &net).await?;
        Ok(ifname)
    }
    .await;
    match result {
        Ok(ifname) => {
            let resolv = format!("# written by banger-agent\nnameserver {}\n", net.gateway);
            if let Err(e) = std::fs::write("/etc/resolv.conf", resolv) {
                eprintln!("banger-agent: cannot write /etc/resolv.conf: {e}");
            }
            eprintln!("banger-agent: {ifname} is {}/{}", net.address, net.prefix);
        }
        Err(e) => eprintln!("banger-agent: no network: {e}"),
    }
}

#[cfg(debug_assertions)]
fn serve_unix(args: &[String]) -> i32 {
    let Some(path) = args.first() else {
        eprintln!("usage: banger-agent serve-unix SOCKET [READY_AFTER_MS]");
        return 2;
    };
    let ready_after = match args.get(1).map(|ms| ms.parse::<u64>()) {
        None => std::time::Duration::ZERO,
        Some(Ok(ms)) => std::time::Duration::from_millis(ms),
        Some(Err(e)) => {
            eprintln!("banger-agent: bad READY_AFTER_MS {:?}: {e}", args[1]);
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("banger-agent: cannot start runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(transport::serve_unix(
        std::path::Path::new(path),
        ready_after,
    )) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("banger-agent: cannot serve on {path}: {e}");
            1
        }
    }
}
