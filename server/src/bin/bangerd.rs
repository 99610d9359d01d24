//! `bangerd`: the per-user daemon. Usually started on demand by `banger`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // `bangerd net-keeper DIR`: one VM's network, inside its namespace
    // (started by pasta for the daemon; see banger::net).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("net-keeper") {
        return ExitCode::from(banger::net::keeper::main(&args[1..]).clamp(0, 255) as u8);
    }
    // `bangerd oci-unpack TREE LAYER...`: an OCI image's layers applied to
    // its tree, run by the daemon as the tree's root (see banger::image::oci).
    if args.first().map(String::as_str) == Some("oci-unpack") {
        return ExitCode::from(banger::image::oci::unpack::main(&args[1..]).clamp(0, 255) as u8);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    // The daemon outlives the directory it was started from; a deleted
    // working directory made later path lookups (gix::discover) fail.
    if let Err(e) = std::env::set_current_dir("/") {
        tracing::warn!("cannot change to /: {e}");
    }
    let dirs = banger::paths::Dirs::from_env();
    let lock = match banger::daemon::server::DaemonLock::acquire(&dirs) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let daemon = banger::daemon::Daemon::open(dirs).map_err(|e| e.to_string())?;
        banger::daemon::server::serve(daemon, &lock)
            .await
            .map_err(|e| e.to_string())
    });
    // Detached operations still running are abandoned here by design: VMMs
    // are not our children and keep running.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
