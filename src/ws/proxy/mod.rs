//! Who the client is behind a proxy, pure: no runtime, no I/O. Three sources, each believed
//! only when the one that says it is trusted (`server.trusted_proxies`, a [`Trusted`] set):
//!
//! - [`header`]: the PROXY protocol header (v1 text, v2 binary) a layer-4 proxy or load
//!   balancer puts before the client's first byte (HAProxy `send-proxy-v2`, cloud load
//!   balancers);
//! - [`forwarded`]: `X-Forwarded-For` or RFC 7239 `Forwarded` of an HTTP request, walked from
//!   the right past the trusted proxies, as nginx's `real_ip_recursive` does.
//!
//! Both see hostile bytes (a trusted proxy passes the client's own headers on) and are
//! unit-tested and fuzzed (`tests/fuzz`, target `proxy`).

pub mod forwarded;
pub mod header;

use std::net::{IpAddr, Ipv6Addr};

/// Entries `server.trusted_proxies` may hold: every accept and every HTTP request through a
/// proxy scans the list, and a deployment names a few proxies or subnets, not thousands.
pub const TRUSTED_ENTRIES_MAX: usize = 256;

/// An address block, IPv4 kept as IPv4-mapped IPv6 (`10.0.0.0/8` is `::ffff:10.0.0.0/104`),
/// so one comparison serves both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    /// Prefix length in IPv6 terms (0..=128).
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or one address (`127.0.0.1`, `::1`). Bits past the
    /// prefix must be zero (`10.0.0.1/8` is refused: a typo for a host, or for `/32`?).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let (bits, max) = match ip {
            IpAddr::V4(_) => (96u8, 32u8),
            IpAddr::V6(_) => (0, 128),
        };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
            },
        };
        let prefix = bits + prefix;
        let net = u128::from(mapped(ip));
        if net & !mask(prefix) != 0 {
            return Err(format!(
                "{s:?} has bits set past its prefix length (a network address was meant)"
            ));
        }
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        u128::from(mapped(ip)) & mask(self.prefix) == self.net
    }
}

fn mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

/// IPv4 (and IPv4-mapped IPv6) as IPv4-mapped IPv6.
fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A port as the PROXY protocol (v1 §2.1: "a decimal integer in the range 0..65535
/// inclusive") and forwarded headers write it: 1 to 5 digits, nothing else.
fn is_port(s: &str) -> bool {
    (1..=5).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u32>().is_ok_and(|p| p <= 65535)
}

/// The proxies whose word on the client's address is taken (`server.trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trusted(Vec<Cidr>);

impl Trusted {
    /// Each entry as [`Cidr::parse`]; an error names the entry by index.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Trusted, (usize, String)> {
        if entries.len() > TRUSTED_ENTRIES_MAX {
            return Err((
                TRUSTED_ENTRIES_MAX,
                format!("at most {TRUSTED_ENTRIES_MAX} entries"),
            ));
        }
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| Cidr::parse(e.as_ref()).map_err(|why| (i, why)))
            .collect::<Result<Vec<_>, _>>()
            .map(Trusted)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_in_either_family_form() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(
            c.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped IPv6 is IPv4"
        );
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::a00:1")), "IPv4-compatible is not IPv4");
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(
            !Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("2001:db8::1"))
        );
        assert!(Cidr::parse("::/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn malformed_blocks_are_refused_with_the_reason() {
        for (bad, why) in [
            ("10.0.0.0/33", "0..=32"),
            ("::/129", "0..=128"),
            ("10.0.0.1/8", "past its prefix"),
            ("10.0.0.0/+8", "0..=32"),
            ("10.0.0.0/", "0..=32"),
            ("host.example", "not an IP"),
            ("", "not an IP"),
            ("10.0.0.0/8/8", "0..=32"),
        ] {
            let e = Cidr::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(Trusted::parse(&["10.0.0.0/8", "x"]).unwrap_err().0, 1);
        let many = vec!["127.0.0.1"; TRUSTED_ENTRIES_MAX + 1];
        assert!(Trusted::parse(&many).is_err());
    }
}
