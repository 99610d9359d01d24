//! The boot initramfs cache, `CACHE/initrd/IMAGE16-SEGMENT16.img`: an
//! image's initramfs followed by a segment with this build's `/init`, agent
//! and the host's CAs (`image::host_segment`), one file per (image, host
//! segment) pair.
//!
//! Every agent build makes a new segment, so without pruning the directory
//! only grew (~9-22 MB a file; it reached 6.1 GB on a development machine
//! and filled its disk). Daemons of one user share it, and two of them may
//! run different agents (a release and a debug build): a boot holds its file
//! shared (flock) from the moment it is chosen until the VMM has read it,
//! and pruning removes a file only while it holds it alone, so it never
//! takes a file from under a starting VM. What pruning removes:
//! - files of images no longer in the store;
//! - for each image, all but the [`KEEP_PER_IMAGE`] newest (by mtime: when
//!   they were made), never the one a caller is about to boot;
//! - temporary files a writer left (older than [`STALE_TMP`]).
//!
//! A pruned file is made again when a daemon that needs it boots (a write,
//! and a new snapshot of that image: a snapshot's key names its initramfs).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

/// How many files each image keeps (the newest): the daemons a user runs at
/// once, with some slack.
pub(crate) const KEEP_PER_IMAGE: usize = 3;

/// A writer's temporary file older than this is left over from a crash.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// A boot's shared hold on its initramfs file, released when dropped (once
/// the VMM has read the file).
pub(crate) struct InitrdHold(#[allow(dead_code)] Flock<File>);

/// The file for `image_id` and `segment` in `dir`, made from `base` (the
/// image's initramfs) and `segment` when missing, and held shared; and
/// whether this call made it. Blocking.
pub(crate) fn hold(
    dir: &Path,
    image_id: &str,
    base: &Path,
    segment: &[u8],
) -> Result<(PathBuf, InitrdHold, bool), String> {
    use sha2::Digest;
    let key = format!("{:x}", sha2::Sha256::digest(segment));
    let path = dir.join(format!(
        "{}-{}.img",
        &image_id[..16.min(image_id.len())],
        &key[..16]
    ));
    // A file pruned between the open and the lock is made again; a second
    // loss in a row would mean something else deletes it.
    let mut made = false;
    for _ in 0..3 {
        match open_shared(&path) {
            Ok(Some(hold)) => return Ok((path, hold, made)),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        }
        write(dir, &path, base, segment)?;
        made = true;
    }
    Err(format!(
        "{} keeps disappearing as it is made; is something else deleting {}?",
        path.display(),
        dir.display()
    ))
}

/// The file at `path` held shared; `None` if there is none (or it was
/// removed while this waited for the lock).
fn open_shared(path: &Path) -> io::Result<Option<InitrdHold>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let lock = Flock::lock(file, FlockArg::LockShared).map_err(|(_, e)| io::Error::from(e))?;
    Ok(same_file(path, &lock).then_some(InitrdHold(lock)))
}

/// Whether `path` still names the file open in `file`.
fn same_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn write(dir: &Path, path: &Path, base: &Path, segment: &[u8]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut out =
        std::fs::read(base).map_err(|e| format!("cannot read {}: {e}", base.display()))?;
    out.extend_from_slice(segment);
    let tmp = dir.join(format!(
        ".{}.tmp",
        super::vm::random_hex(4).map_err(|e| e.message)?
    ));
    std::fs::write(&tmp, &out)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })
}

/// Removes what [the module](self) says from `dir`, given the ids of the
/// images in the store; `keep` is never removed. Returns the files removed.
/// Blocking; errors are skipped (the next prune tries again).
pub(crate) fn prune(dir: &Path, images: &[String], keep: Option<&Path>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut by_image: std::collections::BTreeMap<String, Vec<(SystemTime, PathBuf)>> =
        Default::default();
    let mut doomed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        let mtime = meta.modified().unwrap_or(now);
        if name.starts_with('.') && name.ends_with(".tmp") {
            if now.duration_since(mtime).unwrap_or_default() > STALE_TMP {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let Some((image, _segment)) = name
            .strip_suffix(".img")
            .and_then(|stem| stem.split_once('-'))
        else {
            continue;
        };
        if !meta.is_file() || keep == Some(path.as_path()) {
            continue;
        }
        if images.iter().any(|id| id.starts_with(image)) {
            by_image
                .entry(image.to_string())
                .or_default()
                .push((mtime, path));
        } else {
            doomed.push(path);
        }
    }
    let keep_image = keep
        .and_then(|k| k.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.split_once('-'))
        .map(|(image, _)| image.to_string());
    for (image, mut files) in by_image {
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        // The file a caller boots counts as one of its image's newest.
        let room = if keep_image.as_deref() == Some(image.as_str()) {
            KEEP_PER_IMAGE.saturating_sub(1)
        } else {
            KEEP_PER_IMAGE
        };
        doomed.extend(files.into_iter().skip(room).map(|(_, p)| p));
    }
    doomed.retain(|path| remove_if_unused(path));
    doomed
}

/// Removes `path` if nobody holds it (a boot between choosing the file and
/// its VMM reading it). Whether it was removed.
fn remove_if_unused(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        return false;
    };
    same_file(path, &lock) && std::fs::remove_file(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE_A: &str = "aaaaaaaaaaaaaaaa0123456789";
    const IMAGE_B: &str = "bbbbbbbbbbbbbbbb0123456789";

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A scratch directory with an image's initramfs (`BASE`) and the
    /// cache directory to use (not made yet).
    fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("initrd.img");
        std::fs::write(&base, b"BASE").unwrap();
        let dir = tmp.path().join("initrd");
        (tmp, base, dir)
    }

    /// Writes `path`, dated `age_s` seconds ago.
    fn write_aged(path: &Path, age_s: u64) {
        std::fs::write(path, b"initramfs").unwrap();
        let when = SystemTime::now() - Duration::from_secs(age_s);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    /// A cache file for `image` made `age_s` seconds ago.
    fn cached(dir: &Path, image: &str, segment: &str, age_s: u64) -> PathBuf {
        let path = dir.join(format!("{}-{segment}.img", &image[..16]));
        write_aged(&path, age_s);
        path
    }

    #[test]
    fn a_boot_gets_one_file_per_segment_made_once() {
        let (tmp, base, dir) = scratch();
        let (path, first, made) = hold(&dir, IMAGE_A, &base, b"SEG1").unwrap();
        assert!(made);
        assert_eq!(std::fs::read(&path).unwrap(), b"BASESEG1");
        assert!(
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("aaaaaaaaaaaaaaaa-")
        );
        drop(first);
        // The same segment again: the same file, not rewritten.
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        let (again, _hold, made) = hold(&dir, IMAGE_A, &base, b"SEG1").unwrap();
        assert!(!made);
        assert_eq!(again, path);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
        // Another segment (another agent build): another file.
        let (other, _h, _) = hold(&dir, IMAGE_A, &base, b"SEG2").unwrap();
        assert_ne!(other, path);
        assert_eq!(std::fs::read(&other).unwrap(), b"BASESEG2");
        // A missing base is a clear error, and leaves no temporary file.
        let err = hold(&dir, IMAGE_B, &tmp.path().join("nope"), b"SEG1")
            .err()
            .unwrap();
        assert!(err.contains("cannot read"), "{err}");
        assert!(names(&dir).iter().all(|n| !n.ends_with(".tmp")));
    }

    #[test]
    fn pruning_keeps_the_newest_per_image_and_drops_gone_images() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for (i, seg) in ["0000000000000001", "0000000000000002", "0000000000000003"]
            .iter()
            .enumerate()
        {
            cached(dir, IMAGE_A, seg, 100 * (i as u64 + 1));
        }
        let newest = cached(dir, IMAGE_A, "0000000000000000", 10);
        let gone = cached(dir, "cccccccccccccccc", "0000000000000001", 10);
        let b = cached(dir, IMAGE_B, "0000000000000001", 5000);
        std::fs::write(dir.join("unrelated.txt"), b"x").unwrap();
        let images = vec![IMAGE_A.to_string(), IMAGE_B.to_string()];
        let mut removed = prune(dir, &images, None);
        removed.sort();
        assert_eq!(
            removed,
            vec![
                dir.join("aaaaaaaaaaaaaaaa-0000000000000003.img"),
                gone.clone()
            ]
        );
        assert!(newest.exists() && b.exists());
        assert!(dir.join("unrelated.txt").exists());
        // Nothing more to do.
        assert!(prune(dir, &images, None).is_empty());
    }

    #[test]
    fn the_file_a_caller_boots_is_kept_even_when_oldest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let oldest = cached(dir, IMAGE_A, "0000000000000009", 9000);
        for seg in ["0000000000000001", "0000000000000002", "0000000000000003"] {
            cached(dir, IMAGE_A, seg, 10);
        }
        let removed = prune(dir, &[IMAGE_A.to_string()], Some(&oldest));
        assert!(oldest.exists());
        // It takes one of the image's three places: one of the others goes.
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(names(dir).len(), KEEP_PER_IMAGE);
    }

    #[test]
    fn a_file_held_by_a_starting_boot_is_not_pruned() {
        let (_tmp, base, dir) = scratch();
        // Another daemon's boot holds its file (its image is gone from this
        // daemon's store, say).
        let (held, hold_b, _) = hold(&dir, IMAGE_B, &base, b"SEG").unwrap();
        assert!(prune(&dir, &[IMAGE_A.to_string()], None).is_empty());
        assert!(held.exists());
        drop(hold_b);
        assert_eq!(
            prune(&dir, &[IMAGE_A.to_string()], None),
            vec![held.clone()]
        );
        assert!(!held.exists());
        // And a boot of it afterwards makes it again.
        let (again, _h, made) = hold(&dir, IMAGE_B, &base, b"SEG").unwrap();
        assert!(made);
        assert_eq!(again, held);
        assert_eq!(std::fs::read(&again).unwrap(), b"BASESEG");
    }

    #[test]
    fn stale_temporary_files_are_removed_fresh_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let stale = dir.join(".dead.tmp");
        write_aged(&stale, 2 * 3600);
        let fresh = dir.join(".live.tmp");
        write_aged(&fresh, 0);
        prune(dir, &[], None);
        assert!(!stale.exists());
        assert!(fresh.exists());
    }
}
