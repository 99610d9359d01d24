//! Installing Firecracker for the user: the official release archive for
//! this architecture, checked against its published SHA-256 before anything
//! is unpacked, then `firecracker` and `jailer` copied into banger's own
//! `bin` directory (where the driver looks). A failed check installs
//! nothing.
//!
//! This module is the one place banger downloads (with `curl`) and unpacks
//! (with `tar`).

use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::tool::{self, Tool};

/// The Firecracker version banger's driver is checked against.
pub const DEFAULT_FIRECRACKER_VERSION: &str = "1.16.1";

/// Official release downloads; `$BANGER_FIRECRACKER_RELEASES` overrides it
/// (a mirror, or a local server in tests).
pub const RELEASES_URL: &str =
    "https://github.com/firecracker-microvm/firecracker/releases/download";

/// Installing failed; nothing was installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A version string that is not `X.Y.Z`.
    #[error("invalid version {0:?}: use a release number like {DEFAULT_FIRECRACKER_VERSION}")]
    Version(String),
    /// The download failed.
    #[error("cannot download {url}: {detail}")]
    Download {
        /// What was fetched.
        url: String,
        /// curl's words.
        detail: String,
    },
    /// The archive is not the one the release published.
    #[error(
        "checksum mismatch for {file}: published {published}, downloaded {actual}; nothing was installed"
    )]
    Checksum {
        /// Archive name.
        file: String,
        /// From the .sha256.txt file.
        published: String,
        /// Of the bytes we got.
        actual: String,
    },
    /// The archive does not hold what a release holds.
    #[error("{0}; nothing was installed")]
    Archive(String),
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
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.display().to_string();
    move |source| InstallError::Io { what, path, source }
}

/// What was installed.
#[derive(Debug)]
pub struct Installed {
    /// Installed programs.
    pub files: Vec<PathBuf>,
    /// The archive's checksum, as verified.
    pub sha256: String,
}

/// The archive name of a release for an architecture.
pub fn archive_name(version: &str, arch: &str) -> String {
    format!("firecracker-v{version}-{arch}.tgz")
}

/// Parses the published checksum file (`<hex>  <name>`).
pub fn parse_checksum(text: &str) -> Option<String> {
    let hex = text.split_whitespace().next()?.to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Downloads, verifies and installs Firecracker `version` into `bin_dir`.
pub fn install_firecracker(
    version: &str,
    bin_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Installed, InstallError> {
    let valid = version.split('.').count() == 3
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !valid {
        return Err(InstallError::Version(version.to_string()));
    }
    let arch = std::env::consts::ARCH;
    let base = std::env::var("BANGER_FIRECRACKER_RELEASES").unwrap_or_else(|_| RELEASES_URL.into());
    let name = archive_name(version, arch);
    let url = format!("{}/v{version}/{name}", base.trim_end_matches('/'));
    let work = tempfile::tempdir().map_err(io(
        "cannot create a temporary directory in",
        &std::env::temp_dir(),
    ))?;
    let archive = work.path().join(&name);
    let sums = work.path().join(format!("{name}.sha256.txt"));

    progress(&format!("downloading {url}"));
    download(&format!("{url}.sha256.txt"), &sums)?;
    download(&url, &archive)?;

    progress("verifying checksum");
    let published =
        parse_checksum(&std::fs::read_to_string(&sums).map_err(io("cannot read", &sums))?)
            .ok_or_else(|| InstallError::Archive(format!("{name}.sha256.txt holds no sha256")))?;
    let bytes = std::fs::read(&archive).map_err(io("cannot read", &archive))?;
    let actual = format!("{:x}", sha2::Sha256::digest(&bytes));
    if actual != published {
        return Err(InstallError::Checksum {
            file: name,
            published,
            actual,
        });
    }

    progress("unpacking");
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).map_err(io("cannot create", &unpacked))?;
    tool::run(
        tool::command(Tool::Tar)
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&unpacked),
    )
    .map_err(|e| InstallError::Archive(e.to_string()))?;
    let release_dir = unpacked.join(format!("release-v{version}-{arch}"));
    let mut files = Vec::new();
    std::fs::create_dir_all(bin_dir).map_err(io("cannot create", bin_dir))?;
    // Stage both programs first, then rename into place, so a bad archive
    // leaves the previous install untouched.
    let mut staged = Vec::new();
    for program in ["firecracker", "jailer"] {
        let src = release_dir.join(format!("{program}-v{version}-{arch}"));
        if !src.is_file() {
            if program == "jailer" {
                continue;
            }
            return Err(InstallError::Archive(format!(
                "the archive has no {}",
                src.strip_prefix(&unpacked).unwrap_or(&src).display()
            )));
        }
        let tmp = bin_dir.join(format!(".{program}.installing"));
        std::fs::copy(&src, &tmp).map_err(io("cannot write", &tmp))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(io("cannot make executable", &tmp))?;
        staged.push((tmp, bin_dir.join(program)));
    }
    for (tmp, dest) in staged {
        std::fs::rename(&tmp, &dest).map_err(io("cannot install", &dest))?;
        files.push(dest);
    }
    Ok(Installed {
        files,
        sha256: actual,
    })
}

/// Downloads `url` to `dest` with curl (http and https only).
pub(crate) fn download(url: &str, dest: &Path) -> Result<(), InstallError> {
    tool::run(
        tool::command(Tool::Curl)
            .args(["-fsSL", "--proto", "=https,http", "--retry", "2", "-o"])
            .arg(dest)
            .arg(url),
    )
    .map(drop)
    .map_err(|e| InstallError::Download {
        url: url.to_string(),
        detail: match e.stderr() {
            Some(stderr) => stderr.to_string(),
            None => e.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_checksums() {
        assert_eq!(
            archive_name("1.16.1", "x86_64"),
            "firecracker-v1.16.1-x86_64.tgz"
        );
        let hex = "a".repeat(64);
        assert_eq!(
            parse_checksum(&format!("{hex}  firecracker-v1.16.1-x86_64.tgz\n")),
            Some(hex)
        );
        assert_eq!(parse_checksum("nope  file"), None);
        assert_eq!(parse_checksum(""), None);
    }

    #[test]
    fn bad_versions_are_refused_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["", "1.16", "v1.16.1", "1.16.x", "1..1"] {
            let err = install_firecracker(v, dir.path(), &mut |_| {}).unwrap_err();
            assert!(matches!(err, InstallError::Version(_)), "{v}: {err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
