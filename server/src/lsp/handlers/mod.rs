//! The LSP handlers, split as rust-analyzer splits them: requests
//! (`request.rs`) and notifications (`notification.rs`); `guarded` runs a
//! request as its own task.

pub(crate) mod notification;
pub(crate) mod request;

use std::time::Duration;

use tower_lsp_server::jsonrpc::{Error as RpcError, Result as RpcResult};

use super::global_state::rpc_error;

/// Runs a handler as its own task: a panic becomes an error reply, and
/// dropping the future (`$/cancelRequest`) aborts the task, which drops
/// whatever it holds (a guest command's stream: the daemon then kills the
/// guest process group).
pub(crate) async fn guarded<T: Send + 'static>(
    fut: impl std::future::Future<Output = RpcResult<T>> + Send + 'static,
) -> RpcResult<T> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(fut);
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(r) => {
            // tower-lsp-server merges notifications and responses from two
            // queues; give the notifications this request sent (output,
            // progress end) a moment to go out before its result does.
            tokio::time::sleep(Duration::from_millis(5)).await;
            r
        }
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!("a request panicked: {what}");
            Err(rpc_error(format!(
                "banger lsp: this request failed unexpectedly (a bug: {what}); the server keeps running"
            )))
        }
        Err(_) => Err(RpcError::request_cancelled()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_request_is_an_error_reply_not_the_end() {
        let r: RpcResult<()> = guarded(async { panic!("boom") }).await;
        let e = r.unwrap_err();
        assert!(e.message.contains("boom"), "{e:?}");
        let ok: RpcResult<u8> = guarded(async { Ok(7) }).await;
        assert_eq!(ok.unwrap(), 7);
    }
}
