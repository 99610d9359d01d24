//! Guest commands as the daemon's clients run them (`vm_exec` and the
//! requests on a running exec): the table of running execs, and the loop
//! that relays an exec's events to its client within the client's window
//! and removes a `delete_after` VM when it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use banger_agent::client::{AgentError, ExecControl, ExecEvent as AgentExecEvent};
use banger_agent::protocol::ExecSpec;
use base64::Engine as _;
use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::types::ErrorObjectOwned;

use super::rpc::send;
use super::{Daemon, OpError, lock};
use crate::api::{ExecEvent, ExecParams, code};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Running execs, by the id clients use for stdin and signals.
#[derive(Default)]
pub(crate) struct ExecTable {
    next: AtomicU64,
    controls: Mutex<HashMap<u64, (ExecControl, Arc<tokio::sync::Semaphore>)>>,
}

impl ExecTable {
    /// Registers a running exec; its client window starts full.
    pub(super) fn insert(&self, control: ExecControl) -> (u64, Arc<tokio::sync::Semaphore>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let window = Arc::new(tokio::sync::Semaphore::new(
            crate::api::EXEC_CLIENT_WINDOW as usize,
        ));
        lock(&self.controls).insert(id, (control, window.clone()));
        (id, window)
    }

    fn get(&self, id: u64) -> Option<ExecControl> {
        lock(&self.controls).get(&id).map(|(c, _)| c.clone())
    }

    fn window(&self, id: u64) -> Option<Arc<tokio::sync::Semaphore>> {
        lock(&self.controls).get(&id).map(|(_, w)| w.clone())
    }

    pub(super) fn remove(&self, id: u64) {
        lock(&self.controls).remove(&id);
    }
    fn control(&self, id: u64) -> Result<ExecControl, OpError> {
        self.get(id)
            .ok_or_else(|| OpError::new(code::NOT_FOUND, format!("no running exec {id}")))
    }

    /// `exec_input`: answered once the guest has room for the chunk, so a
    /// client that waits for each answer is held back by a program that
    /// does not read (end-to-end flow control, no queue grows).
    pub(super) async fn input(
        &self,
        id: u64,
        data: Option<String>,
        eof: bool,
    ) -> Result<(), OpError> {
        let control = self.control(id)?;
        if let Some(data) = data {
            let bytes = B64
                .decode(data)
                .map_err(|e| OpError::new(code::INVALID, format!("stdin is not base64: {e}")))?;
            control
                .write_stdin(&bytes)
                .await
                .map_err(|e| OpError::internal(e.to_string()))?;
        }
        if eof {
            control
                .close_stdin()
                .map_err(|e| OpError::internal(e.to_string()))?;
        }
        Ok(())
    }

    /// `exec_ack`: the client consumed `bytes` more; never more than a
    /// window (a client cannot acknowledge what it was not sent).
    pub(super) fn ack(&self, id: u64, bytes: u64) -> Result<(), OpError> {
        let window = self
            .window(id)
            .ok_or_else(|| OpError::new(code::NOT_FOUND, format!("no running exec {id}")))?;
        let room =
            (crate::api::EXEC_CLIENT_WINDOW as usize).saturating_sub(window.available_permits());
        window.add_permits((bytes as usize).min(room));
        Ok(())
    }

    /// `exec_resize`.
    pub(super) fn resize(&self, id: u64, size: crate::api::Terminal) -> Result<(), OpError> {
        self.control(id)?
            .resize(banger_agent::protocol::TtySize {
                rows: size.rows,
                cols: size.cols,
            })
            .map_err(|e| OpError::internal(e.to_string()))
    }

    /// `exec_signal`.
    pub(super) fn signal(&self, id: u64, signal: i32) -> Result<(), OpError> {
        self.control(id)?
            .signal(signal)
            .map_err(|e| OpError::internal(e.to_string()))
    }
}

pub(super) async fn vm_exec(
    daemon: Arc<Daemon>,
    pending: PendingSubscriptionSink,
    params: ExecParams,
) -> SubscriptionResult {
    let cleanup = |daemon: Arc<Daemon>, vm: String| async move {
        // Named as the user knows it, when the row still says.
        let name = daemon
            .find(&vm)
            .map(|r| r.name)
            .unwrap_or_else(|_| vm.clone());
        match daemon.delete_vm(&vm).await {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(vm = %name, "delete after exec failed: {}", e.message);
                Some(format!(
                    "vm {name} was not removed: {}; remove it with: banger vm delete {name}",
                    e.message
                ))
            }
        }
    };
    if params.argv.is_empty() {
        pending
            .reject(crate::api::error(code::INVALID, "no command given"))
            .await;
        return Ok(());
    }
    // A workspace whose host HEAD moved: re-sync on request, else warn.
    let mut warning = None;
    if params.cwd.is_none() {
        match daemon.workspace_staleness(&params.vm).await {
            Ok(Some(_)) if params.auto_prepare => match daemon.resync_workspace(&params.vm).await {
                Ok(notes) => warning = notes,
                Err(e) => {
                    pending.reject(ErrorObjectOwned::from(e)).await;
                    return Ok(());
                }
            },
            Ok(stale) => warning = stale,
            Err(_) => {}
        }
    }
    // In a workspace whose tools mise installed, through `mise exec`.
    let found = daemon.find(&params.vm);
    let argv = match &found {
        Ok(vm) if vm.tooling.is_some() && params.cwd.is_none() && vm.workspace.is_some() => {
            super::tooling::through_mise(&params.argv)
        }
        _ => params.argv.clone(),
    };
    // A client's command runs as its image's user (an OCI image's User);
    // banger's own guest scripts stay root's.
    let user = found.ok().and_then(|vm| daemon.image_run_config(&vm).user);
    let spec = ExecSpec {
        argv,
        env: params.env.clone(),
        cwd: params.cwd.clone(),
        stdin: params.stdin,
        tty: params.tty.map(|t| banger_agent::protocol::TtySize {
            rows: t.rows,
            cols: t.cols,
        }),
        user,
    };
    let (vm, mut session) = match daemon.exec(&params.vm, spec).await {
        Ok(ok) => ok,
        Err(e) => {
            if params.delete_after {
                cleanup(daemon.clone(), params.vm.clone()).await;
            }
            pending.reject(ErrorObjectOwned::from(e)).await;
            return Ok(());
        }
    };
    let sink = match pending.accept().await {
        Ok(sink) => sink,
        Err(e) => {
            drop(session);
            if params.delete_after {
                cleanup(daemon, vm.id).await;
            }
            return Err(e.into());
        }
    };
    let (exec_id, window) = daemon.execs.insert(session.control());
    let mut client_gone = !send(&sink, &ExecEvent::Started { exec_id, warning }).await;
    let mut last = None;
    while !client_gone {
        let event = tokio::select! {
            ev = session.next() => ev,
            _ = sink.closed() => { client_gone = true; break; }
        };
        // A `flow` client gets no more than its window ahead of what it
        // acknowledged; while it does not read, this does not read the
        // guest either, and the guest program waits.
        if params.flow
            && let Ok(AgentExecEvent::Stdout(b) | AgentExecEvent::Stderr(b)) = &event
        {
            let n = (b.len() as u32).max(1);
            let acquired = tokio::select! {
                permits = window.acquire_many(n) => permits.ok(),
                _ = sink.closed() => None,
            };
            match acquired {
                Some(permits) => permits.forget(),
                None => {
                    client_gone = true;
                    break;
                }
            }
        }
        let wire = match event {
            Ok(AgentExecEvent::Stdout(b)) => ExecEvent::Stdout {
                data: B64.encode(b),
            },
            Ok(AgentExecEvent::Stderr(b)) => ExecEvent::Stderr {
                data: B64.encode(b),
            },
            Ok(AgentExecEvent::Exited(s)) => {
                last = Some(ExecEvent::Exited {
                    code: s.code,
                    signal: s.signal,
                    cleanup_error: None,
                });
                break;
            }
            Err(e) => {
                let message = match e {
                    AgentError::Closed => format!(
                        "lost the connection to vm {:?} while the command ran",
                        vm.name
                    ),
                    other => other.to_string(),
                };
                last = Some(ExecEvent::Failed {
                    code: code::INTERNAL,
                    message,
                });
                break;
            }
        };
        client_gone = !send(&sink, &wire).await;
    }
    daemon.execs.remove(exec_id);
    // Dropping an unfinished session kills the guest process group.
    drop(session);
    if params.delete_after {
        // Deleted before the final event, so a client that sees the exit
        // code sees the VM gone too.
        let failed = cleanup(daemon, vm.id).await;
        if let Some(ExecEvent::Exited { cleanup_error, .. }) = &mut last {
            *cleanup_error = failed;
        }
    }
    if let (false, Some(last)) = (client_gone, last) {
        send(&sink, &last).await;
    }
    Ok(())
}
