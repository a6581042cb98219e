//! The PROXY protocol header (HAProxy's "The PROXY protocol", versions 1 and 2): what a
//! layer-4 proxy sends before the client's first byte to say whom the connection is from.
//!
//! [`parse`] looks at the first bytes of a connection and says whether they are a header, not
//! one (HTTP or a TLS ClientHello: neither can start like a signature), or too few to tell.
//! It is bounded: a v1 header is at most [`V1_BYTES_MAX`] bytes, a v2 header at most
//! [`V2_BYTES_MAX`], refused as soon as its length field says more; it never reads past the
//! header, so the bytes after it (the HTTP request, the ClientHello) stay the caller's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Spec §2.1: "a receiver may reject an incomplete line which does not contain the CRLF
/// sequence in the first 107 characters": `UNKNOWN` with both IPv6 addresses and ports at
/// their longest, CRLF included (TCP6 takes 104).
pub const V1_BYTES_MAX: usize = 107;

/// Bytes of a v2 header's fixed part: the signature, version and command, family, length.
pub const V2_FIXED_BYTES: usize = 16;

/// The most a v2 header may take, fixed part included. The spec allows 16 + 65,535; what a
/// proxy actually sends is the address block (36 bytes for TCP over IPv6, 216 for UNIX
/// sockets) and TLVs: HAProxy's ALPN, authority (the SNI, at most 255), unique id (at most
/// 128) and SSL details, AWS's VPC endpoint id, a CRC: a few hundred bytes. 2 KiB holds all of
/// them with room, and bounds what a trusted peer that misbehaves makes the server hold
/// before the HTTP request (`limits.partial_bytes_max` counts it too).
pub const V2_BYTES_MAX: usize = V2_FIXED_BYTES + 2048;

/// Spec §2.1: "PROXY" and a space start a v1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// Spec §2.2: the 12 bytes that start a v2 header ("\r\n\r\n\0\r\nQUIT\n"), chosen to be
/// invalid HTTP and unlike a TLS record.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preamble {
    /// Too few bytes to tell (a prefix of a signature, or a header not complete yet).
    Incomplete,
    /// Not a PROXY header: the bytes are the protocol's own.
    Absent,
    /// A complete header of `len` bytes. `source`: the client's address; `None` when the
    /// header names none (v2 `LOCAL`: the proxy's own connection, a health check; v1
    /// `UNKNOWN`; v2 families `UNSPEC` and `UNIX`): the peer's address stands.
    Header { len: usize, source: Option<IpAddr> },
}

/// Why a header was refused; each is a constant text for logs and the 400 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Longer than [`V1_BYTES_MAX`] / [`V2_BYTES_MAX`].
    TooLarge,
    Malformed(&'static str),
}

impl HeaderError {
    pub fn reason(&self) -> &'static str {
        match self {
            HeaderError::TooLarge => "PROXY protocol header too large",
            HeaderError::Malformed(why) => why,
        }
    }
}

/// Reads a PROXY header at the front of `buf` (see [`Preamble`]).
pub fn parse(buf: &[u8]) -> Result<Preamble, HeaderError> {
    if let Some(p) = signature(buf, V1_SIGNATURE) {
        return match p {
            Sig::Prefix => Ok(Preamble::Incomplete),
            Sig::Full => parse_v1(buf),
        };
    }
    match signature(buf, &V2_SIGNATURE) {
        Some(Sig::Prefix) => Ok(Preamble::Incomplete),
        Some(Sig::Full) => parse_v2(buf),
        None => Ok(Preamble::Absent),
    }
}

enum Sig {
    /// `buf` is shorter than the signature and a prefix of it (empty included).
    Prefix,
    Full,
}

fn signature(buf: &[u8], sig: &[u8]) -> Option<Sig> {
    let n = buf.len().min(sig.len());
    if buf[..n] != sig[..n] {
        return None;
    }
    Some(if n < sig.len() {
        Sig::Prefix
    } else {
        Sig::Full
    })
}

/// Spec §2.1: `PROXY <TCP4|TCP6|UNKNOWN> <src> <dst> <sport> <dport>\r\n`, fields separated
/// by exactly one space; after `UNKNOWN` anything up to the CRLF, ignored.
fn parse_v1(buf: &[u8]) -> Result<Preamble, HeaderError> {
    let window = &buf[..buf.len().min(V1_BYTES_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_BYTES_MAX {
            Err(HeaderError::TooLarge)
        } else {
            Ok(Preamble::Incomplete)
        };
    };
    let len = lf + 1;
    let Some(line) = window[..lf].strip_suffix(b"\r") else {
        return Err(HeaderError::Malformed(
            "PROXY v1 header: the line must end with CRLF",
        ));
    };
    // Only printable ASCII: anything else is no address and no keyword.
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(HeaderError::Malformed("PROXY v1 header: not ASCII"));
    };
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let proto = fields.next().unwrap_or_default();
    if proto == "UNKNOWN" {
        // §2.1: "the receiver must ignore anything presented before the CRLF is found".
        return Ok(Preamble::Header { len, source: None });
    }
    let bad = HeaderError::Malformed("PROXY v1 header: expected TCP4|TCP6 src dst sport dport");
    let rest: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = rest[..] else {
        return Err(bad);
    };
    // The destination is checked like the source, then not used.
    let source = match proto {
        "TCP4" => {
            dst.parse::<Ipv4Addr>().map_err(|_| bad)?;
            IpAddr::V4(src.parse().map_err(|_| bad)?)
        }
        "TCP6" => {
            dst.parse::<Ipv6Addr>().map_err(|_| bad)?;
            IpAddr::V6(src.parse().map_err(|_| bad)?)
        }
        _ => return Err(bad),
    };
    if !super::is_port(sport) || !super::is_port(dport) {
        return Err(bad);
    }
    Ok(Preamble::Header {
        len,
        source: Some(source),
    })
}

/// Spec §2.2: signature, version and command (0x20 LOCAL, 0x21 PROXY), address family and
/// transport, the length of what follows (big-endian), then the addresses (and TLVs, which
/// "the receiver ... must ignore" when it does not know them: all of them here).
fn parse_v2(buf: &[u8]) -> Result<Preamble, HeaderError> {
    let Some(fixed) = buf.get(..V2_FIXED_BYTES) else {
        return Ok(Preamble::Incomplete);
    };
    let (ver_cmd, fam) = (fixed[12], fixed[13]);
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::Malformed("PROXY v2 header: version is not 2"));
    }
    let len = V2_FIXED_BYTES + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > V2_BYTES_MAX {
        return Err(HeaderError::TooLarge);
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(HeaderError::Malformed("PROXY v2 header: unknown command")),
    };
    // §2.2: transport 0 UNSPEC, 1 STREAM, 2 DGRAM; family 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX.
    if fam & 0x0f > 2 || fam >> 4 > 3 {
        return Err(HeaderError::Malformed(
            "PROXY v2 header: unknown address family or transport",
        ));
    }
    let Some(block) = buf.get(V2_FIXED_BYTES..len) else {
        return Ok(Preamble::Incomplete);
    };
    // §2.2: with LOCAL "the receiver must accept this connection as valid and must use the
    // real connection endpoints and discard the protocol block including the family".
    if local {
        return Ok(Preamble::Header { len, source: None });
    }
    // §2.2.1: an address block of at least 12 (INET), 36 (INET6) or 216 (UNIX) bytes.
    let family = fam >> 4;
    let need = [0, 12, 36, 216][usize::from(family)];
    if block.len() < need {
        return Err(HeaderError::Malformed(
            "PROXY v2 header: address block shorter than its family's",
        ));
    }
    let source = match family {
        1 => Some(IpAddr::V4(Ipv4Addr::new(
            block[0], block[1], block[2], block[3],
        ))),
        2 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&block[..16]);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        // UNSPEC: "the receiver should ... use the real endpoints"; UNIX: no IP address to use.
        _ => None,
    };
    Ok(Preamble::Header { len, source })
}

#[cfg(test)]
mod tests;
