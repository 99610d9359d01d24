//! A VM's disks: the copy-on-write root over the shared read-only image,
//! and the work disk mounted at `/root`.
//!
//! The root strategy is a trait: [`OverlayRoot`] (the guest's initramfs
//! assembles overlayfs over a per-VM sparse upper disk) works on every host,
//! including ones without device-mapper; a dm-snapshot strategy (one
//! read-write block device per VM, `banger.root=direct`) joins it later.
//! **Invariant:** the base image is never written: it is attached read-only.

use std::path::{Path, PathBuf};

use crate::tool::{self, Tool, ToolError};

/// A disk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A host tool is missing or failed.
    #[error(transparent)]
    Run(#[from] ToolError),
    /// The destination is already in the image.
    #[error("{path} already exists on {image}")]
    Exists {
        /// The path inside the image.
        path: String,
        /// The image.
        image: String,
    },
    /// A tool reported a problem.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The program.
        tool: String,
        /// Its stderr, or why it could not run.
        detail: String,
    },
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Which role a drive plays; the guest finds drives by this serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveRole {
    /// The root file system (read-only base under overlay, or a rw snapshot).
    Rootfs,
    /// The per-VM overlay upper layer.
    Overlay,
    /// The work disk, mounted at /root.
    Work,
    /// Layer `n` (1 = the lowest) of a derived image, read-only, between
    /// the base and the per-VM upper.
    Layer(u8),
    /// The project's dependency cache (`cache.rs`).
    Cache,
}

/// The most layers an image may have over its base: each is a virtio-mmio
/// device, and QEMU's microvm has a fixed number of those.
pub const MAX_LAYERS: usize = 8;

impl DriveRole {
    /// The virtio-blk serial the guest's initramfs looks for.
    pub fn serial(self) -> String {
        match self {
            DriveRole::Rootfs => "rootfs".into(),
            DriveRole::Overlay => "overlay".into(),
            DriveRole::Work => "work".into(),
            DriveRole::Layer(n) => format!("layer{n}"),
            DriveRole::Cache => "cache".into(),
        }
    }
}

/// A block device handed to the VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Its role (and serial).
    pub role: DriveRole,
    /// Backing file.
    pub path: PathBuf,
    /// Attached read-only.
    pub read_only: bool,
}

/// How a VM gets a writable root over a shared base image.
pub trait RootStrategy: Send + Sync {
    /// Short name, recorded for `vm show`.
    fn name(&self) -> &'static str;
    /// Kernel command-line argument that tells the initramfs what to do.
    fn kernel_arg(&self) -> &'static str;
    /// Creates the per-VM root layer in `vm_dir` (`bytes`: its apparent
    /// size, sparse); O(1) in the image size.
    fn create(&self, vm_dir: &Path, bytes: u64) -> Result<(), DiskError>;
    /// The drives to attach at boot: the image's base disk and its layers
    /// (lowest first), then the VM's own.
    fn drives(&self, base_image: &Path, layers: &[PathBuf], vm_dir: &Path) -> Vec<Drive>;
}

/// overlayfs assembled by the guest's initramfs: lower = the shared base
/// image (read-only), upper = a sparse per-VM ext4 whose size is the VM's
/// `--system-overlay-size`.
pub struct OverlayRoot;

impl OverlayRoot {
    const FILE: &'static str = "overlay.ext4";

    /// The upper disk's backing file.
    pub fn path(vm_dir: &Path) -> PathBuf {
        vm_dir.join(Self::FILE)
    }
}

impl RootStrategy for OverlayRoot {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn kernel_arg(&self) -> &'static str {
        "banger.root=overlay"
    }

    fn create(&self, vm_dir: &Path, bytes: u64) -> Result<(), DiskError> {
        make_ext4(&vm_dir.join(Self::FILE), bytes, "overlay", None)
    }

    fn drives(&self, base_image: &Path, layers: &[PathBuf], vm_dir: &Path) -> Vec<Drive> {
        let mut drives = vec![Drive {
            role: DriveRole::Rootfs,
            path: base_image.to_path_buf(),
            read_only: true,
        }];
        drives.extend(layers.iter().zip(1u8..).map(|(path, n)| Drive {
            role: DriveRole::Layer(n),
            path: path.clone(),
            read_only: true,
        }));
        drives.push(Drive {
            role: DriveRole::Overlay,
            path: vm_dir.join(Self::FILE),
            read_only: false,
        });
        drives
    }
}

/// The work disk: `/root` in the guest, kept across stop and start.
pub struct WorkDisk;

impl WorkDisk {
    const FILE: &'static str = "work.ext4";

    /// Its backing file.
    pub fn path(vm_dir: &Path) -> PathBuf {
        vm_dir.join(Self::FILE)
    }

    /// Creates the sparse work disk with root's home skeleton on it (so a
    /// `.hushlogin` is not hidden under the mount).
    pub fn create(vm_dir: &Path, bytes: u64) -> Result<(), DiskError> {
        let skel = tempfile::Builder::new()
            .prefix("work-skel")
            .tempdir_in(vm_dir)
            .map_err(|source| DiskError::Io {
                what: "cannot create a temporary directory in",
                path: vm_dir.display().to_string(),
                source,
            })?;
        let hush = skel.path().join(".hushlogin");
        std::fs::write(&hush, b"").map_err(|source| DiskError::Io {
            what: "cannot write",
            path: hush.display().to_string(),
            source,
        })?;
        let path = Self::path(vm_dir);
        make_ext4(&path, bytes, "work", Some(skel.path()))?;
        // mkfs -d keeps the root directory at 0755; /root is 0700.
        run_tool(
            tool::command(Tool::Debugfs)
                .arg("-w")
                .arg("-R")
                .arg("sif / mode 040700")
                .arg(&path),
        )
    }

    /// The drive to attach.
    pub fn drive(vm_dir: &Path) -> Drive {
        Drive {
            role: DriveRole::Work,
            path: Self::path(vm_dir),
            read_only: false,
        }
    }
}

/// Makes a sparse ext4 file. Lazy inode-table and journal initialisation
/// keep a new disk at a few MiB allocated whatever its size; the guest
/// kernel finishes the job in the background.
pub fn make_ext4(
    path: &Path,
    bytes: u64,
    label: &str,
    populate: Option<&Path>,
) -> Result<(), DiskError> {
    let file = std::fs::File::create(path).map_err(|source| DiskError::Io {
        what: "cannot create",
        path: path.display().to_string(),
        source,
    })?;
    file.set_len(bytes).map_err(|source| DiskError::Io {
        what: "cannot size",
        path: path.display().to_string(),
        source,
    })?;
    drop(file);
    let mut cmd = tool::command(Tool::Mkfs);
    cmd.args([
        "-q",
        "-F",
        "-L",
        label,
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1",
    ]);
    if let Some(dir) = populate {
        cmd.arg("-d").arg(dir);
    }
    cmd.arg(path);
    run_tool(&mut cmd)
}

fn run_tool(cmd: &mut std::process::Command) -> Result<(), DiskError> {
    tool::run(cmd)?;
    Ok(())
}

/// Repairs a guest's ext4 image before the host edits it: after a guest
/// ran on it, e2fsprogs refuses stale bitmaps the kernel tolerates (seed
/// bug: "Inode bitmap checksum does not match bitmap" on restart).
pub fn check_before_edit(image: &Path) -> Result<(), DiskError> {
    let out = tool::output(tool::command(Tool::E2fsck).arg("-fy").arg(image))?;
    // 0: clean, 1: errors fixed; anything else is not safe to write into.
    match out.status.code() {
        Some(0 | 1) => Ok(()),
        _ => Err(DiskError::Tool {
            tool: "e2fsck".into(),
            detail: format!(
                "{} could not be repaired: {}",
                image.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        }),
    }
}

/// Whether `path` exists inside an (unmounted) ext4 image.
pub fn exists_in_image(image: &Path, path: &str) -> bool {
    tool::command(Tool::Debugfs)
        .args(["-R", &format!("stat \"{path}\"")])
        .arg(image)
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stderr).contains("File not found"))
        .unwrap_or(false)
}

/// Copies the tree at `src` into the unmounted ext4 `image` as `dest` (a
/// new directory), owned by root, keeping modes and symlinks, without
/// mounting anything. Runs [`check_before_edit`] first.
pub fn copy_tree_into(image: &Path, src: &Path, dest: &str) -> Result<(), DiskError> {
    check_before_edit(image)?;
    if exists_in_image(image, dest) {
        return Err(DiskError::Exists {
            path: dest.to_string(),
            image: image.display().to_string(),
        });
    }
    let mut script = String::new();
    let quote = |s: &str| -> Result<String, DiskError> {
        if s.contains('"') || s.contains('\n') {
            return Err(DiskError::Tool {
                tool: "debugfs".into(),
                detail: format!("cannot copy a name with a quote or newline: {s:?}"),
            });
        }
        Ok(format!("\"{s}\""))
    };
    fn walk(
        dir: &Path,
        rel: &str,
        script: &mut String,
        quote: &dyn Fn(&str) -> Result<String, DiskError>,
    ) -> Result<(), DiskError> {
        use std::fmt::Write as _;
        use std::os::unix::fs::PermissionsExt;
        let io = |e: std::io::Error| DiskError::Io {
            what: "cannot read",
            path: dir.display().to_string(),
            source: e,
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(e.path()).map_err(io)?;
            let _ = writeln!(script, "cd {}", quote(rel)?);
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(e.path()).map_err(io)?;
                let _ = writeln!(
                    script,
                    "symlink {} {}",
                    quote(&name)?,
                    quote(&target.to_string_lossy())?
                );
            } else if meta.is_dir() {
                let _ = writeln!(script, "mkdir {}", quote(&name)?);
                root_owned(
                    script,
                    &quote(&name)?,
                    0o040000 | (meta.permissions().mode() & 0o7777),
                );
                walk(&e.path(), &format!("{rel}/{name}"), script, quote)?;
            } else if meta.is_file() {
                let _ = writeln!(
                    script,
                    "write {} {}",
                    quote(&e.path().to_string_lossy())?,
                    quote(&name)?
                );
                root_owned(
                    script,
                    &quote(&name)?,
                    0o100000 | (meta.permissions().mode() & 0o7777),
                );
            }
        }
        Ok(())
    }
    let (parent, name) = dest.rsplit_once('/').unwrap_or(("", dest));
    let parent = if parent.is_empty() { "/" } else { parent };
    {
        use std::fmt::Write as _;
        let _ = writeln!(script, "cd {}\nmkdir {}", quote(parent)?, quote(name)?);
        root_owned(&mut script, &quote(name)?, 0o040755);
    }
    walk(src, dest, &mut script, &quote)?;
    let file = tempfile::NamedTempFile::new().map_err(|e| DiskError::Io {
        what: "cannot create a temporary file in",
        path: std::env::temp_dir().display().to_string(),
        source: e,
    })?;
    std::fs::write(file.path(), &script).map_err(|e| DiskError::Io {
        what: "cannot write",
        path: file.path().display().to_string(),
        source: e,
    })?;
    let out = tool::output(
        tool::command(Tool::Debugfs)
            .arg("-w")
            .arg("-f")
            .arg(file.path())
            .arg(image),
    )?;
    // debugfs exits 0 whatever happens; its complaints go to stderr after
    // the version banner.
    let errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if !errors.is_empty() {
        return Err(DiskError::Tool {
            tool: "debugfs".into(),
            detail: errors.join("; "),
        });
    }
    Ok(())
}

/// debugfs commands that give an inode `mode` and root ownership.
fn root_owned(script: &mut String, quoted: &str, mode: u32) {
    use std::fmt::Write as _;
    let _ = writeln!(
        script,
        "sif {quoted} mode 0{mode:o}\nsif {quoted} uid 0\nsif {quoted} gid 0"
    );
}

/// Bytes actually allocated on the host for a file (sparse files count
/// only what is written).
pub fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Copies a sparse file: only its data extents are read and written
/// (`SEEK_DATA`/`SEEK_HOLE`, then `copy_file_range`), so a disk of many GiB
/// with a few MiB written copies in the time of those MiB. The copy is
/// made beside `dst` and renamed over it.
pub fn copy_sparse(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let from = std::fs::File::open(src)?;
    let len = from.metadata()?.len();
    let tmp = dst.with_extension("copying");
    let to = std::fs::File::create(&tmp)?;
    let copied = (|| -> std::io::Result<()> {
        to.set_len(len)?;
        let (fd_in, fd_out) = (from.as_raw_fd(), to.as_raw_fd());
        let mut pos: i64 = 0;
        let end = i64::try_from(len).map_err(std::io::Error::other)?;
        while pos < end {
            // SAFETY: lseek on an open descriptor; no pointers.
            let data = unsafe { libc::lseek(fd_in, pos, libc::SEEK_DATA) };
            if data < 0 {
                let e = std::io::Error::last_os_error();
                // ENXIO: no data after pos (the rest is a hole).
                if e.raw_os_error() == Some(libc::ENXIO) {
                    break;
                }
                return Err(e);
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd_in, data, libc::SEEK_HOLE) };
            if hole < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let (mut off_in, mut off_out) = (data, data);
            while off_in < hole {
                let want = usize::try_from(hole - off_in).unwrap_or(usize::MAX);
                // SAFETY: both offsets are live i64s the kernel updates.
                let n = unsafe {
                    libc::copy_file_range(fd_in, &mut off_in, fd_out, &mut off_out, want, 0)
                };
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while it was copied", src.display()),
                    ));
                }
            }
            pos = hole;
        }
        Ok(())
    })();
    match copied.and_then(|()| std::fs::rename(&tmp, dst)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_copy_keeps_data_and_holes() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let mut f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.seek(SeekFrom::Start((64 << 20) - 3)).unwrap();
        f.write_all(b"end").unwrap();
        drop(f);
        let dst = dir.path().join("dst.img");
        std::fs::write(&dst, b"old contents").unwrap();
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        // Holes stay holes: far less than the 64 MiB is allocated.
        assert!(allocated_bytes(&dst) < 8 << 20, "{}", allocated_bytes(&dst));
        assert!(!dir.path().join("dst.copying").exists());
        // A missing source is an error, and the destination is untouched.
        assert!(copy_sparse(&dir.path().join("nope"), &dst).is_err());
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 64 << 20);
    }

    fn debugfs(img: &Path, req: &str) -> String {
        let out = tool::for_test(Tool::Debugfs)
            .args(["-R", req])
            .arg(img)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn work_disk_is_sparse_ext4_with_a_private_home() {
        let dir = tempfile::tempdir().unwrap();
        WorkDisk::create(dir.path(), 8 << 30).unwrap();
        let img = WorkDisk::path(dir.path());
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 8 << 30);
        assert!(
            allocated_bytes(&img) < 32 << 20,
            "{}",
            allocated_bytes(&img)
        );
        assert!(debugfs(&img, "ls /").contains(".hushlogin"));
        assert!(debugfs(&img, "stat /").contains("Mode:  0700"));
        let fsck = tool::for_test(Tool::E2fsck)
            .arg("-fn")
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }

    #[test]
    fn overlay_root_attaches_the_base_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let strategy = OverlayRoot;
        strategy.create(dir.path(), 4 << 30).unwrap();
        let size = std::fs::metadata(OverlayRoot::path(dir.path()))
            .unwrap()
            .len();
        assert_eq!(size, 4 << 30, "the upper disk has the size asked for");
        let drives = strategy.drives(Path::new("/images/base.ext4"), &[], dir.path());
        assert_eq!(drives[0].role, DriveRole::Rootfs);
        assert!(drives[0].read_only);
        assert_eq!(drives[1].path, dir.path().join("overlay.ext4"));
        assert!(!drives[1].read_only);
        assert!(allocated_bytes(&drives[1].path) < 32 << 20);
        // A derived image's layers sit between the base and the upper,
        // read-only, lowest first.
        let layers = [
            PathBuf::from("/images/l1.ext4"),
            PathBuf::from("/images/l2.ext4"),
        ];
        let drives = strategy.drives(Path::new("/images/base.ext4"), &layers, dir.path());
        let roles: Vec<String> = drives.iter().map(|d| d.role.serial()).collect();
        assert_eq!(roles, ["rootfs", "layer1", "layer2", "overlay"]);
        assert_eq!(drives[2].path, layers[1]);
        assert!(drives[1].read_only && drives[2].read_only);
    }

    #[test]
    fn a_tree_is_copied_into_an_image_with_modes_links_and_root_owner() {
        let dir = tempfile::tempdir().unwrap();
        WorkDisk::create(dir.path(), 256 << 20).unwrap();
        let img = WorkDisk::path(dir.path());
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub dir")).unwrap();
        std::fs::write(src.join("sub dir/a file"), "hello\n").unwrap();
        std::fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("sub dir/a file", src.join("link")).unwrap();
        copy_tree_into(&img, &src, "/repo").unwrap();
        let ls = debugfs(&img, "ls -l /repo");
        assert!(ls.contains("100755") && ls.contains("run.sh"), "{ls}");
        assert!(ls.contains("120777") && ls.contains("link"), "{ls}");
        let cat = tool::for_test(Tool::Debugfs)
            .args(["-R", "cat \"/repo/sub dir/a file\""])
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(cat.stdout, b"hello\n");
        let fsck = tool::for_test(Tool::E2fsck)
            .arg("-fn")
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        // Never over an existing tree.
        let err = copy_tree_into(&img, &src, "/repo").unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn missing_tool_is_a_clear_error() {
        let err = run_tool(tool::command(Tool::Debugfs).env("PATH", "/nonexistent")).unwrap_err();
        assert!(
            err.to_string()
                .contains("debugfs not found; install it: apt-get install e2fsprogs"),
            "{err}"
        );
    }
}
