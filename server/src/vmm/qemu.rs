//! The QEMU driver: a `microvm` machine with virtio-mmio devices, the agent
//! on a virtio-serial port exposed as a unix socket.
//!
//! QEMU starts with `-daemonize`: the process the daemon spawns exits once
//! the VM is set up (its sockets exist), and the VMM itself runs in its own
//! session, re-parented away from the daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_agent::protocol::SERIAL_PORT_NAME;

use super::qmp::{Qmp, QmpError, exec_uri};
use super::{AgentEndpoint, LaunchPlan, Memory, Vmm, VmmError, base_kernel_args};
use crate::accel::Accel;
use crate::process::ProcessIdentity;

/// Driver name.
pub const NAME: &str = "qemu";

/// QEMU's own log (`-D`), in the VM's state directory.
pub const LOG_FILE: &str = "qemu.log";
const AGENT_SOCKET: &str = "agent.sock";
const QMP_SOCKET: &str = "qmp.sock";
/// QEMU's pid file, in the runtime directory.
pub const PID_FILE: &str = "qemu.pid";

/// The QEMU driver.
pub struct Qemu {
    binary: PathBuf,
}

impl Qemu {
    /// Uses `$BANGER_QEMU` or `qemu-system-x86_64` from `PATH`.
    pub fn from_env() -> Qemu {
        Qemu {
            binary: std::env::var_os("BANGER_QEMU")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64")),
        }
    }

    /// The full argument list for a plan (pure; tested).
    pub fn args(plan: &LaunchPlan) -> Vec<String> {
        let rt = &plan.runtime_dir;
        let p = |f: &str| opt_value(&rt.join(f));
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let machine = "microvm,x-option-roms=off,rtc=on";
        let backend = |path: &Path, share: &str| {
            format!(
                "memory-backend-file,id=ram,size={}M,mem-path={},share={share}",
                plan.memory_mib,
                opt_value(path)
            )
        };
        push(&[
            "-name",
            &format!("banger-{},process=banger-{}", plan.name, plan.name),
        ]);
        // Every guest's memory is the object `ram`, however it began: a
        // snapshot of a running VM names its memory so, and restores into
        // a VM whose memory is named the same.
        let anonymous = format!("memory-backend-ram,id=ram,size={}M", plan.memory_mib);
        match &plan.memory {
            Memory::Anonymous | Memory::Restore { memory: None, .. } => push(&[
                "-M",
                &format!("{machine},memory-backend=ram"),
                "-object",
                &anonymous,
            ]),
            // Shared: the guest's memory is the file, which becomes the
            // snapshot's memory when the template is saved.
            Memory::Template(path) => push(&[
                "-M",
                &format!("{machine},memory-backend=ram"),
                "-object",
                &backend(path, "on"),
            ]),
            // Private: a copy-on-write mapping of the snapshot's file (its
            // pages shared by every VM restored from it, never written),
            // and the device state arrives through QMP.
            Memory::Restore {
                memory: Some(memory),
                ..
            } => push(&[
                "-M",
                &format!("{machine},memory-backend=ram"),
                "-object",
                &backend(memory, "off"),
                "-incoming",
                "defer",
            ]),
        }
        // A running VM's snapshot: its memory is in the stream.
        if let Memory::Restore { memory: None, .. } = &plan.memory {
            push(&["-incoming", "defer"]);
        }
        match plan.accel.accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            // The translation cache: a cold boot translates ~170 MB of
            // host code, so 64 MB was flushed twice before the agent
            // answered and retranslated (~0.2 s of the boot, more in a heavy
            // workload). 256 MB holds a boot; pages are resident only once
            // used (+55 MB RSS at ready, measured), and QEMU's own default
            // (1 GiB) would let a long-lived VM's cache grow further.
            Accel::Tcg => push(&["-accel", "tcg,tb-size=256", "-cpu", "max"]),
        }
        push(&[
            "-m",
            &plan.memory_mib.to_string(),
            "-smp",
            &plan.vcpu.to_string(),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-chardev",
            &format!(
                "file,id=console,path={},append=on",
                opt_value(&plan.console_log)
            ),
            "-serial",
            "chardev:console",
            "-kernel",
            // The uncompressed kernel saves its decompression, which costs
            // ~0.3 s only under emulation; with KVM (PVM guests included,
            // whose entry the PVH path was never tried with) the bzImage.
            &(if plan.boot.pvh && plan.accel.accel == Accel::Tcg {
                &plan.boot.vmlinux
            } else {
                &plan.boot.bzimage
            })
            .display()
            .to_string(),
            "-initrd",
            &plan.boot.initrd.display().to_string(),
            "-append",
            &base_kernel_args(plan).join(" "),
            "-device",
            "virtio-rng-device",
        ]);
        for drive in &plan.drives {
            let id = drive.role.serial();
            let ro = if drive.read_only { ",readonly=on" } else { "" };
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id={id},cache=writeback,discard=unmap{ro}",
                    opt_value(&drive.path)
                ),
                "-device",
                &format!("virtio-blk-device,drive={id},serial={id}"),
            ]);
        }
        if plan.network.is_some() {
            // The keeper's tap, opened by name inside the VM's namespace
            // (no vhost: this host has no vhost-net).
            push(&[
                "-netdev",
                &format!(
                    "tap,id=net0,ifname={},script=no,downscript=no,vhost=off",
                    crate::net::TAP
                ),
                "-device",
                &format!("virtio-net-device,netdev=net0,mac={}", plan.mac),
            ]);
        }
        push(&[
            "-device",
            "virtio-serial-device,id=vser0",
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                p(AGENT_SOCKET)
            ),
            "-device",
            &format!("virtserialport,bus=vser0.0,chardev=agent,name={SERIAL_PORT_NAME}"),
            "-qmp",
            &format!("unix:{},server=on,wait=off", p(QMP_SOCKET)),
            // QEMU's own messages after it daemonized (why it stopped, e.g.
            // "terminating on signal 15 from pid N"), kept with the state.
            "-D",
            &plan
                .console_log
                .with_file_name(LOG_FILE)
                .display()
                .to_string(),
            "-daemonize",
            "-pidfile",
            &rt.join(PID_FILE).display().to_string(),
        ]);
        a
    }
}

/// What QEMU wrote to its log after `offset` (its last 4 KiB at most),
/// trimmed; empty when there is nothing or the log cannot be read.
fn log_since(log: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX: u64 = 4096;
    let Ok(mut file) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = offset.max(len.saturating_sub(MAX));
    let mut bytes = Vec::new();
    if start >= len
        || file.seek(SeekFrom::Start(start)).is_err()
        || file.take(MAX).read_to_end(&mut bytes).is_err()
    {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// A path as a value inside a QEMU option list (`file=...,format=raw`):
/// QEMU reads `,,` as a literal comma, so a comma in a path cannot end the
/// value and inject an option.
fn opt_value(path: &std::path::Path) -> String {
    path.display().to_string().replace(',', ",,")
}

impl Vmm for Qemu {
    fn name(&self) -> &'static str {
        NAME
    }

    fn launch(&self, plan: &LaunchPlan) -> Result<ProcessIdentity, VmmError> {
        let binary = self.binary.display().to_string();
        let pid_file = plan.runtime_dir.join(PID_FILE);
        let _ = std::fs::remove_file(&pid_file);
        // Once `-daemonize` is parsed QEMU sends its stderr to the `-D` log,
        // so a refusal (a locked disk, a bad option) is found there: only
        // what this launch appended counts.
        let log = plan.console_log.with_file_name(LOG_FILE);
        let log_at_start = std::fs::metadata(&log).map_or(0, |m| m.len());
        for sock in [AGENT_SOCKET, QMP_SOCKET] {
            let _ = std::fs::remove_file(plan.runtime_dir.join(sock));
        }
        // -daemonize: this child exits once QEMU is initialised; the VMM
        // runs on in its own session. Nothing here ties it to the caller.
        #[allow(clippy::disallowed_methods)] // the VMM driver spawns its VMM
        let mut cmd = Command::new(&self.binary);
        if let Some(attach) = plan.network {
            super::network::join(&mut cmd, attach)?;
        }
        let out = cmd
            .args(Qemu::args(plan))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    VmmError::Missing {
                        binary: binary.clone(),
                        package: "qemu-system-x86",
                        env: "BANGER_QEMU",
                    }
                } else {
                    VmmError::Failed {
                        binary: binary.clone(),
                        detail: e.to_string(),
                    }
                }
            })?;
        if !out.status.success() {
            let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if detail.is_empty() {
                detail = log_since(&log, log_at_start);
            }
            if detail.is_empty() {
                detail = format!("it exited with {} and said nothing", out.status);
            }
            return Err(VmmError::Failed { binary, detail });
        }
        let pid = read_pid(&pid_file).ok_or_else(|| VmmError::Failed {
            binary: binary.clone(),
            detail: format!("no pid in {}", pid_file.display()),
        })?;
        let identity = ProcessIdentity::of(pid).ok_or_else(|| VmmError::Failed {
            binary: binary.clone(),
            detail: "the VMM exited right after starting".into(),
        })?;
        if let Memory::Restore { state, memory } = &plan.memory
            && let Err(e) = restore(&plan.runtime_dir, state, memory.is_some())
        {
            let _ = identity.kill_and_wait(Duration::from_secs(5));
            return Err(VmmError::Failed {
                binary,
                detail: format!("cannot restore the snapshot: {e}"),
            });
        }
        Ok(identity)
    }

    fn snapshots(&self) -> bool {
        true
    }

    fn snapshot_running(&self, runtime_dir: &Path, state: &Path) -> Result<(), VmmError> {
        let failed = |e: QmpError| VmmError::Failed {
            binary: self.binary.display().to_string(),
            detail: format!("cannot save the guest: {e}"),
        };
        let mut qmp = Qmp::connect(&runtime_dir.join(QMP_SOCKET), QMP_TIMEOUT).map_err(failed)?;
        // Off, whatever a restore of this VM set: its memory travels in
        // the stream, and the stream's format follows the capability.
        qmp.set_capability("x-ignore-shared", false)
            .map_err(failed)?;
        qmp.execute("stop", None).map_err(failed)?;
        let saved = exec_uri("cat >", state).and_then(|uri| {
            qmp.execute("migrate", Some(serde_json::json!({ "uri": uri })))?;
            qmp.wait_migration(std::time::Instant::now() + MIGRATION_TIMEOUT)
        });
        saved.map_err(failed)
    }

    fn resume(&self, runtime_dir: &Path) -> Result<(), VmmError> {
        Qmp::connect(&runtime_dir.join(QMP_SOCKET), QMP_TIMEOUT)
            .and_then(|mut qmp| qmp.execute("cont", None))
            .map(|_| ())
            .map_err(|e| VmmError::Failed {
                binary: self.binary.display().to_string(),
                detail: format!("cannot resume the guest: {e}"),
            })
    }

    fn save(&self, runtime_dir: &Path, _memory: &Path, state: &Path) -> Result<(), VmmError> {
        save(runtime_dir, state).map_err(|e| VmmError::Failed {
            binary: self.binary.display().to_string(),
            detail: format!("cannot save the guest: {e}"),
        })
    }

    fn agent_endpoint(&self, runtime_dir: &Path) -> AgentEndpoint {
        AgentEndpoint::Stream(runtime_dir.join(AGENT_SOCKET))
    }

    fn failure_hint(&self, log_dir: &Path) -> Option<String> {
        let log = std::fs::read_to_string(log_dir.join(LOG_FILE)).ok()?;
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        (!lines.is_empty()).then(|| lines[lines.len().saturating_sub(2)..].join("; "))
    }

    fn version(&self) -> Result<String, String> {
        super::version_of(&self.binary)
    }
}

/// How long one QMP answer, and a whole save or restore, may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Feeds a snapshot's device state to a QEMU started with `-incoming
/// defer`, then lets the guest run. Its memory is not in the stream
/// (`x-ignore-shared`): it is already mapped from the snapshot's file.
fn restore(runtime_dir: &Path, state: &Path, memory_mapped: bool) -> Result<(), QmpError> {
    let mut qmp = Qmp::connect(&runtime_dir.join(QMP_SOCKET), QMP_TIMEOUT)?;
    // The memory is mapped from the snapshot's file, not in the stream.
    if memory_mapped {
        qmp.set_capability("x-ignore-shared", true)?;
    }
    qmp.execute(
        "migrate-incoming",
        Some(serde_json::json!({ "uri": exec_uri("cat", state)? })),
    )?;
    qmp.wait_migration(std::time::Instant::now() + MIGRATION_TIMEOUT)?;
    qmp.execute("cont", None)?;
    Ok(())
}

/// Pauses a template guest, writes its device state (not its memory,
/// which is the shared file) and ends QEMU.
fn save(runtime_dir: &Path, state: &Path) -> Result<(), QmpError> {
    let mut qmp = Qmp::connect(&runtime_dir.join(QMP_SOCKET), QMP_TIMEOUT)?;
    qmp.set_capability("x-ignore-shared", true)?;
    qmp.execute("stop", None)?;
    qmp.execute(
        "migrate",
        Some(serde_json::json!({ "uri": exec_uri("cat >", state)? })),
    )?;
    qmp.wait_migration(std::time::Instant::now() + MIGRATION_TIMEOUT)?;
    // QEMU may close the socket before it answers `quit`.
    let _ = qmp.execute("quit", None);
    Ok(())
}

fn read_pid(path: &Path) -> Option<i32> {
    // QEMU writes the pid file before the parent exits; allow a moment for
    // slow file systems all the same.
    for _ in 0..50 {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::AccelChoice;
    use crate::disk::{Drive, DriveRole};
    use crate::vmm::BootFiles;

    fn plan(accel: Accel) -> LaunchPlan {
        LaunchPlan {
            name: "dev".into(),
            vcpu: 2,
            memory_mib: 1024,
            boot: BootFiles {
                pvh: false,
                bzimage: "/img/vmlinuz".into(),
                vmlinux: "/img/vmlinux".into(),
                initrd: "/img/initrd".into(),
                hz: None,
            },
            kernel_args: vec!["banger.root=overlay".into()],
            drives: vec![
                Drive {
                    role: DriveRole::Rootfs,
                    path: "/img/rootfs.ext4".into(),
                    read_only: true,
                },
                Drive {
                    role: DriveRole::Work,
                    path: "/vm/work.ext4".into(),
                    read_only: false,
                },
            ],
            accel: AccelChoice {
                accel,
                reason: "test".into(),
            },
            tsc_khz: Some(2_600_000),
            runtime_dir: "/run/vm".into(),
            console_log: "/vm/console.log".into(),
            network: None,
            mac: crate::net::GUEST_MAC.into(),
            memory: Memory::Anonymous,
        }
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn log_since_reads_only_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("qemu.log");
        assert_eq!(log_since(&log, 0), "");
        std::fs::write(&log, "old: terminating on signal 15\n").unwrap();
        let at = std::fs::metadata(&log).unwrap().len();
        assert_eq!(log_since(&log, at), "");
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut f, b"new: Could not open 'x'\n").unwrap();
        assert_eq!(log_since(&log, at), "new: Could not open 'x'");
        // A huge log gives its end, never more than 4 KiB.
        std::io::Write::write_all(&mut f, "y".repeat(10_000).as_bytes()).unwrap();
        assert_eq!(log_since(&log, at).len(), 4096);
    }

    /// The real QEMU, refusing a plan: why it refused reaches the caller
    /// (it writes that to its `-D` log once `-daemonize` is parsed, not to
    /// stderr; the error used to end in an empty reason).
    #[test]
    fn a_refused_launch_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(Accel::Tcg);
        p.runtime_dir = dir.path().join("run");
        std::fs::create_dir(&p.runtime_dir).unwrap();
        p.console_log = dir.path().join("console.log");
        for drive in &mut p.drives {
            drive.path = dir.path().join(format!("missing-{:?}.ext4", drive.role));
        }
        let qemu = Qemu {
            binary: "qemu-system-x86_64".into(),
        };
        let err = qemu.launch(&p).unwrap_err().to_string();
        assert!(err.contains("Could not open"), "{err}");
        assert!(err.contains("missing-"), "{err}");
    }

    #[test]
    fn a_pvh_kernel_boots_uncompressed() {
        let mut p = plan(Accel::Tcg);
        assert_eq!(value_after(&Qemu::args(&p), "-kernel"), ["/img/vmlinuz"]);
        p.boot.pvh = true;
        assert_eq!(value_after(&Qemu::args(&p), "-kernel"), ["/img/vmlinux"]);
        let mut kvm = plan(Accel::Kvm);
        kvm.boot.pvh = true;
        assert_eq!(value_after(&Qemu::args(&kvm), "-kernel"), ["/img/vmlinuz"]);
    }

    #[test]
    fn tcg_command_line() {
        let args = Qemu::args(&plan(Accel::Tcg));
        assert_eq!(value_after(&args, "-accel"), ["tcg,tb-size=256"]);
        let append = value_after(&args, "-append")[0];
        assert!(append.contains("tsc_early_khz=2600000"), "{append}");
        assert!(append.contains("cryptomgr.notests"), "{append}");
        assert!(append.contains("init_on_alloc=0"), "{append}");
        assert!(append.contains("tsc=reliable"), "{append}");
        // No delay-loop constant without the kernel's tick rate (a catalog
        // kernel); with it, TSC cycles per tick.
        assert!(!append.contains("lpj="), "{append}");
        let mut known = plan(Accel::Tcg);
        known.boot.hz = Some(250);
        let args = Qemu::args(&known);
        assert!(value_after(&args, "-append")[0].contains(" lpj=10400000"));
        assert!(append.contains("banger.root=overlay"));
        assert!(append.contains("systemd.hostname=dev"));
        let drives = value_after(&args, "-drive");
        assert!(
            drives[0].starts_with("file=/img/rootfs.ext4,") && drives[0].ends_with("readonly=on")
        );
        assert!(!drives[1].contains("readonly"));
        let devices = value_after(&args, "-device");
        assert!(devices.contains(&"virtio-blk-device,drive=rootfs,serial=rootfs"));
        assert!(devices.contains(&"virtserialport,bus=vser0.0,chardev=agent,name=banger.agent"));
        assert!(args.contains(&"-daemonize".to_string()));
        assert!(args.contains(&"-no-reboot".to_string()));
        assert_eq!(value_after(&args, "-pidfile"), ["/run/vm/qemu.pid"]);
    }

    #[test]
    fn a_comma_in_a_path_cannot_inject_an_option() {
        let mut p = plan(Accel::Tcg);
        p.drives[1].path = "/vm/a,readonly=on,file=/etc/shadow".into();
        p.runtime_dir = "/run/x,y".into();
        p.console_log = "/vm/c,d.log".into();
        let args = Qemu::args(&p);
        assert_eq!(
            value_after(&args, "-drive")[1],
            "file=/vm/a,,readonly=on,,file=/etc/shadow,format=raw,if=none,id=work,cache=writeback,discard=unmap"
        );
        assert!(value_after(&args, "-chardev")[0].contains("path=/vm/c,,d.log,append=on"));
        assert!(value_after(&args, "-qmp")[0].starts_with("unix:/run/x,,y/"));
        // A plain argument is not an option list: no escaping.
        assert_eq!(value_after(&args, "-pidfile"), ["/run/x,y/qemu.pid"]);
    }

    #[test]
    fn a_networked_vm_gets_the_keepers_tap_and_no_other_nic() {
        let args = Qemu::args(&plan(Accel::Tcg));
        assert!(value_after(&args, "-netdev").is_empty());
        let mut p = plan(Accel::Tcg);
        p.network = Some(crate::vmm::network::NetAttach { keeper_pid: 1 });
        let args = Qemu::args(&p);
        assert_eq!(
            value_after(&args, "-netdev"),
            ["tap,id=net0,ifname=tap0,script=no,downscript=no,vhost=off"]
        );
        assert!(
            value_after(&args, "-device")
                .contains(&"virtio-net-device,netdev=net0,mac=52:54:00:66:00:02")
        );
        assert!(args.contains(&"-nodefaults".to_string()));
    }

    #[test]
    fn templates_share_their_memory_file_and_restores_map_it_privately() {
        let args = Qemu::args(&plan(Accel::Tcg));
        assert_eq!(
            value_after(&args, "-M"),
            ["microvm,x-option-roms=off,rtc=on,memory-backend=ram"]
        );
        assert_eq!(
            value_after(&args, "-object"),
            ["memory-backend-ram,id=ram,size=1024M"]
        );
        assert!(!args.contains(&"-incoming".to_string()));

        let mut p = plan(Accel::Tcg);
        p.memory = Memory::Template("/snap/x,y/memory".into());
        let args = Qemu::args(&p);
        assert_eq!(
            value_after(&args, "-M"),
            ["microvm,x-option-roms=off,rtc=on,memory-backend=ram"]
        );
        assert_eq!(
            value_after(&args, "-object"),
            ["memory-backend-file,id=ram,size=1024M,mem-path=/snap/x,,y/memory,share=on"]
        );
        assert!(!args.contains(&"-incoming".to_string()));

        p.memory = Memory::Restore {
            memory: Some("/snap/memory".into()),
            state: "/snap/state".into(),
        };
        let args = Qemu::args(&p);
        assert_eq!(
            value_after(&args, "-object"),
            ["memory-backend-file,id=ram,size=1024M,mem-path=/snap/memory,share=off"]
        );
        assert_eq!(value_after(&args, "-incoming"), ["defer"]);
        // The same devices as the template: only memory and -incoming differ.
        let mut t = plan(Accel::Tcg);
        t.memory = Memory::Template("/snap/memory".into());
        assert_eq!(
            value_after(&Qemu::args(&t), "-device"),
            value_after(&args, "-device")
        );

        // A running VM's snapshot: ordinary memory, filled by the stream.
        p.memory = Memory::Restore {
            memory: None,
            state: "/snap/state".into(),
        };
        let args = Qemu::args(&p);
        assert_eq!(
            value_after(&args, "-object"),
            ["memory-backend-ram,id=ram,size=1024M"]
        );
        assert_eq!(value_after(&args, "-incoming"), ["defer"]);
    }

    #[test]
    fn kvm_command_line_has_no_tsc_hint() {
        let args = Qemu::args(&plan(Accel::Kvm));
        assert_eq!(value_after(&args, "-accel"), ["kvm"]);
        assert!(!value_after(&args, "-append")[0].contains("tsc_early_khz"));
        assert!(!value_after(&args, "-append")[0].contains("cryptomgr.notests"));
        assert!(!value_after(&args, "-append")[0].contains("init_on_alloc"));
        assert!(!value_after(&args, "-append")[0].contains("tsc=reliable"));
        let mut known = plan(Accel::Kvm);
        known.boot.hz = Some(250);
        assert!(!value_after(&Qemu::args(&known), "-append")[0].contains("lpj="));
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let qemu = Qemu {
            binary: "/nonexistent/qemu".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(Accel::Tcg);
        p.runtime_dir = dir.path().into();
        let err = qemu.launch(&p).unwrap_err();
        assert!(
            err.to_string().contains("apt-get install qemu-system-x86"),
            "{err}"
        );
    }
}
