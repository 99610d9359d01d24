//! The git files a workspace's unpack writes itself instead of running
//! git (`unpack.rs`): HEAD's tree as the host lists it, the version 2
//! index, the config; and the checks of the ids, ref names and paths the
//! host sends.

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::os::unix::fs::MetadataExt;

pub(crate) use crate::sync::checked;
use crate::sync::{Kind, ManifestEntry};

pub(crate) fn is_oid(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A conservative `git check-ref-format --branch` (the host's git already
/// checked it; this guards the paths written under `.git/refs`).
pub(crate) fn ref_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.contains("..")
        && !name.contains("@{")
        && !name.ends_with('/')
        && !name.ends_with(".lock")
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.'))
        && name
            .bytes()
            .all(|b| b > 0x20 && b != 0x7f && !b"~^:?*[\\".contains(&b))
}

/// `[core]` as `git init` writes it, and the identity, quoted.
pub(crate) fn git_config(name: &str, email: &str) -> String {
    fn quoted(v: &str) -> String {
        let mut s = String::from("\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                c => s.push(c),
            }
        }
        s.push('"');
        s
    }
    format!(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n[user]\n\tname = {}\n\temail = {}\n",
        quoted(name),
        quoted(email)
    )
}

/// The mode of a submodule's entry.
pub const GITLINK: u32 = 0o160000;

/// One entry of HEAD's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// `0o100644`, `0o100755`, `0o120000` or [`GITLINK`].
    pub mode: u32,
    /// The object id.
    pub oid: [u8; 20],
    /// The path, `/`-separated.
    pub path: String,
}

/// Parses `git ls-tree -r -z --full-tree` output: `MODE TYPE OID\tPATH\0`.
pub fn parse_tree(data: &[u8]) -> Result<Vec<TreeEntry>, String> {
    let bad = |what: &str| what.to_string();
    let mut out = Vec::new();
    for rec in data.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let rec = std::str::from_utf8(rec).map_err(|_| bad("a path that is not UTF-8"))?;
        let (info, path) = rec.split_once('\t').ok_or_else(|| bad("no tab"))?;
        let mut parts = info.split(' ');
        let (Some(mode), Some(_kind), Some(oid), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("a malformed line"));
        };
        let mode = u32::from_str_radix(mode, 8).map_err(|_| bad("a malformed mode"))?;
        if !matches!(mode, 0o100644 | 0o100755 | 0o120000 | GITLINK) {
            return Err(bad("an unknown mode"));
        }
        if !is_oid(oid) {
            return Err(bad("a malformed object id"));
        }
        checked(path).map_err(|e| e.to_string())?;
        out.push(TreeEntry {
            mode,
            oid: hex20(oid),
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// An object id in lower-case hex.
pub fn hex(oid: &[u8]) -> String {
    oid.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a 40-digit hex object id (checked by the caller).
pub fn hex20(s: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

/// What the host says it sent, by path: kind and blob id.
pub(crate) fn sent_oids(manifest: &[u8]) -> io::Result<HashMap<String, (Kind, String)>> {
    let mut out = HashMap::new();
    for line in manifest.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let e: ManifestEntry = serde_json::from_str(&line)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        out.insert(e.path, (e.kind, e.oid));
    }
    Ok(out)
}

pub(crate) fn mode_of(kind: Kind) -> u32 {
    match kind {
        Kind::File => 0o100644,
        Kind::Executable => 0o100755,
        Kind::Symlink => 0o120000,
    }
}

pub(crate) struct Index {
    /// The file's bytes.
    pub(crate) bytes: Vec<u8>,
    /// Its entries.
    pub(crate) entries: u64,
    /// Entries with the stat of the file written.
    pub(crate) clean: u64,
}

/// A version 2 git index of `tree`. An entry gets the stat of the file
/// written only when the host sent exactly HEAD's blob for it (same id and
/// mode); any other gets zero stat and size, as after `git read-tree`, so
/// git compares its content.
pub(crate) fn build_index(
    mut tree: Vec<TreeEntry>,
    sent: &HashMap<String, (Kind, String)>,
    written: &HashMap<String, std::fs::Metadata>,
) -> Index {
    tree.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut bytes = Vec::with_capacity(12 + tree.len() * 100);
    bytes.extend_from_slice(b"DIRC");
    bytes.extend_from_slice(&2u32.to_be_bytes());
    bytes.extend_from_slice(&(tree.len() as u32).to_be_bytes());
    let mut clean = 0;
    for e in &tree {
        let stat = sent
            .get(&e.path)
            .filter(|(kind, oid)| mode_of(*kind) == e.mode && hex20(oid) == e.oid)
            .and_then(|_| written.get(&e.path));
        // Git stores these fields truncated to 32 bits.
        let fields: [u32; 10] = match stat {
            Some(m) => {
                clean += 1;
                [
                    m.ctime() as u32,
                    m.ctime_nsec() as u32,
                    m.mtime() as u32,
                    m.mtime_nsec() as u32,
                    m.dev() as u32,
                    m.ino() as u32,
                    e.mode,
                    m.uid(),
                    m.gid(),
                    m.len() as u32,
                ]
            }
            None => [0, 0, 0, 0, 0, 0, e.mode, 0, 0, 0],
        };
        let start = bytes.len();
        for f in fields {
            bytes.extend_from_slice(&f.to_be_bytes());
        }
        bytes.extend_from_slice(&e.oid);
        let flags = e.path.len().min(0xfff) as u16;
        bytes.extend_from_slice(&flags.to_be_bytes());
        bytes.extend_from_slice(e.path.as_bytes());
        // NUL padding to a multiple of 8, at least one.
        let len = (bytes.len() - start + 8) & !7;
        bytes.resize(start + len, 0);
    }
    let mut h = sha1_smol::Sha1::new();
    h.update(&bytes);
    bytes.extend_from_slice(&h.digest().bytes());
    Index {
        bytes,
        entries: tree.len() as u64,
        clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_that_could_leave_refs_are_refused() {
        for ok in ["main", "feature/x", "v1.2"] {
            assert!(ref_name_ok(ok), "{ok}");
        }
        for bad in [
            "", "../x", "a/../b", "/abs", "a/", ".hidden", "a/.b", "x.lock", "a b", "a\\b", "a~1",
            "@{u}",
        ] {
            assert!(!ref_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn a_malformed_tree_listing_is_refused() {
        let oid = "a".repeat(40);
        let good = format!("100644 blob {oid}\tsrc/a.rs\0160000 commit {oid}\tvendor\0");
        let tree = parse_tree(good.as_bytes()).unwrap();
        assert_eq!(tree.len(), 2);
        assert_eq!(tree[1].mode, GITLINK);
        for bad in [
            format!("100644 blob {oid}\t../x\0"),
            format!("100644 blob {oid}\t.git/config\0"),
            format!("100600 blob {oid}\tx\0"),
            format!("100644 blob {}\tx\0", "A".repeat(40)),
            format!("100644 blob {oid} x\0"),
        ] {
            assert!(parse_tree(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_identity_is_quoted_for_git_config() {
        let c = git_config("A \"q\" \\ b", "a@b");
        assert!(c.contains("\tname = \"A \\\"q\\\" \\\\ b\"\n"), "{c}");
    }
}
