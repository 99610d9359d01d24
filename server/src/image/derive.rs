//! Derived images: a parent image plus one more read-only layer (the upper
//! directory of a guest's overlay after a step ran in it: packages
//! installed, a project's setup). The new image shares everything else
//! with its parent by hard links in the store (nothing is copied), and
//! stays whole if the parent is deleted later.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::tool::{self, Tool};

use super::store::{self, BUILD_DIR_PREFIX, FileEntry, MANIFEST_FILE, layer_role};
use super::{Image, ImageError, ImageStore, Source};

/// Checks an image name: up to 64 letters, digits, `.`, `_` or `-`,
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), ImageError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidOptions(format!(
            "image name {name:?} is not usable; use up to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        )))
    }
}

/// Makes a guest's overlay upper disk (`upper/`, `work/`) fit to be a
/// layer: checked (`e2fsck -f`, which also replays the journal of a guest
/// that was stopped, not unmounted), without a journal (a read-only layer
/// never needs one, and it is most of a small layer's size), and shrunk
/// to its contents (`resize2fs -M`, which also truncates the file).
pub fn shrink_layer(disk: &Path) -> Result<(), ImageError> {
    let check = || -> Result<(), ImageError> {
        let mut check = tool::command(Tool::E2fsck);
        check.args(["-f", "-y"]).arg(disk);
        let out = tool::output(&mut check)?;
        // 0: clean; 1: errors corrected. Anything else is a disk not to trust.
        if !matches!(out.status.code(), Some(0 | 1)) {
            return Err(command_failed(&check, &out));
        }
        Ok(())
    };
    check()?;
    let mut tune = tool::command(Tool::Tune2fs);
    tune.args(["-O", "^has_journal"]).arg(disk);
    let out = tool::output(&mut tune)?;
    if !out.status.success() {
        return Err(command_failed(&tune, &out));
    }
    check()?;
    let mut shrink = tool::command(Tool::Resize2fs);
    shrink.arg("-M").arg(disk);
    let out = tool::output(&mut shrink)?;
    if !out.status.success() {
        return Err(command_failed(&shrink, &out));
    }
    Ok(())
}

fn command_failed(cmd: &std::process::Command, out: &std::process::Output) -> ImageError {
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    ImageError::Command {
        command: format!(
            "{} {}",
            cmd.get_program().to_string_lossy(),
            cmd.get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        status: out.status.to_string(),
        output: text.lines().rev().take(10).collect::<Vec<_>>().join("\n"),
    }
}

/// Adds `parent` + `layer` (moved into the store) as a new image named
/// `name`. The image directory appears whole or not at all.
pub fn add_derived(
    store: &ImageStore,
    parent: &Image,
    name: &str,
    layer: &Path,
    source: Source,
) -> Result<Image, ImageError> {
    validate_name(name)?;
    let depth = parent.layers().len() + 1;
    if depth > crate::disk::MAX_LAYERS {
        return Err(ImageError::InvalidOptions(format!(
            "image {} already has {} layers, the most an image can have; derive from an image with fewer layers",
            parent.name,
            depth - 1
        )));
    }
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
    fs::create_dir(&out)
        .map_err(|e| ImageError::io(format!("cannot create {}", out.display()), e))?;
    let mut files = parent.manifest.files.clone();
    for entry in files.values() {
        link_or_copy(&parent.dir.join(&entry.path), &out.join(&entry.path))?;
    }
    let role = layer_role(depth);
    let file_name = PathBuf::from(format!("{role}.ext4"));
    let target = out.join(&file_name);
    if fs::rename(layer, &target).is_err() {
        fs::copy(layer, &target).map_err(|e| {
            ImageError::io(format!("cannot copy {} into the store", layer.display()), e)
        })?;
    }
    let (sha256, size) = store::hash_file(&target)?;
    store::set_mode(&target, 0o444)?;
    files.insert(
        role,
        FileEntry {
            path: file_name,
            sha256,
            size,
        },
    );
    let mut manifest = parent.manifest.clone();
    if let Source::Derived {
        step: super::Step::Setup { env, .. },
        ..
    } = &source
    {
        manifest.run.env.extend(env.iter().cloned());
    }
    manifest.name = name.to_owned();
    manifest.created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    manifest.files = files;
    manifest.source = Some(source);
    manifest.id = manifest.compute_id();
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| ImageError::Manifest {
        path: out.join(MANIFEST_FILE),
        source,
    })?;
    let manifest_path = out.join(MANIFEST_FILE);
    fs::write(&manifest_path, json)
        .map_err(|e| ImageError::io(format!("cannot write {}", manifest_path.display()), e))?;
    store::set_mode(&manifest_path, 0o444)?;
    let dir = store.root().join(&manifest.id);
    fs::rename(&out, &dir).map_err(|e| {
        ImageError::io(
            format!("cannot move the new image into {}", dir.display()),
            e,
        )
    })?;
    store::set_mode(&dir, 0o555)?;
    Ok(Image {
        id: manifest.id.clone(),
        name: manifest.name.clone(),
        dir,
        manifest,
    })
}

/// A hard link (images are immutable, so sharing the inode is safe), or a
/// copy where the store spans file systems.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), ImageError> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| ImageError::io(format!("cannot copy {}", from.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Step;
    use std::os::unix::fs::MetadataExt;

    /// A derived image shares its parent's files (same inodes), adds its
    /// layer on top, names what made it, and survives its parent's delete.
    #[test]
    fn a_derived_image_links_its_parent_and_adds_a_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::new(tmp.path().join("images"));
        let parent = store::tests::fake_image(&store, "base", 1);
        let parent = store.find(&parent).unwrap().unwrap();
        let source = |key: &str| Source::Derived {
            parent: parent.id.clone(),
            parent_name: parent.name.clone(),
            step: Step::Packages {
                packages: vec!["hello".into()],
                resolved: Vec::new(),
            },
            key: key.into(),
        };
        let layer = tmp.path().join("upper.ext4");
        fs::write(&layer, b"layer one").unwrap();
        let child = add_derived(&store, &parent, "child", &layer, source("k1")).unwrap();
        assert!(!layer.exists(), "the layer was moved in");
        assert_eq!(child.layers(), [child.dir.join("layer1.ext4")]);
        assert_eq!(
            fs::metadata(child.rootfs()).unwrap().ino(),
            fs::metadata(parent.rootfs()).unwrap().ino()
        );
        assert_eq!(store.find_key("k1").unwrap().unwrap().id, child.id);
        assert!(store.find_key("k2").unwrap().is_none());
        child.verify().unwrap();

        fs::write(&layer, b"layer two").unwrap();
        let grandchild = add_derived(&store, &child, "grandchild", &layer, source("k2")).unwrap();
        assert_eq!(
            grandchild.layers(),
            [
                grandchild.dir.join("layer1.ext4"),
                grandchild.dir.join("layer2.ext4")
            ]
        );
        store.delete(&child.id).unwrap();
        store.delete(&parent.id).unwrap();
        let left = store.find("grandchild").unwrap().unwrap();
        left.verify().unwrap();
        // Deleting shared files left the survivor's read-only.
        let mode = fs::metadata(left.rootfs()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o444);

        let err = add_derived(&store, &left, "bad name", &layer, source("k3")).unwrap_err();
        assert!(err.to_string().contains("not usable"), "{err}");
    }
}
