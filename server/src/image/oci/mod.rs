//! OCI images: pulled from a registry (distribution API v2 through
//! `oci-client`: anonymous token auth, credentials from the user's
//! `~/.docker/config.json`, the linux/amd64 entry of an index, every blob
//! checked against its digest) and turned into banger images: the layers
//! applied in order (`unpack.rs`) to one tree, written as the base disk,
//! with banger's own kernel, initramfs and agent (hard-linked from the
//! default image). The image boots with banger's init (`banger.init=agent`:
//! busybox init running the agent), since a container image has no init
//! of its own that would start it.
//!
//! Layers are kept by digest in `<cache>/oci/blobs/sha256/` and shared
//! between images; a blob is stored only once its digest matched.

pub mod import;
pub mod unpack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};

use super::store::{self, BUILD_DIR_PREFIX, FileEntry, MANIFEST_FILE, ROOTFS};
use super::{Image, ImageError, ImageStore, Source};
use unpack::Compression;

/// What `vm run`/`exec` take from an OCI image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `NAME=value` variables for every command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Where commands run when no workspace or directory says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The image's user (recorded; commands run as root for now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl RunConfig {
    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.working_dir.is_none() && self.user.is_none()
    }
}

/// A pulled image's manifest, config and layers (in the blob cache).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The reference, whole (`127.0.0.1:5000/test/bb:1`).
    pub reference: String,
    /// Digest of the image manifest (the platform's, for an index).
    pub digest: String,
    /// What run/exec honour.
    pub config: RunConfig,
    /// Layer blobs, lowest first, with their compression and digest.
    pub layers: Vec<(PathBuf, Compression, String)>,
    /// The tag an archive names its image by (`repo:tag`), if any.
    pub tag: Option<String>,
}

fn err(what: impl Into<String>) -> ImageError {
    ImageError::InvalidOptions(what.into())
}

/// Whether a registry is on this machine (plain HTTP, as Docker does for
/// `localhost`).
fn is_local(registry: &str) -> bool {
    let host = registry
        .strip_prefix('[')
        .and_then(|r| r.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| registry.rsplit_once(':').map_or(registry, |(h, _)| h));
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Credentials for `registry` from a Docker `config.json` text (`auths`
/// entries with `auth` = base64 `user:password`).
pub fn docker_auth(config_json: &str, registry: &str) -> Option<RegistryAuth> {
    use base64::Engine as _;
    let config: serde_json::Value = serde_json::from_str(config_json).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let wanted = [
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        if registry == "docker.io" {
            "https://index.docker.io/v1/".to_string()
        } else {
            String::new()
        },
    ];
    let entry = wanted.iter().filter(|w| !w.is_empty()).find_map(|w| {
        auths
            .get(w.as_str())
            .or_else(|| auths.get(&format!("{w}/")))
    })?;
    let auth = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(RegistryAuth::Basic(user.to_string(), password.to_string()))
}

/// Where a blob of `digest` (`sha256:HEX`) is kept.
pub fn blob_path(blobs: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .ok_or_else(|| {
            err(format!(
                "unsupported or malformed digest {digest:?} (banger reads sha256 digests)"
            ))
        })?;
    Ok(blobs.join("sha256").join(hex))
}

/// Pulls `reference`'s manifest, config and layers (layers already in
/// `blobs` are not fetched again).
pub async fn fetch(
    reference: &str,
    blobs: &Path,
    home: Option<&Path>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Fetched, ImageError> {
    let parsed: Reference = reference
        .parse()
        .map_err(|e| err(format!("{reference:?} is not an image reference: {e}")))?;
    // reqwest's rustls needs a process-wide crypto provider; a second
    // install is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = parsed.resolve_registry().to_string();
    let protocol = if is_local(&registry) {
        ClientProtocol::HttpsExcept(vec![registry.clone()])
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        ..ClientConfig::default()
    });
    let auth = home
        .and_then(|h| std::fs::read_to_string(h.join(".docker/config.json")).ok())
        .and_then(|text| docker_auth(&text, &registry))
        .unwrap_or(RegistryAuth::Anonymous);
    progress(&format!("fetching the manifest of {parsed}"));
    let (manifest, digest, config) = client
        .pull_manifest_and_config(&parsed, &auth)
        .await
        .map_err(|e| err(format!("cannot pull {parsed}: {e}")))?;
    let config_file: serde_json::Value = serde_json::from_str(&config)
        .map_err(|e| err(format!("the config of {parsed} is not JSON: {e}")))?;
    let arch = config_file["architecture"].as_str().unwrap_or_default();
    let os = config_file["os"].as_str().unwrap_or_default();
    if (arch, os) != ("amd64", "linux") {
        return Err(err(format!(
            "{parsed} is for {os}/{arch}; banger runs linux/amd64 images"
        )));
    }
    let run = import::run_config(&config_file);
    let mut layers = Vec::new();
    let total = manifest.layers.len();
    for (i, layer) in manifest.layers.iter().enumerate() {
        let compression = Compression::from_media_type(&layer.media_type).ok_or_else(|| {
            err(format!(
                "layer {} of {parsed} is {}, which banger cannot read (it reads tar and tar+gzip layers)",
                layer.digest, layer.media_type
            ))
        })?;
        let path = blob_path(blobs, &layer.digest)?;
        if std::fs::metadata(&path).is_ok_and(|m| m.len() as i64 == layer.size) {
            progress(&format!(
                "layer {}/{total} {} (cached)",
                i + 1,
                short(&layer.digest)
            ));
        } else {
            progress(&format!(
                "layer {}/{total} {} ({} MB)",
                i + 1,
                short(&layer.digest),
                layer.size >> 20
            ));
            download(&client, &parsed, layer, &path).await?;
        }
        layers.push((path, compression, layer.digest.clone()));
    }
    Ok(Fetched {
        reference: parsed.whole(),
        digest,
        config: run,
        layers,
        tag: None,
    })
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..12.min(hex.len())]
}

/// Fetches one blob into the cache: written beside it, kept only if its
/// digest matched (oci-client checks it as it streams).
async fn download(
    client: &Client,
    reference: &Reference,
    layer: &OciDescriptor,
    path: &Path,
) -> Result<(), ImageError> {
    let dir = path.parent().expect("blob paths have a directory");
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ImageError::io(format!("cannot create {}", dir.display()), e))?;
    let partial = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| ImageError::io(format!("cannot create a file in {}", dir.display()), e))?;
    let file = tokio::fs::File::from_std(
        partial
            .reopen()
            .map_err(|e| ImageError::io("cannot open a download file", e))?,
    );
    client
        .pull_blob(reference, layer, file)
        .await
        .map_err(|e| {
            err(format!(
                "layer {} of {reference}: {e}; nothing of it was kept",
                layer.digest
            ))
        })?;
    partial
        .persist(path)
        .map_err(|e| ImageError::io(format!("cannot keep {}", path.display()), e.error))?;
    Ok(())
}

/// Makes a banger image named `name` from fetched layers: the tree is
/// filled by `unpack` (a program applying `COMPRESSION:LAYER` arguments to
/// the tree, run as the tree's root: `bangerd oci-unpack`), written as the
/// base disk; kernel, initramfs and vmlinux are `boot_from`'s.
pub fn convert(
    store: &ImageStore,
    boot_from: &Image,
    name: &str,
    fetched: &Fetched,
    unpack: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Image, ImageError> {
    super::validate_name(name)?;
    std::fs::create_dir_all(store.root())
        .map_err(|e| ImageError::io(format!("cannot create {}", store.root().display()), e))?;
    let build_dir = tempfile::Builder::new()
        .prefix(BUILD_DIR_PREFIX)
        .tempdir_in(store.root())
        .map_err(|e| {
            ImageError::io(
                format!("cannot create a directory in {}", store.root().display()),
                e,
            )
        })?;
    let out = build_dir.path().join("image");
    std::fs::create_dir(&out)
        .map_err(|e| ImageError::io(format!("cannot create {}", out.display()), e))?;
    progress("applying the layers");
    super::build::rootfs_from(build_dir.path(), &out.join(ROOTFS.1), |tree, as_root| {
        let mut cmd = as_root(unpack);
        cmd.arg("oci-unpack").arg(tree);
        for (path, compression, _) in &fetched.layers {
            let mut arg = std::ffi::OsString::from(format!("{}:", compression.as_str()));
            arg.push(path);
            cmd.arg(arg);
        }
        let out = crate::tool::output(&mut cmd)?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(err(format!("cannot unpack {}: {text}", fetched.reference)));
        }
        Ok(())
    })?;
    progress("writing the image");
    let mut files = BTreeMap::new();
    for (role, entry) in &boot_from.manifest.files {
        if role == ROOTFS.0 || role.starts_with("layer") {
            continue;
        }
        let from = boot_from.dir.join(&entry.path);
        let to = out.join(&entry.path);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .map_err(|e| ImageError::io(format!("cannot copy {}", from.display()), e))?;
        }
        files.insert(role.clone(), entry.clone());
    }
    let (sha256, size) = store::hash_file(&out.join(ROOTFS.1))?;
    store::set_mode(&out.join(ROOTFS.1), 0o444)?;
    files.insert(
        ROOTFS.0.to_owned(),
        FileEntry {
            path: PathBuf::from(ROOTFS.1),
            sha256,
            size,
        },
    );
    let mut manifest = boot_from.manifest.clone();
    manifest.name = name.to_owned();
    manifest.suite = String::new();
    manifest.created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    manifest.files = files;
    manifest.source = Some(Source::Oci {
        reference: fetched.reference.clone(),
        digest: fetched.digest.clone(),
        layers: fetched.layers.iter().map(|(_, _, d)| d.clone()).collect(),
    });
    manifest.run = fetched.config.clone();
    manifest.agent_init = true;
    manifest.id = manifest.compute_id();
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| ImageError::Manifest {
        path: out.join(MANIFEST_FILE),
        source,
    })?;
    std::fs::write(out.join(MANIFEST_FILE), json)
        .map_err(|e| ImageError::io("cannot write the manifest", e))?;
    store::set_mode(&out.join(MANIFEST_FILE), 0o444)?;
    let dir = store.root().join(&manifest.id);
    std::fs::rename(&out, &dir)
        .map_err(|e| ImageError::io(format!("cannot move the image into {}", dir.display()), e))?;
    store::set_mode(&dir, 0o555)?;
    Ok(Image {
        id: manifest.id.clone(),
        name: manifest.name.clone(),
        dir,
        manifest,
    })
}

/// A default name for an image pulled as `reference`: its repository's
/// last part and its tag (`python:3.12-slim` -> `python-3.12-slim`).
pub fn default_name(reference: &str) -> String {
    let parsed: Option<Reference> = reference.parse().ok();
    let (repo, tag) = match &parsed {
        Some(r) => (
            r.repository()
                .rsplit('/')
                .next()
                .unwrap_or("image")
                .to_string(),
            r.tag()
                .map(String::from)
                .or_else(|| r.digest().map(|d| short(d).to_string())),
        ),
        None => ("image".to_string(), None),
    };
    let raw = match tag {
        Some(t) => format!("{repo}-{t}"),
        None => repo,
    };
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(64);
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'i');
        name.truncate(64);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_registries_are_plain_http() {
        for local in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
        ] {
            assert!(is_local(local), "{local}");
        }
        for remote in [
            "docker.io",
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.example:443",
        ] {
            assert!(!is_local(remote), "{remote}");
        }
    }

    #[test]
    fn docker_config_credentials_are_read() {
        let config = r#"{"auths": {"ghcr.io": {"auth": "dXNlcjpwYXNzOndvcmQ="}, "https://index.docker.io/v1/": {"auth": "ZDpw"}}}"#;
        assert!(
            matches!(docker_auth(config, "ghcr.io"), Some(RegistryAuth::Basic(u, p)) if u == "user" && p == "pass:word")
        );
        assert!(
            matches!(docker_auth(config, "docker.io"), Some(RegistryAuth::Basic(u, _)) if u == "d")
        );
        assert!(docker_auth(config, "quay.io").is_none());
        assert!(docker_auth("not json", "ghcr.io").is_none());
    }

    #[test]
    fn names_and_blob_paths() {
        assert_eq!(default_name("python:3.12-slim"), "python-3.12-slim");
        assert_eq!(default_name("127.0.0.1:5000/test/bb:1"), "bb-1");
        assert_eq!(
            default_name("ghcr.io/o/img@sha256:".to_string().as_str()),
            "image"
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            blob_path(Path::new("/b"), &d).unwrap(),
            Path::new("/b/sha256").join("ab".repeat(32))
        );
        assert!(blob_path(Path::new("/b"), "sha256:../../etc").is_err());
        assert!(blob_path(Path::new("/b"), "sha512:00").is_err());
    }
}
