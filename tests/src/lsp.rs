//! A small, real LSP client for the tests: it starts `banger lsp`, speaks
//! the base protocol (Content-Length framing, JSON-RPC 2.0) over its
//! stdin/stdout, answers the server's requests as an editor would
//! (`workspace/applyEdit` is applied to the files on disk), and keeps every
//! notification for the test to look through.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What the client answers to `workspace/applyEdit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnApplyEdit {
    /// Apply it to the files on disk and say so.
    Apply,
    /// Decline it.
    Decline,
}

/// A running `banger lsp` and its client.
pub struct LspClient {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Value>,
    next_id: i64,
    /// Every notification received, in order.
    pub notifications: Vec<Value>,
    /// Every `workspace/applyEdit` received.
    pub edits: Vec<Value>,
    /// How `workspace/applyEdit` is answered.
    pub on_apply_edit: OnApplyEdit,
    queued: VecDeque<Value>,
}

fn write_message(w: &mut impl Write, msg: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg)?;
    write!(w, "Content-Length: {}\r\n\r\n", body.len())?;
    w.write_all(&body)?;
    w.flush()
}

fn read_message(r: &mut impl BufRead) -> Option<Value> {
    let mut len = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            len = v.parse::<usize>().ok();
        }
    }
    let mut body = vec![0; len?];
    r.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The file URI of a path.
pub fn uri(path: &Path) -> String {
    let mut s = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The path of a file URI.
pub fn path_of(uri: &str) -> PathBuf {
    let raw = uri.strip_prefix("file://").unwrap_or(uri);
    let mut out = Vec::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&raw[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Applies LSP text edits (UTF-16 positions) to a text.
fn apply_text_edits(text: &str, edits: &[Value]) -> String {
    let offset = |line: u64, character: u64| -> usize {
        let mut pos = 0;
        for (i, l) in text.split_inclusive('\n').enumerate() {
            if i as u64 == line {
                let mut units = 0u64;
                for (bi, c) in l.char_indices() {
                    if units >= character || c == '\n' {
                        return pos + bi;
                    }
                    units += c.len_utf16() as u64;
                }
                return pos + l.len();
            }
            pos += l.len();
        }
        text.len()
    };
    let mut spans: Vec<(usize, usize, String)> = edits
        .iter()
        .map(|e| {
            let r = &e["range"];
            let s = offset(
                r["start"]["line"].as_u64().unwrap(),
                r["start"]["character"].as_u64().unwrap(),
            );
            let en = offset(
                r["end"]["line"].as_u64().unwrap(),
                r["end"]["character"].as_u64().unwrap(),
            );
            (s, en, e["newText"].as_str().unwrap().to_string())
        })
        .collect();
    spans.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut out = text.to_string();
    for (s, e, t) in spans {
        out.replace_range(s..e, &t);
    }
    out
}

/// Applies a `WorkspaceEdit` to the files on disk, as an editor would on
/// acceptance.
pub fn apply_workspace_edit(edit: &Value) {
    let Some(changes) = edit["documentChanges"].as_array() else {
        return;
    };
    for op in changes {
        match op["kind"].as_str() {
            Some("create") => {
                let p = path_of(op["uri"].as_str().unwrap());
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d).unwrap();
                }
                if !p.exists() {
                    std::fs::write(&p, "").unwrap();
                }
            }
            Some("delete") => {
                let _ = std::fs::remove_file(path_of(op["uri"].as_str().unwrap()));
            }
            Some(other) => panic!("unexpected resource operation {other}"),
            None => {
                let p = path_of(op["textDocument"]["uri"].as_str().unwrap());
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let edits = op["edits"].as_array().unwrap();
                std::fs::write(&p, apply_text_edits(&text, edits)).unwrap();
            }
        }
    }
}

impl LspClient {
    /// Starts `banger lsp` with `cmd` (already carrying the environment).
    pub fn start(mut cmd: Command) -> LspClient {
        let mut child = cmd
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("banger lsp starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            while let Some(msg) = read_message(&mut r) {
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
        LspClient {
            child,
            stdin,
            rx,
            next_id: 0,
            notifications: Vec::new(),
            edits: Vec::new(),
            on_apply_edit: OnApplyEdit::Apply,
            queued: VecDeque::new(),
        }
    }

    /// Sends a notification.
    pub fn notify(&mut self, method: &str, params: Value) {
        write_message(
            &mut self.stdin,
            &json!({"jsonrpc": "2.0", "method": method, "params": params}),
        )
        .unwrap();
    }

    /// Sends a request; returns its id.
    pub fn send_request(&mut self, method: &str, params: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        write_message(
            &mut self.stdin,
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .unwrap();
        id
    }

    /// Handles one message from the server: answers its requests, keeps
    /// notifications; returns responses to the caller.
    fn handle(&mut self, msg: Value) -> Option<Value> {
        let method = msg.get("method").and_then(|m| m.as_str()).map(String::from);
        match (msg.get("id").cloned(), method) {
            (Some(id), Some(method)) => {
                let result = match method.as_str() {
                    "workspace/applyEdit" => {
                        self.edits.push(msg["params"].clone());
                        match self.on_apply_edit {
                            OnApplyEdit::Apply => {
                                apply_workspace_edit(&msg["params"]["edit"]);
                                json!({"applied": true})
                            }
                            OnApplyEdit::Decline => {
                                json!({"applied": false, "failureReason": "declined by the test"})
                            }
                        }
                    }
                    "window/showMessageRequest" => json!({"title": "Apply"}),
                    _ => Value::Null,
                };
                write_message(
                    &mut self.stdin,
                    &json!({"jsonrpc": "2.0", "id": id, "result": result}),
                )
                .unwrap();
                None
            }
            (None, Some(_)) => {
                self.notifications.push(msg);
                None
            }
            _ => Some(msg),
        }
    }

    /// Waits for the response to request `id`.
    pub fn response(&mut self, id: i64, timeout: Duration) -> Result<Value, Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.queued.iter().position(|m| m["id"] == id) {
                let msg = self.queued.remove(pos).unwrap();
                return match msg.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(msg["result"].clone()),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no response to request {id} within {timeout:?}"));
            if let Some(resp) = self.handle(msg) {
                self.queued.push_back(resp);
            }
        }
    }

    /// A request and its response.
    pub fn request(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, Value> {
        let id = self.send_request(method, params);
        self.response(id, timeout)
    }

    /// `workspace/executeCommand`.
    pub fn command(
        &mut self,
        command: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, Value> {
        self.request(
            "workspace/executeCommand",
            json!({"command": command, "arguments": args}),
            timeout,
        )
    }

    /// Processes messages until a notification satisfies `pred` (looking
    /// at those that arrive from now on, after `from`); returns it.
    pub fn wait_notification(
        &mut self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut seen = from;
        loop {
            while seen < self.notifications.len() {
                if pred(&self.notifications[seen]) {
                    return self.notifications[seen].clone();
                }
                seen += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(msg) => {
                    if let Some(resp) = self.handle(msg) {
                        self.queued.push_back(resp);
                    }
                }
                Err(_) => panic!(
                    "no matching notification within {timeout:?}; last ones: {:#?}",
                    &self.notifications[self.notifications.len().saturating_sub(8)..]
                ),
            }
        }
    }

    /// Handles whatever the server sends for `d` (answering its requests).
    pub fn pump(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.rx.recv_timeout(left) {
                Ok(msg) => {
                    if let Some(resp) = self.handle(msg) {
                        self.queued.push_back(resp);
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// The latest `banger/status`.
    pub fn status(&self) -> Option<Value> {
        self.notifications
            .iter()
            .rev()
            .find(|n| n["method"] == "banger/status")
            .map(|n| n["params"].clone())
    }

    /// Ends the session politely.
    pub fn shutdown(mut self) {
        let _ = self.request("shutdown", Value::Null, Duration::from_secs(10));
        self.notify("exit", Value::Null);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("banger lsp did not exit after shutdown/exit");
    }
}

impl Drop for LspClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_edits_apply_by_utf16_positions() {
        let e = json!([{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 2}}, "newText": "X"}]);
        assert_eq!(
            apply_text_edits("ab\ncd\nef", e.as_array().unwrap()),
            "X\nef"
        );
        assert_eq!(path_of(&uri(Path::new("/a b/c"))), Path::new("/a b/c"));
    }
}
