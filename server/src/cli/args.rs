//! The whole command line as clap definitions, in one place: every noun's
//! verbs and flags. The modules beside it (`vm.rs`, `workspace.rs`, ...)
//! run them.

use clap::{Args, Parser, Subcommand};

/// One-command Linux development sandboxes in microVMs.
#[derive(Debug, Parser)]
#[command(name = "banger", version, about, propagate_version = true)]
pub struct Cli {
    /// Print progress as plain lines.
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create, run and manage VMs.
    #[command(subcommand)]
    Vm(VmCommand),
    /// List running VMs (same as `banger vm list`).
    Ps(ListArgs),
    /// Build and manage guest images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Control the per-user daemon.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Check this host: accelerator, VMMs, image tools, state, daemon.
    Doctor,
    /// The guest kernel catalog.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Install helper programs for this user.
    #[command(subcommand)]
    System(SystemCommand),
    /// The editor backend: a Language Server on stdin/stdout (started by
    /// the VS Code extension and the Neovim plugin; see docs/lsp.md).
    Lsp {
        /// Accepted for clients that pass it; stdio is the only transport.
        #[arg(long, hide = true)]
        stdio: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KernelCommand {
    /// Catalog kernels and the images' own kernels.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy a kernel file (ELF vmlinux or bzImage) into the catalog.
    Import {
        /// The kernel file.
        path: String,
        /// Catalog name; derived from its checksum when omitted.
        #[arg(long)]
        name: Option<String>,
        /// It is built with PVM guest support (runs with KVM on kvm_pvm hosts).
        #[arg(long)]
        pvm: bool,
    },
    /// Download a kernel, check it against a SHA-256 and add it.
    Pull {
        /// http(s) URL of the kernel file.
        url: String,
        /// Its expected SHA-256 (hex).
        #[arg(long)]
        sha256: String,
        /// Catalog name.
        #[arg(long)]
        name: Option<String>,
        /// It is built with PVM guest support.
        #[arg(long)]
        pvm: bool,
    },
    /// Remove a catalog kernel no VM uses.
    Delete {
        /// Name or id.
        kernel: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SystemCommand {
    /// Download the official Firecracker release for this architecture,
    /// check its published SHA-256 and install firecracker and jailer where
    /// banger looks for them.
    #[command(disable_version_flag = true)]
    InstallFirecracker {
        /// Release to install.
        #[arg(long, default_value = crate::install::DEFAULT_FIRECRACKER_VERSION)]
        version: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SpecArgs {
    /// VM name (lowercase letters, digits, '-'); generated when omitted.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Virtual CPUs.
    #[arg(long)]
    pub(crate) vcpu: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    pub(crate) memory: Option<u64>,
    /// Size of the work disk mounted at /root, like 8G.
    #[arg(long, value_name = "SIZE")]
    pub(crate) disk_size: Option<String>,
    /// Boot a kernel from the catalog instead of the image's (see `banger
    /// kernel list`).
    #[arg(long, value_name = "KERNEL")]
    pub(crate) kernel: Option<String>,
    /// VMM: auto (Firecracker where it can run the guest, else QEMU),
    /// firecracker or qemu. Default: `vmm` in config.toml, else auto.
    #[arg(long, value_name = "VMM")]
    pub(crate) vmm: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum VmCommand {
    /// Boot a fresh VM, run a command in it and exit with its exit code.
    /// With PATH, the git repository there is shipped to /root/repo first
    /// and the command runs in it.
    Run {
        /// A git repository to ship into the guest.
        path: Option<String>,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        ws: WorkspaceArgs,
        /// Print which files would travel, and create nothing.
        #[arg(long, requires = "path")]
        dry_run: bool,
        /// Delete the VM when the command (or the shell) ends.
        #[arg(long)]
        rm: bool,
        /// Create and prepare the VM, then return (reconnect with
        /// `banger vm shell` or `banger vm exec`).
        #[arg(short, long, conflicts_with = "rm")]
        detach: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Create a VM and start it.
    Create {
        #[command(flatten)]
        spec: SpecArgs,
        /// Only create it; start it later with `banger vm start`.
        #[arg(long)]
        no_start: bool,
    },
    /// Start stopped VMs.
    Start {
        /// VM names or ids.
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Flush and stop VMs; their disks are kept.
    Stop {
        /// VM names or ids.
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Delete VMs and everything of them.
    Delete {
        /// VM names or ids.
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// List VMs (running ones unless --all).
    List(ListArgs),
    /// Show one VM as JSON.
    Show {
        /// VM name or id.
        vm: String,
    },
    /// Ship repositories into running VMs.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// An interactive login shell in a running VM (in its workspace, if any).
    Shell {
        /// VM name or id.
        vm: String,
    },
    /// Run a command in a running VM.
    Exec {
        /// VM name or id.
        vm: String,
        /// Working directory in the guest (default: the VM's workspace, else
        /// /root).
        #[arg(long)]
        guest_path: Option<String>,
        /// Re-ship the workspace first if the host repository's HEAD moved.
        #[arg(long)]
        auto_prepare: bool,
        /// Run on a pseudo-terminal (interactive programs).
        #[arg(short, long)]
        tty: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct WorkspaceArgs {
    /// Also ship untracked files that no ignore rule matches.
    #[arg(long)]
    pub(crate) include_untracked: bool,
    /// Create and check out this new branch in the guest.
    #[arg(long, value_name = "NAME")]
    pub(crate) branch: Option<String>,
    /// Start the new branch here (a host ref; default HEAD).
    #[arg(long, value_name = "REF", requires = "branch")]
    pub(crate) from: Option<String>,
    /// stream: through the agent into the running guest (default);
    /// full_copy: written into the VM's disk image before boot.
    #[arg(long, value_name = "MODE")]
    pub(crate) mode: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkspaceCommand {
    /// Ship a git repository's files (tracked only, by default) into a
    /// running VM at /root/repo, with the host's HEAD, branch and index.
    Prepare {
        /// VM name or id.
        vm: String,
        /// The repository (default: the current directory).
        path: Option<String>,
        #[command(flatten)]
        ws: WorkspaceArgs,
    },
    /// The guest workspace's changes as a binary git patch (guest-created
    /// files included), checked as untrusted input before anything is
    /// written.
    Export {
        /// VM name or id.
        vm: String,
        /// Write the patch here instead of stdout.
        #[arg(long, short)]
        output: Option<String>,
        /// Diff against this commit (include commits made in the guest);
        /// default: the guest's HEAD.
        #[arg(long, value_name = "SHA")]
        base_commit: Option<String>,
        /// Apply the guest's changes to the host repository the workspace
        /// came from: what the guest changed since the last transfer or
        /// sync, validated like the patch (with --base-commit: the patch).
        #[arg(long)]
        apply: bool,
        /// With --apply: overwrite host files changed since the last sync
        /// (with --base-commit: apply over uncommitted host changes).
        #[arg(long, requires = "apply")]
        force: bool,
    },
    /// Send the host's changes since the last transfer or sync (tracked
    /// files that differ, deletions, a moved HEAD). Files the guest changed
    /// meanwhile are left alone and listed as conflicts.
    Sync {
        /// VM name or id.
        vm: String,
        /// Only these paths (relative to the repository root); default:
        /// everything.
        paths: Vec<String>,
        /// Overwrite the guest's copy even where the guest changed it.
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the guest changed since the last transfer or sync.
    Changes {
        /// VM name or id.
        vm: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Include stopped VMs.
    #[arg(short, long)]
    pub(crate) all: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Build the default image (debian-bookworm) from Debian's packages.
    Build {
        /// Image name.
        name: Option<String>,
    },
    /// List built images.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one image's manifest as JSON.
    Show {
        /// Image name or id.
        image: String,
    },
    /// Delete an image no VM uses.
    Delete {
        /// Image name or id.
        image: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DaemonCommand {
    /// Start bangerd if it is not running.
    Start,
    /// Stop bangerd; running VMs keep running.
    Stop,
    /// Show whether bangerd runs, and how.
    Status,
}
