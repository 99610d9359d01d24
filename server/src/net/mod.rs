//! Each VM's network, without root: a user + network namespace of its own
//! that pasta connects to the host's network, a tap device in it for the
//! VMM, and nftables rules in it that decide what the guest may reach.
//!
//! ```text
//!  host network ── pasta ── up0 ┐ namespace of one VM (owned by the user)   ┌ tap0 ── VMM ── guest eth0
//!                               └ nft: NAT and egress rules; keeper: DNS ──┘
//! ```
//!
//! The **keeper** (`bangerd net-keeper DIR`, [`keeper`]) is pasta's child
//! inside the namespace: it makes the tap, addresses and routes (rtnetlink),
//! loads the rules (`nft`), answers the guest's DNS, and serves a control
//! socket (`DIR/net.sock`) through which the daemon changes the rules of a
//! running VM. It ends when the VMM it watches ends, and pasta ends with it;
//! the daemon also ends both explicitly with the VM
//! (`vmm::network::end`). The processes are spawned in `vmm::network`, the
//! module that spawns VMMs; the VMM joins the keeper's namespaces.
//!
//! The guest is a host on a small subnet whose router (and name server) is
//! the namespace's end of the tap. Without NAT the rules refuse everything
//! the guest sends beyond its link; the guest itself (root inside) cannot
//! change rules that live on the host.

pub mod dns;
pub mod egress;
pub mod keeper;
pub mod ports;
mod proxy;
pub mod rules;
mod tap;

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_agent::netconf::GuestNet;
use serde::{Deserialize, Serialize};

use crate::process::ProcessIdentity;

pub use ports::PortMapping;

/// The VM's tap device, in its namespace.
pub const TAP: &str = "tap0";
/// pasta's interface in the namespace: the way out.
pub const UPLINK: &str = "up0";
/// Where the keeper sends the guest's DNS queries: pasta maps this address
/// to the host's first name server (`--dns-forward`), which may be a
/// loopback address the namespace could not reach otherwise.
pub const UPSTREAM_DNS: Ipv4Addr = Ipv4Addr::new(169, 254, 66, 53);
/// The keeper's proxy for guest TCP under `--allow` rules, on the
/// router's address in the namespace.
pub const PROXY_PORT: u16 = 15001;
/// A guest MAC address for tests and tools; each VM gets its own
/// (`daemon::snapshot::guest_mac`).
pub const GUEST_MAC: &str = "52:54:00:66:00:02";
/// The router's (the tap's) MAC address, the same in every VM's namespace:
/// a guest restored from a snapshot remembers the template's router in its
/// neighbour table, and finds it at once.
pub const ROUTER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x66, 0x00, 0x01];
/// The keeper's control socket, in the VM's runtime directory.
pub const CONTROL_SOCKET: &str = "net.sock";
/// What the keeper is told to do, written by the daemon before it starts.
pub const CONFIG_FILE: &str = "network-config.json";
/// The running network's processes and addresses, written by the daemon.
pub const RECORD_FILE: &str = "network.json";
/// pasta's and the keeper's messages, in the VM's state directory.
pub const LOG_FILE: &str = "network.log";

/// Subnets a guest may use, in order of preference; the first that
/// overlaps nothing the namespace (a copy of the host's addresses and
/// routes) already uses is chosen.
const GUEST_SUBNETS: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(172, 30, 66, 0), 24),
    (Ipv4Addr::new(10, 166, 0, 0), 24),
    (Ipv4Addr::new(192, 168, 166, 0), 24),
];

/// Network trouble.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The keeper's control socket failed.
    #[error("the network of this vm does not answer ({path}): {source}")]
    Control {
        /// The socket.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The keeper refused or failed a request.
    #[error("network: {0}")]
    Keeper(String),
    /// A file of the network could not be read or written.
    #[error("{what} {path}: {source}")]
    File {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a guest may reach beyond its link.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Egress {
    /// Outbound access to anywhere (`--nat`).
    pub nat: bool,
    /// Only these destinations (`--allow`; implies outbound access).
    #[serde(default)]
    pub allow: Vec<egress::AllowRule>,
}

impl Egress {
    /// How `vm show` names it: `none`, `nat` or `allow`.
    pub fn mode(&self) -> &'static str {
        match (self.allow.is_empty(), self.nat) {
            (false, _) => "allow",
            (true, true) => "nat",
            (true, false) => "none",
        }
    }
}

/// What the keeper is asked to set up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeeperConfig {
    /// What the guest may reach.
    pub egress: Egress,
}

/// A running network, as the daemon records it in the VM's runtime
/// directory ([`RECORD_FILE`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRecord {
    /// pasta, the parent of the keeper.
    pub pasta: ProcessIdentity,
    /// The keeper, in the namespace.
    pub keeper: ProcessIdentity,
    /// The guest's addressing.
    pub guest: GuestNet,
}

impl NetworkRecord {
    /// Reads the record of a VM's runtime directory, if it has one.
    pub fn load(runtime_dir: &Path) -> Option<NetworkRecord> {
        let text = std::fs::read_to_string(runtime_dir.join(RECORD_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the record.
    pub fn save(&self, runtime_dir: &Path) -> Result<(), NetError> {
        let path = runtime_dir.join(RECORD_FILE);
        let text = serde_json::to_string(self).unwrap_or_default();
        std::fs::write(&path, text).map_err(|source| NetError::File {
            what: "cannot write",
            path: path.display().to_string(),
            source,
        })
    }
}

/// A request on the keeper's control socket (one JSON line each way).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// What the keeper has set up.
    Status,
    /// Replaces what the guest may reach, at once.
    SetEgress {
        /// The new policy.
        egress: Egress,
    },
    /// A TCP connection to the guest's `port`, made inside the namespace
    /// and handed over with the answer (`SCM_RIGHTS`): how the host
    /// reaches guest ports without root.
    Connect {
        /// The guest port.
        port: u16,
    },
    /// The VMM's process: the keeper ends when it ends. The keeper runs
    /// as pid 1 of a PID namespace of its own (pasta's doing) but sees the
    /// host's `/proc`, so it watches the host pid and start time.
    Watch {
        /// The VMM, as the host sees it.
        vmm: ProcessIdentity,
    },
}

/// The keeper's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// Why the request failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The keeper's state (every successful reply carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<KeeperStatus>,
}

/// What a keeper has set up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeeperStatus {
    /// The keeper's pid as the host sees it (filled in by [`control`] from
    /// the socket's peer credentials: the keeper's own `getpid` is 1).
    #[serde(default)]
    pub pid: i32,
    /// The guest's addressing.
    pub guest: GuestNet,
    /// What the guest may reach.
    pub egress: Egress,
    /// Packets and connections the rules refused so far.
    pub refused: u64,
    /// The latest refusals, named (`pypi.org:443 (not allowed)`), oldest
    /// first.
    #[serde(default)]
    pub refusals: Vec<String>,
}

/// Sends one request to the keeper of the VM whose runtime directory is
/// given, and returns its status. Blocking, with a time-out.
pub fn control(runtime_dir: &Path, request: &Control) -> Result<KeeperStatus, NetError> {
    let path = runtime_dir.join(CONTROL_SOCKET);
    let io = |source| NetError::Control {
        path: path.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(&path).map_err(io)?;
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| io(e.into()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_string(request).unwrap_or_default();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).take_line(&mut answer).map_err(io)?;
    let reply: Reply = serde_json::from_str(&answer)
        .map_err(|e| NetError::Keeper(format!("bad answer {answer:?}: {e}")))?;
    match (reply.error, reply.status) {
        (Some(e), _) => Err(NetError::Keeper(e)),
        (None, Some(status)) => Ok(KeeperStatus {
            pid: peer.pid(),
            ..status
        }),
        (None, None) => Err(NetError::Keeper("empty answer".into())),
    }
}

/// A TCP connection to the guest's `port`, made by the keeper inside the
/// VM's namespace. Blocking, with a time-out.
pub fn connect_guest(runtime_dir: &Path, port: u16) -> Result<std::net::TcpStream, NetError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let path = runtime_dir.join(CONTROL_SOCKET);
    let io = |source| NetError::Control {
        path: path.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(&path).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(io)?;
    let mut line = serde_json::to_string(&Control::Connect { port }).unwrap_or_default();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| io(e.into()))?;
    let mut fd: Option<OwnedFd> = None;
    for cmsg in msg.cmsgs().map_err(|e| io(e.into()))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just gave us this descriptor; nobody
                // else owns it. Extra ones are closed by their OwnedFd.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
        }
    }
    let n = msg.bytes;
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    let reply: Reply = serde_json::from_str(answer.trim_end())
        .map_err(|e| NetError::Keeper(format!("bad answer {answer:?}: {e}")))?;
    if let Some(e) = reply.error {
        return Err(NetError::Keeper(e));
    }
    let fd = fd.ok_or_else(|| NetError::Keeper("no connection came with the answer".into()))?;
    Ok(std::net::TcpStream::from(fd))
}

/// Reading one bounded line (a keeper's answer is small).
trait TakeLine {
    fn take_line(self, out: &mut String) -> std::io::Result<()>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(self, out: &mut String) -> std::io::Result<()> {
        std::io::Read::take(self, 64 * 1024).read_line(out)?;
        Ok(())
    }
}

/// The guest addressing for a namespace already using `in_use` (pure): the
/// first of [`GUEST_SUBNETS`] that overlaps none of them, the router at
/// `.1` and the guest at `.2`.
pub fn choose_guest_net(in_use: &[(Ipv4Addr, u8)]) -> Option<GuestNet> {
    GUEST_SUBNETS
        .iter()
        .find(|(net, prefix)| {
            !in_use
                .iter()
                .any(|(a, p)| overlaps((*net, *prefix), (*a, *p)))
        })
        .map(|(net, prefix)| {
            let base = u32::from(*net);
            GuestNet {
                address: Ipv4Addr::from(base + 2),
                prefix: *prefix,
                gateway: Ipv4Addr::from(base + 1),
            }
        })
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let prefix = a.1.min(b.1);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

/// The subnet of a guest's addressing, as `ADDRESS/PREFIX` (nft syntax).
pub fn subnet(guest: &GuestNet) -> String {
    let mask = u32::MAX << (32 - u32::from(guest.prefix));
    format!(
        "{}/{}",
        Ipv4Addr::from(u32::from(guest.address) & mask),
        guest.prefix
    )
}

/// Where the keeper's binary is: the daemon's own (`bangerd net-keeper`).
pub fn keeper_binary() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("bangerd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_subnet_avoids_what_the_host_uses() {
        let first = choose_guest_net(&[(Ipv4Addr::new(192, 0, 2, 2), 24)]).unwrap();
        assert_eq!(first.address, Ipv4Addr::new(172, 30, 66, 2));
        assert_eq!(first.gateway, Ipv4Addr::new(172, 30, 66, 1));
        // A host on 172.16.0.0/12 pushes the guest to the next candidate.
        let second = choose_guest_net(&[(Ipv4Addr::new(172, 16, 0, 0), 12)]).unwrap();
        assert_eq!(second.address, Ipv4Addr::new(10, 166, 0, 2));
        // A host route covering the second moves it again.
        let third = choose_guest_net(&[
            (Ipv4Addr::new(172, 30, 66, 9), 32),
            (Ipv4Addr::new(10, 0, 0, 0), 8),
        ])
        .unwrap();
        assert_eq!(third.address, Ipv4Addr::new(192, 168, 166, 2));
        assert_eq!(subnet(&third), "192.168.166.0/24");
        assert!(
            choose_guest_net(&[
                (Ipv4Addr::new(0, 0, 0, 0), 1),
                (Ipv4Addr::new(128, 0, 0, 0), 1)
            ])
            .is_none()
        );
    }

    #[test]
    fn control_messages_are_one_json_object() {
        let text = serde_json::to_string(&Control::Connect { port: 22 }).unwrap();
        assert_eq!(text, r#"{"op":"connect","port":22}"#);
        let back: Control =
            serde_json::from_str(r#"{"op":"watch","vmm":{"pid":7,"start_time":9}}"#).unwrap();
        assert_eq!(
            back,
            Control::Watch {
                vmm: ProcessIdentity {
                    pid: 7,
                    start_time: 9
                }
            }
        );
    }
}
