//! Git pack objects stored without compression, in one exact byte layout
//! that the host and the guest both produce: the guest writes the objects
//! of a workspace's "local pack" from the file contents it receives anyway,
//! and the host, which sent those bytes, computes from the same layout the
//! pack's checksum and index. So a blob of HEAD whose file travels needs
//! neither a second copy on the wire nor any hashing in the guest.
//!
//! An object is its pack header (type and size), a zlib stream of deflate
//! "stored" blocks (65,535 bytes each, the last one shorter and final; one
//! empty final block for empty data), and the data's Adler-32.

use std::io::{self, Write};

/// The pack type of a blob.
pub const BLOB: u8 = 3;

/// Most bytes a stored deflate block holds.
const BLOCK: u64 = 65_535;

/// zlib's header for deflate with a 32 KiB window and no dictionary, level
/// bits 0 (`0x7801` is a multiple of 31, as zlib requires).
const ZLIB_HEADER: [u8; 2] = [0x78, 0x01];

/// The start of a version 2 pack of `count` objects.
pub fn pack_header(count: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(b"PACK");
    h[4..8].copy_from_slice(&2u32.to_be_bytes());
    h[8..].copy_from_slice(&count.to_be_bytes());
    h
}

/// A pack object's header: type in bits 4-6 of the first byte, the size in
/// 4 bits then 7 bits per byte, low bits first, the high bit meaning "more".
fn object_header(kind: u8, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    let mut byte = (kind & 7) << 4 | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest != 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
    out
}

/// One object being written: its data arrives in chunks of any size.
#[derive(Debug)]
pub struct ObjectEncoder {
    size: u64,
    done: u64,
    /// Bytes left in the current block.
    block_left: u64,
    a: u32,
    b: u32,
}

impl ObjectEncoder {
    /// Writes the object's header, the zlib header and the first block's
    /// header.
    pub fn start(kind: u8, size: u64, out: &mut impl Write) -> io::Result<ObjectEncoder> {
        out.write_all(&object_header(kind, size))?;
        out.write_all(&ZLIB_HEADER)?;
        let mut enc = ObjectEncoder {
            size,
            done: 0,
            block_left: 0,
            a: 1,
            b: 0,
        };
        enc.next_block(out)?;
        Ok(enc)
    }

    /// The header of the next block (the only, empty one for empty data).
    fn next_block(&mut self, out: &mut impl Write) -> io::Result<()> {
        let remaining = self.size - self.done;
        let len = remaining.min(BLOCK);
        let fin = u8::from(len == remaining);
        let len16 = len as u16;
        out.write_all(&[fin])?;
        out.write_all(&len16.to_le_bytes())?;
        out.write_all(&(!len16).to_le_bytes())?;
        self.block_left = len;
        Ok(())
    }

    /// Writes the next chunk of data.
    pub fn data(&mut self, mut chunk: &[u8], out: &mut impl Write) -> io::Result<()> {
        if chunk.len() as u64 > self.size - self.done {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more data than the object's size",
            ));
        }
        while !chunk.is_empty() {
            if self.block_left == 0 {
                self.next_block(out)?;
            }
            let n = (chunk.len() as u64).min(self.block_left) as usize;
            out.write_all(&chunk[..n])?;
            self.adler(&chunk[..n]);
            self.done += n as u64;
            self.block_left -= n as u64;
            chunk = &chunk[n..];
        }
        Ok(())
    }

    fn adler(&mut self, data: &[u8]) {
        // 5552 bytes is the most that cannot overflow `b` between reductions.
        for part in data.chunks(5552) {
            for &x in part {
                self.a += u32::from(x);
                self.b += self.a;
            }
            self.a %= 65521;
            self.b %= 65521;
        }
    }

    /// Ends the object with the data's Adler-32; fails when less data came
    /// than the size said.
    pub fn finish(self, out: &mut impl Write) -> io::Result<()> {
        if self.done != self.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} of {} bytes of an object", self.done, self.size),
            ));
        }
        out.write_all(&(self.b << 16 | self.a).to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = ObjectEncoder::start(BLOB, data.len() as u64, &mut out).unwrap();
        for c in data.chunks(chunk.max(1)) {
            enc.data(c, &mut out).unwrap();
        }
        enc.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn object_headers_carry_type_and_size() {
        assert_eq!(object_header(BLOB, 0), [0x30]);
        assert_eq!(object_header(BLOB, 15), [0x3f]);
        assert_eq!(object_header(BLOB, 16), [0xb0, 0x01]);
        assert_eq!(object_header(BLOB, 65_536), [0xb0, 0x80, 0x20]);
    }

    #[test]
    fn the_layout_does_not_depend_on_how_the_data_is_split() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = object(&data, data.len());
        assert_eq!(object(&data, 1000), whole);
        assert_eq!(object(&data, 65_535), whole);
        assert_eq!(object(&data, 65_536), whole);
        // Header, zlib header, 4 blocks of 5 header bytes, data, Adler-32.
        assert_eq!(whole.len(), 3 + 2 + 4 * 5 + data.len() + 4);
    }

    #[test]
    fn too_much_or_too_little_data_is_refused() {
        let mut out = Vec::new();
        let mut enc = ObjectEncoder::start(BLOB, 3, &mut out).unwrap();
        assert!(enc.data(b"abcd", &mut out).is_err());
        enc.data(b"ab", &mut out).unwrap();
        assert!(enc.finish(&mut out).is_err());
    }

    /// The zlib part is what a real inflater reads back (the host's tests
    /// check whole packs with `git fsck`).
    #[test]
    fn empty_data_is_one_empty_final_block() {
        let out = object(b"", 1);
        assert_eq!(out, [0x30, 0x78, 0x01, 0x01, 0, 0, 0xff, 0xff, 0, 0, 0, 1]);
    }
}
