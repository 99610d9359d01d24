//! Notification handlers: initialized, the text document notifications
//! (open, change, close, save: saving queues a sync) and configuration
//! changes.

use std::sync::Arc;

use serde_json::Value;
use tower_lsp_server::ls_types::*;

use crate::api::BangerApiClient;
use crate::lsp::global_state::{GlobalState, lock};
use crate::lsp::settings;

pub(crate) async fn initialized(inner: &Arc<GlobalState>, _: InitializedParams) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let Ok(root) = inner.root() else {
            inner
                .set_status(|s| {
                    s.sync = "error".into();
                    s.message = Some("the workspace folder is not inside a git repository".into());
                })
                .await;
            return;
        };
        // Report the binding; reuse a running sandbox right away, and
        // create or start one only on first need.
        let Ok(daemon) = inner.daemon().await else {
            inner
                .set_status(|s| {
                    s.sync = "error".into();
                    s.message = Some("cannot reach bangerd; see banger doctor".into());
                })
                .await;
            return;
        };
        let Ok(name) = inner.vm_name(&daemon, &root).await else {
            return;
        };
        let state = match daemon.vm_show(name.clone()).await {
            Ok(v) => v.state,
            Err(_) => "absent".into(),
        };
        inner
            .set_status(|s| {
                s.vm = name.clone();
                s.vm_state = state.clone();
            })
            .await;
        if state == "running" {
            let _ = inner.ensure_bound(None).await;
        }
    });
}

pub(crate) async fn did_open(inner: &Arc<GlobalState>, params: DidOpenTextDocumentParams) {
    let d = params.text_document;
    lock(&inner.docs).insert(d.uri, (d.version, d.text));
}

pub(crate) async fn did_change(inner: &Arc<GlobalState>, params: DidChangeTextDocumentParams) {
    let d = params.text_document;
    if let Some(change) = params.content_changes.into_iter().last() {
        lock(&inner.docs).insert(d.uri, (d.version, change.text));
    }
}

pub(crate) async fn did_close(inner: &Arc<GlobalState>, params: DidCloseTextDocumentParams) {
    lock(&inner.docs).remove(&params.text_document.uri);
}

pub(crate) async fn did_save(inner: &Arc<GlobalState>, params: DidSaveTextDocumentParams) {
    if !lock(&inner.settings).sync_on_save || inner.bound().is_none() {
        return;
    }
    let Ok(root) = inner.root() else { return };
    if let Some(p) = params.text_document.uri.to_file_path()
        && let Ok(rel) = p.strip_prefix(&root)
    {
        inner.request_sync(Some(vec![rel.to_string_lossy().into_owned()]));
    }
}

pub(crate) async fn did_change_configuration(
    inner: &Arc<GlobalState>,
    params: DidChangeConfigurationParams,
) {
    let Ok(root) = inner.root() else { return };
    let mut options = lock(&inner.options).clone();
    merge(&mut options, &params.settings);
    let (s, warnings) = settings::resolve(&root, &options);
    for w in warnings {
        inner.client.log_message(MessageType::WARNING, w).await;
    }
    *lock(&inner.settings) = s;
    *lock(&inner.options) = options;
}

/// Merges `didChangeConfiguration` settings over the initial options.
fn merge(base: &mut Value, new: &Value) {
    match (base, new) {
        (Value::Object(b), Value::Object(n)) => {
            for (k, v) in n {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, n) => *b = n.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configuration_changes_merge_over_the_initial_options() {
        let mut base = json!({"banger": {"vm": "a", "vcpu": 2}});
        merge(&mut base, &json!({"banger": {"vcpu": 4}}));
        assert_eq!(base, json!({"banger": {"vm": "a", "vcpu": 4}}));
    }
}
