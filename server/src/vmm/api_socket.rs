//! A minimal blocking HTTP/1.1 client over a unix socket, enough for a VMM's
//! control API (Firecracker's): one request per connection, JSON bodies,
//! `Content-Length` responses.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// What the API answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response body (possibly empty).
    pub body: String,
}

impl ApiResponse {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Firecracker's error text (`fault_message`), or the raw body.
    pub fn fault_message(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("fault_message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| self.body.trim().to_string())
    }
}

/// Sends one request and reads the whole response.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<ApiResponse> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n"
    );
    if !body.is_empty() || matches!(method, "PUT" | "PATCH" | "POST") {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    read_response(BufReader::new(stream))
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Parses a response; bodies are bounded (a VMM's answers are small).
fn read_response(mut r: impl BufRead) -> std::io::Result<ApiResponse> {
    const MAX_BODY: usize = 1 << 20;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {:?}", line.trim())))?;
    let mut length: Option<usize> = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = Some(v.trim().parse().map_err(|_| bad("bad content-length"))?);
        }
    }
    let mut body = Vec::new();
    // No body, whatever the connection does next (Firecracker answers 204
    // without a length and keeps the connection open).
    let bodyless = status == 204 || status == 304 || (100..200).contains(&status);
    match length {
        _ if bodyless => {}
        Some(n) if n > MAX_BODY => return Err(bad(format!("response body of {n} bytes"))),
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.take(MAX_BODY as u64).read_to_end(&mut body)?;
        }
    }
    Ok(ApiResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn parses_responses() {
        let r = read_response(
            &b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 33\r\n\r\n{\"fault_message\":\"bad vcpu\"}\n    "[..],
        )
        .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.fault_message(), "bad vcpu");
        // As Firecracker answers: 204 with no length on a kept-alive
        // connection; reading must not wait for more.
        let r = read_response(
            &b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"[..],
        )
        .unwrap();
        assert!(r.is_success());
        assert_eq!(r.body, "");
        assert!(read_response(&b"garbage\r\n\r\n"[..]).is_err());
    }

    #[test]
    fn talks_to_a_unix_socket_server() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            // Read headers and the 12-byte body.
            while !String::from_utf8_lossy(&got).contains("\r\n\r\n{\"a\":\"b  c\"}") {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            // Like Firecracker: no length, connection kept open until the
            // client is done.
            s.write_all(b"HTTP/1.1 204 \r\nConnection: keep-alive\r\n\r\n")
                .unwrap();
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
            String::from_utf8(got).unwrap()
        });
        let resp = request(
            &sock,
            "PUT",
            "/machine-config",
            Some("{\"a\":\"b  c\"}"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(resp.status, 204);
        done_tx.send(()).unwrap();
        let sent = server.join().unwrap();
        assert!(
            sent.starts_with("PUT /machine-config HTTP/1.1\r\n"),
            "{sent}"
        );
        assert!(sent.contains("Content-Length: 12\r\n"), "{sent}");
    }
}
