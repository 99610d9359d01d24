//! Identifying VMM processes that banger does not parent.
//!
//! VMM processes are detached from the daemon on purpose (they outlive it),
//! so they are tracked by pid plus start time: a recycled pid has another
//! start time and is never mistaken for our VMM.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process, as it was when first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks after boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
}

impl ProcessIdentity {
    /// Reads the identity of a live process.
    pub fn of(pid: i32) -> Option<ProcessIdentity> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(ProcessIdentity {
            pid,
            start_time: parse_start_time(&stat)?,
        })
    }

    /// Whether this very process still exists (zombies count as gone).
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        parse_start_time(&stat) == Some(self.start_time) && parse_state(&stat) != Some('Z')
    }

    /// Sends a signal if the process is still this one.
    pub fn signal(&self, signal: Signal) -> bool {
        self.is_alive() && kill(Pid::from_raw(self.pid), signal).is_ok()
    }

    /// SIGKILLs the process and waits (bounded) until it is gone.
    pub fn kill_and_wait(&self, timeout: Duration) -> bool {
        self.signal(Signal::SIGKILL);
        let deadline = Instant::now() + timeout;
        while self.is_alive() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// The comm field may hold spaces and parentheses; fields after it are
/// counted from the last ')'.
fn fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    let end = stat.rfind(')')?;
    Some(stat[end + 1..].split_whitespace().collect())
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // After comm: state is field 3, starttime field 22 -> index 19.
    fields_after_comm(stat)?.get(19)?.parse().ok()
}

fn parse_state(stat: &str) -> Option<char> {
    fields_after_comm(stat)?.first()?.chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let stat = "1234 (qemu (x) y) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_state(stat), Some('S'));
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessIdentity::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let impostor = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive());
    }

    #[test]
    fn a_killed_child_is_gone() {
        let mut child = crate::tool::for_test(crate::tool::Tool::Sleep)
            .arg("30")
            .spawn()
            .unwrap();
        let id = ProcessIdentity::of(child.id() as i32).unwrap();
        assert!(id.is_alive());
        id.signal(Signal::SIGKILL);
        child.wait().unwrap();
        assert!(!id.is_alive());
    }
}
