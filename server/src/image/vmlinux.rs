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

    #[test]
    fn a_non_elf_payload_is_rejected() {
        let data = vec![0x42u8; 100_000];
        let image = fake_bzimage(&lz4_legacy(&data), data.len());
        let err = extract_vmlinux(&image).unwrap_err().to_string();
        assert!(err.contains("not an ELF"), "{err}");
    }
}
