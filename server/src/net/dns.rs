//! The guest's name server: the keeper relays each UDP query to the host's
//! resolver (through pasta, [`super::UPSTREAM_DNS`]) and the answer back.
//! Queries are answered only while the guest may go out; the number in
//! flight is bounded.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// Queries relayed at once; more wait.
const IN_FLIGHT: usize = 64;
/// How long the upstream resolver has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger than any UDP DNS message a resolver sends with EDNS.
const MAX_MESSAGE: usize = 4096;

/// Serves queries arriving on `socket` until the task is dropped. `open`
/// says whether to answer at all (outbound access on).
pub async fn serve(socket: UdpSocket, upstream: SocketAddr, open: Arc<AtomicBool>) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if !open.load(Ordering::Relaxed) || n < 12 {
            continue;
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

async fn relay(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
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
