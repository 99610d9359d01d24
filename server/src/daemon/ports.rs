//! Guest ports reachable from the host, without root: while a VM runs, a
//! task asks its agent every second which TCP ports the guest listens on
//! (beyond its own loopback) and listens on the VM's loopback address
//! (`net::ports`, 127.66.x.y) on the same port; its fixed forwards (`-p`)
//! listen from the start. Each connection is carried to the guest through
//! a connection the VM's keeper makes inside the namespace
//! (`net::connect_guest`). The task ends with the VM (`stop_forwarding`
//! from `end_process`), and so do its listeners.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{Daemon, OpError, lock};
use crate::api::PortView;
use crate::net::PortMapping;
use crate::store::VmRecord;

/// How often the guest's listening ports are read.
const POLL: Duration = Duration::from_secs(1);

/// Where each guest port is reachable, or why it is not.
pub(crate) type Reach = BTreeMap<u16, Vec<Result<SocketAddr, String>>>;

/// One VM's forwarding: its task and what it has set up.
pub(crate) struct VmForwards {
    task: JoinHandle<()>,
    reach: Arc<Mutex<Reach>>,
}

impl Drop for VmForwards {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener's task, aborted when dropped.
struct Listening(JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Daemon {
    /// Starts (or restarts) forwarding a running VM's ports.
    pub(crate) fn start_forwarding(self: &Arc<Self>, vm: &VmRecord) {
        let Some(loopback) = vm.loopback else {
            return;
        };
        // The debug builds' fake VMM's "guest" is this host: its ports are
        // the host's own.
        if cfg!(debug_assertions) && vm.vmm == "fake" {
            return;
        }
        let reach = Arc::new(Mutex::new(Reach::new()));
        let task = tokio::spawn(forward(
            self.clone(),
            vm.id.clone(),
            IpAddr::V4(loopback),
            vm.published.clone(),
            self.dirs.vm_runtime(&vm.id),
            reach.clone(),
        ));
        lock(&self.forwards).insert(vm.id.clone(), VmForwards { task, reach });
    }

    /// Ends a VM's forwarding and closes its listeners.
    pub(crate) fn stop_forwarding(&self, id: &str) {
        lock(&self.forwards).remove(id);
    }

    /// Where each guest port of a VM is reachable from the host.
    pub(crate) fn reach(&self, id: &str) -> Reach {
        lock(&self.forwards)
            .get(id)
            .map(|f| lock(&f.reach).clone())
            .unwrap_or_default()
    }

    /// A running VM's listening sockets (as its guest reports them:
    /// untrusted, bounded by the agent protocol) and where the host reaches
    /// each.
    pub(crate) async fn vm_ports(&self, name_or_id: &str) -> Result<Vec<PortView>, OpError> {
        let (vm, client) = self.running_agent(name_or_id).await?;
        let sockets = client
            .ports()
            .await
            .map_err(|e| OpError::internal(format!("cannot list the guest's ports: {e}")))?;
        let reach = self.reach(&vm.id);
        Ok(sockets
            .into_iter()
            .map(|s| {
                let results = reach.get(&s.port).cloned().unwrap_or_default();
                let (host, note) = if s.proto != "tcp" {
                    (Vec::new(), Some("udp ports are not forwarded".to_string()))
                } else if s.loopback_only() {
                    (
                        Vec::new(),
                        Some("bound to the guest's loopback only; bind 0.0.0.0 to reach it from the host".to_string()),
                    )
                } else {
                    let host: Vec<String> = results
                        .iter()
                        .filter_map(|r| r.as_ref().ok().map(|a| a.to_string()))
                        .collect();
                    let note = results.iter().find_map(|r| r.as_ref().err().cloned()).or_else(|| {
                        host.is_empty()
                            .then(|| "not forwarded yet (ports are looked for every second)".to_string())
                    });
                    (host, note)
                };
                PortView {
                    proto: s.proto,
                    address: s.address.to_string(),
                    port: s.port,
                    process: s.process,
                    host,
                    note,
                }
            })
            .collect())
    }

    /// Forwards the ports of every running VM (a daemon that starts).
    pub(crate) fn resume_forwarding(self: &Arc<Self>) {
        let vms = self.with_store(|s| s.list_vms()).unwrap_or_default();
        for vm in vms {
            if vm.state == crate::store::VmState::Running {
                self.start_forwarding(&vm);
            }
        }
    }
}

async fn forward(
    daemon: Arc<Daemon>,
    id: String,
    loopback: IpAddr,
    published: Vec<PortMapping>,
    runtime_dir: PathBuf,
    reach: Arc<Mutex<Reach>>,
) {
    // Fixed forwards listen for the VM's whole run.
    let mut fixed: Vec<Listening> = Vec::new();
    let mut fixed_reach: Reach = Reach::new();
    for m in &published {
        let at = SocketAddr::new(m.host_ip, m.host_port);
        let result = listen(at, runtime_dir.clone(), m.guest_port).await;
        let entry = fixed_reach.entry(m.guest_port).or_default();
        match result {
            Ok(l) => {
                fixed.push(l);
                entry.push(Ok(at));
            }
            Err(e) => entry.push(Err(e)),
        }
    }
    let mut auto: HashMap<u16, (Result<SocketAddr, String>, Option<Listening>)> = HashMap::new();
    loop {
        // The task ends when the VM's run ends (`stop_forwarding`); until
        // then a guest that does not answer (yet) is asked again. A VM
        // that no longer exists ends it too.
        let sockets = match daemon.running_agent(&id).await {
            Ok((_, client)) => client.ports().await.ok(),
            Err(e) if e.code == crate::api::code::NOT_FOUND => return,
            Err(_) => None,
        };
        let Some(sockets) = sockets else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let wanted: std::collections::BTreeSet<u16> = sockets
            .iter()
            .filter(|s| s.proto == "tcp" && !s.loopback_only())
            .map(|s| s.port)
            .collect();
        auto.retain(|port, _| wanted.contains(port));
        for port in &wanted {
            if auto.contains_key(port) {
                continue;
            }
            let at = SocketAddr::new(loopback, *port);
            let entry = match listen(at, runtime_dir.clone(), *port).await {
                Ok(l) => (Ok(at), Some(l)),
                Err(e) => (Err(e), None),
            };
            auto.insert(*port, entry);
        }
        {
            let mut now = fixed_reach.clone();
            for (port, (result, _)) in &auto {
                now.entry(*port).or_default().insert(0, result.clone());
            }
            *lock(&reach) = now;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Listens on `at` and carries each connection to the guest's `port`.
async fn listen(at: SocketAddr, runtime_dir: PathBuf, port: u16) -> Result<Listening, String> {
    let listener = TcpListener::bind(at).await.map_err(|e| {
        let hint = if at.port() < 1024 && e.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                " (ports below 1024 need root; forward another: -p {}:{port})",
                at.port() + 8000
            )
        } else {
            String::new()
        };
        format!("cannot listen on {at}: {e}{hint}")
    })?;
    Ok(Listening(tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let dir = runtime_dir.clone();
            tokio::spawn(async move {
                let guest =
                    tokio::task::spawn_blocking(move || crate::net::connect_guest(&dir, port))
                        .await;
                let guest = match guest {
                    Ok(Ok(g)) => g,
                    Ok(Err(e)) => {
                        tracing::debug!("forward to guest port {port}: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                if guest.set_nonblocking(true).is_err() {
                    return;
                }
                let Ok(mut guest) = TcpStream::from_std(guest) else {
                    return;
                };
                let mut conn = conn;
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut guest).await;
            });
        }
    })))
}
