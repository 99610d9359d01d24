//! The lifecycle verbs beyond create/start/stop/delete: restart, kill,
//! prune, set, logs and stats. Each takes the VM's lock for what it
//! changes, as `vm.rs` does, so none races a start or a delete.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::vm::not_running;
use super::{Daemon, OpError, Progress};
use crate::api::{DiskStats, SetParams, VmLogs, VmStats, code};
use crate::disk::{OverlayRoot, WorkDisk};
use crate::process::ProcessIdentity;
use crate::spec::VmSpec;
use crate::store::{VmRecord, VmState};

/// How long a VMM gets to exit after a signal other than SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// The most one `vm_logs` call returns of each log.
const MAX_LOG_CHUNK: u64 = 1 << 20;

/// Whether `vm prune` deletes a VM in this state: only VMs with no
/// process and no operation in flight (pure).
pub(crate) fn prunable(state: VmState) -> bool {
    matches!(state, VmState::Stopped | VmState::Error)
}

/// Whether a daemon log line is about this VM: its `vm=` field names it,
/// or the line carries its id (pure).
pub(crate) fn line_is_about(line: &str, name: &str, id: &str) -> bool {
    let field = format!("vm={name}");
    let named = line.match_indices(&field).any(|(i, _)| {
        let before_ok = i == 0 || line.as_bytes()[i - 1] == b' ';
        let after = line.as_bytes().get(i + field.len());
        before_ok && after.is_none_or(|b| *b == b' ')
    });
    named || line.contains(id)
}

/// Reads `path` from `from` on (at most [`MAX_LOG_CHUNK`]); a file now
/// shorter than `from` was replaced, so it is read from its start. With
/// `whole_lines`, stops after the last complete line. Returns the text and
/// the next offset.
fn read_from(path: &Path, from: u64, whole_lines: bool) -> (Vec<u8>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = if from > len { 0 } else { from };
    if f.seek(SeekFrom::Start(start)).is_err() {
        return (Vec::new(), start);
    }
    let mut buf = Vec::new();
    let _ = f.take(MAX_LOG_CHUNK).read_to_end(&mut buf);
    if whole_lines {
        match buf.iter().rposition(|b| *b == b'\n') {
            Some(i) => buf.truncate(i + 1),
            None => buf.clear(),
        }
    }
    let next = start + buf.len() as u64;
    (buf, next)
}

impl Daemon {
    /// Reboots a running VM: the guest flushes, the VMM ends, and the VM
    /// starts again on the same disks (a new boot id, `/root` kept).
    pub(crate) async fn restart_vm(
        self: &Arc<Self>,
        name_or_id: &str,
        progress: &Progress,
    ) -> Result<VmRecord, OpError> {
        let vm = self.find(name_or_id)?;
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        let mut vm = self.refresh(self.find(&vm.id)?)?;
        if vm.state != VmState::Running {
            return Err(not_running(&vm));
        }
        tracing::info!(vm = %vm.name, "restarting");
        progress.say(&format!("stopping {}", vm.name));
        self.stop_locked(&mut vm).await?;
        self.start_vm_locked(vm, super::boot::Boot::Cold, progress)
            .await
    }

    /// Sends `signal` to a VM's VMM (no flush: this is for a guest that
    /// does not answer), SIGKILL after [`KILL_GRACE`]; the VM ends
    /// `stopped` with its runtime files removed.
    pub(crate) async fn kill_vm(
        self: &Arc<Self>,
        name_or_id: &str,
        signal: i32,
    ) -> Result<VmRecord, OpError> {
        let signal = Signal::try_from(signal).map_err(|_| {
            OpError::new(
                code::INVALID,
                format!("invalid signal {signal}; use a name like KILL or TERM, or a number"),
            )
        })?;
        let vm = self.find(name_or_id)?;
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        let mut vm = self.refresh(self.find(&vm.id)?)?;
        let identity = match (vm.pid, vm.pid_start_time) {
            (Some(pid), Some(start_time)) if vm.state.may_have_process() => {
                ProcessIdentity { pid, start_time }
            }
            _ => return Err(not_running(&vm)),
        };
        tracing::info!(vm = %vm.name, pid = identity.pid, "killing the vmm with {signal}");
        if signal != Signal::SIGKILL {
            let exited = tokio::task::spawn_blocking(move || {
                identity.signal(signal);
                let deadline = std::time::Instant::now() + KILL_GRACE;
                while identity.is_alive() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                !identity.is_alive()
            })
            .await
            .unwrap_or(false);
            if !exited {
                tracing::warn!(vm = %vm.name, "the vmm outlived {signal} for {KILL_GRACE:?}; sending SIGKILL");
            }
        }
        // SIGKILL (again, if needed), runtime files, agent connection.
        self.end_process(&mut vm).await?;
        vm.state = VmState::Stopped;
        vm.last_error = None;
        self.with_store(|s| s.update_vm(&vm))?;
        tracing::info!(vm = %vm.name, "killed; stopped");
        Ok(vm)
    }

    /// Deletes the named VMs that are not running (see [`prunable`]),
    /// each decided under its lock; returns the names deleted.
    pub(crate) async fn prune_vms(&self, names: &[String]) -> Result<Vec<String>, OpError> {
        let mut deleted = Vec::new();
        for name in names {
            let vm = match self.find(name) {
                Ok(vm) => vm,
                Err(e) if e.code == code::NOT_FOUND => continue,
                Err(e) => return Err(e),
            };
            let lock = self.vm_lock(&vm.id);
            let guard = lock.lock().await;
            let Some(vm) = self.with_store(|s| s.find_vm(&vm.id))? else {
                continue;
            };
            let vm = self.refresh(vm)?;
            if !prunable(vm.state) {
                tracing::info!(vm = %vm.name, "prune keeps it: {}", vm.state);
                continue;
            }
            let name = vm.name.clone();
            self.delete_locked(vm).await?;
            drop(guard);
            deleted.push(name);
        }
        Ok(deleted)
    }

    /// Changes a stopped VM's vCPUs or memory; the next start uses them.
    pub(crate) async fn set_vm(&self, params: &SetParams) -> Result<VmRecord, OpError> {
        if params.vcpu.is_none()
            && params.memory_mib.is_none()
            && params.nat.is_none()
            && params.allow.is_none()
        {
            return Err(OpError::new(
                code::INVALID,
                "nothing to change; give --vcpu N, --memory SIZE, --nat, --no-nat or --allow HOST",
            ));
        }
        let allow = params
            .allow
            .as_ref()
            .map(|rules| {
                rules
                    .iter()
                    .map(|a| a.parse::<crate::net::egress::AllowRule>())
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| OpError::new(code::INVALID, e))?;
        let vm = self.find(&params.vm)?;
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        let mut vm = self.refresh(self.find(&vm.id)?)?;
        let resources = params.vcpu.is_some() || params.memory_mib.is_some();
        let network = params.nat.is_some() || allow.is_some();
        // Resources only change on a stopped VM; what the guest may reach
        // also on a running one, at once (its rules are the keeper's).
        if vm.state.may_have_process() && (resources || vm.state != VmState::Running) {
            return Err(OpError::new(
                code::RUNNING,
                format!(
                    "vm {:?} is {}; stop it first (banger vm stop {}), then set it: the change applies at its next start",
                    vm.name, vm.state, vm.name
                ),
            ));
        }
        let spec = VmSpec {
            vcpu: params.vcpu.unwrap_or(vm.spec.vcpu),
            memory_mib: params.memory_mib.unwrap_or(vm.spec.memory_mib),
            ..vm.spec
        };
        spec.validate()
            .map_err(|e| OpError::new(code::INVALID, e.to_string()))?;
        if resources {
            super::vm::fits_the_host(&spec)?;
        }
        // --nat / --no-nat choose anywhere / nothing and drop the rules;
        // --allow replaces the rules (and implies a way out).
        let mut next = vm.clone();
        if let Some(nat) = params.nat {
            next.nat = nat;
            next.allow.clear();
        }
        if let Some(rules) = allow {
            next.nat = next.nat || !rules.is_empty();
            next.allow = rules;
        }
        if network && vm.state == VmState::Running {
            let dir = self.dirs.vm_runtime(&vm.id);
            let egress = next.egress();
            super::offload(|| {
                crate::net::control(&dir, &crate::net::Control::SetEgress { egress })
            })
            .map_err(|e| OpError::internal(e.to_string()))?;
            tracing::info!(vm = %vm.name, "set egress {} (applied now)", next.egress().mode());
        }
        vm.spec = spec;
        vm.nat = next.nat;
        vm.allow = next.allow;
        self.with_store(|s| s.update_vm(&vm))?;
        if resources {
            tracing::info!(
                vm = %vm.name,
                "set vcpu {} memory {} MiB (applies at the next start)",
                spec.vcpu,
                spec.memory_mib
            );
        }
        Ok(vm)
    }

    /// The console log and the daemon's lines about a VM, from offsets.
    pub(crate) fn vm_logs(
        &self,
        name_or_id: &str,
        console_from: u64,
        daemon_from: u64,
        network_from: u64,
    ) -> Result<VmLogs, OpError> {
        let vm = self.find(name_or_id)?;
        let network_log = self.dirs.vm_state(&vm.id).join(crate::net::LOG_FILE);
        let (network, network_next) = read_from(&network_log, network_from, true);
        // The keeper's own lines; pasta's syslog noise left out.
        let network = String::from_utf8_lossy(&network)
            .lines()
            .filter_map(|l| l.strip_prefix("banger-net: "))
            .map(str::to_string)
            .collect();
        let console_log = self.dirs.vm_state(&vm.id).join("console.log");
        let daemon_log = self.dirs.daemon_log();
        let (console, console_next) = read_from(&console_log, console_from, false);
        let (daemon, daemon_next) = read_from(&daemon_log, daemon_from, true);
        let daemon = String::from_utf8_lossy(&daemon)
            .lines()
            .filter(|l| line_is_about(l, &vm.name, &vm.id))
            .map(str::to_string)
            .collect();
        Ok(VmLogs {
            console: String::from_utf8_lossy(&console).into_owned(),
            console_next,
            daemon,
            daemon_next,
            console_log: console_log.display().to_string(),
            daemon_log: daemon_log.display().to_string(),
            network,
            network_next,
        })
    }

    /// State, uptime, CPU time and memory of the VMM, disk bytes used.
    pub(crate) fn vm_stats(&self, name_or_id: &str) -> Result<VmStats, OpError> {
        let vm = self.refresh(self.find(name_or_id)?)?;
        let usage = match (vm.pid, vm.pid_start_time) {
            (Some(pid), Some(start_time)) => ProcessIdentity { pid, start_time }.usage(),
            _ => None,
        };
        let dir = self.dirs.vm_state(&vm.id);
        let disks: Vec<DiskStats> = [
            ("overlay", OverlayRoot::path(&dir)),
            ("work", WorkDisk::path(&dir)),
        ]
        .into_iter()
        .filter_map(|(role, path)| {
            let meta = std::fs::metadata(&path).ok()?;
            Some(DiskStats {
                role: role.to_string(),
                size_bytes: meta.len(),
                used_bytes: crate::disk::allocated_bytes(&path),
                path: path.display().to_string(),
            })
        })
        .collect();
        Ok(VmStats {
            name: vm.name.clone(),
            id: vm.id.clone(),
            state: vm.state.to_string(),
            pid: usage.and(vm.pid),
            uptime_secs: usage.map(|u| u.uptime_secs),
            cpu_secs: usage.map(|u| u.cpu_secs),
            rss_bytes: usage.map(|u| u.rss_bytes),
            disk_used_bytes: disks.iter().map(|d| d.used_bytes).sum(),
            disks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_takes_only_vms_with_no_process_and_no_operation() {
        assert!(prunable(VmState::Stopped));
        assert!(prunable(VmState::Error));
        for kept in [VmState::Running, VmState::Starting, VmState::Stopping] {
            assert!(!prunable(kept), "{kept} would be pruned");
        }
    }

    #[test]
    fn daemon_lines_are_matched_by_vm_field_or_id() {
        let id = "0123456789ab";
        assert!(line_is_about(
            "2026-11-29T23:26:26Z  INFO bangerd: stopped vm=dev",
            "dev",
            id
        ));
        assert!(line_is_about(
            "x INFO bangerd: created vm=dev id=0123456789ab",
            "other",
            id
        ));
        assert!(!line_is_about("x INFO bangerd: stopped vm=dev2", "dev", id));
        assert!(!line_is_about("x INFO bangerd: stopped vm=xdev", "dev", id));
        assert!(!line_is_about("x INFO bangerd: booting guest", "dev", id));
    }

    #[test]
    fn logs_are_read_from_an_offset_in_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "one\ntwo\npart").unwrap();
        let (text, next) = read_from(&p, 0, true);
        assert_eq!((text.as_slice(), next), (&b"one\ntwo\n"[..], 8));
        let (text, next) = read_from(&p, 4, false);
        assert_eq!((text.as_slice(), next), (&b"two\npart"[..], 12));
        // A file shorter than the offset was replaced: from its start.
        std::fs::write(&p, "new\n").unwrap();
        assert_eq!(read_from(&p, 12, true), (b"new\n".to_vec(), 4));
        assert_eq!(
            read_from(&dir.path().join("none"), 5, true),
            (Vec::new(), 0)
        );
    }
}
