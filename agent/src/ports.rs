//! The guest's listening sockets, from `/proc/net/{tcp,tcp6,udp,udp6}` and
//! each process's `/proc/PID/fd` (no tool in the guest needed): what `vm
//! ports` lists and what the host forwards.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningSocket {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The address it is bound to (`0.0.0.0`, `::`, `127.0.0.1`, ...).
    pub address: IpAddr,
    /// Its port.
    pub port: u16,
    /// The process holding it, when known.
    #[serde(default)]
    pub process: Option<String>,
    /// That process's pid.
    #[serde(default)]
    pub pid: Option<u32>,
}

impl ListeningSocket {
    /// Whether only the guest itself can reach it (a loopback address).
    pub fn loopback_only(&self) -> bool {
        self.address.is_loopback()
    }
}

/// TCP's LISTEN state in `/proc/net/tcp*`.
const TCP_LISTEN: &str = "0A";
/// UDP's state of a bound, unconnected socket.
const UDP_UNCONNECTED: &str = "07";

/// Parses one `/proc/net/{tcp,udp}[6]` table (pure): the sockets in a
/// listening state, as (address, port, inode).
pub fn parse_table(text: &str, udp: bool) -> Vec<(IpAddr, u16, u64)> {
    let listening = if udp { UDP_UNCONNECTED } else { TCP_LISTEN };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != listening {
                return None;
            }
            let (addr, port) = fields[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let inode = fields[9].parse().ok()?;
            Some((parse_address(addr)?, port, inode))
        })
        .collect()
}

/// The kernel's hex spelling of an address: 32-bit words in host (little
/// endian) byte order.
fn parse_address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_le_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4-mapped address is the v4 one.
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// The guest's listening sockets with their processes, sorted by protocol
/// and port. Reads `/proc`.
pub fn listening() -> Vec<ListeningSocket> {
    let mut found = Vec::new();
    for (file, proto, udp) in [
        ("/proc/net/tcp", "tcp", false),
        ("/proc/net/tcp6", "tcp", false),
        ("/proc/net/udp", "udp", true),
        ("/proc/net/udp6", "udp", true),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (address, port, inode) in parse_table(&text, udp) {
            found.push((proto, address, port, inode));
        }
    }
    let owners = socket_owners();
    let activated = socket_units();
    let mut out: Vec<ListeningSocket> = found
        .into_iter()
        .map(|(proto, address, port, inode)| {
            let owner = owners.get(&inode);
            // A socket systemd holds for a service it starts on first use
            // is named by that service's program.
            let process = match owner {
                Some((1, _)) => activated
                    .iter()
                    .find(|(p, _, _)| *p == port && proto == "tcp")
                    .map(|(_, unit, program)| format!("{program} (via {unit})"))
                    .or_else(|| owner.map(|(_, name)| name.clone())),
                _ => owner.map(|(_, name)| name.clone()),
            };
            ListeningSocket {
                proto: proto.to_string(),
                address,
                port,
                process,
                pid: owner.map(|(pid, _)| *pid),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.proto, a.port, a.address).cmp(&(&b.proto, b.port, b.address)));
    out.dedup();
    out
}

/// The enabled systemd socket units: (TCP port, unit, the program of the
/// service it starts).
fn socket_units() -> Vec<(u16, String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/etc/systemd/system/sockets.target.wants") else {
        return out;
    };
    for entry in entries.flatten() {
        let unit = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = unit.strip_suffix(".socket") else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let (ports, accept) = parse_socket_unit(&text);
        let service = if accept {
            format!("{stem}@.service")
        } else {
            format!("{stem}.service")
        };
        let program = [
            "/etc/systemd/system",
            "/lib/systemd/system",
            "/usr/lib/systemd/system",
        ]
        .iter()
        .find_map(|dir| std::fs::read_to_string(format!("{dir}/{service}")).ok())
        .and_then(|t| service_program(&t))
        .unwrap_or_else(|| service.clone());
        for port in ports {
            out.push((port, unit.clone(), program.clone()));
        }
    }
    out
}

/// A socket unit's TCP ports (`ListenStream=22`, `[::]:22`,
/// `0.0.0.0:22`) and whether it has `Accept=yes` (pure).
pub fn parse_socket_unit(text: &str) -> (Vec<u16>, bool) {
    let mut ports = Vec::new();
    let mut accept = false;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("ListenStream=") {
            let port = v.rsplit(':').next().unwrap_or(v);
            if let Ok(p) = port.trim().parse() {
                ports.push(p);
            }
        } else if let Some(v) = line.strip_prefix("Accept=") {
            accept = matches!(v.trim(), "yes" | "true" | "1" | "on");
        }
    }
    (ports, accept)
}

/// The program name of a service's `ExecStart=` (pure).
pub fn service_program(text: &str) -> Option<String> {
    let exec = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("ExecStart="))?;
    let word = exec
        .trim_start_matches(['-', '@', '!', '+', ':'])
        .split_whitespace()
        .next()?;
    Some(word.rsplit('/').next().unwrap_or(word).to_string())
}

/// Socket inode -> (pid, process name), from every process's fds.
fn socket_owners() -> HashMap<u64, (u32, String)> {
    let mut owners = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let mut name: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let name = name.get_or_insert_with(|| {
                std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default()
            });
            owners.entry(inode).or_insert((pid, name.clone()));
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21841 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21842 1 0000000000000000 100 0 0 10 0
   2: 02421EAC:B6F2 50710BCB:0050 01 00000000:00000000 00:00000000 00000000     0        0 21850 1 0000000000000000 20 4 30 10 -1
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn listening_tcp_sockets_are_read_and_connections_skipped() {
        let got = parse_table(TCP, false);
        assert_eq!(
            got,
            [
                (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8000, 21841),
                (IpAddr::V4(Ipv4Addr::LOCALHOST), 631, 21842),
            ]
        );
        let v6 = parse_table(TCP6, false);
        assert_eq!(v6[0], (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 22, 1234));
        // A v4-mapped loopback is the v4 loopback.
        assert_eq!(v6[1], (IpAddr::V4(Ipv4Addr::LOCALHOST), 8001, 1235));
    }

    #[test]
    fn udp_lists_bound_sockets_and_garbage_is_skipped() {
        let udp = "  sl  local_address rem_address   st\n   0: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 77 2 0\n";
        assert_eq!(
            parse_table(udp, true),
            [(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53, 77)]
        );
        assert!(parse_table("header\nnot a table line\n0: zz:zz 0 0A\n", false).is_empty());
        assert!(parse_table(TCP, true).is_empty());
    }

    #[test]
    fn a_socket_activated_service_is_named_by_its_program() {
        let socket = "[Unit]\nDescription=OpenBSD Secure Shell server socket\n\n[Socket]\nListenStream=22\nAccept=yes\n";
        assert_eq!(parse_socket_unit(socket), (vec![22], true));
        assert_eq!(
            parse_socket_unit("[Socket]\nListenStream=[::]:8080\nListenStream=0.0.0.0:9090\n"),
            (vec![8080, 9090], false)
        );
        assert_eq!(
            service_program("[Service]\nExecStart=-/usr/sbin/sshd -i $SSHD_OPTS\n").as_deref(),
            Some("sshd")
        );
        assert_eq!(service_program("[Service]\nType=simple\n"), None);
    }

    #[test]
    fn loopback_only_sockets_are_told_apart() {
        let s = |address: IpAddr| ListeningSocket {
            proto: "tcp".into(),
            address,
            port: 1,
            process: None,
            pid: None,
        };
        assert!(s(IpAddr::V4(Ipv4Addr::LOCALHOST)).loopback_only());
        assert!(!s(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).loopback_only());
        assert!(!s(IpAddr::V6(Ipv6Addr::UNSPECIFIED)).loopback_only());
    }
}
