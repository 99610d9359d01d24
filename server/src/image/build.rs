//! Building an image from Debian packages: the kernel and busybox come from
//! `apt-get download` + `dpkg-deb -x` (never installed on the host), the root
//! tree from `mmdebstrap`, the disk from `mkfs.ext4 -d`.
//!
//! This is the only place in banger that runs these programs. The build
//! works as root (`mmdebstrap --mode=root`) and as a normal user with a
//! subordinate id range (`--mode=unshare`, and `mkfs.ext4` run inside the same
//! id mapping so the image gets the right owners).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::tool::{self, Tool, ToolError};

use super::mode::BuildMode;
use super::recipe::{GUEST_FILES, INCLUDE};
use super::store::{
    self, BUILD_DIR_PREFIX, FileEntry, INITRD, KERNEL, MANIFEST_FILE, MANIFEST_FORMAT, Manifest,
    PackageRef, ROOTFS, VMLINUX,
};
use super::{BuildOptions, Image, ImageError, ImageStore, extract_vmlinux, initramfs};

/// The metapackage whose dependency names the current cloud kernel.
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Where busybox comes from (static, so it runs in the initramfs as is).
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Where the customize hook finds the staged files, inside the tree.
const STAGING_IN_TREE: &str = "/tmp/banger-staging";
/// ext4 label of the base disk.
const ROOTFS_LABEL: &str = "banger-root";
const MIB: u64 = 1 << 20;

/// Builds an image and adds it to `store`. Blocking; takes about a minute
/// with a fast mirror.
///
/// Works in a `.build-*` directory under the store root and renames the
/// finished image into place, so on any failure nothing is left in the store.
/// Each phase is announced through `progress` ("downloading kernel package",
/// "building root filesystem (mmdebstrap)", ...).
pub fn build(
    store: &ImageStore,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Image, ImageError> {
    opts.validate()?;
    let mode = BuildMode::detect()?;
    let tools = Tools::new();
    tools.check(mode)?;
    let agent = fs::read(&opts.agent_binary).map_err(|e| {
        ImageError::io(
            format!(
                "cannot read the agent binary {}; build the agent first",
                opts.agent_binary.display()
            ),
            e,
        )
    })?;
    if !agent.starts_with(b"\x7fELF") {
        return Err(ImageError::InvalidOptions(format!(
            "agent binary {} is not an ELF executable; give the static banger-agent build",
            opts.agent_binary.display()
        )));
    }
    for dir in [store.root(), opts.download_cache.as_path()] {
        fs::create_dir_all(dir)
            .map_err(|e| ImageError::io(format!("cannot create {}", dir.display()), e))?;
    }
    let build_dir = tempfile::Builder::new()
        .prefix(BUILD_DIR_PREFIX)
        .tempdir_in(store.root())
        .map_err(|e| {
            ImageError::io(
                format!(
                    "cannot create a build directory in {}",
                    store.root().display()
                ),
                e,
            )
        })?;
    let out = build_dir.path().join("image");
    let probe = build_dir.path().join("apt-probe");
    for dir in [&out, &probe] {
        fs::create_dir(dir)
            .map_err(|e| ImageError::io(format!("cannot create {}", dir.display()), e))?;
    }
    let started = Instant::now();
    let mut phase = |name: &str| {
        tracing::info!(
            phase = name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "image build"
        );
        progress(name);
    };

    // 1. Kernel and busybox packages.
    phase("downloading kernel package");
    let meta = tools.fetch_deb(KERNEL_METAPACKAGE, &opts.download_cache, &probe)?;
    let depends = tools.deb_field(&meta.path, "Depends")?;
    let kernel_spec = kernel_dependency(&depends).ok_or_else(|| ImageError::Package {
        package: format!("{} {}", meta.name, meta.version),
        detail: format!(
            "its Depends ({depends}) names no linux-image package; check the host's apt sources"
        ),
    })?;
    let kernel_deb = tools.fetch_deb(&kernel_spec, &opts.download_cache, &probe)?;
    phase("downloading busybox");
    let busybox_deb = tools.fetch_deb(BUSYBOX_PACKAGE, &opts.download_cache, &probe)?;

    phase("unpacking kernel package");
    let kernel_tree = build_dir.path().join("kernel");
    let busybox_tree = build_dir.path().join("busybox");
    tools.unpack(&kernel_deb.path, &kernel_tree)?;
    tools.unpack(&busybox_deb.path, &busybox_tree)?;
    let (kernel_version, modules_dir) = kernel_release(&kernel_tree, &kernel_deb)?;
    let vmlinuz = kernel_tree
        .join("boot")
        .join(format!("vmlinuz-{kernel_version}"));
    let kernel_hz = fs::read_to_string(
        kernel_tree
            .join("boot")
            .join(format!("config-{kernel_version}")),
    )
    .ok()
    .and_then(|config| config_hz(&config));

    // 2. Initramfs.
    phase("building initramfs");
    let package_label = format!("{} {}", kernel_deb.name, kernel_deb.version);
    let modules = initramfs::find_modules(&modules_dir, &package_label)?;
    let busybox = read_first(&busybox_tree, &["bin/busybox", "usr/bin/busybox"]).map_err(|_| {
        ImageError::Package {
            package: format!("{} {}", busybox_deb.name, busybox_deb.version),
            detail: "has no bin/busybox".into(),
        }
    })?;
    let initrd = initramfs::build_initramfs(&busybox, &modules)?;
    write_file(&out.join(INITRD.1), &initrd)?;
    fs::copy(&vmlinuz, out.join(KERNEL.1)).map_err(|e| {
        ImageError::io(
            format!(
                "cannot copy the kernel {}; is the package complete?",
                vmlinuz.display()
            ),
            e,
        )
    })?;

    // 5 (done early: a kernel we cannot use should fail before the slow part).
    phase("extracting vmlinux");
    let bzimage = fs::read(&vmlinuz)
        .map_err(|e| ImageError::io(format!("cannot read {}", vmlinuz.display()), e))?;
    write_file(&out.join(VMLINUX.1), &extract_vmlinux(&bzimage)?)?;
    drop(bzimage);

    // 3. Root tree.
    phase("building root filesystem (mmdebstrap)");
    let mut work = RootfsWork::new(mode, build_dir.path())?;
    work.stage(&agent)?;
    // The kernel's modules, so the guest can load what its software asks
    // for (a container engine's bridge, veth and netfilter modules).
    work.stage_modules(&modules_dir, &kernel_version)?;
    tools.mmdebstrap(&work, opts)?;

    // 4. Disk image.
    phase("writing ext4 image");
    let rootfs = tools.make_ext4(&work)?;
    work.remove_tree(&tools)?;
    move_file(&rootfs, &out.join(ROOTFS.1))?;
    drop(work);

    // 6. Manifest, permissions, rename into place.
    phase("writing manifest");
    let mut files = std::collections::BTreeMap::new();
    for (role, file_name) in [ROOTFS, KERNEL, VMLINUX, INITRD] {
        let (sha256, size) = store::hash_file(&out.join(file_name))?;
        let path = PathBuf::from(file_name);
        files.insert(role.to_owned(), FileEntry { path, sha256, size });
    }
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: opts.name.clone(),
        id: String::new(),
        created_at,
        suite: opts.suite.clone(),
        kernel_version,
        kernel_package: PackageRef {
            name: kernel_deb.name,
            version: kernel_deb.version,
        },
        busybox_package: PackageRef {
            name: busybox_deb.name,
            version: busybox_deb.version,
        },
        kernel_hz,
        agent_sha256: store::hex(&Sha256::digest(&agent)),
        root_modes: initramfs::ROOT_MODES
            .iter()
            .map(|m| m.to_string())
            .collect(),
        files,
        source: Some(super::Source::Debian {
            recipe: opts.recipe(),
            packages: opts.packages.clone(),
        }),
        run: Default::default(),
        agent_init: false,
    };
    manifest.id = manifest.compute_id();
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| ImageError::Manifest {
        path: out.join(MANIFEST_FILE),
        source,
    })?;
    write_file(&out.join(MANIFEST_FILE), &json)?;
    for file_name in [ROOTFS.1, KERNEL.1, VMLINUX.1, INITRD.1, MANIFEST_FILE] {
        store::set_mode(&out.join(file_name), 0o444)?;
    }
    let dir = store.root().join(&manifest.id);
    fs::rename(&out, &dir).map_err(|e| {
        ImageError::io(
            format!("cannot move the finished image into {}", dir.display()),
            e,
        )
    })?;
    store::set_mode(&dir, 0o555)?;
    drop(build_dir);
    tracing::info!(id = %manifest.id, secs = started.elapsed().as_secs(), "image built");
    Ok(Image {
        id: manifest.id.clone(),
        name: manifest.name.clone(),
        dir,
        manifest,
    })
}

/// Makes an ext4 base disk at `out` from a root tree that `fill` writes:
/// `fill` gets the tree's path (not yet created) and runs `program ARGS`
/// through the function it is given, as the tree's root (root, or root of
/// the build's user namespace, so owners are kept). The tree is removed
/// afterwards, whatever happens. For images whose tree comes from
/// elsewhere than mmdebstrap (OCI layers).
pub(super) fn rootfs_from(
    build_dir: &Path,
    out: &Path,
    fill: impl FnOnce(&Path, &dyn Fn(&Path) -> Command) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let mode = BuildMode::detect()?;
    let tools = Tools::new();
    let mut needed = vec![Tool::Mkfs, Tool::Du, Tool::Find];
    if let BuildMode::Unshare { .. } = mode {
        needed.extend([Tool::Unshare, Tool::Newuidmap, Tool::Newgidmap]);
    }
    for tool in needed {
        if tool.find().is_none() {
            return Err(ToolError::NotFound {
                program: tool.name().to_owned(),
                hint: tool.install_hint(),
            }
            .into());
        }
    }
    let mut work = RootfsWork::new(mode, build_dir)?;
    if let BuildMode::Unshare { .. } = mode {
        // The namespace's root (a subordinate id) makes the tree in it.
        store::set_mode(work.dir(), 0o777)?;
    }
    let tree = work.dir().join("tree");
    let as_root = |program: &Path| mode.as_root(program.as_os_str());
    fill(&tree, &as_root)?;
    let rootfs = tools.make_ext4(&work)?;
    work.remove_tree(&tools)?;
    move_file(&rootfs, out)
}

/// The versioned kernel package named by the metapackage's Depends, as an
/// apt spec (`linux-image-6.1.0-56-cloud-amd64=6.1.192-2`).
fn kernel_dependency(depends: &str) -> Option<String> {
    depends
        .split(',')
        .flat_map(|alternatives| alternatives.split('|'))
        .map(str::trim)
        .find(|dep| dep.starts_with("linux-image-"))
        .map(|dep| match dep.split_once('(') {
            Some((name, version)) => {
                let version = version.trim_end_matches(')').trim();
                match version.strip_prefix('=') {
                    Some(exact) => format!("{}={}", name.trim(), exact.trim()),
                    None => name.trim().to_owned(),
                }
            }
            None => dep.to_owned(),
        })
}

/// The kernel release (the single `lib/modules/<release>` directory of the
/// unpacked package) and that directory.
fn kernel_release(tree: &Path, deb: &Deb) -> Result<(String, PathBuf), ImageError> {
    let mut found = Vec::new();
    for base in ["lib/modules", "usr/lib/modules"] {
        let Ok(entries) = fs::read_dir(tree.join(base)) else {
            continue;
        };
        for entry in entries.flatten() {
            if let (true, Some(name)) = (entry.path().is_dir(), entry.file_name().to_str()) {
                found.push((name.to_owned(), entry.path()));
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(ImageError::Package {
            package: format!("{} {}", deb.name, deb.version),
            detail: format!("expected one /lib/modules/<version> directory, found {n}"),
        }),
    }
}

/// `CONFIG_HZ` of a kernel config, when it is a plausible tick rate.
fn config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|line| line.strip_prefix("CONFIG_HZ="))
        .and_then(|hz| hz.trim().parse().ok())
        .filter(|hz| (24..=10_000).contains(hz))
}

/// Disk size for a tree of `apparent` bytes: +25% and 64 MiB of slack,
/// rounded up to whole MiB.
fn disk_size_bytes(apparent: u64) -> u64 {
    let wanted = apparent + apparent / 4 + 64 * MIB;
    wanted.div_ceil(MIB) * MIB
}

/// Inodes for a tree of `used` inodes: +25% and 4096 spare.
fn inode_count(used: u64) -> u64 {
    used + used / 4 + 4096
}

/// A downloaded `.deb`.
#[derive(Debug)]
struct Deb {
    path: PathBuf,
    name: String,
    version: String,
}

/// Where `apt-get download` will put a package, from `--print-uris`.
#[derive(Debug, PartialEq, Eq)]
struct DebLocation {
    file_name: String,
    size: u64,
    sha256: Option<String>,
}

/// Parses the first line of `apt-get download --print-uris` output:
/// `'URL' FILE SIZE SHA256:HEX`.
fn parse_print_uris(output: &str) -> Option<DebLocation> {
    let line = output.lines().find(|l| l.starts_with('\''))?;
    let mut fields = line.rsplitn(4, ' ');
    let hash = fields.next()?;
    let size = fields.next()?.parse().ok()?;
    let file_name = fields.next()?.to_owned();
    if file_name.contains('/') || !file_name.ends_with(".deb") {
        return None;
    }
    let sha256 = hash.strip_prefix("SHA256:").map(|h| h.to_ascii_lowercase());
    Some(DebLocation {
        file_name,
        size,
        sha256,
    })
}

/// Runs the build's helper programs with a predictable environment.
struct Tools;

impl Tools {
    fn new() -> Tools {
        Tools
    }

    /// Fails early, before any download, if a program is missing.
    fn check(&self, mode: BuildMode) -> Result<(), ImageError> {
        let mut needed = vec![
            Tool::AptGet,
            Tool::DpkgDeb,
            Tool::Mmdebstrap,
            Tool::Mkfs,
            Tool::Du,
            Tool::Find,
        ];
        if let BuildMode::Unshare { .. } = mode {
            needed.extend([Tool::Unshare, Tool::Newuidmap, Tool::Newgidmap]);
        }
        for tool in needed {
            if tool.find().is_none() {
                return Err(ToolError::NotFound {
                    program: tool.name().to_owned(),
                    hint: tool.install_hint(),
                }
                .into());
            }
        }
        Ok(())
    }

    fn command(&self, program: Tool) -> Command {
        let mut command = tool::command(program);
        command.env("LC_ALL", "C");
        command
    }

    /// `program` run as root of the tree ([`BuildMode::as_root`]).
    fn as_tree_root(&self, mode: BuildMode, program: Tool) -> Command {
        match mode {
            BuildMode::Root => self.command(program),
            BuildMode::Unshare { .. } => mode.as_root(program.name().as_ref()),
        }
    }

    /// Downloads `spec` (`name` or `name=version`) into `cache` unless a
    /// file with the right hash is already there.
    fn fetch_deb(&self, spec: &str, cache: &Path, probe: &Path) -> Result<Deb, ImageError> {
        // Run in an empty directory: apt prints nothing for files already
        // present in the current directory.
        let listing = run(self
            .command(Tool::AptGet)
            .args(["download", "--print-uris", spec])
            .current_dir(probe))?;
        let text = String::from_utf8_lossy(&listing.stdout);
        let location = parse_print_uris(&text).ok_or_else(|| ImageError::UnexpectedOutput {
            command: format!("apt-get download --print-uris {spec}"),
            detail: format!(
                "no package location in {:?}; run `apt-get update` and try again",
                text.trim()
            ),
        })?;
        let path = cache.join(&location.file_name);
        if !deb_matches(&path, &location)? {
            run(self
                .command(Tool::AptGet)
                .args(["download", spec])
                .current_dir(cache))?;
            if !deb_matches(&path, &location)? {
                return Err(ImageError::Package {
                    package: spec.to_owned(),
                    detail: format!(
                        "{} does not match the hash apt announced; delete it and try again",
                        path.display()
                    ),
                });
            }
        } else {
            tracing::debug!(deb = %path.display(), "reusing downloaded package");
        }
        let name = self.deb_field(&path, "Package")?;
        let version = self.deb_field(&path, "Version")?;
        Ok(Deb {
            path,
            name,
            version,
        })
    }

    fn deb_field(&self, deb: &Path, field: &str) -> Result<String, ImageError> {
        let output = run(self.command(Tool::DpkgDeb).arg("-f").arg(deb).arg(field))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn unpack(&self, deb: &Path, into: &Path) -> Result<(), ImageError> {
        run(self.command(Tool::DpkgDeb).arg("-x").arg(deb).arg(into))?;
        Ok(())
    }

    fn mmdebstrap(&self, work: &RootfsWork, opts: &BuildOptions) -> Result<(), ImageError> {
        let mut command = self.command(Tool::Mmdebstrap);
        command
            .current_dir(work.dir())
            .arg(work.mode.mmdebstrap_mode())
            .arg("--variant=minbase")
            .arg(format!("--include={INCLUDE}"))
            .args(
                (!opts.packages.is_empty()).then(|| format!("--include={}", opts.packages.join(","))),
            )
            .arg(format!("--customize-hook=mkdir -p \"$1{STAGING_IN_TREE}\""))
            // Paths outside the chroot are relative to the current directory.
            .arg(format!("--customize-hook=sync-in staging {STAGING_IN_TREE}"))
            .arg(format!(
                "--customize-hook=chroot \"$1\" /bin/sh {STAGING_IN_TREE}/customize.sh {STAGING_IN_TREE}"
            ))
            .arg(&opts.suite)
            .arg("tree")
            .args(&opts.mirrors);
        run(&mut command)?;
        Ok(())
    }

    /// Writes `rootfs.ext4` from the tree and returns its path.
    fn make_ext4(&self, work: &RootfsWork) -> Result<PathBuf, ImageError> {
        let apparent = self.du(work, &["--apparent-size", "--block-size=1"])?;
        let inodes = self.du(work, &["--inodes"])?;
        let size = disk_size_bytes(apparent);
        let image = work.dir().join("rootfs.ext4");
        let file = fs::File::create(&image)
            .map_err(|e| ImageError::io(format!("cannot create {}", image.display()), e))?;
        file.set_len(size)
            .map_err(|e| ImageError::io(format!("cannot size {}", image.display()), e))?;
        drop(file);
        if let BuildMode::Unshare { .. } = work.mode {
            // The mapped root is "other" to this file's owner.
            store::set_mode(&image, 0o666)?;
        }
        tracing::info!(apparent, inodes, size, "writing ext4 image");
        run(self
            .as_tree_root(work.mode, Tool::Mkfs)
            .current_dir(work.dir())
            .args(["-q", "-F", "-O", "^has_journal", "-m", "0", "-b", "4096"])
            .arg("-N")
            .arg(inode_count(inodes).to_string())
            .args(["-L", ROOTFS_LABEL, "-d", "tree", "rootfs.ext4"])
            .arg(format!("{}k", size / 1024)))?;
        store::set_mode(&image, 0o644)?;
        Ok(image)
    }

    fn du(&self, work: &RootfsWork, flags: &[&str]) -> Result<u64, ImageError> {
        let output = run(self
            .as_tree_root(work.mode, Tool::Du)
            .current_dir(work.dir())
            .arg("-s")
            .args(flags)
            .arg("tree"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ImageError::UnexpectedOutput {
                command: format!("du -s {} tree", flags.join(" ")),
                detail: format!("no number in {:?}", text.trim()),
            })
    }
}

fn deb_matches(path: &Path, location: &DebLocation) -> Result<bool, ImageError> {
    match fs::metadata(path) {
        Ok(meta) if meta.len() == location.size => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ImageError::io(format!("cannot stat {}", path.display()), e)),
    }
    match &location.sha256 {
        Some(expected) => Ok(&store::hash_file(path)?.0 == expected),
        None => Ok(true),
    }
}

/// Where the root tree is made and turned into an ext4 file. As root this is
/// inside the build directory; as a normal user it is a world-traversable
/// directory under `$TMPDIR`, because the mapped root cannot enter a private
/// home directory. Removing it needs the mapping too, hence the `Drop`.
struct RootfsWork {
    mode: BuildMode,
    dir: Option<tempfile::TempDir>,
    tree_removed: bool,
}

impl RootfsWork {
    fn new(mode: BuildMode, build_dir: &Path) -> Result<RootfsWork, ImageError> {
        let base = match mode {
            BuildMode::Root => build_dir.to_owned(),
            BuildMode::Unshare { .. } => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix("banger-rootfs-")
            .tempdir_in(&base)
            .map_err(|e| {
                ImageError::io(
                    format!("cannot create a work directory in {}", base.display()),
                    e,
                )
            })?;
        store::set_mode(dir.path(), 0o755)?;
        Ok(RootfsWork {
            mode,
            dir: Some(dir),
            tree_removed: false,
        })
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("work dir lives until drop").path()
    }

    /// Writes the files the customize hook installs into `staging/`.
    fn stage(&self, agent: &[u8]) -> Result<(), ImageError> {
        let staging = self.dir().join("staging");
        fs::create_dir(&staging)
            .map_err(|e| ImageError::io(format!("cannot create {}", staging.display()), e))?;
        store::set_mode(&staging, 0o755)?;
        write_file(&staging.join("banger-agent"), agent)?;
        for (name, text) in GUEST_FILES {
            write_file(&staging.join(name), text.as_bytes())?;
        }
        Ok(())
    }

    /// Copies the kernel's `lib/modules/VERSION` into `staging/modules/`
    /// (files and directories; the package's `build`/`source` links are
    /// left out); `customize.sh` installs them and runs depmod.
    fn stage_modules(&self, modules: &Path, version: &str) -> Result<(), ImageError> {
        fn copy_dir(from: &Path, to: &Path) -> Result<(), ImageError> {
            fs::create_dir_all(to)
                .map_err(|e| ImageError::io(format!("cannot create {}", to.display()), e))?;
            store::set_mode(to, 0o755)?;
            let entries = fs::read_dir(from)
                .map_err(|e| ImageError::io(format!("cannot list {}", from.display()), e))?;
            for entry in entries {
                let entry = entry
                    .map_err(|e| ImageError::io(format!("cannot list {}", from.display()), e))?;
                let kind = entry.file_type().map_err(|e| {
                    ImageError::io(format!("cannot stat {}", entry.path().display()), e)
                })?;
                let target = to.join(entry.file_name());
                if kind.is_dir() {
                    copy_dir(&entry.path(), &target)?;
                } else if kind.is_file() {
                    fs::copy(entry.path(), &target).map_err(|e| {
                        ImageError::io(format!("cannot copy {}", entry.path().display()), e)
                    })?;
                    store::set_mode(&target, 0o644)?;
                }
            }
            Ok(())
        }
        copy_dir(modules, &self.dir().join("staging/modules").join(version))
    }

    /// Empties and removes `tree/` without crossing into other file
    /// systems (in case a chroot mount was left behind).
    fn remove_tree(&mut self, tools: &Tools) -> Result<(), ImageError> {
        let tree = self.dir().join("tree");
        if !tree.exists() {
            self.tree_removed = true;
            return Ok(());
        }
        run(tools
            .as_tree_root(self.mode, Tool::Find)
            .current_dir(self.dir())
            .args(["tree", "-xdev", "-mindepth", "1", "-delete"]))?;
        fs::remove_dir(&tree)
            .map_err(|e| ImageError::io(format!("cannot remove {}", tree.display()), e))?;
        self.tree_removed = true;
        Ok(())
    }
}

impl Drop for RootfsWork {
    fn drop(&mut self) {
        if self.tree_removed {
            return;
        }
        if let Err(err) = self.remove_tree(&Tools::new()) {
            // Removing the rest blindly could walk into a leftover mount.
            let dir = self.dir.take().expect("work dir present").keep();
            tracing::warn!(dir = %dir.display(), error = %err, "left a build tree behind; unmount anything under it and remove it");
        }
    }
}

fn run(command: &mut Command) -> Result<Output, ImageError> {
    let shown = show(command);
    tracing::debug!(command = %shown, "running");
    let output = tool::output(command)?;
    if output.status.success() {
        return Ok(output);
    }
    let text = if output.stderr.iter().all(u8::is_ascii_whitespace) {
        &output.stdout
    } else {
        &output.stderr
    };
    Err(ImageError::Command {
        command: shown,
        status: output.status.to_string(),
        output: tail(&String::from_utf8_lossy(text), 25),
    })
}

fn show(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    fs::write(path, bytes)
        .map_err(|e| ImageError::io(format!("cannot write {}", path.display()), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(|e| ImageError::io(format!("cannot chmod {}", path.display()), e))
}

fn read_first(dir: &Path, candidates: &[&str]) -> std::io::Result<Vec<u8>> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no candidates");
    for candidate in candidates {
        match fs::read(dir.join(candidate)) {
            Ok(bytes) => return Ok(bytes),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Renames, or copies across file systems (the unshare work dir is in /tmp).
fn move_file(from: &Path, to: &Path) -> Result<(), ImageError> {
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(|e| {
        ImageError::io(
            format!("cannot copy {} to {}", from.display(), to.display()),
            e,
        )
    })?;
    fs::remove_file(from)
        .map_err(|e| ImageError::io(format!("cannot remove {}", from.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dependency_is_read_from_the_metapackage() {
        assert_eq!(
            kernel_dependency("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64=6.1.192-2")
        );
        assert_eq!(
            kernel_dependency(
                "initramfs-tools | linux-initramfs-tool, linux-image-6.12.9-cloud-amd64 (>= 6.12)"
            )
            .as_deref(),
            Some("linux-image-6.12.9-cloud-amd64")
        );
        assert_eq!(kernel_dependency("busybox"), None);
    }

    #[test]
    fn print_uris_output_is_parsed() {
        let out = "'http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_amd64.deb' busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb 928188 SHA256:3D3FDBE9\n";
        assert_eq!(
            parse_print_uris(out),
            Some(DebLocation {
                file_name: "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb".into(),
                size: 928188,
                sha256: Some("3d3fdbe9".into()),
            })
        );
        assert_eq!(parse_print_uris(""), None);
        assert_eq!(parse_print_uris("'u' ../evil.deb 1 SHA256:00"), None);
    }

    #[test]
    fn the_tick_rate_is_read_from_the_kernel_config() {
        let config =
            "CONFIG_HZ_250=y\n# CONFIG_HZ_1000 is not set\nCONFIG_HZ=250\nCONFIG_HZ_PERIODIC=n\n";
        assert_eq!(config_hz(config), Some(250));
        assert_eq!(config_hz("CONFIG_HZ_250=y\n"), None);
        assert_eq!(config_hz("CONFIG_HZ=0\n"), None);
        assert_eq!(config_hz("CONFIG_HZ=lots\n"), None);
    }

    #[test]
    fn disk_size_has_slack_and_whole_mebibytes() {
        assert_eq!(disk_size_bytes(0), 64 * MIB);
        let size = disk_size_bytes(279_000_000);
        assert_eq!(size % MIB, 0);
        assert!(size >= 279_000_000 + 279_000_000 / 4 + 64 * MIB);
        assert!(size < 279_000_000 + 279_000_000 / 4 + 65 * MIB);
        assert_eq!(inode_count(12_800), 12_800 + 3_200 + 4096);
    }

    /// Every shell script banger runs in a guest parses (`sh -n`): the
    /// image's customize script and the workspace scripts run through the
    /// agent.
    #[test]
    fn guest_scripts_parse() {
        let mut scripts: Vec<(&str, &str)> = GUEST_FILES
            .iter()
            .filter(|(name, _)| name.ends_with(".sh"))
            .copied()
            .collect();
        assert!(!scripts.is_empty(), "no .sh among GUEST_FILES");
        scripts.extend([
            ("export", crate::workspace::export::GUEST_SCRIPT),
            ("head", crate::workspace::sync::HEAD_SCRIPT),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        for (name, script) in scripts {
            let path = tmp.path().join(name);
            fs::write(&path, script).unwrap();
            let out = tool::for_test(Tool::Sh)
                .arg("-n")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name} does not parse: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The check itself can fail.
        let bad = tmp.path().join("bad");
        fs::write(&bad, "if then fi (").unwrap();
        let out = tool::for_test(Tool::Sh)
            .arg("-n")
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!out.status.success());
    }
}
