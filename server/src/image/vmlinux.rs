//! Turns a bzImage into the uncompressed ELF `vmlinux` that Firecracker
//! boots. Only LZ4 payloads are handled: that is what Debian's cloud kernel
//! uses; anything else is a clear error, never a guess.

use super::ImageError;

/// Offset of `setup_sects` in the boot sector.
const SETUP_SECTS: usize = 0x1f1;
/// Offset of the `HdrS` boot protocol signature.
const HEADER_MAGIC_AT: usize = 0x202;
/// Offset of `payload_offset` (u32, relative to the protected-mode code).
const PAYLOAD_OFFSET: usize = 0x248;
/// Offset of `payload_length` (u32).
const PAYLOAD_LENGTH: usize = 0x24c;
/// Magic number that starts an LZ4 legacy frame (and may restart it).
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Uncompressed size of every block of an LZ4 legacy frame except the last.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Extracts the uncompressed kernel (an ELF file) from a bzImage whose
/// payload is an LZ4 legacy frame, as in Debian's `linux-image-*-cloud-amd64`.
///
/// The payload is located through the setup header (`setup_sects` at 0x1f1,
/// `payload_offset` at 0x248 and `payload_length` at 0x24c, relative to the
/// protected-mode code at `(setup_sects + 1) * 512`). A trailing 4-byte
/// uncompressed size, as the kernel build appends it, is checked when present.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, ImageError> {
    let payload = payload(bzimage)?;
    let vmlinux = decode_lz4_legacy(payload)?;
    if !vmlinux.starts_with(ELF_MAGIC) {
        return Err(ImageError::Kernel(
            "the decompressed payload is not an ELF file; this kernel is not supported".into(),
        ));
    }
    Ok(vmlinux)
}

/// Xen's ELF note type `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit entry point
/// of the PVH boot protocol.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `PT_NOTE`.
const PT_NOTE: u32 = 4;
/// Larger note segments than this are not a kernel's (a vmlinux has ~1 KiB).
const MAX_NOTES: u64 = 1 << 20;

/// Whether the ELF kernel at `path` can be booted directly through the PVH
/// entry (a `Xen` note of type `XEN_ELFNOTE_PHYS32_ENTRY`, `CONFIG_PVH`).
/// QEMU then loads it as it is, which skips the bzImage's decompression:
/// under emulation that is ~0.3 s of every cold boot. Anything unreadable or
/// unexpected is `false` (the bzImage is used), never an error.
pub fn boots_as_pvh(path: &std::path::Path) -> bool {
    pvh_note(path).unwrap_or(false)
}

fn pvh_note(path: &std::path::Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header)?;
    // 64-bit, little-endian ELF only (x86_64).
    if !header.starts_with(ELF_MAGIC) || header[4] != 2 || header[5] != 1 {
        return Ok(false);
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u64_at = |b: &[u8], at: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(v)
    };
    let phoff = u64_at(&header, 0x20);
    let phentsize = usize::from(u16_at(&header, 0x36));
    let phnum = usize::from(u16_at(&header, 0x38));
    if phentsize < 56 || phnum == 0 {
        return Ok(false);
    }
    let mut table = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff))?;
    file.read_exact(&mut table)?;
    for entry in table.chunks_exact(phentsize) {
        if read_u32(entry, 0) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(entry, 0x08), u64_at(entry, 0x20));
        if size > MAX_NOTES {
            continue;
        }
        let mut notes = vec![0u8; usize::try_from(size).unwrap_or(0)];
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut notes)?;
        if has_pvh_note(&notes) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Walks one note segment: `namesz`, `descsz`, `type`, then the name and
/// the descriptor, each padded to 4 bytes.
fn has_pvh_note(mut notes: &[u8]) -> bool {
    let pad = |n: usize| n.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let namesz = read_u32(notes, 0) as usize;
        let descsz = read_u32(notes, 4) as usize;
        let kind = read_u32(notes, 8);
        let Some(end) = pad(namesz)
            .checked_add(pad(descsz))
            .and_then(|n| n.checked_add(12))
            .filter(|&n| n <= notes.len())
        else {
            return false;
        };
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && &notes[12..12 + namesz] == b"Xen\0" {
            return true;
        }
        notes = &notes[end..];
    }
    false
}

fn payload(bzimage: &[u8]) -> Result<&[u8], ImageError> {
    if bzimage.len() < PAYLOAD_LENGTH + 4 {
        return Err(ImageError::Kernel(format!(
            "file is {} bytes, too short for a bzImage setup header",
            bzimage.len()
        )));
    }
    if &bzimage[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4] != b"HdrS" {
        return Err(ImageError::Kernel(
            "no `HdrS` setup header signature at 0x202; is this a bzImage (vmlinuz)?".into(),
        ));
    }
    // The boot protocol says 0 means 4.
    let setup_sects = match bzimage[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let code_start = (setup_sects + 1) * 512;
    let offset = read_u32(bzimage, PAYLOAD_OFFSET) as usize;
    let length = read_u32(bzimage, PAYLOAD_LENGTH) as usize;
    let start = code_start + offset;
    let end = start
        .checked_add(length)
        .filter(|&end| end <= bzimage.len());
    match end {
        Some(end) if length > 0 => Ok(&bzimage[start..end]),
        _ => Err(ImageError::Kernel(format!(
            "payload ({length} bytes at {start}) lies outside the {}-byte file; the kernel image is truncated",
            bzimage.len()
        ))),
    }
}

/// Decodes an LZ4 legacy frame: the magic, then blocks of `[u32 LE
/// compressed size][compressed data]`, each up to 8 MiB uncompressed. The
/// magic may repeat (concatenated frames).
fn decode_lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, ImageError> {
    if payload.len() < 4 || read_u32(payload, 0) != LZ4_LEGACY_MAGIC {
        return Err(ImageError::Kernel(
            "the payload is not LZ4 (legacy frame); only LZ4-compressed kernels are supported"
                .into(),
        ));
    }
    let mut out: Vec<u8> = Vec::with_capacity(payload.len() * 4);
    let mut at = 4;
    while at < payload.len() {
        let rest = payload.len() - at;
        if rest < 4 {
            return Err(ImageError::Kernel(format!(
                "{rest} stray bytes at the end of the LZ4 payload; the kernel image is truncated"
            )));
        }
        let word = read_u32(payload, at);
        if rest == 4 {
            // The kernel build appends the uncompressed size after the frame.
            if word as usize != out.len() {
                return Err(ImageError::Kernel(format!(
                    "the payload says the kernel is {word} bytes but {} were decoded; the kernel image is corrupt",
                    out.len()
                )));
            }
            break;
        }
        at += 4;
        if word == LZ4_LEGACY_MAGIC {
            continue;
        }
        let size = word as usize;
        if size == 0 || size > rest - 4 {
            return Err(ImageError::Kernel(format!(
                "LZ4 block at payload offset {} claims {size} bytes but {} remain; the kernel image is truncated or corrupt",
                at - 4,
                rest - 4
            )));
        }
        let block = &payload[at..at + size];
        let filled = out.len();
        out.resize(filled + LZ4_LEGACY_BLOCK, 0);
        let written =
            lz4_flex::block::decompress_into(block, &mut out[filled..]).map_err(|source| {
                ImageError::KernelLz4 {
                    offset: at - 4,
                    source,
                }
            })?;
        out.truncate(filled + written);
        at += size;
    }
    Ok(out)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Stdio;

    /// A payload that looks like a kernel: `/bin/true` (an ELF file) repeated
    /// past 8 MiB, with a counter mixed in so it is not trivially repetitive.
    fn fake_vmlinux() -> Vec<u8> {
        let elf = std::fs::read("/bin/true").unwrap();
        assert!(elf.starts_with(ELF_MAGIC));
        let mut out = Vec::new();
        let mut round = 0u32;
        while out.len() < LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 2 {
            out.extend_from_slice(&elf);
            out.extend_from_slice(&round.to_le_bytes());
            round += 1;
        }
        out
    }

    fn lz4_legacy(data: &[u8]) -> Vec<u8> {
        let mut child = crate::tool::for_test(crate::tool::Tool::Lz4)
            .args(["-l", "-9", "-c", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the `lz4` command (Debian package lz4) is needed for this test");
        let mut stdin = child.stdin.take().unwrap();
        let input = data.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input).unwrap());
        let output = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(output.status.success());
        output.stdout
    }

    /// Wraps a payload in a minimal bzImage: 2 setup sectors after the boot
    /// sector, `HdrS`, payload 0x100 bytes into the protected-mode code, plus
    /// the uncompressed size the kernel build appends.
    fn fake_bzimage(compressed: &[u8], uncompressed_len: usize) -> Vec<u8> {
        let setup_sects = 2u8;
        let code_start = (usize::from(setup_sects) + 1) * 512;
        let offset = 0x100usize;
        let mut payload = compressed.to_vec();
        payload.extend_from_slice(&(uncompressed_len as u32).to_le_bytes());
        let mut image = vec![0u8; code_start + offset];
        image[SETUP_SECTS] = setup_sects;
        image[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(b"HdrS");
        image[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&(offset as u32).to_le_bytes());
        image[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&payload);
        image.extend_from_slice(&[0xAA; 64]); // trailing data after the payload
        image
    }

    #[test]
    fn extracts_a_two_block_lz4_payload_byte_for_byte() {
        let vmlinux = fake_vmlinux();
        let compressed = lz4_legacy(&vmlinux);
        // Two blocks: magic, size, data, size, data.
        let first = read_u32(&compressed, 4) as usize;
        assert!(compressed.len() > 8 + first + 4, "expected a second block");
        let image = fake_bzimage(&compressed, vmlinux.len());
        let extracted = extract_vmlinux(&image).unwrap();
        assert!(extracted == vmlinux, "extracted vmlinux differs");
    }

    #[test]
    fn corrupt_payloads_fail_clearly() {
        let vmlinux = fake_vmlinux();
        let compressed = lz4_legacy(&vmlinux);
        let image = fake_bzimage(&compressed, vmlinux.len());
        let payload_start = 3 * 512 + 0x100;

        // Flipped bytes inside the first block.
        let mut bad = image.clone();
        for byte in &mut bad[payload_start + 8..payload_start + 4096] {
            *byte ^= 0x5A;
        }
        let err = extract_vmlinux(&bad).unwrap_err().to_string();
        assert!(err.contains("cannot extract vmlinux"), "{err}");

        // Not LZ4 at all.
        let mut bad = image.clone();
        bad[payload_start] = 0x1f;
        let err = extract_vmlinux(&bad).unwrap_err().to_string();
        assert!(err.contains("not LZ4"), "{err}");

        // Block size larger than what is left.
        let mut bad = image.clone();
        bad[payload_start + 4..payload_start + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = extract_vmlinux(&bad).unwrap_err().to_string();
        assert!(err.contains("truncated or corrupt"), "{err}");

        // Wrong appended size.
        let image_bad_len = fake_bzimage(&compressed, vmlinux.len() + 1);
        let err = extract_vmlinux(&image_bad_len).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");

        // No setup header.
        let err = extract_vmlinux(&vmlinux).unwrap_err().to_string();
        assert!(err.contains("HdrS"), "{err}");

        // Payload beyond the end of the file.
        let err = extract_vmlinux(&image[..image.len() / 2])
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    /// A 64-bit ELF file with one `PT_NOTE` segment holding `notes`.
    fn elf_with_notes(notes: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
        let mut segment = Vec::new();
        for (name, kind, desc) in notes {
            segment.extend_from_slice(&(name.len() as u32).to_le_bytes());
            segment.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            segment.extend_from_slice(&kind.to_le_bytes());
            segment.extend_from_slice(name);
            segment.resize(segment.len().div_ceil(4) * 4, 0);
            segment.extend_from_slice(desc);
            segment.resize(segment.len().div_ceil(4) * 4, 0);
        }
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little-endian
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        elf[ph..ph + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
        elf[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        elf[ph + 0x20..ph + 0x28].copy_from_slice(&(segment.len() as u64).to_le_bytes());
        elf.extend_from_slice(&segment);
        elf
    }

    fn pvh(bytes: &[u8]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, bytes).unwrap();
        boots_as_pvh(&path)
    }

    #[test]
    fn the_pvh_entry_note_is_found_among_others() {
        let entry = 0x0100_0850u64.to_le_bytes();
        assert!(pvh(&elf_with_notes(&[
            (b"GNU\0", 3, b"build-id"),
            (b"Xen\0", 6, b"linux\0"),
            (b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &entry),
        ])));
    }

    #[test]
    fn no_pvh_entry_means_the_bzimage() {
        // Xen notes without the entry (a kernel built without CONFIG_PVH).
        assert!(!pvh(&elf_with_notes(&[(b"Xen\0", 6, b"linux\0")])));
        // The entry's type under another name.
        assert!(!pvh(&elf_with_notes(&[(
            b"Foo\0",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &[0; 8]
        )])));
        // A bzImage, a truncated header, a missing file.
        assert!(!pvh(b"MZ\x00\x00 not an ELF file"));
        assert!(!pvh(&elf_with_notes(&[])[..40]));
        assert!(!boots_as_pvh(std::path::Path::new("/nonexistent/vmlinux")));
        // A note whose sizes run past its segment.
        let mut bad = elf_with_notes(&[(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 8])]);
        bad[120..124].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!pvh(&bad));
    }

    #[test]
    fn a_non_elf_payload_is_rejected() {
        let data = vec![0x42u8; 100_000];
        let image = fake_bzimage(&lz4_legacy(&data), data.len());
        let err = extract_vmlinux(&image).unwrap_err().to_string();
        assert!(err.contains("not an ELF"), "{err}");
    }
}
