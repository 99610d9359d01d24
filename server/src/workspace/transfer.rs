//! Shipping a selection into a guest as one stream: a tar archive with the
//! working-tree files under `repo/` and, under `banger-meta/`, a git pack of
//! the HEAD commit's snapshot plus what the guest needs to make HEAD, branch
//! and index match the host's (HEAD becomes a shallow boundary, so history
//! is not shipped).
//!
//! The guest side is [`GUEST_SCRIPT`], run by the agent with the archive on
//! its stdin.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::tool::{self, Tool};

use super::sync::{HashingReader, HostStat, Kind, SyncedFile, kind_of};
use super::{FileKind, Selection, WorkspaceError};

/// Where the workspace lives in the guest (on the work disk).
pub const GUEST_PATH: &str = "/root/repo";

/// Unpacks the archive from stdin into `$1` (the guest path) and makes it a
/// git repository whose HEAD, branch and index match the host's; `$2`/`$3`
/// are the git identity. An existing `$1` is replaced only when `$4` is
/// `replace`; otherwise the script exits 5 and touches nothing (the guest's
/// own edits are never thrown away unasked).
pub const GUEST_SCRIPT: &str = r#"set -eu
dest=$1
name=$2
email=$3
# An image without them (a container image) cannot hold a workspace.
if ! command -v git >/dev/null 2>&1 || ! tar --help 2>&1 | grep -q -e --transform; then
    echo "this image lacks git or GNU tar, which a workspace needs in the guest; use an image that has them (or add them: banger image build NAME --from IMAGE --packages git,tar)" >&2
    exit 6
fi
if [ -e "$dest" ] || [ -L "$dest" ]; then
    if [ "${4:-}" != replace ]; then
        echo "$dest already exists in the guest" >&2
        exit 5
    fi
    rm -rf "$dest"
fi
mkdir -p "$dest"
cd "$dest"
# Files land in place (no second copy); the metadata lands under .git,
# which git init then completes. Symlink targets are left alone.
tar -x -f - --transform 's,^repo/,,SH' --transform 's,^banger-meta/,.git/banger-meta/,SH'
git init -q
git config user.name "$name"
git config user.email "$email"
meta=.git/banger-meta
if [ -f "$meta/head" ]; then
    git index-pack --stdin <"$meta/pack" >/dev/null
    if [ -s "$meta/shallow" ]; then cp "$meta/shallow" .git/shallow; fi
    head=$(cat "$meta/head")
    branch=$(cat "$meta/branch")
    if [ -n "$branch" ]; then
        git update-ref "refs/heads/$branch" "$head"
        git symbolic-ref HEAD "refs/heads/$branch"
    else
        git update-ref --no-deref HEAD "$head"
    fi
    git read-tree HEAD
    # Submodules are not shipped: an empty directory keeps each gitlink in
    # the index as an uninitialised submodule, neither changed nor deleted.
    git ls-files -s | while read -r mode _ _ path; do
        if [ "$mode" = 160000 ]; then mkdir -p "$path"; fi
    done
fi
git update-index -q --refresh >/dev/null 2>&1 || true
if [ -s "$meta/new-branch" ]; then
    git checkout -q -b "$(cat "$meta/new-branch")" "$(cat "$meta/new-branch-from")"
fi
# Live sync starts from what was just shipped (in a guest; full_copy builds
# on the host, which records it itself).
agent=$(command -v banger-agent || true)
if [ -n "$agent" ] && [ -f "$meta/sync-manifest" ]; then
    "$agent" sync init "$dest" <"$meta/sync-manifest" >/dev/null
fi
rm -rf "$meta"
"#;

/// Builds, on the host, exactly the repository the guest script would make
/// in the guest (for `full_copy`, which writes it into the disk image
/// before boot): runs [`GUEST_SCRIPT`] here with the archive on its stdin.
pub fn build_on_host(
    sel: &Selection,
    branch: Option<&NewBranch>,
    dest: &Path,
    identity: (&str, &str),
) -> Result<Vec<SyncedFile>, WorkspaceError> {
    // The guest script, run on the host for full_copy.
    let mut child = tool::command(Tool::Sh)
        .args(["-c", GUEST_SCRIPT, "banger-full-copy"])
        .arg(dest)
        .args([identity.0, identity.1, "new"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| git_err(&sel.root, "cannot run sh", e))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let written = write_archive(sel, branch, stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| git_err(&sel.root, "full copy", e))?;
    let manifest = written?;
    if !out.status.success() {
        return Err(git_err(
            &sel.root,
            "building the workspace",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    // What the guest script does with the agent in a guest.
    let mut lines = Vec::new();
    for m in &manifest {
        serde_json::to_writer(&mut lines, &m.manifest_entry()).expect("serializes");
        lines.push(b'\n');
    }
    banger_agent::sync::init(dest, &lines[..])
        .map_err(|e| git_err(&sel.root, "recording the sync manifest", e))?;
    Ok(manifest)
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

fn git_err(root: &Path, what: &str, detail: impl std::fmt::Display) -> WorkspaceError {
    WorkspaceError::Git {
        path: root.display().to_string(),
        message: format!("{what}: {detail}"),
    }
}

/// Host git in `root` (packing needs it).
fn host_git(root: &Path) -> Command {
    let mut cmd = tool::command(Tool::Git);
    cmd.arg("-C").arg(root);
    cmd
}

fn git_output(root: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
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

/// A pack with the snapshots (commit, trees, blobs) of `commits`, not their
/// history.
///
/// Blobs travel even when the guest receives the same bytes as files:
/// measured under TCG, the guest writing them itself (`git hash-object -w`)
/// was slower than receiving and indexing them (docs/benchmarks.md).
fn snapshot_pack(
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
    let mut child = host_git(root)
        .args(["pack-objects", "--stdout", "-q"])
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

fn append(
    tar: &mut tar::Builder<impl Write>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    tar.append_data(&mut h, path, data)
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
    if let Some(head) = &sel.head {
        let mut commits = vec![head.as_str()];
        if let Some(from) = from.as_deref().filter(|f| f != head) {
            commits.push(from);
        }
        let pack = snapshot_pack(root, &commits, None)?;
        // A shallow boundary is a commit present without its parents.
        let mut shallow = String::new();
        for c in &commits {
            if !git_output(root, &["rev-parse", &format!("{c}^@")])?.is_empty() {
                shallow.push_str(c);
                shallow.push('\n');
            }
        }
        let branch = git_output(root, &["symbolic-ref", "-q", "--short", "HEAD"])
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        append(&mut tar, "banger-meta/pack", 0o644, &pack).map_err(|e| io("archive", e))?;
        append(&mut tar, "banger-meta/head", 0o644, head.as_bytes())
            .map_err(|e| io("archive", e))?;
        append(&mut tar, "banger-meta/branch", 0o644, branch.as_bytes())
            .map_err(|e| io("archive", e))?;
        append(&mut tar, "banger-meta/shallow", 0o644, shallow.as_bytes())
            .map_err(|e| io("archive", e))?;

        if let (Some(b), Some(from)) = (new_branch, &from) {
            append(&mut tar, "banger-meta/new-branch", 0o644, b.name.as_bytes())
                .map_err(|e| io("archive", e))?;
            append(
                &mut tar,
                "banger-meta/new-branch-from",
                0o644,
                from.as_bytes(),
            )
            .map_err(|e| io("archive", e))?;
        }
    }
    let mut manifest = Vec::with_capacity(sel.files.len());
    for f in &sel.files {
        let src = root.join(&f.path);
        let name = format!("repo/{}", f.path);
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
                let mut file = HashingReader::new(file, len);
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                h.set_mode(if f.kind == FileKind::Executable {
                    0o755
                } else {
                    0o644
                });
                tar.append_data(&mut h, &name, &mut file)
                    .map_err(|e| io("archive", e))?;
                manifest.push(SyncedFile {
                    path: f.path.clone(),
                    kind: kind_of(f.kind),
                    oid: file.oid(),
                    stat: Some(HostStat::of(&meta)),
                });
            }
        }
    }
    let mut lines = Vec::new();
    for m in &manifest {
        serde_json::to_writer(&mut lines, &m.manifest_entry()).expect("serializes");
        lines.push(b'\n');
    }
    append(&mut tar, "banger-meta/sync-manifest", 0o644, &lines).map_err(|e| io("archive", e))?;
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

    /// The guest script, run here on the host against a scratch "root":
    /// the result must be a repository whose HEAD, branch and index match
    /// the host's, with a clean status.
    #[test]
    fn the_guest_script_recreates_head_branch_and_index() {
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
        git(h, &["add", "-A"]);
        git(h, &["commit", "-qm", "second"]);
        let sel = super::super::select(h, false).unwrap();
        let mut archive = Vec::new();
        write_archive(&sel, None, &mut archive).unwrap();

        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("repo");
        let mut child = crate::tool::for_test(crate::tool::Tool::Sh)
            .args(["-c", GUEST_SCRIPT, "sh"])
            .arg(&dest)
            .args(["Guest", "guest@example.invalid", "new"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
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

    /// An existing guest repository is never removed unasked: the script
    /// refuses (exit 5) and leaves it whole; with `replace` it replaces it.
    #[test]
    fn the_guest_script_keeps_an_existing_repository_unless_told_to_replace() {
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
        let run = |mode: &str| {
            let mut child = crate::tool::for_test(crate::tool::Tool::Sh)
                .args(["-c", GUEST_SCRIPT, "sh"])
                .arg(&dest)
                .args(["Guest", "guest@example.invalid", mode])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // The script may exit before reading its input.
            let _ = child.stdin.take().unwrap().write_all(&archive);
            child.wait_with_output().unwrap()
        };
        let out = run("new");
        assert_eq!(out.status.code(), Some(5));
        assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "guest edit\n"
        );
        let out = run("replace");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        let out = crate::tool::for_test(crate::tool::Tool::Sh)
            .args(["-c", crate::workspace::export::GUEST_SCRIPT, "sh"])
            .arg(&dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Runs the guest script on the host into `dest`.
    fn unpack(archive: &[u8], dest: &Path) {
        let mut child = crate::tool::for_test(crate::tool::Tool::Sh)
            .args(["-c", GUEST_SCRIPT, "sh"])
            .arg(dest)
            .args(["Guest", "guest@example.invalid", "new"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        std::fs::write(h.join("dirty.txt"), "edited on the host\n").unwrap();
        let sel = super::super::select(h, false).unwrap();
        let mut archive = Vec::new();
        write_archive(&sel, None, &mut archive).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let dest = guest.path().join("ws");
        unpack(&archive, &dest);
        // Every object HEAD needs is there: the clean blob made in the
        // guest, the dirty file's committed blob from the pack.
        git(&dest, &["fsck", "--no-dangling", "--no-progress"]);
        assert_eq!(git(&dest, &["show", "HEAD:dirty.txt"]), "committed\n");
        assert_eq!(git(&dest, &["show", "HEAD:clean.txt"]), "same\n");
        assert_eq!(git(&dest, &["status", "--porcelain"]), " M dirty.txt\n");
    }
}
