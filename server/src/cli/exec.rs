//! Running a guest command from the terminal: stdin forwarded (piped, or
//! every keystroke on a pseudo-terminal with the host terminal in raw
//! mode), resizes followed, Ctrl-C passed to the guest program, output and
//! exit code passed through.

use std::io::{IsTerminal, Read};
use std::sync::Arc;

use base64::Engine as _;
use jsonrpsee::async_client::Client;
use jsonrpsee::core::client::Error as ClientError;

use super::printer::Printer;
use super::{EXIT_CANNOT_RUN, EXIT_RUN_FAILED, Failure, rpc_failure, terminal};
use crate::api::{BangerApiClient, ExecEvent, ExecParams};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Where and how a guest command runs.
pub(crate) struct ExecTarget<'a> {
    pub(crate) vm: &'a str,
    pub(crate) cwd: Option<String>,
    pub(crate) delete_after: bool,
    pub(crate) auto_prepare: bool,
    pub(crate) tty: bool,
}

pub(crate) fn login_shell() -> Vec<String> {
    vec!["/bin/bash".into(), "--login".into()]
}

/// Runs a guest command, passing its output and exit code through.
pub(crate) async fn exec(
    client: &Arc<Client>,
    target: ExecTarget<'_>,
    argv: Vec<String>,
    printer: &Printer,
) -> Result<u8, Failure> {
    // Without a tty, a terminal's input is not forwarded; piped or
    // redirected stdin streams to the guest. With one, every keystroke
    // goes through (the host terminal in raw mode).
    let forward_stdin = target.tty || !std::io::stdin().is_terminal();
    let size = terminal::size().unwrap_or(crate::api::Terminal { rows: 24, cols: 80 });
    let mut env = Vec::new();
    if target.tty {
        env.push((
            "TERM".to_string(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
        ));
    }
    let params = ExecParams {
        vm: target.vm.to_string(),
        argv,
        env,
        cwd: target.cwd,
        stdin: forward_stdin,
        delete_after: target.delete_after,
        auto_prepare: target.auto_prepare,
        tty: target.tty.then_some(size),
        flow: true,
    };
    let mut sub = client.vm_exec(params).await.map_err(|e| match e {
        ClientError::Call(obj) if obj.code() == crate::api::code::CANNOT_RUN => {
            Failure::new(EXIT_CANNOT_RUN, obj.message().to_string())
        }
        other => rpc_failure(other).exit(EXIT_RUN_FAILED),
    })?;
    let mut interrupts = 0u32;
    let mut running: Option<u64> = None;
    let mut acks = Acks::default();
    // Raw mode for the whole session; restored on every way out.
    let _raw = if target.tty {
        printer.clear_progress();
        terminal::RawMode::enter()
    } else {
        None
    };
    let mut resized =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    loop {
        let event = tokio::select! {
            ev = sub.next() => ev,
            Some(()) = async { match resized.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                if let (Some(id), Some(size)) = (running, terminal::size()) {
                    let _ = client.exec_resize(id, size).await;
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if let Some(id) = running {
                    let sig = if interrupts == 1 { libc::SIGINT } else { libc::SIGKILL };
                    let _ = client.exec_signal(id, sig).await;
                }
                continue;
            }
        };
        match event {
            Some(Ok(ExecEvent::Started { exec_id, warning })) => {
                running = Some(exec_id);
                if let Some(w) = warning {
                    printer.note(&format!("warning: {w}"));
                }
                if forward_stdin {
                    start_stdin_forwarder(client.clone(), exec_id);
                }
            }
            Some(Ok(ExecEvent::Stdout { data })) => {
                let bytes = decode(&data)?;
                // Written (or blocked on a slow reader) before it is
                // acknowledged: the guest program waits for this reader.
                printer.stdout_bytes(&bytes);
                acks.consumed(client, running, bytes.len());
            }
            Some(Ok(ExecEvent::Stderr { data })) => {
                let bytes = decode(&data)?;
                printer.stderr_bytes(&bytes);
                acks.consumed(client, running, bytes.len());
            }
            Some(Ok(ExecEvent::Exited {
                code,
                signal,
                cleanup_error,
            })) => {
                if let Some(e) = cleanup_error {
                    printer.note(&format!("warning: {e}"));
                }
                let status = banger_agent::protocol::ExitStatus { code, signal };
                return Ok(status.shell_code().clamp(0, 255) as u8);
            }
            Some(Ok(ExecEvent::Failed { message, .. })) => {
                return Err(Failure::new(EXIT_RUN_FAILED, message));
            }
            Some(Err(e)) => {
                return Err(Failure::new(
                    EXIT_RUN_FAILED,
                    format!("bad event from bangerd: {e}"),
                ));
            }
            None => {
                return Err(Failure::new(
                    EXIT_RUN_FAILED,
                    "the connection to bangerd closed before the command ended",
                ));
            }
        }
    }
}

/// Acknowledges consumed output to the daemon in batches (`flow` execs).
#[derive(Default)]
pub(crate) struct Acks {
    pending: u64,
}

impl Acks {
    pub(crate) fn consumed(&mut self, client: &Arc<Client>, exec_id: Option<u64>, n: usize) {
        self.pending += n as u64;
        let Some(id) = exec_id else { return };
        if self.pending >= crate::api::EXEC_CLIENT_WINDOW / 4 {
            let bytes = std::mem::take(&mut self.pending);
            let client = client.clone();
            tokio::spawn(async move {
                let _ = client.exec_ack(id, bytes).await;
            });
        }
    }
}

pub(crate) fn decode(data: &str) -> Result<Vec<u8>, Failure> {
    B64.decode(data).map_err(|e| {
        Failure::new(
            EXIT_RUN_FAILED,
            format!("bad output data from bangerd: {e}"),
        )
    })
}

/// Streams this process's stdin to the guest command on a blocking thread.
fn start_stdin_forwarder(client: Arc<Client>, exec_id: u64) {
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            let data = (n > 0).then(|| B64.encode(&buf[..n]));
            let eof = n == 0;
            if handle
                .block_on(client.exec_input(exec_id, data, eof))
                .is_err()
                || eof
            {
                return;
            }
        }
    });
}
