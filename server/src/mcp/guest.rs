//! Running things in a sandbox for a tool, through bangerd's `vm_exec`:
//! output kept within bounds, streamed as MCP progress notifications,
//! killed (the guest process group) on timeout, on cancellation, and when
//! the tool call goes away. The file tools are small guest scripts that
//! resolve symbolic links in the guest and refuse what lands outside the
//! workspace: only the guest knows its links, and a guest-side race can
//! only hurt the guest.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonrpsee::async_client::Client;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use tokio_util::sync::CancellationToken;

use crate::api::{BangerApiClient, ExecEvent, ExecParams};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Exit code of a file script that refuses (its stderr says why).
pub(crate) const REFUSED: i32 = 3;

/// The bytes of one stream a tool keeps: the first `head` bytes and the
/// last `tail`, with what lay between counted.
pub(crate) struct Capture {
    head: Vec<u8>,
    head_max: usize,
    tail: VecDeque<u8>,
    tail_max: usize,
    omitted: u64,
}

impl Capture {
    pub(crate) fn new(head_max: usize, tail_max: usize) -> Capture {
        Capture {
            head: Vec::new(),
            head_max,
            tail: VecDeque::new(),
            tail_max,
            omitted: 0,
        }
    }

    pub(crate) fn push(&mut self, mut data: &[u8]) {
        let room = self.head_max - self.head.len();
        let n = room.min(data.len());
        self.head.extend_from_slice(&data[..n]);
        data = &data[n..];
        if data.is_empty() {
            return;
        }
        if self.tail_max == 0 {
            self.omitted += data.len() as u64;
            return;
        }
        if data.len() >= self.tail_max {
            self.omitted += (self.tail.len() + data.len() - self.tail_max) as u64;
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_max..]);
            return;
        }
        let over = (self.tail.len() + data.len()).saturating_sub(self.tail_max);
        self.tail.drain(..over);
        self.omitted += over as u64;
        self.tail.extend(data);
    }

    /// Whether bytes were left out.
    pub(crate) fn truncated(&self) -> bool {
        self.omitted > 0
    }

    /// The kept bytes (head only: what a file read wants).
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// The kept text, with a marker where bytes were left out.
    pub(crate) fn text(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.omitted > 0 {
            out.push_str(&format!("\n[... {} bytes left out ...]\n", self.omitted));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

/// How a guest command ended.
pub(crate) struct Ran {
    pub(crate) exit_code: i32,
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
    pub(crate) timed_out: bool,
    pub(crate) elapsed: Duration,
}

/// Where a run's output goes while it runs.
pub(crate) struct Progress {
    pub(crate) peer: Peer<RoleServer>,
    pub(crate) token: ProgressToken,
}

/// How much of each stream a run keeps, and for how long it may run.
pub(crate) struct Bounds {
    pub(crate) head: usize,
    pub(crate) tail: usize,
    pub(crate) timeout: Duration,
}

/// Kills the guest command (its process group) unless disarmed: a tool
/// call whose future is dropped (the client cancelled, the connection
/// closed) must not leave the command running.
struct KillOnDrop {
    daemon: Arc<Client>,
    exec_id: Option<u64>,
}

impl KillOnDrop {
    fn kill_now(&mut self) {
        // Without a runtime (the process is ending) the connection closes
        // with it, and bangerd kills the command when its client goes.
        if let Some(id) = self.exec_id.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let daemon = self.daemon.clone();
            rt.spawn(async move {
                let _ = daemon.exec_signal(id, libc::SIGKILL).await;
            });
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Runs a guest command to its end, within `bounds`. `Err` is a failure
/// to run it, or a cancellation (the command is killed).
pub(crate) async fn run(
    daemon: &Arc<Client>,
    params: ExecParams,
    stdin: Option<Vec<u8>>,
    bounds: Bounds,
    progress: Option<Progress>,
    ct: &CancellationToken,
) -> Result<Ran, String> {
    let started = Instant::now();
    let vm = params.vm.clone();
    let mut sub = daemon
        .vm_exec(ExecParams {
            stdin: stdin.is_some(),
            ..params
        })
        .await
        .map_err(crate::client::daemon_error)?;
    let mut guard = KillOnDrop {
        daemon: daemon.clone(),
        exec_id: None,
    };
    let mut out = Capture::new(bounds.head, bounds.tail);
    let mut err = Capture::new(bounds.head, bounds.tail);
    let deadline = tokio::time::Instant::now() + bounds.timeout;
    let mut timed_out = false;
    let mut seen = 0u64;
    loop {
        let ev = tokio::select! {
            ev = sub.next() => ev,
            _ = ct.cancelled() => {
                guard.kill_now();
                return Err("cancelled: the command was killed".into());
            }
            _ = tokio::time::sleep_until(deadline), if !timed_out => {
                timed_out = true;
                if let Some(id) = guard.exec_id {
                    let _ = daemon.exec_signal(id, libc::SIGKILL).await;
                }
                continue;
            }
        };
        let ev = ev
            .ok_or_else(|| format!("bangerd closed the command's stream (vm {vm})"))?
            .map_err(|e| format!("bangerd: {e}"))?;
        let (data, stream) = match ev {
            ExecEvent::Started { exec_id, .. } => {
                guard.exec_id = Some(exec_id);
                if let Some(input) = &stdin {
                    feed(daemon, exec_id, input).await?;
                }
                continue;
            }
            ExecEvent::Stdout { data } => (data, 1),
            ExecEvent::Stderr { data } => (data, 2),
            ExecEvent::Exited { code, signal, .. } => {
                guard.exec_id = None;
                let status = banger_agent::protocol::ExitStatus { code, signal };
                return Ok(Ran {
                    exit_code: status.shell_code(),
                    stdout: out,
                    stderr: err,
                    timed_out,
                    elapsed: started.elapsed(),
                });
            }
            ExecEvent::Failed { message, .. } => {
                guard.exec_id = None;
                return Err(message);
            }
        };
        let bytes = B64.decode(data).unwrap_or_default();
        seen += bytes.len() as u64;
        if let Some(p) = &progress {
            // Progress carries the output as it comes, a bounded piece
            // per chunk; the result has the whole (bounded) output.
            let piece = &bytes[..bytes.len().min(4096)];
            let _ = p
                .peer
                .notify_progress(
                    ProgressNotificationParam::new(p.token.clone(), seen as f64)
                        .with_message(String::from_utf8_lossy(piece)),
                )
                .await;
        }
        if stream == 1 {
            out.push(&bytes);
        } else {
            err.push(&bytes);
        }
    }
}

/// Writes `input` to a command's stdin and closes it.
async fn feed(daemon: &Client, exec_id: u64, input: &[u8]) -> Result<(), String> {
    for chunk in input.chunks(256 << 10) {
        daemon
            .exec_input(exec_id, Some(B64.encode(chunk)), false)
            .await
            .map_err(crate::client::daemon_error)?;
    }
    daemon
        .exec_input(exec_id, None, true)
        .await
        .map_err(crate::client::daemon_error)
}

/// The guest side of the file tools: `sh -c SCRIPT banger-mcp ROOT ARGS..`.
/// Each resolves the path in the guest (following links) and refuses with
/// exit code 3 what is not inside the workspace `ROOT`.
const INSIDE: &str = r#"set -eu
root=$(realpath -e -- "$1") || { echo "the workspace $1 is missing in the guest" >&2; exit 3; }
inside() {
  case "$1" in "$root"|"$root"/*) ;; *) echo "$2 resolves outside the workspace (to $1); refused" >&2; exit 3;; esac
  case "$1" in "$root"/.git|"$root"/.git/*) [ "${3-}" = write ] && { echo "$2 resolves into .git; refused" >&2; exit 3; } ;; esac
  return 0
}
"#;

/// `ROOT PATH MAX`: the size, a newline, then at most MAX bytes.
pub(crate) fn read_script() -> String {
    format!(
        r#"{INSIDE}p=$(realpath -e -- "$root/$2" 2>/dev/null) || {{ echo "no such file in the workspace: $2" >&2; exit 3; }}
inside "$p" "$2"
[ -f "$p" ] || {{ echo "$2 is not a regular file" >&2; exit 3; }}
stat -c %s -- "$p"
head -c "$3" -- "$p"
"#
    )
}

/// `ROOT PATH MODE`, the content on stdin.
pub(crate) fn write_script() -> String {
    format!(
        r#"{INSIDE}d=$(realpath -m -- "$root/$(dirname -- "$2")")
inside "$d" "$2" write
t=$(realpath -m -- "$d/$(basename -- "$2")")
inside "$t" "$2" write
[ -d "$t" ] && {{ echo "$2 is a directory" >&2; exit 3; }}
mkdir -p -- "$d"
cat > "$t"
chmod "$3" -- "$t"
"#
    )
}

/// `ROOT DIR DEPTH LIMIT`: `KIND\tSIZE\tPATH\0` entries.
pub(crate) fn list_script() -> String {
    format!(
        r#"{INSIDE}p=$(realpath -e -- "$root/$2" 2>/dev/null) || {{ echo "no such directory in the workspace: $2" >&2; exit 3; }}
inside "$p" "$2"
[ -d "$p" ] || {{ echo "$2 is not a directory" >&2; exit 3; }}
cd "$p"
find . -mindepth 1 -maxdepth "$3" -name .git -prune -o -printf '%y\t%s\t%P\0' | head -z -n "$4"
"#
    )
}

/// `ROOT PATH LIMIT FLAGS PATTERN`: `FILE\0LINE:TEXT` lines.
pub(crate) fn search_script() -> String {
    format!(
        r#"{INSIDE}p=$(realpath -e -- "$root/$2" 2>/dev/null) || {{ echo "no such file or directory in the workspace: $2" >&2; exit 3; }}
inside "$p" "$2"
cd "$root"
rel=.${{p#"$root"}}
grep -rnIZ --exclude-dir=.git $4 -e "$5" -- "$rel" | head -n "$3" || true
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_keeps_head_and_tail_and_counts_the_rest() {
        let mut c = Capture::new(4, 4);
        c.push(b"0123");
        assert!(!c.truncated());
        c.push(b"456789ab");
        assert!(c.truncated());
        assert_eq!(c.text(), "0123\n[... 4 bytes left out ...]\n89ab");
        c.push(b"c");
        assert_eq!(c.text(), "0123\n[... 5 bytes left out ...]\n9abc");
        let mut h = Capture::new(3, 0);
        h.push(b"abcdef");
        assert_eq!(h.head(), b"abc");
        assert!(h.truncated());
    }

    /// The scripts run as they are under a real shell, against a real
    /// tree with a link out of it.
    #[test]
    fn file_scripts_refuse_links_out_of_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.txt"), "hello\n").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("host")).unwrap();
        let sh = |script: String, args: &[&str], stdin: &[u8]| {
            use std::io::Write as _;
            #[allow(clippy::disallowed_methods)] // a test runs its own shell
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg("banger-mcp")
                .arg(&root)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            let o = child.wait_with_output().unwrap();
            (
                o.status.code().unwrap(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        let (code, out, _) = sh(read_script(), &["src/a.txt", "100"], b"");
        assert_eq!((code, out.as_str()), (0, "6\nhello\n"));
        let (code, _, err) = sh(read_script(), &["host", "100"], b"");
        assert_eq!(code, REFUSED, "{err}");
        assert!(err.contains("outside the workspace"), "{err}");
        let (code, _, err) = sh(write_script(), &["etc/x", "644"], b"x");
        assert_eq!(code, REFUSED, "{err}");
        assert!(!std::path::Path::new("/etc/x").exists());
        let (code, _, err) = sh(write_script(), &["new/dir/b.txt", "755"], b"data");
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read(root.join("new/dir/b.txt")).unwrap(), b"data");
        let (code, out, _) = sh(list_script(), &[".", "1", "10"], b"");
        assert_eq!(code, 0);
        let mut names: Vec<&str> = out
            .split('\0')
            .filter(|e| !e.is_empty())
            .map(|e| e.rsplit('\t').next().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["etc", "host", "new", "src"]);
        let (code, out, _) = sh(search_script(), &[".", "10", "-F", "hello"], b"");
        assert_eq!(code, 0);
        assert_eq!(out, "./src/a.txt\u{0}1:hello\n");
        let (code, _, _) = sh(search_script(), &["etc", "10", "-F", "root"], b"");
        assert_eq!(code, REFUSED);
    }
}
