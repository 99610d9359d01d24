//! The kernel catalog: guest kernels besides the ones images bring, imported
//! from a file or pulled from a URL with a SHA-256, stored immutably under
//! `<cache>/kernels/<name>/` with their content id (sha256).
//!
//! A kernel marked `pvm` is built with PVM guest support, so it runs with
//! KVM on a `kvm_pvm` host, where stock kernels cannot. A kernel other than
//! its image's cannot load the image's modules: it needs the virtio, vsock,
//! ext4 and overlay drivers built in (the initramfs says which modules it
//! could not load, and fails clearly when a disk or the agent is missing).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// A catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file is neither an ELF vmlinux nor a bzImage.
    #[error("{0} is neither an ELF vmlinux nor an x86 bzImage")]
    Format(String),
    /// Name taken or unknown.
    #[error("{0}")]
    Name(String),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The downloaded kernel is not the one the caller vouched for.
    #[error(
        "checksum mismatch for {url}: expected {expected}, downloaded {actual}; nothing was imported"
    )]
    Checksum {
        /// Source.
        url: String,
        /// Given.
        expected: String,
        /// Of the bytes we got.
        actual: String,
    },
    /// A download failed.
    #[error(transparent)]
    Download(#[from] crate::install::InstallError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KernelError {
    let path = path.display().to_string();
    move |source| KernelError::Io { what, path, source }
}

/// How a kernel file is packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelFormat {
    /// Uncompressed ELF (Firecracker boots these; QEMU via PVH).
    Elf,
    /// x86 bzImage (QEMU boots these).
    BzImage,
}

/// Tells the format from the first bytes. An ELF must look like an x86-64
/// Linux kernel (an executable loaded in the kernel's address range), not
/// any program.
pub fn detect_format(bytes: &[u8]) -> Option<KernelFormat> {
    if bytes.starts_with(b"\x7fELF") {
        is_x86_64_kernel_elf(bytes).then_some(KernelFormat::Elf)
    } else if bytes.len() > 0x206 && &bytes[0x202..0x206] == b"HdrS" {
        Some(KernelFormat::BzImage)
    } else {
        None
    }
}

fn is_x86_64_kernel_elf(b: &[u8]) -> bool {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    };
    const ET_EXEC: u16 = 2;
    const EM_X86_64: u16 = 62;
    const PT_LOAD: u32 = 1;
    const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
    if b.get(4) != Some(&2) || u16_at(16) != Some(ET_EXEC) || u16_at(18) != Some(EM_X86_64) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    (0..phnum as usize).any(|i| {
        let at = phoff as usize + i * phentsize as usize;
        u32_at(at) == Some(PT_LOAD) && u64_at(at + 16).is_some_and(|vaddr| vaddr >= KERNEL_BASE)
    })
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelEntry {
    /// sha256 of the kernel file.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Packaging.
    pub format: KernelFormat,
    /// Built with PVM guest support.
    pub pvm: bool,
    /// Where it came from (`import:PATH` or `pull:URL`).
    pub source: String,
    /// Bytes.
    pub size: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// The kernel file, inside the entry's directory.
    pub path: PathBuf,
    /// An uncompressed ELF of it, when there is one (Firecracker needs it).
    pub vmlinux: Option<PathBuf>,
}

/// The catalog.
pub struct KernelStore {
    root: PathBuf,
}

const ENTRY_FILE: &str = "kernel.json";

impl KernelStore {
    /// A catalog rooted at `root` (`<cache>/kernels`).
    pub fn new(root: impl Into<PathBuf>) -> KernelStore {
        KernelStore { root: root.into() }
    }

    /// Every entry, by name.
    pub fn list(&self) -> Result<Vec<KernelEntry>, KernelError> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for e in dir.flatten() {
            // Dot-directories are imports in progress.
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let file = e.path().join(ENTRY_FILE);
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(entry) = serde_json::from_str::<KernelEntry>(&text)
            {
                out.push(entry);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// An entry by name, id or unique id prefix (8+ hex digits).
    pub fn find(&self, name_or_id: &str) -> Result<Option<KernelEntry>, KernelError> {
        let all = self.list()?;
        if let Some(e) = all.iter().find(|e| e.name == name_or_id) {
            return Ok(Some(e.clone()));
        }
        let matches: Vec<&KernelEntry> = all
            .iter()
            .filter(|e| name_or_id.len() >= 8 && e.id.starts_with(name_or_id))
            .collect();
        Ok((matches.len() == 1).then(|| matches[0].clone()))
    }

    /// Copies a kernel into the catalog.
    pub fn import(
        &self,
        file: &Path,
        name: Option<&str>,
        pvm: bool,
        source: String,
    ) -> Result<KernelEntry, KernelError> {
        let bytes = std::fs::read(file).map_err(io("cannot read", file))?;
        let format =
            detect_format(&bytes).ok_or_else(|| KernelError::Format(file.display().to_string()))?;
        let id = format!("{:x}", sha2::Sha256::digest(&bytes));
        let name = match name {
            Some(n) => n.to_string(),
            None => format!("kernel-{}", &id[..12]),
        };
        crate::spec::validate_name(&name)
            .map_err(|e| KernelError::Name(e.to_string().replacen("vm name", "kernel name", 1)))?;
        if let Some(existing) = self.find(&name)? {
            return Err(KernelError::Name(format!(
                "a kernel named {name:?} already exists ({}); pick another --name",
                &existing.id[..12]
            )));
        }
        let dir = self.root.join(&name);
        let tmp = self.root.join(format!(".import-{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io("cannot create", &tmp))?;
        let result = (|| {
            let file_name = match format {
                KernelFormat::Elf => "vmlinux",
                KernelFormat::BzImage => "bzImage",
            };
            std::fs::write(tmp.join(file_name), &bytes).map_err(io("cannot write", &tmp))?;
            // Firecracker needs an ELF: decode a bzImage's payload when we can
            // (Debian's LZ4 kernels); other compressions stay QEMU-only.
            let vmlinux = match format {
                KernelFormat::Elf => Some(dir.join("vmlinux")),
                KernelFormat::BzImage => match crate::image::extract_vmlinux(&bytes) {
                    Ok(elf) => {
                        std::fs::write(tmp.join("vmlinux"), elf)
                            .map_err(io("cannot write", &tmp))?;
                        Some(dir.join("vmlinux"))
                    }
                    Err(_) => None,
                },
            };
            let entry = KernelEntry {
                id: id.clone(),
                name,
                format,
                pvm,
                source,
                size: bytes.len() as u64,
                created_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                path: dir.join(file_name),
                vmlinux,
            };
            let json = serde_json::to_string_pretty(&entry).unwrap_or_default();
            std::fs::write(tmp.join(ENTRY_FILE), json).map_err(io("cannot write", &tmp))?;
            // rename(2) onto an existing non-empty directory fails, so a
            // racing import of the same name cannot replace this one.
            std::fs::rename(&tmp, &dir).map_err(io("cannot install", &dir))?;
            Ok(entry)
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }

    /// Downloads a kernel, checks it against `sha256`, then imports it.
    pub fn pull(
        &self,
        url: &str,
        sha256: &str,
        name: Option<&str>,
        pvm: bool,
    ) -> Result<KernelEntry, KernelError> {
        let work = tempfile::tempdir().map_err(io(
            "cannot create a temporary directory in",
            &std::env::temp_dir(),
        ))?;
        let file = work.path().join("kernel");
        crate::install::download(url, &file)?;
        let bytes = std::fs::read(&file).map_err(io("cannot read", &file))?;
        let actual = format!("{:x}", sha2::Sha256::digest(&bytes));
        if actual != sha256.to_ascii_lowercase() {
            return Err(KernelError::Checksum {
                url: url.to_string(),
                expected: sha256.to_string(),
                actual,
            });
        }
        self.import(&file, name, pvm, format!("pull:{url}"))
    }

    /// Removes an entry.
    pub fn delete(&self, name_or_id: &str) -> Result<KernelEntry, KernelError> {
        let entry = self.find(name_or_id)?.ok_or_else(|| {
            KernelError::Name(format!(
                "no kernel named {name_or_id:?}; list them with: banger kernel list"
            ))
        })?;
        let dir = self.root.join(&entry.name);
        std::fs::remove_dir_all(&dir).map_err(io("cannot remove", &dir))?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header and one PT_LOAD at the kernel's base, as a
    /// vmlinux has.
    fn fake_elf() -> Vec<u8> {
        let mut v = vec![0u8; 0x40 + 0x38];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2; // 64-bit
        v[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        v[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        v[32..40].copy_from_slice(&0x40u64.to_le_bytes()); // phoff
        v[54..56].copy_from_slice(&0x38u16.to_le_bytes()); // phentsize
        v[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
        v[0x40..0x44].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        v[0x50..0x58].copy_from_slice(&0xffff_ffff_8100_0000u64.to_le_bytes());
        v
    }

    #[test]
    fn formats() {
        assert_eq!(detect_format(&fake_elf()), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz), Some(KernelFormat::BzImage));
        assert_eq!(detect_format(b"#!/bin/sh\n"), None);
        // A program is an ELF too, but not a kernel.
        let program = std::fs::read("/bin/true").unwrap();
        assert_eq!(detect_format(&program), None);
    }

    #[test]
    fn import_list_find_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = KernelStore::new(dir.path().join("kernels"));
        let src = dir.path().join("vmlinux-pvm");
        std::fs::write(&src, fake_elf()).unwrap();
        let e = store
            .import(&src, Some("pvm-6-6"), true, "import:test".into())
            .unwrap();
        assert_eq!(e.format, KernelFormat::Elf);
        assert!(e.pvm);
        assert_eq!(std::fs::read(&e.path).unwrap(), fake_elf());
        assert_eq!(e.vmlinux.as_deref(), Some(e.path.as_path()));
        assert_eq!(store.list().unwrap(), vec![e.clone()]);
        assert_eq!(store.find(&e.id[..10]).unwrap(), Some(e.clone()));
        // The same name twice is refused.
        let err = store
            .import(&src, Some("pvm-6-6"), true, "x".into())
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        // The same kernel under another name is fine.
        let other = store
            .import(&src, Some("other"), false, "x".into())
            .unwrap();
        assert_eq!(other.id, e.id);
        store.delete("other").unwrap();
        // Not a kernel, bad name: refused, nothing added.
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"#!/bin/sh\n").unwrap();
        assert!(matches!(
            store.import(&junk, None, false, "x".into()),
            Err(KernelError::Format(_))
        ));
        assert!(
            store
                .import(&src, Some("Bad Name"), false, "x".into())
                .is_err()
        );
        assert_eq!(store.list().unwrap().len(), 1);
        store.delete("pvm-6-6").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(store.delete("pvm-6-6").is_err());
    }
}
