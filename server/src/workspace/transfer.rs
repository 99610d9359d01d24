//! Shipping a selection into a guest as one stream: a tar archive with the
//! working-tree files under `repo/` and, under `banger-meta/`, a git pack of
//! the HEAD commit's snapshot plus what the guest needs to make HEAD, branch
//! and index match the host's (HEAD becomes a shallow boundary, so history
//! is not shipped).
//!
//! The guest side is `banger_agent::unpack`, run as [`guest_argv`] with the
//! archive on its stdin; the archive's layout is described there.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use banger_agent::gitfiles;
use banger_agent::unpack::{self, meta};

use crate::tool::{self, Tool};

use super::host_pack::{pack_files, snapshot_pack_files};
use super::local_pack::{BlobPlan, LocalPack};
use super::sync::{HashingReader, HostStat, Kind, SyncedFile, kind_of};
use super::{FileKind, Selection, WorkspaceError};

/// Where the workspace lives in the guest (on the work disk).
pub const GUEST_PATH: &str = "/root/repo";

/// The agent binary in every guest (installed at boot by `/init`).
pub const GUEST_AGENT: &str = "/usr/sbin/banger-agent";

/// The guest command that unpacks the archive on its stdin into `dest`
/// (`banger_agent::unpack`): a git repository whose HEAD, branch and index
/// match the host's, with `identity` as its git user. An existing `dest` is
/// replaced only with `replace`; otherwise it exits 5 and touches nothing
/// (the guest's own edits are never thrown away unasked). Exit 6: the image
/// has no git.
pub fn guest_argv(dest: &str, identity: (&str, &str), replace: bool) -> Vec<String> {
    [
        GUEST_AGENT,
        "workspace",
        "unpack",
        dest,
        identity.0,
        identity.1,
        if replace { "replace" } else { "new" },
    ]
    .map(String::from)
    .to_vec()
}

/// Builds, on the host, exactly the repository the guest would make (for
/// `full_copy`, which writes it into the disk image before boot): the
/// guest's own unpacking, run here with the archive through a pipe.
pub fn build_on_host(
    sel: &Selection,
    branch: Option<&NewBranch>,
    dest: &Path,
    identity: (&str, &str),
) -> Result<Vec<SyncedFile>, WorkspaceError> {
    let (reader, writer) = std::io::pipe().map_err(|e| git_err(&sel.root, "a pipe", e))?;
    let identity = unpack::Identity {
        name: identity.0.to_string(),
        email: identity.1.to_string(),
    };
    let unpacked = std::thread::scope(|scope| {
        let guest =
            scope.spawn(|| unpack::unpack(dest, reader, &identity, unpack::Existing::Refuse));
        // The writer ends (and closes the pipe) before the reader is awaited.
        let written = write_archive(sel, branch, writer);
        let unpacked = guest.join().expect("the unpacking thread does not panic");
        (written, unpacked)
    });
    let (written, unpacked) = unpacked;
    // The unpacking's reason first: when it stops early, the writer fails
    // too, for a reason that says less.
    unpacked.map_err(|e| git_err(&sel.root, "building the workspace", e))?;
    written
}

/// A new guest branch to create and check out after the transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBranch {
    /// Its name (checked with `git check-ref-format --branch`).
    pub name: String,
    /// The host ref it starts from (default HEAD).
    pub from: Option<String>,
}

/// Checks a new branch against the host repository and resolves its start
/// to a commit id.
pub fn resolve_branch(root: &Path, branch: &NewBranch) -> Result<String, WorkspaceError> {
    let invalid = |m: String| WorkspaceError::Invalid(m);
    git_output(root, &["check-ref-format", "--branch", &branch.name])
        .map_err(|_| invalid(format!("invalid branch name {:?}", branch.name)))?;
    let from = branch.from.as_deref().unwrap_or("HEAD");
    let sha = git_output(
        root,
        &["rev-parse", "--verify", "-q", &format!("{from}^{{commit}}")],
    )
    .map_err(|_| {
        invalid(format!(
            "--from {from:?} is not a commit in {}",
            root.display()
        ))
    })?;
    Ok(String::from_utf8_lossy(&sha).trim().to_string())
}

pub(super) fn git_err(root: &Path, what: &str, detail: impl std::fmt::Display) -> WorkspaceError {
    WorkspaceError::Git {
        path: root.display().to_string(),
        message: format!("{what}: {detail}"),
    }
}

/// Host git in `root` (packing needs it).
pub(super) fn host_git(root: &Path) -> Command {
    let mut cmd = tool::command(Tool::Git);
    cmd.arg("-C").arg(root);
    cmd
}

pub(super) fn git_output(root: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
    let out = host_git(root)
        .args(args)
        .output()
        .map_err(|e| git_err(root, "cannot run git", e))?;
    if !out.status.success() {
        return Err(git_err(
            root,
            &format!("git {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(out.stdout)
}

/// The header of a regular file of `len` bytes.
fn file_header(len: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(len);
    h.set_mode(mode);
    h.set_mtime(0);
    h
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    tar.append_data(&mut file_header(data.len() as u64, mode), path, data)
}

/// Gives exactly `left` bytes of `inner`, the size the archive's header
/// already announced: it stops there when the file grew meanwhile, and
/// fails when it shrank.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: std::io::Read> std::io::Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 && max > 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "a file shrank while it was shipped",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes the archive for `sel` to `out`, streaming file contents from the
/// working tree. Returns the manifest of what was sent (blob ids computed
/// from the very bytes that went out, stats taken before reading), which
/// also travels last, as `banger-meta/sync-manifest`, for the guest's side
/// of live sync.
pub fn write_archive(
    sel: &Selection,
    new_branch: Option<&NewBranch>,
    out: impl Write,
) -> Result<Vec<SyncedFile>, WorkspaceError> {
    let root = &sel.root;
    let io = |what: &str, e: std::io::Error| git_err(root, what, e);
    if new_branch.is_some() && sel.head.is_none() {
        return Err(WorkspaceError::Invalid(
            "--branch needs a repository with at least one commit".into(),
        ));
    }
    let from = new_branch.map(|b| resolve_branch(root, b)).transpose()?;
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let meta_entry = |tar: &mut tar::Builder<_>, name: &str, data: &[u8]| {
        append(tar, name, 0o644, data).map_err(|e| io("archive", e))
    };
    let branch = git_output(root, &["symbolic-ref", "-q", "--short", "HEAD"])
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    meta_entry(&mut tar, meta::BRANCH, branch.as_bytes())?;
    // HEAD's snapshot is packed meanwhile, while the files stream (the guest
    // writing them is the slow side).
    let mut packing = None;
    let mut plan = BlobPlan::default();
    if let Some(head) = &sel.head {
        let mut commits = vec![head.clone()];
        if let Some(from) = from.as_ref().filter(|f| *f != head) {
            commits.push(from.clone());
        }
        // A shallow boundary is a commit present without its parents.
        let mut shallow = String::new();
        for c in &commits {
            if !git_output(root, &["rev-parse", &format!("{c}^@")])?.is_empty() {
                shallow.push_str(c);
                shallow.push('\n');
            }
        }
        let tree = git_output(root, &["ls-tree", "-r", "-z", "--full-tree", head])?;
        plan = BlobPlan::new(sel, &tree).map_err(|e| git_err(root, "HEAD's tree", e))?;
        meta_entry(&mut tar, meta::HEAD, head.as_bytes())?;
        meta_entry(&mut tar, meta::SHALLOW, shallow.as_bytes())?;
        meta_entry(&mut tar, meta::TREE, &tree)?;
        if let (Some(b), Some(from)) = (new_branch, &from) {
            meta_entry(&mut tar, meta::NEW_BRANCH, b.name.as_bytes())?;
            meta_entry(&mut tar, meta::NEW_BRANCH_FROM, from.as_bytes())?;
        }
        let root = root.clone();
        let exclude: HashSet<String> = plan.blobs.values().cloned().collect();
        packing = Some(std::thread::spawn(move || {
            snapshot_pack_files(&root, &commits, &exclude)
        }));
    }
    let mut local = (!plan.blobs.is_empty()).then(|| LocalPack::new(plan.blobs.len() as u32));
    if local.is_some() {
        meta_entry(
            &mut tar,
            meta::LOCAL_PACK,
            plan.blobs.len().to_string().as_bytes(),
        )?;
    }
    // HEAD's blobs whose file turned out not to hold them (modified on
    // the host, before or during the transfer): they travel in a pack of
    // their own at the end.
    let mut mispredicted = Vec::new();
    let mut manifest = Vec::with_capacity(sel.files.len());
    for f in &sel.files {
        let src = root.join(&f.path);
        let name = format!("{}{}", meta::REPO, f.path);
        match f.kind {
            FileKind::Symlink => {
                let meta = std::fs::symlink_metadata(&src).map_err(|e| io("cannot stat", e))?;
                let target = std::fs::read_link(&src).map_err(|e| io("cannot read link", e))?;
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                tar.append_link(&mut h, &name, &target)
                    .map_err(|e| io("archive", e))?;
                use std::os::unix::ffi::OsStrExt;
                manifest.push(SyncedFile {
                    path: f.path.clone(),
                    kind: Kind::Symlink,
                    oid: banger_agent::sync::blob_oid(target.as_os_str().as_bytes()),
                    stat: Some(HostStat::of(&meta)),
                });
            }
            FileKind::File | FileKind::Executable => {
                let file = std::fs::File::open(&src).map_err(|e| io("cannot open", e))?;
                let meta = file.metadata().map_err(|e| io("cannot stat", e))?;
                let len = meta.len();
                let file = Exact {
                    inner: file,
                    left: len,
                };
                let mode = if f.kind == FileKind::Executable {
                    0o755
                } else {
                    0o644
                };
                let mut h = file_header(len, mode);
                let oid = match (plan.blobs.get(f.path.as_str()), local.as_mut()) {
                    (Some(want), Some(local)) => {
                        let object = local.object(file, len).map_err(|e| io("archive", e))?;
                        let mut file = HashingReader::new(object, len);
                        tar.append_data(&mut h, format!("{}{}", meta::BLOB, f.path), &mut file)
                            .map_err(|e| io("archive", e))?;
                        let oid = file.oid();
                        file.into_inner()
                            .finish(gitfiles::hex20(&oid))
                            .map_err(|e| io("archive", e))?;
                        if oid != *want {
                            mispredicted.push(want.clone());
                        }
                        oid
                    }
                    _ => {
                        let mut file = HashingReader::new(file, len);
                        tar.append_data(&mut h, &name, &mut file)
                            .map_err(|e| io("archive", e))?;
                        file.oid()
                    }
                };
                manifest.push(SyncedFile {
                    path: f.path.clone(),
                    kind: kind_of(f.kind),
                    oid,
                    stat: Some(HostStat::of(&meta)),
                });
            }
        }
    }
    let mut packs = Vec::new();
    if let Some(packing) = packing {
        packs.push(
            packing
                .join()
                .map_err(|_| git_err(root, "packing", "the packing thread panicked"))??,
        );
    }
    if !mispredicted.is_empty() {
        let objects = mispredicted
            .iter()
            .flat_map(|o| format!("{o}\n").into_bytes())
            .collect();
        packs.push(pack_files(root, objects)?);
    }
    for pack in &packs {
        for ext in ["pack", "idx"] {
            let name = format!("{}.{ext}", pack.name);
            let file = std::fs::File::open(pack.dir.path().join(&name))
                .map_err(|e| io("cannot open the pack", e))?;
            let len = file
                .metadata()
                .map_err(|e| io("cannot stat the pack", e))?
                .len();
            tar.append_data(
                &mut file_header(len, 0o444),
                format!("{}{name}", meta::OBJECTS),
                file,
            )
            .map_err(|e| io("archive", e))?;
        }
    }
    if let Some(local) = local {
        let idx = local
            .finish()
            .map_err(|e| git_err(root, "the local pack", e))?;
        meta_entry(&mut tar, meta::LOCAL_IDX, &idx)?;
    }
    let mut lines = Vec::new();
    for m in &manifest {
        serde_json::to_writer(&mut lines, &m.manifest_entry()).expect("serializes");
        lines.push(b'\n');
    }
    meta_entry(&mut tar, meta::SYNC_MANIFEST, &lines)?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| io("archive", e))?;
    Ok(manifest)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs git in `dir` with a fixed identity; panics with git's message
    /// when it fails; returns its stdout.
    pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
        let out = crate::tool::for_test(crate::tool::Tool::Git)
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The guest's unpacking, run here against a scratch "root": the result
    /// must be a repository whose HEAD, branch and index match the host's,
    /// with a clean status.
    #[test]
    fn unpacking_recreates_head_branch_and_index() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        git(h, &["init", "-q", "-b", "main"]);
        std::fs::write(h.join("a.txt"), "one\n").unwrap();
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "first"]);
        std::fs::create_dir(h.join("bin")).unwrap();
        std::fs::write(h.join("bin/x"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(h.join("bin/x"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a.txt", h.join("l")).unwrap();
        std::fs::write(h.join("a.txt"), "two\n").unwrap();
        // Several stored blocks, and none.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(h.join("big.bin"), &big).unwrap();
        std::fs::write(h.join("empty"), "").unwrap();
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "second"]);
        let sel = super::super::select(h, false).unwrap();
        let mut archive = Vec::new();
        write_archive(&sel, None, &mut archive).unwrap();

        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("repo");
        let unpacked = unpack(&archive, &dest);
        // Every file is HEAD's: git trusts each by its stat, reading none.
        assert_eq!(unpacked.files, 5);
        assert_eq!((unpacked.index_entries, unpacked.index_clean), (5, 5));
        assert_eq!(git(&dest, &["ls-files", "-s"]), git(h, &["ls-files", "-s"]));
        // The local pack (every file's blob, written in the guest) and the
        // host's pack are whole: checksums, CRCs, every object's id.
        git(&dest, &["fsck", "--strict", "--no-progress"]);
        let packs = std::fs::read_dir(dest.join(".git/objects/pack"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("idx".as_ref()))
            .count();
        assert_eq!(packs, 2);
        assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), big);
        assert_eq!(
            git(&dest, &["cat-file", "-s", "HEAD:big.bin"]).trim(),
            big.len().to_string()
        );
        assert_eq!(
            git(&dest, &["rev-parse", "HEAD"]).trim(),
            sel.head.as_deref().unwrap()
        );
        assert_eq!(
            git(&dest, &["symbolic-ref", "--short", "HEAD"]).trim(),
            "main"
        );
        assert_eq!(
            git(&dest, &["status", "--porcelain"]),
            "",
            "status not clean"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "two\n"
        );
        assert_eq!(
            std::fs::read_link(dest.join("l")).unwrap(),
            Path::new("a.txt")
        );
        let mode = std::fs::metadata(dest.join("bin/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        // Commits can be made (identity set) and history is shallow.
        std::fs::write(dest.join("new.txt"), "n\n").unwrap();
        git(&dest, &["add", "-A"]);
        let out = crate::tool::for_test(crate::tool::Tool::Git)
            .args(["commit", "-qm", "guest"])
            .current_dir(&dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]).trim(), "2");
    }

    /// An existing guest repository is never removed unasked: the unpacking
    /// refuses (exit 5) and leaves it whole; with `replace` it replaces it.
    #[test]
    fn unpacking_keeps_an_existing_repository_unless_told_to_replace() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        git(h, &["init", "-q", "-b", "main"]);
        std::fs::write(h.join("a.txt"), "host\n").unwrap();
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "first"]);
        let sel = super::super::select(h, false).unwrap();
        let mut archive = Vec::new();
        write_archive(&sel, None, &mut archive).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("repo");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("a.txt"), "guest edit\n").unwrap();
        let run = |existing| {
            banger_agent::unpack::unpack(&dest, &archive[..], &guest_identity(), existing)
        };
        let err = run(unpack::Existing::Refuse).unwrap_err();
        assert_eq!(err.exit_code(), 5);
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "guest edit\n"
        );
        run(unpack::Existing::Replace).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "host\n"
        );
    }

    /// A submodule is neither shipped nor lost: the guest keeps its gitlink
    /// (status clean) and a patch made there does not delete it.
    #[test]
    fn a_submodule_stays_a_gitlink_in_the_guest() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        git(h, &["init", "-q", "-b", "main"]);
        std::fs::write(h.join("a.txt"), "one\n").unwrap();
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "first"]);
        let head = git(h, &["rev-parse", "HEAD"]).trim().to_string();
        git(
            h,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{head},vendor/lib"),
            ],
        );
        git(h, &["commit", "-qm", "a submodule"]);
        let sel = super::super::select(h, false).unwrap();
        assert_eq!(sel.submodules, vec!["vendor/lib".to_string()]);
        let mut archive = Vec::new();
        write_archive(&sel, None, &mut archive).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("repo");
        unpack(&archive, &dest);
        assert_eq!(
            git(&dest, &["status", "--porcelain"]),
            "",
            "status not clean"
        );
        assert_eq!(crate::workspace::export_script_tests::export(&dest, ""), "");
    }

    fn guest_identity() -> unpack::Identity {
        unpack::Identity {
            name: "Guest".into(),
            email: "guest@example.invalid".into(),
        }
    }

    /// Runs the guest's unpacking here, into `dest`.
    fn unpack(archive: &[u8], dest: &Path) -> unpack::Unpacked {
        unpack::unpack(dest, archive, &guest_identity(), unpack::Existing::Refuse).unwrap()
    }

    #[test]
    fn a_new_branch_can_start_from_another_commit() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        git(h, &["init", "-q", "-b", "main"]);
        std::fs::write(h.join("a.txt"), "one\n").unwrap();
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "first"]);
        std::fs::write(h.join("a.txt"), "two\n").unwrap();
        git(h, &["commit", "-qam", "second"]);
        let sel = super::super::select(h, false).unwrap();
        let branch = NewBranch {
            name: "feature/x".into(),
            from: Some("HEAD~1".into()),
        };
        let mut archive = Vec::new();
        write_archive(&sel, Some(&branch), &mut archive).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("repo");
        unpack(&archive, &dest);
        assert_eq!(
            git(&dest, &["symbolic-ref", "--short", "HEAD"]).trim(),
            "feature/x"
        );
        assert_eq!(
            git(&dest, &["rev-parse", "HEAD"]).trim(),
            git(h, &["rev-parse", "HEAD~1"]).trim()
        );
        assert_eq!(
            git(&dest, &["rev-parse", "main"]).trim(),
            sel.head.as_deref().unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "one\n"
        );
        assert_eq!(git(&dest, &["status", "--porcelain"]), "");
        // A bad name or an unknown start is refused before anything travels.
        for (name, from) in [("no..dots", None), ("ok", Some("nope"))] {
            let bad = NewBranch {
                name: name.into(),
                from: from.map(str::to_string),
            };
            assert!(
                write_archive(&sel, Some(&bad), Vec::new()).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn paths_and_link_targets_named_like_the_archive_prefixes_survive() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        git(h, &["init", "-q"]);
        std::fs::create_dir_all(h.join("repo/banger-meta")).unwrap();
        std::fs::write(h.join("repo/banger-meta/x"), "x\n").unwrap();
        std::os::unix::fs::symlink("repo/banger-meta/x", h.join("link")).unwrap();
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "names"]);
        let sel = super::super::select(h, false).unwrap();
        let mut archive = Vec::new();
        write_archive(&sel, None, &mut archive).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("ws");
        unpack(&archive, &dest);
        assert_eq!(
            std::fs::read_to_string(dest.join("repo/banger-meta/x")).unwrap(),
            "x\n"
        );
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("repo/banger-meta/x")
        );
        assert!(
            !dest.join(".git/banger-meta").exists(),
            "metadata left behind"
        );
        assert_eq!(git(&dest, &["status", "--porcelain"]), "");
    }

    #[test]
    fn the_guest_repository_is_complete_with_dirty_and_clean_files() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        git(h, &["init", "-q"]);
        std::fs::write(h.join("clean.txt"), "same\n").unwrap();
        std::fs::write(h.join("dirty.txt"), "committed\n").unwrap();
        std::os::unix::fs::symlink("clean.txt", h.join("link")).unwrap();
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "base"]);
        std::fs::write(h.join("same-size.txt"), "aaaa\n").unwrap();
        std::fs::write(h.join("gone.txt"), "x\n").unwrap();
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "more"]);
        std::fs::write(h.join("dirty.txt"), "edited on the host\n").unwrap();
        // Same size as HEAD's blob, written in the same instant: only its
        // id can tell it apart.
        std::fs::write(h.join("same-size.txt"), "bbbb\n").unwrap();
        std::fs::remove_file(h.join("gone.txt")).unwrap();
        let sel = super::super::select(h, false).unwrap();
        let mut archive = Vec::new();
        write_archive(&sel, None, &mut archive).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("ws");
        let unpacked = unpack(&archive, &dest);
        assert_eq!((unpacked.index_entries, unpacked.index_clean), (5, 2));
        // Every object HEAD needs is there: the clean blob made in the
        // guest, the dirty file's committed blob from the pack.
        git(&dest, &["fsck", "--no-dangling", "--no-progress"]);
        assert_eq!(git(&dest, &["show", "HEAD:dirty.txt"]), "committed\n");
        assert_eq!(git(&dest, &["show", "HEAD:clean.txt"]), "same\n");
        assert_eq!(
            git(&dest, &["status", "--porcelain"]),
            " M dirty.txt\n D gone.txt\n M same-size.txt\n"
        );
    }

    /// A repository without a commit yet: its files arrive untracked, on
    /// the host's unborn branch.
    #[test]
    fn a_repository_without_commits_arrives_with_its_files() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        git(h, &["init", "-q", "-b", "trunk"]);
        std::fs::write(h.join("a.txt"), "a\n").unwrap();
        let sel = super::super::select(h, true).unwrap();
        let mut archive = Vec::new();
        write_archive(&sel, None, &mut archive).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("ws");
        let unpacked = unpack(&archive, &dest);
        assert_eq!((unpacked.files, unpacked.index_entries), (1, 0));
        assert_eq!(
            git(&dest, &["symbolic-ref", "HEAD"]).trim(),
            "refs/heads/trunk"
        );
        assert_eq!(git(&dest, &["status", "--porcelain"]), "?? a.txt\n");
    }

    /// A stream cut short (the host's writer failed) fails, and leaves no
    /// half-made repository behind.
    #[test]
    fn a_cut_stream_fails_and_leaves_nothing() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        git(h, &["init", "-q"]);
        for i in 0..20 {
            std::fs::write(h.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
        }
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "files"]);
        let sel = super::super::select(h, false).unwrap();
        let mut archive = Vec::new();
        write_archive(&sel, None, &mut archive).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("ws");
        // Cut inside a file, then at an entry boundary (past the files:
        // only the end is missing).
        let boundary = archive.len() - 1024 - 512 * 2;
        for cut in [archive.len() / 2 + 7, boundary] {
            let err = unpack::unpack(
                &dest,
                &archive[..cut],
                &guest_identity(),
                unpack::Existing::Refuse,
            )
            .unwrap_err();
            assert_eq!(err.exit_code(), 1, "{err}");
            assert!(!dest.exists(), "cut at {cut}: {err}");
        }
    }

    /// `full_copy` builds on the host what the guest would.
    #[test]
    fn the_host_build_matches_the_guest_unpacking() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        git(h, &["init", "-q", "-b", "main"]);
        std::fs::write(h.join("a.txt"), "a\n").unwrap();
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "a"]);
        let sel = super::super::select(h, false).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("repo");
        let name = "Ho\"st \\ x";
        let manifest = build_on_host(&sel, None, &dest, (name, "h@example.invalid")).unwrap();
        assert_eq!(manifest.len(), 1);
        assert_eq!(git(&dest, &["status", "--porcelain"]), "");
        assert_eq!(
            git(&dest, &["config", "--file", ".git/config", "user.name"]).trim(),
            name
        );
        git(&dest, &["fsck", "--strict", "--no-progress"]);
        assert!(dest.join(banger_agent::sync::STATE_DIR).is_dir());
        // A second build into the same place is refused, the first kept.
        assert!(build_on_host(&sel, None, &dest, ("Host", "h@example.invalid")).is_err());
        assert_eq!(git(&dest, &["status", "--porcelain"]), "");
    }
}
