//! The daemon's client, beside the API it speaks (`api.rs`): the
//! newline-delimited JSON-RPC transport for jsonrpsee's client, and
//! starting `bangerd` on demand. The CLI and `banger lsp` both reach the
//! daemon through here; neither imports the other.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jsonrpsee::async_client::{Client, ClientBuilder};
use jsonrpsee::core::client::{ReceivedMessage, TransportReceiverT, TransportSenderT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::paths::Dirs;

/// The daemon could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Starting bangerd failed.
    #[error("cannot start bangerd ({binary}): {source}")]
    Spawn {
        /// Binary path.
        binary: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A daemon of another version stayed busy.
    #[error(
        "bangerd of another version is still serving other clients (requests in flight: {0}); run this again when they end, or replace it now with: banger daemon stop --force (their commands are killed)"
    )]
    Busy(usize),
    /// bangerd started but never listened.
    #[error("bangerd did not come up within {0:?}; see its log: {1}")]
    NoSocket(Duration, String),
    /// The socket refused us.
    #[error("cannot connect to bangerd at {path}")]
    Socket {
        /// Socket path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Transport error.
#[derive(Debug, thiserror::Error)]
#[error("daemon connection: {0}")]
pub struct TransportError(#[from] std::io::Error);

struct Sender(OwnedWriteHalf);
struct Receiver(BufReader<OwnedReadHalf>);

impl TransportSenderT for Sender {
    type Error = TransportError;

    async fn send(&mut self, mut msg: String) -> Result<(), TransportError> {
        msg.push('\n');
        self.0.write_all(msg.as_bytes()).await?;
        Ok(())
    }
}

impl TransportReceiverT for Receiver {
    type Error = TransportError;

    async fn receive(&mut self) -> Result<ReceivedMessage, TransportError> {
        let mut line = String::new();
        if self.0.read_line(&mut line).await? == 0 {
            return Err(TransportError(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(ReceivedMessage::Text(line))
    }
}

fn client_over(stream: UnixStream) -> Client {
    let (rd, wr) = stream.into_split();
    ClientBuilder::default()
        // Long operations stream through subscriptions; plain calls (stop,
        // delete) can still take a while on a slow guest.
        .request_timeout(Duration::from_secs(3600))
        .max_buffer_capacity_per_subscription(4096)
        .build_with_tokio(Sender(wr), Receiver(BufReader::new(rd)))
}

/// Connects to a running daemon, if any.
pub async fn connect_existing(dirs: &Dirs) -> Result<Option<Client>, ConnectError> {
    let path = dirs.socket();
    match UnixStream::connect(&path).await {
        Ok(stream) => Ok(Some(client_over(stream))),
        // No daemon, or one whose listener was closing as we connected (a
        // daemon just killed: the kernel resets the half-made connection):
        // both mean "start or find one", which the caller does.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(ConnectError::Socket {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// What to do with a daemon that answers (pure).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// It speaks this API: use it, whatever its build.
    Use,
    /// Another API, and idle: replace it (VMs outlive daemon restarts).
    Replace,
    /// Another API, serving others: wait for them rather than kill their
    /// commands.
    Wait {
        /// Requests it serves.
        busy: usize,
    },
}

/// Decides from `daemon_info` (`None`: too old to describe itself, so
/// nothing is known of what it serves).
pub(crate) fn existing(info: Option<&crate::api::DaemonInfo>) -> Existing {
    match info {
        Some(i) if i.api_version == crate::api::api_version() => Existing::Use,
        Some(i) if i.busy > 0 => Existing::Wait { busy: i.busy },
        _ => Existing::Replace,
    }
}

/// How long a client waits for a busy daemon of another API version.
fn busy_wait() -> Duration {
    std::env::var("BANGER_DAEMON_WAIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300))
}

/// What a failed daemon call says to a front end (the LSP and MCP
/// servers): the daemon's own message for an error reply, else what went
/// wrong with the connection.
pub fn daemon_error(e: jsonrpsee::core::client::Error) -> String {
    match e {
        jsonrpsee::core::client::Error::Call(obj) => obj.message().to_string(),
        other => format!("bangerd: {other}"),
    }
}

/// Connects, starting bangerd first when it is not running. A daemon of
/// another API version is replaced only while it serves nobody else
/// (otherwise this waits, and says so): a restart would end the commands
/// other clients run.
pub async fn connect_or_start(dirs: &Dirs) -> Result<Client, ConnectError> {
    use crate::api::BangerApiClient;
    let waited = Instant::now();
    let mut said = false;
    while let Some(c) = connect_existing(dirs).await? {
        let info = c.daemon_info().await.ok();
        match existing(info.as_ref()) {
            Existing::Use => return Ok(c),
            Existing::Replace => {
                tracing::info!(
                    "replacing bangerd (api {:?})",
                    info.as_ref().map(|i| i.api_version)
                );
                match c.daemon_stop(None).await {
                    Ok(()) => {
                        wait_gone(dirs, info.as_ref().map(|i| i.pid)).await;
                        break;
                    }
                    // It got busy meanwhile: wait again (bounded).
                    Err(_) if info.is_some() => {
                        if waited.elapsed() > busy_wait() {
                            return Err(ConnectError::Busy(1));
                        }
                    }
                    Err(_) => {
                        wait_gone(dirs, None).await;
                        break;
                    }
                }
            }
            Existing::Wait { busy } => {
                if waited.elapsed() > busy_wait() {
                    return Err(ConnectError::Busy(busy));
                }
                if !said {
                    said = true;
                    // stderr: for the LSP server, stdout is the protocol.
                    eprintln!(
                        "banger: waiting for bangerd of another version to finish {busy} request{} before replacing it with this build's",
                        if busy == 1 { "" } else { "s" }
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    spawn_daemon(dirs)?;
    let timeout = Duration::from_secs(15);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(c) = connect_existing(dirs).await? {
            return Ok(c);
        }
        if Instant::now() > deadline {
            return Err(ConnectError::NoSocket(
                timeout,
                dirs.daemon_log().display().to_string(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (bounded) for a stopping daemon to release its socket.
async fn wait_gone(dirs: &Dirs, pid: Option<u32>) {
    for _ in 0..400 {
        let proc_gone = pid.is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists());
        if proc_gone && !dirs.socket().exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BANGER_DAEMON") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .map(|p| p.with_file_name("bangerd"))
        .unwrap_or_else(|_| PathBuf::from("bangerd"))
}

/// Starts bangerd in its own session with output to its log, so it
/// survives this terminal and this process.
fn spawn_daemon(dirs: &Dirs) -> Result<(), ConnectError> {
    let binary = daemon_binary();
    let err = |source| ConnectError::Spawn {
        binary: binary.display().to_string(),
        source,
    };
    Dirs::ensure_private(&dirs.state).map_err(err)?;
    let log = open_log(&dirs.daemon_log()).map_err(err)?;
    let log2 = log.try_clone().map_err(err)?;
    #[allow(clippy::disallowed_methods)] // the one place bangerd is started
    let mut cmd = std::process::Command::new(&binary);
    cmd.stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the
    // parent; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(err)?;
    // bangerd lives on after we exit; reap it if it dies early so this
    // process holds no zombie while it waits for the socket.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{API_VERSION, DaemonInfo};

    fn info(api_version: u32, busy: usize) -> DaemonInfo {
        DaemonInfo {
            version: "0.1.0".into(),
            pid: 1,
            socket: "/s".into(),
            schema_version: 7,
            accel: String::new(),
            vmm: String::new(),
            build_id: "another build".into(),
            api_version,
            busy,
        }
    }

    #[test]
    fn a_daemon_is_replaced_only_for_another_api_and_only_when_idle() {
        // Another build of the same API: used as it is, even when busy.
        assert_eq!(existing(Some(&info(API_VERSION, 3))), Existing::Use);
        assert_eq!(existing(Some(&info(API_VERSION + 1, 0))), Existing::Replace);
        assert_eq!(
            existing(Some(&info(API_VERSION + 1, 2))),
            Existing::Wait { busy: 2 }
        );
        assert_eq!(existing(None), Existing::Replace);
    }
}
