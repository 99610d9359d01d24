//! Wire types of workspaces: transfer, export, live sync, guest changes.

use serde::{Deserialize, Serialize};

/// Parameters of `vm_workspace_prepare`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PrepareParams {
    /// VM name or id.
    pub vm: String,
    /// Host repository path.
    pub path: String,
    /// Also untracked, not ignored files.
    #[serde(default)]
    pub include_untracked: bool,
    /// New guest branch to create and check out.
    #[serde(default)]
    pub branch: Option<String>,
    /// Where that branch starts (host ref; default HEAD).
    #[serde(default)]
    pub from: Option<String>,
    /// `stream` (default: through the agent, VM running) or `full_copy`
    /// (into the disk image, VM stopped).
    #[serde(default)]
    pub mode: Option<String>,
    /// Replace a guest repository that is already there (its guest edits
    /// are lost). Without it, a VM whose workspace came from the same
    /// repository is brought up to date by live sync, and any other
    /// existing guest repository is refused.
    #[serde(default)]
    pub replace: bool,
}

/// What a workspace transfer ships (or would ship, for `--dry-run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspacePlan {
    /// Host repository root.
    pub root: String,
    /// `mode: tracked only` or `mode: tracked + untracked`.
    pub mode: String,
    /// Files, sorted.
    pub files: Vec<crate::workspace::WorkspaceFile>,
    /// Untracked, not ignored files left out.
    pub untracked_left_out: usize,
    /// Submodules, not shipped.
    pub submodules: Vec<String>,
    /// Tracked files deleted in the working tree, not shipped.
    pub missing: Vec<String>,
    /// Host HEAD.
    pub head: Option<String>,
    /// Where it lands in the guest (after a transfer).
    pub guest_path: Option<String>,
    /// Set when the VM already held this repository's workspace and live
    /// sync brought it up to date instead of a new transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<SyncResult>,
}

/// The guest's edits as a patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportResult {
    /// The git patch (base64; binary-safe).
    pub patch: String,
    /// Paths it touches (after the change; old paths for deletions).
    pub files: Vec<String>,
    /// Whether it was applied to the host working tree.
    pub applied: bool,
    /// The host repository it belongs to.
    pub source: String,
}

/// Parameters of `vm_workspace_sync`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncParams {
    /// VM name or id.
    pub vm: String,
    /// Paths (relative to the repository root) that may have changed; all
    /// of them (a full reconcile) when absent.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// Overwrite the guest's copy even where the guest changed it.
    #[serde(default)]
    pub force: bool,
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncResult {
    /// Files written into the guest.
    pub files_sent: u64,
    /// Files deleted in the guest.
    pub deleted: u64,
    /// Files left alone because the guest changed them since the last sync.
    pub conflicts: Vec<String>,
    /// The host HEAD the guest now follows.
    pub head: Option<String>,
    /// Whether the guest's HEAD moved with this sync.
    pub head_moved: bool,
    /// Something the user should know (the guest moved its own HEAD).
    pub warning: Option<String>,
    /// Milliseconds spent on the host (deciding, reading, the database).
    #[serde(default)]
    pub host_ms: f64,
    /// Milliseconds spent waiting for the guest (its writes, HEAD moves).
    #[serde(default)]
    pub guest_ms: f64,
}

/// How git stores a file, on the daemon's wire (the daemon converts from
/// and to the agent protocol's kind; the two are separate types so the
/// guest protocol can change without changing this API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Regular file (0644).
    File,
    /// Executable file (0755).
    Executable,
    /// Symbolic link (content: the target).
    Symlink,
}

/// How a guest file differs from what the host last gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Content or mode changed.
    Modified,
    /// New, and not ignored.
    Added,
    /// Gone.
    Deleted,
}

/// A guest change since the last sync (paths already checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestChange {
    /// Path relative to the repository root.
    pub path: String,
    /// How it changed.
    pub status: ChangeStatus,
    /// Its kind now (`None` when deleted).
    pub kind: Option<FileKind>,
    /// Its blob id now (`None` when deleted).
    pub oid: Option<String>,
}

/// The guest's changes since the last sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestChanges {
    /// Changes with acceptable paths, sorted.
    pub changes: Vec<GuestChange>,
    /// Paths the host refuses (outside the repository, under `.git/`).
    pub refused: Vec<String>,
}

/// One guest file the host took in, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedFile {
    /// Path relative to the repository root.
    pub path: String,
    /// Kind (`None`: the guest deleted it).
    pub kind: Option<FileKind>,
    /// Blob id of `data` (empty when deleted).
    pub oid: String,
    /// Content, base64 (a symlink's target).
    pub data: String,
}

/// A guest copy to record as synced (`oid` empty: a deletion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptEntry {
    /// Path.
    pub path: String,
    /// Kind.
    pub kind: FileKind,
    /// Blob id the host took.
    pub oid: String,
}

impl SyncResult {
    /// What the user should know after live sync brought a workspace up to
    /// date (pure): the guest's HEAD left alone, the guest copies kept.
    pub fn notes(&self, vm: &str) -> Option<String> {
        let mut notes = Vec::new();
        if let Some(w) = &self.warning {
            notes.push(w.clone());
        }
        if !self.conflicts.is_empty() {
            notes.push(format!(
                "kept the guest's own copies of {} (changed in the guest since the last sync; bring them back with: banger vm workspace export {vm} --apply, or overwrite them with: banger vm workspace sync {vm} --force)",
                self.conflicts.join(", ")
            ));
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }
}

#[cfg(test)]
mod sync_result_tests {
    use super::*;

    #[test]
    fn notes_name_kept_guest_copies_and_a_guest_moved_head() {
        let mut r = SyncResult::default();
        assert_eq!(r.notes("v"), None);
        r.conflicts = vec!["a.txt".into()];
        r.warning = Some("the guest repository's HEAD moved on its own".into());
        let n = r.notes("v").unwrap();
        assert!(
            n.starts_with(
                "the guest repository's HEAD moved on its own; kept the guest's own copies of a.txt"
            ),
            "{n}"
        );
    }
}
