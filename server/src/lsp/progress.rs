//! Work-done progress (`$/progress`) for long commands, when the client
//! takes them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tower_lsp_server::ls_types::*;

use super::global_state::GlobalState;

/// A work-done progress, if the client takes them.
pub(crate) struct Progress {
    inner: Arc<GlobalState>,
    token: Option<ProgressToken>,
}

impl Progress {
    pub(crate) async fn begin(
        inner: &Arc<GlobalState>,
        given: Option<ProgressToken>,
        title: &str,
    ) -> Progress {
        let token = match given {
            Some(t) => Some(t),
            None if inner.progress_ok.load(Ordering::Relaxed) => {
                let n = inner.runs.fetch_add(1, Ordering::Relaxed);
                let t = ProgressToken::String(format!("banger-{}-{n}", std::process::id()));
                // A client that never answers must not hold the work up.
                tokio::time::timeout(
                    Duration::from_secs(5),
                    inner.client.create_work_done_progress(t.clone()),
                )
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|_| t)
            }
            None => None,
        };
        if let Some(t) = &token {
            inner
                .client
                .send_notification::<notification::Progress>(ProgressParams {
                    token: t.clone(),
                    value: ProgressParamsValue::WorkDone(WorkDoneProgress::Begin(
                        WorkDoneProgressBegin {
                            title: title.into(),
                            cancellable: Some(true),
                            message: None,
                            percentage: None,
                        },
                    )),
                })
                .await;
        }
        Progress {
            inner: inner.clone(),
            token,
        }
    }

    pub(crate) async fn report(&self, message: &str) {
        if let Some(t) = &self.token {
            self.inner
                .client
                .send_notification::<notification::Progress>(ProgressParams {
                    token: t.clone(),
                    value: ProgressParamsValue::WorkDone(WorkDoneProgress::Report(
                        WorkDoneProgressReport {
                            message: Some(message.into()),
                            cancellable: Some(true),
                            percentage: None,
                        },
                    )),
                })
                .await;
        }
    }

    pub(crate) async fn end(self, message: &str) {
        if let Some(t) = &self.token {
            self.inner
                .client
                .send_notification::<notification::Progress>(ProgressParams {
                    token: t.clone(),
                    value: ProgressParamsValue::WorkDone(WorkDoneProgress::End(
                        WorkDoneProgressEnd {
                            message: Some(message.into()),
                        },
                    )),
                })
                .await;
        }
    }
}
