//! The host's half of a workspace's local pack (`banger_agent::pack`): the
//! guest writes HEAD's blobs from the files it receives, as stored objects;
//! the host follows the very bytes it sends through the same encoder and
//! makes the pack's checksum and its version 2 index, which travel after
//! the files.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use banger_agent::gitfiles;
use banger_agent::pack::{self, ObjectEncoder};
use sha1::Digest;

use super::{FileKind, Selection};

/// The local pack, followed object by object.
pub(crate) struct LocalPack {
    sha: sha1::Sha1,
    offset: u64,
    declared: u32,
    entries: Vec<Entry>,
}

struct Entry {
    oid: [u8; 20],
    offset: u64,
    crc: u32,
}

/// Where the encoder's bytes go on the host: the pack's checksum, the
/// object's CRC-32 and the offset.
struct Sink<'a> {
    pack: &'a mut LocalPack,
    crc: crc32fast::Hasher,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pack.sha.update(buf);
        self.crc.update(buf);
        self.pack.offset += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LocalPack {
    /// A pack that will hold `declared` objects.
    pub(crate) fn new(declared: u32) -> LocalPack {
        let mut sha = sha1::Sha1::new();
        let header = pack::pack_header(declared);
        sha.update(header);
        LocalPack {
            sha,
            offset: header.len() as u64,
            declared,
            entries: Vec::new(),
        }
    }

    /// The next object, `size` bytes that `inner` gives exactly.
    pub(crate) fn object<R: Read>(
        &mut self,
        inner: R,
        size: u64,
    ) -> io::Result<ObjectReader<'_, R>> {
        let start = self.offset;
        let mut sink = Sink {
            pack: self,
            crc: crc32fast::Hasher::new(),
        };
        let encoder = ObjectEncoder::start(pack::BLOB, size, &mut sink)?;
        Ok(ObjectReader {
            inner,
            encoder,
            sink,
            start,
        })
    }

    /// The index (its trailer names the pack's checksum). Fails when the
    /// objects are not the number announced, or two have one id.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, String> {
        if self.entries.len() as u64 != u64::from(self.declared) {
            return Err(format!(
                "{} objects in a pack announced with {}",
                self.entries.len(),
                self.declared
            ));
        }
        let sum: [u8; 20] = self.sha.finalize().into();
        self.entries.sort_by_key(|e| e.oid);
        let mut seen = HashSet::new();
        if let Some(dup) = self.entries.iter().find(|e| !seen.insert(e.oid)) {
            return Err(format!("two files became blob {}", gitfiles::hex(&dup.oid)));
        }
        Ok(index_v2(&self.entries, &sum))
    }
}

/// Which files are also HEAD's blobs: a regular file of the same kind at
/// the same path in HEAD's tree. Each such blob travels once, as that file
/// (the first with it), and the guest adds it to its local pack; if the
/// file's bytes turn out not to be HEAD's blob after all (the file is
/// modified), that blob is packed separately at the end.
#[derive(Debug, Default)]
pub(crate) struct BlobPlan {
    /// Path → HEAD's blob id (hex).
    pub(crate) blobs: HashMap<String, String>,
}

impl BlobPlan {
    pub(crate) fn new(sel: &Selection, tree: &[u8]) -> Result<BlobPlan, String> {
        let tree = gitfiles::parse_tree(tree)?;
        let by_path: HashMap<&str, &gitfiles::TreeEntry> =
            tree.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut seen = HashSet::new();
        let mut blobs = HashMap::new();
        for f in &sel.files {
            let mode = match f.kind {
                FileKind::File => 0o100644,
                FileKind::Executable => 0o100755,
                FileKind::Symlink => continue,
            };
            if let Some(e) = by_path.get(f.path.as_str())
                && e.mode == mode
                && seen.insert(e.oid)
            {
                blobs.insert(f.path.clone(), gitfiles::hex(&e.oid));
            }
        }
        Ok(BlobPlan { blobs })
    }
}

/// A version 2 pack index: magic and version, the fan-out table, the
/// sorted ids, their CRC-32s, their offsets (31 bits, or an index into the
/// table of 64-bit ones), the pack's checksum, then the index's own.
fn index_v2(sorted: &[Entry], pack_sum: &[u8; 20]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 1024 + sorted.len() * 28 + 40);
    out.extend_from_slice(b"\xfftOc");
    out.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for e in sorted {
        fanout[usize::from(e.oid[0])] += 1;
    }
    let mut total = 0u32;
    for n in fanout {
        total += n;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for e in sorted {
        out.extend_from_slice(&e.oid);
    }
    for e in sorted {
        out.extend_from_slice(&e.crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for e in sorted {
        let small = if e.offset < 1 << 31 {
            e.offset as u32
        } else {
            large.push(e.offset);
            (1 << 31) | (large.len() as u32 - 1)
        };
        out.extend_from_slice(&small.to_be_bytes());
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(pack_sum);
    let sum = sha1::Sha1::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Reads an object's data from `inner` (which must give exactly its size)
/// and follows it into the pack.
pub(crate) struct ObjectReader<'a, R> {
    inner: R,
    encoder: ObjectEncoder,
    sink: Sink<'a>,
    start: u64,
}

impl<R: Read> Read for ObjectReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.encoder.data(&buf[..n], &mut self.sink)?;
        Ok(n)
    }
}

impl<R> ObjectReader<'_, R> {
    /// Ends the object, whose content has id `oid`.
    pub(crate) fn finish(mut self, oid: [u8; 20]) -> io::Result<()> {
        self.encoder.finish(&mut self.sink)?;
        let crc = self.sink.crc.clone().finalize();
        self.sink.pack.entries.push(Entry {
            oid,
            offset: self.start,
            crc,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_past_2_gib_go_to_the_large_table() {
        let e = |first: u8, offset: u64| Entry {
            oid: [first; 20],
            offset,
            crc: 7,
        };
        let idx = index_v2(&[e(1, 12), e(2, 3 << 30)], &[9; 20]);
        let offsets = 8 + 1024 + 2 * 20 + 2 * 4;
        assert_eq!(idx[offsets..offsets + 4], 12u32.to_be_bytes());
        assert_eq!(idx[offsets + 4..offsets + 8], 0x8000_0000u32.to_be_bytes());
        assert_eq!(idx[offsets + 8..offsets + 16], (3u64 << 30).to_be_bytes());
        assert_eq!(idx[offsets + 16..offsets + 36], [9; 20]);
        assert_eq!(idx.len(), offsets + 16 + 40);
        // Fan-out: none below 1, one at 1, two from 2 on.
        assert_eq!(idx[8..12], 0u32.to_be_bytes());
        assert_eq!(idx[12..16], 1u32.to_be_bytes());
        assert_eq!(idx[8 + 255 * 4..8 + 256 * 4], 2u32.to_be_bytes());
    }

    #[test]
    fn a_pack_with_other_than_the_announced_count_or_a_twice_used_id_is_refused() {
        fn add(pack: &mut LocalPack, data: &[u8], oid: [u8; 20]) {
            let mut r = pack.object(data, data.len() as u64).unwrap();
            std::io::copy(&mut r, &mut std::io::sink()).unwrap();
            r.finish(oid).unwrap();
        }
        let mut pack = LocalPack::new(2);
        add(&mut pack, b"ab", [1; 20]);
        assert!(LocalPack::new(2).finish().is_err());
        add(&mut pack, b"cd", [1; 20]);
        assert!(pack.finish().unwrap_err().contains("two files"));
    }
}
