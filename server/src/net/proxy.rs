//! The keeper's egress proxy under `--allow` rules (see `egress.rs` for
//! why a proxy): every TCP connection the guest makes is redirected here;
//! the keeper reads the name it claims (TLS SNI, HTTP Host), checks it
//! against the rules and dials that name itself, so where the guest
//! pointed the connection does not matter. A connection that names
//! nothing goes through only to an address an allowed name has now.
//! Refusals are closed at once and recorded.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::egress::{self, AllowRule, Claim};
use super::keeper::Shared;

/// How long a client has to say which name it wants.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a claim may take (a ClientHello with many extensions fits).
const CLAIM_MAX: usize = 16 << 10;
/// How long dialing out may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections proxied at once.
const CONNECTIONS: usize = 256;

pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            proxy(conn, &shared).await;
            drop(permit);
        });
    }
}

async fn proxy(mut conn: TcpStream, shared: &Shared) {
    let Some(original) = original_destination(&conn) else {
        return;
    };
    let port = original.port();
    let mut head = Vec::with_capacity(2048);
    let claim = tokio::time::timeout(CLAIM_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        loop {
            match egress::claim(&head) {
                Claim::NeedMore if head.len() < CLAIM_MAX => {}
                Claim::NeedMore => return Claim::Nameless,
                other => return other,
            }
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return Claim::Nameless,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or(Claim::Nameless);
    let rules = shared.egress().allow;
    let target = match &claim {
        Claim::Name(name) if egress::allowed(&rules, name, port) => {
            match name.parse::<Ipv4Addr>() {
                Ok(ip) => Some(SocketAddr::from((ip, port))),
                Err(_) => resolve(name).await.map(|ip| SocketAddr::from((ip, port))),
            }
        }
        Claim::Name(name) => {
            shared.refuse(format!("{name}:{port} (connection; not in --allow)"));
            None
        }
        _ => {
            if nameless_allowed(&rules, original).await {
                Some(SocketAddr::V4(original))
            } else {
                shared.refuse(format!(
                    "{original} (connection naming no host; not an address of an allowed name)"
                ));
                None
            }
        }
    };
    let Some(target) = target else {
        // A reset, not a quiet close: the guest's program fails at once.
        let _ = conn.set_zero_linger();
        return;
    };
    let upstream = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await;
    let Ok(Ok(mut upstream)) = upstream else {
        let _ = conn.set_zero_linger();
        return;
    };
    if upstream.write_all(&head).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
}

/// Whether a connection that names no host may go to `to`: an allowed,
/// non-wildcard name has that address now, for that port.
async fn nameless_allowed(rules: &[AllowRule], to: SocketAddrV4) -> bool {
    for rule in rules {
        if rule.host.starts_with("*.") || !rule.allows(&rule.host, to.port()) {
            continue;
        }
        if let Ok(ip) = rule.host.parse::<Ipv4Addr>() {
            if ip == *to.ip() {
                return true;
            }
            continue;
        }
        if resolve_all(&rule.host).await.contains(to.ip()) {
            return true;
        }
    }
    false
}

async fn resolve(name: &str) -> Option<Ipv4Addr> {
    resolve_all(name).await.into_iter().next()
}

/// The name's IPv4 addresses, asked of the host's resolver.
async fn resolve_all(name: &str) -> Vec<Ipv4Addr> {
    let id = (std::process::id() as u16) ^ (name.len() as u16).rotate_left(7);
    let query = egress::a_query(id, name);
    match super::dns::relay(&query, SocketAddr::from((super::UPSTREAM_DNS, 53))).await {
        Some(answer) => egress::a_answers(&answer),
        None => Vec::new(),
    }
}

/// Where the guest meant to connect, before the redirect
/// (`SO_ORIGINAL_DST`).
fn original_destination(conn: &TcpStream) -> Option<SocketAddrV4> {
    use std::os::fd::AsRawFd;
    // SAFETY: `sockaddr_in` is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `addr`, which
    // lives across the call; the fd is the connection's own.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u16::from_be(addr.sin_port),
        )
    })
}
