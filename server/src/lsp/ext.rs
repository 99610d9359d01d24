//! banger's own LSP extensions: the `banger/status` and `banger/output`
//! notifications (documented in `docs/lsp.md`), as rust-analyzer keeps its
//! custom protocol in `lsp/ext.rs`. Types only: no state, no I/O.

use serde::{Deserialize, Serialize};
use tower_lsp_server::ls_types::notification::Notification;

/// `banger/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusParams {
    /// The VM the repository is bound to (or will be).
    pub vm: String,
    /// Its state: `absent`, `stopped`, `starting`, `running`, ….
    pub vm_state: String,
    /// `synced`, `syncing`, `conflict` or `error`.
    pub sync: String,
    /// What the user should know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Files the guest changed since the last sync.
    pub guest_changes: usize,
    /// Files shipped by the last sync.
    pub files_sent: u64,
}

pub(crate) enum StatusNotification {}
impl Notification for StatusNotification {
    type Params = StatusParams;
    const METHOD: &'static str = "banger/status";
}

/// `banger/output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputParams {
    /// The run.
    pub run_id: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Text (invalid UTF-8 replaced).
    pub text: String,
}

pub(crate) enum OutputNotification {}
impl Notification for OutputNotification {
    type Params = OutputParams;
    const METHOD: &'static str = "banger/output";
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_serializes_as_documented() {
        let s = StatusParams {
            vm: "dev".into(),
            vm_state: "running".into(),
            sync: "synced".into(),
            message: None,
            guest_changes: 2,
            files_sent: 1,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"vm": "dev", "vmState": "running", "sync": "synced", "guestChanges": 2, "filesSent": 1})
        );
    }
}
