//! The tools' arguments and results: the MCP wire types `banger mcp` owns.
//! Their JSON schemas (schemars) are what `tools/list` shows; names are
//! stable and documented in docs/mcp.md.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Arguments of `sandbox_create`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateArgs {
    /// The host repository to ship (default: the repository the server
    /// serves; no other is accepted).
    pub(crate) repo: Option<String>,
    /// Name of the new sandbox (lowercase letters, digits, `-`); chosen
    /// from the repository's name when absent.
    pub(crate) name: Option<String>,
    /// Image name or id to boot (default: the repository's `.banger.toml`
    /// or Dev Container image, else the default image).
    pub(crate) image: Option<String>,
    /// Outbound network through the host (NAT). Off unless asked.
    pub(crate) nat: Option<bool>,
    /// Only these destinations (`HOST`, `HOST:PORT` or `*.DOMAIN`);
    /// implies outbound network.
    pub(crate) allow: Option<Vec<String>>,
    /// Virtual CPUs.
    pub(crate) vcpu: Option<u32>,
    /// Memory in MiB.
    pub(crate) memory_mib: Option<u64>,
}

/// A sandbox as the tools show it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Sandbox {
    /// Its name: the `sandbox` argument of the other tools.
    pub(crate) name: String,
    /// `running`, `stopped`, `starting`, `stopping` or `error`.
    pub(crate) state: String,
    /// The image it boots.
    pub(crate) image: String,
    /// Where the workspace is in the guest.
    pub(crate) guest_path: String,
    /// `none` (no network) or `nat`.
    pub(crate) network: String,
    /// Virtual CPUs.
    pub(crate) vcpu: u32,
    /// Memory in MiB.
    pub(crate) memory_mib: u64,
}

/// Result of `sandbox_create`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Created {
    /// The new sandbox's name.
    pub(crate) name: String,
    /// The sandbox.
    pub(crate) sandbox: Sandbox,
    /// Files shipped into the guest workspace.
    pub(crate) files: usize,
    /// What the caller should know (settings taken from the repository,
    /// ignored Dev Container fields).
    pub(crate) notes: Vec<String>,
}

/// Result of `sandbox_list`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct SandboxList {
    /// The repository these sandboxes hold.
    pub(crate) repo: String,
    /// Its sandboxes.
    pub(crate) sandboxes: Vec<Sandbox>,
}

/// Names a sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxArg {
    /// The sandbox's name (from `sandbox_create` or `sandbox_list`).
    pub(crate) sandbox: String,
}

/// Result of `sandbox_stop` and `sandbox_delete`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Done {
    /// The sandbox.
    pub(crate) name: String,
    /// Its state now (`stopped`, or `deleted`).
    pub(crate) state: String,
}

/// Arguments of `exec`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecArgs {
    /// The sandbox.
    pub(crate) sandbox: String,
    /// Program and arguments, passed as they are (no shell). Give this or
    /// `command`.
    pub(crate) argv: Option<Vec<String>>,
    /// A shell command line, run with `sh -c`. Give this or `argv`.
    pub(crate) command: Option<String>,
    /// Working directory, relative to the workspace (default: its root).
    pub(crate) cwd: Option<String>,
    /// Extra environment variables.
    pub(crate) env: Option<BTreeMap<String, String>>,
    /// Text written to the command's standard input (then closed).
    pub(crate) stdin: Option<String>,
    /// Seconds before the command is killed (default 600, at most 3600).
    pub(crate) timeout_secs: Option<u64>,
}

/// Result of `exec`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Exec {
    /// The command's exit code (128+N when killed by signal N).
    pub(crate) exit_code: i32,
    /// Its standard output (UTF-8, invalid bytes replaced).
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
    /// Part of stdout was left out (the middle of a long output).
    pub(crate) stdout_truncated: bool,
    /// Part of stderr was left out.
    pub(crate) stderr_truncated: bool,
    /// It ran past `timeout_secs` and was killed.
    pub(crate) timed_out: bool,
    /// Wall time in milliseconds.
    pub(crate) duration_ms: u64,
}

/// Arguments of `read_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadArgs {
    /// The sandbox.
    pub(crate) sandbox: String,
    /// The file, relative to the workspace.
    pub(crate) path: String,
    /// At most this many bytes (default and limit 1 MiB).
    pub(crate) max_bytes: Option<u64>,
}

/// Result of `read_file`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct FileContent {
    /// The file, relative to the workspace.
    pub(crate) path: String,
    /// Its text (the first `max_bytes`).
    pub(crate) content: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Only part of it is in `content`.
    pub(crate) truncated: bool,
}

/// Arguments of `write_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteArgs {
    /// The sandbox.
    pub(crate) sandbox: String,
    /// The file, relative to the workspace; missing directories are made.
    pub(crate) path: String,
    /// The whole new content (at most 8 MiB).
    pub(crate) content: String,
    /// Make it executable.
    pub(crate) executable: Option<bool>,
}

/// Result of `write_file`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Written {
    /// The file, relative to the workspace.
    pub(crate) path: String,
    /// Bytes written.
    pub(crate) bytes: u64,
}

/// Arguments of `list_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListArgs {
    /// The sandbox.
    pub(crate) sandbox: String,
    /// A directory, relative to the workspace (default: its root).
    pub(crate) path: Option<String>,
    /// How deep to go (default 1: the directory's own entries; at most 8).
    pub(crate) depth: Option<u32>,
}

/// One directory entry.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Entry {
    /// Path relative to the workspace.
    pub(crate) path: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub(crate) kind: String,
    /// Size in bytes.
    pub(crate) size: u64,
}

/// Result of `list_files`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Listing {
    /// Entries, sorted by path (`.git` left out).
    pub(crate) entries: Vec<Entry>,
    /// More entries exist than the 2000 shown.
    pub(crate) truncated: bool,
}

/// Arguments of `search_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchArgs {
    /// The sandbox.
    pub(crate) sandbox: String,
    /// What to look for: plain text, or an extended regular expression
    /// with `regex`.
    pub(crate) pattern: String,
    /// Where, relative to the workspace (default: all of it).
    pub(crate) path: Option<String>,
    /// `pattern` is an extended regular expression.
    pub(crate) regex: Option<bool>,
    /// Ignore case.
    pub(crate) ignore_case: Option<bool>,
    /// At most this many matches (default 200, at most 2000).
    pub(crate) max_results: Option<u32>,
}

/// One matching line.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Match {
    /// File, relative to the workspace.
    pub(crate) path: String,
    /// 1-based line.
    pub(crate) line: u64,
    /// The line (at most 400 characters).
    pub(crate) text: String,
}

/// Result of `search_files`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Matches {
    /// Matches, in file order (binary files and `.git` left out).
    pub(crate) matches: Vec<Match>,
    /// More matches exist than shown.
    pub(crate) truncated: bool,
}

/// Result of `sync`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Synced {
    /// Files written into the guest.
    pub(crate) files_sent: u64,
    /// Files deleted in the guest.
    pub(crate) deleted: u64,
    /// Files the guest changed since the last sync: left alone (bring them
    /// home with `apply_changes`).
    pub(crate) conflicts: Vec<String>,
    /// What the caller should know.
    pub(crate) notes: Option<String>,
}

/// One file the guest changed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Change {
    /// Path relative to the repository.
    pub(crate) path: String,
    /// `modified`, `added` or `deleted`.
    pub(crate) status: String,
    /// Unified diff from the host's copy to the guest's (absent for
    /// binary files).
    pub(crate) diff: Option<String>,
    /// The file is binary (no text diff).
    pub(crate) binary: bool,
}

/// Result of `changes`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Changes {
    /// What the guest changed since the last sync.
    pub(crate) files: Vec<Change>,
    /// Paths the host refuses (outside the repository, under `.git`):
    /// `apply_changes` would refuse the whole set.
    pub(crate) refused: Vec<String>,
    /// Diffs were cut short (over 512 KiB in all).
    pub(crate) truncated: bool,
}

/// Arguments of `apply_changes`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyArgs {
    /// The sandbox.
    pub(crate) sandbox: String,
    /// Only report what would change; write nothing.
    pub(crate) dry_run: Option<bool>,
}

/// Result of `apply_changes`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Applied {
    /// Whether the host repository was written.
    pub(crate) applied: bool,
    /// The files (relative to the repository) it changed, or would.
    pub(crate) files: Vec<String>,
    /// The host repository.
    pub(crate) repo: String,
}

/// One listening guest port.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Port {
    /// `tcp` or `udp`.
    pub(crate) proto: String,
    /// The guest address it is bound to.
    pub(crate) address: String,
    /// The guest port.
    pub(crate) port: u16,
    /// The guest process holding it.
    pub(crate) process: Option<String>,
    /// Host addresses that reach it.
    pub(crate) host: Vec<String>,
    /// Why it is not reachable from the host, when it is not.
    pub(crate) note: Option<String>,
}

/// Result of `ports`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Ports {
    /// The guest's listening sockets.
    pub(crate) ports: Vec<Port>,
}

/// Arguments of `run_tests`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestArgs {
    /// The sandbox.
    pub(crate) sandbox: String,
    /// Narrow the run to a test name or a file.
    pub(crate) filter: Option<String>,
    /// Seconds before the run is killed (default 600, at most 3600).
    pub(crate) timeout_secs: Option<u64>,
}

/// One failure a test run printed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Failure {
    /// File relative to the repository (as printed when it names no
    /// repository file).
    pub(crate) file: String,
    /// 1-based line.
    pub(crate) line: u32,
    /// 1-based column, when printed.
    pub(crate) column: Option<u32>,
    /// `error`, `warning` or `info`.
    pub(crate) severity: String,
    /// What went wrong.
    pub(crate) message: String,
}

/// Result of `run_tests`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Tests {
    /// The command that ran (`.banger.toml` `test-command`, else detected).
    pub(crate) command: String,
    /// Its exit code: 0 when the tests passed.
    pub(crate) exit_code: i32,
    /// Tests passed, when the runner said.
    pub(crate) passed: Option<u64>,
    /// Tests failed, when the runner said.
    pub(crate) failed: Option<u64>,
    /// Failures with their place.
    pub(crate) failures: Vec<Failure>,
    /// The end of the output (at most 16 KiB).
    pub(crate) output: String,
    /// It ran past `timeout_secs` and was killed.
    pub(crate) timed_out: bool,
    /// Wall time in milliseconds.
    pub(crate) duration_ms: u64,
}
