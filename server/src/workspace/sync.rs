//! Live sync, host side: deciding which files travel after the first
//! transfer, by content id against the manifest of what the guest was last
//! given, and encoding them for `banger-agent sync apply` (the guest side,
//! `banger_agent::sync`).
//!
//! The manifest holds, per path, the git blob id and kind the guest was
//! given, and the host file's stat when it was read: a file whose stat did
//! not change is not read again, so a sync that names one file costs the
//! same in a repository of ten files or ten thousand.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub use banger_agent::sync::{ApplyReport, Change, Conflict, Kind, ManifestEntry, Record, Status};
use serde::{Deserialize, Serialize};

use super::FileKind;

/// Stat fields that tell a host file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns.
    pub mtime_ns: i64,
    /// Change time, ns.
    pub ctime_ns: i64,
    /// Inode.
    pub ino: u64,
}

impl HostStat {
    /// From metadata (of the file itself, not a symlink's target).
    pub fn of(meta: &std::fs::Metadata) -> HostStat {
        HostStat {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
        }
    }
}

/// What the guest was given for one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedFile {
    /// Path relative to the repository root.
    pub path: String,
    /// Kind.
    pub kind: Kind,
    /// Git blob id.
    pub oid: String,
    /// The host file's stat when it was read (`None`: read it again).
    pub stat: Option<HostStat>,
}

impl SyncedFile {
    /// The guest's view of this entry.
    pub fn manifest_entry(&self) -> ManifestEntry {
        ManifestEntry {
            path: self.path.clone(),
            kind: self.kind,
            oid: self.oid.clone(),
        }
    }
}

/// The agent's kind for a selection's kind.
pub fn kind_of(k: FileKind) -> Kind {
    match k {
        FileKind::File => Kind::File,
        FileKind::Executable => Kind::Executable,
        FileKind::Symlink => Kind::Symlink,
    }
}

/// A `Read` that computes the git blob id of what passes through it.
pub struct HashingReader<R> {
    inner: R,
    sha: sha1::Sha1,
}

impl<R: Read> HashingReader<R> {
    /// Hashes a blob of `len` bytes read from `inner`.
    pub fn new(inner: R, len: u64) -> Self {
        // The RustCrypto SHA-1 (SHA-NI where the CPU has it): every byte
        // of a workspace passes here.
        let mut sha = <sha1::Sha1 as sha1::Digest>::new();
        sha1::Digest::update(&mut sha, format!("blob {len}\0").as_bytes());
        HashingReader { inner, sha }
    }

    /// The blob id (valid once exactly `len` bytes were read).
    pub fn oid(&self) -> String {
        banger_agent::gitfiles::hex(&sha1::Digest::finalize(self.sha.clone()))
    }

    /// The reader it wraps.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha1::Digest::update(&mut self.sha, &buf[..n]);
        Ok(n)
    }
}

/// One decided step of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this content; the guest must still have `expect`.
    Write {
        /// The new manifest entry.
        file: SyncedFile,
        /// Its content.
        data: Vec<u8>,
        /// What the guest was last given (`None`: nothing).
        expect: Option<String>,
    },
    /// Delete it in the guest, which must still have `expect`.
    Delete {
        /// Path.
        path: String,
        /// What the guest was last given.
        expect: String,
    },
    /// Same content, new stat: only the manifest changes.
    Restat(SyncedFile),
}

impl Step {
    /// The path it is about.
    pub fn path(&self) -> &str {
        match self {
            Step::Write { file, .. } | Step::Restat(file) => &file.path,
            Step::Delete { path, .. } => path,
        }
    }
}

/// Decides one path: `wanted` is its kind when the selection includes it
/// (`None`: it should not be in the guest), `synced` what the guest was
/// last given.
pub fn decide(
    root: &Path,
    path: &str,
    wanted: Option<Kind>,
    synced: Option<&SyncedFile>,
) -> std::io::Result<Option<Step>> {
    let full = root.join(path);
    let meta = match wanted.map(|_| std::fs::symlink_metadata(&full)) {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => None,
    };
    let (Some(kind), Some(meta)) = (wanted, meta) else {
        return Ok(synced.map(|s| Step::Delete {
            path: path.to_string(),
            expect: s.oid.clone(),
        }));
    };
    // The kind on disk wins over the index's (a `chmod +x` not yet staged).
    let kind = if meta.file_type().is_symlink() {
        Kind::Symlink
    } else if kind == Kind::Symlink {
        Kind::File
    } else {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 != 0 {
            Kind::Executable
        } else {
            Kind::File
        }
    };
    let stat = HostStat::of(&meta);
    if let Some(s) = synced
        && s.kind == kind
        && s.stat == Some(stat)
    {
        return Ok(None);
    }
    let data = match kind {
        Kind::Symlink => {
            use std::os::unix::ffi::OsStrExt;
            std::fs::read_link(&full)?.as_os_str().as_bytes().to_vec()
        }
        _ => std::fs::read(&full)?,
    };
    let file = SyncedFile {
        path: path.to_string(),
        kind,
        oid: banger_agent::sync::blob_oid(&data),
        stat: Some(stat),
    };
    Ok(Some(match synced {
        Some(s) if s.oid == file.oid && s.kind == file.kind => Step::Restat(file),
        _ => Step::Write {
            expect: synced.map(|s| s.oid.clone()),
            file,
            data,
        },
    }))
}

/// Encodes the steps that reach the guest as an `apply` stream; `force`
/// overwrites whatever the guest has for the paths it accepts.
pub fn encode(steps: &[Step], force: impl Fn(&str) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for step in steps {
        let record = match step {
            Step::Write { file, data, expect } => Record::Write {
                path: file.path.clone(),
                kind: file.kind,
                size: data.len() as u64,
                expect: expect.clone(),
                force: force(&file.path),
            },
            Step::Delete { path, expect } => Record::Delete {
                path: path.clone(),
                expect: Some(expect.clone()),
                force: force(path),
            },
            Step::Restat(_) => continue,
        };
        serde_json::to_writer(&mut out, &record).expect("records serialize");
        out.push(b'\n');
        if let Step::Write { data, .. } = step {
            out.extend_from_slice(data);
        }
    }
    out
}

/// The host's copy of a path as git would store it: kind and blob id, or
/// `None` when absent.
pub fn host_version(root: &Path, path: &str) -> std::io::Result<Option<(Kind, String)>> {
    let full = root.join(path);
    let meta = match std::fs::symlink_metadata(&full) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    use std::os::unix::fs::PermissionsExt;
    let (kind, data) = if meta.file_type().is_symlink() {
        use std::os::unix::ffi::OsStrExt;
        (
            Kind::Symlink,
            std::fs::read_link(&full)?.as_os_str().as_bytes().to_vec(),
        )
    } else if meta.is_file() {
        let kind = if meta.permissions().mode() & 0o111 != 0 {
            Kind::Executable
        } else {
            Kind::File
        };
        (kind, std::fs::read(&full)?)
    } else {
        return Ok(None);
    };
    Ok(Some((kind, banger_agent::sync::blob_oid(&data))))
}

/// Writes a guest file into the host tree (the path was validated), or
/// removes it (`kind` `None`); a symlink or file in the way is replaced.
pub fn write_host(root: &Path, path: &str, kind: Option<Kind>, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let full = root.join(path);
    let Some(kind) = kind else {
        return match std::fs::remove_file(&full) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    };
    if let Some(dir) = full.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::symlink_metadata(&full)
        .is_ok_and(|m| m.file_type().is_symlink() || kind == Kind::Symlink)
    {
        std::fs::remove_file(&full)?;
    }
    match kind {
        Kind::Symlink => {
            use std::os::unix::ffi::OsStrExt;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(data), &full)
        }
        Kind::File | Kind::Executable => {
            std::fs::write(&full, data)?;
            let mode = if kind == Kind::Executable {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))
        }
    }
}

/// Makes the guest's repository follow the host's HEAD: `$1` the guest
/// path, `$2` the HEAD the guest was given, `$3` the new HEAD, `$4` its
/// branch (empty: detached), `$5` `shallow` when the new HEAD has parents;
/// a pack of what the guest lacks on stdin. Exit 4: the guest moved its own
/// HEAD; its commits, branch, index and files are never thrown away: the
/// host's commit only arrives beside them, as `host/BRANCH` (and as
/// `BRANCH` itself when the guest left that branch where the host had it
/// and is not on it).
pub const HEAD_SCRIPT: &str = r#"set -eu
cd "$1"
old=$2 new=$3 branch=$4
now=$(git rev-parse -q --verify HEAD || true)
git index-pack --stdin >/dev/null
if [ "$5" = shallow ] && ! grep -qx "$new" .git/shallow 2>/dev/null; then
    echo "$new" >>.git/shallow
fi
if [ -n "$old" ] && [ "$now" != "$old" ]; then
    ref=refs/remotes/host/${branch:-HEAD}
    git update-ref "$ref" "$new"
    also=""
    if [ -n "$branch" ] &&
        [ "$(git symbolic-ref -q HEAD || true)" != "refs/heads/$branch" ] &&
        [ "$(git rev-parse -q --verify "refs/heads/$branch" || true)" = "$old" ]; then
        git update-ref "refs/heads/$branch" "$new" "$old"
        also=" and $branch"
    fi
    echo "the guest repository's HEAD moved on its own (now ${now:-none}) and was left as it is; the host's HEAD ${new} arrived as ${ref#refs/remotes/}$also" >&2
    exit 4
fi
if [ -n "$branch" ]; then
    git update-ref "refs/heads/$branch" "$new"
    git symbolic-ref HEAD "refs/heads/$branch"
else
    git update-ref --no-deref HEAD "$new"
fi
git read-tree HEAD
git ls-files -s | while read -r mode _ _ path; do
    if [ "$mode" = 160000 ]; then mkdir -p "$path"; fi
done
git update-index -q --refresh >/dev/null 2>&1 || true
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_stat_is_not_read_and_same_content_only_restats() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a"), "one\n").unwrap();
        let first = match decide(root, "a", Some(Kind::File), None).unwrap() {
            Some(Step::Write { file, expect, .. }) => {
                assert_eq!(expect, None);
                file
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(first.oid, banger_agent::sync::blob_oid(b"one\n"));
        assert_eq!(
            decide(root, "a", Some(Kind::File), Some(&first)).unwrap(),
            None
        );
        // Rewritten with the same bytes: a new stat, no transfer.
        std::fs::remove_file(root.join("a")).unwrap();
        std::fs::write(root.join("a"), "one\n").unwrap();
        assert!(matches!(
            decide(root, "a", Some(Kind::File), Some(&first)).unwrap(),
            Some(Step::Restat(_))
        ));
        std::fs::write(root.join("a"), "two\n").unwrap();
        match decide(root, "a", Some(Kind::File), Some(&first)).unwrap() {
            Some(Step::Write { expect, data, .. }) => {
                assert_eq!(expect.as_deref(), Some(first.oid.as_str()));
                assert_eq!(data, b"two\n");
            }
            other => panic!("{other:?}"),
        }
        // Gone on the host, or no longer selected: deleted in the guest.
        std::fs::remove_file(root.join("a")).unwrap();
        assert_eq!(
            decide(root, "a", Some(Kind::File), Some(&first)).unwrap(),
            Some(Step::Delete {
                path: "a".into(),
                expect: first.oid.clone()
            })
        );
        assert_eq!(decide(root, "a", None, None).unwrap(), None);
    }

    #[test]
    fn the_stream_is_what_the_guest_applies() {
        let host = tempfile::tempdir().unwrap();
        let guest = tempfile::tempdir().unwrap();
        std::fs::create_dir(guest.path().join(".git")).unwrap();
        std::fs::write(host.path().join("x.sh"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            host.path().join("x.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("x.sh", host.path().join("l")).unwrap();
        let steps: Vec<Step> = [("x.sh", Kind::File), ("l", Kind::Symlink)]
            .iter()
            .filter_map(|(p, k)| decide(host.path(), p, Some(*k), None).unwrap())
            .collect();
        let stream = encode(&steps, |_| false);
        let report = banger_agent::sync::apply(guest.path(), &stream[..]).unwrap();
        assert_eq!(report.applied, 2);
        let meta = std::fs::metadata(guest.path().join("x.sh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(guest.path().join("l")).unwrap(),
            Path::new("x.sh")
        );
    }

    /// The guest moved its own HEAD: the HEAD script keeps its branch,
    /// commits and files, and the host's commit arrives beside them.
    #[test]
    fn a_guest_moved_head_is_kept_and_the_host_commit_arrives_beside_it() {
        use crate::tool::{Tool, for_test};
        let git = |dir: &Path, args: &[&str]| {
            crate::workspace::transfer::tests::git(dir, args)
                .trim()
                .to_string()
        };
        for guest_on_main in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let host = tmp.path().join("host");
            std::fs::create_dir(&host).unwrap();
            git(&host, &["init", "-q", "-b", "main"]);
            std::fs::write(host.join("a"), "one\n").unwrap();
            git(&host, &["add", "-A"]);
            git(&host, &["commit", "-qm", "A"]);
            let a = git(&host, &["rev-parse", "HEAD"]);
            git(tmp.path(), &["clone", "-q", "host", "guest"]);
            let guest = tmp.path().join("guest");
            if !guest_on_main {
                git(&guest, &["checkout", "-q", "-b", "work"]);
            }
            std::fs::write(guest.join("a"), "guest\n").unwrap();
            git(&guest, &["commit", "-qam", "G"]);
            let g = git(&guest, &["rev-parse", "HEAD"]);
            std::fs::write(host.join("b"), "two\n").unwrap();
            git(&host, &["add", "-A"]);
            git(&host, &["commit", "-qm", "B"]);
            let b = git(&host, &["rev-parse", "HEAD"]);
            let (pack, _) = crate::workspace::host_pack::head_pack(&host, &b, Some(&a)).unwrap();
            let mut child = for_test(Tool::Sh)
                .args(["-c", HEAD_SCRIPT, "banger-head"])
                .arg(&guest)
                .args([a.as_str(), b.as_str(), "main", ""])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(&pack).unwrap();
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(4), "{stderr}");
            assert_eq!(git(&guest, &["rev-parse", "HEAD"]), g);
            assert_eq!(git(&guest, &["rev-parse", "host/main"]), b);
            assert_eq!(std::fs::read_to_string(guest.join("a")).unwrap(), "guest\n");
            assert_eq!(git(&guest, &["status", "--porcelain"]), "");
            if guest_on_main {
                // The guest's own main is never moved.
                assert!(stderr.ends_with("arrived as host/main\n"), "{stderr}");
                assert_eq!(git(&guest, &["rev-parse", "main"]), g);
            } else {
                assert!(
                    stderr.ends_with("arrived as host/main and main\n"),
                    "{stderr}"
                );
                assert_eq!(git(&guest, &["rev-parse", "main"]), b);
                assert_eq!(git(&guest, &["symbolic-ref", "--short", "HEAD"]), "work");
            }
        }
    }
}
