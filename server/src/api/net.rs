//! Wire types of a VM's network: `vm show`'s network, `vm ports`, ssh.

use serde::{Deserialize, Serialize};

/// A VM's network, as `vm show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkView {
    /// What the guest may reach: `none` (nothing beyond its link), `nat`
    /// (anywhere) or `allow` (only the `allow` rules).
    pub mode: String,
    /// Egress rules (`--allow`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// What the rules refused lately, named (`vm show` of a running VM).
    #[serde(default)]
    pub refused: Vec<String>,
    /// The guest's address inside its own network, while running.
    #[serde(default)]
    pub guest_address: Option<String>,
    /// Its router and name server, while running.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The network's log (pasta and the keeper).
    #[serde(default)]
    pub log: String,
    /// The host address where the guest's listening ports are forwarded
    /// as they appear (`curl http://ADDRESS:PORT`).
    #[serde(default)]
    pub host_address: Option<String>,
    /// Fixed forwards (`-p`), `HOSTIP:HOSTPORT:GUESTPORT` each.
    #[serde(default)]
    pub published: Vec<String>,
    /// Where the guest's ports are reachable now, `HOST:PORT -> GUESTPORT`
    /// each (auto-forwarded and fixed), while it runs.
    #[serde(default)]
    pub forwarded: Vec<String>,
}

/// How to reach a VM with ssh (`vm_ssh_prepare`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshInfo {
    /// The host name ssh knows it by (`NAME.vm`).
    pub host: String,
    /// The guest user.
    pub user: String,
    /// banger's private key.
    pub identity: String,
    /// The known_hosts file with its host key.
    pub known_hosts: String,
    /// Its host key (`ssh-ed25519 AAAA...`).
    pub host_key: String,
}

/// A guest's listening socket and where the host reaches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortView {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The guest address it is bound to.
    pub address: String,
    /// The guest port.
    pub port: u16,
    /// The guest process holding it (as the guest names it).
    pub process: Option<String>,
    /// Host addresses that reach it.
    pub host: Vec<String>,
    /// Why it is not reachable from the host, when it is not.
    pub note: Option<String>,
}
