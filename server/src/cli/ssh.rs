//! `banger ssh-config` and `banger ssh-proxy` (ssh's ProxyCommand for
//! `NAME.vm`); the files are `crate::ssh`'s.

use std::sync::Arc;

use super::exec::{ExecTarget, exec};
use super::printer::Printer;
use super::{Failure, rpc_failure};
use crate::api::BangerApiClient;
use crate::client;
use crate::paths::Dirs;
use crate::ssh::{HOST_SUFFIX, SshFiles};

/// The guest's sshd for one connection on stdin/stdout. Options: no PAM
/// (key-only root login needs none, and its session registration made
/// each login wait ~10 s in a guest without logind), and curve25519 key
/// exchange (the default post-quantum hybrid took ~12 s under emulation).
pub(crate) const SSHD: &[&str] = &[
    "/usr/sbin/sshd",
    "-i",
    "-o",
    "UsePAM=no",
    "-o",
    "KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org",
];

/// `banger ssh-config [--install | --uninstall]`.
pub(crate) fn config(
    dirs: &Dirs,
    printer: &Printer,
    install: bool,
    uninstall: bool,
) -> Result<u8, Failure> {
    let files = SshFiles::new(dirs);
    let fail = |e: crate::ssh::SshError| Failure::new(1, e.to_string());
    let banger = std::env::current_exe()
        .map_err(|e| Failure::new(1, format!("cannot find banger's own path: {e}")))?;
    files.write_config(&banger).map_err(fail)?;
    files.public_key().map_err(fail)?;
    if !install && !uninstall {
        printer.line(&files.config().display().to_string());
        printer.note("add it to ~/.ssh/config with: banger ssh-config --install");
        return Ok(0);
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Failure::new(1, "HOME is not set; cannot find ~/.ssh/config"))?;
    let (path, changed) =
        crate::ssh::edit_user_config(std::path::Path::new(&home), &files.config(), install)
            .map_err(fail)?;
    let what = match (install, changed) {
        (true, true) => "added banger's Include to",
        (true, false) => "banger's Include is already in",
        (false, true) => "removed banger's Include from",
        (false, false) => "banger's Include was not in",
    };
    printer.note(&format!("{what} {}", path.display()));
    if install {
        printer.note(&format!(
            "ssh NAME{HOST_SUFFIX} now reaches vm NAME (it must be running)"
        ));
    }
    Ok(0)
}

/// `banger ssh-proxy NAME.vm`: stdin/stdout become the guest's `sshd -i`.
pub(crate) async fn proxy(dirs: &Dirs, printer: &Printer, host: &str) -> Result<u8, Failure> {
    let name = host.strip_suffix(HOST_SUFFIX).unwrap_or(host);
    let client = Arc::new(client::connect_or_start(dirs).await?);
    client
        .vm_ssh_prepare(name.to_string())
        .await
        .map_err(rpc_failure)?;
    let target = ExecTarget {
        vm: name,
        cwd: Some("/".into()),
        delete_after: false,
        auto_prepare: false,
        tty: false,
    };
    exec(
        &client,
        target,
        SSHD.iter().map(|s| s.to_string()).collect(),
        printer,
    )
    .await
}

/// The guest's `sshd -i` as a byte stream in this process: a duplex pipe
/// whose far end a task feeds from the daemon's exec of it (stdout in,
/// stdin out, both flow-controlled). sshd's stderr goes to ours.
async fn sshd_stream(
    client: &Arc<jsonrpsee::async_client::Client>,
    vm: &str,
) -> Result<tokio::io::DuplexStream, Failure> {
    use crate::api::{ExecEvent, ExecParams};
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b64 = base64::engine::general_purpose::STANDARD;
    let params = ExecParams {
        vm: vm.to_string(),
        argv: SSHD.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: Some("/".into()),
        stdin: true,
        delete_after: false,
        auto_prepare: false,
        tty: None,
        flow: true,
    };
    let mut sub = client.vm_exec(params).await.map_err(rpc_failure)?;
    let exec_id = match sub.next().await {
        Some(Ok(ExecEvent::Started { exec_id, .. })) => exec_id,
        Some(Ok(ExecEvent::Failed { message, .. })) => return Err(Failure::new(1, message)),
        other => {
            return Err(Failure::new(
                1,
                format!("the guest's sshd did not start: {other:?}"),
            ));
        }
    };
    let (ours, theirs) = tokio::io::duplex(256 << 10);
    let (mut from_ssh, mut to_ssh) = tokio::io::split(theirs);
    let input = client.clone();
    let b64_in = b64.clone();
    tokio::spawn(async move {
        let b64 = b64_in;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = from_ssh.read(&mut buf).await.unwrap_or(0);
            let data = (n > 0).then(|| b64.encode(&buf[..n]));
            if input.exec_input(exec_id, data, n == 0).await.is_err() || n == 0 {
                return;
            }
        }
    });
    let acks = client.clone();
    tokio::spawn(async move {
        let mut unacked = 0u64;
        while let Some(Ok(event)) = sub.next().await {
            match event {
                ExecEvent::Stdout { data } => {
                    let Ok(bytes) = b64.decode(&data) else { return };
                    if to_ssh.write_all(&bytes).await.is_err() {
                        return;
                    }
                    unacked += bytes.len() as u64;
                    if unacked >= crate::api::EXEC_CLIENT_WINDOW / 4 {
                        let _ = acks.exec_ack(exec_id, std::mem::take(&mut unacked)).await;
                    }
                }
                ExecEvent::Stderr { data } => {
                    if let Ok(bytes) = b64.decode(&data) {
                        use std::io::Write;
                        let _ = std::io::stderr().write_all(&bytes);
                    }
                }
                // sshd ended: its stdout closes with this task.
                _ => return,
            }
        }
    });
    Ok(ours)
}

/// Accepts exactly the host key the guest's agent reported.
struct KnownHost {
    key: String,
}

impl russh::client::Handler for KnownHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A certificate is not what the agent reported: refused.
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            return Ok(false);
        };
        let offered = key.to_openssh().unwrap_or_default();
        let offered: Vec<&str> = offered.split_whitespace().take(2).collect();
        let known: Vec<&str> = self.key.split_whitespace().take(2).collect();
        Ok(offered == known)
    }
}

/// `banger vm ssh VM [-- CMD ARGS...]`: banger's own ssh client (russh)
/// over the guest's `sshd -i`; the command's exit code comes back.
pub(crate) async fn vm_ssh(
    dirs: &Dirs,
    printer: &Printer,
    vm: &str,
    command: Vec<String>,
) -> Result<u8, Failure> {
    use russh::ChannelMsg;
    use std::io::IsTerminal;
    let client = Arc::new(client::connect_or_start(dirs).await?);
    let info = client
        .vm_ssh_prepare(vm.to_string())
        .await
        .map_err(rpc_failure)?;
    let key = russh::keys::load_secret_key(&info.identity, None)
        .map_err(|e| Failure::new(1, format!("cannot read {}: {e}", info.identity)))?;
    let stream = sshd_stream(&client, vm).await?;
    let config = Arc::new(russh::client::Config {
        preferred: russh::Preferred {
            kex: std::borrow::Cow::Owned(vec![
                russh::kex::CURVE25519,
                russh::kex::CURVE25519_PRE_RFC_8731,
                russh::kex::EXTENSION_SUPPORT_AS_CLIENT,
            ]),
            ..Default::default()
        },
        ..Default::default()
    });
    let ssh_failed = |e: russh::Error| Failure::new(1, format!("ssh to vm {vm:?}: {e}"));
    let mut session = russh::client::connect_stream(
        config,
        stream,
        KnownHost {
            key: info.host_key.clone(),
        },
    )
    .await
    .map_err(|e| match e {
        russh::Error::UnknownKey => Failure::new(
            1,
            format!("vm {vm:?} offered a host key other than the one its agent reported; refusing"),
        ),
        other => ssh_failed(other),
    })?;
    let auth = session
        .authenticate_publickey(
            info.user.clone(),
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .map_err(ssh_failed)?;
    if !auth.success() {
        return Err(Failure::new(
            1,
            format!("vm {vm:?} refused banger's ssh key"),
        ));
    }
    let channel = session.channel_open_session().await.map_err(ssh_failed)?;
    let interactive = command.is_empty();
    let tty = interactive && std::io::stdin().is_terminal();
    if tty {
        let size = super::terminal::size().unwrap_or(crate::api::Terminal { rows: 24, cols: 80 });
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        channel
            .request_pty(true, &term, size.cols.into(), size.rows.into(), 0, 0, &[])
            .await
            .map_err(ssh_failed)?;
    }
    if interactive {
        channel.request_shell(true).await.map_err(ssh_failed)?;
    } else {
        // sshd hands the command to the remote shell: each word quoted so
        // the guest program gets exactly this argv.
        channel
            .exec(true, crate::ssh::command_line(&command))
            .await
            .map_err(ssh_failed)?;
    }
    printer.clear_progress();
    let _raw = if tty {
        super::terminal::RawMode::enter()
    } else {
        None
    };
    let (mut read, write) = channel.split();
    let write = Arc::new(write);
    // Our stdin to the channel, on a thread (stdin reads block).
    let (stdin_tx, mut stdin_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stdin_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut resized =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    let mut code: Option<u8> = None;
    let mut stdin_open = true;
    loop {
        tokio::select! {
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) => printer.stdout_bytes(&data),
                Some(ChannelMsg::ExtendedData { data, .. }) => printer.stderr_bytes(&data),
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    code = Some(exit_status.clamp(0, 255) as u8);
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    code = Some(128 + signal_number(&signal_name));
                }
                Some(_) => {}
                None => break,
            },
            data = stdin_rx.recv(), if stdin_open => match data {
                Some(bytes) => {
                    if write.data(&bytes[..]).await.is_err() {
                        stdin_open = false;
                    }
                }
                None => {
                    stdin_open = false;
                    let _ = write.eof().await;
                }
            },
            Some(()) = async { match resized.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } }, if tty => {
                if let Some(size) = super::terminal::size() {
                    let _ = write.window_change(size.cols.into(), size.rows.into(), 0, 0).await;
                }
            }
        }
    }
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    Ok(code.unwrap_or(255))
}

/// The number of a signal ssh names (128 + it is a shell's exit code).
fn signal_number(sig: &russh::Sig) -> u8 {
    use russh::Sig;
    match sig {
        Sig::ABRT => 6,
        Sig::ALRM => 14,
        Sig::FPE => 8,
        Sig::HUP => 1,
        Sig::ILL => 4,
        Sig::INT => 2,
        Sig::KILL => 9,
        Sig::PIPE => 13,
        Sig::QUIT => 3,
        Sig::SEGV => 11,
        Sig::TERM => 15,
        Sig::USR1 => 10,
        Sig::Custom(_) => 127,
    }
}
