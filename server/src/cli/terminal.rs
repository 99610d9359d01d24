//! The host terminal for interactive guest sessions: its size, and raw
//! mode (every keystroke, Ctrl-C included, goes to the guest) restored when
//! the session ends however it ends.

use std::io::IsTerminal;

use nix::sys::termios::{self, SetArg, Termios};

use crate::api::Terminal;

/// The size of the terminal on stdin, if it is one.
pub(crate) fn size() -> Option<Terminal> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the pointer, which is
    // valid for the call.
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some(Terminal {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Raw mode on stdin until dropped.
pub(crate) struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enters raw mode when stdin is a terminal.
    pub(crate) fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
