//! All user-facing output goes through here: it knows whether stderr is a
//! terminal (one rewriting status line) or not (plain lines), verbosity,
//! `--json`, `NO_COLOR` and `BANGER_NO_PROGRESS=1` (plain progress lines
//! even on a terminal). A progress line equal to the previous one is not
//! printed again. A closed stdout pipe is not an error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// The one printer of a CLI invocation.
pub struct Printer {
    tty: bool,
    verbose: bool,
    json: bool,
    color: bool,
    status: Mutex<Status>,
}

/// What the progress output shows now.
#[derive(Debug, Default)]
struct Status {
    /// A rewriting status line is on the terminal.
    shown: bool,
    /// The last progress message printed.
    last: Option<String>,
}

impl Status {
    /// Whether `message` is news (not the line printed just before);
    /// records it.
    fn is_new(&mut self, message: &str) -> bool {
        if self.last.as_deref() == Some(message) {
            return false;
        }
        self.last = Some(message.to_string());
        true
    }
}

impl Printer {
    /// Looks at the terminal and the environment.
    pub fn new(verbose: bool, json: bool) -> Printer {
        let tty = std::io::stderr().is_terminal();
        let plain =
            std::env::var_os("BANGER_NO_PROGRESS").is_some_and(|v| !v.is_empty() && v != "0");
        Printer {
            tty,
            verbose: verbose || plain,
            json,
            color: tty && std::env::var_os("NO_COLOR").is_none(),
            status: Mutex::new(Status::default()),
        }
    }

    /// Whether results are printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// A value as pretty JSON on stdout.
    pub fn json_value<T: serde::Serialize>(&self, value: &T) {
        self.line(&serde_json::to_string_pretty(value).unwrap_or_default());
    }

    /// Progress of a long operation: rewrites one line on a terminal, plain
    /// lines when piped or verbose.
    pub fn progress(&self, message: &str) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if !status.is_new(message) {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty && !self.verbose {
            let _ = write!(err, "\r\x1b[2K{} {message}", self.paint("36", "•"));
            status.shown = true;
        } else {
            let _ = writeln!(err, "banger: {message}");
        }
        let _ = err.flush();
    }

    /// Removes the status line, before other output or at the end.
    pub fn clear_progress(&self) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if status.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            status.shown = false;
        }
    }

    /// A line of the command's result on stdout.
    pub fn line(&self, text: &str) {
        self.clear_progress();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    }

    /// Raw bytes on stdout (guest output, passed through verbatim).
    pub fn stdout_bytes(&self, bytes: &[u8]) {
        self.clear_progress();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }

    /// Raw bytes on stderr (guest output, passed through verbatim).
    pub fn stderr_bytes(&self, bytes: &[u8]) {
        self.clear_progress();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    }

    /// A note for the user on stderr.
    pub fn note(&self, text: &str) {
        self.clear_progress();
        let _ = writeln!(std::io::stderr(), "{text}");
    }

    /// An error on stderr; with `--json`, `{"error": {"code", "message"}}`
    /// on stdout, where a script reads the result.
    pub fn error(&self, code: &str, text: &str) {
        self.clear_progress();
        if self.json {
            self.json_value(&serde_json::json!({"error": {"code": code, "message": text}}));
        } else {
            let _ = writeln!(std::io::stderr(), "{} {text}", self.paint("31", "error:"));
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_equal_to_the_previous_is_not_repeated() {
        let mut s = Status::default();
        assert!(s.is_new("booting guest"));
        assert!(!s.is_new("booting guest"));
        assert!(s.is_new("creating disks"));
        assert!(s.is_new("booting guest"));
    }
}
