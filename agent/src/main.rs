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
