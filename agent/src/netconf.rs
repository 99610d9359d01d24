//! Interface configuration with rtnetlink, shared by the guest (its `eth0`,
//! from the kernel command line the host wrote) and the host's per-VM
//! network namespace (the VM's tap and the namespace's loopback).
//!
//! Links, addresses and routes are made with netlink messages, never by
//! running `ip`: the guest image need not have iproute2, and it works inside
//! a user namespace.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// Kernel command-line argument carrying a guest's network: `banger.net=`
/// `ADDRESS/PREFIX,GATEWAY`. A guest booted without it has no network.
pub const KERNEL_ARG: &str = "banger.net";

/// A guest's IPv4 configuration: its address, its subnet and its router
/// (which is also its name server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestNet {
    /// The guest's address.
    pub address: Ipv4Addr,
    /// Prefix length of the guest's subnet.
    pub prefix: u8,
    /// Router and name server, on the host side of the link.
    pub gateway: Ipv4Addr,
}

impl GuestNet {
    /// The kernel command-line argument for this configuration.
    pub fn kernel_arg(&self) -> String {
        format!(
            "{KERNEL_ARG}={}/{},{}",
            self.address, self.prefix, self.gateway
        )
    }

    /// The configuration in a kernel command line: `None` when there is
    /// none, an error when it is malformed.
    pub fn from_cmdline(cmdline: &str) -> Option<Result<GuestNet, String>> {
        let prefix = format!("{KERNEL_ARG}=");
        let value = cmdline
            .split_ascii_whitespace()
            .find_map(|arg| arg.strip_prefix(prefix.as_str()))?;
        Some(GuestNet::parse(value).ok_or_else(|| format!("bad {KERNEL_ARG}={value:?}")))
    }

    fn parse(value: &str) -> Option<GuestNet> {
        let (cidr, gateway) = value.split_once(',')?;
        let (address, prefix) = cidr.split_once('/')?;
        let prefix: u8 = prefix.parse().ok()?;
        (1..=30).contains(&prefix).then_some(())?;
        Some(GuestNet {
            address: address.parse().ok()?,
            prefix,
            gateway: gateway.parse().ok()?,
        })
    }
}

/// Netlink trouble, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NetconfError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// A request failed.
    #[error("{what}: {source}")]
    Request {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// No such link.
    #[error("no network interface {0}")]
    NoLink(String),
}

/// A netlink connection, served by a task on the current runtime.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection in the caller's network namespace.
    pub fn open() -> Result<Netlink, NetconfError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetconfError::Socket)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, NetconfError> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetconfError::Request {
                what: "listing network interfaces".into(),
                source,
            })
    }

    /// The index of the link called `name`.
    pub async fn index_of(&self, name: &str) -> Result<u32, NetconfError> {
        self.links()
            .await?
            .iter()
            .find(|l| link_name(l) == Some(name))
            .map(|l| l.header.index)
            .ok_or_else(|| NetconfError::NoLink(name.to_string()))
    }

    /// The name of the first link that is not the loopback, if any.
    pub async fn first_ethernet(&self) -> Result<Option<String>, NetconfError> {
        Ok(self
            .links()
            .await?
            .iter()
            .filter_map(link_name)
            .find(|n| *n != "lo")
            .map(str::to_string))
    }

    /// Brings a link up.
    pub async fn up(&self, name: &str) -> Result<(), NetconfError> {
        let index = self.index_of(name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| NetconfError::Request {
                what: format!("bringing {name} up"),
                source,
            })
    }

    /// Gives a link a new hardware (MAC) address; virtio-net takes it while
    /// the link is up.
    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), NetconfError> {
        let index = self.index_of(name).await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(|source| NetconfError::Request {
                what: format!("setting the MAC address of {name}"),
                source,
            })
    }

    /// Gives a link an address (replacing the same one if present).
    pub async fn add_address(
        &self,
        name: &str,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetconfError> {
        let index = self.index_of(name).await?;
        self.handle
            .address()
            .add(index, address.into(), prefix)
            .replace()
            .execute()
            .await
            .map_err(|source| NetconfError::Request {
                what: format!("adding {address}/{prefix} to {name}"),
                source,
            })
    }

    /// Makes `gateway` the default route (replacing one that exists).
    pub async fn default_route(&self, gateway: Ipv4Addr) -> Result<(), NetconfError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|source| NetconfError::Request {
                what: format!("adding the default route via {gateway}"),
                source,
            })
    }

    /// The IPv4 networks this namespace already uses: its addresses' subnets
    /// and its routes' destinations (the default route left out).
    pub async fn networks_in_use(&self) -> Result<Vec<(Ipv4Addr, u8)>, NetconfError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        let mut out = Vec::new();
        let addresses: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetconfError::Request {
                what: "listing addresses".into(),
                source,
            })?;
        for a in &addresses {
            for attr in &a.attributes {
                if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr {
                    out.push((*ip, a.header.prefix_len));
                }
            }
        }
        let routes: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetconfError::Request {
                what: "listing routes".into(),
                source,
            })?;
        for r in &routes {
            let prefix = r.header.destination_prefix_length;
            for attr in &r.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(ip)) = attr
                    && prefix > 0
                {
                    out.push((*ip, prefix));
                }
            }
        }
        Ok(out)
    }

    /// Configures a guest: loopback up, `ifname` up with its address, the
    /// default route through the gateway.
    pub async fn configure_guest(&self, ifname: &str, net: &GuestNet) -> Result<(), NetconfError> {
        self.up("lo").await?;
        self.up(ifname).await?;
        self.add_address(ifname, net.address, net.prefix).await?;
        self.default_route(net.gateway).await
    }
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_arg_round_trips() {
        let net = GuestNet {
            address: Ipv4Addr::new(172, 30, 66, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(172, 30, 66, 1),
        };
        let line = format!("console=ttyS0 {} quiet", net.kernel_arg());
        assert_eq!(GuestNet::from_cmdline(&line), Some(Ok(net)));
        assert_eq!(GuestNet::from_cmdline("console=ttyS0 quiet"), None);
    }

    #[test]
    fn a_malformed_kernel_arg_is_an_error() {
        for bad in [
            "banger.net=",
            "banger.net=1.2.3.4",
            "banger.net=1.2.3.4/24",
            "banger.net=1.2.3.4/33,1.2.3.1",
            "banger.net=1.2.3.4/0,1.2.3.1",
            "banger.net=x/24,1.2.3.1",
            "banger.net=1.2.3.4/24,y",
        ] {
            assert!(matches!(GuestNet::from_cmdline(bad), Some(Err(_))), "{bad}");
        }
    }
}
