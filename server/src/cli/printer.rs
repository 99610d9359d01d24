//! All user-facing output goes through here: it knows whether stderr is a
//! terminal (one rewriting status line) or not (plain lines), verbosity and
//! `NO_COLOR`. A closed stdout pipe is not an error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// The one printer of a CLI invocation.
pub struct Printer {
    tty: bool,
    verbose: bool,
    color: bool,
    status_line: Mutex<bool>,
}

impl Printer {
    /// Looks at the terminal and the environment.
    pub fn new(verbose: bool) -> Printer {
        let tty = std::io::stderr().is_terminal();
        Printer {
            tty,
            verbose,
            color: tty && std::env::var_os("NO_COLOR").is_none(),
            status_line: Mutex::new(false),
        }
    }

    /// Progress of a long operation: rewrites one line on a terminal, plain
    /// lines when piped or verbose.
    pub fn progress(&self, message: &str) {
        let mut shown = self.status_line.lock().unwrap_or_else(|p| p.into_inner());
        let mut err = std::io::stderr().lock();
        if self.tty && !self.verbose {
            let _ = write!(err, "\r\x1b[2K{} {message}", self.paint("36", "•"));
            *shown = true;
        } else {
            let _ = writeln!(err, "banger: {message}");
        }
        let _ = err.flush();
    }

    /// Removes the status line, before other output or at the end.
    pub fn clear_progress(&self) {
        let mut shown = self.status_line.lock().unwrap_or_else(|p| p.into_inner());
        if *shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            *shown = false;
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

    /// An error on stderr.
    pub fn error(&self, text: &str) {
        self.clear_progress();
        let _ = writeln!(std::io::stderr(), "{} {text}", self.paint("31", "error:"));
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}
