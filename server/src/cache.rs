//! Per-project dependency caches: one sparse ext4 disk per repository in
//! `<cache>/projects/NAME/`, mounted in that project's VMs (and in the VM
//! that makes its setup image) over the package managers' cache
//! directories, so it outlives `vm run --rm` and a second run downloads
//! nothing it already has. One VM mounts a cache at a time.
//!
//! The guest side is the initramfs's `/init` (`banger.cache=1`): the disk
//! with serial `cache` is mounted at `/var/cache/banger` and each of
//! [`MOUNTS`] bind-mounted over its directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The disk's file name in a cache directory.
const DISK: &str = "cache.ext4";
/// What the cache is for, beside the disk.
const META: &str = "meta.json";
/// Apparent size of a cache disk (sparse: only what is written takes room).
const SIZE: u64 = 32 << 30;

/// Where the guest mounts the cache disk.
pub const GUEST_DIR: &str = banger_agent::protocol::CACHE_DIR;

/// Directories on the cache disk and where the guest mounts each (the
/// guest's `/init` binds the same list).
pub const MOUNTS: &[(&str, &str)] = banger_agent::protocol::CACHE_MOUNTS;

/// What a cache is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    /// The repository (host path).
    repo: String,
    /// Unix seconds.
    created_at: i64,
}

/// A cache as `banger cache list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInfo {
    /// Its name (the repository's directory name and a hash of its path).
    pub name: String,
    /// The repository it serves.
    pub repo: String,
    /// Bytes it takes on the host.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// The cache name of the repository at `repo`: its directory's name and a
/// short hash of its path (two checkouts of one project have two caches).
pub fn name_for(repo: &Path) -> String {
    crate::lsp::settings::suffixed_vm_name(repo)
}

/// Checks a cache name given by a client (it becomes a directory name).
pub fn validate_name(name: &str) -> Result<(), String> {
    crate::spec::validate_name(name)
        .map_err(|_| format!("{name:?} is not a cache name; see: banger cache list"))
}

/// The disk of cache `name` under `root`, made (empty) when missing.
pub fn ensure(root: &Path, name: &str, repo: &str) -> Result<PathBuf, String> {
    validate_name(name)?;
    let dir = root.join(name);
    let disk = dir.join(DISK);
    if disk.is_file() {
        return Ok(disk);
    }
    crate::paths::Dirs::ensure_private(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let partial = dir.join(format!(".{DISK}.partial"));
    crate::disk::make_ext4(&partial, SIZE, "cache", None).map_err(|e| e.to_string())?;
    let meta = Meta {
        repo: repo.to_string(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    fs::write(
        dir.join(META),
        serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    )
    .map_err(|e| format!("cannot write {}: {e}", dir.join(META).display()))?;
    fs::rename(&partial, &disk).map_err(|e| format!("cannot keep {}: {e}", disk.display()))?;
    Ok(disk)
}

/// Every cache under `root`.
pub fn list(root: &Path) -> Vec<CacheInfo> {
    let mut out: Vec<CacheInfo> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let dir = entry.path();
            let meta: Meta = serde_json::from_slice(&fs::read(dir.join(META)).ok()?).ok()?;
            Some(CacheInfo {
                name,
                repo: meta.repo,
                bytes: crate::disk::allocated_bytes(&dir.join(DISK)),
                created_at: meta.created_at,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Removes cache `name` (its disk and all).
pub fn remove(root: &Path, name: &str) -> Result<(), String> {
    validate_name(name)?;
    let dir = root.join(name);
    if !dir.join(META).is_file() {
        return Err(format!("no cache named {name:?}; see: banger cache list"));
    }
    fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_are_made_once_listed_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("projects");
        let name = name_for(Path::new("/home/u/My App"));
        assert!(name.starts_with("my-app-"), "{name}");
        let disk = ensure(&root, &name, "/home/u/My App").unwrap();
        assert!(disk.is_file());
        assert_eq!(
            fs::metadata(&disk).unwrap().len(),
            SIZE,
            "sparse, full size"
        );
        std::fs::write(disk.with_file_name("marker"), "x").unwrap();
        assert_eq!(
            ensure(&root, &name, "/home/u/My App").unwrap(),
            disk,
            "made once"
        );
        let listed = list(&root);
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].name.as_str(), listed[0].repo.as_str()),
            (name.as_str(), "/home/u/My App")
        );
        assert!(listed[0].bytes < 64 << 20, "{}", listed[0].bytes);
        assert!(remove(&root, "../etc").is_err());
        assert!(
            remove(&root, "nope")
                .unwrap_err()
                .contains("no cache named")
        );
        remove(&root, &name).unwrap();
        assert!(list(&root).is_empty());
        for (dir, guest) in MOUNTS {
            assert!(!dir.contains('/') && guest.starts_with('/'));
        }
    }
}
