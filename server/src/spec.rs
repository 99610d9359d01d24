//! VM names and specs: parsed and validated before anything is created.

use serde::{Deserialize, Serialize};

/// Smallest memory a Debian guest boots with.
pub const MIN_MEMORY_MIB: u64 = 256;
/// Largest memory accepted (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Most vCPUs accepted.
pub const MAX_VCPU: u32 = 64;
/// Smallest work disk (it holds /root).
pub const MIN_DISK_BYTES: u64 = 64 << 20;
/// Largest work disk (16 TiB, sparse).
pub const MAX_DISK_BYTES: u64 = 16 << 40;

/// Defaults for a new VM.
pub const DEFAULT_VCPU: u32 = 2;
/// Default memory.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
/// Default work disk size.
pub const DEFAULT_DISK_BYTES: u64 = 8 << 30;
/// Smallest root overlay upper disk (system writes outside /root).
pub const MIN_OVERLAY_BYTES: u64 = 256 << 20;
/// Largest root overlay upper disk (16 TiB, sparse).
pub const MAX_OVERLAY_BYTES: u64 = 16 << 40;
/// Default root overlay upper disk (sparse: only what the guest writes
/// uses host space).
pub const DEFAULT_OVERLAY_BYTES: u64 = 16 << 30;

/// A spec was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// The VM name breaks the naming rules.
    #[error(
        "invalid vm name {0:?}: use 1 to 63 lowercase letters, digits and '-', starting with a letter or digit"
    )]
    Name(String),
    /// vCPU count out of range.
    #[error("invalid --vcpu {0}: use a number from 1 to {MAX_VCPU}")]
    Vcpu(u32),
    /// Memory out of range.
    #[error("invalid --memory {0} MiB: use {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB")]
    Memory(u64),
    /// Disk size out of range.
    #[error("invalid --disk-size {0}: use 64M to 16T")]
    DiskSize(String),
    /// Overlay size out of range.
    #[error("invalid --system-overlay-size {0}: use 256M to 16T")]
    OverlaySize(String),
    /// Memory that is not a whole number of MiB.
    #[error("invalid --memory {0:?}: use whole MiB, like 2048, 2048M or 2G")]
    MemorySyntax(String),
    /// A size string did not parse.
    #[error("invalid size {0:?}: use a number with an optional K, M, G or T suffix, like 8G")]
    SizeSyntax(String),
}

/// Checks a VM name: lowercase letters, digits and '-', 1 to 63
/// characters, not starting or ending with '-' (so it is a DNS label).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Name(name.to_string()))
    }
}

/// Parses `512M`, `8G`, `1T`, `1048576` (bytes) into bytes. Suffixes are
/// binary (K = 1024).
pub fn parse_size(s: &str) -> Result<u64, SpecError> {
    let err = || SpecError::SizeSyntax(s.to_string());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(err()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

/// Parses `--memory`: a bare number is MiB (`2048`), a suffix gives a
/// size (`2G`, `512M`); the result is MiB.
pub fn parse_memory_mib(s: &str) -> Result<u64, SpecError> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map_err(|_| SpecError::MemorySyntax(s.to_string()));
    }
    let bytes = parse_size(t).map_err(|_| SpecError::MemorySyntax(s.to_string()))?;
    if !bytes.is_multiple_of(1 << 20) {
        return Err(SpecError::MemorySyntax(s.to_string()));
    }
    Ok(bytes >> 20)
}

/// Formats bytes the way `parse_size` reads them, for messages.
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// The resources of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Work disk size in bytes.
    pub disk_bytes: u64,
    /// Root overlay upper disk size in bytes.
    pub overlay_bytes: u64,
}

impl Default for VmSpec {
    fn default() -> VmSpec {
        VmSpec {
            vcpu: DEFAULT_VCPU,
            memory_mib: DEFAULT_MEMORY_MIB,
            disk_bytes: DEFAULT_DISK_BYTES,
            overlay_bytes: DEFAULT_OVERLAY_BYTES,
        }
    }
}

impl VmSpec {
    /// Checks every bound; called before anything is created.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(1..=MAX_VCPU).contains(&self.vcpu) {
            return Err(SpecError::Vcpu(self.vcpu));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(SpecError::Memory(self.memory_mib));
        }
        if !(MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&self.disk_bytes) {
            return Err(SpecError::DiskSize(format_size(self.disk_bytes)));
        }
        if !(MIN_OVERLAY_BYTES..=MAX_OVERLAY_BYTES).contains(&self.overlay_bytes) {
            return Err(SpecError::OverlaySize(format_size(self.overlay_bytes)));
        }
        Ok(())
    }
}

/// `bytes` random bytes from the kernel, as hex. Fails rather than
/// returning anything predictable.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    random_hex_from(std::path::Path::new("/dev/urandom"), bytes)
}

fn random_hex_from(source: &std::path::Path, bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open(source)?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    /// A random source that fails (missing, or short) is an error, never
    /// zeros that would make every id and name the same.
    #[test]
    fn a_failing_random_source_is_an_error() {
        use std::path::Path;
        assert!(super::random_hex_from(Path::new("/nonexistent/urandom"), 4).is_err());
        assert!(super::random_hex_from(Path::new("/dev/null"), 4).is_err());
        let a = super::random_hex(8).unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, super::random_hex(8).unwrap());
    }

    use super::*;

    #[test]
    fn names() {
        for good in ["a", "dev", "my-vm-2", "0abc", &"a".repeat(63)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Dev",
            "my_vm",
            "-a",
            "a-",
            "a.b",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2KB"), Ok(2048));
        for bad in ["", "G", "8X", "-1G", "1.5G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(format_size(8 << 30), "8G");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn spec_bounds() {
        assert_eq!(VmSpec::default().validate(), Ok(()));
        let spec = |vcpu, memory_mib, disk_bytes| VmSpec {
            vcpu,
            memory_mib,
            disk_bytes,
            ..VmSpec::default()
        };
        assert_eq!(spec(0, 1024, 8 << 30).validate(), Err(SpecError::Vcpu(0)));
        assert_eq!(spec(65, 1024, 8 << 30).validate(), Err(SpecError::Vcpu(65)));
        assert_eq!(
            spec(1, 100, 8 << 30).validate(),
            Err(SpecError::Memory(100))
        );
        assert!(spec(1, 1024, 1 << 20).validate().is_err());
        assert!(spec(1, 1024, 17 << 40).validate().is_err());
        let overlay = |overlay_bytes| VmSpec {
            overlay_bytes,
            ..VmSpec::default()
        };
        assert_eq!(overlay(1 << 30).validate(), Ok(()));
        assert_eq!(
            overlay(1 << 20).validate(),
            Err(SpecError::OverlaySize("1M".into()))
        );
    }

    #[test]
    fn memory_is_mib_or_a_size() {
        assert_eq!(parse_memory_mib("2048"), Ok(2048));
        assert_eq!(parse_memory_mib("2G"), Ok(2048));
        assert_eq!(parse_memory_mib("512M"), Ok(512));
        for bad in ["", "2.5G", "1K", "lots", "-1"] {
            assert!(parse_memory_mib(bad).is_err(), "{bad:?} accepted");
        }
    }
}
