//! A small QMP (QEMU Machine Protocol) client: JSON lines over the VM's
//! `qmp.sock`, used to save and restore a guest. Blocking; callers run it
//! off the async workers.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One QMP connection, past the capabilities handshake.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// A QMP call failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket failed.
    #[error("QMP {0}")]
    Io(#[from] std::io::Error),
    /// QEMU answered with an error.
    #[error("QMP {command}: {message}")]
    Refused {
        /// The command.
        command: String,
        /// QEMU's description.
        message: String,
    },
    /// QEMU said something that is not QMP.
    #[error("QMP: unexpected answer {0}")]
    Protocol(String),
    /// A migration failed or did not finish in time.
    #[error("migration {0}")]
    Migration(String),
}

impl Qmp {
    /// Connects and negotiates capabilities; each answer must come within
    /// `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value (events in between
    /// are skipped).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let message = self.read_message()?;
            if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(QmpError::Refused {
                    command: command.to_string(),
                    message: error
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no description")
                        .to_string(),
                });
            }
            if message.get("event").is_none() {
                return Err(QmpError::Protocol(message.to_string()));
            }
        }
    }

    /// Turns a migration capability on or off.
    pub fn set_capability(&mut self, name: &str, state: bool) -> Result<(), QmpError> {
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": [{ "capability": name, "state": state }] })),
        )
        .map(|_| ())
    }

    /// Polls `query-migrate` until the migration (outgoing or incoming)
    /// completed; an error or `deadline` passing is an error.
    pub fn wait_migration(&mut self, deadline: Instant) -> Result<(), QmpError> {
        loop {
            let status = self.execute("query-migrate", None)?;
            match status.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    return Err(QmpError::Migration(
                        status
                            .get("error-desc")
                            .and_then(Value::as_str)
                            .unwrap_or("failed without a reason")
                            .to_string(),
                    ));
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(QmpError::Migration(format!(
                    "did not complete in time (last status: {status})"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        // A QMP message is one line; bound it all the same.
        let n = std::io::Read::take(&mut self.reader, 1 << 20).read_line(&mut line)?;
        if n == 0 {
            return Err(QmpError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QEMU closed the QMP socket",
            )));
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol(line.trim().to_string()))
    }
}

/// A migration URI that runs `command` on `path` through QEMU's
/// `/bin/sh -c`: the path is single-quoted, and a path that holds a quote
/// is refused rather than escaped.
pub fn exec_uri(command: &str, path: &Path) -> Result<String, QmpError> {
    let text = path.display().to_string();
    if text.contains('\'') || text.contains('\n') {
        return Err(QmpError::Migration(format!(
            "cannot use a path with a quote or a newline: {text:?}"
        )));
    }
    Ok(format!("exec:{command} '{text}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_uris_quote_the_path_and_refuse_quotes() {
        assert_eq!(
            exec_uri("cat >", Path::new("/a b/state")).unwrap(),
            "exec:cat > '/a b/state'"
        );
        assert!(exec_uri("cat", Path::new("/a'b")).is_err());
        assert!(exec_uri("cat", Path::new("/a\nb")).is_err());
    }
}
