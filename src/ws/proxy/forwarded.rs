//! The client's address from `X-Forwarded-For` (de facto: `client, proxy1, proxy2`) or RFC 7239
//! `Forwarded` (`for=client, for=proxy1;proto=https`), of a request whose sender is trusted.
//!
//! Each proxy appends the address it got the request from, so only the right end of the list
//! is written by proxies; the left may be anything the client sent. [`client`] walks it from
//! the right, past addresses in the trusted set, and stops at the first that is not trusted:
//! that one was written by a trusted proxy about its own peer (nginx's `real_ip_recursive`).
//! An element that is no address (`unknown`, an obfuscated `_node`, garbage) ends the walk
//! with the last trusted address: the proxy that wrote it is the best the server knows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Trusted;

/// Which header carries the chain (`server.forwarded_header`): only the one the proxies in
/// front write is read, since a proxy passes the other on from the client untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    XForwardedFor,
    Forwarded,
}

/// What walking the header found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// No element (no header, or only empty ones): the sender's own address stands.
    Absent,
    /// The client: the right-most address not trusted, or, when every one is, the left-most.
    Client(IpAddr),
    /// An element that is no address was reached; the address is the last trusted one.
    Invalid(IpAddr),
}

/// Walks `lines` (every line of the header, in the order they came) from the right, starting
/// from `sender`, the trusted peer that sent the request.
pub fn client<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    field: Field,
    sender: IpAddr,
    trusted: &Trusted,
) -> Walk {
    let mut elements = Vec::new();
    for line in lines {
        elements.extend(split(line, b',').filter(|e| !trim(e).is_empty()));
    }
    let mut last = sender;
    for element in elements.iter().rev() {
        let ip = match field {
            Field::XForwardedFor => node(trim(element)),
            Field::Forwarded => forwarded_for(element).and_then(node),
        };
        let Some(ip) = ip else {
            return Walk::Invalid(last);
        };
        let ip = ip.to_canonical();
        if !trusted.contains(ip) {
            return Walk::Client(ip);
        }
        last = ip;
    }
    if elements.is_empty() {
        Walk::Absent
    } else {
        Walk::Client(last)
    }
}

/// The value of the `for` parameter of one `Forwarded` element (RFC 7239 §4:
/// `forwarded-pair *( ";" forwarded-pair )`, `pair = token "=" value`, `value = token /
/// quoted-string`), unquoted. A quoted value with a backslash or a quote inside is refused:
/// no address needs one.
fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    let mut found = None;
    for pair in split(element, b';') {
        let pair = trim(pair);
        if pair.is_empty() {
            continue;
        }
        let eq = pair.iter().position(|&b| b == b'=')?;
        if !pair[..eq].eq_ignore_ascii_case(b"for") {
            continue;
        }
        // §4: "each parameter MUST NOT occur more than once per forwarded-element".
        if found.is_some() {
            return None;
        }
        let value = &pair[eq + 1..];
        found = Some(match value {
            [b'"', inner @ .., b'"'] if !inner.contains(&b'"') && !inner.contains(&b'\\') => inner,
            [b'"', ..] => return None,
            bare => bare,
        });
    }
    found
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:8080` (RFC 7239 §6 node, or X-Forwarded-For's).
fn node(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(super::is_port);
        return port_ok
            .then(|| v6.parse::<Ipv6Addr>().ok())
            .flatten()
            .map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (v4, port) = text.rsplit_once(':')?;
    super::is_port(port)
        .then(|| v4.parse::<Ipv4Addr>().ok())
        .flatten()
        .map(IpAddr::V4)
}

/// Splits on `sep` outside quoted strings (RFC 9110 §5.6.4: `"` opens and closes, `\` escapes
/// the next byte inside).
fn split(s: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut cuts = Vec::new();
    for (i, &b) in s.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            cuts.push(&s[start..i]);
            start = i + 1;
        }
    }
    cuts.push(&s[start..]);
    cuts.into_iter()
}

/// Without optional whitespace (SP, HTAB) around it.
fn trim(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests;
