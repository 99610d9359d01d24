//! The host client against the real guest session, in one process, with
//! real child processes: everything the guest does except the transport.

use banger_agent::client::{AgentClient, AgentError, ExecEvent};
use banger_agent::protocol::{EXEC_WINDOW, ExecSpec, PROTOCOL_VERSION};
use banger_agent::session::{self, Input};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Wires a client to a session through an in-memory byte pipe, the way the
/// agent's transports do.
fn connect() -> AgentClient {
    let (host, guest) = tokio::io::duplex(1 << 16);
    let (mut guest_rd, mut guest_wr) = tokio::io::split(guest);
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            match guest_rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = in_tx.send(Input::Disconnected).await;
                    return;
                }
                Ok(n) => {
                    let _ = in_tx.send(Input::Bytes(buf[..n].to_vec())).await;
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if guest_wr.write_all(&b).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(session::run(in_rx, out_tx));
    let (rd, wr) = tokio::io::split(host);
    AgentClient::new(rd, wr)
}

async fn run(client: &AgentClient, spec: ExecSpec) -> (Vec<u8>, Vec<u8>, i32) {
    let mut session = client.exec(spec).await.expect("exec starts");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match session.next().await.expect("event") {
            ExecEvent::Stdout(b) => out.extend(b),
            ExecEvent::Stderr(b) => err.extend(b),
            ExecEvent::Exited(status) => return (out, err, status.shell_code()),
        }
    }
}

fn argv(args: &[&str]) -> ExecSpec {
    ExecSpec {
        argv: args.iter().map(|s| s.to_string()).collect(),
        cwd: Some("/".into()),
        ..ExecSpec::default()
    }
}

#[tokio::test]
async fn hello_reports_protocol_and_boot_id() {
    let client = connect();
    let info = client.hello().await.unwrap();
    assert_eq!(info.protocol, PROTOCOL_VERSION);
    assert_eq!(info.boot_id.len(), 36, "boot id {:?}", info.boot_id);
}

#[tokio::test]
async fn exit_code_and_quoting_are_kept() {
    let client = connect();
    let (out, _, code) = run(&client, argv(&["sh", "-c", "echo \"a  b\"; exit 42"])).await;
    assert_eq!(String::from_utf8_lossy(&out), "a  b\n");
    assert_eq!(code, 42);
}

#[tokio::test]
async fn stderr_is_separate_and_signals_are_reported() {
    let client = connect();
    let (out, err, code) = run(
        &client,
        argv(&["sh", "-c", "echo out; echo err >&2; kill -TERM $$"]),
    )
    .await;
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
    assert_eq!(code, 128 + 15);
}

#[tokio::test]
async fn stdin_is_streamed() {
    let client = connect();
    let mut spec = argv(&["sh", "-c", "wc -c"]);
    spec.stdin = true;
    let mut session = client.exec(spec).await.unwrap();
    let payload = vec![7u8; 300_000];
    session.write_stdin(&payload).await.unwrap();
    session.close_stdin().unwrap();
    let mut out = Vec::new();
    loop {
        match session.next().await.unwrap() {
            ExecEvent::Stdout(b) => out.extend(b),
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exited(s) => {
                assert_eq!(s.code, Some(0));
                break;
            }
        }
    }
    assert_eq!(String::from_utf8_lossy(&out).trim(), "300000");
}

#[tokio::test]
async fn signal_reaches_the_process_group() {
    let client = connect();
    // The shell names its child, then waits: a signal sent to the shell
    // alone would leave the child running. The child's output goes
    // elsewhere so that the shell's exit is reported without waiting for it.
    let mut session = client
        .exec(argv(&[
            "sh",
            "-c",
            "sleep 300 >/dev/null 2>&1 & echo $!; wait; echo not-reached",
        ]))
        .await
        .unwrap();
    let mut out = Vec::new();
    let child: i32 = loop {
        match session.next().await.unwrap() {
            ExecEvent::Stdout(b) => out.extend(b),
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exited(s) => panic!("ended before naming its child: {s:?}"),
        }
        if let Some(line) = out.strip_suffix(b"\n") {
            break std::str::from_utf8(line).unwrap().trim().parse().unwrap();
        }
    };
    assert!(process_lives(child), "sleep {child} is not running");
    session.control().signal(9).unwrap();
    loop {
        match session.next().await.unwrap() {
            ExecEvent::Exited(s) => {
                assert_eq!(s.signal, Some(9));
                break;
            }
            ExecEvent::Stdout(b) => panic!("unexpected output {b:?}"),
            ExecEvent::Stderr(_) => {}
        }
    }
    // The child got the signal too (bounded wait: delivery is asynchronous).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while process_lives(child) {
        assert!(
            std::time::Instant::now() < deadline,
            "the shell died but its child sleep {child} still runs: the signal missed the process group"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether `pid` exists and is not a zombie (a killed orphan stays a zombie
/// until init reaps it; it runs no more).
fn process_lives(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which ends at the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    state != Some('Z')
}

#[tokio::test]
async fn missing_program_and_missing_cwd_are_errors() {
    let client = connect();
    let err = client
        .exec(argv(&["/nonexistent/prog"]))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("cannot run"), "{err}");
    let mut spec = argv(&["true"]);
    spec.cwd = Some("/nonexistent-dir".into());
    let err = client.exec(spec).await.err().unwrap();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn files_round_trip() {
    let client = connect();
    let dir = tempfile_dir();
    let path = format!("{dir}/sub/f.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    client.write_file(&path, 0o600, &data).await.unwrap();
    assert_eq!(client.read_file(&path).await.unwrap(), data);
    let mode = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    let err = client
        .read_file(&format!("{dir}/missing"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn workspace_sync_runs_in_the_agent_and_keeps_guest_edits() {
    use banger_agent::sync::{ApplyReport, Kind, Record, blob_oid};
    let client = connect();
    let dir = tempfile_dir();
    std::fs::create_dir_all(format!("{dir}/.git")).unwrap();
    let record = |path: &str, data: &[u8], expect: Option<String>| {
        let mut s = serde_json::to_vec(&Record::Write {
            path: path.into(),
            kind: Kind::File,
            size: data.len() as u64,
            expect,
            force: false,
        })
        .unwrap();
        s.push(b'\n');
        s.extend_from_slice(data);
        s
    };
    let max = 1 << 20;
    let out = client
        .workspace_sync("apply", &dir, &record("a/b.txt", b"one\n", None), max)
        .await
        .unwrap();
    let r: ApplyReport = serde_json::from_slice(&out).unwrap();
    assert_eq!((r.applied, r.conflicts.len()), (1, 0));
    assert_eq!(std::fs::read(format!("{dir}/a/b.txt")).unwrap(), b"one\n");
    // A guest edit is kept: the host's write expected the old content.
    std::fs::write(format!("{dir}/a/b.txt"), b"guest\n").unwrap();
    let out = client
        .workspace_sync(
            "apply",
            &dir,
            &record("a/b.txt", b"two\n", Some(blob_oid(b"one\n"))),
            max,
        )
        .await
        .unwrap();
    let r: ApplyReport = serde_json::from_slice(&out).unwrap();
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(std::fs::read(format!("{dir}/a/b.txt")).unwrap(), b"guest\n");
    // Errors come back as errors; an oversize reply is refused.
    let err = client
        .workspace_sync("frobnicate", &dir, b"", max)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown sync operation"), "{err}");
    let err = client
        .workspace_sync("read", &dir, br#"["a/b.txt"]"#, 10)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("over 10 bytes"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn concurrent_execs_do_not_mix() {
    let client = connect();
    let a = run(
        &client,
        argv(&["sh", "-c", "for i in 1 2 3; do echo a$i; done"]),
    );
    let b = run(
        &client,
        argv(&["sh", "-c", "for i in 1 2 3; do echo b$i; done; exit 3"]),
    );
    let ((oa, _, ca), (ob, _, cb)) = tokio::join!(a, b);
    assert_eq!(oa, b"a1\na2\na3\n");
    assert_eq!(ob, b"b1\nb2\nb3\n");
    assert_eq!((ca, cb), (0, 3));
}

fn tempfile_dir() -> String {
    let dir = std::env::temp_dir().join(format!(
        "banger-agent-it-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

#[tokio::test]
async fn tty_execs_get_a_terminal_that_resizes_and_takes_ctrl_c() {
    use banger_agent::protocol::TtySize;
    let client = connect();
    let mut spec = argv(&["sh", "-c", "tty; stty size; read line; stty size; exit 5"]);
    spec.stdin = true;
    spec.tty = Some(TtySize { rows: 24, cols: 80 });
    let mut session = client.exec(spec).await.unwrap();
    let control = session.control();
    let mut out = Vec::new();
    // Wait for the first size, then resize and let the script go on.
    while !String::from_utf8_lossy(&out).contains("24 80") {
        match session.next().await.unwrap() {
            ExecEvent::Stdout(b) => out.extend(b),
            other => panic!("unexpected {other:?}"),
        }
    }
    control
        .resize(TtySize {
            rows: 30,
            cols: 100,
        })
        .unwrap();
    control.write_stdin(b"go\n").await.unwrap();
    let code = loop {
        match session.next().await.unwrap() {
            ExecEvent::Stdout(b) => out.extend(b),
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exited(s) => break s.shell_code(),
        }
    };
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("/dev/pts/"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    assert_eq!(code, 5);

    // Ctrl-C typed into the terminal interrupts the program.
    let mut spec = argv(&["sh", "-c", "echo ready; sleep 30"]);
    spec.stdin = true;
    spec.tty = Some(TtySize { rows: 24, cols: 80 });
    let mut session = client.exec(spec).await.unwrap();
    let control = session.control();
    let mut out = Vec::new();
    let status = loop {
        match session.next().await.unwrap() {
            ExecEvent::Stdout(b) => {
                out.extend(b);
                if String::from_utf8_lossy(&out).contains("ready") {
                    control.write_stdin(&[3]).await.unwrap();
                }
            }
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exited(s) => break s,
        }
    };
    assert_eq!(status.shell_code(), 130, "{status:?}");
}

/// Output nobody reads pushes back on the program: the host holds at most
/// one window of it, and the program resumes when the host reads again.
#[tokio::test]
async fn unread_output_pushes_back_on_the_program() {
    let client = connect();
    let dir = tempfile::tempdir().unwrap();
    let progress = dir.path().join("progress");
    // 300 chunks of 64 KiB (about 20 MB); the program notes each one.
    let script = format!(
        "i=0; while [ $i -lt 300 ]; do head -c 65536 /dev/zero; i=$((i+1)); echo $i > {}; done; echo done >&2",
        progress.display()
    );
    let mut session = client.exec(argv(&["sh", "-c", &script])).await.unwrap();
    // Read nothing for a while: without flow control the program would
    // have written all of it by now.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let chunks: usize = std::fs::read_to_string(&progress)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    // One window, plus what the pipe and the agent's buffer hold.
    let most = (EXEC_WINDOW as usize + (256 << 10)) / 65536;
    assert!(
        chunks <= most,
        "the program wrote {chunks} chunks of 64 KiB for a reader that read nothing"
    );
    assert!(chunks > 0, "the program never started");
    let early = 0usize;
    // Reading again lets the program finish, nothing lost.
    let mut total = early;
    let mut err = Vec::new();
    let status = loop {
        match session.next().await.unwrap() {
            ExecEvent::Stdout(b) => total += b.len(),
            ExecEvent::Stderr(b) => err.extend(b),
            ExecEvent::Exited(s) => break s,
        }
    };
    assert_eq!(status.code, Some(0));
    assert_eq!(total, 300 * 65536);
    assert_eq!(err, b"done\n");
}

/// A guest that ignores the window (the guest is untrusted) is cut off
/// past the host's bound instead of growing the host.
#[tokio::test]
async fn a_guest_that_ignores_credit_is_cut_off() {
    use banger_agent::protocol::{Body, Fd, Frame, FrameDecoder, Request, Response};
    let (host, guest) = tokio::io::duplex(1 << 16);
    let (mut guest_rd, mut guest_wr) = tokio::io::split(guest);
    // A hostile guest: answers the exec, then floods output it was never
    // granted.
    tokio::spawn(async move {
        let mut decoder = FrameDecoder::new();
        let mut buf = vec![0u8; 4096];
        let stream = loop {
            let n = guest_rd.read(&mut buf).await.unwrap();
            decoder.push(&buf[..n]);
            if let Ok(Some(Frame {
                stream,
                body: Body::Request(Request::Exec(_)),
            })) = decoder.next_frame()
            {
                break stream;
            }
        };
        let started = Frame::response(stream, Response::Started { pid: 1 }).encode();
        guest_wr.write_all(&started).await.unwrap();
        let chunk = Frame {
            stream,
            body: Body::Data(Fd::Stdout, vec![b'x'; 64 << 10]),
        }
        .encode();
        // Keep reading what the host sends, so its writes never block.
        tokio::spawn(async move { while guest_rd.read(&mut buf).await.is_ok_and(|n| n > 0) {} });
        for _ in 0..2000 {
            if guest_wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let (rd, wr) = tokio::io::split(host);
    let client = AgentClient::new(rd, wr);
    let mut session = client.exec(argv(&["true"])).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut read = 0usize;
    let err = loop {
        match session.next().await {
            Ok(ExecEvent::Stdout(b)) => read += b.len(),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, AgentError::Overflow), "{err}");
    assert!(
        read <= banger_agent::client::MAX_QUEUED_BYTES + (1 << 20),
        "{read}"
    );
}

/// A program that never reads its stdin holds the writer back: no more
/// than one window of input is ever sent ahead.
#[tokio::test]
async fn stdin_nobody_reads_holds_the_writer_back() {
    let client = connect();
    let mut spec = argv(&["sleep", "30"]);
    spec.stdin = true;
    let session = client.exec(spec).await.unwrap();
    let control = session.control();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![1u8; 64 * 1024];
        loop {
            if control.write_stdin(&chunk).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
        }
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let written = sent.load(std::sync::atomic::Ordering::SeqCst);
    // sleep's stdin is a pipe (64 KiB) the program never reads.
    assert!(
        written <= EXEC_WINDOW as usize + (128 << 10),
        "{written} bytes sent to a program that reads nothing"
    );
    assert!(written >= 64 << 10, "nothing was sent: {written}");
    // Ending the exec releases the writer.
    drop(session);
    tokio::time::timeout(std::time::Duration::from_secs(5), writer)
        .await
        .expect("the writer was released")
        .unwrap();
}

#[tokio::test]
async fn blocking_stdin_streams_a_large_input_without_queueing_it_whole() {
    let client = connect();
    let mut spec = argv(&["sh", "-c", "wc -c"]);
    spec.stdin = true;
    let mut session = client.exec(spec).await.unwrap();
    let control = session.control();
    let total = 48usize << 20;
    let watcher = client.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let chunk = vec![1u8; 64 * 1024];
        let mut most = 0;
        for _ in 0..total / chunk.len() {
            control.write_stdin_blocking(&chunk).unwrap();
            most = most.max(watcher.unsent_bytes());
        }
        control.close_stdin().unwrap();
        most
    });
    let mut out = Vec::new();
    loop {
        match session.next().await.unwrap() {
            ExecEvent::Stdout(b) => out.extend(b),
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exited(s) => {
                assert_eq!(s.code, Some(0));
                break;
            }
        }
    }
    let most = writer.await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out).trim(), total.to_string());
    // Held to the window (plus one chunk in flight), never the whole input.
    let bound = EXEC_WINDOW as usize + (128 << 10);
    assert!(most <= bound, "{most} bytes were waiting");
}

/// A guest's channel that outlives its host connections without hearing
/// them go, as a guest restored from a snapshot wakes attached to the host
/// that saved it: one session, clients attached one after another.
struct Port {
    in_tx: mpsc::Sender<Input>,
    out_rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>>,
}

impl Port {
    fn new() -> Port {
        let (in_tx, in_rx) = mpsc::channel(64);
        let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(64);
        tokio::spawn(session::run(in_rx, out_tx));
        Port {
            in_tx,
            out_rx: std::sync::Arc::new(tokio::sync::Mutex::new(out_rx)),
        }
    }

    /// A client on the port, and the tasks carrying its bytes (abort
    /// them to take it away silently: no `Disconnected` reaches the
    /// session).
    fn attach(&self) -> (AgentClient, [tokio::task::JoinHandle<()>; 2]) {
        let (host, guest) = tokio::io::duplex(1 << 16);
        let (mut guest_rd, mut guest_wr) = tokio::io::split(guest);
        let in_tx = self.in_tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n @ 1..) = guest_rd.read(&mut buf).await {
                let _ = in_tx.send(Input::Bytes(buf[..n].to_vec())).await;
            }
        });
        let out_rx = self.out_rx.clone();
        let writer = tokio::spawn(async move {
            let mut out_rx = out_rx.lock().await;
            while let Some(b) = out_rx.recv().await {
                if guest_wr.write_all(&b).await.is_err() {
                    return;
                }
            }
        });
        let (rd, wr) = tokio::io::split(host);
        (AgentClient::new(rd, wr), [reader, writer])
    }
}

#[tokio::test]
async fn a_new_host_ends_what_an_unheard_earlier_one_started() {
    let port = Port::new();
    let (old, tasks) = port.attach();
    old.hello().await.unwrap();
    let mut stale = old
        .exec(argv(&[
            "sh",
            "-c",
            "echo $$; while :; do echo stale; sleep 0.02; done",
        ]))
        .await
        .unwrap();
    let pid: i32 = match stale.next().await.unwrap() {
        ExecEvent::Stdout(b) => std::str::from_utf8(&b)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap(),
        other => panic!("{other:?}"),
    };
    // The old host is gone, unheard; its program still prints.
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    drop((stale, old));
    assert!(process_lives(pid));

    let (new, _tasks) = port.attach();
    new.hello().await.unwrap();
    // Its hello ended the old host's program...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while process_lives(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the old host's program {pid} still runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // ...and none of what it printed reaches the new host's streams.
    for _ in 0..5 {
        let (out, _, code) = run(&new, argv(&["sh", "-c", "sleep 0.05; echo fresh"])).await;
        assert_eq!(
            (String::from_utf8(out).unwrap().as_str(), code),
            ("fresh\n", 0)
        );
    }
    // Hellos on one connection end nothing.
    let mut live = new.exec(argv(&["sleep", "30"])).await.unwrap();
    new.hello().await.unwrap();
    assert!(process_lives(live.pid() as i32));
    live.control().signal(9).unwrap();
    while !matches!(live.next().await.unwrap(), ExecEvent::Exited(_)) {}
}
