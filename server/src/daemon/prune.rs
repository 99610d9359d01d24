//! `banger system prune`: what the cache holds that nothing can use any
//! more, and its removal.
//!
//! The cache only grows otherwise: every new image recipe (a banger
//! upgrade) builds a new default image beside the old one, every pull of a
//! changed tag keeps the old layers, and every repository a VM ever ran in
//! keeps its dependency cache. What goes:
//! - an image that is not the newest of its name (a newer build replaced
//!   it: lookups by name never pick it again), unless a VM, a snapshot of
//!   a running VM or `vm_defaults.image` names it; with it, its snapshots;
//! - a directory of image snapshots whose image is no longer in the store;
//! - a project's dependency cache whose repository directory is gone and
//!   that no VM names;
//! - an OCI layer that no kept image was made from.
//!
//! Only this daemon's VMs are known: two daemons of one user sharing a
//! cache (different state directories) would not see each other's.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::snapshot::DirLock;
use super::{Daemon, OpError};
use crate::api::PruneItem;
use crate::image::{Image, Source};

/// What removing an item takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// An image (by id) and its snapshots.
    Image(String),
    /// The snapshots of an image no longer in the store (its id).
    Snapshots(String),
    /// A project dependency cache (by name).
    Cache(String),
    /// An OCI layer blob file.
    Layer(PathBuf),
}

/// One thing to remove, with what its removal takes.
#[derive(Debug, Clone)]
struct Doomed {
    item: PruneItem,
    target: Target,
    /// The files and directories it frees (for the byte count).
    paths: Vec<PathBuf>,
}

/// What keeps an image: the newest of each name always; older ones while
/// something names them.
#[derive(Debug, Default)]
pub(super) struct Keepers {
    /// Image ids VMs were made from (any state: a stopped VM boots its
    /// image again).
    pub(super) vm_images: HashSet<String>,
    /// Cache names VMs mount (any state).
    pub(super) vm_caches: HashSet<String>,
    /// Image ids snapshots of running VMs were taken on.
    pub(super) snapshot_images: HashSet<String>,
    /// The id `vm_defaults.image` resolves to.
    pub(super) configured: Option<String>,
}

/// The images to remove from `images` (newest first, as the store lists
/// them), with why (pure).
pub(super) fn superseded<'a>(images: &'a [Image], keep: &Keepers) -> Vec<(&'a Image, String)> {
    let mut newest: HashMap<&str, &Image> = HashMap::new();
    for image in images {
        newest.entry(image.name.as_str()).or_insert(image);
    }
    images
        .iter()
        .filter(|i| {
            !std::ptr::eq(*i, newest[i.name.as_str()])
                && !keep.vm_images.contains(&i.id)
                && !keep.snapshot_images.contains(&i.id)
                && keep.configured.as_deref() != Some(i.id.as_str())
        })
        .map(|i| {
            let by = newest[i.name.as_str()];
            (i, format!("superseded by {} ({})", by.name, short(&by.id)))
        })
        .collect()
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// Bytes removing each group of `paths` frees, when all groups go: the
/// blocks of each file all of whose hard links are among them (a file an
/// image shares with a kept image frees nothing), counted in the first
/// group that has a link to it. Blocking.
pub(super) fn freed_bytes(groups: &[Vec<PathBuf>]) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    struct File {
        links: u64,
        seen: u64,
        bytes: u64,
        group: usize,
    }
    let mut files: HashMap<(u64, u64), File> = HashMap::new();
    for (group, paths) in groups.iter().enumerate() {
        let mut stack: Vec<PathBuf> = paths.clone();
        while let Some(path) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.extend(
                    std::fs::read_dir(&path)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                );
                continue;
            }
            files
                .entry((meta.dev(), meta.ino()))
                .or_insert(File {
                    links: meta.nlink(),
                    seen: 0,
                    bytes: meta.blocks() * 512,
                    group,
                })
                .seen += 1;
        }
    }
    let mut out = vec![0; groups.len()];
    for file in files.values().filter(|f| f.seen >= f.links) {
        out[file.group] += file.bytes;
    }
    out
}

/// A file name that is a sha256 in lowercase hex.
fn is_digest_hex(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Daemon {
    /// The OCI layer store (`<cache>/oci/blobs`).
    pub(super) fn oci_blobs(&self) -> PathBuf {
        self.dirs.cache.join("oci/blobs")
    }

    /// What keeps images and caches now.
    fn keepers(&self) -> Result<Keepers, OpError> {
        let mut keep = Keepers::default();
        for vm in self.with_store(|s| s.list_vms())? {
            keep.vm_images.insert(vm.image_id);
            if let Some(cache) = vm.cache {
                keep.vm_caches.insert(cache);
            }
        }
        keep.snapshot_images = self
            .user_snapshot_metas()
            .into_iter()
            .map(|m| m.image_id)
            .collect();
        // A config that does not load may name an image nobody can tell:
        // nothing is pruned until it is fixed.
        let config = crate::config::Config::load(&self.dirs).map_err(|e| {
            OpError::new(
                crate::api::code::INVALID,
                format!("{e}; fix it first: the image it names must not be pruned"),
            )
        })?;
        if let Some(name) = config.vm_defaults.image
            && let Some(image) = self.images.find(&name).map_err(OpError::from_display)?
        {
            keep.configured = Some(image.id);
        }
        Ok(keep)
    }

    /// Everything prunable now, images first. Blocking.
    fn prune_plan(&self) -> Result<Vec<Doomed>, OpError> {
        let keep = self.keepers()?;
        let images = self.images.list().map_err(OpError::from_display)?;
        let snapshot_root = self.snapshot_root();
        let mut out = Vec::new();

        let doomed_images = superseded(&images, &keep);
        let doomed_ids: HashSet<&str> = doomed_images.iter().map(|(i, _)| i.id.as_str()).collect();
        for (image, reason) in &doomed_images {
            let paths = vec![image.dir.clone(), snapshot_root.join(&image.id)];
            out.push(Doomed {
                item: PruneItem {
                    kind: "image".into(),
                    name: format!("{} ({})", image.name, short(&image.id)),
                    reason: reason.clone(),
                    bytes: 0,
                    key: format!("image:{}", image.id),
                },
                target: Target::Image(image.id.clone()),
                paths,
            });
        }

        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        let mut orphans: Vec<String> = std::fs::read_dir(&snapshot_root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| is_digest_hex(id) && !present.contains(id.as_str()))
            .collect();
        orphans.sort();
        for id in orphans {
            let paths = vec![snapshot_root.join(&id)];
            out.push(Doomed {
                item: PruneItem {
                    kind: "image-snapshots".into(),
                    name: short(&id).to_string(),
                    reason: "snapshots of an image no longer in the store".into(),
                    bytes: 0,
                    key: format!("image-snapshots:{id}"),
                },
                target: Target::Snapshots(id),
                paths,
            });
        }

        let caches = self.dirs.project_caches();
        for cache in crate::cache::list(&caches) {
            if keep.vm_caches.contains(&cache.name)
                || (!cache.repo.is_empty() && Path::new(&cache.repo).exists())
            {
                continue;
            }
            let paths = vec![caches.join(&cache.name)];
            out.push(Doomed {
                item: PruneItem {
                    kind: "cache".into(),
                    reason: format!("its repository {} is gone", cache.repo),
                    bytes: 0,
                    key: format!("cache:{}", cache.name),
                    name: cache.name.clone(),
                },
                target: Target::Cache(cache.name),
                paths,
            });
        }

        let blobs = self.oci_blobs();
        let used: HashSet<PathBuf> = images
            .iter()
            .filter(|i| !doomed_ids.contains(i.id.as_str()))
            .filter_map(|i| match &i.manifest.source {
                Some(Source::Oci { layers, .. }) => Some(layers),
                _ => None,
            })
            .flatten()
            .filter_map(|digest| crate::image::oci::blob_path(&blobs, digest).ok())
            .collect();
        let mut layers: Vec<PathBuf> = std::fs::read_dir(blobs.join("sha256"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| e.file_name().to_str().is_some_and(is_digest_hex))
            .map(|e| e.path())
            .filter(|p| !used.contains(p))
            .collect();
        layers.sort();
        for path in layers {
            let hex = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let paths = vec![path.clone()];
            out.push(Doomed {
                item: PruneItem {
                    kind: "layer".into(),
                    name: format!("sha256:{hex}"),
                    reason: "an OCI layer no image in the store was made from".into(),
                    bytes: 0,
                    key: format!("layer:{hex}"),
                },
                target: Target::Layer(path),
                paths,
            });
        }
        let groups: Vec<Vec<PathBuf>> = out.iter().map(|d| d.paths.clone()).collect();
        for (doomed, bytes) in out.iter_mut().zip(freed_bytes(&groups)) {
            doomed.item.bytes = bytes;
        }
        Ok(out)
    }

    /// `system_prune`: the plan, or (with `apply`) the removal of what is
    /// in it and in `only` (when given), decided again under the locks
    /// that keep a create, a cache claim and a pull from racing it.
    pub(crate) async fn system_prune(
        &self,
        apply: bool,
        only: Option<Vec<String>>,
    ) -> Result<Vec<PruneItem>, OpError> {
        if !apply {
            return super::offload(|| self.prune_plan())
                .map(|plan| plan.into_iter().map(|d| d.item).collect());
        }
        // No create picks an image, and no VM claims a cache, meanwhile.
        let _catalog = self.catalog.write().await;
        let _caches = self.cache_lock.lock().await;
        // A pull or import holds the layer store shared from its first
        // fetch until its image is made: layers are taken only while
        // nobody holds it, and the plan is made after the lock, so an
        // image made meanwhile keeps its layers.
        let blobs = self.oci_blobs();
        let layers_lock = if blobs.join("sha256").is_dir() {
            let lock = super::offload(|| DirLock::try_alone(&blobs)).map_err(OpError::internal)?;
            if lock.is_none() {
                tracing::info!("an image pull or import is under way: OCI layers are kept");
            }
            lock
        } else {
            None
        };
        let plan = super::offload(|| self.prune_plan())?;
        let wanted: Option<HashSet<String>> = only.map(|keys| keys.into_iter().collect());
        let plan: Vec<Doomed> = plan
            .into_iter()
            .filter(|d| wanted.as_ref().is_none_or(|w| w.contains(&d.item.key)))
            .collect();
        let mut removed = Vec::new();
        for doomed in plan {
            let result = match &doomed.target {
                Target::Image(id) => {
                    let deleted = super::offload(|| self.images.delete(id))
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    if deleted.is_ok() {
                        self.remove_snapshots(id).await;
                    }
                    deleted
                }
                Target::Snapshots(id) => {
                    self.remove_snapshots(id).await;
                    Ok(())
                }
                Target::Cache(name) => {
                    let root = self.dirs.project_caches();
                    super::offload(|| crate::cache::remove(&root, name))
                }
                Target::Layer(path) => {
                    if layers_lock.is_none() {
                        continue;
                    }
                    std::fs::remove_file(path)
                        .map_err(|e| format!("cannot remove {}: {e}", path.display()))
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(kind = %doomed.item.kind, name = %doomed.item.name, bytes = doomed.item.bytes, "pruned");
                    removed.push(doomed.item);
                }
                Err(e) => {
                    tracing::warn!(kind = %doomed.item.kind, name = %doomed.item.name, error = %e, "not pruned");
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageStore, fake_image};

    fn ids(doomed: &[(&Image, String)]) -> Vec<String> {
        doomed.iter().map(|(i, _)| i.id.clone()).collect()
    }

    #[test]
    fn only_older_images_of_a_name_nothing_names_are_superseded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::new(tmp.path().join("images"));
        let oldest = fake_image(&store, "debian-bookworm", 100);
        let by_vm = fake_image(&store, "debian-bookworm", 200);
        let by_snapshot = fake_image(&store, "debian-bookworm", 300);
        let by_config = fake_image(&store, "debian-bookworm", 400);
        let older = fake_image(&store, "debian-bookworm", 500);
        let newest = fake_image(&store, "debian-bookworm", 600);
        let alone = fake_image(&store, "custom", 50);
        let images = store.list().unwrap();

        let nothing = Keepers::default();
        let doomed = superseded(&images, &nothing);
        let mut want = vec![
            oldest.clone(),
            by_vm.clone(),
            by_snapshot.clone(),
            by_config.clone(),
            older.clone(),
        ];
        want.sort();
        let mut got = ids(&doomed);
        got.sort();
        assert_eq!(got, want, "all but the newest of each name");
        assert!(!got.contains(&newest) && !got.contains(&alone));
        assert!(
            doomed[0].1.contains(&format!(
                "superseded by debian-bookworm ({})",
                &newest[..12]
            )),
            "{}",
            doomed[0].1
        );

        let keep = Keepers {
            vm_images: [by_vm.clone()].into(),
            vm_caches: HashSet::new(),
            snapshot_images: [by_snapshot.clone()].into(),
            configured: Some(by_config.clone()),
        };
        let mut got = ids(&superseded(&images, &keep));
        got.sort();
        let mut want = vec![oldest, older];
        want.sort();
        assert_eq!(got, want, "what a vm, snapshot or config names stays");
    }

    #[test]
    fn a_hard_linked_file_frees_its_bytes_only_with_all_its_links() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("own"), vec![1u8; 64 << 10]).unwrap();
        std::fs::write(a.join("sub/shared"), vec![2u8; 128 << 10]).unwrap();
        std::fs::hard_link(a.join("sub/shared"), b.join("shared")).unwrap();
        let own = crate::disk::allocated_bytes(&a.join("own"));
        let shared = crate::disk::allocated_bytes(&a.join("sub/shared"));
        assert!(own >= 64 << 10 && shared >= 128 << 10);

        assert_eq!(freed_bytes(&[vec![a.clone()]]), [own], "b keeps shared");
        assert_eq!(
            freed_bytes(&[vec![b.clone()], vec![a.clone()]]),
            [shared, own],
            "a file both free counts once, in the first"
        );
        assert_eq!(freed_bytes(&[vec![a, b]]), [own + shared]);
        assert_eq!(freed_bytes(&[vec![tmp.path().join("missing")]]), [0]);
    }

    #[test]
    fn layer_names_are_lowercase_sha256_hex() {
        assert!(is_digest_hex(&"ab".repeat(32)));
        assert!(!is_digest_hex(&"AB".repeat(32)));
        assert!(!is_digest_hex(&"ab".repeat(31)));
        assert!(!is_digest_hex(".lock"));
        assert!(!is_digest_hex(&format!("{}.partial", "ab".repeat(32))));
    }
}
