//! WebSocket framing on the client side (RFC 6455 §5): the reader of server frames over a
//! borrowed byte slice (no allocation, no copy; the caller keeps any partial frame; server
//! frames are never masked, §5.1), masked client frames written straight into an output
//! buffer (§5.3), and the close code of a close frame.

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
    /// RSV1: a compressed message (permessage-deflate, RFC 7692 §6); whether that is allowed
    /// on this connection and for this frame is the caller's check.
    pub rsv1: bool,
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
    /// RSV2 or RSV3 set (no extension defines them here), or an unknown opcode.
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
    if b0 & 0x30 != 0 {
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
        rsv1: b0 & 0x40 != 0,
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
        assert_eq!(parse_frame(&[0x81 | 0x20, 0]), Err(WireError::BadHeader));
        assert_eq!(parse_frame(&[0x81 | 0x10, 0]), Err(WireError::BadHeader));
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
    fn rsv1_frames_parse_with_the_flag() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, one frame.
        let f = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        match parse_frame(&f).unwrap() {
            Parse::Frame(fr) => {
                assert!(fr.rsv1 && fr.fin);
                assert_eq!(fr.opcode, Opcode::Text);
                assert_eq!((fr.payload_start, fr.payload_end), (2, 9));
            }
            other => panic!("{other:?}"),
        }
        match parse_frame(&server_frame(0x1, b"plain")).unwrap() {
            Parse::Frame(fr) => assert!(!fr.rsv1),
            other => panic!("{other:?}"),
        }
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
}
