//! `banger-agent`: runs inside the guest and serves the agent protocol.
//!
//! It starts early in boot (a `DefaultDependencies=no` systemd unit) and
//! serves on the virtio-serial port named [`SERIAL_PORT_NAME`] when the VMM
//! offers one, and on vsock port [`VSOCK_PORT`] when the guest has vsock.
//! It must never exit on its own: the host decides when a guest is ready by
//! whether this process answers.

mod transport;

use banger_agent::protocol::{SERIAL_PORT_NAME, VSOCK_PORT};

fn main() {
    // `banger-agent sync ...` is the workspace-sync helper the host runs
    // through an ordinary exec; everything else is the agent itself.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sync") {
        std::process::exit(banger_agent::sync::main(&args[1..]));
    }
    // `banger-agent serve-unix SOCKET [READY_AFTER_MS]`: the daemon's
    // host-process VMM test double (debug builds only, never in a guest).
    #[cfg(debug_assertions)]
    if args.first().map(String::as_str) == Some("serve-unix") {
        std::process::exit(serve_unix(&args[1..]));
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
    runtime.block_on(transport::serve(SERIAL_PORT_NAME, VSOCK_PORT));
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
