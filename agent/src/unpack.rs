//! The first transfer of a workspace, guest side: `banger-agent workspace
//! unpack DEST NAME EMAIL new|replace` reads the host's archive on stdin
//! and makes DEST a git repository whose HEAD, branch and index match the
//! host's, in one pass over the stream:
//!
//! - the files land in place as they arrive, and the stat of each is kept;
//! - HEAD's blobs whose files travel anyway are not sent twice: the guest
//!   appends those files, as they arrive, to a "local pack" of stored
//!   (uncompressed) objects in a layout the host reproduces
//!   (`crate::pack`), and the host sends that pack's index and checksum,
//!   so nothing is hashed here;
//! - the rest of HEAD's snapshot comes as a pack with its index (both made
//!   on the host) and goes straight into `.git/objects/pack` (no `git
//!   index-pack` here, which inflated and hashed every blob again);
//! - the git index is written here from HEAD's tree (listed by the host),
//!   with the stat of every file whose bytes are HEAD's blob, so git trusts
//!   those files without reading them again (no `read-tree` and
//!   `update-index --refresh`, which read every file);
//! - live sync's state starts from the host's manifest and the same stats.
//!
//! No other program runs, except `git checkout -b` for a new branch. The
//! host runs the same function for `full_copy` (a repository built on the
//! host, then written into the disk image).
//!
//! The archive (a tar stream; the host writes it, the guest trusts it, and
//! its paths are still checked against host bugs):
//!
//! | entry | what |
//! |---|---|
//! | `banger-meta/head` | HEAD's commit id (absent: no commit yet) |
//! | `banger-meta/branch` | HEAD's branch (empty: detached) |
//! | `banger-meta/shallow` | commits shipped without their parents |
//! | `banger-meta/tree` | `git ls-tree -r -z --full-tree HEAD` |
//! | `banger-meta/new-branch`, `…/new-branch-from` | `--branch NAME --from COMMIT` |
//! | `banger-meta/objects/pack-ID.pack`, `.idx` | HEAD's snapshot |
//! | `banger-meta/local-pack` | how many `blob/` entries follow |
//! | `repo/PATH` | the files and symlinks |
//! | `blob/PATH` | a file that is also HEAD's blob: into the local pack too |
//! | `banger-meta/local.idx` | the local pack's index (the host made it) |
//! | `banger-meta/sync-manifest` | what was sent, JSON lines (last) |

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::gitfiles::{
    GITLINK, build_index, checked, git_config, hex, is_oid, parse_tree, ref_name_ok, sent_oids,
};
use crate::pack;
use crate::sync;

/// Entry names of the archive's metadata (see the module doc).
pub mod meta {
    /// HEAD's commit id.
    pub const HEAD: &str = "banger-meta/head";
    /// HEAD's branch, empty when detached.
    pub const BRANCH: &str = "banger-meta/branch";
    /// Shallow boundary commits.
    pub const SHALLOW: &str = "banger-meta/shallow";
    /// HEAD's tree, as `git ls-tree -r -z --full-tree HEAD` prints it.
    pub const TREE: &str = "banger-meta/tree";
    /// A new branch to check out.
    pub const NEW_BRANCH: &str = "banger-meta/new-branch";
    /// The commit the new branch starts from.
    pub const NEW_BRANCH_FROM: &str = "banger-meta/new-branch-from";
    /// The directory of the pack and its index.
    pub const OBJECTS: &str = "banger-meta/objects/";
    /// The live-sync manifest.
    pub const SYNC_MANIFEST: &str = "banger-meta/sync-manifest";
    /// The prefix of the workspace's own files.
    pub const REPO: &str = "repo/";
    /// The prefix of files that are also HEAD's blobs: each is written like
    /// a `repo/` file and appended to the local pack (`crate::pack`).
    pub const BLOB: &str = "blob/";
    /// How many objects the local pack holds (before any `blob/` entry).
    pub const LOCAL_PACK: &str = "banger-meta/local-pack";
    /// The local pack's index, made by the host (after the files); its
    /// trailer names the pack's checksum.
    pub const LOCAL_IDX: &str = "banger-meta/local.idx";
}

/// Why an unpack failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// DEST exists and `replace` was not asked for (exit 5).
    #[error("{0} already exists in the guest")]
    Exists(String),
    /// No git in this guest (exit 6).
    #[error(
        "this image lacks git, which a workspace needs in the guest; use an image that has it (or add it: banger image build NAME --from IMAGE --packages git)"
    )]
    NoGit,
    /// Anything else (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl UnpackError {
    /// The program's exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            UnpackError::Exists(_) => 5,
            UnpackError::NoGit => 6,
            UnpackError::Failed(_) => 1,
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> UnpackError {
    UnpackError::Failed(format!("{what}: {e}"))
}

/// What to do with an existing DEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse (the guest's own edits are never thrown away unasked).
    Refuse,
    /// Remove it first.
    Replace,
}

/// The repository's git identity (`user.name`, `user.email`).
#[derive(Debug, Clone)]
pub struct Identity {
    /// `user.name`.
    pub name: String,
    /// `user.email`.
    pub email: String,
}

/// How many files an unpack wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Files and symlinks written.
    pub files: u64,
    /// Entries of the git index, and of those, how many git trusts by stat.
    pub index_entries: u64,
    /// Index entries with the stat of the file written.
    pub index_clean: u64,
}

/// Makes `dest` the workspace the archive on `input` describes. On failure
/// nothing is left at `dest`.
pub fn unpack(
    dest: &Path,
    input: impl Read,
    identity: &Identity,
    existing: Existing,
) -> Result<Unpacked, UnpackError> {
    let git = find_in_path("git").ok_or(UnpackError::NoGit)?;
    if std::fs::symlink_metadata(dest).is_ok() {
        if existing == Existing::Refuse {
            return Err(UnpackError::Exists(dest.display().to_string()));
        }
        remove_any(dest).map_err(|e| failed(&format!("removing {}", dest.display()), e))?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dest)
        .map_err(|e| failed(&format!("creating {}", dest.display()), e))?;
    let result = Unpacker::new(dest, git).and_then(|u| u.run(input, identity));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}

/// A new file (never through a symlink, never over an existing file).
fn create_new(path: &Path, mode: u32) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn remove_any(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// The first executable `name` on `$PATH` (a standard one when unset).
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    find_in(name, &path)
}

fn find_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path).map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The stream's state: what was written, and the metadata seen so far.
struct Unpacker {
    dest: PathBuf,
    /// `DEST/.git`.
    dotgit: PathBuf,
    /// The git program.
    git: PathBuf,
    /// Directories known to exist (relative, `""` is the root).
    dirs: HashSet<String>,
    /// Symlinks written: nothing may be written beneath them.
    symlinks: HashSet<String>,
    /// The stat of every file written, by path.
    written: HashMap<String, std::fs::Metadata>,
    /// Small metadata entries by name.
    meta: HashMap<String, Vec<u8>>,
    packs: u32,
    /// The local pack being written.
    local: Option<LocalPack>,
    buf: Vec<u8>,
    /// The mtime every file gets: the second before the unpack began.
    stamp: std::time::SystemTime,
}

/// The local pack being written.
struct LocalPack {
    file: io::BufWriter<std::fs::File>,
    tmp: PathBuf,
    declared: u32,
    written: u32,
}

/// Most a metadata entry other than the tree, the manifest and the local
/// pack's index may hold.
const SMALL_META: u64 = 64 << 10;

impl Unpacker {
    fn new(dest: &Path, git: PathBuf) -> Result<Unpacker, UnpackError> {
        let dotgit = dest.join(".git");
        for d in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dotgit.join(d))
                .map_err(|e| failed("creating .git", e))?;
        }
        Ok(Unpacker {
            dest: dest.to_path_buf(),
            dotgit,
            git,
            dirs: HashSet::from([String::new()]),
            symlinks: HashSet::new(),
            written: HashMap::new(),
            meta: HashMap::new(),
            packs: 0,
            local: None,
            buf: vec![0; 256 << 10],
            stamp: stamp(),
        })
    }

    fn run(mut self, input: impl Read, identity: &Identity) -> Result<Unpacked, UnpackError> {
        let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, input));
        let entries = archive
            .entries()
            .map_err(|e| failed("reading the archive", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| failed("reading the archive", e))?;
            let name = entry
                .path()
                .map_err(|e| failed("reading the archive", e))?
                .to_str()
                .ok_or_else(|| failed("reading the archive", "a name that is not UTF-8"))?
                .to_string();
            if let Some(rel) = name.strip_prefix(meta::REPO) {
                self.file(rel, &mut entry, false)?;
            } else if let Some(rel) = name.strip_prefix(meta::BLOB) {
                self.file(rel, &mut entry, true)?;
            } else if let Some(file) = name.strip_prefix(meta::OBJECTS) {
                self.pack_file(file, &mut entry)?;
            } else if name.starts_with("banger-meta/") {
                let big =
                    [meta::TREE, meta::SYNC_MANIFEST, meta::LOCAL_IDX].contains(&name.as_str());
                if !big && entry.size() > SMALL_META {
                    return Err(failed(&name, "too large"));
                }
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| failed(&format!("reading {name}"), e))?;
                if name == meta::LOCAL_PACK {
                    self.start_local_pack(&data)?;
                }
                self.meta.insert(name, data);
            } else {
                return Err(failed(
                    "reading the archive",
                    format!("unknown entry {name:?}"),
                ));
            }
        }
        self.finish(identity)
    }

    /// Opens the local pack of `count` (decimal) objects.
    fn start_local_pack(&mut self, count: &[u8]) -> Result<(), UnpackError> {
        let count: u32 = std::str::from_utf8(count)
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .ok_or_else(|| failed("the local pack", "a count that is not a number"))?;
        if self.local.is_some() {
            return Err(failed("the local pack", "announced twice"));
        }
        let tmp = self.dotgit.join("objects/pack/tmp-banger-local.pack");
        let what = |e: io::Error| failed("writing the local pack", e);
        let file = create_new(&tmp, 0o444).map_err(what)?;
        let mut file = io::BufWriter::with_capacity(1 << 20, file);
        file.write_all(&pack::pack_header(count)).map_err(what)?;
        self.local = Some(LocalPack {
            file,
            tmp,
            declared: count,
            written: 0,
        });
        Ok(())
    }

    /// Writes one file or symlink of the workspace (and, for `to_pack`,
    /// appends it to the local pack as a blob).
    fn file(
        &mut self,
        rel: &str,
        entry: &mut tar::Entry<'_, impl Read>,
        to_pack: bool,
    ) -> Result<(), UnpackError> {
        if to_pack && self.local.is_none() {
            return Err(failed(rel, "a blob before the local pack was announced"));
        }
        let rel = checked(rel).map_err(|e| failed("reading the archive", e))?;
        let full = self.dest.join(rel);
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        self.ensure_dir(parent)?;
        let what = |e: io::Error| failed(&format!("writing {rel}"), e);
        let header = entry.header();
        match header.entry_type() {
            tar::EntryType::Symlink if to_pack => {
                return Err(failed(rel, "a symlink is not sent as a blob"));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(what)?
                    .ok_or_else(|| failed(rel, "a symlink without a target"))?;
                std::os::unix::fs::symlink(&target, &full).map_err(what)?;
                set_link_mtime(&full, self.stamp).map_err(what)?;
                let meta = std::fs::symlink_metadata(&full).map_err(what)?;
                self.symlinks.insert(rel.to_string());
                self.written.insert(rel.to_string(), meta);
            }
            tar::EntryType::Regular => {
                let mode = if header.mode().map_err(what)? & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                let mut file = create_new(&full, mode).map_err(what)?;
                let mut object = match self.local.as_mut().filter(|_| to_pack) {
                    Some(local) => Some(
                        pack::ObjectEncoder::start(pack::BLOB, entry.size(), &mut local.file)
                            .map_err(what)?,
                    ),
                    None => None,
                };
                loop {
                    let n = entry.read(&mut self.buf).map_err(what)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).map_err(what)?;
                    if let (Some(object), Some(local)) = (object.as_mut(), self.local.as_mut()) {
                        object.data(&self.buf[..n], &mut local.file).map_err(what)?;
                    }
                }
                if let (Some(object), Some(local)) = (object, self.local.as_mut()) {
                    object.finish(&mut local.file).map_err(what)?;
                    local.written += 1;
                }
                file.set_modified(self.stamp).map_err(what)?;
                let mut meta = file.metadata().map_err(what)?;
                // The process's umask must not change what git records.
                if meta.permissions().mode() & 0o777 != mode {
                    file.set_permissions(std::fs::Permissions::from_mode(mode))
                        .map_err(what)?;
                    meta = file.metadata().map_err(what)?;
                }
                self.written.insert(rel.to_string(), meta);
            }
            other => return Err(failed(rel, format!("unexpected entry type {other:?}"))),
        }
        Ok(())
    }

    /// Makes the directory `rel` (and its parents) once, never through a
    /// symlink the archive wrote.
    fn ensure_dir(&mut self, rel: &str) -> Result<(), UnpackError> {
        if self.dirs.contains(rel) {
            return Ok(());
        }
        if let Some((parent, _)) = rel.rsplit_once('/') {
            self.ensure_dir(parent)?;
        }
        if self.symlinks.contains(rel) {
            return Err(failed(rel, "a path beneath a symlink"));
        }
        match std::fs::DirBuilder::new()
            .mode(0o755)
            .create(self.dest.join(rel))
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(self.dest.join(rel))
                    .map_err(|e| failed(&format!("creating {rel}"), e))?;
                if !meta.is_dir() {
                    return Err(failed(rel, "both a file and a directory"));
                }
            }
            Err(e) => return Err(failed(&format!("creating {rel}"), e)),
        }
        self.dirs.insert(rel.to_string());
        Ok(())
    }

    /// Writes the pack or its index into `.git/objects/pack`.
    fn pack_file(&mut self, name: &str, entry: &mut impl Read) -> Result<(), UnpackError> {
        let ok = name
            .strip_prefix("pack-")
            .and_then(|n| n.strip_suffix(".pack").or_else(|| n.strip_suffix(".idx")))
            .is_some_and(is_oid);
        if !ok {
            return Err(failed(
                "reading the archive",
                format!("unexpected object file {name:?}"),
            ));
        }
        let path = self.dotgit.join("objects/pack").join(name);
        let what = |e: io::Error| failed(&format!("writing {name}"), e);
        let mut file = create_new(&path, 0o444).map_err(what)?;
        loop {
            let n = entry.read(&mut self.buf).map_err(what)?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n]).map_err(what)?;
        }
        self.packs += 1;
        Ok(())
    }

    fn text(&self, name: &str) -> Result<String, UnpackError> {
        let data = self.meta.get(name).map(Vec::as_slice).unwrap_or_default();
        String::from_utf8(data.to_vec())
            .map(|s| s.trim().to_string())
            .map_err(|_| failed(name, "not UTF-8"))
    }

    /// Everything after the stream: refs, config, the index, live sync's
    /// state, a new branch.
    /// Ends the local pack with the checksum its index (from the host)
    /// names, and puts both in place.
    fn finish_local_pack(&mut self) -> Result<(), UnpackError> {
        let Some(mut local) = self.local.take() else {
            return Ok(());
        };
        let what = |e: io::Error| failed("writing the local pack", e);
        let idx = self
            .meta
            .get(meta::LOCAL_IDX)
            .ok_or_else(|| failed("the local pack", "no index"))?;
        if local.written != local.declared {
            return Err(failed(
                "the local pack",
                format!("{} objects of {}", local.written, local.declared),
            ));
        }
        // A version 2 index: magic, version, 256 fan-out entries, ... the
        // pack's checksum, its own checksum.
        if idx.len() < 8 + 256 * 4 + 40 || idx[..8] != *b"\xfftOc\0\0\0\x02" {
            return Err(failed("the local pack", "a malformed index"));
        }
        let sum = &idx[idx.len() - 40..idx.len() - 20];
        local.file.write_all(sum).map_err(what)?;
        local.file.flush().map_err(what)?;
        let hex = hex(sum);
        let dir = self.dotgit.join("objects/pack");
        std::fs::rename(&local.tmp, dir.join(format!("pack-{hex}.pack"))).map_err(what)?;
        let mut file = create_new(&dir.join(format!("pack-{hex}.idx")), 0o444).map_err(what)?;
        file.write_all(idx).map_err(what)?;
        self.packs += 1;
        Ok(())
    }

    fn finish(mut self, identity: &Identity) -> Result<Unpacked, UnpackError> {
        self.finish_local_pack()?;
        let head = self.text(meta::HEAD)?;
        let branch = self.text(meta::BRANCH)?;
        if !head.is_empty() && !is_oid(&head) {
            return Err(failed("HEAD", format!("not a commit id: {head:?}")));
        }
        if !branch.is_empty() && !ref_name_ok(&branch) {
            return Err(failed("HEAD", format!("not a branch name: {branch:?}")));
        }
        let write = |rel: &str, data: &[u8]| -> Result<(), UnpackError> {
            let path = self.dotgit.join(rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| failed(&format!("writing .git/{rel}"), e))?;
            }
            std::fs::write(&path, data).map_err(|e| failed(&format!("writing .git/{rel}"), e))
        };
        write(
            "config",
            git_config(&identity.name, &identity.email).as_bytes(),
        )?;
        let symbolic = if branch.is_empty() && head.is_empty() {
            "master"
        } else {
            &branch
        };
        if symbolic.is_empty() {
            write("HEAD", format!("{head}\n").as_bytes())?;
        } else {
            write("HEAD", format!("ref: refs/heads/{symbolic}\n").as_bytes())?;
            if !head.is_empty() {
                write(
                    &format!("refs/heads/{symbolic}"),
                    format!("{head}\n").as_bytes(),
                )?;
            }
        }
        let mut out = Unpacked {
            files: self.written.len() as u64,
            index_entries: 0,
            index_clean: 0,
        };
        // The manifest travels last: without it the stream was cut short.
        let manifest = self
            .meta
            .get(meta::SYNC_MANIFEST)
            .cloned()
            .ok_or_else(|| failed("reading the archive", "it ended early"))?;
        if !head.is_empty() {
            if self.packs == 0 {
                return Err(failed(
                    "reading the archive",
                    "a commit without its objects",
                ));
            }
            let shallow = self.text(meta::SHALLOW)?;
            if !shallow.is_empty() {
                if !shallow.lines().all(is_oid) {
                    return Err(failed("shallow", "not commit ids"));
                }
                write("shallow", format!("{shallow}\n").as_bytes())?;
            }
            let tree = parse_tree(
                self.meta
                    .get(meta::TREE)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            )
            .map_err(|e| failed("HEAD's tree", e))?;
            let sent = sent_oids(&manifest).map_err(|e| failed("the sync manifest", e))?;
            for e in tree.iter().filter(|e| e.mode == GITLINK) {
                // Submodules are not shipped: an empty directory keeps each
                // gitlink an uninitialised submodule, neither changed nor
                // deleted.
                let rel = checked(&e.path).map_err(|err| failed("tree", err))?;
                std::fs::create_dir_all(self.dest.join(rel))
                    .map_err(|err| failed(&format!("creating {rel}"), err))?;
            }
            let index = build_index(tree, &sent, &self.written);
            out.index_entries = index.entries;
            out.index_clean = index.clean;
            write("index", &index.bytes)?;
        }
        sync::init_with(&self.dest, &manifest[..], |rel| {
            self.written.get(rel).cloned()
        })
        .map_err(|e| failed("recording the sync manifest", e))?;
        let new_branch = self.text(meta::NEW_BRANCH)?;
        if !new_branch.is_empty() {
            let from = self.text(meta::NEW_BRANCH_FROM)?;
            if !ref_name_ok(&new_branch) || !is_oid(&from) {
                return Err(failed(
                    "new branch",
                    format!("{new_branch:?} from {from:?}"),
                ));
            }
            #[allow(clippy::disallowed_methods)] // git itself switches the branch
            let status = std::process::Command::new(&self.git)
                .args(["checkout", "-q", "-b", &new_branch, &from])
                .current_dir(&self.dest)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| failed("git checkout", e))?;
            if !status.status.success() {
                return Err(failed(
                    "git checkout",
                    String::from_utf8_lossy(&status.stderr).trim(),
                ));
            }
        }
        Ok(out)
    }
}

/// The start of the second before now. Git (built without nanosecond
/// stamps, as distributions ship it) distrusts the stat of a file whose
/// mtime is not older than the index file ("racily clean") and reads the
/// file again; files dated a second before the unpack began are older than
/// any index written after them, and any later edit dates a file after.
fn stamp() -> std::time::SystemTime {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.saturating_sub(1))
}

/// Sets the mtime of the symlink `path` itself (std has no call for it).
fn set_link_mtime(path: &Path, mtime: std::time::SystemTime) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let secs = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        },
    ];
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `times` is two valid timespecs and `c` a NUL-terminated
    // string; both outlive the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `banger-agent workspace unpack DEST NAME EMAIL new|replace` entry
/// point; returns the exit code (5: DEST exists, 6: no git).
pub fn main(args: &[String]) -> i32 {
    let [op, dest, name, email, mode] = args else {
        eprintln!("usage: banger-agent workspace unpack DEST NAME EMAIL new|replace");
        return 2;
    };
    let existing = match mode.as_str() {
        "new" => Existing::Refuse,
        "replace" => Existing::Replace,
        _ => {
            eprintln!("banger-agent workspace unpack: the mode is new or replace, not {mode:?}");
            return 2;
        }
    };
    if op != "unpack" {
        eprintln!("usage: banger-agent workspace unpack DEST NAME EMAIL new|replace");
        return 2;
    }
    let identity = Identity {
        name: name.clone(),
        email: email.clone(),
    };
    match unpack(Path::new(dest), io::stdin().lock(), &identity, existing) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_is_found_only_where_it_is_executable() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        let exec = dir.path().join("exec");
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::create_dir_all(&exec).unwrap();
        std::fs::write(plain.join("git"), "").unwrap();
        std::fs::write(exec.join("git"), "").unwrap();
        std::fs::set_permissions(exec.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let only_plain = std::env::join_paths([&plain]).unwrap();
        assert_eq!(find_in("git", &only_plain), None);
        let both = std::env::join_paths([&plain, &exec]).unwrap();
        assert_eq!(find_in("git", &both), Some(exec.join("git")));
    }
}
