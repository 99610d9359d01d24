//! Wire types of images: what `image build` and a project's setup ask
//! for, and an image as clients see it.

use serde::{Deserialize, Serialize};

/// An image as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageView {
    /// Content id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Directory holding it.
    pub dir: String,
    /// Guest kernel version.
    pub kernel_version: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Total bytes of its files.
    pub size_bytes: u64,
    /// What made it: `debian` (packages, mmdebstrap) or `derived` (a
    /// parent image plus a layer made in a guest).
    #[serde(default)]
    pub kind: String,
    /// The image it was made from, for a derived image (`NAME (ID)`).
    #[serde(default)]
    pub parent: Option<String>,
    /// The full manifest.
    pub manifest: serde_json::Value,
}

/// `image build`: a full build from Debian packages, or (with `from`, or
/// packages and no suite) a derived image that adds packages to a base.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageBuildParams {
    /// The new image's name; the default image when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The image to add packages to (name or id).
    #[serde(default)]
    pub from: Option<String>,
    /// Debian packages to add.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Debian suite of a full build (`bookworm`, `trixie`).
    #[serde(default)]
    pub suite: Option<String>,
}

/// A project's setup: `setup` run in a guest booted from `image`, with
/// `inputs` (files of the repository at `repo`) in its workspace; the
/// result is the project's image, made once per (image, command, inputs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetupParams {
    /// The repository (host path).
    pub repo: String,
    /// The shell command.
    pub command: String,
    /// Paths in the repository the setup reads.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The image to start from (name or id); the default when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// Outbound network while the setup runs.
    #[serde(default)]
    pub nat: bool,
    /// Egress rules while it runs.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Virtual CPUs of the setup's VM.
    #[serde(default)]
    pub vcpu: Option<u32>,
    /// Memory of the setup's VM, MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Variables (`KEY=VALUE`) the project's image gives every command.
    #[serde(default)]
    pub env: Vec<String>,
    /// Mount the project's dependency cache while the setup runs.
    #[serde(default)]
    pub cache: bool,
}

/// `image import`: an OCI image layout or `docker save` archive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageImportParams {
    /// The archive (host path).
    pub file: String,
    /// The banger image's name; from the archive's tag, else its file name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `image pull`: an OCI image from a registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImagePullParams {
    /// `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]` (Docker Hub when no registry).
    pub reference: String,
    /// The banger image's name; from the reference when absent.
    #[serde(default)]
    pub name: Option<String>,
}
