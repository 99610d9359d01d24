//! Every program banger and its tests run on the host, with the Debian
//! package that ships it: the one list `banger doctor` checks,
//! `scripts/install-host-deps.sh` installs (a test keeps the two equal) and
//! a "not found" error names.
//!
//! [`command`] is the one place host tools are spawned (clippy.toml bans
//! `Command::new` elsewhere). It does not spawn VMMs (`vmm/`, whose binary
//! paths are settings), bangerd (`client.rs`) or guest programs (the
//! agent); those programs are still listed here so that doctor and the
//! install script know them. banger's own binaries (`bangerd`, and
//! `banger-agent` as the debug builds' `fake` VMM) are not host tools and
//! are not listed.

use std::path::PathBuf;
use std::process::{Command, Output};

/// What a program is needed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Running VMs, workspaces, downloads.
    Core,
    /// Building guest images from Debian packages.
    ImageBuild,
    /// Only the test suite runs it.
    Tests,
}

impl Need {
    /// How doctor names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Core => "core",
            Need::ImageBuild => "image build",
            Need::Tests => "tests",
        }
    }
}

/// A host program banger or its tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `qemu-system-x86_64`, spawned by the QEMU driver.
    Qemu,
    /// `mkfs.ext4`.
    Mkfs,
    /// `debugfs`.
    Debugfs,
    /// `e2fsck`.
    E2fsck,
    /// `resize2fs` (shrinks a derived image's layer to its contents).
    Resize2fs,
    /// `tune2fs` (drops a layer's journal: it is never written again).
    Tune2fs,
    /// `git`.
    Git,
    /// `sh`.
    Sh,
    /// `tar`.
    Tar,
    /// `curl`.
    Curl,
    /// `pasta`: connects each VM's network namespace to the host's network.
    Pasta,
    /// `nft`: the rules of each VM's network namespace (NAT, what the guest
    /// may reach).
    Nft,
    /// `mmdebstrap`.
    Mmdebstrap,
    /// `apt-get`.
    AptGet,
    /// `dpkg-deb`.
    DpkgDeb,
    /// `du`.
    Du,
    /// `find`.
    Find,
    /// `unshare`.
    Unshare,
    /// `newuidmap`.
    Newuidmap,
    /// `newgidmap`.
    Newgidmap,
    /// `cpio` (tests read banger's archives with it).
    Cpio,
    /// `lz4` (tests compress kernels with it).
    Lz4,
    /// `script` (tests give banger a terminal with it).
    Script,
    /// `kill` (tests signal processes with it).
    Kill,
    /// `sleep` (tests use it as a process that lives on).
    Sleep,
    /// `tmux` (the Neovim tier shows a real terminal with it).
    Tmux,
    /// `setpriv` (tests run banger as a user without privileges with it).
    Setpriv,
    /// `chattr` (tests pin a file so that a removal fails).
    Chattr,
    /// `node` (the VS Code tier drives its browser with it).
    Node,
    /// `ssh` (tests reach VMs as users do: `ssh NAME.vm`).
    Ssh,
    /// `docker-registry` (Debian's distribution: the OCI tests' registry).
    DockerRegistry,
    /// `umoci` (the OCI tests make images from trees with it).
    Umoci,
    /// `skopeo` (the OCI tests push images to their registry with it).
    Skopeo,
    /// `busybox` (static, from busybox-static: the OCI tests' tiny tree).
    Busybox,
    /// `ip` (the Docker test puts its registry in a network namespace).
    Ip,
    /// `python3` with venv (the agent tier's MCP client, the Python SDK,
    /// and the Neovim tier's editor are installed in virtualenvs).
    Python3,
}

/// One entry of the list.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// The tool.
    pub tool: Tool,
    /// The program's file name.
    pub name: &'static str,
    /// The Debian package that ships it.
    pub package: &'static str,
    /// What needs it.
    pub need: Need,
}

const fn p(tool: Tool, name: &'static str, package: &'static str, need: Need) -> Program {
    Program {
        tool,
        name,
        package,
        need,
    }
}

/// Every host program, in the order doctor reports them.
pub const PROGRAMS: &[Program] = &[
    p(
        Tool::Qemu,
        "qemu-system-x86_64",
        "qemu-system-x86",
        Need::Core,
    ),
    p(Tool::Mkfs, "mkfs.ext4", "e2fsprogs", Need::Core),
    p(Tool::Debugfs, "debugfs", "e2fsprogs", Need::Core),
    p(Tool::E2fsck, "e2fsck", "e2fsprogs", Need::Core),
    p(Tool::Resize2fs, "resize2fs", "e2fsprogs", Need::Core),
    p(Tool::Tune2fs, "tune2fs", "e2fsprogs", Need::Core),
    p(Tool::Git, "git", "git", Need::Core),
    p(Tool::Sh, "sh", "dash", Need::Core),
    p(Tool::Tar, "tar", "tar", Need::Core),
    p(Tool::Curl, "curl", "curl", Need::Core),
    p(Tool::Pasta, "pasta", "passt", Need::Core),
    p(Tool::Nft, "nft", "nftables", Need::Core),
    p(
        Tool::Mmdebstrap,
        "mmdebstrap",
        "mmdebstrap",
        Need::ImageBuild,
    ),
    p(Tool::AptGet, "apt-get", "apt", Need::ImageBuild),
    p(Tool::DpkgDeb, "dpkg-deb", "dpkg", Need::ImageBuild),
    p(Tool::Du, "du", "coreutils", Need::ImageBuild),
    p(Tool::Find, "find", "findutils", Need::ImageBuild),
    p(Tool::Unshare, "unshare", "util-linux", Need::ImageBuild),
    p(Tool::Newuidmap, "newuidmap", "uidmap", Need::ImageBuild),
    p(Tool::Newgidmap, "newgidmap", "uidmap", Need::ImageBuild),
    p(Tool::Cpio, "cpio", "cpio", Need::Tests),
    p(Tool::Lz4, "lz4", "lz4", Need::Tests),
    p(Tool::Script, "script", "bsdutils", Need::Tests),
    p(Tool::Kill, "kill", "procps", Need::Tests),
    p(Tool::Sleep, "sleep", "coreutils", Need::Tests),
    p(Tool::Tmux, "tmux", "tmux", Need::Tests),
    p(Tool::Setpriv, "setpriv", "util-linux", Need::Tests),
    p(Tool::Chattr, "chattr", "e2fsprogs", Need::Tests),
    p(Tool::Node, "node", "nodejs", Need::Tests),
    p(Tool::Ssh, "ssh", "openssh-client", Need::Tests),
    p(
        Tool::DockerRegistry,
        "docker-registry",
        "docker-registry",
        Need::Tests,
    ),
    p(Tool::Umoci, "umoci", "umoci", Need::Tests),
    p(Tool::Skopeo, "skopeo", "skopeo", Need::Tests),
    p(Tool::Busybox, "busybox", "busybox-static", Need::Tests),
    p(Tool::Ip, "ip", "iproute2", Need::Tests),
    p(Tool::Python3, "python3", "python3-venv", Need::Tests),
];

/// Packages that ship no program banger runs but that the programs need:
/// TLS roots for curl's and apt's downloads.
pub const SUPPORT_PACKAGES: &[&str] = &["ca-certificates"];

/// Every Debian package the host needs (programs' packages, then support
/// packages), each once: what `scripts/install-host-deps.sh` installs.
pub fn packages() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for name in PROGRAMS
        .iter()
        .map(|p| p.package)
        .chain(SUPPORT_PACKAGES.iter().copied())
    {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

impl Tool {
    /// Its entry in [`PROGRAMS`].
    pub fn program(self) -> &'static Program {
        PROGRAMS
            .iter()
            .find(|p| p.tool == self)
            .expect("every tool is listed in PROGRAMS")
    }

    /// The program's file name.
    pub fn name(self) -> &'static str {
        self.program().name
    }

    /// The Debian package that ships it.
    pub fn package(self) -> &'static str {
        self.program().package
    }

    /// Where it is, searching `PATH` plus the sbin directories.
    pub fn find(self) -> Option<PathBuf> {
        find(self.name())
    }

    /// The hint a "not found" error carries.
    pub fn install_hint(self) -> String {
        format!(
            "{} not found; install it: apt-get install {} (or run scripts/install-host-deps.sh)",
            self.name(),
            self.package()
        )
    }
}

/// Where a program named `name` is on the tool search path.
pub fn find(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&crate::paths::tool_search_path())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A host tool could not run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not installed.
    #[error("{hint}")]
    NotFound {
        /// The program.
        program: String,
        /// What to install.
        hint: String,
    },
    /// It could not be started for another reason.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
}

impl ToolError {
    /// The program that failed.
    pub fn program(&self) -> &str {
        match self {
            ToolError::NotFound { program, .. }
            | ToolError::Spawn { program, .. }
            | ToolError::Failed { program, .. } => program,
        }
    }

    /// What the program printed on stderr, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ToolError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// A command for `tool`, searching `PATH` plus the sbin directories (where
/// Debian keeps e2fsprogs, which a normal user's `PATH` often lacks). The
/// one place banger spawns host tools.
#[allow(clippy::disallowed_methods)] // the one place host tools are spawned
pub fn command(tool: Tool) -> Command {
    let mut cmd = Command::new(tool.name());
    cmd.env("PATH", crate::paths::tool_search_path());
    cmd
}

/// Maps a spawn error to [`ToolError`], with the install hint when the
/// program is missing.
pub fn spawn_error(cmd: &Command, source: std::io::Error) -> ToolError {
    let program = cmd.get_program().to_string_lossy().into_owned();
    if source.kind() == std::io::ErrorKind::NotFound {
        let hint = PROGRAMS
            .iter()
            .find(|p| p.name == program)
            .map(|p| p.tool.install_hint())
            .unwrap_or_else(|| format!("{program} not found"));
        ToolError::NotFound { program, hint }
    } else {
        ToolError::Spawn { program, source }
    }
}

/// Runs `cmd` to completion and returns its output, whatever its status.
pub fn output(cmd: &mut Command) -> Result<Output, ToolError> {
    cmd.output().map_err(|e| spawn_error(cmd, e))
}

/// Runs `cmd`; a non-zero exit is [`ToolError::Failed`] with its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, ToolError> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(ToolError::Failed {
            program: cmd.get_program().to_string_lossy().into_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// For tests: the command for `tool`, or a panic that says how to install
/// it (the test command installs every listed tool first).
pub fn for_test(tool: Tool) -> Command {
    assert!(
        tool.find().is_some(),
        "{}; the test command (scripts/test.sh) installs it",
        tool.install_hint()
    );
    command(tool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn every_tool_is_listed_once() {
        for program in PROGRAMS {
            assert_eq!(
                PROGRAMS.iter().filter(|p| p.tool == program.tool).count(),
                1,
                "{:?}",
                program.tool
            );
            assert_eq!(program.tool.name(), program.name);
        }
    }

    /// The install script installs exactly the packages of the list.
    #[test]
    fn install_script_installs_exactly_the_list() {
        let script =
            std::fs::read_to_string(repo_root().join("scripts/install-host-deps.sh")).unwrap();
        let line = script
            .lines()
            .find_map(|l| l.trim().strip_prefix("packages=("))
            .expect("scripts/install-host-deps.sh has a packages=(...) line");
        let mut in_script: Vec<&str> = line.trim_end_matches(')').split_whitespace().collect();
        in_script.sort_unstable();
        let mut listed = packages();
        listed.sort_unstable();
        assert_eq!(
            in_script, listed,
            "scripts/install-host-deps.sh must install exactly tool::packages()"
        );
    }

    /// Every program named literally where a process is spawned, in any
    /// crate of the workspace (tests included), is in the list.
    #[test]
    fn every_spawned_program_is_listed() {
        let root = repo_root();
        let mut files = Vec::new();
        for dir in ["server", "agent", "tests"] {
            collect_rs(&root.join(dir), &mut files);
        }
        assert!(files.len() > 20, "found only {} sources", files.len());
        let mut unlisted = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (i, _) in text.match_indices("Command::new(\"") {
                let rest = &text[i + "Command::new(\"".len()..];
                let name = &rest[..rest.find('"').unwrap()];
                if !PROGRAMS.iter().any(|p| p.name == name) {
                    unlisted.push(format!("{} in {}", name, file.display()));
                }
            }
        }
        assert!(
            unlisted.is_empty(),
            "spawned but not in tool::PROGRAMS: {unlisted:?}"
        );
    }

    fn collect_rs(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("target") && !path.ends_with("node_modules") {
                    collect_rs(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let err = output(command(Tool::Cpio).env("PATH", "/nonexistent")).unwrap_err();
        assert!(matches!(err, ToolError::NotFound { .. }), "{err:?}");
        let err = spawn_error(
            &command(Tool::Cpio),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(
            err.to_string(),
            "cpio not found; install it: apt-get install cpio (or run scripts/install-host-deps.sh)"
        );
    }

    #[test]
    fn a_failing_program_reports_its_stderr() {
        let err = run(command(Tool::Sh).args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        assert_eq!(err.stderr(), Some("nope"));
        assert!(err.to_string().starts_with("sh failed"), "{err}");
    }
}
