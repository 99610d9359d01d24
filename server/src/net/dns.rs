//! The guest's name server: the keeper relays each UDP query to the host's
//! resolver (through pasta, [`super::UPSTREAM_DNS`]) and the answer back.
//! Queries are answered only while the guest may go out, and under
//! `--allow` rules only for names a rule covers (others get REFUSED, and
//! the refusal is recorded); the number in flight is bounded.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// Queries relayed at once; more wait.
const IN_FLIGHT: usize = 64;
/// How long the upstream resolver has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger than any UDP DNS message a resolver sends with EDNS.
const MAX_MESSAGE: usize = 4096;

/// Serves queries arriving on `socket` until the task is dropped, under
/// the keeper's current policy.
pub(super) async fn serve(
    socket: UdpSocket,
    upstream: SocketAddr,
    shared: Arc<super::keeper::Shared>,
) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let egress = shared.egress();
        if n < 12 || (!egress.nat && egress.allow.is_empty()) {
            continue;
        }
        if !egress.allow.is_empty() {
            let name = super::egress::query_name(&buf[..n]);
            let named = name
                .as_deref()
                .is_some_and(|q| egress.allow.iter().any(|r| r.names(q)));
            if !named {
                shared.refuse(format!(
                    "name {} (lookup; not in --allow)",
                    name.as_deref().unwrap_or("?")
                ));
                if let Some(answer) = super::egress::refused(&buf[..n]) {
                    let _ = socket.send_to(&answer, from).await;
                }
                continue;
            }
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let query = buf[..n].to_vec();
        let socket = socket.clone();
        tokio::spawn(async move {
            if let Some(answer) = relay(&query, upstream).await {
                let _ = socket.send_to(&answer, from).await;
            }
            drop(permit);
        });
    }
}

/// Sends one query upstream and returns its answer (same transaction id),
/// within the time-out.
pub(super) async fn relay(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let out = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    out.connect(upstream).await.ok()?;
    out.send(query).await.ok()?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, out.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        // The same transaction id, or it is not our answer.
        if n >= 12 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}
