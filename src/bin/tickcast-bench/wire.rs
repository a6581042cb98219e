//! The client's side of the wire, kept minimal so the load generator stays cheap.
//!
//! - A normal RFC 6455 client handshake (random key, `Sec-WebSocket-Accept` checked).
//! - A frame reader over a borrowed byte slice: no allocation, no copy; the caller keeps any
//!   partial frame (RFC 6455 §5.2 framing; server frames are never masked, §5.1).
//! - Masked client frames written straight into an output buffer (§5.3).
//! - Byte search for the few fields the bench needs (`"seq":`, the send time `"t":`, the topic
//!   index of `bench.t<N>`, the welcome's `"shard":`) instead of a JSON parser.

use std::fmt;

/// WebSocket opcodes the reader distinguishes (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }
}

/// A complete frame found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef {
    pub fin: bool,
    pub opcode: Opcode,
    /// Payload range inside the buffer that was parsed.
    pub payload_start: usize,
    pub payload_end: usize,
}

impl FrameRef {
    /// Bytes of the buffer this frame occupies (header + payload).
    pub fn len(&self) -> usize {
        self.payload_end
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// RSV bits set without an extension, or an unknown opcode.
    BadHeader,
    /// A server frame with the MASK bit (forbidden by §5.1).
    MaskedServerFrame,
    /// A frame larger than the bench accepts.
    TooLarge(u64),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadHeader => write!(f, "bad frame header"),
            WireError::MaskedServerFrame => write!(f, "masked server frame"),
            WireError::TooLarge(n) => write!(f, "frame of {n} bytes"),
        }
    }
}

/// Largest frame the bench accepts from a server.
pub const FRAME_BYTES_MAX: u64 = 16 << 20;

/// The outcome of looking at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    Frame(FrameRef),
    /// Not enough bytes yet; `need` is the total frame size once known (else a lower bound).
    Incomplete {
        need: usize,
    },
}

/// Parses one server frame at the start of `buf` (RFC 6455 §5.2).
pub fn parse_frame(buf: &[u8]) -> Result<Parse, WireError> {
    if buf.len() < 2 {
        return Ok(Parse::Incomplete { need: 2 });
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(WireError::BadHeader);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WireError::BadHeader)?;
    if b1 & 0x80 != 0 {
        return Err(WireError::MaskedServerFrame);
    }
    let (len, header) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(Parse::Incomplete { need: 4 });
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(Parse::Incomplete { need: 10 });
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge(len));
    }
    let total = header + len as usize;
    if buf.len() < total {
        return Ok(Parse::Incomplete { need: total });
    }
    Ok(Parse::Frame(FrameRef {
        fin: b0 & 0x80 != 0,
        opcode,
        payload_start: header,
        payload_end: total,
    }))
}

/// Appends one masked client frame (FIN set) to `out` and returns its length. The payload is
/// produced by `fill` directly into `out`, then masked in place.
pub fn put_masked_frame(
    out: &mut Vec<u8>,
    opcode: Opcode,
    mask: [u8; 4],
    fill: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let start = out.len();
    // Reserve the largest header, fill the payload after it, then shift if the header is shorter.
    out.extend_from_slice(&[0u8; 14]);
    let body_start = out.len();
    fill(out);
    let len = out.len() - body_start;
    let mut header = [0u8; 14];
    header[0] = 0x80 | opcode.bits();
    let hlen = if len < 126 {
        header[1] = 0x80 | len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        header[1] = 0x80 | 126;
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        header[1] = 0x80 | 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    header[hlen..hlen + 4].copy_from_slice(&mask);
    let hlen = hlen + 4;
    for (i, b) in out[body_start..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    // Move the payload left so it directly follows the real header.
    out.copy_within(body_start.., start + hlen);
    out.truncate(start + hlen + len);
    out[start..start + hlen].copy_from_slice(&header[..hlen]);
    hlen + len
}

/// Unmasks (or masks) in place; used by the tests to read back client frames.
#[cfg(test)]
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Standard base64 (RFC 4648) for the 16-byte handshake key.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = match chunk.len() {
            3 => u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]),
            2 => u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8,
            _ => u32::from(chunk[0]) << 16,
        };
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The HTTP/1.1 upgrade request (RFC 6455 §4.1) and the key it carries.
pub fn handshake_request(host: &str, path: &str, key_bytes: [u8; 16]) -> (Vec<u8>, String) {
    let key = base64(&key_bytes);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    (req.into_bytes(), key)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Response status other than 101; carries the status code (0 if unparsable).
    Status(u16),
    /// 101 but `Sec-WebSocket-Accept` missing or wrong.
    Accept,
}

/// Looks for the end of the HTTP response head; returns its length if complete.
pub fn response_head_len(buf: &[u8]) -> Option<usize> {
    find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// Checks a complete response head: status 101 and the accept key derived from `key`.
pub fn check_response(head: &[u8], key: &str) -> Result<(), HandshakeError> {
    let status = head
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u16>().ok())
        .unwrap_or(0);
    if status != 101 {
        return Err(HandshakeError::Status(status));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = line.split_at(colon);
            if name.eq_ignore_ascii_case(b"sec-websocket-accept") {
                return if value[1..].trim_ascii() == expected.as_bytes() {
                    Ok(())
                } else {
                    Err(HandshakeError::Accept)
                };
            }
        }
    }
    Err(HandshakeError::Accept)
}

/// Position of `needle` in `hay` (first-byte scan, then compare): the payloads are ~100 B.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    if hay.len() < needle.len() {
        return None;
    }
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        if hay[i] == first && &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Parses the unsigned decimal right after `key` (e.g. `"seq":`), skipping spaces.
pub fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(hay, key)? + key.len();
    parse_u64(&hay[at..])
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii_start();
    let mut n: u64 = 0;
    let mut digits = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

/// What the bench reads from one data frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataInfo {
    pub seq: u64,
    /// Index N of a `bench.t<N>` topic, if the topic has that form.
    pub topic_idx: Option<u32>,
    /// The publisher's CLOCK_MONOTONIC send time (ns), if the data carries `"t":`.
    pub sent_ns: Option<u64>,
}

/// Classifies a text payload: a protocol reply (`{"op":...`) or a data frame.
pub fn is_op(payload: &[u8]) -> bool {
    let head = &payload[..payload.len().min(16)];
    find(head, b"\"op\"").is_some()
}

/// Reads `seq`, the topic index and the send time from a data frame without parsing JSON.
/// The send time is searched only after `"data":` so no envelope field can be mistaken for it.
pub fn parse_data(payload: &[u8]) -> Option<DataInfo> {
    let seq = number_after(payload, b"\"seq\":")?;
    let topic_idx = find(payload, b"\"topic\":\"bench.t").and_then(|i| {
        let n = parse_u64(&payload[i + b"\"topic\":\"bench.t".len()..])?;
        u32::try_from(n).ok()
    });
    let sent_ns = find(payload, b"\"data\":").and_then(|d| number_after(&payload[d..], b"\"t\":"));
    Some(DataInfo {
        seq,
        topic_idx,
        sent_ns,
    })
}

/// The op name of a reply (`welcome`, `ack`, `error`, `pong`, ...).
pub fn op_name(payload: &[u8]) -> &[u8] {
    let Some(i) = find(payload, b"\"op\":\"") else {
        return b"";
    };
    let rest = &payload[i + 6..];
    let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
    &rest[..end]
}

/// The string value of `"key":"..."` (no escapes expected: error codes, conn ids).
pub fn string_after<'a>(payload: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let i = find(payload, key)? + key.len();
    let rest = payload[i..].trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

/// The status code of a close frame payload (RFC 6455 §5.5.1), 1005 if absent.
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | opcode];
        if payload.len() < 126 {
            v.push(payload.len() as u8);
        } else if payload.len() <= 65535 {
            v.push(126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            v.push(127);
            v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_small_medium_large_frames() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 100_000] {
            let payload = vec![b'a'; len];
            let f = server_frame(0x1, &payload);
            match parse_frame(&f).unwrap() {
                Parse::Frame(fr) => {
                    assert_eq!(fr.opcode, Opcode::Text);
                    assert!(fr.fin);
                    assert_eq!(fr.payload_end - fr.payload_start, len);
                    assert_eq!(fr.len(), f.len());
                }
                other => panic!("{other:?}"),
            }
            // Every strict prefix is incomplete, and `need` never exceeds the frame.
            for cut in [0, 1, f.len() / 2, f.len() - 1] {
                if cut < f.len() {
                    match parse_frame(&f[..cut]).unwrap() {
                        Parse::Incomplete { need } => assert!(need <= f.len() && need > cut),
                        other => panic!("cut {cut} of {}: {other:?}", f.len()),
                    }
                }
            }
        }
    }

    #[test]
    fn parses_back_to_back_frames() {
        let mut buf = server_frame(0x1, b"{\"op\":\"welcome\"}");
        buf.extend(server_frame(0x9, b"hi"));
        buf.extend(server_frame(0x8, &[0x0f, 0xa8]));
        let mut at = 0;
        let mut ops = vec![];
        while let Parse::Frame(f) = parse_frame(&buf[at..]).unwrap() {
            ops.push((
                f.opcode,
                buf[at + f.payload_start..at + f.payload_end].to_vec(),
            ));
            at += f.len();
        }
        assert_eq!(at, buf.len());
        assert_eq!(ops[1], (Opcode::Ping, b"hi".to_vec()));
        assert_eq!(close_code(&ops[2].1), 4008);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(parse_frame(&[0x81 | 0x40, 0]), Err(WireError::BadHeader));
        assert_eq!(parse_frame(&[0x83, 0]), Err(WireError::BadHeader));
        assert_eq!(
            parse_frame(&[0x81, 0x81, 0, 0, 0, 0, 0]),
            Err(WireError::MaskedServerFrame)
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(FRAME_BYTES_MAX + 1).to_be_bytes());
        assert_eq!(
            parse_frame(&huge),
            Err(WireError::TooLarge(FRAME_BYTES_MAX + 1))
        );
    }

    #[test]
    fn masked_frames_round_trip() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = b"prefix".to_vec();
            let mask = [1, 2, 3, 0xff];
            let n = put_masked_frame(&mut out, Opcode::Text, mask, |o| o.extend(&payload));
            assert_eq!(out.len(), 6 + n);
            let f = &out[6..];
            assert_eq!(f[0], 0x81);
            assert_eq!(f[1] & 0x80, 0x80);
            // Parse by clearing the mask bit, then unmask with the key that follows the length.
            let mut copy = f.to_vec();
            copy[1] &= 0x7f;
            let hlen = match copy[1] {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            let key: [u8; 4] = copy[hlen..hlen + 4].try_into().unwrap();
            assert_eq!(key, mask);
            let mut body = copy[hlen + 4..].to_vec();
            apply_mask(&mut body, key);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // RFC 6455 §1.3's example key.
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn handshake_response_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(response_head_len(ok), Some(ok.len()));
        assert_eq!(check_response(ok, key), Ok(()));
        let wrong = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: xxx\r\n\r\n";
        assert_eq!(check_response(wrong, key), Err(HandshakeError::Accept));
        let notfound = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(
            check_response(notfound, key),
            Err(HandshakeError::Status(404))
        );
        assert_eq!(response_head_len(b"HTTP/1.1 101 OK\r\n"), None);
    }

    #[test]
    fn data_fields_by_byte_search() {
        let p = br#"{"topic":"bench.t17","seq":1051,"ts":1763758800123456,"data":{"t":98765,"pad":"xx"}}"#;
        assert!(!is_op(p));
        let d = parse_data(p).unwrap();
        assert_eq!(
            d,
            DataInfo {
                seq: 1051,
                topic_idx: Some(17),
                sent_ns: Some(98765)
            }
        );
        // Key order inside data does not matter; "ts" is not mistaken for "t".
        let p2 = br#"{"topic":"trades.BTCUSDT","seq":2,"ts":5,"data":{"pad":"x","t": 42}}"#;
        assert_eq!(
            parse_data(p2).unwrap(),
            DataInfo {
                seq: 2,
                topic_idx: None,
                sent_ns: Some(42)
            }
        );
        let p3 = br#"{"topic":"a","seq":3,"ts":5,"data":[1,2]}"#;
        assert_eq!(parse_data(p3).unwrap().sent_ns, None);
        assert!(parse_data(br#"{"topic":"a"}"#).is_none());
    }

    #[test]
    fn op_replies_by_byte_search() {
        let w = br#"{"op":"welcome","conn":"c7","shard":1,"version":"0.1","ping_interval_s":20}"#;
        assert!(is_op(w));
        assert_eq!(op_name(w), b"welcome");
        assert_eq!(number_after(w, b"\"shard\":"), Some(1));
        assert_eq!(string_after(w, b"\"conn\":"), Some(&b"c7"[..]));
        let e = br#"{"op":"error","id":1,"code":"bad_topic","message":"no"}"#;
        assert_eq!(op_name(e), b"error");
        assert_eq!(string_after(e, b"\"code\":"), Some(&b"bad_topic"[..]));
        assert_eq!(
            number_after(br#"{"op":"ack","id": 12,"topics":[]}"#, b"\"id\":"),
            Some(12)
        );
        assert_eq!(
            number_after(b"\"seq\":99999999999999999999", b"\"seq\":"),
            None
        );
    }
}
