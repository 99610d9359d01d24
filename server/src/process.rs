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
        self.wait_gone(timeout)
    }

    /// Waits (bounded) until the process is gone; whether it is.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
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

/// What a live process uses, from /proc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// User + system CPU time, seconds.
    pub cpu_secs: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

impl ProcessIdentity {
    /// What this process uses now; `None` when it is gone (or another
    /// process has its pid).
    pub fn usage(&self) -> Option<ProcessUsage> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        if parse_start_time(&stat) != Some(self.start_time) {
            return None;
        }
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid)).ok()?;
        let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as u64;
        parse_usage(&stat, &statm, &uptime, ticks, page)
    }
}

/// Usage from the texts of /proc/PID/stat, /proc/PID/statm and
/// /proc/uptime (pure).
fn parse_usage(
    stat: &str,
    statm: &str,
    uptime: &str,
    ticks_per_sec: u64,
    page_size: u64,
) -> Option<ProcessUsage> {
    let fields = fields_after_comm(stat)?;
    // After comm: utime is field 14 (index 11), stime 15 (index 12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let system_up: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let ticks = ticks_per_sec.max(1);
    let started = start as f64 / ticks as f64;
    Some(ProcessUsage {
        uptime_secs: (system_up - started).max(0.0) as u64,
        cpu_secs: (utime + stime) as f64 / ticks as f64,
        rss_bytes: rss_pages * page_size,
    })
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
    fn usage_comes_from_stat_statm_and_uptime() {
        // utime 250 ticks, stime 50, started at tick 1000 (10 s after boot).
        let stat = "77 (qemu-system-x86) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0 1000 0 0";
        let u = parse_usage(stat, "100000 2560 10 1 0 5 0", "130.5 200.0", 100, 4096).unwrap();
        assert_eq!(u.uptime_secs, 120);
        assert!((u.cpu_secs - 3.0).abs() < 1e-9, "{}", u.cpu_secs);
        assert_eq!(u.rss_bytes, 2560 * 4096);
        assert_eq!(parse_usage("garbage", "", "", 100, 4096), None);
    }

    #[test]
    fn own_usage_is_read_and_an_impostor_has_none() {
        let me = ProcessIdentity::of(std::process::id() as i32).unwrap();
        let u = me.usage().unwrap();
        assert!(u.rss_bytes > 0);
        let impostor = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert_eq!(impostor.usage(), None);
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
