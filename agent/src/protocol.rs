//! The agent's wire protocol: frames, and the closed set of guest operations.
//!
//! This module owns the bytes that cross the host/guest boundary. It does no
//! I/O: both the guest agent and the host-side client feed bytes into a
//! [`FrameDecoder`] and write what [`Frame::encode`] returns.
//!
//! A frame is `MAGIC (2) | length u32 BE | stream u32 BE | tag u8 | payload`,
//! where `length` counts `stream + tag + payload`. The magic lets a reader
//! that joined a byte stream in the middle of a frame (a virtio-serial port
//! keeps flowing across host reconnects) find the next frame boundary.
//!
//! Every request carries a stream id chosen by the host; everything the guest
//! sends about that request carries the same id. Control messages are JSON;
//! process I/O and file contents travel as raw data frames.

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes incompatibly, or what the host runs
/// of the guest's agent binary does (8: `banger-agent workspace unpack`;
/// an older agent would take it for a start of the agent itself. 9:
/// `Hello` names the host connection, and a new one ends what earlier
/// ones started).
pub const PROTOCOL_VERSION: u32 = 9;

/// Bytes of output an exec may send before the host grants more with
/// [`Request::Credit`], and bytes of stdin the host may send before the
/// guest grants more with [`Response::Credit`]: end-to-end flow control,
/// so a reader that stops (on either side) stops the writer instead of
/// growing a queue.
pub const EXEC_WINDOW: u64 = 4 << 20;

/// Most sockets one `Ports` answer carries (it must fit in one frame).
pub const MAX_PORTS: usize = 2048;

/// Name of the virtio-serial port the agent serves on.
pub const SERIAL_PORT_NAME: &str = "banger.agent";

/// Where a guest mounts its project's dependency cache disk (serial
/// `cache`).
pub const CACHE_DIR: &str = "/var/cache/banger";

/// Directories on the cache disk and where the guest binds each: at boot
/// (`/init`) and when a restored guest gets its cache.
pub const CACHE_MOUNTS: &[(&str, &str)] = &[
    ("pip", "/root/.cache/pip"),
    ("npm", "/root/.npm"),
    ("cargo-registry", "/root/.cargo/registry"),
    ("cargo-git", "/root/.cargo/git"),
    ("go-mod", "/root/go/pkg/mod"),
    ("apt", "/var/cache/apt/archives"),
];

/// vsock port the agent listens on when the VMM offers vsock.
pub const VSOCK_PORT: u32 = 1024;

/// Start of every frame.
pub const MAGIC: [u8; 2] = [0xBA, 0x96];

/// Largest frame body accepted; larger data is split by the sender.
pub const MAX_FRAME_BODY: usize = 1 << 20;

/// Data chunk size used when streaming bytes.
pub const DATA_CHUNK: usize = 64 * 1024;

const HEADER_LEN: usize = 2 + 4;
const TAG_JSON: u8 = 0;
const TAG_DATA: u8 = 0x10;
const TAG_EOF: u8 = 0x20;

/// Which byte stream of a request a data frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    /// Host to guest: a process's stdin, or the contents of a file being written.
    Stdin,
    /// Guest to host: a process's stdout, or the contents of a file being read.
    Stdout,
    /// Guest to host: a process's stderr.
    Stderr,
}

impl Fd {
    fn index(self) -> u8 {
        match self {
            Fd::Stdin => 0,
            Fd::Stdout => 1,
            Fd::Stderr => 2,
        }
    }

    fn from_index(i: u8) -> Option<Fd> {
        match i {
            0 => Some(Fd::Stdin),
            1 => Some(Fd::Stdout),
            2 => Some(Fd::Stderr),
            _ => None,
        }
    }
}

/// What a frame carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A request from the host.
    Request(Request),
    /// A reply or event from the guest.
    Response(Response),
    /// Bytes of one of the request's streams.
    Data(Fd, Vec<u8>),
    /// The end of one of the request's streams.
    Eof(Fd),
}

/// One unit on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The request this frame belongs to.
    pub stream: u32,
    /// Its content.
    pub body: Body,
}

/// A JSON control message: requests and responses share one envelope so a
/// decoder needs no context to parse a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dir", content = "msg", rename_all = "snake_case")]
enum Control {
    Request(Request),
    Response(Response),
}

/// The closed set of operations the host can ask of the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Version handshake; the host treats an answer as "guest ready".
    Hello {
        /// The host's protocol version.
        protocol: u32,
        /// The host connection saying it: random per connection. A new
        /// one ends what earlier connections started (see
        /// `session::run`); 0 names none.
        #[serde(default)]
        session: u64,
    },
    /// Run a program. Replies: `Started`, data/EOF frames, then `Exited`.
    Exec(ExecSpec),
    /// Deliver a signal to the process group of the exec on this stream.
    Signal {
        /// Signal number.
        signal: i32,
    },
    /// Resize the terminal of the exec on this stream (`tty` execs).
    Resize(TtySize),
    /// The host consumed this many more bytes of the exec's output: it may
    /// send that much more (see [`EXEC_WINDOW`]).
    Credit {
        /// Bytes.
        bytes: u64,
    },
    /// Write a file: the contents follow as `Data(Stdin)` frames ended by
    /// `Eof(Stdin)`; replies `Done` once the file is complete.
    WriteFile {
        /// Absolute guest path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Read a file: replies `Data(Stdout)` frames, `Eof(Stdout)`, then `Done`.
    ReadFile {
        /// Absolute guest path.
        path: String,
    },
    /// A live-sync operation on a workspace (`banger_agent::sync`), run
    /// inside the agent (no process start): its input follows as
    /// `Data(Stdin)` frames ended by `Eof(Stdin)`; replies `Data(Stdout)`
    /// frames with its JSON report, `Eof(Stdout)`, then `Done`.
    WorkspaceSync {
        /// `apply`, `scan`, `read`, `accept` or `init`.
        operation: String,
        /// The workspace root in the guest.
        root: String,
    },
    /// The guest's listening TCP and UDP sockets. Replies `Ports`.
    Ports,
    /// Flush the guest's file systems.
    Sync,
    /// Flush, then power the guest off. Replies `Done` before powering off.
    PowerOff,
    /// Make a guest restored from a snapshot its own: its siblings were
    /// restored from the same memory. Replies `Done` once every part is
    /// applied, or `Error` naming the part that failed.
    Identity(IdentitySpec),
    /// Mount a disk that a restored guest has but did not mount at boot
    /// (a project's dependency cache): the disk with virtio serial
    /// `serial`, ext4, at `target`, then each `(directory on it, mount
    /// point)` bound over its mount point. Replies `Done`.
    MountDisk {
        /// The disk's virtio-blk serial.
        serial: String,
        /// Absolute mount point.
        target: String,
        /// Directories of the disk (relative) and where to bind each
        /// (absolute).
        binds: Vec<(String, String)>,
    },
    /// Set the guest's wall clock (after it was paused, e.g. for a
    /// snapshot). Replies `Done`.
    SetClock {
        /// The host's wall clock, nanoseconds since the epoch.
        unix_nanos: u64,
    },
}

/// A restored guest's own identity, chosen by the host
/// ([`Request::Identity`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySpec {
    /// Host name (`sethostname` and `/etc/hostname`).
    pub hostname: String,
    /// New `/etc/machine-id`: 32 lowercase hex digits.
    pub machine_id: String,
    /// The host's wall clock, nanoseconds since the epoch.
    pub unix_nanos: u64,
    /// Host randomness credited to the guest's pool before the kernel's
    /// generator is reseeded from it (at least 32 bytes).
    pub entropy: Vec<u8>,
    /// MAC address of the guest's network interface, if it has one.
    pub mac: Option<String>,
}

/// A program to run in the guest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Program and arguments, passed to `execve` as they are: never joined
    /// into a shell string.
    pub argv: Vec<String>,
    /// Variables added to the agent's base environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; the guest user's home when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Whether the host will stream stdin; when false stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// Run on a new pseudo-terminal of this size (stdin, stdout and stderr
    /// all on it; output comes back as stdout).
    #[serde(default)]
    pub tty: Option<TtySize>,
    /// Run as this user (`NAME`, `UID`, `NAME:GROUP` or `UID:GID`, as an
    /// OCI image's `User` says); root when absent.
    #[serde(default)]
    pub user: Option<String>,
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Replies and events from the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `Hello`.
    Hello(HelloInfo),
    /// The exec's process started.
    Started {
        /// Its pid in the guest.
        pid: u32,
    },
    /// The exec's process ended; all its output was sent before this.
    Exited(ExitStatus),
    /// Answer to `Ports` (at most [`MAX_PORTS`] sockets).
    Ports {
        /// The sockets, sorted by protocol and port.
        sockets: Vec<crate::ports::ListeningSocket>,
    },
    /// The request completed.
    Done,
    /// The request failed.
    Error {
        /// What went wrong, for a person.
        message: String,
    },
    /// The exec's program took this many more bytes of stdin: the host may
    /// send that much more (see [`EXEC_WINDOW`]).
    Credit {
        /// Bytes.
        bytes: u64,
    },
}

/// What the guest says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloInfo {
    /// The agent's protocol version.
    pub protocol: u32,
    /// The agent's package version.
    pub agent_version: String,
    /// `/proc/sys/kernel/random/boot_id`: changes on every boot.
    pub boot_id: String,
    /// Guest kernel release.
    pub kernel: String,
}

/// How a guest process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// The code a shell would report: the exit code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 255,
        }
    }
}

/// A frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A frame announced a body larger than [`MAX_FRAME_BODY`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BODY} byte limit")]
    TooLarge(usize),
    /// A frame had an unknown tag.
    #[error("unknown frame tag {0:#x}")]
    UnknownTag(u8),
    /// A control message was not valid JSON for the protocol.
    #[error("malformed control message")]
    Json(#[source] serde_json::Error),
}

impl Frame {
    /// A request frame.
    pub fn request(stream: u32, request: Request) -> Frame {
        Frame {
            stream,
            body: Body::Request(request),
        }
    }

    /// A response frame.
    pub fn response(stream: u32, response: Response) -> Frame {
        Frame {
            stream,
            body: Body::Response(response),
        }
    }

    /// Serializes the frame with its header.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, payload): (u8, std::borrow::Cow<'_, [u8]>) = match &self.body {
            Body::Request(r) => (TAG_JSON, control_json(&Control::Request(r.clone())).into()),
            Body::Response(r) => (TAG_JSON, control_json(&Control::Response(r.clone())).into()),
            Body::Data(fd, bytes) => (TAG_DATA | fd.index(), bytes.as_slice().into()),
            Body::Eof(fd) => (TAG_EOF | fd.index(), Vec::new().into()),
        };
        let len = 4 + 1 + payload.len();
        let mut out = Vec::with_capacity(HEADER_LEN + len);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.push(tag);
        out.extend_from_slice(&payload);
        out
    }
}

fn control_json(c: &Control) -> Vec<u8> {
    // Serializing these plain enums cannot fail.
    serde_json::to_vec(c).unwrap_or_default()
}

/// Incremental decoder: push bytes as they arrive, pop whole frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Forgets buffered bytes (the peer went away mid-frame).
    pub fn reset(&mut self) {
        self.buf.clear();
    }

    /// The next complete frame, if one is buffered.
    ///
    /// Bytes before a magic are skipped; a frame with a bad header is
    /// skipped past its magic and reported, so one corrupt frame cannot wedge
    /// the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let Some(start) = find_magic(&self.buf) else {
            // Keep a possible first magic byte at the end.
            let keep = usize::from(self.buf.last() == Some(&MAGIC[0]));
            let drop = self.buf.len() - keep;
            self.buf.drain(..drop);
            return Ok(None);
        };
        self.buf.drain(..start);
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[2], self.buf[3], self.buf[4], self.buf[5]]) as usize;
        if !(5..=MAX_FRAME_BODY + 5).contains(&len) {
            self.buf.drain(..2);
            return Err(ProtocolError::TooLarge(len));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buf.drain(..HEADER_LEN + len).collect();
        let body = &frame[HEADER_LEN..];
        let stream = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let tag = body[4];
        let payload = &body[5..];
        let body = match tag {
            TAG_JSON => match serde_json::from_slice::<Control>(payload) {
                Ok(Control::Request(r)) => Body::Request(r),
                Ok(Control::Response(r)) => Body::Response(r),
                Err(e) => return Err(ProtocolError::Json(e)),
            },
            t if t & 0xF0 == TAG_DATA => match Fd::from_index(t & 0x0F) {
                Some(fd) => Body::Data(fd, payload.to_vec()),
                None => return Err(ProtocolError::UnknownTag(t)),
            },
            t if t & 0xF0 == TAG_EOF => match Fd::from_index(t & 0x0F) {
                Some(fd) => Body::Eof(fd),
                None => return Err(ProtocolError::UnknownTag(t)),
            },
            t => return Err(ProtocolError::UnknownTag(t)),
        };
        Ok(Some(Frame { stream, body }))
    }
}

fn find_magic(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frames: &[Frame], chunk: usize) -> Vec<Frame> {
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            dec.push(piece);
            while let Some(f) = dec.next_frame().unwrap() {
                out.push(f);
            }
        }
        out
    }

    fn sample() -> Vec<Frame> {
        vec![
            Frame::request(
                1,
                Request::Hello {
                    protocol: 1,
                    session: 7,
                },
            ),
            Frame::request(
                11,
                Request::MountDisk {
                    serial: "cache".into(),
                    target: "/var/cache/banger".into(),
                    binds: vec![("pip".into(), "/root/.cache/pip".into())],
                },
            ),
            Frame::request(
                7,
                Request::SetClock {
                    unix_nanos: u64::MAX,
                },
            ),
            // Every field must survive the tagged enum (serde cannot carry
            // a u128 through one: such a frame was dropped by the guest).
            Frame::request(
                5,
                Request::Identity(IdentitySpec {
                    hostname: "vm-1".into(),
                    machine_id: "0123456789abcdef0123456789abcdef".into(),
                    unix_nanos: u64::MAX,
                    entropy: vec![0, 255, 7],
                    mac: Some("52:54:00:00:00:01".into()),
                }),
            ),
            Frame::request(
                3,
                Request::Exec(ExecSpec {
                    argv: vec!["sh".into(), "-c".into(), "echo \"a  b\"".into()],
                    env: vec![("K".into(), "v w".into())],
                    cwd: Some("/root".into()),
                    stdin: true,
                    tty: Some(TtySize { rows: 24, cols: 80 }),
                    user: Some("app:staff".into()),
                }),
            ),
            Frame::request(
                3,
                Request::Resize(TtySize {
                    rows: 30,
                    cols: 100,
                }),
            ),
            Frame {
                stream: 3,
                body: Body::Data(Fd::Stdin, vec![0, 0xBA, 0x96, 255]),
            },
            Frame {
                stream: 3,
                body: Body::Eof(Fd::Stdin),
            },
            Frame::response(
                3,
                Response::Exited(ExitStatus {
                    code: Some(42),
                    signal: None,
                }),
            ),
        ]
    }

    #[test]
    fn frames_survive_any_chunking() {
        for chunk in [1, 2, 3, 7, 4096] {
            assert_eq!(roundtrip(&sample(), chunk), sample(), "chunk {chunk}");
        }
    }

    #[test]
    fn decoder_resynchronises_after_garbage() {
        let mut bytes = vec![1, 2, 3, 0xBA];
        let frame = Frame::request(9, Request::Sync);
        bytes.extend(frame.encode());
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        assert_eq!(dec.next_frame().unwrap(), Some(frame));
        assert_eq!(dec.next_frame().unwrap(), None);
    }

    #[test]
    fn oversized_frame_is_rejected_and_skipped() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(u32::MAX.to_be_bytes());
        let good = Frame::request(2, Request::Sync);
        bytes.extend(good.encode());
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        assert!(matches!(dec.next_frame(), Err(ProtocolError::TooLarge(_))));
        assert_eq!(dec.next_frame().unwrap(), Some(good));
    }

    #[test]
    fn shell_code_follows_shell_conventions() {
        let signalled = ExitStatus {
            code: None,
            signal: Some(9),
        };
        assert_eq!(signalled.shell_code(), 137);
        let exited = ExitStatus {
            code: Some(42),
            signal: None,
        };
        assert_eq!(exited.shell_code(), 42);
    }
}
