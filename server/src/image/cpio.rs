//! A writer for the cpio "newc" format (`070701`), the format the Linux
//! kernel unpacks as an initramfs.
//!
//! Every entry is owned by root (uid 0, gid 0) with mtime 0, so the same
//! input always gives the same bytes. Several archives can be concatenated
//! into one initrd: the kernel unpacks them in order, later files replacing
//! earlier ones. Device nodes are not needed: the kernel's built-in initramfs
//! already provides `/dev/console`, and `/init` mounts devtmpfs.

use std::io::{self, Write};

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// One member of an archive. Paths are written without a leading `/`
/// (`bin/busybox`); a parent directory must come before its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir {
        /// Path inside the archive, e.g. `lib/modules`.
        path: String,
        /// Permission bits, e.g. `0o755`.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Path inside the archive, e.g. `bin/busybox`.
        path: String,
        /// Permission bits, e.g. `0o755`.
        mode: u32,
        /// The file's contents (less than 4 GiB).
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Path inside the archive, e.g. `bin/sh`.
        path: String,
        /// What the link points to, e.g. `busybox`.
        target: String,
    },
}

/// Writes `entries` followed by the `TRAILER!!!` record as one newc archive.
///
/// Fails with `InvalidInput` for an empty path, a path with a NUL byte or a
/// `..` component, permission bits outside `0o7777`, or a file of 4 GiB or
/// more.
pub fn write_newc(entries: &[Entry], out: &mut impl Write) -> io::Result<()> {
    let mut writer = NewcWriter { out, written: 0 };
    for (index, entry) in entries.iter().enumerate() {
        // Inode numbers only need to be distinct within an archive; 0 is
        // left for the trailer.
        let ino = u32::try_from(index + 1).map_err(|_| invalid("too many cpio entries"))?;
        let (path, mode, data): (&str, u32, &[u8]) = match entry {
            Entry::Dir { path, mode } => (path, S_IFDIR | checked_mode(*mode)?, &[]),
            Entry::File { path, mode, data } => (path, S_IFREG | checked_mode(*mode)?, data),
            Entry::Symlink { path, target } => (path, S_IFLNK | 0o777, target.as_bytes()),
        };
        let name = normalized_path(path)?;
        let nlink = if matches!(entry, Entry::Dir { .. }) {
            2
        } else {
            1
        };
        writer.record(ino, mode, nlink, name, data)?;
    }
    writer.record(0, 0, 1, TRAILER, &[])?;
    writer.out.flush()
}

struct NewcWriter<'a, W: Write> {
    out: &'a mut W,
    written: u64,
}

impl<W: Write> NewcWriter<'_, W> {
    fn record(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        name: &str,
        data: &[u8],
    ) -> io::Result<()> {
        let filesize = u32::try_from(data.len()).map_err(|_| {
            invalid(format!(
                "{name}: cpio newc cannot hold files of 4 GiB or more"
            ))
        })?;
        let namesize = u32::try_from(name.len() + 1).map_err(|_| invalid("cpio path too long"))?;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor
        // rdevminor namesize check
        let fields = [ino, mode, 0, 0, nlink, 0, filesize, 0, 0, 0, 0, namesize, 0];
        let mut header = Vec::with_capacity(110);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.put(&header)?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Pads with NUL bytes to the next multiple of 4, as newc requires after
    /// the name and after the data.
    fn pad(&mut self) -> io::Result<()> {
        let rest = (4 - self.written % 4) % 4;
        self.put(&[0; 3][..rest as usize])
    }
}

fn checked_mode(mode: u32) -> io::Result<u32> {
    if mode & !0o7777 != 0 {
        return Err(invalid(format!(
            "cpio mode {mode:o} has bits beyond 0o7777; give permission bits only"
        )));
    }
    Ok(mode)
}

fn normalized_path(path: &str) -> io::Result<&str> {
    let name = path.trim_start_matches('/');
    if name.is_empty() {
        return Err(invalid("empty cpio path"));
    }
    if name.contains('\0') {
        return Err(invalid(format!("cpio path {name:?} contains a NUL byte")));
    }
    if name.split('/').any(|part| part == "..") {
        return Err(invalid(format!("cpio path {name:?} contains `..`")));
    }
    Ok(name)
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Dir {
                path: "/bin".into(),
                mode: 0o755,
            },
            Entry::File {
                path: "bin/hello".into(),
                mode: 0o755,
                data: b"#!/bin/sh\necho hello\n".to_vec(),
            },
            Entry::File {
                path: "bin/odd".into(),
                mode: 0o600,
                data: vec![7; 5],
            },
            Entry::Symlink {
                path: "bin/sh".into(),
                target: "hello".into(),
            },
        ]
    }

    fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        write_newc(entries, &mut out).unwrap();
        out
    }

    fn cpio(args: &[&str], dir: &std::path::Path, input: &[u8]) -> String {
        let mut child = crate::tool::for_test(crate::tool::Tool::Cpio)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the `cpio` command (Debian package cpio) is needed for this test");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "cpio {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn real_cpio_lists_and_extracts_the_archive() {
        let bytes = archive(&sample());
        assert_eq!(bytes.len() % 4, 0);
        let dir = tempfile::tempdir().unwrap();

        let listing = cpio(&["-it", "--quiet"], dir.path(), &bytes);
        assert_eq!(
            listing.lines().collect::<Vec<_>>(),
            ["bin", "bin/hello", "bin/odd", "bin/sh"]
        );

        cpio(&["-i", "--quiet", "--make-directories"], dir.path(), &bytes);
        let root = dir.path();
        assert_eq!(
            std::fs::read(root.join("bin/hello")).unwrap(),
            b"#!/bin/sh\necho hello\n"
        );
        assert_eq!(std::fs::read(root.join("bin/odd")).unwrap(), vec![7; 5]);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            std::path::Path::new("hello")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin/hello"), 0o755);
        assert_eq!(mode("bin/odd"), 0o600);
        assert!(std::fs::metadata(root.join("bin")).unwrap().is_dir());
    }

    #[test]
    fn concatenated_archives_are_read_in_order() {
        let mut bytes = archive(&sample());
        bytes.extend(archive(&[Entry::File {
            path: "second".into(),
            mode: 0o644,
            data: b"2".to_vec(),
        }]));
        let dir = tempfile::tempdir().unwrap();
        // GNU cpio stops at the first trailer; skipping it shows that the
        // second archive starts on a 4-byte boundary with a valid header.
        let first_len = archive(&sample()).len();
        assert_eq!(&bytes[first_len..first_len + 6], MAGIC);
        let listing = cpio(&["-it", "--quiet"], dir.path(), &bytes[first_len..]);
        assert_eq!(listing.trim(), "second");
    }

    /// sha256 of `archive(&sample())` as this writer produces it: every
    /// boot's host segment, and so the initrd cache key, depends on these
    /// bytes, so any change to them must be deliberate (update the hash).
    const SAMPLE_SHA256: &str = "d50d1c0924836cdf685e9d6fa9d4a0ae4db5cda74a014d7fb6643a0d0e3654e0";

    #[test]
    fn output_is_deterministic() {
        use sha2::Digest;
        let bytes = archive(&sample());
        assert_eq!(bytes, archive(&sample()));
        let sha = format!("{:x}", sha2::Sha256::digest(&bytes));
        assert_eq!(
            sha, SAMPLE_SHA256,
            "the writer's output changed; if that is intended, pin the new hash"
        );
    }

    #[test]
    fn bad_paths_and_modes_are_rejected() {
        for path in ["", "/", "a/../b", "a\0b"] {
            let entry = Entry::Dir {
                path: path.into(),
                mode: 0o755,
            };
            let err = write_newc(&[entry], &mut Vec::new()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{path:?}");
        }
        let entry = Entry::Dir {
            path: "x".into(),
            mode: 0o40755,
        };
        assert!(write_newc(&[entry], &mut Vec::new()).is_err());
    }
}
