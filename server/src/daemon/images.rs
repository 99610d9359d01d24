//! `image build` and a project's setup, decided here and carried out by
//! the image build (`image::build`) or in a guest (`derive.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::derive::{DeriveRequest, MAX_INPUT_BYTES, MAX_INPUTS, input_hashes};
use super::snapshot::DirLock;
use super::{Daemon, OpError, Progress};
use crate::api::{ImageBuildParams, SetupParams, code};
use crate::image::{DEFAULT_IMAGE, Image, Step};

/// The longest setup command accepted.
const MAX_COMMAND: usize = 64 << 10;

/// What an `image build` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BuildPlan {
    /// The default image, built again.
    Default,
    /// A full build from Debian packages.
    Full {
        name: String,
        suite: String,
        packages: Vec<String>,
    },
    /// Packages added to an image (the default one without `from`).
    Packages {
        name: String,
        from: Option<String>,
        packages: Vec<String>,
    },
}

fn invalid(message: impl Into<String>) -> OpError {
    OpError::new(code::INVALID, message)
}

/// Decides what `image build` does (pure).
pub(crate) fn plan_build(p: ImageBuildParams) -> Result<BuildPlan, OpError> {
    let packages: Vec<String> = p
        .packages
        .iter()
        .flat_map(|p| p.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    crate::image::check_packages(&packages).map_err(invalid)?;
    let named = p.name.clone().filter(|n| n != DEFAULT_IMAGE);
    if let Some(name) = &named {
        crate::image::validate_name(name).map_err(|e| invalid(e.to_string()))?;
    }
    let custom_name = || {
        named.clone().ok_or_else(|| {
            invalid(format!(
                "give the new image a name (not {DEFAULT_IMAGE}, which is banger's own): banger image build NAME ..."
            ))
        })
    };
    match (p.from, p.suite) {
        (Some(_), Some(_)) => Err(invalid(
            "--suite makes a full build from Debian packages; it cannot be combined with --from",
        )),
        (Some(from), None) if packages.is_empty() => Err(invalid(format!(
            "--from {from} needs --packages: what to add to it"
        ))),
        (from, None) if !packages.is_empty() => Ok(BuildPlan::Packages {
            name: custom_name()?,
            from,
            packages,
        }),
        (None, None) if named.is_none() => Ok(BuildPlan::Default),
        (None, suite) => {
            let suite = suite.unwrap_or_else(|| "bookworm".into());
            Ok(BuildPlan::Full {
                name: custom_name()?,
                suite,
                packages,
            })
        }
        (Some(_), None) => unreachable!("handled above: --from with or without packages"),
    }
}

/// Checks an import request before anything starts.
pub(crate) fn check_import(p: &crate::api::ImageImportParams) -> Result<(), OpError> {
    if let Some(name) = &p.name {
        crate::image::validate_name(name).map_err(|e| invalid(e.to_string()))?;
    }
    if !Path::new(&p.file).is_file() {
        return Err(invalid(format!("{} is not a file", p.file)));
    }
    Ok(())
}

/// An image for clients. The size of a derived image is what it adds to
/// its parent (its top layer; the rest is shared).
pub(super) fn image_view(image: &crate::image::Image) -> crate::api::ImageView {
    let top_layer = image.layers().pop();
    let size_bytes = match &top_layer {
        Some(layer) => std::fs::metadata(layer).map(|m| m.len()).unwrap_or(0),
        None => std::fs::read_dir(&image.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0),
    };
    let (kind, parent) = match &image.manifest.source {
        Some(crate::image::Source::Debian { .. }) | None => ("debian", None),
        Some(crate::image::Source::Oci { reference, .. }) => ("oci", Some(reference.clone())),
        Some(crate::image::Source::Derived {
            parent,
            parent_name,
            ..
        }) => (
            "derived",
            Some(format!(
                "{parent_name} ({})",
                &parent[..12.min(parent.len())]
            )),
        ),
    };
    crate::api::ImageView {
        id: image.id.clone(),
        name: image.name.clone(),
        dir: image.dir.display().to_string(),
        kernel_version: image.manifest.kernel_version.clone(),
        created_at: image.manifest.created_at as i64,
        size_bytes,
        kind: kind.into(),
        parent,
        manifest: serde_json::to_value(&image.manifest).unwrap_or_default(),
    }
}

/// Checks a setup request before anything starts.
pub(crate) fn check_setup(p: &SetupParams) -> Result<(), OpError> {
    if p.command.trim().is_empty() {
        return Err(invalid("the setup command is empty"));
    }
    if p.command.len() > MAX_COMMAND || p.command.contains('\0') {
        return Err(invalid(format!(
            "the setup command is over {MAX_COMMAND} bytes or holds a NUL byte"
        )));
    }
    if p.inputs.len() > MAX_INPUTS {
        return Err(invalid(format!(
            "a setup reads at most {MAX_INPUTS} input files, not {}",
            p.inputs.len()
        )));
    }
    for input in &p.inputs {
        crate::project::validate_input(input).map_err(invalid)?;
    }
    if !Path::new(&p.repo).is_absolute() {
        return Err(invalid(format!("{:?} is not an absolute path", p.repo)));
    }
    Ok(())
}

/// Reads a setup's input files: regular files inside `repo` (no symlink
/// leads out of it), bounded in number and size.
fn read_inputs(repo: &Path, inputs: &[String]) -> Result<Vec<(String, Vec<u8>)>, OpError> {
    let root = repo.canonicalize().map_err(|e| {
        invalid(format!(
            "cannot open the repository {}: {e}",
            repo.display()
        ))
    })?;
    let mut files = Vec::new();
    let mut total = 0usize;
    for input in inputs {
        let path: PathBuf = root.join(input);
        let real = path.canonicalize().map_err(|e| {
            invalid(format!(
                "setup input {input}: {e} (setup-inputs names files of the repository)"
            ))
        })?;
        if !real.starts_with(&root) {
            return Err(invalid(format!(
                "setup input {input} leads out of the repository"
            )));
        }
        if !real.is_file() {
            return Err(invalid(format!("setup input {input} is not a file")));
        }
        let data = std::fs::read(&real)
            .map_err(|e| invalid(format!("cannot read setup input {input}: {e}")))?;
        total += data.len();
        if total > MAX_INPUT_BYTES {
            return Err(invalid(format!(
                "the setup inputs are over {} MiB together",
                MAX_INPUT_BYTES >> 20
            )));
        }
        files.push((input.clone(), data));
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    Ok(files)
}

impl Daemon {
    /// Carries out an `image build` plan.
    pub(crate) async fn run_build(
        self: &Arc<Self>,
        plan: BuildPlan,
        progress: &Progress,
    ) -> Result<Image, OpError> {
        match plan {
            BuildPlan::Default => self.build_image(progress, false).await,
            BuildPlan::Full {
                name,
                suite,
                packages,
            } => {
                let mut opts = crate::image::BuildOptions::default_for(
                    self.agent.path.clone(),
                    &self.dirs.cache,
                );
                opts.mirrors = crate::image::default_mirrors(&suite);
                opts.name = name;
                opts.suite = suite;
                opts.packages = packages;
                self.build_with(opts, progress, false).await
            }
            BuildPlan::Packages {
                name,
                from,
                packages,
            } => {
                let request = DeriveRequest {
                    base: from,
                    name,
                    step: Step::Packages {
                        packages,
                        resolved: Vec::new(),
                    },
                    files: Vec::new(),
                    nat: true,
                    allow: Vec::new(),
                    vcpu: None,
                    memory_mib: None,
                    cache: None,
                };
                self.derive_image(request, progress).await
            }
        }
    }

    /// Deletes an image (name or id) and its snapshots; refused while a VM
    /// or a snapshot of a running VM uses it.
    pub(crate) async fn delete_image(&self, image: &str) -> Result<(), OpError> {
        let _alone = self.catalog.write().await;
        let Some(img) = self.images.find(image).map_err(OpError::from_display)? else {
            return Err(OpError::new(
                code::NOT_FOUND,
                format!("no image named {image:?}; list them with: banger image list"),
            ));
        };
        let users: Vec<String> = self
            .with_store(|s| s.list_vms())?
            .into_iter()
            .filter(|vm| vm.image_id == img.id)
            .map(|vm| vm.name)
            .collect();
        if !users.is_empty() {
            return Err(OpError::new(
                code::CONFLICT,
                format!(
                    "image {} is used by vm {}; delete those vms first",
                    img.name,
                    users.join(", ")
                ),
            ));
        }
        let mut snapshots: Vec<String> = self
            .user_snapshot_metas()
            .into_iter()
            .filter(|m| m.image_id == img.id)
            .map(|m| format!("{}:{}", m.name, m.tag))
            .collect();
        if !snapshots.is_empty() {
            snapshots.sort();
            return Err(OpError::new(
                code::CONFLICT,
                format!(
                    "image {} is used by snapshot {}; delete those first: banger vm snapshot delete NAME:TAG",
                    img.name,
                    snapshots.join(", ")
                ),
            ));
        }
        super::offload(|| self.images.delete(&img.id)).map_err(OpError::from_display)?;
        self.remove_snapshots(&img.id).await;
        Ok(())
    }

    /// An OCI image pulled from its registry and made a banger image (the
    /// same name and manifest digest pulled again is the image made before).
    pub(crate) async fn pull_image(
        self: &Arc<Self>,
        p: crate::api::ImagePullParams,
        progress: &Progress,
    ) -> Result<Image, OpError> {
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| crate::image::oci::default_name(&p.reference));
        crate::image::validate_name(&name).map_err(|e| invalid(e.to_string()))?;
        // Its kernel, initramfs and agent are the default image's.
        let boot_from = self.ensure_image(None, progress).await?;
        let blobs = self.oci_blobs();
        // Until the image is made, `system prune` leaves the layers alone.
        let _layers = DirLock::take(&blobs, false)
            .await
            .map_err(OpError::internal)?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let say = |m: &str| progress.say(m);
        let fetched = crate::image::oci::fetch(&p.reference, &blobs, home.as_deref(), &say)
            .await
            .map_err(|e| OpError::new(code::CANNOT_RUN, e.to_string()))?;
        self.oci_image(boot_from, name, fetched, progress).await
    }

    /// An OCI layout or `docker save` archive made a banger image.
    pub(crate) async fn import_image(
        self: &Arc<Self>,
        p: crate::api::ImageImportParams,
        progress: &Progress,
    ) -> Result<Image, OpError> {
        let boot_from = self.ensure_image(None, progress).await?;
        let blobs = self.oci_blobs();
        let _layers = DirLock::take(&blobs, false)
            .await
            .map_err(OpError::internal)?;
        let file = PathBuf::from(&p.file);
        progress.say(&format!("reading {}", file.display()));
        let fetched = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || crate::image::oci::import::import(&file, &blobs))
                .await
                .map_err(|e| OpError::internal(format!("import task failed: {e}")))?
                .map_err(|e| OpError::new(code::INVALID, e.to_string()))?
        };
        let name = match p.name {
            Some(name) => name,
            None => match &fetched.tag {
                Some(tag) => crate::image::oci::default_name(tag),
                None => crate::image::oci::default_name(
                    &file.file_stem().unwrap_or_default().to_string_lossy(),
                ),
            },
        };
        crate::image::validate_name(&name).map_err(|e| invalid(e.to_string()))?;
        self.oci_image(boot_from, name, fetched, progress).await
    }

    /// The banger image of fetched OCI layers: the one made before from the
    /// same manifest under the same name, else a new one.
    async fn oci_image(
        &self,
        boot_from: Image,
        name: String,
        fetched: crate::image::oci::Fetched,
        progress: &Progress,
    ) -> Result<Image, OpError> {
        let same = |i: &Image| {
            i.name == name
                && matches!(&i.manifest.source, Some(crate::image::Source::Oci { digest, .. }) if *digest == fetched.digest)
        };
        if let Some(image) = self
            .images
            .list()
            .map_err(OpError::from_display)?
            .into_iter()
            .find(same)
        {
            return Ok(image);
        }
        let unpack = std::env::current_exe()
            .map_err(|e| OpError::internal(format!("cannot find bangerd itself: {e}")))?;
        let store = crate::image::ImageStore::new(self.images.root());
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            let lock_path = store.root().join(".build.lock");
            let _lock = super::lock_exclusive(&lock_path, super::BUILD_LOCK_TIMEOUT, || {})
                .map_err(OpError::internal)?;
            crate::image::oci::convert(
                &store,
                &boot_from,
                &name,
                &fetched,
                &unpack,
                &mut |m: &str| progress.say(m),
            )
            .map_err(OpError::from_display)
        })
        .await
        .map_err(|e| OpError::internal(format!("image task failed: {e}")))?
    }

    /// A project's image: its setup over its base image, made once per
    /// (base, command, inputs' contents).
    pub(crate) async fn setup_image(
        self: &Arc<Self>,
        p: SetupParams,
        progress: &Progress,
    ) -> Result<Image, OpError> {
        let repo = PathBuf::from(&p.repo);
        let files = {
            let (repo, inputs) = (repo.clone(), p.inputs.clone());
            tokio::task::spawn_blocking(move || read_inputs(&repo, &inputs))
                .await
                .map_err(|e| OpError::internal(format!("input task failed: {e}")))??
        };
        let name = format!("setup-{}", crate::lsp::settings::base_vm_name(&repo));
        let request = DeriveRequest {
            base: p.image,
            name,
            step: Step::Setup {
                command: p.command,
                inputs: input_hashes(&files),
                env: p.env,
            },
            files,
            nat: p.nat || !p.allow.is_empty(),
            allow: p.allow,
            vcpu: p.vcpu,
            memory_mib: p.memory_mib,
            cache: p.cache.then(|| p.repo.clone()),
        };
        self.derive_image(request, progress).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(
        name: Option<&str>,
        from: Option<&str>,
        packages: &[&str],
        suite: Option<&str>,
    ) -> ImageBuildParams {
        ImageBuildParams {
            name: name.map(Into::into),
            from: from.map(Into::into),
            packages: packages.iter().map(|p| p.to_string()).collect(),
            suite: suite.map(Into::into),
        }
    }

    #[test]
    fn build_requests_are_decided_or_refused_with_a_reason() {
        assert_eq!(
            plan_build(params(None, None, &[], None)).unwrap(),
            BuildPlan::Default
        );
        assert_eq!(
            plan_build(params(Some(DEFAULT_IMAGE), None, &[], None)).unwrap(),
            BuildPlan::Default
        );
        assert_eq!(
            plan_build(params(
                Some("py"),
                None,
                &["python3-dev,libssl-dev", " "],
                None
            ))
            .unwrap(),
            BuildPlan::Packages {
                name: "py".into(),
                from: None,
                packages: vec!["python3-dev".into(), "libssl-dev".into()],
            }
        );
        assert_eq!(
            plan_build(params(Some("t"), None, &[], Some("trixie"))).unwrap(),
            BuildPlan::Full {
                name: "t".into(),
                suite: "trixie".into(),
                packages: vec![],
            }
        );
        let refused = [
            (
                params(None, None, &["hello"], None),
                "give the new image a name",
            ),
            (
                params(Some("x"), Some("base"), &[], None),
                "needs --packages",
            ),
            (
                params(Some("x"), Some("base"), &["a1"], Some("trixie")),
                "cannot be combined",
            ),
            (
                params(Some("x"), None, &["-o=evil"], None),
                "not a Debian package name",
            ),
            (params(Some("x y"), None, &["hello"], None), "not usable"),
            (
                params(Some("x"), None, &["hello;rm"], None),
                "not a Debian package name",
            ),
        ];
        for (p, why) in refused {
            let err = plan_build(p.clone()).unwrap_err();
            assert!(err.message.contains(why), "{p:?}: {}", err.message);
        }
    }

    #[test]
    fn setup_inputs_are_files_inside_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("sub")).unwrap();
        std::fs::write(repo.join("requirements.txt"), "pytest\n").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink("../../secret", repo.join("sub/out")).unwrap();
        std::os::unix::fs::symlink("../requirements.txt", repo.join("sub/in")).unwrap();
        let files = read_inputs(&repo, &["requirements.txt".into(), "sub/in".into()]).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].1, b"pytest\n");
        for (bad, why) in [
            ("sub/out", "leads out of the repository"),
            ("sub", "is not a file"),
            ("missing.txt", "setup input missing.txt"),
        ] {
            let err = read_inputs(&repo, &[bad.into()]).unwrap_err();
            assert!(err.message.contains(why), "{bad}: {}", err.message);
        }
        let mut p = SetupParams {
            repo: repo.display().to_string(),
            command: "pip install -r requirements.txt".into(),
            inputs: vec!["../x".into()],
            ..SetupParams::default()
        };
        assert!(check_setup(&p).is_err());
        p.inputs = vec!["requirements.txt".into()];
        check_setup(&p).unwrap();
        p.command = " ".into();
        assert!(check_setup(&p).is_err());
    }
}
