//! The guest side of one host session: decodes frames, runs the requested
//! operations (as root, in the guest) and sends their replies.
//! Knows nothing about the transport underneath.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use crate::protocol::{
    Body, DATA_CHUNK, EXEC_WINDOW, ExecSpec, ExitStatus, Fd, Frame, FrameDecoder, HelloInfo,
    PROTOCOL_VERSION, Request, Response, TtySize,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

/// What a transport hands to the session.
#[derive(Debug)]
pub enum Input {
    /// Bytes from the host.
    Bytes(Vec<u8>),
    /// The host went away; a new one may connect later.
    Disconnected,
}

/// Where bytes of an in-flight request's host-to-guest stream go.
struct Inflight {
    /// Stdin (or file contents) chunks; `None` ends the stream.
    sink: Option<mpsc::UnboundedSender<Option<Vec<u8>>>>,
    /// Process group of an exec.
    pgid: Option<i32>,
    /// The pseudo-terminal of a tty exec, for resizes.
    pty: Option<Arc<OwnedFd>>,
    /// Output bytes an exec may still send (permits); the host's `Credit`
    /// adds to it. Closed when the exec is abandoned, so a waiting pump
    /// stops.
    window: Option<Arc<Semaphore>>,
}

/// An exec's output window, as [`EXEC_WINDOW`] permits.
fn output_window() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(EXEC_WINDOW as usize))
}

/// Waits until `n` more bytes may go to the host; false when the exec was
/// abandoned (the window closed).
async fn take_window(window: &Semaphore, n: usize) -> bool {
    match window.acquire_many(n as u32).await {
        Ok(permits) => {
            permits.forget();
            true
        }
        Err(_) => false,
    }
}

type Streams = Arc<Mutex<HashMap<u32, Inflight>>>;

/// Set when the agent serves a test double of a VM on the host (`banger-agent
/// serve-unix`): powering off then ends this process, as a guest's power-off
/// ends its VMM, instead of powering off the machine.
static POWER_OFF_EXITS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`Request::PowerOff`] end this process instead of the machine
/// (the host-process test double; never in a guest).
pub fn power_off_ends_this_process() {
    POWER_OFF_EXITS.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[derive(Clone)]
struct Out(mpsc::Sender<Vec<u8>>);

impl Out {
    async fn send(&self, frame: Frame) {
        // The writer only stops when the transport is gone for good.
        let _ = self.0.send(frame.encode()).await;
    }

    async fn reply(&self, stream: u32, response: Response) {
        self.send(Frame::response(stream, response)).await;
    }

    async fn error(&self, stream: u32, message: String) {
        self.reply(stream, Response::Error { message }).await;
    }
}

/// Runs the session until its transport closes for good.
///
/// A transport that outlives host connections (the virtio-serial port)
/// says when one goes, but not always: a guest restored from a snapshot
/// wakes up with the requests of the host that was attached when it was
/// saved still in flight, and never hears that host go. So a `Hello` from
/// a host connection other than the last one ends what earlier ones
/// started, as a disconnect does: their programs are killed, and what they
/// still print goes out under stream ids the new host never opened (each
/// connection numbers its streams from its own random start).
pub async fn run(mut input: mpsc::Receiver<Input>, out: mpsc::Sender<Vec<u8>>) {
    let out = Out(out);
    let streams: Streams = Arc::default();
    let mut decoder = FrameDecoder::new();
    let mut host = 0u64;
    while let Some(item) = input.recv().await {
        match item {
            Input::Bytes(bytes) => decoder.push(&bytes),
            Input::Disconnected => {
                decoder.reset();
                end_all(&streams);
                continue;
            }
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Body::Request(Request::Hello { session, .. }) = &frame.body
                        && *session != 0
                        && *session != host
                    {
                        end_all(&streams);
                        host = *session;
                    }
                    handle(frame, &streams, &out).await;
                }
                Ok(None) => break,
                Err(e) => eprintln!("banger-agent: dropped a frame: {e}"),
            }
        }
    }
    end_all(&streams);
}

/// The host that started these requests is gone: nobody will read their
/// output or feed their input, so end them as a closed terminal would.
fn end_all(streams: &Streams) {
    let drained: Vec<Inflight> = match streams.lock() {
        Ok(mut map) => map.drain().map(|(_, v)| v).collect(),
        Err(_) => return,
    };
    for inflight in drained {
        if let Some(window) = &inflight.window {
            window.close();
        }
        if let Some(pgid) = inflight.pgid {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
    // addresses the process group the exec created with process_group(0).
    unsafe {
        libc::kill(-pgid, signal);
    }
}

async fn handle(frame: Frame, streams: &Streams, out: &Out) {
    let stream = frame.stream;
    match frame.body {
        Body::Request(request) => handle_request(stream, request, streams, out).await,
        Body::Data(Fd::Stdin, bytes) => feed(streams, stream, Some(bytes)),
        Body::Eof(Fd::Stdin) => feed(streams, stream, None),
        Body::Data(..) | Body::Eof(_) | Body::Response(_) => {
            eprintln!("banger-agent: ignored an unexpected frame on stream {stream}");
        }
    }
}

fn feed(streams: &Streams, stream: u32, chunk: Option<Vec<u8>>) {
    if let Ok(mut map) = streams.lock()
        && let Some(inflight) = map.get_mut(&stream)
    {
        let end = chunk.is_none();
        if let Some(sink) = &inflight.sink {
            let _ = sink.send(chunk);
        }
        if end {
            inflight.sink = None;
        }
    }
}

async fn handle_request(stream: u32, request: Request, streams: &Streams, out: &Out) {
    match request {
        Request::Hello { .. } => out.reply(stream, Response::Hello(hello_info())).await,
        Request::Exec(spec) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let sink = spec.stdin.then_some(tx);
            let window = output_window();
            register(streams, stream, sink, Some(window.clone()));
            if spec.tty.is_some() {
                tokio::spawn(run_exec_tty(
                    stream,
                    spec,
                    rx,
                    window,
                    streams.clone(),
                    out.clone(),
                ));
            } else {
                tokio::spawn(run_exec(
                    stream,
                    spec,
                    rx,
                    window,
                    streams.clone(),
                    out.clone(),
                ));
            }
        }
        Request::Credit { bytes } => {
            let window = streams
                .lock()
                .ok()
                .and_then(|map| map.get(&stream).and_then(|i| i.window.clone()));
            if let Some(window) = window {
                // Never past a full window: the host credits what it read.
                let room = (EXEC_WINDOW as usize).saturating_sub(window.available_permits());
                window.add_permits((bytes as usize).min(room));
            }
        }
        Request::Resize(size) => {
            let pty = streams
                .lock()
                .ok()
                .and_then(|map| map.get(&stream).and_then(|i| i.pty.clone()));
            if let Some(pty) = pty {
                set_window_size(&pty, size);
            }
        }
        Request::Signal { signal } => {
            let (pgid, window) = streams
                .lock()
                .ok()
                .and_then(|map| map.get(&stream).map(|i| (i.pgid, i.window.clone())))
                .unwrap_or((None, None));
            // SIGKILL is how the host abandons an exec: nobody reads its
            // output any more, so its pumps must not wait for credit.
            if signal == libc::SIGKILL
                && let Some(window) = window
            {
                window.close();
            }
            match pgid {
                Some(pgid) => signal_group(pgid, signal),
                None => eprintln!("banger-agent: signal for stream {stream} with no process"),
            }
        }
        Request::WriteFile { path, mode } => {
            let (tx, rx) = mpsc::unbounded_channel();
            register(streams, stream, Some(tx), None);
            tokio::spawn(run_write_file(
                stream,
                PathBuf::from(path),
                mode,
                rx,
                streams.clone(),
                out.clone(),
            ));
        }
        Request::WorkspaceSync {
            operation: op,
            root,
        } => {
            let (tx, rx) = mpsc::unbounded_channel();
            register(streams, stream, Some(tx), None);
            tokio::spawn(run_workspace_sync(
                stream,
                op,
                PathBuf::from(root),
                rx,
                streams.clone(),
                out.clone(),
            ));
        }
        Request::ReadFile { path } => {
            tokio::spawn(run_read_file(stream, PathBuf::from(path), out.clone()));
        }
        Request::Ports => {
            let out = out.clone();
            tokio::spawn(async move {
                let mut sockets = tokio::task::spawn_blocking(crate::ports::listening)
                    .await
                    .unwrap_or_default();
                sockets.truncate(crate::protocol::MAX_PORTS);
                out.reply(stream, Response::Ports { sockets }).await;
            });
        }
        Request::Sync => {
            let out = out.clone();
            tokio::spawn(async move {
                sync_all().await;
                out.reply(stream, Response::Done).await;
            });
        }
        // What a restored or paused guest needs (`crate::identity`).
        request @ (Request::Identity(_) | Request::MountDisk { .. } | Request::SetClock { .. }) => {
            let out = out.clone();
            tokio::spawn(async move {
                let reply = match crate::identity::serve(request).await {
                    Ok(()) => Response::Done,
                    Err(message) => Response::Error { message },
                };
                out.reply(stream, reply).await;
            });
        }
        Request::PowerOff => {
            let out = out.clone();
            tokio::spawn(async move {
                sync_all().await;
                out.reply(stream, Response::Done).await;
                // Give the reply a moment to leave before the guest stops.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if POWER_OFF_EXITS.load(std::sync::atomic::Ordering::SeqCst) {
                    std::process::exit(0);
                }
                // SAFETY: reboot(2) with RB_POWER_OFF takes no pointers; the
                // file systems were synced above.
                unsafe {
                    libc::reboot(libc::RB_POWER_OFF);
                }
            });
        }
    }
}

fn register(
    streams: &Streams,
    stream: u32,
    sink: Option<mpsc::UnboundedSender<Option<Vec<u8>>>>,
    window: Option<Arc<Semaphore>>,
) {
    if let Ok(mut map) = streams.lock() {
        map.insert(
            stream,
            Inflight {
                sink,
                pgid: None,
                pty: None,
                window,
            },
        );
    }
}

fn unregister(streams: &Streams, stream: u32) {
    if let Ok(mut map) = streams.lock() {
        map.remove(&stream);
    }
}

async fn sync_all() {
    let _ = tokio::task::spawn_blocking(|| {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() }
    })
    .await;
}

fn hello_info() -> HelloInfo {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    HelloInfo {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        kernel: read("/proc/sys/kernel/osrelease"),
    }
}

/// The environment every guest command starts from; the request's own
/// variables are added on top.
fn base_env() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("SHELL", "/bin/bash"),
        ("LANG", "C.UTF-8"),
    ]
}

async fn run_exec(
    stream: u32,
    spec: ExecSpec,
    mut stdin_rx: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    window: Arc<Semaphore>,
    streams: Streams,
    out: Out,
) {
    let Some((program, args)) = spec.argv.split_first() else {
        unregister(&streams, stream);
        out.error(stream, "empty command".into()).await;
        return;
    };
    let account = match crate::user::for_spec(&spec) {
        Ok(a) => a,
        Err(message) => {
            unregister(&streams, stream);
            out.error(stream, message).await;
            return;
        }
    };
    let cwd = crate::user::cwd(&spec, account.as_ref());
    // The agent's one job is running the host's programs in the guest.
    #[allow(clippy::disallowed_methods)]
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(base_env())
        .envs(crate::user::env(account.as_ref()))
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&cwd)
        .process_group(0)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(a) = &account {
        // std drops root's supplementary groups when it switches ids.
        cmd.uid(a.uid).gid(a.gid);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            unregister(&streams, stream);
            let message = spawn_error(program, &cwd, &e);
            out.error(stream, message).await;
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    if let Ok(mut map) = streams.lock()
        && let Some(inflight) = map.get_mut(&stream)
    {
        inflight.pgid = Some(pid as i32);
    }
    out.reply(stream, Response::Started { pid }).await;

    if let Some(mut stdin) = child.stdin.take() {
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(Some(chunk)) = stdin_rx.recv().await {
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
                // The program took it: the host may send as much again.
                out.reply(
                    stream,
                    Response::Credit {
                        bytes: chunk.len() as u64,
                    },
                )
                .await;
            }
            // Dropping stdin closes it: the program sees end of input.
        });
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let pump_out = tokio::spawn(pump(
        stdout,
        stream,
        Fd::Stdout,
        window.clone(),
        out.clone(),
    ));
    let pump_err = tokio::spawn(pump(stderr, stream, Fd::Stderr, window, out.clone()));
    let status = child.wait().await;
    // All output must precede the exit status on the wire.
    let _ = pump_out.await;
    let _ = pump_err.await;
    unregister(&streams, stream);
    report_exit(stream, status, &out).await;
}

fn winsize(size: TtySize) -> libc::winsize {
    libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn set_window_size(pty: &OwnedFd, size: TtySize) {
    let ws = winsize(size);
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid
    // for the call; the fd is an open pty master.
    unsafe {
        libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

/// Opens a pseudo-terminal pair of the given size: (master, slave).
fn open_pty(size: TtySize) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    let ws = winsize(size);
    // SAFETY: openpty writes two fds into the given ints; the name pointer
    // is null (not wanted), termios null (defaults), winsize valid for the
    // call.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // openpty does not set close-on-exec: without it every later exec would
    // inherit this terminal and keep the session from ever hanging up.
    for fd in [master, slave] {
        // SAFETY: fcntl on fds we just received; no memory is passed.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    // SAFETY: openpty succeeded, so both fds are open and owned by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

/// Runs a program on a new pseudo-terminal: it becomes the session leader
/// with the terminal as its controlling tty, so Ctrl-C typed on the host
/// reaches it as SIGINT through the line discipline.
async fn run_exec_tty(
    stream: u32,
    spec: ExecSpec,
    mut stdin_rx: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    window: Arc<Semaphore>,
    streams: Streams,
    out: Out,
) {
    let fail = |message: String| {
        let out = out.clone();
        let streams = streams.clone();
        async move {
            unregister(&streams, stream);
            out.error(stream, message).await;
        }
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return fail("empty command".into()).await;
    };
    let size = spec.tty.unwrap_or_default();
    let (master, slave) = match open_pty(size) {
        Ok(pair) => pair,
        Err(e) => return fail(format!("cannot open a pseudo-terminal: {e}")).await,
    };
    let account = match crate::user::for_spec(&spec) {
        Ok(a) => a,
        Err(message) => return fail(message).await,
    };
    let cwd = crate::user::cwd(&spec, account.as_ref());
    let slave_io = || slave.try_clone().map(Stdio::from);
    let (Ok(i), Ok(o), Ok(e)) = (slave_io(), slave_io(), slave_io()) else {
        return fail("cannot duplicate the pseudo-terminal".into()).await;
    };
    #[allow(clippy::disallowed_methods)] // the agent runs the host's programs
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(base_env())
        .envs(crate::user::env(account.as_ref()))
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&cwd)
        .stdin(i)
        .stdout(o)
        .stderr(e);
    if let Some(a) = &account {
        cmd.uid(a.uid).gid(a.gid);
    }
    // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe and use no
    // memory of the parent; they run in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(cmd);
    drop(slave);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let message = spawn_error(program, &cwd, &e);
            return fail(message).await;
        }
    };
    let master = Arc::new(master);
    let pid = child.id().unwrap_or(0);
    if let Ok(mut map) = streams.lock()
        && let Some(inflight) = map.get_mut(&stream)
    {
        inflight.pgid = Some(pid as i32);
        inflight.pty = Some(master.clone());
    }
    out.reply(stream, Response::Started { pid }).await;

    let (Ok(read_fd), Ok(write_fd)) = (master.try_clone(), master.try_clone()) else {
        let _ = child.kill().await;
        return fail("cannot duplicate the pseudo-terminal".into()).await;
    };
    let handle = tokio::runtime::Handle::current();
    let writer_out = out.clone();
    let writer_handle = handle.clone();
    std::thread::spawn(move || {
        let mut w = std::fs::File::from(write_fd);
        while let Some(Some(chunk)) = stdin_rx.blocking_recv() {
            if w.write_all(&chunk).is_err() {
                break;
            }
            writer_handle.block_on(writer_out.reply(
                stream,
                Response::Credit {
                    bytes: chunk.len() as u64,
                },
            ));
        }
    });
    let reader_out = out.clone();
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut r = std::fs::File::from(read_fd);
        let mut buf = vec![0u8; DATA_CHUNK];
        // EIO once every holder of the terminal is gone.
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || !handle.block_on(take_window(&window, n)) {
                break;
            }
            let frame = Frame {
                stream,
                body: Body::Data(Fd::Stdout, buf[..n].to_vec()),
            };
            handle.block_on(reader_out.send(frame));
        }
    });
    let status = child.wait().await;
    // Output still buffered in the terminal comes first; a background
    // process holding the terminal open must not hold the exit back.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), reader).await;
    for fd in [Fd::Stdout, Fd::Stderr] {
        out.send(Frame {
            stream,
            body: Body::Eof(fd),
        })
        .await;
    }
    unregister(&streams, stream);
    report_exit(stream, status, &out).await;
}

/// Why a program could not start, in the user's terms.
fn spawn_error(program: &str, cwd: &str, e: &std::io::Error) -> String {
    if !Path::new(cwd).is_dir() {
        format!("working directory {cwd} does not exist in the guest")
    } else {
        format!("cannot run {program:?}: {e}")
    }
}

/// Sends an exec's exit status (after all its output).
async fn report_exit(stream: u32, status: std::io::Result<std::process::ExitStatus>, out: &Out) {
    match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            let exit = ExitStatus {
                code: status.code(),
                signal: status.signal(),
            };
            out.reply(stream, Response::Exited(exit)).await;
        }
        Err(e) => {
            out.error(stream, format!("waiting for the process failed: {e}"))
                .await
        }
    }
}

/// Sends a pipe's bytes to the host, no more than its window allows: when
/// the host stops consuming, this stops reading, the pipe fills, and the
/// program blocks on its next write (end-to-end flow control).
async fn pump(
    reader: Option<impl AsyncRead + Unpin>,
    stream: u32,
    fd: Fd,
    window: Arc<Semaphore>,
    out: Out,
) {
    if let Some(mut reader) = reader {
        let mut buf = vec![0u8; DATA_CHUNK];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !take_window(&window, n).await {
                        // Abandoned by the host: nothing more is read.
                        break;
                    }
                    out.send(Frame {
                        stream,
                        body: Body::Data(fd, buf[..n].to_vec()),
                    })
                    .await;
                }
            }
        }
    }
    out.send(Frame {
        stream,
        body: Body::Eof(fd),
    })
    .await;
}

async fn run_write_file(
    stream: u32,
    path: PathBuf,
    mode: u32,
    mut rx: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    streams: Streams,
    out: Out,
) {
    let Some(data) = collect_input(&mut rx, &streams, stream).await else {
        return;
    };
    let result = tokio::task::spawn_blocking(move || write_atomically(&path, mode, &data)).await;
    match result {
        Ok(Ok(())) => out.reply(stream, Response::Done).await,
        Ok(Err(e)) => out.error(stream, e).await,
        Err(e) => out.error(stream, format!("write task failed: {e}")).await,
    }
}

/// Collects a sync operation's input, runs it on a blocking thread, and
/// streams its output back.
async fn run_workspace_sync(
    stream: u32,
    op: String,
    root: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    streams: Streams,
    out: Out,
) {
    let Some(input) = collect_input(&mut rx, &streams, stream).await else {
        return;
    };
    let result = tokio::task::spawn_blocking(move || crate::sync::run(&op, &root, &input)).await;
    match result {
        Ok(Ok(output)) => {
            for chunk in output.chunks(DATA_CHUNK) {
                out.send(Frame {
                    stream,
                    body: Body::Data(Fd::Stdout, chunk.to_vec()),
                })
                .await;
            }
            out.send(Frame {
                stream,
                body: Body::Eof(Fd::Stdout),
            })
            .await;
            out.reply(stream, Response::Done).await;
        }
        Ok(Err(e)) => out.error(stream, format!("workspace sync: {e}")).await,
        Err(e) => {
            out.error(stream, format!("workspace sync task failed: {e}"))
                .await
        }
    }
}

/// A request's whole input (`Data(Stdin)` until `Eof`); `None` when the
/// host went away first.
async fn collect_input(
    rx: &mut mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    streams: &Streams,
    stream: u32,
) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut complete = false;
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Some(bytes) => data.extend_from_slice(&bytes),
            None => {
                complete = true;
                break;
            }
        }
    }
    unregister(streams, stream);
    complete.then_some(data)
}

/// Writes through a temporary file in the same directory and renames it, so
/// a reader never sees half a file.
fn write_atomically(path: &Path, mode: u32, data: &[u8]) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.banger-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

async fn run_read_file(stream: u32, path: PathBuf, out: Out) {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            out.error(stream, format!("cannot read {}: {e}", path.display()))
                .await;
            return;
        }
    };
    let mut buf = vec![0u8; DATA_CHUNK];
    loop {
        match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                out.send(Frame {
                    stream,
                    body: Body::Data(Fd::Stdout, buf[..n].to_vec()),
                })
                .await;
            }
            Err(e) => {
                out.error(stream, format!("cannot read {}: {e}", path.display()))
                    .await;
                return;
            }
        }
    }
    out.send(Frame {
        stream,
        body: Body::Eof(Fd::Stdout),
    })
    .await;
    out.reply(stream, Response::Done).await;
}
