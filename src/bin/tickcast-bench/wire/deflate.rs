//! permessage-deflate on the client side (RFC 7692), for `--deflate`: the offer the bench
//! sends, the check of the server's answer, and the inflating of compressed server messages.
//!
//! The bench offers `permessage-deflate; client_max_window_bits; client_no_context_takeover`
//! and never compresses what it sends (subscribes, pongs and publishes go plain, which §6
//! allows). A server that keeps its compression context between messages (no
//! `server_no_context_takeover` in its answer: Node `ws` and most servers by default) needs an
//! inflater per connection that keeps its 32 KiB window; one that agreed
//! `server_no_context_takeover` (tickcast) compresses each message alone, so one inflater per
//! bench thread, reset after every message, serves all its connections.
//!
//! Inflating uses flate2 (zlib-rs), the crate the server inflates client messages with.

use flate2::{Decompress, FlushDecompress, Status};

/// The `Sec-WebSocket-Extensions` line of the bench's upgrade request (with its CRLF).
pub const OFFER_HEADER: &str = "Sec-WebSocket-Extensions: permessage-deflate; \
                                client_max_window_bits; client_no_context_takeover\r\n";

/// The 4 octets a sender removes from the end of each compressed message and the receiver
/// appends before inflating (RFC 7692 §7.2.1, §7.2.2): an empty stored block's LEN and NLEN.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Largest inflated message the bench accepts (a guard against a broken stream).
pub const INFLATED_BYTES_MAX: usize = 16 << 20;

/// What the server agreed to, from its `Sec-WebSocket-Extensions` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The server compresses each message alone: no inflate window kept between messages.
    pub server_no_context_takeover: bool,
    /// The window the server promised to stay within (`server_max_window_bits`), if any. A
    /// 15-bit inflater reads any smaller window, so this is only reported.
    pub server_max_window_bits: Option<u8>,
}

/// Reads the `Sec-WebSocket-Extensions` header(s) of a complete response head (RFC 7692 §5,
/// §7.1): `Ok(None)` when the server agreed to no extension, `Ok(Some(_))` when it agreed to
/// permessage-deflate, `Err` for an answer a client must fail the connection on (an
/// extension it did not offer, an unknown or repeated parameter, a bad value).
pub fn parse_response(head: &[u8]) -> Result<Option<Agreed>, String> {
    let mut agreed: Option<Agreed> = None;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if !name
            .trim_ascii()
            .eq_ignore_ascii_case(b"sec-websocket-extensions")
        {
            continue;
        }
        let value = std::str::from_utf8(&value[1..]).map_err(|_| "extensions: not UTF-8")?;
        for ext in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = ext.split(';').map(str::trim);
            let token = parts.next().unwrap_or("");
            if !token.eq_ignore_ascii_case("permessage-deflate") {
                return Err(format!("extension not offered: {token}"));
            }
            if agreed.is_some() {
                return Err("permessage-deflate agreed twice".into());
            }
            agreed = Some(parse_params(parts)?);
        }
    }
    Ok(agreed)
}

fn parse_params<'a>(params: impl Iterator<Item = &'a str>) -> Result<Agreed, String> {
    let mut a = Agreed {
        server_no_context_takeover: false,
        server_max_window_bits: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for p in params.filter(|p| !p.is_empty()) {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return Err(format!("parameter repeated: {name}"));
        }
        let bits = |v: Option<&str>| -> Result<u8, String> {
            v.and_then(|v| v.parse::<u8>().ok())
                .filter(|b| (8..=15).contains(b))
                .ok_or(format!("{name}: bad value {v:?}"))
        };
        match name.as_str() {
            "server_no_context_takeover" if value.is_none() => a.server_no_context_takeover = true,
            // The bench offered it; whether the server repeats it changes nothing here.
            "client_no_context_takeover" if value.is_none() => {}
            "server_max_window_bits" => a.server_max_window_bits = Some(bits(value)?),
            // The bench never compresses, so the window it may use does not matter.
            "client_max_window_bits" => {
                bits(value)?;
            }
            _ => return Err(format!("unknown parameter: {p}")),
        }
        seen.push(name);
    }
    Ok(a)
}

/// Inflated forms of recent standalone compressed messages, by their compressed bytes.
///
/// A server that compresses once sends the same compressed bytes to every subscriber of a
/// topic; inflating each copy again would make the bench, not the server, the limit at
/// millions of deliveries per second (measured: one bench core at 80-94 % and deliveries lost
/// at 1 M/s). It must hold every message still in flight to some subscriber: at 20k msgs/s
/// with a p99 of ~300 ms (market data), 4096 slots were too few, the bench fell behind, the
/// backlog grew and nearly every copy missed; 65,536 slots cover 3 s of that stream (~20 MB
/// per bench thread once full). Only for messages that stand alone (`server_no_context_takeover`): their
/// inflated form depends on their bytes only. Direct-mapped, keyed by a hash of the bytes and
/// checked by comparing them in full, so a hit is always the message's own inflated form.
pub struct InflateCache {
    /// (compressed, inflated); an empty `compressed` is a vacant slot.
    slots: Vec<(Vec<u8>, Vec<u8>)>,
}

impl InflateCache {
    const SLOTS: usize = 1 << 16;

    pub fn new() -> InflateCache {
        InflateCache { slots: Vec::new() }
    }

    fn slot(compressed: &[u8]) -> usize {
        // FNV-1a over the length and the last 64 bytes: a message's compressed bytes differ
        // from another's throughout, and the hit is confirmed by a full compare.
        let tail = &compressed[compressed.len().saturating_sub(64)..];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ compressed.len() as u64;
        for &b in tail {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h as usize) % Self::SLOTS
    }

    /// The inflated form of `compressed`, if it is in the cache.
    pub fn get(&self, compressed: &[u8]) -> Option<&[u8]> {
        let (k, v) = self.slots.get(Self::slot(compressed))?;
        (!k.is_empty() && k == compressed).then_some(&v[..])
    }

    /// Remembers `inflated` as the inflated form of `compressed` (replacing the slot's entry).
    pub fn put(&mut self, compressed: &[u8], inflated: &[u8]) {
        if compressed.is_empty() {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(Self::SLOTS, Default::default);
        }
        let (k, v) = &mut self.slots[Self::slot(compressed)];
        k.clear();
        k.extend_from_slice(compressed);
        v.clear();
        v.extend_from_slice(inflated);
    }
}

/// A new raw-DEFLATE inflater (no zlib header) with a 32 KiB window, which reads any window.
pub fn new_inflater() -> Decompress {
    Decompress::new(false)
}

/// Inflates one compressed message `payload` (the frame's payload, RSV1 set) into `out`
/// (cleared first): the payload, then the 0x00 0x00 0xff 0xff tail of RFC 7692 §7.2.2.
///
/// `keep_context`: the server kept its compression context (no `server_no_context_takeover`),
/// so `d` must keep its window for the next message of this connection; otherwise `d` is reset
/// after the message and may be shared by many connections. A message that ends with a final
/// block (BFINAL, as libdeflate writes; §7.2.3.4) ends the stream: the inflater is reset then
/// too (a sender that ends its stream cannot refer back past it).
pub fn inflate_message(
    d: &mut Decompress,
    payload: &[u8],
    out: &mut Vec<u8>,
    keep_context: bool,
) -> Result<(), String> {
    out.clear();
    let ended = feed(d, payload, out)?;
    let ended = ended || feed(d, &TAIL, out)?;
    if ended || !keep_context {
        d.reset(false);
    }
    Ok(())
}

/// Inflates `input` into `out`, growing it; `true` once the stream ended (a final block).
fn feed(d: &mut Decompress, input: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
    let mut at = 0;
    loop {
        if out.capacity() - out.len() < 256 {
            if out.len() >= INFLATED_BYTES_MAX {
                return Err("inflated message too large".into());
            }
            out.reserve(out.len().max(1024));
        }
        let (in0, out0) = (d.total_in(), out.len());
        let status = d
            .decompress_vec(&input[at..], out, FlushDecompress::Sync)
            .map_err(|e| format!("inflate: {e}"))?;
        at += (d.total_in() - in0) as usize;
        if status == Status::StreamEnd {
            return Ok(true);
        }
        let room_left = out.len() < out.capacity();
        if at == input.len() && room_left {
            return Ok(false);
        }
        if d.total_in() == in0 && out.len() == out0 && room_left {
            return Err("inflate: no progress".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// Compresses like a permessage-deflate sender: sync flush, tail removed.
    fn deflate_msg(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 64);
        c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn rfc7692_example_inflates() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, and §7.2.3.4's BFINAL form with its 0x00.
        let mut d = new_inflater();
        let mut out = Vec::new();
        inflate_message(
            &mut d,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            &mut out,
            false,
        )
        .unwrap();
        assert_eq!(out, b"Hello");
        inflate_message(
            &mut d,
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
            &mut out,
            true,
        )
        .unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.2: the second "Hello" of a context-takeover stream refers to the first.
        inflate_message(
            &mut d,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            &mut out,
            true,
        )
        .unwrap();
        inflate_message(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00], &mut out, true).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn context_takeover_stream_needs_its_window() {
        let msgs: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                format!(
                    r#"{{"topic":"bench.t3","seq":{i},"data":{{"s":"BTCUSDT","p":"67012.{i}"}}}}"#
                )
                .into_bytes()
            })
            .collect();
        let mut c = Compress::new(Compression::new(6), false);
        let mut d = new_inflater();
        let mut out = Vec::new();
        let mut wire = 0;
        for m in &msgs {
            let z = deflate_msg(&mut c, m);
            wire += z.len();
            inflate_message(&mut d, &z, &mut out, true).unwrap();
            assert_eq!(&out, m);
        }
        // Later messages refer back to earlier ones: far smaller than alone.
        assert!(wire * 3 < msgs.iter().map(Vec::len).sum::<usize>());
        // Without the window (reset after each message) a later message does not inflate.
        let mut c = Compress::new(Compression::new(6), false);
        let mut d = new_inflater();
        let _ = deflate_msg(&mut c, &msgs[0]);
        let z = deflate_msg(&mut c, &msgs[1]);
        let r = inflate_message(&mut d, &z, &mut out, false);
        assert!(r.is_err() || out != msgs[1]);
    }

    #[test]
    fn no_context_takeover_shares_one_inflater() {
        let mut d = new_inflater();
        let mut out = Vec::new();
        for m in [&b"{\"a\":1}"[..], &[b'x'; 100_000][..], b"{\"b\":2}"] {
            let mut c = Compress::new(Compression::new(6), false);
            let z = deflate_msg(&mut c, m);
            inflate_message(&mut d, &z, &mut out, false).unwrap();
            assert_eq!(out, m);
        }
        assert!(inflate_message(&mut d, &[0xff, 0xff, 0xff], &mut out, false).is_err());
    }

    #[test]
    fn cache_returns_only_the_same_bytes_inflated() {
        let mut c = InflateCache::new();
        assert_eq!(c.get(b"abc"), None);
        c.put(b"abc", b"inflated abc");
        c.put(b"", b"never");
        assert_eq!(c.get(b"abc"), Some(&b"inflated abc"[..]));
        assert_eq!(c.get(b"abd"), None);
        assert_eq!(c.get(b""), None);
        // Two keys in one slot: the later one replaces the earlier one, never answers for it.
        let a = b"x".to_vec();
        let b = (0u8..=255)
            .map(|i| vec![i])
            .find(|k| InflateCache::slot(k) == InflateCache::slot(&a) && *k != a);
        if let Some(b) = b {
            c.put(&a, b"A");
            c.put(&b, b"B");
            assert_eq!(c.get(&a), None);
            assert_eq!(c.get(&b), Some(&b"B"[..]));
        }
    }

    #[test]
    fn extension_answers_parsed() {
        let head = |ext: &str| {
            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n{ext}\r\n")
                .into_bytes()
        };
        assert_eq!(parse_response(&head("X-Other: 1")), Ok(None));
        assert_eq!(
            parse_response(&head(
                "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; \
                 client_no_context_takeover"
            )),
            Ok(Some(Agreed {
                server_no_context_takeover: true,
                server_max_window_bits: None
            }))
        );
        assert_eq!(
            parse_response(&head(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15; \
                 server_max_window_bits=\"10\""
            )),
            Ok(Some(Agreed {
                server_no_context_takeover: false,
                server_max_window_bits: Some(10)
            }))
        );
        assert_eq!(
            parse_response(&head("Sec-WebSocket-Extensions: permessage-deflate")),
            Ok(Some(Agreed {
                server_no_context_takeover: false,
                server_max_window_bits: None
            }))
        );
        for bad in [
            "Sec-WebSocket-Extensions: x-webkit-deflate-frame",
            "Sec-WebSocket-Extensions: permessage-deflate; foo",
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16",
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             server_no_context_takeover",
            "Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate",
        ] {
            assert!(parse_response(&head(bad)).is_err(), "{bad}");
        }
    }
}
