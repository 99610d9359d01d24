//! The whole command line as clap definitions, in one place: every noun's
//! verbs and flags. The modules beside it (`vm.rs`, `workspace.rs`, ...)
//! run them.

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCandidates;

use crate::spec;

/// One-command Linux development sandboxes in microVMs.
#[derive(Debug, Parser)]
#[command(name = "banger", version, about, propagate_version = true)]
pub struct Cli {
    /// Print progress as plain lines.
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
    /// Print results as JSON; errors too, as {"error": {"code", "message"}}.
    #[arg(long, global = true)]
    pub(crate) json: bool,
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
    /// Projects' dependency caches (pip, npm, cargo, go, apt downloads kept
    /// across `vm run PATH` runs).
    #[command(subcommand)]
    Cache(CacheCommand),
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
    /// The effective settings for new VMs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (VM names are completed from the
    /// daemon): `banger completions bash > ~/.local/share/bash-completion/completions/banger`.
    Completions {
        /// bash, zsh or fish.
        shell: CompletionShell,
    },
    /// Make `ssh NAME.vm` (and scp, rsync, VS Code Remote-SSH) reach VM
    /// NAME from any terminal: writes banger's ssh config and, with
    /// --install, adds one Include line to ~/.ssh/config.
    SshConfig {
        /// Add the Include line to ~/.ssh/config (kept content, idempotent).
        #[arg(long, conflicts_with = "uninstall")]
        install: bool,
        /// Remove banger's lines from ~/.ssh/config.
        #[arg(long)]
        uninstall: bool,
    },
    /// ssh's ProxyCommand for NAME.vm: the guest's `sshd -i`, through the
    /// agent (no network needed).
    #[command(hide = true)]
    SshProxy {
        /// NAME.vm
        host: String,
    },
    /// The editor backend: a Language Server on stdin/stdout (started by
    /// the VS Code extension and the Neovim plugin; see docs/lsp.md).
    Lsp {
        /// Accepted for clients that pass it; stdio is the only transport.
        #[arg(long, hide = true)]
        stdio: bool,
    },
    /// The coding agents' backend: a Model Context Protocol server on
    /// stdin/stdout whose tools create sandboxes of one repository, run
    /// commands and tests in them, edit their files and bring the guest's
    /// changes home (see docs/mcp.md).
    Mcp(McpArgs),
}

/// `banger mcp`'s flags.
#[derive(Debug, Args)]
pub(crate) struct McpArgs {
    /// The repository whose sandboxes it serves (default: the current
    /// directory's). Sandboxes of other repositories are refused.
    #[arg(long, value_name = "PATH")]
    pub(crate) repo: Option<std::path::PathBuf>,
    /// Turn off the tools that write to the host (apply_changes).
    #[arg(long)]
    pub(crate) read_only_host: bool,
    /// Remove the sandboxes this server creates when it ends (bangerd
    /// removes them even if the server is killed).
    #[arg(long)]
    pub(crate) ephemeral: bool,
    /// Serve the streamable HTTP transport on a unix socket instead of
    /// stdio: unix:PATH.
    #[arg(long, value_name = "unix:PATH")]
    pub(crate) listen: Option<String>,
    /// Print the configuration an MCP client needs to start this server,
    /// and exit.
    #[arg(long, value_name = "CLIENT", value_parser = ["claude", "codex", "vscode"])]
    pub(crate) print_config: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KernelCommand {
    /// Catalog kernels and the images' own kernels.
    List,
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
    /// Free the cache of what nothing can use any more: images a newer
    /// build of their name replaced (unless a VM, a snapshot or
    /// `vm_defaults.image` names them) with their snapshots, snapshots of
    /// deleted images, dependency caches of repositories that are gone,
    /// and OCI layers no image was made from. Lists it and asks first.
    Prune {
        /// Remove without asking.
        #[arg(short, long, conflicts_with = "dry_run")]
        force: bool,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SpecArgs {
    /// VM name (lowercase letters, digits, '-'); generated when omitted.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Virtual CPUs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(spec::MAX_VCPU)))]
    pub(crate) vcpu: Option<u32>,
    /// Memory: MiB (2048) or a size (2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub(crate) memory: Option<u64>,
    /// Size of the work disk mounted at /root, like 8G.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) disk_size: Option<u64>,
    /// Size of the root overlay (system writes outside /root; sparse),
    /// like 16G.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) system_overlay_size: Option<u64>,
    /// Boot this image (name or id; see `banger image list`) instead of
    /// the default one. Default: `vm_defaults.image` in config.toml.
    #[arg(long, value_name = "IMAGE")]
    pub(crate) image: Option<String>,
    /// Boot a kernel from the catalog instead of the image's (see `banger
    /// kernel list`).
    #[arg(long, value_name = "KERNEL")]
    pub(crate) kernel: Option<String>,
    /// VMM: auto (Firecracker where it can run the guest, else QEMU),
    /// firecracker or qemu. Default: `vmm` in config.toml, else auto.
    #[arg(long, value_name = "VMM")]
    pub(crate) vmm: Option<VmmArg>,
    /// Boot the guest instead of restoring the image's snapshot (default:
    /// `snapshots` in config.toml, else restore).
    #[arg(long)]
    pub(crate) no_snapshot: bool,
    /// Start as a fork of a snapshot of a running VM (`banger vm snapshot
    /// VM [--tag T]`): its image, size, files, processes and workspace.
    /// (`--from` alone is `--branch`'s start point.)
    #[arg(long = "from-snapshot", value_name = "NAME[:TAG]", conflicts_with_all = [
        "vcpu", "memory", "disk_size", "system_overlay_size", "image", "kernel", "no_snapshot",
    ])]
    pub(crate) from_snapshot: Option<String>,
}

/// `vm snapshot VM [--tag T]`, `vm snapshot list`, `vm snapshot delete`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct SnapshotArgs {
    #[command(subcommand)]
    pub(crate) command: Option<SnapshotCommand>,
    /// The running VM to snapshot (name or id).
    #[arg(add = ArgValueCandidates::new(vm_names))]
    pub(crate) vm: Option<String>,
    /// The snapshot's tag (default: latest): `--from-snapshot VM:TAG`.
    #[arg(long)]
    pub(crate) tag: Option<String>,
}

/// What `vm snapshot` does besides taking one.
#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// The snapshots, with their image, size and disk bytes.
    List,
    /// Delete a snapshot (`NAME[:TAG]`) no VM is being started from.
    Delete {
        /// `NAME[:TAG]`.
        snapshot: String,
    },
}

/// The guest's network.
#[derive(Debug, Args)]
pub(crate) struct NetArgs {
    /// Give the guest outbound network access (NAT through the host);
    /// without it the guest reaches nothing beyond the VM.
    #[arg(long)]
    pub(crate) nat: bool,
    /// Forward a host port to a guest port: [HOSTIP:]HOSTPORT:GUESTPORT
    /// (HOSTIP defaults to 127.0.0.1). Repeatable. Every listening guest
    /// port is also forwarded to the VM's own address (banger vm ip).
    #[arg(short = 'p', long = "publish", value_name = "[HOSTIP:]HOSTPORT:GUESTPORT", value_parser = parse_publish)]
    pub(crate) publish: Vec<crate::net::PortMapping>,
    /// Let the guest reach only this destination: HOST, HOST:PORT (without
    /// a port: 80 and 443) or *.DOMAIN. Repeatable; implies --nat.
    /// Everything else is refused, and `vm show` names what was.
    #[arg(long, value_name = "HOST[:PORT]", value_parser = parse_allow)]
    pub(crate) allow: Vec<crate::net::egress::AllowRule>,
}

fn parse_allow(s: &str) -> Result<crate::net::egress::AllowRule, String> {
    s.parse()
}

fn parse_publish(s: &str) -> Result<crate::net::PortMapping, String> {
    s.parse()
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
        #[command(flatten)]
        net: NetArgs,
        /// Skip installing the tools the workspace declares for mise
        /// (.mise.toml, .tool-versions), which otherwise needs --nat.
        #[arg(long, requires = "path")]
        no_bootstrap: bool,
        /// Ignore the repository's .banger.toml (its image, setup, network
        /// and size settings).
        #[arg(long, requires = "path")]
        no_project: bool,
        /// Do not mount the repository's dependency cache (pip, npm, cargo,
        /// go and apt downloads kept across runs; see `banger cache list`).
        #[arg(long, requires = "path")]
        no_cache: bool,
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
        #[command(flatten)]
        net: NetArgs,
        /// Only create it; start it later with `banger vm start`.
        #[arg(long)]
        no_start: bool,
    },
    /// Start stopped VMs.
    Start {
        /// VM names or ids.
        #[arg(required = true, add = ArgValueCandidates::new(vm_names))]
        vms: Vec<String>,
    },
    /// Flush and stop VMs; their disks are kept.
    Stop {
        /// VM names or ids.
        #[arg(required = true, add = ArgValueCandidates::new(vm_names))]
        vms: Vec<String>,
    },
    /// Delete VMs and everything of them.
    Delete {
        /// VM names or ids.
        #[arg(required = true, add = ArgValueCandidates::new(vm_names))]
        vms: Vec<String>,
    },
    /// List VMs (running ones unless --all).
    List(ListArgs),
    /// Show one VM as JSON.
    Show {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
    /// Ship repositories into running VMs.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// An interactive login shell in a running VM (in its workspace, if any).
    Shell {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
    /// Run a command in a running VM.
    Exec {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
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
    /// Reboot a running VM: the guest flushes, stops and boots again on
    /// the same disks (files under /root stay).
    Restart {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
    /// End a VM's VMM with a signal, without flushing the guest (for a
    /// guest that does not answer); the VM ends stopped, its disks kept.
    Kill {
        /// KILL, TERM, INT, HUP, QUIT (with or without SIG), or a number.
        #[arg(long, short, default_value = "KILL", value_parser = parse_signal)]
        signal: i32,
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
    /// Delete every VM that is not running (stopped or failed); running
    /// VMs are never touched.
    Prune {
        /// Do not ask (needed when stdin is not a terminal).
        #[arg(short, long)]
        force: bool,
    },
    /// Change a VM: vCPUs or memory of a stopped VM (applied at its next
    /// start), outbound network access of any VM (at once when it runs).
    Set {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
        /// Virtual CPUs.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(spec::MAX_VCPU)))]
        vcpu: Option<u32>,
        /// Memory: MiB (2048) or a size (2G).
        #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
        memory: Option<u64>,
        /// Give the guest outbound network access to anywhere (at once when
        /// it runs; drops --allow rules).
        #[arg(long, conflicts_with_all = ["no_nat", "allow"])]
        nat: bool,
        /// Take the guest's outbound network access away (at once when it
        /// runs; drops --allow rules).
        #[arg(long, conflicts_with = "allow")]
        no_nat: bool,
        /// Let the guest reach only these destinations (replacing the
        /// rules it had; at once when it runs). Repeatable.
        #[arg(long, value_name = "HOST[:PORT]", value_parser = parse_allow)]
        allow: Vec<crate::net::egress::AllowRule>,
    },
    /// ssh into a running VM with banger's own client (no network needed:
    /// the guest's sshd runs through the agent); with `-- CMD ARGS...`,
    /// run exactly that argv and exit with its exit code.
    Ssh {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// The guest's listening ports and where the host reaches each.
    Ports {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
    /// Snapshot a running VM (its memory, processes and disks; it pauses
    /// for about a second), for `vm run|create --from-snapshot VM[:TAG]`; or list
    /// or delete snapshots.
    Snapshot(SnapshotArgs),
    /// The host address where a VM's listening ports are reachable
    /// (`curl http://$(banger vm ip web):8000`).
    Ip {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
    /// The guest console log and the daemon's log lines about a VM.
    Logs {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
        /// Keep printing what is added, until the VM is deleted or Ctrl-C.
        #[arg(short, long)]
        follow: bool,
    },
    /// State, uptime, CPU time and memory of the VMM, disk bytes used.
    Stats {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the settings a new VM gets and where each comes from
    /// (default, config file, env, flag); flags given here show their
    /// effect.
    Show {
        #[command(flatten)]
        spec: SpecArgs,
    },
}

/// `--vmm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum VmmArg {
    /// Firecracker where it can run the guest, else QEMU.
    Auto,
    /// Firecracker.
    Firecracker,
    /// QEMU.
    Qemu,
}

impl VmmArg {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VmmArg::Auto => "auto",
            VmmArg::Firecracker => "firecracker",
            VmmArg::Qemu => "qemu",
        }
    }
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ModeArg {
    /// Through the agent into the running guest.
    Stream,
    /// Written into the VM's disk image before boot.
    #[value(name = "full_copy")]
    FullCopy,
}

impl ModeArg {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ModeArg::Stream => "stream",
            ModeArg::FullCopy => "full_copy",
        }
    }
}

/// `banger completions SHELL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompletionShell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

fn parse_size(s: &str) -> Result<u64, String> {
    spec::parse_size(s).map_err(|e| e.to_string())
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let mib = spec::parse_memory_mib(s).map_err(|e| e.to_string())?;
    if !(spec::MIN_MEMORY_MIB..=spec::MAX_MEMORY_MIB).contains(&mib) {
        return Err(spec::SpecError::Memory(mib).to_string());
    }
    Ok(mib)
}

/// A signal by name (`KILL`, `SIGTERM`, `term`) or number.
pub(crate) fn parse_signal(s: &str) -> Result<i32, String> {
    use std::str::FromStr;
    let bad = || format!("unknown signal {s:?}; use a name like KILL or TERM, or a number");
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|sig| sig as i32)
            .map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|sig| sig as i32)
        .map_err(|_| bad())
}

/// VM names for shell completion, from a daemon that already runs (a
/// completion never starts one).
fn vm_names() -> Vec<clap_complete::CompletionCandidate> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime.block_on(async {
        use crate::api::BangerApiClient;
        let dirs = crate::paths::Dirs::from_env();
        let Ok(Some(client)) = crate::client::connect_existing(&dirs).await else {
            return Vec::new();
        };
        let Ok(Ok(vms)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), client.vm_list(true)).await
        else {
            return Vec::new();
        };
        vms.into_iter()
            .map(|vm| {
                clap_complete::CompletionCandidate::new(vm.name)
                    .help(Some(format!("{} {}", vm.state, vm.id).into()))
            })
            .collect()
    })
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
    pub(crate) mode: Option<ModeArg>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkspaceCommand {
    /// Ship a git repository's files (tracked only, by default) into a
    /// running VM at /root/repo, with the host's HEAD, branch and index.
    Prepare {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
        /// The repository (default: the current directory).
        path: Option<String>,
        #[command(flatten)]
        ws: WorkspaceArgs,
        /// Replace a repository already in the guest, losing its guest
        /// edits (without it, the same repository is brought up to date by
        /// live sync and any other is refused).
        #[arg(long)]
        replace: bool,
    },
    /// The guest workspace's changes as a binary git patch (guest-created
    /// files included), checked as untrusted input before anything is
    /// written.
    Export {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
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
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
        /// Only these paths (relative to the repository root); default:
        /// everything.
        paths: Vec<String>,
        /// Overwrite the guest's copy even where the guest changed it.
        #[arg(long)]
        force: bool,
    },
    /// What the guest changed since the last transfer or sync.
    Changes {
        /// VM name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Include stopped VMs.
    #[arg(short, long)]
    pub(crate) all: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Build an image: without arguments the default one (debian-bookworm)
    /// from Debian's packages; `NAME --packages a,b` adds packages to the
    /// default image (or to --from IMAGE) in a guest, sharing everything
    /// else with it; `NAME --suite trixie [--packages ...]` builds a whole
    /// new one.
    Build {
        /// Image name.
        name: Option<String>,
        /// The image to add packages to (name or id).
        #[arg(long, value_name = "IMAGE")]
        from: Option<String>,
        /// Debian packages to add (comma-separated, repeatable).
        #[arg(long, value_name = "PKG,...", value_delimiter = ',')]
        packages: Vec<String>,
        /// Debian suite of a whole new image: bookworm, trixie, ...
        #[arg(long)]
        suite: Option<String>,
    },
    /// Pull an OCI image (python:3.12-slim, ghcr.io/o/i:tag, REF@sha256:...)
    /// from its registry and make it a banger image: its layers on one
    /// disk, banger's kernel, init and agent. Credentials come from
    /// ~/.docker/config.json; registries on this machine use plain HTTP.
    Pull {
        /// The image reference.
        reference: String,
        /// The banger image's name (default: from the reference, e.g.
        /// python-3.12-slim).
        #[arg(long)]
        name: Option<String>,
    },
    /// Make a banger image of an image archive: an OCI layout
    /// (skopeo copy ... oci-archive:FILE) or `docker save` output.
    Import {
        /// The archive (tar, or tar.gz).
        file: String,
        /// The banger image's name (default: the archive's tag, else its
        /// file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List built images.
    List,
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
    /// Make the image's snapshot now (a guest booted to ready and saved),
    /// so the next VM of this shape starts from it instead of booting. It
    /// is otherwise made on first need. Boots and removes one VM.
    Warm {
        /// Image name or id (default: the configured default image).
        image: Option<String>,
        /// Virtual CPUs of the VMs to start from it.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(spec::MAX_VCPU)))]
        vcpu: Option<u32>,
        /// Their memory: MiB (2048) or a size (2G).
        #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
        memory: Option<u64>,
        /// Their work disk size, like 8G.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        disk_size: Option<u64>,
        /// Their root overlay size, like 16G.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        system_overlay_size: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// List the caches, their repository, size and the VMs that mount them.
    List,
    /// Remove caches no running VM mounts.
    Clear {
        /// Cache names (see `banger cache list`).
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
        /// Every cache.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DaemonCommand {
    /// Start bangerd if it is not running.
    Start,
    /// Stop bangerd; running VMs keep running. Refused while it serves
    /// other requests (commands, operations) unless --force.
    Stop {
        /// Stop even though other requests run (their commands are killed;
        /// their --rm VMs are removed when it next starts).
        #[arg(long)]
        force: bool,
    },
    /// Show whether bangerd runs, and how.
    Status,
}
