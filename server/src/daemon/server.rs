//! The daemon's transport: newline-delimited JSON-RPC 2.0 on a unix socket
//! (mode 0600) under the user's runtime directory, one daemon per user
//! (an exclusive lock on `bangerd.lock`).
//!
//! Each request runs in its own task; a panic in one becomes an error reply
//! for that request and nothing else.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use jsonrpsee::RpcModule;
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::Daemon;
use super::rpc::Rpc;
use crate::api::BangerApiServer;
use crate::paths::Dirs;

/// Largest request line accepted.
const MAX_REQUEST: usize = 16 << 20;

/// Serving failed to start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another daemon holds the lock.
    #[error("bangerd is already running for this user (lock {0} is held)")]
    AlreadyRunning(String),
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Holds the single-daemon lock for as long as it lives.
pub struct DaemonLock {
    _file: std::fs::File,
}

impl DaemonLock {
    /// Takes the lock (beside the database) or says another daemon has it.
    pub fn acquire(dirs: &Dirs) -> Result<DaemonLock, ServeError> {
        for dir in [&dirs.runtime, &dirs.state] {
            Dirs::ensure_private(dir).map_err(|source| ServeError::Io {
                what: "cannot create",
                path: dir.display().to_string(),
                source,
            })?;
        }
        let path = dirs.lock_file();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| ServeError::Io {
                what: "cannot open",
                path: path.display().to_string(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DaemonLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(ServeError::AlreadyRunning(path.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(source)) => Err(ServeError::Io {
                what: "cannot lock",
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

/// Serves until `daemon_stop` or SIGTERM/SIGINT. Running VMs are left
/// running.
pub async fn serve(daemon: Arc<Daemon>, _lock: &DaemonLock) -> Result<(), ServeError> {
    // VMs whose lease a previous daemon held: their clients are gone (no
    // lease outlives its daemon). Read before any client can make new ones.
    let leftover = daemon.leased(None);
    if !leftover.is_empty() {
        let daemon = daemon.clone();
        tokio::spawn(async move { daemon.remove_leased(leftover).await });
    }
    // Running VMs' ports, forwarded again (the listeners were the previous
    // daemon's).
    daemon.resume_forwarding();
    let socket = daemon.dirs.socket();
    // The lock is ours, so a socket file left here is stale.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|source| ServeError::Io {
        what: "cannot listen on",
        path: socket.display().to_string(),
        source,
    })?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(
        |source| ServeError::Io {
            what: "cannot restrict",
            path: socket.display().to_string(),
            source,
        },
    )?;
    let module = Arc::new(Rpc(daemon.clone()).into_rpc());
    tracing::info!(socket = %socket.display(), accel = %daemon.accel.accel.as_str(), "bangerd serving");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServeError::Io {
            what: "cannot handle SIGTERM for",
            path: socket.display().to_string(),
            source,
        })?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(module.clone(), daemon.clone(), stream));
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            },
            _ = daemon.shutdown.notified() => break,
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // No new requests from here on; let operations in flight record what
    // they started before the process goes.
    let _ = std::fs::remove_file(&socket);
    daemon.quiesce(std::time::Duration::from_secs(120)).await;
    tracing::info!("bangerd stopped; running vms keep running");
    Ok(())
}

/// Counts a request as in flight for as long as it lives.
struct InFlight(Arc<Daemon>);

impl InFlight {
    fn new(daemon: Arc<Daemon>) -> InFlight {
        daemon.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(daemon)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(module: Arc<RpcModule<Rpc>>, daemon: Arc<Daemon>, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    // Bounded: a client that stops reading pushes back on its
    // subscriptions (and, through them, on the guest command) instead of
    // growing the daemon.
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let writer = tokio::spawn(async move {
        while let Some(mut line) = out_rx.recv().await {
            line.push('\n');
            if wr.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    // Flips when the client goes away, so in-flight subscriptions drop their
    // receivers and their sinks see `closed()`.
    let (gone_tx, gone_rx) = tokio::sync::watch::channel(false);
    let mut lines = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        // At most one byte past the limit is read before a request is
        // refused: nothing a client sends is buffered beyond it.
        let mut bounded = (&mut lines).take(MAX_REQUEST as u64 + 1);
        match bounded.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) if line.len() > MAX_REQUEST => {
                let _ = out_tx
                    .send(error_reply(
                        None,
                        -32600,
                        &format!("request over {MAX_REQUEST} bytes; the connection is closed"),
                    ))
                    .await;
                // The rest of that line cannot be told from a next request.
                break;
            }
            Ok(_) => {
                let Ok(text) = std::str::from_utf8(&line) else {
                    let _ = out_tx
                        .send(error_reply(None, -32700, "request is not UTF-8"))
                        .await;
                    continue;
                };
                let request = text.trim();
                if request.is_empty() {
                    continue;
                }
                let guard = InFlight::new(daemon.clone());
                let (module, request, out, gone) = (
                    module.clone(),
                    request.to_string(),
                    out_tx.clone(),
                    gone_rx.clone(),
                );
                tokio::spawn(handle(module, request, out, gone, guard));
            }
        }
    }
    // Dropping the senders ends subscriptions of this connection: their
    // sinks see the client gone. Detached operations carry on.
    let _ = gone_tx.send(true);
    drop(out_tx);
    let _ = writer.await;
}

async fn handle(
    module: Arc<RpcModule<Rpc>>,
    request: String,
    out: mpsc::Sender<String>,
    mut gone: tokio::sync::watch::Receiver<bool>,
    in_flight: InFlight,
) {
    let id = serde_json::from_str::<serde_json::Value>(&request)
        .ok()
        .and_then(|v| v.get("id").cloned());
    let call = {
        let module = module.clone();
        let request = request.clone();
        tokio::spawn(async move { module.raw_json_request(&request, 64).await })
    };
    match call.await {
        Ok(Ok((response, mut notifications))) => {
            // A plain call is over once answered; only a subscription goes
            // on. Not counted after that: its client may act on the answer
            // at once (`daemon stop` counts what else is in flight).
            let _in_flight = if notifications.is_closed() && notifications.is_empty() {
                drop(in_flight);
                None
            } else {
                Some(in_flight)
            };
            if out.send(response.get().to_string()).await.is_err() {
                return;
            }
            loop {
                let note: Box<RawValue> = tokio::select! {
                    note = notifications.recv() => match note {
                        Some(note) => note,
                        None => return,
                    },
                    _ = gone.wait_for(|gone| *gone) => return,
                };
                let sent = tokio::select! {
                    sent = out.send(note.get().to_string()) => sent,
                    _ = gone.wait_for(|gone| *gone) => return,
                };
                if sent.is_err() {
                    return;
                }
            }
        }
        Ok(Err(_)) => {
            drop(in_flight);
            let _ = out.send(error_reply(id, -32700, "parse error")).await;
        }
        Err(join) => {
            drop(in_flight);
            tracing::error!("request handler panicked: {join}; request: {request}");
            let _ = out
                .send(error_reply(
                    id,
                    crate::api::code::INTERNAL,
                    "internal error (the daemon logged it)",
                ))
                .await;
        }
    }
}

fn error_reply(id: Option<serde_json::Value>, code: i32, message: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(serde_json::Value::Null),
        "error": {"code": code, "message": message},
    })
    .to_string()
}
