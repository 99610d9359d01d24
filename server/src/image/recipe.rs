//! What an image build makes: banger's package list and guest files, the
//! options of a build, and the recipe hash that tells an image of this
//! recipe from an older one. `build.rs` carries it out.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::store;
use super::{DEFAULT_IMAGE, ImageError};

/// Packages installed on top of mmdebstrap's `minbase` variant.
pub(super) const INCLUDE: &str = "systemd,systemd-sysv,openssh-server,git,ca-certificates,iproute2,curl,python3,python3-pip,python3-venv,kmod";
/// Bumped when the build changes in a way the hashed inputs below do not
/// show (a new step in the Rust code): images of an older recipe are then
/// out of date and the default one is built again.
const RECIPE_VERSION: u32 = 6;

/// Files installed into the tree by `guest/customize.sh`, by staged name.
pub(super) const GUEST_FILES: &[(&str, &str)] = &[
    ("customize.sh", include_str!("guest/customize.sh")),
    (
        "banger-agent.service",
        include_str!("guest/banger-agent.service"),
    ),
    ("sshd-banger.conf", include_str!("guest/sshd-banger.conf")),
    (
        "ssh-service-banger.conf",
        include_str!("guest/ssh-service-banger.conf"),
    ),
    (
        "journald-banger.conf",
        include_str!("guest/journald-banger.conf"),
    ),
    ("pip-banger.conf", include_str!("guest/pip-banger.conf")),
];

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Image name, e.g. `debian-bookworm`.
    pub name: String,
    /// Debian suite for the root file system, e.g. `bookworm`. The kernel
    /// and busybox come from the host's apt sources, whatever the suite.
    pub suite: String,
    /// Mirrors for mmdebstrap: full apt lines (`deb URL SUITE COMPONENTS`)
    /// or bare URLs. They also end up in the image's apt sources.
    pub mirrors: Vec<String>,
    /// Static guest agent binary, installed as `/usr/sbin/banger-agent`.
    pub agent_binary: PathBuf,
    /// Where downloaded `.deb` files are kept between builds (`<cache>/debs`).
    pub download_cache: PathBuf,
    /// Packages to install beyond banger's own list.
    pub packages: Vec<String>,
}

impl BuildOptions {
    /// The default image: [`DEFAULT_IMAGE`] from Debian bookworm on
    /// `deb.debian.org` (main, updates and security), `.deb` files kept in
    /// `<cache_dir>/debs`.
    pub fn default_for(agent_binary: PathBuf, cache_dir: &Path) -> Self {
        let suite = "bookworm";
        BuildOptions {
            name: DEFAULT_IMAGE.to_owned(),
            suite: suite.to_owned(),
            mirrors: default_mirrors(suite),
            agent_binary,
            download_cache: cache_dir.join("debs"),
            packages: Vec::new(),
        }
    }

    /// Hash of everything this build puts into the root file system except
    /// the agent (which every boot replaces): two builds with the same
    /// recipe make the same image, and an image whose recipe differs from
    /// the current default's is out of date.
    pub fn recipe(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(&RECIPE_VERSION.to_le_bytes());
        field(INCLUDE.as_bytes());
        field(self.suite.as_bytes());
        for m in &self.mirrors {
            field(m.as_bytes());
        }
        field(b"packages");
        for p in &self.packages {
            field(p.as_bytes());
        }
        field(b"files");
        for (name, text) in GUEST_FILES {
            field(name.as_bytes());
            field(text.as_bytes());
        }
        store::hex(&h.finalize())
    }

    pub(super) fn validate(&self) -> Result<(), ImageError> {
        super::validate_name(&self.name)?;
        let suite_ok = !self.suite.is_empty()
            && self
                .suite
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !suite_ok {
            return Err(ImageError::InvalidOptions(format!(
                "suite {:?} is not a Debian suite name; use e.g. bookworm",
                self.suite
            )));
        }
        check_packages(&self.packages).map_err(ImageError::InvalidOptions)?;
        if self
            .mirrors
            .iter()
            .any(|m| m.trim().is_empty() || m.contains('\n'))
        {
            return Err(ImageError::InvalidOptions(
                "a mirror is empty or spans lines; give one apt line or URL per mirror".into(),
            ));
        }
        Ok(())
    }
}

/// The recipe of the default image this build of banger makes.
pub fn default_recipe() -> String {
    BuildOptions::default_for(PathBuf::new(), Path::new("")).recipe()
}

/// Every name in `packages` is a package name ([`valid_package`]); the
/// error names the first that is not.
pub fn check_packages(packages: &[String]) -> Result<(), String> {
    match packages.iter().find(|p| !valid_package(p)) {
        Some(bad) => Err(format!(
            "{bad:?} is not a Debian package name; use names like python3-dev or libssl-dev"
        )),
        None => Ok(()),
    }
}

/// Whether `name` is a Debian package name (policy 5.6.1: lowercase
/// letters, digits, `+`, `-`, `.`; at least two characters, starting with
/// a letter or digit), optionally with `=VERSION` or `/SUITE`: never an
/// option or anything a shell or apt would read otherwise.
pub fn valid_package(spec: &str) -> bool {
    let (name, rest) = match spec.find(['=', '/']) {
        Some(i) => spec.split_at(i),
        None => (spec, ""),
    };
    let name_ok = name.len() >= 2
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let rest_ok = rest.len() <= 128
        && rest
            .bytes()
            .skip(1)
            .all(|b| b.is_ascii_alphanumeric() || b"+-.~:".contains(&b))
        && (rest.is_empty() || rest.len() > 1);
    name_ok && rest_ok
}

/// `deb.debian.org` main, updates and security lines for `suite`.
pub fn default_mirrors(suite: &str) -> Vec<String> {
    vec![
        format!("deb http://deb.debian.org/debian {suite} main"),
        format!("deb http://deb.debian.org/debian {suite}-updates main"),
        format!("deb http://deb.debian.org/debian-security {suite}-security main"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_point_at_the_cache() {
        let opts = BuildOptions::default_for("/x/agent".into(), Path::new("/c"));
        assert_eq!(opts.name, DEFAULT_IMAGE);
        assert_eq!(opts.download_cache, Path::new("/c/debs"));
        assert!(opts.mirrors.iter().any(|m| m.contains("bookworm-security")));
        opts.validate().unwrap();
        let bad = BuildOptions {
            name: "../x".into(),
            ..opts.clone()
        };
        assert!(bad.validate().is_err());
        let bad = BuildOptions {
            suite: "Bookworm; rm".into(),
            ..opts
        };
        assert!(bad.validate().is_err());
    }

    /// The recipe follows what goes into the image, and only that.
    #[test]
    fn the_recipe_changes_with_packages_suite_and_mirrors_not_paths() {
        let opts = BuildOptions::default_for("/x/agent".into(), Path::new("/c"));
        let other_paths = BuildOptions::default_for("/y/agent".into(), Path::new("/d"));
        assert_eq!(opts.recipe(), other_paths.recipe());
        assert_eq!(opts.recipe(), default_recipe());
        let with = |f: &dyn Fn(&mut BuildOptions)| {
            let mut o = opts.clone();
            f(&mut o);
            o.recipe()
        };
        assert_ne!(opts.recipe(), with(&|o| o.packages = vec!["hello".into()]));
        assert_ne!(opts.recipe(), with(&|o| o.suite = "trixie".into()));
        assert_ne!(
            opts.recipe(),
            with(&|o| o.mirrors.pop().map(drop).unwrap_or(()))
        );
    }

    #[test]
    fn package_names_follow_debian_policy() {
        for ok in [
            "hello",
            "python3-dev",
            "libstdc++6",
            "g++",
            "hello=2.10-3",
            "hello/bookworm-backports",
            "x11-apps",
        ] {
            assert!(valid_package(ok), "{ok}");
        }
        for bad in [
            "",
            "h",
            "-o",
            "Hello",
            "a b",
            "hello;rm",
            "hello=",
            "$(x)",
            "hello=1 2",
            "../x",
        ] {
            assert!(!valid_package(bad), "{bad}");
        }
    }
}
