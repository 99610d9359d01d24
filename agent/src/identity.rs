//! What a guest restored from a snapshot (or paused for one) needs from
//! the agent: its own identity, its dependency cache mounted, its clock.
//!
//! A restored guest becomes its own ([`Request::Identity`]): every guest
//! restored from one snapshot woke with the same memory, so the same
//! random-generator state, host name, machine id, ssh host keys and a
//! clock stopped at the moment of the snapshot. The host sends fresh
//! values before any user code runs in the guest; the host keys are
//! removed, and the host's ssh preparation makes the VM's own.
//!
//! [`Request::Identity`]: crate::protocol::Request::Identity

use std::io::Write;
use std::os::fd::AsRawFd;

use crate::protocol::IdentitySpec;

/// Least entropy the host must send, in bytes.
pub const MIN_ENTROPY: usize = 32;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Checks what the host sent (pure).
pub fn validate(spec: &IdentitySpec) -> Result<[u8; 6], String> {
    let name_ok = !spec.hostname.is_empty()
        && spec.hostname.len() <= 64
        && spec
            .hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !name_ok {
        return Err(format!("bad host name {:?}", spec.hostname));
    }
    if spec.machine_id.len() != 32
        || !spec
            .machine_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("bad machine id {:?}", spec.machine_id));
    }
    if spec.entropy.len() < MIN_ENTROPY || spec.entropy.len() > 4096 {
        return Err(format!(
            "entropy must be {MIN_ENTROPY} to 4096 bytes, not {}",
            spec.entropy.len()
        ));
    }
    match &spec.mac {
        None => Ok([0; 6]),
        Some(mac) => parse_mac(mac).ok_or_else(|| format!("bad MAC address {mac:?}")),
    }
}

/// `52:54:00:12:34:56` as bytes; a unicast address only.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    (parts.next().is_none() && out[0] & 1 == 0).then_some(out)
}

/// Applies an identity, randomness first (everything after it may draw on
/// the generator). Blocking.
pub fn apply(spec: &IdentitySpec) -> Result<(), String> {
    validate(spec)?;
    reseed(&spec.entropy).map_err(|e| format!("cannot reseed the random generator: {e}"))?;
    set_clock(spec.unix_nanos).map_err(|e| format!("cannot set the clock: {e}"))?;
    // SAFETY: the pointer and length describe a live byte slice.
    if unsafe { libc::sethostname(spec.hostname.as_ptr().cast(), spec.hostname.len()) } != 0 {
        return Err(format!(
            "cannot set the host name: {}",
            std::io::Error::last_os_error()
        ));
    }
    write_in_place("/etc/hostname", &format!("{}\n", spec.hostname))
        .map_err(|e| format!("cannot write /etc/hostname: {e}"))?;
    // In place: systemd may have bind-mounted a file from /run over it.
    write_in_place("/etc/machine-id", &format!("{}\n", spec.machine_id))
        .map_err(|e| format!("cannot write /etc/machine-id: {e}"))?;
    remove_host_keys(std::path::Path::new(SSH_DIR))
        .map_err(|e| format!("cannot remove the ssh host keys in {SSH_DIR}: {e}"))
}

/// Where sshd keeps its host keys.
const SSH_DIR: &str = "/etc/ssh";

/// Removes the ssh host keys in `dir` (and what an interrupted key
/// generation left): they are the snapshot source's. No directory, no
/// keys.
fn remove_host_keys(dir: &std::path::Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(b"ssh_host_")
        {
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Serves the requests of a restored or paused guest: `Identity`,
/// `MountDisk` and `SetClock` (any other request is refused).
pub async fn serve(request: crate::protocol::Request) -> Result<(), String> {
    use crate::protocol::Request;
    match request {
        Request::Identity(spec) => apply_with_mac(spec).await,
        Request::MountDisk {
            serial,
            target,
            binds,
        } => tokio::task::spawn_blocking(move || mount_disk(&serial, &target, &binds))
            .await
            .unwrap_or_else(|e| Err(format!("mount task failed: {e}"))),
        Request::SetClock { unix_nanos } => {
            set_clock(unix_nanos).map_err(|e| format!("cannot set the clock: {e}"))
        }
        other => Err(format!("not a restore request: {other:?}")),
    }
}

/// [`apply`] off the async workers, then the MAC address of the guest's
/// network interface (netlink), when the host sent one.
pub async fn apply_with_mac(spec: IdentitySpec) -> Result<(), String> {
    let mac = validate(&spec)?;
    let has_mac = spec.mac.is_some();
    tokio::task::spawn_blocking(move || apply(&spec))
        .await
        .map_err(|e| format!("identity task failed: {e}"))??;
    if has_mac {
        let netlink = crate::netconf::Netlink::open().map_err(|e| e.to_string())?;
        let ifname = netlink
            .first_ethernet()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no network interface to give the MAC address")?;
        netlink
            .set_mac(&ifname, mac)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Credits the host's bytes to the input pool, then makes the kernel's
/// generator reseed from it now rather than at its next scheduled reseed
/// (until then, siblings would draw the same stream).
fn reseed(entropy: &[u8]) -> std::io::Result<()> {
    let urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut request: Vec<u8> = Vec::with_capacity(8 + entropy.len());
    let bits = i32::try_from(entropy.len() * 8).unwrap_or(i32::MAX);
    let len = i32::try_from(entropy.len()).unwrap_or(i32::MAX);
    request.extend_from_slice(&bits.to_ne_bytes());
    request.extend_from_slice(&len.to_ne_bytes());
    request.extend_from_slice(entropy);
    // SAFETY: the buffer holds the header and `buf_size` bytes after it,
    // and outlives the call.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY as _, request.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `BLKFLSBUF`: `_IO(0x12, 97)`.
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// Mounts the ext4 disk whose virtio serial is `serial` at `target` and
/// binds `(directory on it, mount point)` pairs, as the initramfs would
/// have at boot. The guest's cached blocks of the disk are dropped first:
/// a restored guest read the template's placeholder disk at boot, not
/// this one. Blocking.
pub fn mount_disk(serial: &str, target: &str, binds: &[(String, String)]) -> Result<(), String> {
    let absolute = |p: &str| p.starts_with('/') && !p.split('/').any(|c| c == "..");
    if !absolute(target)
        || binds.iter().any(|(from, to)| {
            from.is_empty()
                || from.starts_with('/')
                || from.split('/').any(|c| c == "..")
                || !absolute(to)
        })
    {
        return Err("mount paths must be absolute (sources relative), without '..'".into());
    }
    let device = disk_by_serial(serial).ok_or_else(|| format!("no disk with serial {serial}"))?;
    let dev = std::fs::File::open(&device).map_err(|e| format!("cannot open {device}: {e}"))?;
    // SAFETY: BLKFLSBUF takes no argument pointer.
    if unsafe { libc::ioctl(dev.as_raw_fd(), BLKFLSBUF as _, 0) } != 0 {
        return Err(format!(
            "cannot drop the cached blocks of {device}: {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(dev);
    std::fs::create_dir_all(target).map_err(|e| format!("cannot create {target}: {e}"))?;
    mount(&device, target, Some("ext4"), 0, Some("discard"))?;
    for (from, to) in binds {
        let source = format!("{}/{from}", target.trim_end_matches('/'));
        for dir in [&source, to] {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
        }
        mount(&source, to, None, libc::MS_BIND, None)?;
    }
    Ok(())
}

/// The `/dev/vdX` whose virtio-blk serial is `serial`.
pub(crate) fn disk_by_serial(serial: &str) -> Option<String> {
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let own = std::fs::read_to_string(e.path().join("serial")).ok()?;
            (name.starts_with("vd") && own.trim() == serial).then(|| format!("/dev/{name}"))
        })
}

/// mount(2); the error names source and target.
pub(crate) fn mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), String> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| format!("a NUL in {s:?}"));
    let (src, tgt) = (c(source)?, c(target)?);
    let fs = fstype.map(c).transpose()?;
    let data = data.map(c).transpose()?;
    // SAFETY: every pointer is a live NUL-terminated string or null.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot mount {source} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Sets `CLOCK_REALTIME`.
pub fn set_clock(unix_nanos: u64) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(unix_nanos / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        tv_nsec: (unix_nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec, read during the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn write_in_place(path: &str, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> IdentitySpec {
        IdentitySpec {
            hostname: "vm-1".into(),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            unix_nanos: 1,
            entropy: vec![7; 64],
            mac: Some("52:54:00:ab:cd:ef".into()),
        }
    }

    #[test]
    fn a_well_formed_identity_is_accepted() {
        assert_eq!(validate(&spec()), Ok([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
    }

    #[test]
    fn the_sources_host_keys_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let keep = ["sshd_config", "moduli", "ssh_config"];
        let gone = [
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "ssh_host_rsa_key",
            "ssh_host_ed25519_key.new",
        ];
        for f in keep.iter().chain(&gone) {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        remove_host_keys(dir.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["moduli", "ssh_config", "sshd_config"]);
        // An image without ssh has nothing to remove.
        remove_host_keys(&dir.path().join("absent")).unwrap();
    }

    #[test]
    fn hostile_or_short_values_are_refused() {
        type Change = Box<dyn Fn(&mut IdentitySpec)>;
        let cases: Vec<Change> = vec![
            Box::new(|s| s.hostname = "a b".into()),
            Box::new(|s| s.hostname = "x/../y".into()),
            Box::new(|s| s.hostname = String::new()),
            Box::new(|s| s.machine_id = "0123".into()),
            Box::new(|s| s.machine_id = "0123456789ABCDEF0123456789ABCDEF".into()),
            Box::new(|s| s.entropy = vec![1; 16]),
            Box::new(|s| s.mac = Some("53:54:00:ab:cd:ef".into())), // multicast
            Box::new(|s| s.mac = Some("52:54:00:ab:cd".into())),
            Box::new(|s| s.mac = Some("52:54:00:ab:cd:ef:01".into())),
        ];
        for change in cases {
            let mut s = spec();
            change(&mut s);
            assert!(validate(&s).is_err(), "{s:?}");
        }
    }
}
