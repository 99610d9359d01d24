//! Guest images: building them from Debian packages, storing them, and the
//! boot pieces (initramfs, vmlinux) every VMM driver needs.
//!
//! This module owns `<cache>/images/`: one immutable directory per image,
//! named by the image id, holding `rootfs.ext4` (the read-only base disk),
//! `vmlinuz` (bzImage for QEMU), `vmlinux` (ELF for Firecracker),
//! `initrd.img` (uncompressed newc initramfs) and `manifest.json`.
//!
//! It must not start VMs, touch per-VM disks or install anything on the
//! host: the build unpacks `.deb` files with `dpkg-deb -x` and builds the root
//! tree with `mmdebstrap`, nothing else runs as root on the host's own files.
//!
//! **Invariant:** a directory in the store is either complete (manifest
//! written last, all files 0444) or absent; builds happen in a `.build-*`
//! directory that is renamed into place, and deletes rename to `.delete-*`
//! before removing anything.
//!
//! # Boot contract (the initramfs `/init`)
//!
//! The kernel command line must carry `banger.root=overlay` (the only mode so
//! far). The init then expects virtio-blk disks identified by serial:
//!
//! | serial    | what                                   | mounted              |
//! |-----------|----------------------------------------|----------------------|
//! | `rootfs`  | this image's `rootfs.ext4`, read-only  | overlay lower        |
//! | `overlay` | per-VM ext4, read-write                | overlay upper + work |
//! | `work`    | per-VM ext4, read-write                | `/root`              |
//! | `layerN`  | a derived image's layers, read-only    | between lower and upper (`banger.layers=N`) |
//! | `cache`   | the project's dependency cache         | `/var/cache/banger`, bind-mounted over package caches (`banger.cache=1`) |
//!
//! The overlay is mounted with `redirect_dir=on` (lower directories can be
//! renamed). `banger.init=agent` makes busybox init PID 1, running the
//! agent, for images without an init of their own (OCI images).
//!
//! `/init` is the host's agent binary (`banger_agent::init`), carried by
//! the initramfs segment every boot appends ([`host_segment`]): it loads
//! the image's modules, mounts the disks, installs itself as
//! `/usr/sbin/banger-agent` and switches to the image's init. Any failure
//! prints `banger-init: <what failed>` on the console and powers the guest
//! off.

mod build;
pub mod cpio;
mod derive;
mod initramfs;
mod mode;
pub mod oci;
mod recipe;
mod store;
mod vmlinux;

use std::path::PathBuf;

pub use build::build;
pub use derive::{add_derived, shrink_layer, validate_name};
pub use initramfs::{AGENT_OVERRIDE_PATH, HOST_CA_PATH, host_segment};
pub use recipe::{BuildOptions, check_packages, default_mirrors, default_recipe, valid_package};
pub(crate) use store::hex;
/// A stand-in image (files of a few bytes, a valid manifest), for tests.
#[cfg(test)]
pub(crate) use store::tests::fake_image;
pub use store::{FileEntry, Image, ImageStore, Manifest, PackageRef, Source, Step};
pub use vmlinux::{boots_as_pvh, extract_vmlinux};

/// Name of the image the daemon builds and uses when none is given.
pub const DEFAULT_IMAGE: &str = "debian-bookworm";

/// Everything that can go wrong while building, reading or deleting images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file-system operation failed; `what` names the operation and path.
    #[error("{what}")]
    Io {
        /// What was being done, e.g. `cannot read /x/manifest.json`.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper program is missing or could not be started.
    #[error(transparent)]
    Tool(#[from] crate::tool::ToolError),
    /// A helper program ran and failed.
    #[error("`{command}` failed ({status}); its output ends with:\n{output}")]
    Command {
        /// The command line, shortened for display.
        command: String,
        /// How it ended, e.g. `exit status: 1`.
        status: String,
        /// The last lines it wrote to stderr (and stdout).
        output: String,
    },
    /// A helper program's output was not what the build expects.
    #[error("unexpected output from `{command}`: {detail}")]
    UnexpectedOutput {
        /// The command.
        command: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A `.deb` package lacks something the image needs.
    #[error("package {package}: {detail}")]
    Package {
        /// Package name (and version when known).
        package: String,
        /// What is missing or wrong, and what to do.
        detail: String,
    },
    /// The kernel image cannot be turned into a `vmlinux`.
    #[error("cannot extract vmlinux from the kernel image: {0}")]
    Kernel(String),
    /// LZ4 decompression of the kernel payload failed.
    #[error(
        "cannot extract vmlinux: LZ4 block at payload offset {offset} is corrupt; re-download the kernel package"
    )]
    KernelLz4 {
        /// Offset of the bad block inside the payload.
        offset: usize,
        /// The decoder's error.
        #[source]
        source: lz4_flex::block::DecompressError,
    },
    /// This user can neither build as root nor in a user namespace.
    #[error("{0}")]
    Privileges(String),
    /// A manifest could not be parsed or written.
    #[error("bad image manifest {}; delete the image and build it again", path.display())]
    Manifest {
        /// Path of the manifest.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// No image has this name or id.
    #[error(
        "no image named {0:?} or with that id; list the images to see what exists, or build it"
    )]
    NotFound(String),
    /// An id prefix matches more than one image.
    #[error("id prefix {prefix:?} matches {count} images; give more characters of the id")]
    AmbiguousId {
        /// The prefix that was given.
        prefix: String,
        /// How many images it matches.
        count: usize,
    },
    /// The build options are unusable.
    #[error("{0}")]
    InvalidOptions(String),
    /// An image on disk does not match its manifest.
    #[error("{0}")]
    Corrupt(String),
}

impl ImageError {
    /// Shorthand for [`ImageError::Io`].
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            what: what.into(),
            source,
        }
    }
}
