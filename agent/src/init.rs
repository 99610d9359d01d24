//! `/init` of a banger guest: PID 1 of the initramfs, the agent binary run
//! under that name (the host's initramfs segment links `/init` to
//! [`AGENT_PATH`]).
//!
//! It assembles the guest's root file system from virtio-blk disks found by
//! their serial and hands over to the image's init. One process, no shell:
//! under emulation every program started costs milliseconds, and the shell
//! script this replaces started ~30 of them (a third of its 0.4 s).
//!
//! Contract (the host side is `image/mod.rs` in the server):
//!
//! | kernel argument | disks and what `/init` does |
//! |---|---|
//! | `banger.root=overlay` | `rootfs` = image base, ext4, read-only (lower); `overlay` = per-VM ext4 with `upper/` and `work/` |
//! | `banger.layers=N` | `layer1`..`layerN` = a derived image's layers, ext4, read-only; each one's `upper/` between the base and the VM's upper, layer N the highest |
//! | every mode | `work` = per-VM ext4 at `/root` |
//! | `banger.cache=1` | `cache` = the project's dependency cache at [`CACHE_DIR`], its directories bound over the package managers' caches ([`CACHE_MOUNTS`]) |
//! | `banger.init=systemd` (default) | hand over to the image's `/sbin/init` |
//! | `banger.init=agent` | an image with no init banger can use (an OCI image): the initramfs's busybox becomes `/.banger/busybox`, PID 1 as busybox init, which mounts `/dev/pts`, `/dev/shm`, `/run` and keeps the agent running |
//!
//! The agent ([`AGENT_PATH`]) is installed as `/usr/sbin/banger-agent` in
//! the new root, and the host's certificate authorities ([`HOST_CA_PATH`],
//! possibly empty) as `banger-host.crt` for the agent to trust.
//!
//! On any failure: print `banger-init: <what failed>` on the console and
//! power off, so the VMM exits instead of hanging (if that fails too, init
//! exits and the kernel panics; with `panic=-1` and `-no-reboot` that ends
//! QEMU as well).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::identity::{disk_by_serial, mount};
use crate::protocol::{CACHE_DIR, CACHE_MOUNTS};

/// The host's agent in the initramfs (its host segment).
pub const AGENT_PATH: &str = "/banger/banger-agent";
/// The host's certificate authorities in the initramfs.
pub const HOST_CA_PATH: &str = "/banger/host-ca.pem";
/// Modules to load, one `<file>.ko <sysfs name>` per line in load order
/// (written when the image was built; built-in ones are left out).
const LOAD_ORDER: &str = "/lib/modules/load-order";
/// How long the disks may take to appear after their driver loaded.
const DISK_WAIT: Duration = Duration::from_secs(2);
/// Modules systemd loads itself early when they are missing, each costing
/// it a module index lookup at the start of every boot: loaded by `/init`
/// instead when the kernel has them as modules (none is required, nothing
/// before systemd needs them: they load beside the disks' drivers).
pub const EARLY_MODULES: &[&str] = &["autofs4", "x_tables", "ip_tables", "qemu_fw_cfg"];
/// `kmod static-nodes --format=tmpfiles` as `/init` writes it: the device
/// nodes whose first open loads their module (`/dev/net/tun`,
/// `/dev/fuse`), made by systemd-tmpfiles-setup-dev.
const STATIC_NODES: &str = "/newroot/run/tmpfiles.d/static-nodes.conf";

/// Whether this process is the initramfs's `/init` (the kernel runs it as
/// PID 1 with `argv[0]` = `/init`).
pub fn is_init(argv0: &str) -> bool {
    argv0 == "/init" && std::process::id() == 1
}

/// Runs `/init`: hands over to the new root's init, or powers off.
pub fn main() -> ! {
    let error = match run() {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = writeln!(std::io::stderr(), "banger-init: {error}");
    power_off()
}

/// What the kernel command line asks of `/init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// Derived-image layers between the base and the VM's upper.
    pub layers: u32,
    /// Whether the dependency cache disk is attached.
    pub cache: bool,
    /// What runs as PID 1 in the new root.
    pub init: InitMode,
}

/// PID 1 of the new root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitMode {
    /// The image's `/sbin/init`.
    Systemd,
    /// Busybox init running the agent.
    Agent,
}

/// Reads `banger.*` arguments from a kernel command line.
pub fn parse_cmdline(cmdline: &str) -> Result<Boot, String> {
    let mut root = None;
    let mut layers = "0";
    let mut init = "systemd";
    let mut cache = "0";
    for arg in cmdline.split_whitespace() {
        if let Some(v) = arg.strip_prefix("banger.root=") {
            root = Some(v);
        } else if let Some(v) = arg.strip_prefix("banger.layers=") {
            layers = v;
        } else if let Some(v) = arg.strip_prefix("banger.init=") {
            init = v;
        } else if let Some(v) = arg.strip_prefix("banger.cache=") {
            cache = v;
        }
    }
    match root {
        Some("overlay") => {}
        None | Some("") => {
            return Err(
                "no banger.root= on the kernel command line; add banger.root=overlay".into(),
            );
        }
        Some(other) => {
            return Err(format!(
                "unknown banger.root={other}; this image supports: overlay"
            ));
        }
    }
    let layers = match layers.as_bytes() {
        [d @ b'0'..=b'9'] => u32::from(d - b'0'),
        _ => return Err(format!("bad banger.layers={layers} (0-9)")),
    };
    let init = match init {
        "systemd" => InitMode::Systemd,
        "agent" => InitMode::Agent,
        other => {
            return Err(format!(
                "unknown banger.init={other}; known: systemd, agent"
            ));
        }
    };
    Ok(Boot {
        layers,
        cache: cache == "1",
        init,
    })
}

/// The overlay's `lowerdir=`: layers stack over the base, the highest
/// first.
pub fn lowerdir(layers: u32) -> String {
    let mut lower = "/mnt/lower".to_string();
    for n in 1..=layers {
        lower = format!("/mnt/layer{n}/upper:{lower}");
    }
    lower
}

/// The serials of the disks a boot needs.
pub fn wanted_disks(boot: &Boot) -> Vec<String> {
    let mut wanted: Vec<String> = ["rootfs", "overlay", "work"].map(String::from).to_vec();
    wanted.extend((1..=boot.layers).map(|n| format!("layer{n}")));
    if boot.cache {
        wanted.push("cache".into());
    }
    wanted
}

fn run() -> Result<std::convert::Infallible, String> {
    mount("proc", "/proc", Some("proc"), 0, None)?;
    mount("sysfs", "/sys", Some("sysfs"), 0, None)?;
    mount("devtmpfs", "/dev", Some("devtmpfs"), 0, None)?;
    console();
    let early = load_modules();
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("cannot read /proc/cmdline: {e}"))?;
    let boot = parse_cmdline(&cmdline)?;
    wait_for_disks(&wanted_disks(&boot))?;

    // Read-only image base (and layers) + per-VM upper disk, joined by
    // overlayfs at /newroot. /mnt stays mounted but unreachable after the
    // switch.
    mount_disk("rootfs", "/mnt/lower", libc::MS_RDONLY, None)?;
    for n in 1..=boot.layers {
        let dir = format!("/mnt/layer{n}");
        mount_disk(&format!("layer{n}"), &dir, libc::MS_RDONLY, None)?;
        if !Path::new(&dir).join("upper").is_dir() {
            return Err(format!("disk layer{n} has no upper/ directory"));
        }
    }
    // discard: space the guest frees goes back to the host's sparse file.
    mount_disk("overlay", "/mnt/upper", 0, Some("discard"))?;
    for dir in ["/mnt/upper/upper", "/mnt/upper/work"] {
        mkdir(dir)?;
    }
    mkdir("/newroot")?;
    // redirect_dir=on: a directory of a lower layer can be renamed (else
    // rename(2) fails with EXDEV, and e.g. dockerd and pip upgrades break).
    let options = format!(
        "lowerdir={},upperdir=/mnt/upper/upper,workdir=/mnt/upper/work,redirect_dir=on",
        lowerdir(boot.layers)
    );
    mount("overlay", "/newroot", Some("overlay"), 0, Some(&options))
        .map_err(|e| format!("cannot mount the overlay root: {e}"))?;
    mount_disk("work", "/newroot/root", 0, Some("discard"))?;

    if boot.cache {
        let at = format!("/newroot{CACHE_DIR}");
        mount_disk("cache", &at, 0, Some("discard"))?;
        for (dir, over) in CACHE_MOUNTS {
            let (src, dst) = (format!("{at}/{dir}"), format!("/newroot{over}"));
            mkdir(&src)?;
            mkdir(&dst)?;
            mount(&src, &dst, None, libc::MS_BIND, None)
                .map_err(|e| format!("cannot mount the cache over {over}: {e}"))?;
        }
    }

    bind_agent()?;
    // The host's certificate authorities (possibly none): the agent adds
    // them to the guest's bundle.
    if Path::new(HOST_CA_PATH).exists() {
        install(
            HOST_CA_PATH,
            "/newroot/usr/local/share/ca-certificates/banger-host.crt",
            0o644,
            "cannot install the host's certificate authorities",
        )?;
    }

    if boot.init == InitMode::Systemd {
        early_bpffs();
        early_run()?;
    }
    if let Some(early) = early {
        let _ = early.join();
    }
    for fs in ["/dev", "/proc", "/sys"] {
        // A container image may lack the mount points.
        let to = format!("/newroot{fs}");
        mkdir(&to)?;
        mount(fs, &to, None, libc::MS_MOVE, None)
            .map_err(|e| format!("cannot move {fs} into the new root: {e}"))?;
    }

    match boot.init {
        InitMode::Systemd => switch_root("/newroot", &["/sbin/init"]),
        InitMode::Agent => {
            busybox_init()?;
            switch_root("/newroot", &["/.banger/busybox", "init"])
        }
    }
}

/// Puts this host's agent at `/usr/sbin/banger-agent` in the new root,
/// where the image's unit (or busybox init) starts it: a bind mount of the
/// initramfs's copy, which outlives the initramfs's removal. Copying it
/// instead wrote its megabytes into the VM's disk at every boot (~55 ms of
/// an emulated boot, and that much more disk per VM).
fn bind_agent() -> Result<(), String> {
    const TARGET: &str = "/newroot/usr/sbin/banger-agent";
    let err = |e: String| format!("cannot put the agent at /usr/sbin/banger-agent: {e}");
    // An image without it (not built by banger) gets a file to mount on.
    match std::fs::symlink_metadata(TARGET) {
        Ok(meta) if meta.is_file() => {}
        _ => {
            let _ = std::fs::remove_file(TARGET);
            mkdir("/newroot/usr/sbin").map_err(err)?;
            std::fs::write(TARGET, b"").map_err(|e| err(e.to_string()))?;
        }
    }
    mount(AGENT_PATH, TARGET, None, libc::MS_BIND, None).map_err(err)?;
    // Read-only and executable, whatever the file under it allowed.
    mount(
        "none",
        TARGET,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        None,
    )
    .map_err(err)
}

/// Mounts the new root's `/run` as systemd would (it leaves a mounted one
/// alone, as after an initrd) and writes the static device nodes' list
/// there, from the image's `modules.devname`: systemd's own writer
/// (kmod-static-nodes.service, masked in banger's images) took ~0.25 s of
/// an emulated boot, on the path to the agent.
fn early_run() -> Result<(), String> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME;
    mkdir("/newroot/run")?;
    mount(
        "tmpfs",
        "/newroot/run",
        Some("tmpfs"),
        flags,
        Some("mode=0755,size=20%,nr_inodes=800k"),
    )
    .map_err(|e| format!("cannot mount /run: {e}"))?;
    let Some(release) = kernel_release() else {
        return Ok(());
    };
    let devname = format!("/newroot/lib/modules/{release}/modules.devname");
    let Ok(text) = std::fs::read_to_string(&devname) else {
        return Ok(());
    };
    let conf = static_nodes(&text);
    if conf.is_empty() {
        return Ok(());
    }
    mkdir("/newroot/run/tmpfiles.d")?;
    std::fs::write(STATIC_NODES, conf).map_err(|e| format!("cannot write {STATIC_NODES}: {e}"))
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain bytes, valid when zeroed.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct it is given, which lives here.
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates the field.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
    release.to_str().ok().map(str::to_string)
}

/// `modules.devname` (`<module> <node> <c|b><major>:<minor>` per line) as
/// tmpfiles lines, the way `kmod static-nodes --format=tmpfiles` writes
/// them (pure). Lines it cannot read are skipped, as kmod does; node names
/// that would leave `/dev` are too.
pub fn static_nodes(devname: &str) -> String {
    let mut out = String::new();
    for line in devname.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(_module), Some(node), Some(dev)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // The image's file: anything else is skipped, never a panic in
        // PID 1.
        let (kind, numbers) = match dev.as_bytes().first() {
            Some(b'c') => ("c", &dev[1..]),
            Some(b'b') => ("b", &dev[1..]),
            _ => continue,
        };
        let Some((major, minor)) = numbers.split_once(':') else {
            continue;
        };
        let number = |s: &str| s.parse::<u32>().ok();
        let (Some(major), Some(minor)) = (number(major), number(minor)) else {
            continue;
        };
        let safe = !node.is_empty()
            && !node.starts_with('/')
            && node
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != "..");
        if !safe {
            continue;
        }
        if let Some((dir, _)) = node.rsplit_once('/') {
            out.push_str(&format!("d /dev/{dir} 0755 - - -\n"));
        }
        out.push_str(&format!("{kind}! /dev/{node} 0600 - - - {major}:{minor}\n"));
    }
    out
}

/// Mounts the BPF file system where and as systemd would (it leaves a
/// mounted one alone). Its first mount makes the kernel ask for a
/// `bpf_preload` module, which Debian's kernel does not have: asked from
/// systemd, that started `modprobe` to fail, ~40 ms of every emulated boot
/// before any unit loads; asked from here, there is no `modprobe` to start.
fn early_bpffs() {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if Path::new("/sys/fs/bpf").is_dir()
        && let Err(e) = mount("bpf", "/sys/fs/bpf", Some("bpf"), flags, Some("mode=700"))
    {
        eprintln!("banger-init: {e} (systemd mounts it)");
    }
}

/// Gives `/init` the console as stdin, stdout and stderr when the kernel
/// could not (the initramfs has no `/dev/console` before devtmpfs).
fn console() {
    // SAFETY: F_GETFD on a descriptor number only queries it.
    if unsafe { libc::fcntl(2, libc::F_GETFD) } >= 0 {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which nothing holds.
        unsafe { libc::dup2(console.as_raw_fd(), fd) };
    }
}

/// Loads the image's modules in order; one that is there already is
/// skipped. A kernel other than the image's (`banger kernel import`)
/// cannot load them: it must have the drivers built in, and the disk
/// checks after this fail clearly if it does not.
///
/// [`EARLY_MODULES`] load on a thread of their own meanwhile (an emulated
/// guest has a second CPU with nothing to do); join it before systemd.
fn load_modules() -> Option<std::thread::JoinHandle<()>> {
    let order = match std::fs::read_to_string(LOAD_ORDER) {
        Ok(order) => order,
        Err(e) => {
            eprintln!("banger-init: no {LOAD_ORDER} ({e}); loading no modules");
            return None;
        }
    };
    let (early, now): (Vec<&str>, Vec<&str>) = order.lines().partition(|line| {
        line.split_whitespace()
            .nth(1)
            .is_some_and(|name| EARLY_MODULES.contains(&name))
    });
    let early: Vec<String> = early.into_iter().map(str::to_string).collect();
    let thread = std::thread::Builder::new()
        .spawn(move || load_in_order(early.iter().map(String::as_str)))
        .ok();
    load_in_order(now.into_iter());
    thread
}

fn load_in_order<'a>(lines: impl Iterator<Item = &'a str>) {
    for line in lines {
        let mut fields = line.split_whitespace();
        let (Some(file), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        if Path::new("/sys/module").join(name).exists() {
            continue;
        }
        if let Err(e) = insmod(&format!("/lib/modules/{file}")) {
            eprintln!(
                "banger-init: kernel module {file} not loaded (built in, or another kernel): {e}"
            );
        }
    }
}

fn insmod(path: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: finit_module reads the open file and an empty parameter
    // string, both alive during the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            0 as libc::c_int,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// Waits until every serial has a disk: the drivers probed them before
/// their module load returned, but slow hosts get [`DISK_WAIT`].
fn wait_for_disks(serials: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + DISK_WAIT;
    loop {
        let missing: Vec<&str> = serials
            .iter()
            .filter(|s| disk_by_serial(s).is_none())
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no virtio-blk disk with serial: {}",
                missing.join(" ")
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mounts the ext4 disk with that serial at `dir`.
fn mount_disk(
    serial: &str,
    dir: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), String> {
    let device = disk_by_serial(serial)
        .ok_or_else(|| format!("no virtio-blk disk with serial: {serial}"))?;
    mkdir(dir)?;
    mount(&device, dir, Some("ext4"), flags, data)
        .map_err(|e| format!("cannot mount disk {serial} ({device}) on {dir}: {e}"))
}

fn mkdir(dir: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))
}

/// Copies `from` to `to` with `mode`, replacing `to` in one rename.
fn install(from: &str, to: &str, mode: u32, what: &str) -> Result<(), String> {
    let to = Path::new(to);
    let tmp = to.with_extension("banger-new");
    let result = to
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::copy(from, &tmp))
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, to));
    result.map_err(|e| format!("{what}: {e}"))
}

/// Sets up busybox init as PID 1 of an image without an init of its own.
fn busybox_init() -> Result<(), String> {
    install(
        "/bin/busybox",
        "/newroot/.banger/busybox",
        0o755,
        "cannot copy busybox into the new root",
    )?;
    let write = |path: &str, lines: &[&str]| {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::create_dir_all("/newroot/etc")
            .and_then(|()| std::fs::write(path, text))
            .map_err(|e| format!("cannot write {}: {e}", path.trim_start_matches("/newroot")))
    };
    write(
        "/newroot/.banger/rc",
        &[
            "# banger: PID 1 of an image without an init of its own.",
            "B=/.banger/busybox",
            "$B mkdir -p /dev/pts /dev/shm /run /tmp /var/tmp",
            "$B mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts",
            "$B mount -t tmpfs -o mode=1777 tmpfs /dev/shm",
            "$B mount -t tmpfs -o mode=755 tmpfs /run",
            "$B chmod 1777 /tmp /var/tmp",
            "$B hostname -F /etc/hostname 2>/dev/null || :",
        ],
    )?;
    write(
        "/newroot/etc/inittab",
        &[
            "# banger: busybox init of an image without an init of its own.",
            "::sysinit:/.banger/busybox sh /.banger/rc",
            "::respawn:/usr/sbin/banger-agent",
            "::ctrlaltdel:/.banger/busybox poweroff -f",
            "::shutdown:/.banger/busybox sync",
        ],
    )
}

/// Empties the initramfs (its memory is the guest's), makes `new_root`
/// the root and execs `argv` there, as PID 1.
fn switch_root(new_root: &str, argv: &[&str]) -> Result<std::convert::Infallible, String> {
    let root_dev = std::fs::symlink_metadata("/")
        .map_err(|e| format!("cannot stat /: {e}"))?
        .dev();
    delete_contents(Path::new("/"), root_dev);
    std::env::set_current_dir(new_root).map_err(|e| format!("cannot enter {new_root}: {e}"))?;
    mount(".", "/", None, libc::MS_MOVE, None)
        .map_err(|e| format!("cannot move {new_root} to /: {e}"))?;
    // SAFETY: chroot on a NUL-terminated literal.
    if unsafe { libc::chroot(c".".as_ptr()) } != 0 {
        return Err(format!(
            "cannot chroot into {new_root}: {}",
            std::io::Error::last_os_error()
        ));
    }
    std::env::set_current_dir("/").map_err(|e| format!("cannot enter /: {e}"))?;
    let args: Vec<std::ffi::CString> = argv
        .iter()
        .map(|a| std::ffi::CString::new(*a).expect("argv literals have no NUL"))
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: a NULL-terminated array of live NUL-terminated strings.
    unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
    Err(format!(
        "switch_root to {} failed: {}",
        argv[0],
        std::io::Error::last_os_error()
    ))
}

/// Removes everything under `dir` on the initramfs (device `dev`), never
/// crossing into another file system (the new root, /mnt's disks).
fn delete_contents(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            delete_contents(&path, dev);
            // A mount point is on this device too but busy: left alone.
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    }
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_read_as_the_host_writes_it() {
        let boot = parse_cmdline(
            "console=ttyS0 quiet banger.root=overlay banger.layers=2 banger.cache=1 banger.net=x",
        )
        .unwrap();
        assert_eq!(
            boot,
            Boot {
                layers: 2,
                cache: true,
                init: InitMode::Systemd
            }
        );
        assert_eq!(
            parse_cmdline("banger.root=overlay banger.init=agent")
                .unwrap()
                .init,
            InitMode::Agent
        );
        assert_eq!(
            wanted_disks(&boot),
            ["rootfs", "overlay", "work", "layer1", "layer2", "cache"]
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_the_fix() {
        let err = |c: &str| parse_cmdline(c).unwrap_err();
        assert!(err("quiet").contains("add banger.root=overlay"));
        assert!(err("banger.root=zfs").contains("unknown banger.root=zfs"));
        assert!(err("banger.root=overlay banger.layers=10").contains("(0-9)"));
        assert!(err("banger.root=overlay banger.layers=").contains("(0-9)"));
        assert!(err("banger.root=overlay banger.init=runit").contains("known: systemd, agent"));
    }

    #[test]
    fn layers_stack_with_the_highest_first() {
        assert_eq!(lowerdir(0), "/mnt/lower");
        assert_eq!(
            lowerdir(3),
            "/mnt/layer3/upper:/mnt/layer2/upper:/mnt/layer1/upper:/mnt/lower"
        );
    }

    #[test]
    fn static_nodes_are_written_as_kmod_writes_them() {
        let devname = "# Device nodes to trigger on-demand module loading.\n\
                       fuse fuse c10:229\n\
                       tun net/tun c10:200\n\
                       dm_mod mapper/control c10:236\n\
                       loop loop-control c10:237\n\
                       bad ../../etc/shadow c1:1\n\
                       bad2 /abs c1:1\n\
                       bad3 x z1:2\n\
                       bad4 y c1\n\
                       bad5 z é1:2\n\
                       short\n";
        assert_eq!(
            static_nodes(devname),
            "c! /dev/fuse 0600 - - - 10:229\n\
             d /dev/net 0755 - - -\n\
             c! /dev/net/tun 0600 - - - 10:200\n\
             d /dev/mapper 0755 - - -\n\
             c! /dev/mapper/control 0600 - - - 10:236\n\
             c! /dev/loop-control 0600 - - - 10:237\n"
        );
    }

    #[test]
    fn deleting_the_initramfs_stays_on_its_device() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let dev = std::fs::metadata(root).unwrap().dev();
        // Another device's entries are not touched: none here but the
        // check itself, so a wrong device deletes nothing.
        delete_contents(root, dev.wrapping_add(1));
        assert!(root.join("a/b/f").exists());
        delete_contents(root, dev);
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
        assert!(Path::new("/etc/passwd").exists());
    }
}
