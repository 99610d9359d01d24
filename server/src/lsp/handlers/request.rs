//! Request handlers: initialize, shutdown, code actions, execute command.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use tower_lsp_server::jsonrpc::Result as RpcResult;
use tower_lsp_server::ls_types::*;

use super::guarded;
use crate::lsp::global_state::{GlobalState, lock};
use crate::lsp::settings;

pub(crate) async fn initialize(
    inner: &Arc<GlobalState>,
    params: InitializeParams,
) -> RpcResult<InitializeResult> {
    let folder = params
        .workspace_folders
        .as_ref()
        .and_then(|f| f.first())
        .and_then(|f| f.uri.to_file_path().map(|p| p.into_owned()));
    #[allow(deprecated)] // root_uri: older clients send only this
    let folder = folder.or_else(|| {
        params
            .root_uri
            .as_ref()
            .and_then(|u| u.to_file_path().map(|p| p.into_owned()))
    });
    let root = folder.and_then(|f| {
        gix::discover(&f)
            .ok()
            .and_then(|r| r.workdir().map(Path::to_path_buf))
    });
    let options = params.initialization_options.clone().unwrap_or(Value::Null);
    if let Some(root) = &root {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
        let (s, warnings) = settings::resolve(&root, &options);
        for w in warnings {
            inner.client.log_message(MessageType::WARNING, w).await;
        }
        *lock(&inner.settings) = s;
        *lock(&inner.root) = Some(root);
    }
    *lock(&inner.options) = options;
    let progress = params
        .capabilities
        .window
        .as_ref()
        .and_then(|w| w.work_done_progress)
        .unwrap_or(false);
    inner.progress_ok.store(progress, Ordering::Relaxed);
    Ok(InitializeResult {
        server_info: Some(ServerInfo {
            name: "banger".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
        capabilities: ServerCapabilities {
            text_document_sync: Some(TextDocumentSyncCapability::Options(
                TextDocumentSyncOptions {
                    open_close: Some(true),
                    change: Some(TextDocumentSyncKind::FULL),
                    save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                    ..TextDocumentSyncOptions::default()
                },
            )),
            code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
                code_action_kinds: Some(vec![
                    CodeActionKind::new(crate::lsp::APPLY_KIND),
                    CodeActionKind::QUICKFIX,
                ]),
                ..CodeActionOptions::default()
            })),
            execute_command_provider: Some(ExecuteCommandOptions {
                commands: crate::lsp::COMMANDS.iter().map(|c| c.to_string()).collect(),
                ..ExecuteCommandOptions::default()
            }),
            ..ServerCapabilities::default()
        },
        ..InitializeResult::default()
    })
}

pub(crate) async fn shutdown(inner: &Arc<GlobalState>) -> RpcResult<()> {
    *lock(&inner.watcher) = None;
    Ok(())
}

pub(crate) async fn code_action(
    inner: &Arc<GlobalState>,
    params: CodeActionParams,
) -> RpcResult<Option<CodeActionResponse>> {
    let changes = lock(&inner.guest_changes).clone();
    let conflicts = lock(&inner.conflicts).clone();
    let root = inner.root().ok();
    let rel = root.as_ref().and_then(|r| {
        params.text_document.uri.to_file_path().and_then(|p| {
            p.strip_prefix(r)
                .ok()
                .map(|x| x.to_string_lossy().into_owned())
        })
    });
    let wants = |kind: &CodeActionKind| {
        params
            .context
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| kind.as_str().starts_with(o.as_str())))
    };
    let mut out = Vec::new();
    let n = changes.len();
    let apply = |kind: CodeActionKind| CodeAction {
        title: format!(
            "Apply guest changes ({n} file{})",
            if n == 1 { "" } else { "s" }
        ),
        kind: Some(kind),
        command: Some(Command::new(
            "Apply guest changes".into(),
            "banger.applyGuestChanges".into(),
            None,
        )),
        ..CodeAction::default()
    };
    let source = CodeActionKind::new(crate::lsp::APPLY_KIND);
    if n > 0 && wants(&source) {
        out.push(CodeActionOrCommand::CodeAction(apply(source)));
    }
    let here_changed = rel
        .as_ref()
        .is_some_and(|r| changes.iter().any(|c| &c.path == r));
    let here_conflict = rel.as_ref().is_some_and(|r| conflicts.contains(r));
    if (here_changed || here_conflict) && n > 0 && wants(&CodeActionKind::QUICKFIX) {
        out.push(CodeActionOrCommand::CodeAction(apply(
            CodeActionKind::QUICKFIX,
        )));
    }
    if here_conflict && wants(&CodeActionKind::QUICKFIX) {
        out.push(CodeActionOrCommand::CodeAction(CodeAction {
            title: "Overwrite guest copy".into(),
            kind: Some(CodeActionKind::QUICKFIX),
            command: Some(Command::new(
                "Overwrite guest copy".into(),
                "banger.overwriteGuest".into(),
                None,
            )),
            ..CodeAction::default()
        }));
    }
    Ok(Some(out))
}

pub(crate) async fn execute_command(
    inner: &Arc<GlobalState>,
    params: ExecuteCommandParams,
) -> RpcResult<Option<Value>> {
    let inner = inner.clone();
    guarded(async move { inner.execute(params).await.map(Some) }).await
}
