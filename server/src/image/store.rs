//! The on-disk image store: `<cache>/images/<id>/` directories, each with a
//! `manifest.json`, and the lookups the daemon does on them.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ImageError;
use super::oci::RunConfig;

/// File name of the manifest inside an image directory.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
/// Role and file name of the read-only base disk.
pub(crate) const ROOTFS: (&str, &str) = ("rootfs", "rootfs.ext4");
/// Role and file name of the bzImage.
pub(crate) const KERNEL: (&str, &str) = ("kernel", "vmlinuz");
/// Role and file name of the uncompressed ELF kernel.
pub(crate) const VMLINUX: (&str, &str) = ("vmlinux", "vmlinux");
/// Role and file name of the initramfs.
pub(crate) const INITRD: (&str, &str) = ("initrd", "initrd.img");
/// Current manifest format.
pub(crate) const MANIFEST_FORMAT: u32 = 1;
/// Shortest id prefix `find` accepts.
const MIN_ID_PREFIX: usize = 8;
/// Prefix of in-progress build directories in the store root.
pub(crate) const BUILD_DIR_PREFIX: &str = ".build-";
const DELETE_DIR_PREFIX: &str = ".delete-";

/// A directory of images: `<root>/<id>/`, each immutable (files 0444) with a
/// `manifest.json`. Directories whose name starts with `.` are builds or
/// deletes in progress and are never listed.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// One complete image in a store.
#[derive(Debug, Clone, Serialize)]
pub struct Image {
    /// Content id: 64 hex characters, also the directory name.
    pub id: String,
    /// Human name, e.g. `debian-bookworm`; several images may share it.
    pub name: String,
    /// The image directory.
    pub dir: PathBuf,
    /// What `manifest.json` says.
    pub manifest: Manifest,
}

/// The contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version (1).
    pub format: u32,
    /// Human name of the image.
    pub name: String,
    /// sha256 (hex) of this manifest serialized without the `id` field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Build time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Debian suite of the root file system, e.g. `bookworm`.
    pub suite: String,
    /// Kernel release, the `/lib/modules/<version>` name, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_version: String,
    /// The Debian package the kernel came from.
    pub kernel_package: PackageRef,
    /// The Debian package busybox (in the initramfs) came from.
    pub busybox_package: PackageRef,
    /// sha256 (hex) of the `/usr/sbin/banger-agent` baked into the image.
    pub agent_sha256: String,
    /// Values of `banger.root=` the image's `/init` understands.
    pub root_modes: Vec<String>,
    /// Files of the image by role (`rootfs`, `kernel`, `vmlinux`, `initrd`,
    /// and `layer1`, `layer2`, ... for a derived image, bottom first).
    pub files: BTreeMap<String, FileEntry>,
    /// What made the image (absent in images built before banger recorded
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// What commands in it take from it (an OCI image's Env, WorkingDir
    /// and User; a derived image keeps its parent's, plus its own Env).
    #[serde(default, skip_serializing_if = "RunConfig::is_empty")]
    pub run: RunConfig,
    /// It has no init that starts the agent (an OCI image, and every image
    /// derived from one): it boots with `banger.init=agent`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_init: bool,
    /// The kernel's tick rate (`CONFIG_HZ` of its package's config), which
    /// an emulated boot needs to hand the kernel its delay-loop constant
    /// (absent in images built before banger recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_hz: Option<u32>,
}

/// What an image was made from: enough to make it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Built from Debian packages with mmdebstrap.
    Debian {
        /// Hash of everything the build put in (suite, mirrors, package
        /// list, the files and scripts it installs): an image whose recipe
        /// differs from this build's is out of date.
        recipe: String,
        /// Packages asked for beyond banger's own list.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        packages: Vec<String>,
    },
    /// Another image plus one layer made by running a step in a guest
    /// booted from it.
    Derived {
        /// The image it was made from (id).
        parent: String,
        /// That image's name at the time.
        parent_name: String,
        /// The step that made the layer.
        step: Step,
        /// Hash of the parent id and the step (with its inputs' contents):
        /// the same key means the same image, so it is made once.
        key: String,
    },
    /// An OCI image from a registry, its layers applied to one tree.
    Oci {
        /// The reference pulled, whole (`registry/repository:tag`).
        reference: String,
        /// Digest of its manifest (linux/amd64's, for an index).
        digest: String,
        /// Its layers' digests, lowest first.
        layers: Vec<String>,
    },
}

/// The step a derived image's layer comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// `apt-get install` of these packages.
    Packages {
        /// The packages, as given.
        packages: Vec<String>,
        /// What was installed for them (`name=version`), recorded after
        /// the step; not part of the key.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        resolved: Vec<String>,
    },
    /// A project's setup command, run in its workspace.
    Setup {
        /// The shell command.
        command: String,
        /// The files it depends on (path in the repository -> sha256).
        inputs: BTreeMap<String, String>,
        /// Variables (`KEY=VALUE`) every command in the image gets (a Dev
        /// Container's containerEnv/remoteEnv).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        env: Vec<String>,
    },
}

/// Role of a derived image's `n`th layer (1 = the lowest).
pub(crate) fn layer_role(n: usize) -> String {
    format!("layer{n}")
}

/// A Debian package name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    /// Package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub name: String,
    /// Package version, e.g. `6.1.192-2`.
    pub version: String,
}

/// One file of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the image directory.
    pub path: PathBuf,
    /// sha256 of the contents, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl Manifest {
    /// The id this manifest should have: sha256 (hex) of its JSON without
    /// the `id` field.
    pub fn compute_id(&self) -> String {
        let mut unnamed = self.clone();
        unnamed.id.clear();
        // Serializing plain strings, numbers and BTreeMaps cannot fail.
        let bytes = serde_json::to_vec(&unnamed).expect("manifest serializes");
        hex(&Sha256::digest(&bytes))
    }

    fn read(path: &Path) -> Result<Manifest, ImageError> {
        let text = fs::read(path)
            .map_err(|e| ImageError::io(format!("cannot read {}", path.display()), e))?;
        serde_json::from_slice(&text).map_err(|source| ImageError::Manifest {
            path: path.to_owned(),
            source,
        })
    }
}

impl Image {
    /// The read-only base disk (ext4), the overlay's lower layer.
    pub fn rootfs(&self) -> PathBuf {
        self.file(ROOTFS)
    }

    /// The compressed kernel (bzImage), for QEMU's `-kernel`.
    pub fn kernel(&self) -> PathBuf {
        self.file(KERNEL)
    }

    /// The uncompressed ELF kernel, for Firecracker.
    pub fn vmlinux(&self) -> PathBuf {
        self.file(VMLINUX)
    }

    /// The initramfs (uncompressed newc), for every VMM.
    pub fn initrd(&self) -> PathBuf {
        self.file(INITRD)
    }

    /// The layers over the base disk, lowest first (none for an image built
    /// from packages).
    pub fn layers(&self) -> Vec<PathBuf> {
        (1..)
            .map_while(|n| self.manifest.files.get(&layer_role(n)))
            .map(|entry| self.dir.join(&entry.path))
            .collect()
    }

    /// The cache key of a derived image.
    pub fn key(&self) -> Option<&str> {
        match &self.manifest.source {
            Some(Source::Derived { key, .. }) => Some(key),
            _ => None,
        }
    }

    fn file(&self, (role, default): (&str, &str)) -> PathBuf {
        let relative = self
            .manifest
            .files
            .get(role)
            .map_or(Path::new(default), |entry| entry.path.as_path());
        self.dir.join(relative)
    }

    /// Re-hashes every file and compares it with the manifest. Slow (reads
    /// the whole root file system); meant for `image verify`-style checks.
    pub fn verify(&self) -> Result<(), ImageError> {
        for (role, entry) in &self.manifest.files {
            let path = self.dir.join(&entry.path);
            let (sha256, size) = hash_file(&path)?;
            if sha256 != entry.sha256 || size != entry.size {
                return Err(ImageError::Corrupt(format!(
                    "image {} file {} ({role}) does not match its manifest; delete the image and build it again",
                    self.name,
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

impl ImageStore {
    /// A store rooted at `root` (normally `<cache>/images`). Nothing is
    /// created until a build needs it.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ImageStore { root: root.into() }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// All complete images, newest first. A missing store is empty; an
    /// image directory with an unreadable manifest is skipped with a warning.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ImageError::io(
                    format!("cannot list the image store {}", self.root.display()),
                    e,
                ));
            }
        };
        let mut images = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                ImageError::io(
                    format!("cannot list the image store {}", self.root.display()),
                    e,
                )
            })?;
            let file_name = entry.file_name();
            let Some(dir_name) = file_name.to_str() else {
                continue;
            };
            if dir_name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            match self.load(dir_name) {
                Ok(image) => images.push(image),
                Err(err) => {
                    tracing::warn!(dir = %entry.path().display(), error = %err, "skipping image directory");
                }
            }
        }
        sort_newest_first(&mut images);
        Ok(images)
    }

    /// Finds an image by name (the newest with that name), by full id, or by
    /// a unique id prefix of at least 8 hex characters. `Ok(None)` when
    /// nothing matches; an error when a prefix matches several images.
    pub fn find(&self, name_or_id: &str) -> Result<Option<Image>, ImageError> {
        let images = self.list()?;
        pick(images, name_or_id)
    }

    /// The newest derived image made with this key.
    pub fn find_key(&self, key: &str) -> Result<Option<Image>, ImageError> {
        Ok(self.list()?.into_iter().find(|i| i.key() == Some(key)))
    }

    /// Deletes an image found as by [`ImageStore::find`] and returns what it
    /// was. The directory is first renamed away, so a failed delete never
    /// leaves a half image that `list` would show.
    pub fn delete(&self, name_or_id: &str) -> Result<Image, ImageError> {
        let image = self
            .find(name_or_id)?
            .ok_or_else(|| ImageError::NotFound(name_or_id.to_owned()))?;
        let doomed = self.root.join(format!("{DELETE_DIR_PREFIX}{}", image.id));
        make_writable(&image.dir)?;
        fs::rename(&image.dir, &doomed).map_err(|e| {
            ImageError::io(
                format!("cannot move {} out of the store", image.dir.display()),
                e,
            )
        })?;
        remove_tree(&doomed)?;
        Ok(image)
    }

    fn load(&self, dir_name: &str) -> Result<Image, ImageError> {
        let dir = self.root.join(dir_name);
        let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
        if manifest.id != dir_name {
            return Err(ImageError::Corrupt(format!(
                "manifest id {} does not match its directory {}; delete the directory",
                manifest.id,
                dir.display()
            )));
        }
        Ok(Image {
            id: manifest.id.clone(),
            name: manifest.name.clone(),
            dir,
            manifest,
        })
    }
}

fn sort_newest_first(images: &mut [Image]) {
    images.sort_by(|a, b| {
        b.manifest
            .created_at
            .cmp(&a.manifest.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// The lookup rule of [`ImageStore::find`] over a newest-first list.
fn pick(images: Vec<Image>, name_or_id: &str) -> Result<Option<Image>, ImageError> {
    if name_or_id.is_empty() {
        return Ok(None);
    }
    if let Some(image) = images.iter().find(|i| i.name == name_or_id) {
        return Ok(Some(image.clone()));
    }
    let wanted = name_or_id.to_ascii_lowercase();
    if let Some(image) = images.iter().find(|i| i.id == wanted) {
        return Ok(Some(image.clone()));
    }
    if wanted.len() < MIN_ID_PREFIX || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut matches: Vec<Image> = images
        .into_iter()
        .filter(|i| i.id.starts_with(&wanted))
        .collect();
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.pop()),
        count => Err(ImageError::AmbiguousId {
            prefix: name_or_id.to_owned(),
            count,
        }),
    }
}

/// sha256 (hex) and size of a file, read in chunks.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64), ImageError> {
    let what = || format!("cannot read {}", path.display());
    let mut file = fs::File::open(path).map_err(|e| ImageError::io(what(), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| ImageError::io(what(), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Lowercase hex of some bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Sets `mode` on `path` (no symlink following needed: images hold none).
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| ImageError::io(format!("cannot chmod {}", path.display()), e))
}

/// Makes an image directory (and any below it) writable again so it can be
/// renamed and its files removed by a non-root owner. Files keep their
/// mode: removing one needs only its directory writable, and a file may be
/// a hard link shared with another image that must stay read-only.
fn make_writable(dir: &Path) -> Result<(), ImageError> {
    set_mode(dir, 0o755)?;
    let entries = fs::read_dir(dir)
        .map_err(|e| ImageError::io(format!("cannot list {}", dir.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| ImageError::io(format!("cannot list {}", dir.display()), e))?;
        let file_type = entry
            .file_type()
            .map_err(|e| ImageError::io(format!("cannot stat {}", entry.path().display()), e))?;
        if file_type.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<(), ImageError> {
    fs::remove_dir_all(dir)
        .map_err(|e| ImageError::io(format!("cannot remove {}", dir.display()), e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn manifest(name: &str, created_at: u64) -> Manifest {
        let mut files = BTreeMap::new();
        for (role, file) in [ROOTFS, KERNEL, VMLINUX, INITRD] {
            files.insert(
                role.to_owned(),
                FileEntry {
                    path: PathBuf::from(file),
                    sha256: hex(&Sha256::digest(file.as_bytes())),
                    size: file.len() as u64,
                },
            );
        }
        let mut manifest = Manifest {
            format: MANIFEST_FORMAT,
            name: name.to_owned(),
            id: String::new(),
            created_at,
            suite: "bookworm".into(),
            kernel_version: "6.1.0-56-cloud-amd64".into(),
            kernel_package: PackageRef {
                name: "linux-image-6.1.0-56-cloud-amd64".into(),
                version: "6.1.192-2".into(),
            },
            busybox_package: PackageRef {
                name: "busybox-static".into(),
                version: "1:1.35.0-4+deb12u1+b1".into(),
            },
            agent_sha256: "00".repeat(32),
            root_modes: vec!["overlay".into()],
            files,
            source: None,
            run: RunConfig::default(),
            agent_init: false,
            kernel_hz: Some(250),
        };
        manifest.id = manifest.compute_id();
        manifest
    }

    /// Writes a fake image the way a build leaves it: files named in the
    /// manifest, everything read-only.
    pub(crate) fn fake_image(store: &ImageStore, name: &str, created_at: u64) -> String {
        let manifest = manifest(name, created_at);
        let dir = store.root().join(&manifest.id);
        fs::create_dir_all(&dir).unwrap();
        for entry in manifest.files.values() {
            let path = dir.join(&entry.path);
            fs::write(&path, entry.path.to_str().unwrap()).unwrap();
            set_mode(&path, 0o444).unwrap();
        }
        let json = serde_json::to_vec_pretty(&manifest).unwrap();
        fs::write(dir.join(MANIFEST_FILE), json).unwrap();
        set_mode(&dir.join(MANIFEST_FILE), 0o444).unwrap();
        set_mode(&dir, 0o555).unwrap();
        manifest.id
    }

    #[test]
    fn manifest_round_trips_and_id_ignores_the_id_field() {
        let m = manifest("debian-bookworm", 1_700_000_000);
        let json = serde_json::to_string_pretty(&m).unwrap();
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.compute_id(), m.id);
        assert_eq!(m.id.len(), 64);
        let mut other = m.clone();
        other.created_at += 1;
        assert_ne!(other.compute_id(), m.id);
        assert!(json.contains("\"kernel_package\""));
        assert!(json.contains("\"rootfs\""));
    }

    #[test]
    fn list_find_and_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::new(tmp.path().join("images"));
        assert!(store.list().unwrap().is_empty(), "a missing store is empty");

        let old = fake_image(&store, "debian-bookworm", 100);
        let new = fake_image(&store, "debian-bookworm", 200);
        let other = fake_image(&store, "custom", 150);
        // Things list must ignore: a build in progress and a broken dir.
        fs::create_dir_all(store.root().join(".build-xyz")).unwrap();
        fs::create_dir_all(store.root().join("not-an-image")).unwrap();
        fs::write(store.root().join("stray-file"), "x").unwrap();

        let listed: Vec<String> = store.list().unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(listed, [new.clone(), other.clone(), old.clone()]);

        let by_name = store.find("debian-bookworm").unwrap().unwrap();
        assert_eq!(by_name.id, new, "newest with that name");
        assert_eq!(
            by_name.rootfs(),
            store.root().join(&new).join("rootfs.ext4")
        );
        assert_eq!(by_name.kernel(), store.root().join(&new).join("vmlinuz"));
        assert_eq!(by_name.vmlinux(), store.root().join(&new).join("vmlinux"));
        assert_eq!(by_name.initrd(), store.root().join(&new).join("initrd.img"));
        by_name.verify().unwrap();

        assert_eq!(store.find(&old).unwrap().unwrap().id, old, "full id");
        assert_eq!(store.find(&old[..12]).unwrap().unwrap().id, old, "prefix");
        assert_eq!(
            store.find(&old[..12].to_uppercase()).unwrap().unwrap().id,
            old,
            "prefix, any case"
        );
        assert!(store.find(&old[..7]).unwrap().is_none(), "prefix too short");
        assert!(store.find("no-such-image").unwrap().is_none());
        assert!(store.find("").unwrap().is_none());

        let deleted = store.delete("custom").unwrap();
        assert_eq!(deleted.id, other);
        assert!(!store.root().join(&other).exists());
        assert!(store.find("custom").unwrap().is_none());

        let err = store.delete("custom").unwrap_err();
        assert!(matches!(err, ImageError::NotFound(_)), "{err}");
        assert!(err.to_string().contains("\"custom\""));

        store.delete(&old[..10]).unwrap();
        let left: Vec<String> = store.list().unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(left, [new]);
        // Nothing half-deleted is left behind.
        let names: Vec<String> = fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(DELETE_DIR_PREFIX))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn an_ambiguous_prefix_is_an_error() {
        let mut a = manifest("a", 1);
        let mut b = manifest("b", 2);
        a.id = format!("abcdef01{}", "0".repeat(56));
        b.id = format!("abcdef01{}", "1".repeat(56));
        let image = |m: Manifest| Image {
            id: m.id.clone(),
            name: m.name.clone(),
            dir: PathBuf::from("/nowhere"),
            manifest: m,
        };
        let images = vec![image(a), image(b)];
        let err = pick(images.clone(), "abcdef01").unwrap_err();
        assert!(
            matches!(err, ImageError::AmbiguousId { count: 2, .. }),
            "{err}"
        );
        assert_eq!(pick(images, "abcdef010").unwrap().unwrap().name, "a");
    }

    #[test]
    fn a_manifest_whose_id_does_not_match_its_directory_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::new(tmp.path());
        let id = fake_image(&store, "x", 1);
        let wrong = tmp.path().join("0".repeat(64));
        fs::rename(tmp.path().join(&id), &wrong).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
