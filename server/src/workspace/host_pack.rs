//! Packs made by the host's git from HEAD's snapshot: for a workspace's
//! first transfer (as files with their index, which the guest takes as
//! they are) and for live sync when the host's HEAD moved.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use super::WorkspaceError;
use super::transfer::{git_err, git_output, host_git};

/// The objects of the snapshots (commit, trees, blobs) of `commits`, not
/// their history, without those `exclude` has, one id per line.
fn snapshot_objects(
    root: &Path,
    commits: &[&str],
    exclude: Option<&str>,
) -> Result<Vec<u8>, WorkspaceError> {
    let mut objects = Vec::new();
    let not = exclude.map(|e| format!("^{e}"));
    for c in commits {
        let mut args = vec!["rev-list", "--objects", "--no-object-names", "-n", "1", c];
        args.extend(not.as_deref());
        objects.extend(git_output(root, &args)?);
    }
    Ok(objects)
}

/// `git pack-objects ARGS` with `objects` on its stdin; its stdout.
fn pack_objects(
    root: &Path,
    objects: Vec<u8>,
    args: &[&std::ffi::OsStr],
) -> Result<Vec<u8>, WorkspaceError> {
    let mut child = host_git(root)
        .args(["pack-objects", "-q"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| git_err(root, "cannot run git pack-objects", e))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&objects));
    let out = child
        .wait_with_output()
        .map_err(|e| git_err(root, "git pack-objects", e))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(git_err(
            root,
            "git pack-objects",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(out.stdout)
}

/// A pack with the snapshots of `commits` (see [`snapshot_objects`]), in
/// memory.
fn snapshot_pack(
    root: &Path,
    commits: &[&str],
    exclude: Option<&str>,
) -> Result<Vec<u8>, WorkspaceError> {
    let objects = snapshot_objects(root, commits, exclude)?;
    pack_objects(root, objects, &["--stdout".as_ref()])
}

/// The pack of `commits`' snapshots and its index, as files in a new
/// temporary directory: the guest takes both as they are, so it never
/// indexes the pack itself.
pub(super) struct PackFiles {
    pub(super) dir: tempfile::TempDir,
    /// `pack-ID`, the files' name without extension.
    pub(super) name: String,
}

/// The snapshots of `commits` without the blobs in `exclude` (which the
/// local pack carries).
pub(super) fn snapshot_pack_files(
    root: &Path,
    commits: &[String],
    exclude: &HashSet<String>,
) -> Result<PackFiles, WorkspaceError> {
    let commits: Vec<&str> = commits.iter().map(String::as_str).collect();
    let objects = snapshot_objects(root, &commits, None)?;
    let mut kept = Vec::with_capacity(objects.len());
    for line in objects.split_inclusive(|&b| b == b'\n') {
        let id = String::from_utf8_lossy(line);
        if !exclude.contains(id.trim()) {
            kept.extend_from_slice(line);
        }
    }
    pack_files(root, kept)
}

/// `objects` (ids, one per line) packed into files.
pub(super) fn pack_files(root: &Path, objects: Vec<u8>) -> Result<PackFiles, WorkspaceError> {
    let dir = tempfile::Builder::new()
        .prefix("banger-pack-")
        .tempdir()
        .map_err(|e| git_err(root, "a temporary directory", e))?;
    let base = dir.path().join("pack");
    let id = pack_objects(root, objects, &[base.as_os_str()])?;
    let id = String::from_utf8_lossy(&id).trim().to_string();
    if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(git_err(
            root,
            "git pack-objects",
            format!("unexpected pack name {id:?} (a SHA-256 repository cannot be shipped yet)"),
        ));
    }
    Ok(PackFiles {
        dir,
        name: format!("pack-{id}"),
    })
}

/// For live sync when the host's HEAD moved: a pack of `new`'s snapshot
/// without what `old`'s already gave the guest (all of it when `old` is
/// unknown here), and whether `new` has parents (so it becomes a shallow
/// boundary in the guest).
pub fn head_pack(
    root: &Path,
    new: &str,
    old: Option<&str>,
) -> Result<(Vec<u8>, bool), WorkspaceError> {
    let old =
        old.filter(|o| git_output(root, &["cat-file", "-e", &format!("{o}^{{commit}}")]).is_ok());
    let pack = snapshot_pack(root, &[new], old)?;
    let has_parents = !git_output(root, &["rev-parse", &format!("{new}^@")])?.is_empty();
    Ok((pack, has_parents))
}
