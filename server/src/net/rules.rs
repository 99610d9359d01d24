//! The nftables rules of a VM's namespace (pure: text for `nft -f -`).
//!
//! One table, replaced whole in one transaction on every change, so a VM
//! has exactly the rules of its current settings, never a rule left from
//! an earlier one. What the guest sends beyond its link is refused with a
//! reset or an ICMP error (never silently dropped, so a program in the
//! guest fails at once instead of hanging) and counted.

use banger_agent::netconf::GuestNet;

use super::{Egress, PROXY_PORT, TAP, UPLINK, subnet};

/// The table's name (family `ip`).
pub const TABLE: &str = "banger";
/// The counter of refused packets.
pub const REFUSED_COUNTER: &str = "refused";

/// The whole ruleset for a guest and its egress policy: nothing out, NAT
/// to anywhere, or (with `--allow` rules) every TCP connection redirected
/// to the keeper's proxy and nothing else out.
pub fn ruleset(guest: &GuestNet, egress: &Egress) -> String {
    let proxy = !egress.allow.is_empty();
    let nat = egress.nat && !proxy;
    let dns = egress.nat || proxy;
    let gw = guest.gateway;
    let net = subnet(guest);
    let mut out = String::new();
    // Creating then deleting makes the delete valid whether or not the
    // table exists; the new table follows, all in one transaction.
    out.push_str(&format!("table ip {TABLE}\ndelete table ip {TABLE}\n"));
    out.push_str(&format!("table ip {TABLE} {{\n"));
    out.push_str(&format!("  counter {REFUSED_COUNTER} {{ }}\n"));
    // To the namespace itself: only answers, and DNS when the guest may go
    // out (the keeper's resolver would otherwise leak names outward).
    out.push_str(
        "  chain guest_to_host {\n    type filter hook input priority 0; policy accept;\n",
    );
    // pasta (Debian's 2023 build) sends window updates without the ACK
    // flag; conntrack calls them invalid and leaves them un-NATed, and the
    // namespace's own stack would answer them with a reset that kills the
    // guest's connection. Dropped here, they are harmless.
    out.push_str("    ct state invalid drop\n");
    out.push_str(&format!(
        "    iifname \"{TAP}\" ct state established,related accept\n"
    ));
    if dns {
        out.push_str(&format!(
            "    iifname \"{TAP}\" ip daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 accept\n"
        ));
    }
    if proxy {
        out.push_str(&format!(
            "    iifname \"{TAP}\" ip daddr {gw} tcp dport {PROXY_PORT} accept\n"
        ));
    }
    out.push_str(&refuse("    "));
    out.push_str("  }\n");
    // Through the namespace: outward only with NAT.
    out.push_str("  chain guest_out {\n    type filter hook forward priority 0; policy drop;\n");
    out.push_str("    ct state invalid drop\n    ct state established,related accept\n");
    if nat {
        out.push_str(&format!(
            "    iifname \"{TAP}\" oifname \"{UPLINK}\" ip saddr {net} accept\n"
        ));
    }
    out.push_str(&refuse("    "));
    out.push_str("  }\n");
    if proxy {
        // Every TCP connection the guest makes beyond its router goes to
        // the keeper, which reads the name it claims and dials that name.
        out.push_str(&format!(
            "  chain guest_redirect {{\n    type nat hook prerouting priority -100; policy accept;\n    iifname \"{TAP}\" meta l4proto tcp ip daddr != {gw} redirect to :{PROXY_PORT}\n  }}\n"
        ));
    }
    if nat {
        out.push_str(&format!(
            "  chain guest_nat {{\n    type nat hook postrouting priority 100; policy accept;\n    oifname \"{UPLINK}\" ip saddr {net} masquerade\n  }}\n"
        ));
    }
    out.push_str("}\n");
    out
}

/// Refusal rules for what arrives from the guest: TCP gets a reset,
/// anything else an ICMP error, and both count.
fn refuse(indent: &str) -> String {
    format!(
        "{indent}iifname \"{TAP}\" meta l4proto tcp counter name {REFUSED_COUNTER} reject with tcp reset\n\
         {indent}iifname \"{TAP}\" counter name {REFUSED_COUNTER} reject with icmp type admin-prohibited\n"
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn policy(nat: bool, allow: &[&str]) -> Egress {
        Egress {
            nat,
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn guest() -> GuestNet {
        GuestNet {
            address: Ipv4Addr::new(172, 30, 66, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(172, 30, 66, 1),
        }
    }

    #[test]
    fn without_nat_nothing_leaves_and_nothing_is_masqueraded() {
        let rules = ruleset(&guest(), &policy(false, &[]));
        assert!(!rules.contains("masquerade"), "{rules}");
        assert!(!rules.contains("oifname \"up0\" ip saddr"), "{rules}");
        assert!(!rules.contains("dport 53"), "{rules}");
        assert!(rules.contains("policy drop"), "{rules}");
        assert!(rules.contains("reject with tcp reset"), "{rules}");
        assert_eq!(rules.matches("ct state invalid drop").count(), 2, "{rules}");
    }

    #[test]
    fn with_nat_the_subnet_goes_out_masqueraded_and_dns_is_answered() {
        let rules = ruleset(&guest(), &policy(true, &[]));
        assert!(
            rules.contains("oifname \"up0\" ip saddr 172.30.66.0/24 masquerade"),
            "{rules}"
        );
        assert!(
            rules.contains("iifname \"tap0\" oifname \"up0\" ip saddr 172.30.66.0/24 accept"),
            "{rules}"
        );
        assert!(
            rules.contains("ip daddr 172.30.66.1 meta l4proto { tcp, udp } th dport 53 accept")
        );
    }

    #[test]
    fn with_allow_rules_tcp_goes_to_the_proxy_and_nothing_is_forwarded() {
        let rules = ruleset(&guest(), &policy(true, &["deb.debian.org"]));
        assert!(!rules.contains("masquerade"), "{rules}");
        assert!(!rules.contains("oifname \"up0\" ip saddr"), "{rules}");
        assert!(
            rules.contains(&format!(
                "iifname \"tap0\" meta l4proto tcp ip daddr != 172.30.66.1 redirect to :{PROXY_PORT}"
            )),
            "{rules}"
        );
        assert!(rules.contains(&format!(
            "ip daddr 172.30.66.1 tcp dport {PROXY_PORT} accept"
        )));
        assert!(rules.contains("th dport 53 accept"));
        // Without --nat as well: --allow implies the way out.
        assert_eq!(ruleset(&guest(), &policy(false, &["a.org"])), rules);
    }

    #[test]
    fn the_table_is_replaced_whole() {
        let rules = ruleset(&guest(), &policy(true, &[]));
        assert!(rules.starts_with("table ip banger\ndelete table ip banger\ntable ip banger {"));
        assert_eq!(rules.matches("masquerade").count(), 1);
    }
}
