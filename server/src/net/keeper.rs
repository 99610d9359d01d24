//! `bangerd net-keeper DIR`: the process that owns one VM's network
//! namespace from inside (see the module above). pasta starts it in the new
//! namespace; it sets up the tap, addresses and rules, then serves the
//! guest's DNS and the daemon's control socket until the VMM it watches
//! ends (or it is told to end), and it dies with pasta.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_agent::netconf::{GuestNet, Netlink};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::{
    CONFIG_FILE, CONTROL_SOCKET, Control, Egress, KeeperConfig, KeeperStatus, PROXY_PORT, Reply,
    TAP, UPSTREAM_DNS, rules,
};
use crate::process::ProcessIdentity;
use crate::tool::{self, Tool};

/// How long the keeper waits for the daemon to name the VMM to watch: a
/// daemon that died while starting the VM leaves no keeper behind.
const FIRST_WATCH: Duration = Duration::from_secs(120);
/// How often the keeper looks whether the VMM still runs (no pidfd: the
/// VMM is outside the keeper's PID namespace).
const VMM_POLL: Duration = Duration::from_millis(250);
/// How long a connection to a guest port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The keeper's entry point; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let Some(dir) = args.first() else {
        eprintln!("usage: bangerd net-keeper DIR");
        return 2;
    };
    // Ends with pasta (its parent), whatever ends pasta.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number, no pointers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("banger-net: cannot start runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(PathBuf::from(dir))) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("banger-net: {e}");
            1
        }
    }
}

/// What the keeper's tasks share: the guest's addressing, its egress
/// policy (changed at once by the daemon) and the latest refusals.
pub(super) struct Shared {
    pub(super) guest: GuestNet,
    egress: Mutex<Egress>,
    refusals: Mutex<std::collections::VecDeque<(String, u64)>>,
}

/// Refusals kept for `vm show` (each is also a line of the network log).
const REFUSALS_KEPT: usize = 50;

impl Shared {
    /// The current policy.
    pub(super) fn egress(&self) -> Egress {
        self.egress.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Records a refusal, named.
    pub(super) fn refuse(&self, what: String) {
        eprintln!("banger-net: refused {what}");
        if let Ok(mut r) = self.refusals.lock() {
            // The same refusal again (a resolver's retries) counts once more.
            if let Some((last, n)) = r.back_mut()
                && *last == what
            {
                *n += 1;
                return;
            }
            if r.len() == REFUSALS_KEPT {
                r.pop_front();
            }
            r.push_back((what, 1));
        }
    }
}

type State = Shared;

async fn run(dir: PathBuf) -> Result<(), String> {
    let config_path = dir.join(CONFIG_FILE);
    let config: KeeperConfig = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("cannot read {}: {e}", config_path.display()))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("bad config: {e}")))?;

    super::tap::create_persistent(TAP).map_err(|e| format!("cannot create tap {TAP}: {e}"))?;
    let netlink = Netlink::open().map_err(|e| e.to_string())?;
    let in_use = netlink.networks_in_use().await.map_err(|e| e.to_string())?;
    let guest = super::choose_guest_net(&in_use)
        .ok_or("every guest subnet banger knows overlaps the host's networks")?;
    netlink.up("lo").await.map_err(|e| e.to_string())?;
    netlink
        .set_mac(TAP, super::ROUTER_MAC)
        .await
        .map_err(|e| e.to_string())?;
    netlink.up(TAP).await.map_err(|e| e.to_string())?;
    netlink
        .add_address(TAP, guest.gateway, guest.prefix)
        .await
        .map_err(|e| e.to_string())?;
    // This namespace's own switch (the host's is untouched).
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| format!("cannot enable forwarding in the namespace: {e}"))?;
    apply_rules(&guest, &config.egress).await?;

    let state = Arc::new(Shared {
        guest,
        egress: Mutex::new(config.egress.clone()),
        refusals: Mutex::default(),
    });
    let dns = UdpSocket::bind(SocketAddr::from((guest.gateway, 53)))
        .await
        .map_err(|e| format!("cannot listen for DNS on {}:53: {e}", guest.gateway))?;
    tokio::spawn(super::dns::serve(
        dns,
        SocketAddr::from((UPSTREAM_DNS, 53)),
        state.clone(),
    ));
    let proxy = tokio::net::TcpListener::bind(SocketAddr::from((guest.gateway, PROXY_PORT)))
        .await
        .map_err(|e| format!("cannot listen on {}:{PROXY_PORT}: {e}", guest.gateway))?;
    tokio::spawn(super::proxy::serve(proxy, state.clone()));
    let socket_path = dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path)
        .map_err(|e| format!("cannot listen on {}: {e}", socket_path.display()))?;
    let (watch_tx, mut watch_rx) = mpsc::channel::<ProcessIdentity>(4);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    eprintln!(
        "banger-net: ready: guest {}/{} via {}, egress {}",
        guest.address,
        guest.prefix,
        guest.gateway,
        config.egress.mode()
    );

    let first_watch = tokio::time::sleep(FIRST_WATCH);
    tokio::pin!(first_watch);
    let mut vmm: Option<ProcessIdentity> = None;
    let mut poll = tokio::time::interval(VMM_POLL);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_control(stream, state.clone(), watch_tx.clone()));
                }
            }
            Some(identity) = watch_rx.recv() => vmm = Some(identity),
            _ = poll.tick(), if vmm.is_some() => {
                if vmm.is_some_and(|v| !v.is_alive()) {
                    eprintln!("banger-net: the VMM ended; ending the network");
                    return Ok(());
                }
            }
            () = &mut first_watch, if vmm.is_none() => {
                return Err("no VMM to watch was named in time; ending the network".into());
            }
            _ = term.recv() => return Ok(()),
        }
    }
}

async fn serve_control(
    stream: UnixStream,
    state: Arc<State>,
    watch: mpsc::Sender<ProcessIdentity>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(64 * 1024)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(Control::Connect { port }) = serde_json::from_str::<Control>(&line) {
            let guest = Some(state.guest.address);
            if hand_over(&write, guest, port).await.is_err() {
                return;
            }
            continue;
        }
        let reply = match serde_json::from_str::<Control>(&line) {
            Ok(request) => handle(request, &state, &watch).await,
            Err(e) => Reply {
                error: Some(format!("bad request: {e}")),
                status: None,
            },
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_default();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Connects to the guest's `port` from inside the namespace and sends the
/// connection back with the answer (`SCM_RIGHTS`), or the error alone.
async fn hand_over(
    write: &tokio::net::unix::OwnedWriteHalf,
    guest: Option<std::net::Ipv4Addr>,
    port: u16,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let connected = match guest {
        None => Err("keeper state poisoned".to_string()),
        Some(address) => match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((address, port)),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp.into_std().map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(format!("guest port {port}: {e}")),
            Err(_) => Err(format!(
                "guest port {port}: no answer in {CONNECT_TIMEOUT:?}"
            )),
        },
    };
    let reply = Reply {
        error: connected.as_ref().err().cloned(),
        status: None,
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    let unix: &UnixStream = write.as_ref();
    let fds: Vec<std::os::fd::RawFd> = connected.iter().map(|t| t.as_raw_fd()).collect();
    loop {
        unix.writable().await?;
        let sent = unix.try_io(tokio::io::Interest::WRITABLE, || {
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            let iov = [std::io::IoSlice::new(text.as_bytes())];
            nix::sys::socket::sendmsg::<()>(
                unix.as_raw_fd(),
                &iov,
                if fds.is_empty() { &[] } else { &cmsg },
                nix::sys::socket::MsgFlags::empty(),
                None,
            )
            .map(|_| ())
            .map_err(std::io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn handle(
    request: Control,
    state: &Arc<State>,
    watch: &mpsc::Sender<ProcessIdentity>,
) -> Reply {
    let result = match request {
        Control::Status => Ok(()),
        // Served by `hand_over`, which sends a descriptor with its answer.
        Control::Connect { .. } => Err("connect is answered with a descriptor".into()),
        Control::Watch { vmm } => watch
            .send(vmm)
            .await
            .map_err(|_| "the keeper is ending".to_string()),
        Control::SetEgress { egress } => apply_rules(&state.guest, &egress).await.map(|()| {
            eprintln!("banger-net: egress now {}", egress.mode());
            if let Ok(mut e) = state.egress.lock() {
                *e = egress;
            }
        }),
    };
    match result {
        Err(e) => Reply {
            error: Some(e),
            status: None,
        },
        Ok(()) => {
            let refused = refused_count().await;
            let refusals = state
                .refusals
                .lock()
                .map(|r| {
                    r.iter()
                        .map(|(what, n)| match n {
                            1 => what.clone(),
                            n => format!("{what}, {n} times"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Reply {
                error: None,
                status: Some(KeeperStatus {
                    pid: 0,
                    guest: state.guest,
                    egress: state.egress(),
                    refused,
                    refusals,
                }),
            }
        }
    }
}

/// Loads the whole ruleset for the current settings (one transaction).
async fn apply_rules(guest: &GuestNet, egress: &Egress) -> Result<(), String> {
    let text = rules::ruleset(guest, egress);
    nft(&["-f", "-"], Some(text))
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot load the network rules: {e}"))
}

/// Packets the rules refused so far (0 when it cannot be read).
async fn refused_count() -> u64 {
    let name = format!("{} {}", rules::TABLE, rules::REFUSED_COUNTER);
    let Ok(out) = nft(
        &[
            "list",
            "counter",
            "ip",
            rules::TABLE,
            rules::REFUSED_COUNTER,
        ],
        None,
    )
    .await
    else {
        return 0;
    };
    parse_packets(&out).unwrap_or_else(|| {
        eprintln!("banger-net: cannot read counter {name}");
        0
    })
}

/// The `packets N` of `nft list counter` output.
fn parse_packets(listing: &str) -> Option<u64> {
    let mut words = listing.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return words.next()?.parse().ok();
        }
    }
    None
}

async fn nft(args: &[&str], stdin: Option<String>) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut cmd = tool::command(Tool::Nft);
        cmd.args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| tool::spawn_error(&cmd, e).to_string())?;
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin.unwrap_or_default().as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refused_count_is_read_from_nft_output() {
        let listing = "table ip banger {\n\tcounter refused {\n\t\tpackets 3 bytes 180\n\t}\n}\n";
        assert_eq!(parse_packets(listing), Some(3));
        assert_eq!(parse_packets("nothing"), None);
    }
}
