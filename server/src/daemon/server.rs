//! The daemon's transport: newline-delimited JSON-RPC 2.0 on a unix socket
//! (mode 0600) under the user's runtime directory, one daemon per user
//! (an exclusive lock on `bangerd.lock`).
//!
//! Each request runs in its own task; a panic in one becomes an error reply
//! for that request and nothing else.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use jsonrpsee::RpcModule;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
    /// Takes the lock or says another daemon has it.
    pub fn acquire(dirs: &Dirs) -> Result<DaemonLock, ServeError> {
        Dirs::ensure_private(&dirs.runtime).map_err(|source| ServeError::Io {
            what: "cannot create",
            path: dirs.runtime.display().to_string(),
            source,
        })?;
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
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(ServeError::AlreadyRunning(path.display().to_string()));
        }
        Ok(DaemonLock { _file: file })
    }
}

/// Serves until `daemon_stop` or SIGTERM/SIGINT. Running VMs are left
/// running.
pub async fn serve(daemon: Arc<Daemon>, _lock: &DaemonLock) -> Result<(), ServeError> {
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
                    tokio::spawn(connection(module.clone(), stream));
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

async fn connection(module: Arc<RpcModule<Rpc>>, stream: UnixStream) {
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
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) if line.len() > MAX_REQUEST => {
                let _ = out_tx
                    .send(error_reply(None, -32600, "request too large"))
                    .await;
            }
            Ok(_) if line.trim().is_empty() => {}
            Ok(_) => {
                let request = line.trim().to_string();
                tokio::spawn(handle(
                    module.clone(),
                    request,
                    out_tx.clone(),
                    gone_rx.clone(),
                ));
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
            let _ = out.send(error_reply(id, -32700, "parse error")).await;
        }
        Err(join) => {
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
