//! The host side of the agent protocol: one [`AgentClient`] per guest
//! connection, many concurrent requests multiplexed over it.
//!
//! The client is transport-agnostic: give it any byte stream (a QEMU
//! virtio-serial chardev socket, Firecracker's hybrid vsock after its
//! handshake). It never decides what a guest should do; the daemon does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

use crate::protocol::{
    Body, DATA_CHUNK, EXEC_WINDOW, ExecSpec, ExitStatus, Fd, Frame, FrameDecoder, HelloInfo,
    PROTOCOL_VERSION, Request, Response,
};

/// A request to the guest failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The connection to the agent could not be made.
    #[error("cannot connect to the guest agent at {path}")]
    Connect {
        /// Socket path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The connection closed before the request completed.
    #[error("the connection to the guest agent closed")]
    Closed,
    /// The guest refused or failed the request.
    #[error("guest: {0}")]
    Guest(String),
    /// The guest answered something the protocol does not allow here.
    #[error("unexpected reply from the guest agent: {0}")]
    Unexpected(String),
    /// The guest speaks another protocol version.
    #[error(
        "guest agent speaks protocol {guest}, this host speaks {host}; stop and start the vm (every boot installs this host's agent)"
    )]
    Version {
        /// The guest's version.
        guest: u32,
        /// Ours.
        host: u32,
    },
    /// No answer in time.
    #[error("the guest agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The consumer fell too far behind the command's output.
    #[error("the command's output was not read fast enough ({} MiB queued); it was killed", MAX_QUEUED_BYTES >> 20)]
    Overflow,
}

/// Something the guest sent about one request.
#[derive(Debug)]
enum StreamEvent {
    Response(Response),
    Data(Fd, Vec<u8>),
    Eof(Fd),
    /// More output was queued than the consumer read: the request was
    /// ended (its process killed).
    Overflow,
    Closed,
}

/// Most guest output queued, unread, per request. A guest (or a command)
/// producing faster than the host consumes must not grow the daemon
/// without bound; past this the command is killed.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

struct Slot {
    tx: mpsc::UnboundedSender<StreamEvent>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// An exec's stdin window: bytes the host may still send; the guest's
    /// `Credit` replies add to it. Closed with the stream.
    stdin_window: Option<Arc<Semaphore>>,
}

/// The receiving end of one request's events, keeping the queue count.
struct StreamRx {
    rx: mpsc::UnboundedReceiver<StreamEvent>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl StreamRx {
    /// A request's `Data(Stdout)` frames until `Done`, refused past `max`
    /// bytes (the guest's output is untrusted).
    async fn output(&mut self, max: usize) -> Result<Vec<u8>, AgentError> {
        let mut data = Vec::new();
        loop {
            match self.recv().await {
                Some(StreamEvent::Data(Fd::Stdout, bytes)) => {
                    if data.len() + bytes.len() > max {
                        return Err(AgentError::Guest(format!(
                            "the guest's reply is over {max} bytes"
                        )));
                    }
                    data.extend(bytes);
                }
                Some(StreamEvent::Eof(Fd::Stdout)) => {}
                Some(StreamEvent::Response(Response::Done)) => return Ok(data),
                Some(StreamEvent::Response(Response::Error { message })) => {
                    return Err(AgentError::Guest(message));
                }
                Some(StreamEvent::Closed) | None => return Err(AgentError::Closed),
                Some(other) => return Err(AgentError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    async fn recv(&mut self) -> Option<StreamEvent> {
        let event = self.rx.recv().await;
        if let Some(StreamEvent::Data(_, bytes)) = &event {
            self.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
        }
        event
    }
}

struct Inner {
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes handed to the writer and not yet written.
    out_queued: Arc<std::sync::atomic::AtomicUsize>,
    streams: Mutex<HashMap<u32, Slot>>,
    next_stream: AtomicU32,
    closed: AtomicBool,
    /// This connection's id for the guest ([`Request::Hello`]), random;
    /// its stream ids start from it too.
    session: u64,
}

impl Inner {
    fn open_stream(&self, stdin_window: Option<Arc<Semaphore>>) -> (u32, StreamRx) {
        let id = self.next_stream.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        if let Ok(mut map) = self.streams.lock() {
            map.insert(
                id,
                Slot {
                    tx,
                    queued: queued.clone(),
                    stdin_window,
                },
            );
        }
        if self.closed.load(Ordering::Acquire) {
            self.close_stream(id);
        }
        (id, StreamRx { rx, queued })
    }

    fn close_stream(&self, id: u32) {
        if let Ok(mut map) = self.streams.lock()
            && let Some(slot) = map.remove(&id)
        {
            if let Some(w) = &slot.stdin_window {
                w.close();
            }
            let _ = slot.tx.send(StreamEvent::Closed);
        }
    }

    fn send(&self, frame: Frame) -> Result<(), AgentError> {
        let bytes = frame.encode();
        self.out_queued.fetch_add(bytes.len(), Ordering::AcqRel);
        self.out.send(bytes).map_err(|_| AgentError::Closed)
    }

    fn dispatch(&self, frame: Frame) {
        let event = match frame.body {
            Body::Response(r) => StreamEvent::Response(r),
            Body::Data(fd, bytes) => StreamEvent::Data(fd, bytes),
            Body::Eof(fd) => StreamEvent::Eof(fd),
            // A guest never sends requests; ignore rather than trust it.
            Body::Request(_) => return,
        };
        let Ok(mut map) = self.streams.lock() else {
            return;
        };
        // Frames for unknown streams are leftovers of an earlier host
        // session on the same port: drop them.
        let Some(slot) = map.get(&frame.stream) else {
            return;
        };
        // The guest's program took stdin: the writer may send more. Handled
        // here, not queued, so it arrives while the events go unread.
        if let StreamEvent::Response(Response::Credit { bytes }) = &event {
            if let Some(w) = &slot.stdin_window {
                let room = Semaphore::MAX_PERMITS.saturating_sub(w.available_permits());
                w.add_permits((*bytes as usize).min(room).min(EXEC_WINDOW as usize));
            }
            return;
        }
        if let StreamEvent::Data(_, bytes) = &event {
            let queued = slot.queued.fetch_add(bytes.len(), Ordering::AcqRel) + bytes.len();
            if queued > MAX_QUEUED_BYTES {
                // Stop it at the source and forget the stream: what was
                // queued is still delivered, then the overflow.
                let _ = self.send(Frame::request(
                    frame.stream,
                    Request::Signal {
                        signal: libc::SIGKILL,
                    },
                ));
                if let Some(slot) = map.remove(&frame.stream) {
                    let _ = slot.tx.send(StreamEvent::Overflow);
                }
                return;
            }
        }
        let _ = slot.tx.send(event);
    }

    fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut map) = self.streams.lock() {
            for (_, slot) in map.drain() {
                if let Some(w) = &slot.stdin_window {
                    w.close();
                }
                let _ = slot.tx.send(StreamEvent::Closed);
            }
        }
    }
}

/// A connection to one guest's agent.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

impl AgentClient {
    /// Connects to a unix socket that carries the agent's byte stream (QEMU
    /// exposes the guest's virtio-serial port this way).
    pub async fn connect_unix(path: &Path) -> Result<AgentClient, AgentError> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| AgentError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (rd, wr) = stream.into_split();
        Ok(AgentClient::new(rd, wr))
    }

    /// Connects through Firecracker's hybrid vsock: a unix socket on which
    /// `CONNECT <port>\n` is answered with `OK <host port>\n`, after which
    /// the stream is the guest connection.
    pub async fn connect_hybrid_vsock(path: &Path, port: u32) -> Result<AgentClient, AgentError> {
        let err = |source: std::io::Error| AgentError::Connect {
            path: path.display().to_string(),
            source,
        };
        let mut stream = tokio::net::UnixStream::connect(path).await.map_err(err)?;
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .await
            .map_err(err)?;
        // Byte by byte: nothing after the newline belongs to the handshake.
        let mut line = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if stream.read(&mut b).await.map_err(err)? == 0 {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("nothing listens on guest vsock port {port} yet"),
                )));
            }
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
            if line.len() > 64 {
                return Err(err(std::io::Error::other(
                    "over-long vsock handshake reply",
                )));
            }
        }
        if !line.starts_with(b"OK ") {
            return Err(err(std::io::Error::other(format!(
                "vsock handshake refused: {}",
                String::from_utf8_lossy(&line)
            ))));
        }
        let (rd, wr) = stream.into_split();
        Ok(AgentClient::new(rd, wr))
    }

    /// Wraps an established byte stream; spawns the reader and writer tasks.
    pub fn new<R, W>(mut reader: R, mut writer: W) -> AgentClient
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let out_queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = out_queued.clone();
        let session = session_id();
        let inner = Arc::new(Inner {
            out: out_tx,
            out_queued,
            streams: Mutex::new(HashMap::new()),
            // Odd, never 0; apart from any earlier connection's, whose
            // leftovers the guest may still send (see `session::run`).
            next_stream: AtomicU32::new((session as u32) | 1),
            closed: AtomicBool::new(false),
            session,
        });
        let writer_inner = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
                written.fetch_sub(bytes.len(), Ordering::AcqRel);
            }
            if let Some(inner) = writer_inner.upgrade() {
                inner.shut();
            }
        });
        let reader_inner = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut decoder = FrameDecoder::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let Some(inner) = reader_inner.upgrade() else {
                    return;
                };
                decoder.push(&buf[..n]);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => inner.dispatch(frame),
                        Ok(None) => break,
                        Err(e) => tracing_free_log(&e),
                    }
                }
            }
            if let Some(inner) = reader_inner.upgrade() {
                inner.shut();
            }
        });
        AgentClient { inner }
    }

    /// Bytes waiting to be written to the guest.
    pub fn unsent_bytes(&self) -> usize {
        self.inner.out_queued.load(Ordering::Acquire)
    }

    /// Whether the connection is known to be gone.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    async fn simple(&self, request: Request) -> Result<Response, AgentError> {
        let (id, mut rx) = self.inner.open_stream(None);
        let result = async {
            self.inner.send(Frame::request(id, request))?;
            match rx.recv().await {
                Some(StreamEvent::Response(Response::Error { message })) => {
                    Err(AgentError::Guest(message))
                }
                Some(StreamEvent::Response(r)) => Ok(r),
                Some(StreamEvent::Closed) | None => Err(AgentError::Closed),
                Some(other) => Err(AgentError::Unexpected(format!("{other:?}"))),
            }
        }
        .await;
        self.inner.close_stream(id);
        result
    }

    /// Version handshake. An answer means the guest is ready.
    pub async fn hello(&self) -> Result<HelloInfo, AgentError> {
        match self
            .simple(Request::Hello {
                protocol: PROTOCOL_VERSION,
                session: self.inner.session,
            })
            .await?
        {
            Response::Hello(info) if info.protocol == PROTOCOL_VERSION => Ok(info),
            Response::Hello(info) => Err(AgentError::Version {
                guest: info.protocol,
                host: PROTOCOL_VERSION,
            }),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Flushes the guest's file systems.
    pub async fn sync(&self) -> Result<(), AgentError> {
        expect_done(self.simple(Request::Sync).await?)
    }

    /// The guest's listening sockets (untrusted: the guest shapes them).
    pub async fn ports(&self) -> Result<Vec<crate::ports::ListeningSocket>, AgentError> {
        match self.simple(Request::Ports).await? {
            Response::Ports { mut sockets } => {
                sockets.truncate(crate::protocol::MAX_PORTS);
                Ok(sockets)
            }
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Makes a guest restored from a snapshot its own (host name, machine
    /// id, clock, random generator, MAC address).
    pub async fn identity(&self, spec: crate::protocol::IdentitySpec) -> Result<(), AgentError> {
        expect_done(self.simple(Request::Identity(spec)).await?)
    }

    /// Mounts a disk the guest did not mount at boot, and binds its
    /// directories ([`Request::MountDisk`]).
    pub async fn mount_disk(
        &self,
        serial: &str,
        target: &str,
        binds: Vec<(String, String)>,
    ) -> Result<(), AgentError> {
        expect_done(
            self.simple(Request::MountDisk {
                serial: serial.to_string(),
                target: target.to_string(),
                binds,
            })
            .await?,
        )
    }

    /// Sets the guest's wall clock.
    pub async fn set_clock(&self, unix_nanos: u64) -> Result<(), AgentError> {
        expect_done(self.simple(Request::SetClock { unix_nanos }).await?)
    }

    /// Flushes, then powers the guest off.
    pub async fn power_off(&self) -> Result<(), AgentError> {
        expect_done(self.simple(Request::PowerOff).await?)
    }

    /// Sends a request's whole input as `Data(Stdin)` frames and `Eof`.
    fn send_input(&self, id: u32, data: &[u8]) -> Result<(), AgentError> {
        for chunk in data.chunks(DATA_CHUNK) {
            self.inner.send(Frame {
                stream: id,
                body: Body::Data(Fd::Stdin, chunk.to_vec()),
            })?;
        }
        self.inner.send(Frame {
            stream: id,
            body: Body::Eof(Fd::Stdin),
        })
    }

    /// Writes a whole file in the guest (atomically, via rename).
    pub async fn write_file(&self, path: &str, mode: u32, data: &[u8]) -> Result<(), AgentError> {
        let (id, mut rx) = self.inner.open_stream(None);
        let result = async {
            self.inner.send(Frame::request(
                id,
                Request::WriteFile {
                    path: path.to_string(),
                    mode,
                },
            ))?;
            self.send_input(id, data)?;
            match rx.recv().await {
                Some(StreamEvent::Response(Response::Done)) => Ok(()),
                Some(StreamEvent::Response(Response::Error { message })) => {
                    Err(AgentError::Guest(message))
                }
                Some(StreamEvent::Closed) | None => Err(AgentError::Closed),
                Some(other) => Err(AgentError::Unexpected(format!("{other:?}"))),
            }
        }
        .await;
        self.inner.close_stream(id);
        result
    }

    /// Runs a live-sync operation in the agent (`banger_agent::sync`) with
    /// `input`; returns its output, refused past `max_out` bytes (the
    /// guest's output is untrusted).
    pub async fn workspace_sync(
        &self,
        op: &str,
        root: &str,
        input: &[u8],
        max_out: usize,
    ) -> Result<Vec<u8>, AgentError> {
        let (id, mut rx) = self.inner.open_stream(None);
        let result = async {
            self.inner.send(Frame::request(
                id,
                Request::WorkspaceSync {
                    operation: op.to_string(),
                    root: root.to_string(),
                },
            ))?;
            self.send_input(id, input)?;
            rx.output(max_out).await
        }
        .await;
        self.inner.close_stream(id);
        result
    }

    /// Reads a whole file from the guest.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, AgentError> {
        let (id, mut rx) = self.inner.open_stream(None);
        let result = async {
            self.inner.send(Frame::request(
                id,
                Request::ReadFile {
                    path: path.to_string(),
                },
            ))?;
            rx.output(usize::MAX).await
        }
        .await;
        self.inner.close_stream(id);
        result
    }

    /// Starts a program in the guest; returns once it is running.
    pub async fn exec(&self, spec: ExecSpec) -> Result<ExecSession, AgentError> {
        let wants_stdin = spec.stdin;
        let stdin_window = Arc::new(Semaphore::new(EXEC_WINDOW as usize));
        let (id, mut rx) = self.inner.open_stream(Some(stdin_window.clone()));
        if let Err(e) = self.inner.send(Frame::request(id, Request::Exec(spec))) {
            self.inner.close_stream(id);
            return Err(e);
        }
        let pid = match rx.recv().await {
            Some(StreamEvent::Response(Response::Started { pid })) => pid,
            Some(StreamEvent::Response(Response::Error { message })) => {
                self.inner.close_stream(id);
                return Err(AgentError::Guest(message));
            }
            Some(StreamEvent::Closed) | None => {
                self.inner.close_stream(id);
                return Err(AgentError::Closed);
            }
            Some(other) => {
                self.inner.close_stream(id);
                return Err(AgentError::Unexpected(format!("{other:?}")));
            }
        };
        Ok(ExecSession {
            inner: self.inner.clone(),
            stream: id,
            pid,
            events: rx,
            stdin_open: wants_stdin,
            stdin_window,
            uncredited: 0,
            open_outputs: 2,
            finished: false,
        })
    }
}

fn expect_done(r: Response) -> Result<(), AgentError> {
    match r {
        Response::Done => Ok(()),
        other => Err(AgentError::Unexpected(format!("{other:?}"))),
    }
}

/// A random connection id, never 0 (the kernel's generator; the time
/// and pid if it cannot be read, which only a broken host has).
fn session_id() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the pointer and length describe a live, writable array.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let id = if n == 8 {
        u64::from_ne_bytes(bytes)
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    };
    id.max(1)
}

fn tracing_free_log(e: &crate::protocol::ProtocolError) {
    // The library stays free of logging frameworks; a dropped frame is rare
    // enough that stderr is the right place.
    eprintln!("banger agent client: dropped a frame: {e}");
}

/// What a running guest program produced.
#[derive(Debug, PartialEq)]
pub enum ExecEvent {
    /// Bytes on its stdout.
    Stdout(Vec<u8>),
    /// Bytes on its stderr.
    Stderr(Vec<u8>),
    /// It ended; nothing follows.
    Exited(ExitStatus),
}

/// A program running in the guest.
pub struct ExecSession {
    inner: Arc<Inner>,
    stream: u32,
    pid: u32,
    events: StreamRx,
    stdin_open: bool,
    stdin_window: Arc<Semaphore>,
    /// Output bytes handed to the consumer and not yet credited back.
    uncredited: u64,
    open_outputs: u8,
    finished: bool,
}

impl ExecSession {
    /// The program's pid in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A handle that feeds stdin and sends signals, usable while another
    /// task reads events.
    pub fn control(&self) -> ExecControl {
        ExecControl {
            inner: self.inner.clone(),
            stream: self.stream,
            stdin_window: Some(self.stdin_window.clone()),
        }
    }

    /// Counts output handed to the consumer; grants the guest more once a
    /// quarter of the window was consumed (so it never waits on a full
    /// window while the consumer keeps up).
    fn consumed(&mut self, n: usize) {
        self.uncredited += n as u64;
        if self.uncredited >= EXEC_WINDOW / 4 {
            let bytes = std::mem::take(&mut self.uncredited);
            let _ = self
                .inner
                .send(Frame::request(self.stream, Request::Credit { bytes }));
        }
    }

    /// Sends bytes to the program's stdin.
    pub async fn write_stdin(&mut self, bytes: &[u8]) -> Result<(), AgentError> {
        if !self.stdin_open {
            return Ok(());
        }
        self.control().write_stdin(bytes).await
    }

    /// Ends the program's stdin.
    pub fn close_stdin(&mut self) -> Result<(), AgentError> {
        if !std::mem::replace(&mut self.stdin_open, false) {
            return Ok(());
        }
        self.control().close_stdin()
    }

    /// The next event; after `Exited` (or an error) there are no more.
    pub async fn next(&mut self) -> Result<ExecEvent, AgentError> {
        if self.finished {
            return Err(AgentError::Closed);
        }
        loop {
            let event = self.events.recv().await;
            match event {
                Some(StreamEvent::Data(Fd::Stdout, bytes)) => {
                    self.consumed(bytes.len());
                    return Ok(ExecEvent::Stdout(bytes));
                }
                Some(StreamEvent::Data(Fd::Stderr, bytes)) => {
                    self.consumed(bytes.len());
                    return Ok(ExecEvent::Stderr(bytes));
                }
                Some(StreamEvent::Eof(_)) => {
                    self.open_outputs = self.open_outputs.saturating_sub(1);
                }
                Some(StreamEvent::Overflow) => {
                    self.finish();
                    return Err(AgentError::Overflow);
                }
                Some(StreamEvent::Response(Response::Exited(status))) => {
                    self.finish();
                    return Ok(ExecEvent::Exited(status));
                }
                Some(StreamEvent::Response(Response::Error { message })) => {
                    self.finish();
                    return Err(AgentError::Guest(message));
                }
                Some(StreamEvent::Closed) | None => {
                    self.finish();
                    return Err(AgentError::Closed);
                }
                Some(other) => {
                    self.finish();
                    return Err(AgentError::Unexpected(format!("{other:?}")));
                }
            }
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.inner.close_stream(self.stream);
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        if !self.finished {
            // Nobody will read the rest: stop the program rather than let it
            // block on a full pipe forever.
            let _ = self.control().signal(libc::SIGKILL);
            self.inner.close_stream(self.stream);
        }
    }
}

/// Feeds stdin and delivers signals to a running guest program.
#[derive(Clone)]
pub struct ExecControl {
    inner: Arc<Inner>,
    stream: u32,
    /// The exec's stdin window (see [`EXEC_WINDOW`]).
    stdin_window: Option<Arc<Semaphore>>,
}

impl ExecControl {
    /// Sends bytes to the program's stdin, waiting while the guest program
    /// has not taken what was sent before (its stdin window is spent): a
    /// program that never reads its input holds the writer back instead of
    /// growing a queue on either side.
    pub async fn write_stdin(&self, bytes: &[u8]) -> Result<(), AgentError> {
        for chunk in bytes.chunks(DATA_CHUNK) {
            if let Some(window) = &self.stdin_window {
                match window.acquire_many(chunk.len() as u32).await {
                    Ok(permits) => permits.forget(),
                    // The exec ended: nobody will read it.
                    Err(_) => return Err(AgentError::Closed),
                }
            }
            self.inner.send(Frame {
                stream: self.stream,
                body: Body::Data(Fd::Stdin, chunk.to_vec()),
            })?;
        }
        Ok(())
    }

    /// Ends the program's stdin.
    pub fn close_stdin(&self) -> Result<(), AgentError> {
        self.inner.send(Frame {
            stream: self.stream,
            body: Body::Eof(Fd::Stdin),
        })
    }

    /// [`ExecControl::write_stdin`] from a blocking thread (one that runs
    /// inside a Tokio runtime's blocking pool, as `spawn_blocking` gives).
    pub fn write_stdin_blocking(&self, bytes: &[u8]) -> Result<(), AgentError> {
        tokio::runtime::Handle::current().block_on(self.write_stdin(bytes))
    }

    /// Resizes the program's terminal (tty execs).
    pub fn resize(&self, size: crate::protocol::TtySize) -> Result<(), AgentError> {
        self.inner
            .send(Frame::request(self.stream, Request::Resize(size)))
    }

    /// Signals the program's process group.
    pub fn signal(&self, signal: i32) -> Result<(), AgentError> {
        self.inner
            .send(Frame::request(self.stream, Request::Signal { signal }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every boot installs the host's agent, so an agent of another
    /// protocol means a VM booted by another banger: restart it.
    #[test]
    fn another_protocol_says_to_stop_and_start_the_vm() {
        let e = AgentError::Version { guest: 3, host: 4 }.to_string();
        assert!(e.contains("stop and start the vm"), "{e}");
        assert!(!e.contains("image build"), "{e}");
    }
}
