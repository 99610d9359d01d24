//! The image's initramfs: busybox, the kernel modules a banger guest needs,
//! and `/init` (`init.sh`), which assembles the root from the VM's disks.
//! Also the small per-VM segment that carries the host's agent binary.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::ImageError;
use super::cpio::{self, Entry};

/// Path (inside the initramfs, no leading `/`) where `/init` looks for an
/// agent binary to install over `/usr/sbin/banger-agent` in the guest.
pub const AGENT_OVERRIDE_PATH: &str = "banger/banger-agent";

/// Path (inside the initramfs) of the host's own certificate authorities
/// (`/usr/local/share/ca-certificates`), which `/init` hands to the guest:
/// a guest trusts what its host trusts (a company's TLS proxy, a local
/// registry).
pub const HOST_CA_PATH: &str = "banger/host-ca.pem";

/// The `/init` script.
/// The initramfs `/init` of this build (busybox sh).
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Values of `banger.root=` that [`INIT_SCRIPT`] handles.
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

/// Busybox applets `/init` calls, installed as symlinks in `/bin`.
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "mkdir",
    "insmod",
    "cp",
    "chmod",
    "mv",
    "sleep",
    "switch_root",
    "poweroff",
];

/// Makes the initramfs segment that carries this host's boot logic into any
/// image: `/init` (this build's [`INIT_SCRIPT`]) and the guest agent at
/// [`AGENT_OVERRIDE_PATH`] (both 0755), as one uncompressed newc archive.
///
/// Put it after the image's `initrd.img` (`initrd + segment`): the kernel
/// unpacks archives in order and a later file replaces an earlier one, so
/// the guest runs this host's `/init` and agent whatever image it boots.
pub fn host_segment(agent: &[u8], host_ca: &[u8]) -> std::io::Result<Vec<u8>> {
    let (dir, _) = AGENT_OVERRIDE_PATH
        .rsplit_once('/')
        .expect("override path has a directory");
    let entries = [
        Entry::File {
            path: "init".to_owned(),
            mode: 0o755,
            data: INIT_SCRIPT.as_bytes().to_vec(),
        },
        Entry::Dir {
            path: dir.to_owned(),
            mode: 0o755,
        },
        Entry::File {
            path: AGENT_OVERRIDE_PATH.to_owned(),
            mode: 0o755,
            data: agent.to_vec(),
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
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            picked.push(ModuleFile {
                file_name,
                sys_name: key,
                path: path.clone(),
            });
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
    entries.extend(APPLETS.iter().map(|applet| Entry::Symlink {
        path: format!("bin/{applet}"),
        target: "busybox".into(),
    }));
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
    entries.push(Entry::File {
        path: "init".into(),
        mode: 0o755,
        data: INIT_SCRIPT.as_bytes().to_vec(),
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
    fn init_script_parses_and_uses_only_listed_applets() {
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("init");
        fs::write(&script, INIT_SCRIPT).unwrap();
        let status = crate::tool::for_test(crate::tool::Tool::Sh)
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success(), "init.sh has a syntax error");
        for applet in APPLETS {
            assert!(INIT_SCRIPT.contains(applet), "unused applet {applet}");
        }
        for mode in ROOT_MODES {
            assert!(
                INIT_SCRIPT.contains(&format!("{mode})")),
                "mode {mode} not handled"
            );
        }
        assert!(INIT_SCRIPT.contains(&format!("/{AGENT_OVERRIDE_PATH}")));
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
        let found = find_modules(root, "k").unwrap();
        assert_eq!(found.len(), MODULES.len() - 1);
        assert_eq!(found[0].sys_name, "virtio_ring");
        let rng = found.last().unwrap();
        assert_eq!(
            (rng.file_name.as_str(), rng.sys_name.as_str()),
            ("virtio-rng.ko", "virtio_rng")
        );
        assert!(load_order(&found).ends_with("virtio-rng.ko virtio_rng\n"));

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
    fn host_segment_carries_init_and_the_agent() {
        let segment = host_segment(b"\x7fELFagent", b"").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut child = crate::tool::for_test(crate::tool::Tool::Cpio)
            .args(["-it", "--quiet"])
            .current_dir(tmp.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&segment).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "init\nbanger\nbanger/banger-agent\nbanger/host-ca.pem\n"
        );
    }
}
