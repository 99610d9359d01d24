//! Applying OCI layers (tar, optionally gzip) to a root tree, in order,
//! with whiteouts: `.wh.NAME` removes NAME from the layers below, and
//! `.wh..wh..opq` empties its directory of what the layers below put there.
//!
//! Layer contents are untrusted: every path is resolved inside the tree
//! (a symlink is followed as if the tree were `/`, and `..` stops at its
//! root), so no entry, link or whiteout reaches outside it. Entries with
//! `..` in their own path are refused. Runs as the tree's root (root, or
//! root of the build's user namespace: `bangerd oci-unpack`), so owners
//! and modes are kept.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Path, PathBuf};

/// How deep symlinks may nest while resolving one path.
const MAX_LINKS: usize = 40;
/// The opaque-directory marker.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Prefix of a whiteout.
const WHITEOUT: &[u8] = b".wh.";

/// What applying a layer did (for the log).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Entries written.
    pub entries: u64,
    /// Whiteouts applied (files and opaque directories).
    pub whiteouts: u64,
    /// Device nodes left out (not made in a user namespace).
    pub skipped_devices: u64,
}

/// A layer file's compression, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
}

impl Compression {
    /// From an OCI or Docker layer media type; `None` for one banger
    /// cannot read (zstd, foreign layers).
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            _ => None,
        }
    }

    /// Its name on the `oci-unpack` command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
        }
    }

    /// From [`Compression::as_str`].
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "tar" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            _ => None,
        }
    }
}

/// Applies one layer file to `root`.
pub fn apply_file(root: &Path, layer: &Path, compression: Compression) -> io::Result<Applied> {
    let file = fs::File::open(layer)?;
    let reader = io::BufReader::with_capacity(1 << 20, file);
    match compression {
        Compression::None => apply(root, reader),
        Compression::Gzip => apply(root, flate2::read::GzDecoder::new(reader)),
    }
}

/// Applies one layer (a tar stream) to `root`.
pub fn apply(root: &Path, reader: impl Read) -> io::Result<Applied> {
    let mut archive = tar::Archive::new(reader);
    let mut applied = Applied::default();
    // What this layer itself made: an opaque marker hides only what the
    // layers below put in its directory.
    let mut ours: HashSet<Vec<OsString>> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let parts = clean(&raw).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "layer entry {:?} leads out of the image (`..`); the layer is refused",
                    String::from_utf8_lossy(&raw)
                ),
            )
        })?;
        let Some((name, parent)) = parts.split_last() else {
            continue; // the root itself
        };
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE {
            let dir = resolve(root, parent)?;
            if dir.is_dir() {
                for child in fs::read_dir(&dir)? {
                    let child = child?;
                    let mut key = parent.to_vec();
                    key.push(child.file_name());
                    if !ours.contains(&key) {
                        remove(&child.path())?;
                    }
                }
            }
            applied.whiteouts += 1;
            continue;
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                continue;
            }
            let dir = resolve(root, parent)?;
            remove(&dir.join(OsStr::from_bytes(hidden)))?;
            applied.whiteouts += 1;
            continue;
        }
        let dir = ensure_dir(root, parent)?;
        let target = dir.join(name);
        let header = entry.header().clone();
        let kind = header.entry_type();
        // What is there now is replaced, except a directory by a directory.
        if let Ok(meta) = fs::symlink_metadata(&target)
            && !(meta.is_dir() && kind.is_dir())
        {
            remove(&target)?;
        }
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        match kind {
            tar::EntryType::Directory => {
                if !target.is_dir() {
                    fs::create_dir(&target)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)?;
                io::copy(&mut entry, &mut out)?;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name_bytes().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a symlink without a target")
                })?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name_bytes().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a hard link without a target")
                })?;
                let link_parts = clean(&link).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a hard link leads out of the image (`..`); the layer is refused",
                    )
                })?;
                let Some((link_name, link_parent)) = link_parts.split_last() else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a hard link to /",
                    ));
                };
                let source = resolve(root, link_parent)?.join(link_name);
                fs::hard_link(&source, &target)?;
            }
            tar::EntryType::Fifo => {
                nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(mode))
                    .map_err(io::Error::from)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let dev = nix::sys::stat::makedev(
                    u64::from(header.device_major()?.unwrap_or(0)),
                    u64::from(header.device_minor()?.unwrap_or(0)),
                );
                let sflag = if kind == tar::EntryType::Char {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                match nix::sys::stat::mknod(
                    &target,
                    sflag,
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    dev,
                ) {
                    Ok(()) => {}
                    // A user namespace may not make devices; the guest's
                    // /dev is devtmpfs anyway.
                    Err(nix::errno::Errno::EPERM) => {
                        applied.skipped_devices += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // pax headers and the like carry no file.
            _ => continue,
        }
        let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
        let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
        // Owners outside the mapped range stay root's.
        if lchown(&target, uid, gid).is_err() {
            lchown(&target, Some(0), Some(0))?;
        }
        if kind != tar::EntryType::Symlink && kind != tar::EntryType::Link {
            // After chown, which clears set-id bits.
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        }
        ours.insert(parts);
        applied.entries += 1;
    }
    Ok(applied)
}

/// The parts of an entry path (`./a/b/`, `/a/b`, `a//b` are `[a, b]`);
/// `None` when a part is `..`.
fn clean(raw: &[u8]) -> Option<Vec<OsString>> {
    let mut parts = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            p => parts.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Some(parts)
}

/// Where `parts` (a directory path inside the image) is on the host:
/// symlinks along the way are followed as the guest would follow them,
/// with the tree as `/`, so the result is always inside `root`. Parts that
/// do not exist are appended as they are.
pub(crate) fn resolve(root: &Path, parts: &[OsString]) -> io::Result<PathBuf> {
    let mut pending: Vec<OsString> = parts.iter().rev().cloned().collect();
    let mut current: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&current);
        candidate.push(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "too many levels of symbolic links in a layer path",
                    ));
                }
                let target = fs::read_link(&candidate)?;
                let bytes = target.as_os_str().as_bytes();
                if bytes.starts_with(b"/") {
                    current.clear();
                }
                for p in bytes.split(|&b| b == b'/').rev() {
                    pending.push(OsStr::from_bytes(p).to_os_string());
                }
            }
            _ => current.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(current);
    Ok(out)
}

/// [`resolve`], creating missing directories (0755, root's).
fn ensure_dir(root: &Path, parts: &[OsString]) -> io::Result<PathBuf> {
    let dir = resolve(root, parts)?;
    if !dir.is_dir() {
        // A non-directory in the way is replaced, as a later layer would.
        if fs::symlink_metadata(&dir).is_ok() {
            remove(&dir)?;
        }
        fs::create_dir_all(&dir)?;
    }
    Ok(dir)
}

/// Removes a file, link or directory tree; a missing one is fine.
fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `bangerd oci-unpack TREE COMPRESSION:LAYER...`: applies the layers in
/// order (run as the tree's root). Prints a line per layer; exit 1 with
/// the reason on failure.
pub fn main(args: &[String]) -> i32 {
    let Some((tree, layers)) = args.split_first() else {
        eprintln!("usage: bangerd oci-unpack TREE tar|gzip:LAYER...");
        return 2;
    };
    for arg in layers {
        let Some((kind, path)) = arg.split_once(':') else {
            eprintln!("bad layer argument {arg:?}");
            return 2;
        };
        let Some(compression) = Compression::parse(kind) else {
            eprintln!("bad layer compression {kind:?}");
            return 2;
        };
        match apply_file(Path::new(tree), Path::new(path), compression) {
            Ok(a) => {
                use std::io::Write as _;
                let _ = writeln!(
                    io::stdout(),
                    "{path}: {} entries, {} whiteouts, {} devices left out",
                    a.entries,
                    a.whiteouts,
                    a.skipped_devices
                );
            }
            Err(e) => {
                eprintln!("cannot apply layer {path}: {e}");
                return 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a str),
        Link(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    fn layer(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            match e {
                E::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::File(p, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, data.as_bytes()).unwrap();
                }
                E::Link(p, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).unwrap();
                }
                E::Hard(p, target) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// A raw tar entry whose name the tar crate would refuse to write.
    fn raw_entry(name: &str, data: &str) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        let mut body = data.as_bytes().to_vec();
        body.resize(512, 0);
        out.extend(body);
        out.extend([0u8; 1024]);
        out
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts_and_opaque_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        apply(
            root,
            &layer(&[
                E::Dir("etc"),
                E::File("etc/keep", "1"),
                E::File("etc/gone", "1"),
                E::Dir("opt/app"),
                E::File("opt/app/old", "1"),
                E::File("./usr/bin/tool", "v1"),
            ])[..],
        )
        .unwrap();
        let a = apply(
            root,
            &layer(&[
                E::File("etc/.wh.gone", ""),
                E::File("opt/app/new", "2"),
                E::File("opt/app/.wh..wh..opq", ""),
                E::File("usr/bin/tool", "v2"),
            ])[..],
        )
        .unwrap();
        assert_eq!(a.whiteouts, 2);
        assert!(root.join("etc/keep").exists());
        assert!(!root.join("etc/gone").exists(), "whiteout");
        assert!(
            !root.join("opt/app/old").exists(),
            "opaque dir hides the lower layer"
        );
        assert_eq!(
            fs::read_to_string(root.join("opt/app/new")).unwrap(),
            "2",
            "but not this layer's own file"
        );
        assert_eq!(fs::read_to_string(root.join("usr/bin/tool")).unwrap(), "v2");
        assert!(!root.join("etc/.wh.gone").exists());
    }

    #[test]
    fn symlinks_in_layers_never_lead_out_of_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), "safe").unwrap();
        let escape = format!("{}", outside.display());
        apply(
            &root,
            &layer(&[
                E::Link("abs", &escape),
                E::Link("rel", "../../../../outside"),
                E::Link("lib", "usr/lib"),
            ])[..],
        )
        .unwrap();
        apply(
            &root,
            &layer(&[
                E::File("abs/victim", "owned"),
                E::File("rel/victim", "owned"),
                E::File("lib/libx.so", "x"),
                E::Hard("hard", "abs/victim"),
                E::File("abs/.wh.victim", ""),
            ])[..],
        )
        .unwrap();
        assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "safe");
        // Followed as the guest would, inside the tree.
        assert_eq!(
            fs::read_to_string(root.join(format!("{escape}/victim").trim_start_matches('/')))
                .unwrap_or_default(),
            "",
            "the absolute link's target was made inside the tree (and then whited out)"
        );
        assert_eq!(
            fs::read_to_string(root.join("outside/victim")).unwrap(),
            "owned"
        );
        assert_eq!(
            fs::read_to_string(root.join("usr/lib/libx.so")).unwrap(),
            "x"
        );
        // An entry with `..` is refused whole.
        let err = apply(&root, &raw_entry("a/../../evil", "x")[..]).unwrap_err();
        assert!(err.to_string().contains("leads out of the image"), "{err}");
        assert!(!tmp.path().join("evil").exists());
    }

    #[test]
    fn a_later_file_replaces_a_directory_and_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        apply(
            root,
            &layer(&[E::Dir("x/sub"), E::File("x/sub/f", "1"), E::Link("y", "x")])[..],
        )
        .unwrap();
        apply(
            root,
            &layer(&[E::File("x", "file now"), E::File("y", "not a link")])[..],
        )
        .unwrap();
        assert_eq!(fs::read_to_string(root.join("x")).unwrap(), "file now");
        assert!(
            !fs::symlink_metadata(root.join("y"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn media_types_map_to_compressions() {
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            None
        );
        for c in [Compression::None, Compression::Gzip] {
            assert_eq!(Compression::parse(c.as_str()), Some(c));
        }
    }
}
