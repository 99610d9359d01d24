//! The language server's entry point: `serve` wires the shared state,
//! the sync worker and the poller to tower-lsp-server, and `Backend`
//! dispatches each LSP method to its handler (`handlers/`).

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tower_lsp_server::jsonrpc::Result as RpcResult;
use tower_lsp_server::ls_types::*;
use tower_lsp_server::{LanguageServer, LspService, Server};

use super::global_state::GlobalState;
use super::handlers::{notification, request};
use super::sync::{poller, sync_worker};
use crate::paths::Dirs;

/// The LSP service's handle.
struct Backend(Arc<GlobalState>);

/// Serves LSP on stdin/stdout until the client exits.
pub async fn serve(dirs: Dirs) {
    let (sync_tx, sync_rx) = mpsc::unbounded_channel();
    let (service, socket) = LspService::new(|client| {
        let inner = Arc::new(GlobalState::new(client, dirs, sync_tx));
        tokio::spawn(sync_worker(inner.clone(), sync_rx));
        tokio::spawn(poller(inner.clone()));
        Backend(inner)
    });
    Server::new(tokio::io::stdin(), tokio::io::stdout(), socket)
        .serve(service)
        .await;
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> RpcResult<InitializeResult> {
        request::initialize(&self.0, params).await
    }

    async fn initialized(&self, params: InitializedParams) {
        notification::initialized(&self.0, params).await
    }

    async fn shutdown(&self) -> RpcResult<()> {
        request::shutdown(&self.0).await
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        notification::did_open(&self.0, params).await
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        notification::did_change(&self.0, params).await
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        notification::did_close(&self.0, params).await
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        notification::did_save(&self.0, params).await
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        notification::did_change_configuration(&self.0, params).await
    }

    async fn code_action(&self, params: CodeActionParams) -> RpcResult<Option<CodeActionResponse>> {
        request::code_action(&self.0, params).await
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> RpcResult<Option<Value>> {
        request::execute_command(&self.0, params).await
    }
}
