//! Where guest ports are reachable from the host (pure parts): each VM's
//! own loopback address in 127.66.0.0/16, on which its listening ports are
//! forwarded as they appear (so two VMs serving port 8000 never collide),
//! and fixed forwards (`-p [HOSTIP:]HOSTPORT:GUESTPORT`).

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// The first VM loopback address; `.0.0` and `.0.1` are left out.
const FIRST: u32 = u32::from_be_bytes([127, 66, 0, 2]);
/// The last one (127.66.255.254).
const LAST: u32 = u32::from_be_bytes([127, 66, 255, 254]);

/// The lowest loopback address in 127.66.0.0/16 no VM holds.
pub fn allocate_loopback(taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let mut taken: Vec<u32> = taken.iter().map(|a| u32::from(*a)).collect();
    taken.sort_unstable();
    let mut next = FIRST;
    for t in taken {
        if t == next {
            next += 1;
        } else if t > next {
            break;
        }
    }
    (next <= LAST).then(|| Ipv4Addr::from(next))
}

/// A fixed forward: the host's `host_ip:host_port` to the guest's
/// `guest_port` (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to listen on (default 127.0.0.1).
    pub host_ip: IpAddr,
    /// Host port.
    pub host_port: u16,
    /// Guest port.
    pub guest_port: u16,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}:{}", self.host_port, self.guest_port),
            IpAddr::V4(ip) => write!(f, "{ip}:{}:{}", self.host_port, self.guest_port),
        }
    }
}

impl std::str::FromStr for PortMapping {
    type Err = String;

    /// `[HOSTIP:]HOSTPORT:GUESTPORT` (an IPv6 host address in brackets).
    fn from_str(spec: &str) -> Result<PortMapping, String> {
        let bad = |why: &str| {
            format!(
                "invalid port forward {spec:?}: {why}; use [HOSTIP:]HOSTPORT:GUESTPORT, like 8080:80 or 127.0.0.1:8080:80"
            )
        };
        let (host, guest) = spec.rsplit_once(':').ok_or_else(|| bad("no guest port"))?;
        let guest_port = port(guest).ok_or_else(|| bad("bad guest port"))?;
        let (host_ip, host_port) = match host.rsplit_once(':') {
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), host),
            Some((ip, p)) => {
                let ip = ip
                    .strip_prefix('[')
                    .and_then(|i| i.strip_suffix(']'))
                    .unwrap_or(ip);
                (ip.parse().map_err(|_| bad("bad host address"))?, p)
            }
        };
        let host_port = port(host_port).ok_or_else(|| bad("bad host port"))?;
        Ok(PortMapping {
            host_ip,
            host_port,
            guest_port,
        })
    }
}

fn port(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopbacks_fill_the_lowest_gap() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(allocate_loopback(&[]), Some(a("127.66.0.2")));
        assert_eq!(
            allocate_loopback(&[a("127.66.0.3"), a("127.66.0.2")]),
            Some(a("127.66.0.4"))
        );
        assert_eq!(
            allocate_loopback(&[a("127.66.0.2"), a("127.66.0.4")]),
            Some(a("127.66.0.3"))
        );
        // Addresses outside the range do not matter.
        assert_eq!(allocate_loopback(&[a("10.0.0.1")]), Some(a("127.66.0.2")));
        let all: Vec<Ipv4Addr> = (FIRST..=LAST).map(Ipv4Addr::from).collect();
        assert_eq!(allocate_loopback(&all), None);
        assert_eq!(allocate_loopback(&all[1..]), Some(a("127.66.0.2")));
    }

    #[test]
    fn forwards_parse_with_or_without_a_host_address() {
        let m: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(
            (m.host_ip, m.host_port, m.guest_port),
            (IpAddr::V4(Ipv4Addr::LOCALHOST), 8080, 80)
        );
        let m: PortMapping = "0.0.0.0:9000:9000".parse().unwrap();
        assert_eq!(m.host_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let m: PortMapping = "[::1]:9001:22".parse().unwrap();
        assert_eq!(m.to_string(), "[::1]:9001:22");
        for bad in [
            "80",
            "x:80",
            "8080:0",
            "8080:70000",
            "1.2.3:8080:80",
            ":80",
            "a:b:c:d",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
        }
    }
}
