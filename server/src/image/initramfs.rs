//! The image's initramfs: busybox and the kernel modules a banger guest
//! needs. Also the small segment that carries the host's agent binary,
//! which is the initramfs's `/init` too (`banger_agent::init` assembles the
//! root from the VM's disks).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::ImageError;
use super::cpio::{self, Entry};

/// Path (inside the initramfs, no leading `/`) of the host's agent, which
/// `/init` links to and mounts at `/usr/sbin/banger-agent` in the guest.
pub const AGENT_OVERRIDE_PATH: &str = relative(banger_agent::init::AGENT_PATH);

/// Path (inside the initramfs) of the host's own certificate authorities
/// (`/usr/local/share/ca-certificates`), which `/init` hands to the guest:
/// a guest trusts what its host trusts (a company's TLS proxy, a local
/// registry).
pub const HOST_CA_PATH: &str = relative(banger_agent::init::HOST_CA_PATH);

/// An absolute path of the guest's initramfs as a path inside the archive.
const fn relative(path: &'static str) -> &'static str {
    match path.as_bytes() {
        [b'/', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(rest) => rest,
            Err(_) => panic!("not UTF-8"),
        },
        _ => panic!("not absolute"),
    }
}

/// Values of `banger.root=` that `/init` handles.
pub(crate) const ROOT_MODES: &[&str] = &["overlay"];

/// Modules loaded by `/init`, in this order (names as the kernel spells the
/// file; `-` and `_` are interchangeable when looking them up).
pub(crate) const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "failover",
    "net_failover",
    "virtio_net",
    "overlay",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "virtio-rng",
];

/// Modules `/init` loads for systemd when the kernel has them as modules.
pub(crate) use banger_agent::init::EARLY_MODULES;

/// Makes the initramfs segment that carries this host's boot logic into any
/// image: the guest agent at [`AGENT_OVERRIDE_PATH`] (0755), `/init` as a
/// link to it, and the host's certificate authorities, as one uncompressed
/// newc archive.
///
/// Put it after the image's `initrd.img` (`initrd + segment`): the kernel
/// unpacks archives in order and a later file replaces an earlier one, so
/// the guest runs this host's `/init` and agent whatever image it boots.
pub fn host_segment(agent: &[u8], host_ca: &[u8]) -> std::io::Result<Vec<u8>> {
    let (dir, _) = AGENT_OVERRIDE_PATH
        .rsplit_once('/')
        .expect("override path has a directory");
    let entries = [
        Entry::Dir {
            path: dir.to_owned(),
            mode: 0o755,
        },
        Entry::File {
            path: AGENT_OVERRIDE_PATH.to_owned(),
            mode: 0o755,
            data: agent.to_vec(),
        },
        Entry::Symlink {
            path: "init".to_owned(),
            target: AGENT_OVERRIDE_PATH.to_owned(),
        },
        Entry::File {
            path: HOST_CA_PATH.to_owned(),
            mode: 0o644,
            data: host_ca.to_vec(),
        },
    ];
    let mut out = Vec::with_capacity(agent.len() + 512);
    cpio::write_newc(&entries, &mut out)?;
    Ok(out)
}

/// A kernel module file picked for the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleFile {
    /// File name, e.g. `virtio-rng.ko`.
    pub(crate) file_name: String,
    /// Name under `/sys/module`, e.g. `virtio_rng`.
    pub(crate) sys_name: String,
    /// Where it is in the unpacked kernel package.
    pub(crate) path: PathBuf,
}

impl ModuleFile {
    fn new(sys_name: String, path: &Path) -> ModuleFile {
        ModuleFile {
            file_name: path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned(),
            sys_name,
            path: path.to_path_buf(),
        }
    }
}

/// The kernel's own spelling of a module name (`virtio-rng` -> `virtio_rng`).
fn sys_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Picks [`MODULES`] from `/lib/modules/<version>` of an unpacked kernel
/// package. A module that is neither a `.ko` file nor listed in
/// `modules.builtin` is an error.
pub(crate) fn find_modules(
    modules_dir: &Path,
    package: &str,
) -> Result<Vec<ModuleFile>, ImageError> {
    let mut files = BTreeMap::new();
    let mut compressed = BTreeSet::new();
    walk_modules(modules_dir, &mut files, &mut compressed)?;
    let builtin_path = modules_dir.join("modules.builtin");
    let builtin = match fs::read_to_string(&builtin_path) {
        Ok(text) => parse_builtin(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => {
            return Err(ImageError::io(
                format!("cannot read {}", builtin_path.display()),
                e,
            ));
        }
    };
    pick_modules(&files, &compressed, &builtin, package)
}

/// The decision part of [`find_modules`], over file names already found.
fn pick_modules(
    files: &BTreeMap<String, PathBuf>,
    compressed: &BTreeSet<String>,
    builtin: &BTreeSet<String>,
    package: &str,
) -> Result<Vec<ModuleFile>, ImageError> {
    let mut picked = Vec::new();
    for wanted in MODULES {
        let key = sys_name(wanted);
        if let Some(path) = files.get(&key) {
            picked.push(ModuleFile::new(key, path));
        } else if builtin.contains(&key) {
            continue;
        } else if compressed.contains(&key) {
            return Err(ImageError::Package {
                package: package.to_owned(),
                detail: format!(
                    "module {wanted} is compressed (.ko.xz/.ko.zst); only plain .ko files are supported, use a kernel package that ships them"
                ),
            });
        } else {
            return Err(ImageError::Package {
                package: package.to_owned(),
                detail: format!(
                    "has no module {wanted} and does not build it in; use a kernel with virtio, overlay and vsock support"
                ),
            });
        }
    }
    for wanted in EARLY_MODULES {
        let key = sys_name(wanted);
        if let Some(path) = files.get(&key) {
            picked.push(ModuleFile::new(key, path));
        }
    }
    Ok(picked)
}

fn walk_modules(
    dir: &Path,
    files: &mut BTreeMap<String, PathBuf>,
    compressed: &mut BTreeSet<String>,
) -> Result<(), ImageError> {
    let entries = fs::read_dir(dir)
        .map_err(|e| ImageError::io(format!("cannot list {}", dir.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| ImageError::io(format!("cannot list {}", dir.display()), e))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| ImageError::io(format!("cannot stat {}", path.display()), e))?;
        if file_type.is_dir() {
            walk_modules(&path, files, compressed)?;
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".ko") {
            files.insert(sys_name(stem), path.clone());
        } else if let Some((stem, _)) = name.split_once(".ko.") {
            compressed.insert(sys_name(stem));
        }
    }
    Ok(())
}

/// Module names from `modules.builtin` (`kernel/fs/ext4/ext4.ko` -> `ext4`).
fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.trim().rsplit('/').next())
        .filter_map(|name| name.strip_suffix(".ko"))
        .map(sys_name)
        .collect()
}

/// The `load-order` file `/init` reads: `<file> <sysfs name>` per line.
fn load_order(modules: &[ModuleFile]) -> String {
    modules
        .iter()
        .map(|m| format!("{} {}\n", m.file_name, m.sys_name))
        .collect()
}

/// Builds the image's initramfs as an uncompressed newc archive.
pub(crate) fn build_initramfs(
    busybox: &[u8],
    modules: &[ModuleFile],
) -> Result<Vec<u8>, ImageError> {
    let dir = |path: &str| Entry::Dir {
        path: path.to_owned(),
        mode: 0o755,
    };
    let mut entries = vec![
        dir("bin"),
        Entry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            data: busybox.to_vec(),
        },
    ];
    for path in [
        "dev",
        "proc",
        "sys",
        "mnt",
        "mnt/lower",
        "mnt/upper",
        "newroot",
        "banger",
        "lib",
        "lib/modules",
    ] {
        entries.push(dir(path));
    }
    for module in modules {
        let data = fs::read(&module.path)
            .map_err(|e| ImageError::io(format!("cannot read {}", module.path.display()), e))?;
        entries.push(Entry::File {
            path: format!("lib/modules/{}", module.file_name),
            mode: 0o644,
            data,
        });
    }
    entries.push(Entry::File {
        path: "lib/modules/load-order".into(),
        mode: 0o644,
        data: load_order(modules).into_bytes(),
    });
    let mut out = Vec::new();
    cpio::write_newc(&entries, &mut out)
        .map_err(|e| ImageError::io("cannot write the initramfs archive", e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_handles_every_root_mode_and_finds_the_agent() {
        for mode in ROOT_MODES {
            let cmdline = format!("banger.root={mode}");
            assert!(
                banger_agent::init::parse_cmdline(&cmdline).is_ok(),
                "mode {mode} not handled by /init"
            );
        }
        assert_eq!(
            format!("/{AGENT_OVERRIDE_PATH}"),
            banger_agent::init::AGENT_PATH
        );
        assert_eq!(format!("/{HOST_CA_PATH}"), banger_agent::init::HOST_CA_PATH);
    }

    #[test]
    fn modules_are_found_by_either_spelling_and_builtins_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut builtin = String::new();
        for (i, name) in MODULES.iter().enumerate() {
            if *name == "virtio_mmio" {
                builtin.push_str("kernel/drivers/virtio/virtio_mmio.ko\n");
                continue;
            }
            let sub = root.join(format!("kernel/d{}", i % 3));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("{name}.ko")), name.as_bytes()).unwrap();
        }
        fs::write(root.join("modules.builtin"), builtin).unwrap();
        // Of the early modules only one is there: the others are skipped,
        // not an error, and the one there loads after the required ones.
        fs::write(root.join("kernel/d0/autofs4.ko"), b"autofs4").unwrap();
        let found = find_modules(root, "k").unwrap();
        assert_eq!(found.len(), MODULES.len() - 1 + 1);
        assert_eq!(found[0].sys_name, "virtio_ring");
        let rng = &found[found.len() - 2];
        assert_eq!(
            (rng.file_name.as_str(), rng.sys_name.as_str()),
            ("virtio-rng.ko", "virtio_rng")
        );
        assert!(
            load_order(&found).ends_with("virtio-rng.ko virtio_rng\nautofs4.ko autofs4\n"),
            "{}",
            load_order(&found)
        );

        fs::remove_file(rng.path.clone()).unwrap();
        let err = find_modules(root, "k").unwrap_err().to_string();
        assert!(err.contains("no module virtio-rng"), "{err}");
    }

    #[test]
    fn compressed_modules_are_reported_as_such() {
        let files = BTreeMap::new();
        let compressed: BTreeSet<String> = MODULES.iter().map(|m| sys_name(m)).collect();
        let err = pick_modules(&files, &compressed, &BTreeSet::new(), "k")
            .unwrap_err()
            .to_string();
        assert!(err.contains("compressed"), "{err}");
    }

    #[test]
    fn host_segment_carries_the_agent_as_init() {
        let segment = host_segment(b"\x7fELFagent", b"").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut child = crate::tool::for_test(crate::tool::Tool::Cpio)
            .args(["-id", "--quiet"])
            .current_dir(tmp.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&segment).unwrap();
        assert!(child.wait().unwrap().success());
        let root = tmp.path();
        assert_eq!(
            fs::read_link(root.join("init")).unwrap(),
            Path::new(AGENT_OVERRIDE_PATH)
        );
        // Through the link, as the kernel runs it.
        assert_eq!(fs::read(root.join("init")).unwrap(), b"\x7fELFagent");
        assert_eq!(fs::read(root.join(HOST_CA_PATH)).unwrap(), b"");
    }
}
