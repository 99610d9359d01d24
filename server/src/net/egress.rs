//! Egress rules (`--allow HOST[:PORT]`), pure parts: the rules, the names
//! a guest's connection claims (TLS SNI, HTTP Host), and the few DNS
//! messages the keeper reads and writes.
//!
//! Why a proxy and not DNS-answer IP sets: registries share addresses (on
//! the machine this was built on every registry resolves to one address),
//! so an address says nothing about the name. The keeper takes every TCP
//! connection the guest makes, reads the name it claims, checks it, and
//! dials that name itself: a guest that resolves names on its own,
//! connects to an address directly, or puts an allowed name in SNI while
//! connecting elsewhere reaches only allowed names. A connection that
//! names nothing (neither TLS nor HTTP) is let through only to an address
//! an allowed name has now.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Ports a rule without a port allows.
pub const WEB_PORTS: [u16; 2] = [80, 443];

/// One `--allow` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRule {
    /// A host name, lowercase, or `*.domain` (any name under it).
    pub host: String,
    /// The one port allowed; 80 and 443 when absent.
    pub port: Option<u16>,
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl std::str::FromStr for AllowRule {
    type Err = String;

    fn from_str(spec: &str) -> Result<AllowRule, String> {
        let bad =
            |why: &str| format!("invalid --allow {spec:?}: {why}; use HOST, HOST:PORT or *.DOMAIN");
        let (host, port) = match spec.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| bad("bad port"))?,
                ),
            ),
            None => (spec, None),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(bad("not a host name"));
        }
        if host.starts_with("*.") && !name.contains('.') {
            return Err(bad(
                "a wildcard needs a domain with a dot, like *.example.org",
            ));
        }
        Ok(AllowRule { host, port })
    }
}

impl AllowRule {
    /// Whether this rule lets a connection to `name`:`port` through.
    pub fn allows(&self, name: &str, port: u16) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => name.len() > domain.len() + 1 && name.ends_with(&format!(".{domain}")),
            None => name == self.host,
        };
        let port_ok = match self.port {
            Some(p) => p == port,
            None => WEB_PORTS.contains(&port),
        };
        host_ok && port_ok
    }

    /// Whether this rule names `name` at any port (what DNS answers for).
    pub fn names(&self, name: &str) -> bool {
        self.allows(name, self.port.unwrap_or(WEB_PORTS[0]))
    }
}

/// Whether any rule lets `name`:`port` through.
pub fn allowed(rules: &[AllowRule], name: &str, port: u16) -> bool {
    rules.iter().any(|r| r.allows(name, port))
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// More bytes are needed to tell.
    NeedMore,
    /// The name the client asks for (TLS SNI or HTTP Host, lowercase).
    Name(String),
    /// A protocol that names no host (or a TLS hello without SNI).
    Nameless,
}

/// The name a connection's first bytes claim: a TLS ClientHello's SNI or
/// an HTTP request's Host header (pure; bounded by what it is given).
pub fn claim(buf: &[u8]) -> Claim {
    if buf.is_empty() {
        return Claim::NeedMore;
    }
    if buf[0] == 0x16 {
        return tls_sni(buf);
    }
    http_host(buf)
}

fn tls_sni(buf: &[u8]) -> Claim {
    // Record header: type, version (2), length (2).
    if buf.len() < 5 {
        return Claim::NeedMore;
    }
    let record_len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < 5 + record_len {
        return Claim::NeedMore;
    }
    let hs = &buf[5..5 + record_len];
    // Handshake: type 1 (ClientHello), length (3).
    if hs.len() < 4 || hs[0] != 1 {
        return Claim::Nameless;
    }
    let mut r = Reader { b: hs, at: 4 };
    let parsed = (|| {
        r.skip(2)?; // client version
        r.skip(32)?; // random
        let sid = r.u8()? as usize;
        r.skip(sid)?;
        let suites = r.u16()? as usize;
        r.skip(suites)?;
        let comp = r.u8()? as usize;
        r.skip(comp)?;
        let ext_len = r.u16()? as usize;
        let end = r.at.checked_add(ext_len)?;
        while r.at + 4 <= end {
            let ty = r.u16()?;
            let len = r.u16()? as usize;
            if ty != 0 {
                r.skip(len)?;
                continue;
            }
            let _list = r.u16()?;
            let name_type = r.u8()?;
            let name_len = r.u16()? as usize;
            let name = r.take(name_len)?;
            if name_type != 0 {
                return None;
            }
            let name = std::str::from_utf8(name).ok()?;
            return Some(Some(name.to_ascii_lowercase()));
        }
        Some(None)
    })();
    match parsed {
        Some(Some(name)) if valid_name(&name) => Claim::Name(name),
        _ => Claim::Nameless,
    }
}

fn http_host(buf: &[u8]) -> Claim {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        // A request line that is not HTTP's never will be.
        let first = buf.split(|b| *b == b' ').next().unwrap_or_default();
        return if buf.len() > 8192 || !first.iter().all(u8::is_ascii_uppercase) {
            Claim::Nameless
        } else {
            Claim::NeedMore
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("host")
        {
            let v = v.trim();
            // Strip a port (not inside an IPv6 literal).
            let host = match v.rsplit_once(':') {
                Some((h, p)) if !h.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => v,
            };
            let host = host.to_ascii_lowercase();
            return if valid_name(&host) {
                Claim::Name(host)
            } else {
                Claim::Nameless
            };
        }
    }
    Claim::Nameless
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
}

/// The name a DNS query asks about (its first question), lowercase.
pub fn query_name(msg: &[u8]) -> Option<String> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) == 0 {
        return None;
    }
    let (name, _) = read_name(msg, 12)?;
    Some(name)
}

/// A DNS name at `at` (following compression pointers, bounded), and where
/// the bytes after it start.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut after: Option<usize> = None;
    for _ in 0..64 {
        let len = *msg.get(at)? as usize;
        if len == 0 {
            return Some((
                labels.join(".").to_ascii_lowercase(),
                after.unwrap_or(at + 1),
            ));
        }
        if len & 0xC0 == 0xC0 {
            let ptr = ((len & 0x3F) << 8) | *msg.get(at + 1)? as usize;
            after.get_or_insert(at + 2);
            at = ptr;
            continue;
        }
        let label = msg.get(at + 1..at + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + len;
    }
    None
}

/// The answer that refuses a query: its header and question, rcode 5.
pub fn refused(query: &[u8]) -> Option<Vec<u8>> {
    let (_, end) = read_name(query, 12)?;
    let question_end = end.checked_add(4)?;
    let mut out = query.get(..question_end)?.to_vec();
    out[2] = 0x80 | (query[2] & 0x01); // QR, keep RD
    out[3] = 0x80 | 5; // RA, REFUSED
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..12].fill(0);
    Some(out)
}

/// An A query for `name` with transaction id `id`.
pub fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.extend_from_slice(&[0, 0, 1, 0, 1]);
    out
}

/// The IPv4 addresses in a DNS answer's A records.
pub fn a_answers(msg: &[u8]) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut parse = || -> Option<()> {
        let qd = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
        let an = u16::from_be_bytes([*msg.get(6)?, *msg.get(7)?]);
        let mut at = 12;
        for _ in 0..qd {
            at = read_name(msg, at)?.1 + 4;
        }
        for _ in 0..an {
            at = read_name(msg, at)?.1;
            let ty = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
            let len = u16::from_be_bytes([*msg.get(at + 8)?, *msg.get(at + 9)?]) as usize;
            let data = msg.get(at + 10..at + 10 + len)?;
            if ty == 1 && len == 4 {
                out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
            }
            at += 10 + len;
        }
        Some(())
    };
    let _ = parse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_match_names_ports_and_wildcards() {
        let debian = rule("deb.debian.org");
        assert!(debian.allows("deb.debian.org", 443) && debian.allows("DEB.debian.org.", 80));
        assert!(!debian.allows("deb.debian.org", 22));
        assert!(!debian.allows("security.debian.org", 443));
        let any = rule("*.Example.org");
        assert_eq!(any.host, "*.example.org");
        assert!(any.allows("a.example.org", 443) && any.allows("b.a.example.org", 80));
        assert!(!any.allows("example.org", 443) && !any.allows("badexample.org", 443));
        let git = rule("github.com:22");
        assert!(git.allows("github.com", 22) && !git.allows("github.com", 443));
        assert!(git.names("github.com"));
        assert_eq!(git.to_string(), "github.com:22");
        for bad in [
            "",
            "*.org",
            "a..b",
            "-a.b",
            "a.b:0",
            "a.b:x",
            "a b",
            "*.",
            "exa_mple.org",
        ] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad}");
        }
    }

    /// A ClientHello as curl sends it, trimmed to what the parser reads.
    fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        // An unrelated extension first (supported groups).
        ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            ext.extend_from_slice(&0u16.to_be_bytes());
            ext.extend_from_slice(&(n + 5).to_be_bytes());
            ext.extend_from_slice(&(n + 3).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&n.to_be_bytes());
            ext.extend_from_slice(name.as_bytes());
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[0x01, 0x00]); // compression: null
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn a_tls_hello_claims_its_sni_and_a_partial_one_asks_for_more() {
        let hello = client_hello(Some("PyPI.org"));
        assert_eq!(claim(&hello), Claim::Name("pypi.org".into()));
        assert_eq!(claim(&hello[..20]), Claim::NeedMore);
        assert_eq!(claim(&client_hello(None)), Claim::Nameless);
        // Garbage inside a well-sized record is nameless, never a panic.
        let mut bad = client_hello(Some("x.org"));
        for b in bad.iter_mut().skip(9) {
            *b = 0xff;
        }
        assert_eq!(claim(&bad), Claim::Nameless);
    }

    #[test]
    fn an_http_request_claims_its_host() {
        let req = b"GET /debian/ HTTP/1.1\r\nUser-Agent: x\r\nhost: Deb.Debian.org:80\r\n\r\n";
        assert_eq!(claim(req), Claim::Name("deb.debian.org".into()));
        assert_eq!(claim(b"GET / HTTP/1.1\r\nHost: x"), Claim::NeedMore);
        assert_eq!(claim(b"SSH-2.0-OpenSSH_9.2\r\n"), Claim::Nameless);
        assert_eq!(claim(b"GET / HTTP/1.0\r\n\r\n"), Claim::Nameless);
        assert_eq!(
            claim(b"GET / HTTP/1.1\r\nHost: 203.0.113.80\r\n\r\n"),
            Claim::Name("203.0.113.80".into())
        );
    }

    #[test]
    fn dns_queries_are_read_refused_and_answers_parsed() {
        let q = a_query(0x1234, "PyPI.org");
        assert_eq!(query_name(&q).as_deref(), Some("pypi.org"));
        let r = refused(&q).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 5);
        assert_eq!(query_name(&r).as_deref(), Some("pypi.org"));
        // An answer with a compressed name pointing at the question.
        let mut ans = q.clone();
        ans[2] = 0x81;
        ans[3] = 0x80;
        ans[7] = 2;
        for ip in [[203, 0, 113, 80], [203, 0, 113, 81]] {
            ans.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            ans.extend_from_slice(&ip);
        }
        assert_eq!(
            a_answers(&ans),
            [
                Ipv4Addr::new(203, 0, 113, 80),
                Ipv4Addr::new(203, 0, 113, 81)
            ]
        );
        assert!(a_answers(&ans[..ans.len() - 3]).len() < 2);
        assert_eq!(query_name(&[0u8; 5]), None);
        // A pointer loop ends.
        let mut looped = vec![0u8; 12];
        looped[5] = 1;
        looped.extend_from_slice(&[0xC0, 12]);
        assert_eq!(query_name(&looped), None);
    }
}
