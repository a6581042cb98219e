use super::*;

fn v2(cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | cmd);
    h.push(fam);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

fn inet4(src: [u8; 4]) -> Vec<u8> {
    let mut b = src.to_vec();
    b.extend_from_slice(&[10, 0, 0, 1]);
    b.extend_from_slice(&[0x1f, 0x90, 0x00, 0x50]);
    b
}

fn header(len: usize, source: &str) -> Preamble {
    Preamble::Header {
        len,
        source: Some(source.parse().unwrap()),
    }
}

#[test]
fn v1_headers_give_the_source_address_and_their_length() {
    let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 8080\r\nGET / HTTP/1.1\r\n";
    assert_eq!(parse(line), Ok(header(42, "192.0.2.7")));
    let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n";
    assert_eq!(parse(line), Ok(header(line.len(), "2001:db8::7")));
    let unknown = b"PROXY UNKNOWN ffff:f...f:ffff 0 0\r\n\x16\x03";
    assert_eq!(
        parse(unknown),
        Ok(Preamble::Header {
            len: unknown.len() - 2,
            source: None
        })
    );
}

/// The spec's worst case is exactly 107 bytes (`UNKNOWN` with both addresses and ports at
/// their longest); one byte more cannot be valid.
#[test]
fn the_longest_v1_line_fits_and_longer_lines_are_too_large() {
    let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let line = format!("PROXY UNKNOWN {ip} {ip} 65535 65535\r\n");
    assert_eq!(line.len(), V1_BYTES_MAX);
    assert!(matches!(
        parse(line.as_bytes()),
        Ok(Preamble::Header { len: 107, .. })
    ));
    let line = format!("PROXY TCP6 {ip} {ip} 65535 65535\r\n");
    assert_eq!(parse(line.as_bytes()), Ok(header(104, ip)));
    let long = format!("PROXY UNKNOWN {}", "x".repeat(200));
    assert_eq!(parse(long.as_bytes()), Err(HeaderError::TooLarge));
    // Without a line end, 106 bytes may still become a header; 107 cannot.
    assert_eq!(parse(&long.as_bytes()[..106]), Ok(Preamble::Incomplete));
    assert_eq!(parse(&long.as_bytes()[..107]), Err(HeaderError::TooLarge));
}

#[test]
fn malformed_v1_headers_are_refused() {
    for bad in [
        &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 8080\n"[..],
        b"PROXY TCP4 192.0.2.7  10.0.0.1 56324 8080\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 8080 9\r\n",
        b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
        b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 +1 2\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 2\r\n",
        b"PROXY TCP4 192.0.2.07 10.0.0.1 1 2\r\n",
        b"PROXY tcp4 192.0.2.7 10.0.0.1 1 2\r\n",
        b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
        b"PROXY \r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 1 \xff\r\n",
    ] {
        assert!(
            matches!(parse(bad), Err(HeaderError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn v2_headers_give_the_source_address_and_skip_their_tlvs() {
    let h = v2(1, 0x11, &inet4([198, 51, 100, 9]));
    assert_eq!(parse(&h), Ok(header(28, "198.51.100.9")));
    let mut block = Vec::new();
    block.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&[0; 16]);
    block.extend_from_slice(&[0; 4]);
    // Two TLVs (ALPN "http/1.1", a NOOP), ignored.
    block.extend_from_slice(&[0x01, 0, 8]);
    block.extend_from_slice(b"http/1.1");
    block.extend_from_slice(&[0x04, 0, 2, 0, 0]);
    let mut h = v2(1, 0x21, &block);
    let len = h.len();
    h.extend_from_slice(b"GET /ws HTTP/1.1\r\n");
    assert_eq!(parse(&h), Ok(header(len, "2001:db8::9")));
}

#[test]
fn v2_local_unspec_and_unix_keep_the_peers_address() {
    let none = |h: &[u8]| {
        Ok(Preamble::Header {
            len: h.len(),
            source: None,
        })
    };
    // LOCAL (a health check): the block is discarded, whatever it says.
    let h = v2(0, 0x11, &inet4([1, 2, 3, 4]));
    assert_eq!(parse(&h), none(&h));
    let h = v2(0, 0x00, &[]);
    assert_eq!(parse(&h), none(&h));
    let h = v2(1, 0x00, &[]);
    assert_eq!(parse(&h), none(&h));
    let h = v2(1, 0x31, &[0; 216]);
    assert_eq!(parse(&h), none(&h));
}

#[test]
fn malformed_v2_headers_are_refused() {
    let good = v2(1, 0x11, &inet4([1, 2, 3, 4]));
    let mut wrong_version = good.clone();
    wrong_version[12] = 0x11;
    let mut wrong_command = good.clone();
    wrong_command[12] = 0x22;
    let mut wrong_family = good.clone();
    wrong_family[13] = 0x41;
    let mut wrong_transport = good.clone();
    wrong_transport[13] = 0x13;
    for bad in [
        wrong_version,
        wrong_command,
        wrong_family,
        wrong_transport,
        v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        v2(1, 0x21, &[0; 35]),
        v2(1, 0x31, &[0; 215]),
    ] {
        assert!(
            matches!(parse(&bad), Err(HeaderError::Malformed(_))),
            "{bad:?}"
        );
    }
}

/// The length field alone decides: a header announcing more than the bound is refused once
/// its 16 fixed bytes are in, before its block arrives.
#[test]
fn a_v2_header_over_the_bound_is_refused_from_its_length_field() {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&((V2_BYTES_MAX - V2_FIXED_BYTES + 1) as u16).to_be_bytes());
    assert_eq!(parse(&h), Err(HeaderError::TooLarge));
    let at_bound = v2(1, 0x11, &vec![0; V2_BYTES_MAX - V2_FIXED_BYTES]);
    assert!(matches!(parse(&at_bound), Ok(Preamble::Header { .. })));
}

/// A header that trickles in is "incomplete" at every prefix, never an error or "absent".
#[test]
fn every_prefix_of_a_header_is_incomplete() {
    let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 8080\r\n".to_vec();
    let v2 = v2(1, 0x11, &inet4([1, 2, 3, 4]));
    for h in [v1, v2] {
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(Preamble::Incomplete), "{cut}");
        }
    }
}

#[test]
fn http_and_tls_are_not_headers() {
    for first in [
        &b"GET /ws HTTP/1.1\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01",
        b"PROPFIND / HTTP/1.1\r\n",
        b"PROXYX",
        b"\r\n\r\nGET",
        b"\r\n\r\n\0\r\nQUI?",
    ] {
        assert_eq!(parse(first), Ok(Preamble::Absent), "{first:?}");
    }
    // Too short to tell: a prefix of a signature.
    for first in [&b"P"[..], b"PROX", b"\r\n", b"\r\n\r\n\0"] {
        assert_eq!(parse(first), Ok(Preamble::Incomplete), "{first:?}");
    }
}
