//! Live workspace sync, guest side: `banger-agent sync OP ROOT`, run by the
//! host through an ordinary exec, with its input on stdin and one JSON
//! report on stdout.
//!
//! The guest keeps, in `ROOT/.git/banger-sync/`, what the host last gave
//! it: each synced path with its git blob id and a stat cache. From that:
//!
//! - `apply` writes or deletes files, but only where the guest's copy is
//!   still what the host last gave it (or the host forces it). A file the
//!   guest changed since is left alone and reported as a conflict: the guest
//!   never silently loses its own edits.
//! - `scan` lists what the guest changed since: modified, deleted, and new
//!   files git does not ignore.
//! - `read` sends chosen files back (the host validates them).
//! - `accept` records the guest's current copy of chosen files as synced
//!   (after the host took them).
//! - `init` starts the state from the host's manifest after a full transfer.
//!
//! The stream format is binary-safe: each record is one JSON header line,
//! followed by exactly `size` bytes of payload for written files.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the guest keeps its sync state, relative to the workspace root.
pub const STATE_DIR: &str = ".git/banger-sync";

/// How git stores a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Regular file (0644).
    File,
    /// Executable file (0755).
    Executable,
    /// Symbolic link (payload: the target).
    Symlink,
}

/// One record of an `apply` or `read` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// Write a file; `size` payload bytes follow the header line.
    Write {
        /// Path relative to the root, `/`-separated.
        path: String,
        /// Its kind.
        kind: Kind,
        /// Payload length.
        size: u64,
        /// The blob id the guest copy must have (`None`: must not exist).
        expect: Option<String>,
        /// Overwrite whatever the guest has.
        #[serde(default)]
        force: bool,
    },
    /// Delete a file.
    Delete {
        /// Path relative to the root.
        path: String,
        /// The blob id the guest copy must have.
        expect: Option<String>,
        /// Delete whatever the guest has.
        #[serde(default)]
        force: bool,
    },
    /// A file that is not there (in `read` replies).
    Missing {
        /// Path relative to the root.
        path: String,
    },
}

/// A file the guest left alone because it changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Path relative to the root.
    pub path: String,
    /// The guest's blob id (`None`: the guest deleted it).
    pub guest: Option<String>,
}

/// What `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Files written or deleted.
    pub applied: u64,
    /// Files left alone.
    pub conflicts: Vec<Conflict>,
    /// Files that already were what the host sent (recorded, not written).
    #[serde(default)]
    pub unchanged: Vec<String>,
}

/// How a guest file differs from what the host last gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Content or mode changed.
    Modified,
    /// New, and not ignored.
    Added,
    /// Gone.
    Deleted,
}

/// One guest change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Path relative to the root.
    pub path: String,
    /// How it changed.
    pub status: Status,
    /// Its kind now (`None` when deleted).
    pub kind: Option<Kind>,
    /// Its blob id now (`None` when deleted).
    pub oid: Option<String>,
}

/// A manifest line for `init` and `accept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the root.
    pub path: String,
    /// Kind.
    pub kind: Kind,
    /// Blob id.
    pub oid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Synced {
    kind: Kind,
    oid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stat: Option<Stat>,
}

/// One line of a state shard.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    path: String,
    #[serde(flatten)]
    synced: Synced,
}

/// The guest's record of what the host gave it, in 256 shards by a hash of
/// the path (JSON lines, the last line for a path wins), loaded only as
/// needed: a sync that touches one file reads and writes one small shard,
/// whatever the size of the repository.
struct State {
    dir: PathBuf,
    shards: BTreeMap<u8, (BTreeMap<String, Synced>, bool)>,
    /// A new directory (`init`): shards are written in place, no file is
    /// read first.
    fresh: bool,
}

fn shard_of(path: &str) -> u8 {
    let mut h = sha1_smol::Sha1::new();
    h.update(path.as_bytes());
    h.digest().bytes()[0]
}

impl State {
    fn open(root: &Path) -> State {
        State {
            dir: root.join(STATE_DIR),
            shards: BTreeMap::new(),
            fresh: false,
        }
    }

    /// An empty state in a directory that does not exist yet.
    fn fresh(root: &Path) -> State {
        State {
            dir: root.join(STATE_DIR),
            shards: (0..=255u8).map(|n| (n, (BTreeMap::new(), false))).collect(),
            fresh: true,
        }
    }

    fn shard(&mut self, n: u8) -> io::Result<&mut (BTreeMap<String, Synced>, bool)> {
        if !self.shards.contains_key(&n) {
            let mut files = BTreeMap::new();
            match std::fs::read(self.dir.join(format!("{n:02x}"))) {
                Ok(bytes) => {
                    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        let l: Line = serde_json::from_slice(line)
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        files.insert(l.path, l.synced);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.shards.insert(n, (files, false));
        }
        Ok(self.shards.get_mut(&n).expect("just loaded"))
    }

    fn get(&mut self, path: &str) -> io::Result<Option<Synced>> {
        Ok(self.shard(shard_of(path))?.0.get(path).cloned())
    }

    fn insert(&mut self, path: String, synced: Synced) -> io::Result<()> {
        let shard = self.shard(shard_of(&path))?;
        shard.0.insert(path, synced);
        shard.1 = true;
        Ok(())
    }

    fn remove(&mut self, path: &str) -> io::Result<()> {
        let shard = self.shard(shard_of(path))?;
        if shard.0.remove(path).is_some() {
            shard.1 = true;
        }
        Ok(())
    }

    /// Every entry (loads every shard).
    fn all(&mut self) -> io::Result<Vec<(String, Synced)>> {
        for n in 0..=255u8 {
            self.shard(n)?;
        }
        Ok(self
            .shards
            .values()
            .flat_map(|(files, _)| files.iter().map(|(p, s)| (p.clone(), s.clone())))
            .collect())
    }

    fn contains(&mut self, path: &str) -> io::Result<bool> {
        Ok(self.shard(shard_of(path))?.0.contains_key(path))
    }

    /// Writes the shards that changed.
    fn save(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        for (n, (files, dirty)) in &self.shards {
            if !dirty {
                continue;
            }
            let mut out = Vec::new();
            for (path, synced) in files {
                serde_json::to_writer(
                    &mut out,
                    &Line {
                        path: path.clone(),
                        synced: synced.clone(),
                    },
                )?;
                out.push(b'\n');
            }
            let path = self.dir.join(format!("{n:02x}"));
            if self.fresh {
                std::fs::write(&path, out)?;
                continue;
            }
            let tmp = self.dir.join(format!("{n:02x}.tmp"));
            std::fs::write(&tmp, out)?;
            std::fs::rename(tmp, path)?;
        }
        Ok(())
    }
}

/// The git blob id of `data` (what `git hash-object` prints).
pub fn blob_oid(data: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    h.digest().to_string()
}

fn kind_of(meta: &std::fs::Metadata) -> Option<Kind> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        Some(Kind::Symlink)
    } else if ft.is_file() {
        Some(if meta.permissions().mode() & 0o111 != 0 {
            Kind::Executable
        } else {
            Kind::File
        })
    } else {
        None
    }
}

/// The content git would store for a path (a symlink's target).
fn content(path: &Path, kind: Kind) -> io::Result<Vec<u8>> {
    match kind {
        Kind::Symlink => {
            use std::os::unix::ffi::OsStrExt;
            Ok(std::fs::read_link(path)?.as_os_str().as_bytes().to_vec())
        }
        _ => std::fs::read(path),
    }
}

/// The guest's copy of a path: kind, blob id and stat, or `None` if absent
/// (or not a file git could store).
fn current(root: &Path, rel: &str, cached: Option<&Synced>) -> io::Result<Option<(Synced, bool)>> {
    let full = root.join(rel);
    let meta = match std::fs::symlink_metadata(&full) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(kind) = kind_of(&meta) else {
        return Ok(None);
    };
    let stat = Stat::of(&meta);
    if let Some(c) = cached
        && c.kind == kind
        && c.stat.as_ref() == Some(&stat)
    {
        return Ok(Some((c.clone(), false)));
    }
    let oid = blob_oid(&content(&full, kind)?);
    Ok(Some((
        Synced {
            kind,
            oid,
            stat: Some(stat),
        },
        true,
    )))
}

/// Rejects paths that leave the root or touch `.git` (the host never sends
/// them; this guards against a host bug, not a hostile host).
pub(crate) fn checked(rel: &str) -> io::Result<&str> {
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c == ".git");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing path {rel:?}"),
        ));
    }
    Ok(rel)
}

fn write_file(root: &Path, rel: &str, kind: Kind, data: &[u8]) -> io::Result<()> {
    let full = root.join(rel);
    let dir = full.parent().unwrap_or(root);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".banger-sync.{}.tmp",
        full.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&tmp);
    match kind {
        Kind::Symlink => {
            use std::os::unix::ffi::OsStrExt;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(data), &tmp)?;
        }
        Kind::File | Kind::Executable => {
            std::fs::write(&tmp, data)?;
            let mode = if kind == Kind::Executable {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        }
    }
    // A directory where the file goes (the host turned a directory into a
    // file) is removed first, as git checkout would.
    if std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(&full)?;
    }
    std::fs::rename(&tmp, &full)
}

fn remove_file(root: &Path, rel: &str) -> io::Result<()> {
    let full = root.join(rel);
    match std::fs::remove_file(&full) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Empty parent directories go too, as git would remove them.
    let mut dir = full.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d == root || std::fs::remove_dir(&d).is_err() {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    Ok(())
}

fn read_header(input: &mut impl BufRead) -> io::Result<Option<Record>> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(line.trim_end())
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `apply`: writes the stream's records where the guest copy is still what
/// the host expects.
pub fn apply(root: &Path, mut input: impl BufRead) -> io::Result<ApplyReport> {
    let mut state = State::open(root);
    let mut report = ApplyReport::default();
    while let Some(record) = read_header(&mut input)? {
        let (path, expect, force) = match &record {
            Record::Write {
                path,
                expect,
                force,
                ..
            }
            | Record::Delete {
                path,
                expect,
                force,
            } => (checked(path)?.to_string(), expect.clone(), *force),
            Record::Missing { .. } => continue,
        };
        let payload = match &record {
            Record::Write { size, .. } => {
                let mut data = Vec::with_capacity(*size as usize);
                input.by_ref().take(*size).read_to_end(&mut data)?;
                if data.len() as u64 != *size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{path}: short payload"),
                    ));
                }
                Some(data)
            }
            _ => None,
        };
        let now = current(root, &path, state.get(&path)?.as_ref())?;
        let guest = now.as_ref().map(|(s, _)| s.oid.clone());
        let target = payload.as_deref().map(blob_oid);
        // The guest already has what the host sends (an edit that went
        // guest → host and now echoes back): nothing to protect.
        let same = guest == target
            && match &record {
                Record::Write { kind, .. } => now.as_ref().is_some_and(|(s, _)| s.kind == *kind),
                _ => true,
            };
        if !force && guest != expect && !same {
            report.conflicts.push(Conflict { path, guest });
            continue;
        }
        if same && !force {
            match now {
                Some((synced, _)) => state.insert(path.clone(), synced)?,
                None => state.remove(&path)?,
            }
            report.unchanged.push(path);
            report.applied += 1;
            continue;
        }
        match (&record, payload) {
            (Record::Write { kind, .. }, Some(data)) => {
                write_file(root, &path, *kind, &data)?;
                let meta = std::fs::symlink_metadata(root.join(&path))?;
                state.insert(
                    path,
                    Synced {
                        kind: *kind,
                        oid: blob_oid(&data),
                        stat: Some(Stat::of(&meta)),
                    },
                )?;
            }
            _ => {
                remove_file(root, &path)?;
                state.remove(&path)?;
            }
        }
        report.applied += 1;
    }
    state.save()?;
    Ok(report)
}

/// `init`: the state becomes the host's manifest (JSON lines on stdin),
/// with the stat of the files the transfer just wrote.
pub fn init(root: &Path, input: impl BufRead) -> io::Result<u64> {
    init_with(root, input, |rel| {
        checked(rel)
            .and_then(|rel| std::fs::symlink_metadata(root.join(rel)))
            .ok()
    })
}

/// `init` with the stat of each path from `stat_of` (a transfer that just
/// wrote the files already has it).
pub fn init_with(
    root: &Path,
    input: impl BufRead,
    stat_of: impl Fn(&str) -> Option<std::fs::Metadata>,
) -> io::Result<u64> {
    // A fresh record: shards of an earlier workspace go.
    let dir = root.join(STATE_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Shards without an entry stay absent (absent is empty).
    let mut state = State::fresh(root);
    let mut n = 0u64;
    for line in input.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let e: ManifestEntry = serde_json::from_str(&line)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        checked(&e.path)?;
        let stat = stat_of(&e.path).map(|m| Stat::of(&m));
        state.insert(
            e.path,
            Synced {
                kind: e.kind,
                oid: e.oid,
                stat,
            },
        )?;
        n += 1;
    }
    state.save()?;
    Ok(n)
}

/// Files git lists in the guest: tracked ones and others it does not
/// ignore.
fn git_listed(root: &Path) -> io::Result<Vec<String>> {
    #[allow(clippy::disallowed_methods)] // the guest's own git, for ignore rules
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other("git ls-files failed"));
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect())
}

/// `scan`: what the guest changed since the host last synced it.
pub fn scan(root: &Path) -> io::Result<Vec<Change>> {
    let mut state = State::open(root);
    let mut changes = Vec::new();
    let mut restat = Vec::new();
    for (path, synced) in state.all()? {
        match current(root, &path, Some(&synced))? {
            None => changes.push(Change {
                path: path.clone(),
                status: Status::Deleted,
                kind: None,
                oid: None,
            }),
            Some((now, rehashed)) => {
                if now.oid == synced.oid && now.kind == synced.kind {
                    if rehashed {
                        // Same content, new stat: remember it so the next
                        // scan does not hash it again.
                        restat.push((path.clone(), synced.clone(), now));
                    }
                } else {
                    changes.push(Change {
                        path: path.clone(),
                        status: Status::Modified,
                        kind: Some(now.kind),
                        oid: Some(now.oid),
                    });
                }
            }
        }
    }
    for path in git_listed(root)? {
        if checked(&path).is_err() || state.contains(&path)? {
            continue;
        }
        if let Some((now, _)) = current(root, &path, None)? {
            changes.push(Change {
                path,
                status: Status::Added,
                kind: Some(now.kind),
                oid: Some(now.oid),
            });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    if !restat.is_empty() {
        // The walk ran without the lock (a scan of a large tree must not
        // hold a save's sync back); the new stats are written under it,
        // and only where the record is still the one the walk read.
        let _lock = lock(root)?;
        let mut fresh = State::open(root);
        for (path, seen, now) in restat {
            if fresh.get(&path)?.as_ref() == Some(&seen) {
                fresh.insert(path, now)?;
            }
        }
        fresh.save()?;
    }
    Ok(changes)
}

/// `read`: the named files (a JSON array of paths on stdin), each as a
/// header line and its content, or `missing`.
pub fn read(root: &Path, paths: &[String], out: &mut impl Write) -> io::Result<()> {
    for rel in paths {
        let rel = checked(rel)?;
        let full = root.join(rel);
        let kind = std::fs::symlink_metadata(&full)
            .ok()
            .and_then(|m| kind_of(&m));
        let data = kind.and_then(|k| content(&full, k).ok());
        match (kind, data) {
            (Some(kind), Some(data)) => {
                let header = Record::Write {
                    path: rel.to_string(),
                    kind,
                    size: data.len() as u64,
                    expect: None,
                    force: false,
                };
                serde_json::to_writer(&mut *out, &header)?;
                out.write_all(b"\n")?;
                out.write_all(&data)?;
            }
            _ => {
                serde_json::to_writer(
                    &mut *out,
                    &Record::Missing {
                        path: rel.to_string(),
                    },
                )?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()
}

/// `accept`: records the guest's copy of each entry as synced, when it still
/// has the blob id the host took (`oid` empty: the host took a deletion).
/// Returns the paths accepted.
pub fn accept(root: &Path, entries: &[ManifestEntry]) -> io::Result<Vec<String>> {
    let mut state = State::open(root);
    let mut accepted = Vec::new();
    for e in entries {
        let rel = checked(&e.path)?;
        match current(root, rel, None)? {
            Some((now, _)) if now.oid == e.oid => {
                state.insert(rel.to_string(), now)?;
                accepted.push(rel.to_string());
            }
            None if e.oid.is_empty() => {
                state.remove(rel)?;
                accepted.push(rel.to_string());
            }
            _ => {}
        }
    }
    state.save()?;
    Ok(accepted)
}

/// The workspace record's lock (held while the record changes).
fn lock(root: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(".git/banger-sync.lock"))
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot lock the workspace record: {e}")))
}

/// Runs one operation on the workspace at `root` with `input`; returns its
/// output (a JSON report, or `read`'s records). Operations that change the
/// record run one at a time per workspace: a scan that saved its shards
/// over an apply's would undo the apply's record.
pub fn run(op: &str, root: &Path, input: &[u8]) -> io::Result<Vec<u8>> {
    // `scan` only reads the record (shards are replaced by rename), and
    // locks for its own small write.
    let _lock = if op == "scan" {
        None
    } else {
        Some(lock(root)?)
    };
    let mut out = Vec::new();
    match op {
        "apply" => json_out(&mut out, &apply(root, input)?)?,
        "init" => json_out(&mut out, &init(root, input)?)?,
        "scan" => json_out(&mut out, &scan(root)?)?,
        "read" => {
            let paths: Vec<String> = serde_json::from_slice(input).map_err(io::Error::other)?;
            read(root, &paths, &mut out)?;
        }
        "accept" => {
            let entries: Vec<ManifestEntry> =
                serde_json::from_slice(input).map_err(io::Error::other)?;
            json_out(&mut out, &accept(root, &entries)?)?;
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown sync operation {other:?}"),
            ));
        }
    }
    Ok(out)
}

/// The `banger-agent sync OP ROOT` entry point (the same operations as a
/// program: stdin in, stdout out); returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let (Some(op), Some(root)) = (args.first(), args.get(1)) else {
        eprintln!("usage: banger-agent sync apply|scan|read|accept|init ROOT");
        return 2;
    };
    let mut input = Vec::new();
    let result = io::stdin()
        .lock()
        .read_to_end(&mut input)
        .and_then(|_| run(op, Path::new(root), &input))
        .and_then(|out| {
            let mut stdout = io::stdout().lock();
            stdout.write_all(&out)?;
            stdout.flush()
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("banger-agent sync {op}: {e}");
            1
        }
    }
}

fn json_out(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_record(buf: &mut Vec<u8>, path: &str, data: &[u8], expect: Option<&str>) {
        let r = Record::Write {
            path: path.into(),
            kind: Kind::File,
            size: data.len() as u64,
            expect: expect.map(str::to_string),
            force: false,
        };
        serde_json::to_writer(&mut *buf, &r).unwrap();
        buf.push(b'\n');
        buf.extend_from_slice(data);
    }

    #[test]
    fn blob_ids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`, and an empty blob
        assert_eq!(
            blob_oid(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(blob_oid(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }

    #[test]
    fn apply_writes_new_files_and_refuses_to_clobber_guest_edits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join(".git")).unwrap();
        let mut s = Vec::new();
        write_record(&mut s, "a/b.txt", b"one\n", None);
        let r = apply(root, &s[..]).unwrap();
        assert_eq!(r.applied, 1);
        assert_eq!(std::fs::read(root.join("a/b.txt")).unwrap(), b"one\n");
        assert!(scan_no_git(root).is_empty());

        // The guest edits it; the host's next write expects the old blob.
        std::fs::write(root.join("a/b.txt"), b"guest\n").unwrap();
        let mut s = Vec::new();
        write_record(&mut s, "a/b.txt", b"two\n", Some(&blob_oid(b"one\n")));
        let r = apply(root, &s[..]).unwrap();
        assert_eq!(r.applied, 0);
        assert_eq!(
            r.conflicts,
            [Conflict {
                path: "a/b.txt".into(),
                guest: Some(blob_oid(b"guest\n"))
            }]
        );
        assert_eq!(std::fs::read(root.join("a/b.txt")).unwrap(), b"guest\n");
        let changes = scan_no_git(root);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].status, Status::Modified);

        // Accepting the guest's copy makes it synced again.
        let acc = accept(
            root,
            &[ManifestEntry {
                path: "a/b.txt".into(),
                kind: Kind::File,
                oid: blob_oid(b"guest\n"),
            }],
        )
        .unwrap();
        assert_eq!(acc, ["a/b.txt"]);
        assert!(scan_no_git(root).is_empty());
    }

    #[test]
    fn delete_removes_empty_parents_and_paths_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join(".git")).unwrap();
        let mut s = Vec::new();
        write_record(&mut s, "d/e/f", b"x", None);
        apply(root, &s[..]).unwrap();
        let del = Record::Delete {
            path: "d/e/f".into(),
            expect: Some(blob_oid(b"x")),
            force: false,
        };
        let mut s = serde_json::to_vec(&del).unwrap();
        s.push(b'\n');
        assert_eq!(apply(root, &s[..]).unwrap().applied, 1);
        assert!(!root.join("d").exists());
        for bad in ["../x", "/etc/passwd", ".git/config", "a//b", ""] {
            let mut s = Vec::new();
            write_record(&mut s, bad, b"x", None);
            assert!(apply(root, &s[..]).is_err(), "{bad}");
        }
    }

    /// `scan` without git (modified/deleted only).
    fn scan_no_git(root: &Path) -> Vec<Change> {
        let mut state = State::open(root);
        state
            .all()
            .unwrap()
            .into_iter()
            .filter_map(|(p, s)| {
                match current(root, &p, Some(&s)).unwrap() {
                    None => Some(Status::Deleted),
                    Some((n, _)) if n.oid != s.oid => Some(Status::Modified),
                    _ => None,
                }
                .map(|status| Change {
                    path: p.clone(),
                    status,
                    kind: None,
                    oid: None,
                })
            })
            .collect()
    }
}
