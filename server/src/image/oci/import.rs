//! `banger image import FILE`: an image from an archive instead of a
//! registry: an OCI image layout (`oci-layout`, `index.json`, `blobs/`,
//! e.g. `skopeo copy ... oci-archive:FILE`) or `docker save` output
//! (`manifest.json` naming a config and layer files). Every blob is hashed
//! as it goes into the blob cache; one whose digest differs from what the
//! archive says is refused.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::unpack::Compression;
use super::{Fetched, RunConfig, blob_path, err};
use crate::image::ImageError;

/// The most bytes an archive's JSON files (manifests, configs) may have.
const MAX_JSON: u64 = 4 << 20;

/// Reads `archive` (plain tar, or gzip) into the blob cache and returns
/// its image (the linux/amd64 one of an index).
pub fn import(archive: &Path, blobs: &Path) -> Result<Fetched, ImageError> {
    let staging_root = blobs.join("sha256");
    fs::create_dir_all(&staging_root)
        .map_err(|e| ImageError::io(format!("cannot create {}", staging_root.display()), e))?;
    let staging = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(&staging_root)
        .map_err(|e| ImageError::io("cannot make a staging directory", e))?;
    // Every regular file of the archive, by its path in it: small JSON
    // kept in memory, the rest hashed into staging files.
    let mut json: HashMap<String, Vec<u8>> = HashMap::new();
    let mut files: HashMap<String, (PathBuf, String)> = HashMap::new();
    let file = fs::File::open(archive)
        .map_err(|e| ImageError::io(format!("cannot open {}", archive.display()), e))?;
    let mut head = [0u8; 2];
    let gz = {
        let mut f = &file;
        f.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b]
    };
    let file = fs::File::open(archive)
        .map_err(|e| ImageError::io(format!("cannot open {}", archive.display()), e))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file)))
    } else {
        Box::new(io::BufReader::new(file))
    };
    // The tar reader's messages may quote the file's bytes: not shown.
    let bad = |e: io::Error| {
        err(format!(
            "{} is not a readable tar archive ({}); give an OCI layout or docker save archive",
            archive.display(),
            e.kind()
        ))
    };
    let mut tar = tar::Archive::new(reader);
    for (n, entry) in tar.entries().map_err(bad)?.enumerate() {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if path.ends_with(".json") || path == "oci-layout" {
            if entry.size() > MAX_JSON {
                return Err(err(format!(
                    "{path} in the archive is over {MAX_JSON} bytes"
                )));
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(bad)?;
            json.insert(path, data);
            continue;
        }
        let target = staging.path().join(n.to_string());
        let mut out =
            fs::File::create(&target).map_err(|e| ImageError::io("cannot stage a blob", e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let read = entry.read(&mut buf).map_err(bad)?;
            if read == 0 {
                break;
            }
            hasher.update(&buf[..read]);
            out.write_all(&buf[..read])
                .map_err(|e| ImageError::io("cannot stage a blob", e))?;
        }
        files.insert(path, (target, crate::image::hex(&hasher.finalize())));
    }
    // Blobs of a layout live at blobs/sha256/HEX (no .json names).
    let read_blob = |digest: &str| -> Result<Vec<u8>, ImageError> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let key = format!("blobs/sha256/{hex}");
        let (path, actual) = files
            .get(&key)
            .ok_or_else(|| err(format!("the archive has no blob {digest}")))?;
        if *actual != hex {
            return Err(err(format!(
                "blob {digest} in the archive does not match its digest"
            )));
        }
        let meta =
            fs::metadata(path).map_err(|e| ImageError::io("cannot read a staged blob", e))?;
        if meta.len() > MAX_JSON {
            return Err(err(format!(
                "blob {digest} is too big for a manifest or config"
            )));
        }
        fs::read(path).map_err(|e| ImageError::io("cannot read a staged blob", e))
    };
    let parse = |bytes: &[u8], what: &str| -> Result<serde_json::Value, ImageError> {
        serde_json::from_slice(bytes)
            .map_err(|e| err(format!("{what} in the archive is not JSON: {e}")))
    };
    let (config, layer_files, digest, name) = if json.contains_key("index.json")
        && json.contains_key("oci-layout")
    {
        let index = parse(&json["index.json"], "index.json")?;
        let (manifest_digest, tag) = pick_manifest(&index, &read_blob, &parse)?;
        let manifest = parse(&read_blob(&manifest_digest)?, "the image manifest")?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let config = parse(&read_blob(&config_digest)?, "the image config")?;
        let mut layers = Vec::new();
        for layer in manifest["layers"].as_array().cloned().unwrap_or_default() {
            let d = layer["digest"].as_str().unwrap_or_default().to_string();
            let media = layer["mediaType"].as_str().unwrap_or_default().to_string();
            let hex = d.strip_prefix("sha256:").unwrap_or(&d).to_string();
            let (path, actual) = files
                .get(&format!("blobs/sha256/{hex}"))
                .ok_or_else(|| err(format!("the archive has no layer {d}")))?;
            if *actual != hex {
                return Err(err(format!(
                    "layer {d} in the archive does not match its digest; nothing of it was kept"
                )));
            }
            let compression = Compression::from_media_type(&media)
                .ok_or_else(|| err(format!("layer {d} is {media}, which banger cannot read")))?;
            layers.push((path.clone(), compression, d));
        }
        (config, layers, manifest_digest, tag)
    } else if let Some(m) = json.get("manifest.json") {
        let list = parse(m, "manifest.json")?;
        let entry = list
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| err("manifest.json lists no image"))?;
        let config_path = entry["Config"].as_str().unwrap_or_default();
        let config_bytes = json
            .get(config_path)
            .cloned()
            .or_else(|| files.get(config_path).and_then(|(p, _)| fs::read(p).ok()))
            .ok_or_else(|| err(format!("the archive has no {config_path}")))?;
        let config = parse(&config_bytes, config_path)?;
        let mut layers = Vec::new();
        for layer in entry["Layers"].as_array().cloned().unwrap_or_default() {
            let path = layer.as_str().unwrap_or_default();
            let (staged, hex) = files
                .get(path)
                .ok_or_else(|| err(format!("the archive has no layer {path}")))?;
            // docker save writes layers uncompressed; a gzip one says so
            // in its first bytes.
            let compression = if is_gzip(staged) {
                Compression::Gzip
            } else {
                Compression::None
            };
            layers.push((staged.clone(), compression, format!("sha256:{hex}")));
        }
        let tag = entry["RepoTags"]
            .as_array()
            .and_then(|t| t.first())
            .and_then(|t| t.as_str())
            .map(String::from);
        let digest = format!(
            "sha256:{}",
            crate::image::hex(&Sha256::digest(&config_bytes))
        );
        (config, layers, digest, tag)
    } else {
        return Err(err(format!(
            "{} is neither an OCI image layout (oci-layout, index.json) nor docker save output (manifest.json)",
            archive.display()
        )));
    };
    let arch = config["architecture"].as_str().unwrap_or_default();
    let os = config["os"].as_str().unwrap_or_default();
    if (arch, os) != ("amd64", "linux") {
        return Err(err(format!(
            "the archive's image is for {os}/{arch}; banger runs linux/amd64 images"
        )));
    }
    // Into the cache, by digest (a blob already there stays).
    let mut layers = Vec::new();
    for (staged, compression, digest) in layer_files {
        let target = blob_path(blobs, &digest)?;
        if !target.exists() {
            fs::rename(&staged, &target)
                .map_err(|e| ImageError::io(format!("cannot keep {}", target.display()), e))?;
        }
        layers.push((target, compression, digest));
    }
    Ok(Fetched {
        reference: format!("file:{}", archive.display()),
        digest,
        config: run_config(&config),
        layers,
        tag: name,
    })
}

/// The index entry to use (linux/amd64, or the only one) and its tag.
#[allow(clippy::type_complexity)]
fn pick_manifest(
    index: &serde_json::Value,
    read_blob: &dyn Fn(&str) -> Result<Vec<u8>, ImageError>,
    parse: &dyn Fn(&[u8], &str) -> Result<serde_json::Value, ImageError>,
) -> Result<(String, Option<String>), ImageError> {
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let tag = |e: &serde_json::Value| {
        e["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .map(String::from)
    };
    for e in &entries {
        let media = e["mediaType"].as_str().unwrap_or_default();
        let digest = e["digest"].as_str().unwrap_or_default().to_string();
        let platform = &e["platform"];
        let fits = platform.is_null()
            || (platform["architecture"] == "amd64" && platform["os"] == "linux");
        if !fits {
            continue;
        }
        if media.contains("index") || media.contains("manifest.list") {
            let inner = parse(&read_blob(&digest)?, "a nested index")?;
            return pick_manifest(&inner, read_blob, parse).map(|(d, t)| (d, t.or_else(|| tag(e))));
        }
        return Ok((digest, tag(e)));
    }
    Err(err("the archive's index has no linux/amd64 image"))
}

fn is_gzip(path: &Path) -> bool {
    let mut head = [0u8; 2];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == [0x1f, 0x8b]
}

/// Env and WorkingDir (and User) from an image config JSON.
pub(super) fn run_config(config: &serde_json::Value) -> RunConfig {
    let c = &config["config"];
    RunConfig {
        env: c["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        working_dir: c["WorkingDir"]
            .as_str()
            .filter(|w| !w.is_empty())
            .map(String::from),
        user: c["User"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(String::from),
    }
}
