//! The per-target checks of the fuzz targets, shared with the corpus replay test.
//!
//! Included with `#[path]` by `tests/fuzz/fuzz_targets/*.rs` (cargo-fuzz, libFuzzer) and by the
//! main crate's `tests/fuzz_corpus.rs` (plain `cargo test`), so a corpus or regression file is
//! judged the same way by both. Every check panics on a broken invariant; returning means the
//! input is fine.
//!
//! Input formats (the first bytes choose parameters, the rest is the wire data):
//! - `http`: `[headers_max, header_bytes_sel, split]` then the request bytes.
//! - `frame`: `[limit_sel, c1, c2, c3]` then the client byte stream; it is fed in chunks of
//!   `c1 + 1`, `c2 + 1`, `c3 + 1`, `c1 + 1`, ... bytes, like partial socket reads.
//! - `deflate`: `[limit_sel, ratio_sel, c1, c2, c3]` then the client byte stream of a connection
//!   that negotiated permessage-deflate (or, for one `ratio_sel` in eight, did not), fed like
//!   `frame`'s.
//! - `protocol`: the text message itself.
//! - `envelope`: the bytes a broker delivers (a cluster envelope, or anything).

use tickcast::protocol::{self, ErrorCode};
use tickcast::ws::deflate::{InflateError, Inflater, RATIO_FLOOR_BYTES};
use tickcast::ws::frame::{
    Decoder, Message, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, Violation,
};
use tickcast::ws::http::{self, HttpLimits, UpgradeError};

// ---------------------------------------------------------------------------------------------
// HTTP handshake parser

/// `parse_request` with fuzzer-chosen limits; on a request, `check_upgrade` and the response
/// writers; on an error, the error response. Every response must parse back as HTTP/1.1 with
/// the right status, a matching `Content-Length` and (for errors) a JSON body.
pub fn http(data: &[u8]) {
    let [headers_max, bytes_sel, split, ref buf @ ..] = *data else {
        return;
    };
    let limits = HttpLimits {
        // 0..=255 covers 0, the configured range and more than HEADERS_CAP (128).
        headers_max: usize::from(headers_max),
        header_bytes_max: match bytes_sel {
            // Mostly the server default (8 KiB); sometimes tiny or exact limits.
            0..=127 => 8192,
            128..=191 => usize::from(bytes_sel - 128),
            _ => usize::from(bytes_sel - 192) * 64,
        },
    };
    match http::parse_request(buf, &limits) {
        Ok(None) => {
            assert!(buf.len() < limits.header_bytes_max, "Partial at the limit");
        }
        Ok(Some(req)) => {
            let n = req.head_len;
            assert!(n <= buf.len() && n <= limits.header_bytes_max, "head_len");
            assert!(buf[..n].ends_with(b"\n"), "head must end with a line end");
            assert!(!(req.chunked && req.content_length.is_some()), "CL with TE");
            // The same head alone parses to the same request: the body does not matter.
            let again = http::parse_request(&buf[..n], &limits)
                .expect("head alone fails")
                .expect("head alone incomplete");
            assert_eq!(again.head_len, n);
            assert_eq!(again.path, req.path);
            // A request that trickles in is accepted too: the server parses every prefix it
            // has read, and any of them must be "incomplete", never an error.
            for cut in [n - 1, usize::from(split) % n] {
                match http::parse_request(&buf[..cut], &limits) {
                    Ok(None) => {}
                    other => panic!("prefix {cut} of a {n}-byte head: {other:?}"),
                }
            }
            responses_for(&req);
        }
        Err(e) => {
            let mut out = Vec::new();
            http::http_error_response(&mut out, e);
            check_response(&out, e.status(), true);
        }
    }
}

fn responses_for(req: &http::Request<'_>) {
    match http::check_upgrade(req) {
        Ok(()) => {
            let key = req.ws_key.expect("check_upgrade passed without a key");
            assert_eq!(key.len(), 24, "a valid key is 24 base64 characters");
            let mut out = Vec::new();
            // The extension offer is hostile bytes too: negotiation must not panic, and what
            // it agrees to must make a well-formed response.
            let deflate = tickcast::ws::deflate::negotiate(req, true).ok().flatten();
            http::write_upgrade_response(&mut out, key, deflate);
            let (status, headers, body) = parse_response(&out);
            assert_eq!(status, 101);
            assert!(body.is_empty());
            assert_eq!(
                header(&headers, "sec-websocket-extensions").is_some(),
                deflate.is_some()
            );
            let accept = header(&headers, "sec-websocket-accept").expect("no accept");
            assert_eq!(
                accept,
                tungstenite::handshake::derive_accept_key(key).as_bytes()
            );
        }
        Err(e) => {
            let mut out = Vec::new();
            http::upgrade_error_response(&mut out, e);
            let headers = check_response(&out, e.status(), true);
            match e {
                UpgradeError::Version => {
                    assert_eq!(header(&headers, "sec-websocket-version"), Some(&b"13"[..]));
                }
                UpgradeError::Method => {
                    assert_eq!(header(&headers, "allow"), Some(&b"GET"[..]));
                }
                UpgradeError::BadRequest(_) => {}
            }
        }
    }
    // A plain response echoing what the client sent: values from a parsed request must not
    // be able to inject a header or break the response framing.
    let mut out = Vec::new();
    let extra: Vec<(&str, &str)> = req.origin.map(|o| ("X-Origin", o)).into_iter().collect();
    http::write_response(
        &mut out,
        200,
        "text/plain",
        req.path.as_bytes(),
        req.keep_alive,
        &extra,
    );
    let headers = check_response(&out, 200, false);
    if let Some(origin) = req.origin {
        assert_eq!(header(&headers, "x-origin"), Some(origin.as_bytes()));
    }
    let connection = header(&headers, "connection").expect("no Connection header");
    let want: &[u8] = if req.keep_alive {
        b"keep-alive"
    } else {
        b"close"
    };
    assert_eq!(connection, want);
    let mut out = Vec::new();
    http::write_response(&mut out, 204, "", b"", req.keep_alive, &[]);
    let (status, headers, body) = parse_response(&out);
    assert_eq!(status, 204);
    assert!(body.is_empty() && header(&headers, "content-length").is_none());
}

type Headers = Vec<(String, Vec<u8>)>;

/// Parses a complete response; returns status, headers (names lowercased) and body.
fn parse_response(out: &[u8]) -> (u16, Headers, &[u8]) {
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut slots);
    let n = match resp.parse(out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "response does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(out)
        ),
    };
    assert_eq!(resp.version, Some(1));
    let headers = resp
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    (resp.code.expect("no status"), headers, &out[n..])
}

fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h [u8]> {
    let mut found = headers.iter().filter(|(n, _)| n == name);
    let first = found.next().map(|(_, v)| v.as_slice());
    assert!(found.next().is_none(), "header {name} repeated");
    first
}

/// Checks status, `Content-Length` against the body, and a JSON error body when `json`.
fn check_response(out: &[u8], status: u16, json: bool) -> Headers {
    let (got, headers, body) = parse_response(out);
    assert_eq!(got, status);
    let length = header(&headers, "content-length").expect("no Content-Length");
    assert_eq!(length, body.len().to_string().as_bytes(), "Content-Length");
    if json {
        let v: serde_json::Value = serde_json::from_slice(body).expect("error body not JSON");
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
        assert_eq!(header(&headers, "connection"), Some(&b"close"[..]));
    }
    headers
}

// ---------------------------------------------------------------------------------------------
// WebSocket frame decoder

/// A decoded message, copied out of the borrowed buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The raw close payload (code and reason re-encoded).
    Close(Vec<u8>),
}

/// A message and whether it came compressed (RSV1 on its first frame, permessage-deflate); a
/// compressed message's payload is the compressed bytes as the decoder hands them out.
type Got = (Owned, bool);

/// Message size limits the first input byte chooses from (64 KiB is the server default, 16
/// MiB the echo route's).
const LIMITS: [usize; 16] = [
    0,
    1,
    2,
    5,
    16,
    125,
    126,
    127,
    128,
    200,
    1000,
    4096,
    65535,
    65536,
    16 << 20,
    usize::MAX,
];

/// Feeds the stream to a [`Decoder`] in fuzzer-chosen chunks, exactly as the server's read
/// loop does (unconsumed bytes presented again, in-place changes kept), and checks each
/// result; then compares the messages with a simple whole-stream reference decoder.
pub fn frame(data: &[u8]) {
    let [limit_sel, c1, c2, c3, ref stream @ ..] = *data else {
        return;
    };
    let limit = LIMITS[usize::from(limit_sel & 15)];
    let mut got = Vec::new();
    let violation = feed(stream, [c1, c2, c3], limit, false, |message, compressed| {
        got.push((check_message(message, limit, compressed), compressed));
    });
    check_against_reference(stream, false, &got, violation);
}

/// The server's read loop (`src/shard/conn/read.rs`) over `stream` on a connection that did
/// (`deflate`) or did not negotiate permessage-deflate, read in chunks of `c1 + 1`, `c2 + 1`,
/// `c3 + 1`, `c1 + 1`, ... bytes: unconsumed bytes presented again with the decoder's in-place
/// unmasking kept, and the empty `decode` that frees a returned reassembly buffer. Each message
/// goes to `on_message` with its `compressed` flag (never set without `deflate`). Checks what
/// must hold after every call (consumed bytes, memory held) and returns the violation that
/// ended the stream, if any, after checking that it makes a valid close frame.
fn feed(
    stream: &[u8],
    chunks: [u8; 3],
    limit: usize,
    deflate: bool,
    mut on_message: impl FnMut(Message<'_>, bool),
) -> Option<Violation> {
    let mut decoder = Decoder::new();
    decoder.set_deflate(deflate);
    assert_eq!(decoder.deflate(), deflate);
    let chunks = chunks.map(|c| usize::from(c) + 1);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut violation = None;
    'read: for chunk_len in chunks.iter().cycle() {
        if fed == stream.len() {
            break;
        }
        let end = stream.len().min(fed + chunk_len);
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        let mut pos = 0;
        while pos < buf.len() {
            let available = buf.len() - pos;
            let decoded = match decoder.decode(&mut buf[pos..], limit) {
                Ok(d) => d,
                Err(v) => {
                    violation = Some(v);
                    break 'read;
                }
            };
            let consumed = decoded.consumed;
            assert!(consumed <= available, "consumed {consumed} of {available}");
            if let Some(message) = decoded.message {
                assert!(consumed > 0, "a message that consumed nothing");
                assert!(
                    deflate || !decoded.compressed,
                    "RSV1 accepted without deflate"
                );
                on_message(message, decoded.compressed);
            } else {
                assert!(!decoded.compressed, "compressed without a message");
            }
            if consumed == 0 {
                break;
            }
            pos += consumed;
        }
        // What the server does after each read: free a reassembly buffer handed out last.
        if decoder.buffered_bytes() > 0 && !decoder.in_fragmented_message() {
            let d = decoder.decode(&mut [], limit).expect("empty input failed");
            assert!(d.consumed == 0 && d.message.is_none());
        }
        // An idle connection (no message in flight, no partial frame) holds no heap memory.
        // (A partial first fragment is already copied to the reassembly buffer.)
        if pos == buf.len() && !decoder.in_fragmented_message() {
            assert_eq!(decoder.buffered_bytes(), 0, "idle decoder holds memory");
        }
        assert!(
            decoder.buffered_bytes() <= limit,
            "holds {} bytes for a {limit}-byte limit",
            decoder.buffered_bytes()
        );
        buf.drain(..pos);
    }
    if let Some(v) = violation {
        // The close frame the server sends for it must be a valid one.
        assert!(tickcast::ws::close::is_valid_close_code(v.close_code()));
        assert!(v.reason().len() <= 123);
    }
    violation
}

/// What the decoder handed out must be a prefix of what [`reference_decode`] reads from the
/// unchunked stream, and all of it when there was no violation. The reserved bits are judged
/// by the reference alone: a frame it stops at for them must fail the decoder, and a decoder
/// that fails for them must have reached that very frame.
fn check_against_reference(
    stream: &[u8],
    deflate: bool,
    got: &[Got],
    violation: Option<Violation>,
) {
    let (want, stop) = reference_decode(stream, deflate);
    assert!(
        got.len() <= want.len() && got[..] == want[..got.len()],
        "decoded {got:?}, reference {want:?}"
    );
    if violation.is_none() {
        assert_eq!(got.len(), want.len(), "messages missed without a violation");
    }
    if stop == Stop::ReservedBits {
        assert!(
            violation.is_some(),
            "a frame with forbidden RSV bits accepted"
        );
    }
    if let Some(Violation::Protocol(reason)) = violation {
        if reason.contains("RSV") || reason.contains("reserved") {
            assert_eq!(
                stop,
                Stop::ReservedBits,
                "{reason}: the reference accepts the frame"
            );
            assert_eq!(got.len(), want.len(), "{reason} before the frame");
        }
    }
}

/// Checks what must hold of any message the decoder hands out, and copies it out. A compressed
/// message is a data message whose text is UTF-8 only once inflated.
fn check_message(message: Message<'_>, limit: usize, compressed: bool) -> Owned {
    match message {
        Message::Text(p) => {
            assert!(p.len() <= limit, "text of {} over {limit}", p.len());
            assert!(
                compressed || std::str::from_utf8(p).is_ok(),
                "text message not UTF-8"
            );
            Owned::Text(p.to_vec())
        }
        Message::Binary(p) => {
            assert!(p.len() <= limit, "binary of {} over {limit}", p.len());
            Owned::Binary(p.to_vec())
        }
        _ if compressed => panic!("a compressed control frame"),
        Message::Ping(p) => {
            assert!(p.len() <= 125);
            Owned::Ping(p.to_vec())
        }
        Message::Pong(p) => {
            assert!(p.len() <= 125);
            Owned::Pong(p.to_vec())
        }
        Message::Close(None) => Owned::Close(Vec::new()),
        Message::Close(Some((code, reason))) => {
            assert!(tickcast::ws::close::is_valid_close_code(code), "{code}");
            assert!(2 + reason.len() <= 125);
            let mut raw = code.to_be_bytes().to_vec();
            raw.extend_from_slice(reason.as_bytes());
            Owned::Close(raw)
        }
    }
}

/// Why [`reference_decode`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The stream ended (possibly inside a frame).
    End,
    /// RSV2 or RSV3 set, RSV1 without permessage-deflate, or RSV1 on a continuation or
    /// control frame (RFC 6455 §5.2, RFC 7692 §6).
    ReservedBits,
    /// Any other structural error.
    Other,
}

/// A deliberately simple decoder of the whole stream at once: frames with a structural error
/// end it, but payloads are not validated (UTF-8, close codes, size limit). Whatever the real
/// decoder hands out must be a prefix of this; all of it if the decoder found no violation.
/// With `deflate`, RSV1 on the first frame of a data message marks it compressed.
fn reference_decode(mut s: &[u8], deflate: bool) -> (Vec<Got>, Stop) {
    let mut out = Vec::new();
    // The fragmented message in flight: its opcode, whether compressed, the payload so far.
    let mut fragments: Option<(u8, bool, Vec<u8>)> = None;
    loop {
        // The reserved bits are judged on the first byte alone, as the decoder does.
        let Some(&b0) = s.first() else {
            return (out, Stop::End);
        };
        let (fin, rsv1, opcode) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0F);
        let control = opcode >= OP_CLOSE;
        let rsv1_forbidden =
            !deflate || matches!(opcode, OP_CONTINUATION | OP_CLOSE | OP_PING | OP_PONG);
        if b0 & 0x30 != 0 || (rsv1 && rsv1_forbidden) {
            return (out, Stop::ReservedBits);
        }
        let [_, b1, ref rest @ ..] = *s else {
            return (out, Stop::End);
        };
        let known = matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        );
        if !known || b1 & 0x80 == 0 || (control && !fin) {
            return (out, Stop::Other);
        }
        let (len, rest) = match b1 & 0x7F {
            126 if rest.len() >= 2 => (
                u64::from(u16::from_be_bytes([rest[0], rest[1]])),
                &rest[2..],
            ),
            127 if rest.len() >= 8 => (
                u64::from_be_bytes(rest[..8].try_into().unwrap()),
                &rest[8..],
            ),
            126 | 127 => return (out, Stop::End),
            n => (u64::from(n), rest),
        };
        if control && len > 125 {
            return (out, Stop::Other);
        }
        if rest.len() < 4 || len > (rest.len() - 4) as u64 {
            return (out, Stop::End);
        }
        let mask = [rest[0], rest[1], rest[2], rest[3]];
        let payload: Vec<u8> = rest[4..4 + len as usize]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        s = &rest[4 + len as usize..];
        let message = match (opcode, &mut fragments) {
            (OP_PING, _) => (Owned::Ping(payload), false),
            (OP_PONG, _) => (Owned::Pong(payload), false),
            (OP_CLOSE, _) => (Owned::Close(payload), false),
            (OP_CONTINUATION, Some((_, _, acc))) => {
                acc.extend_from_slice(&payload);
                if !fin {
                    continue;
                }
                let (first, compressed, acc) = fragments.take().unwrap();
                (data_message(first, acc), compressed)
            }
            // A continuation without a start, or a new message inside one.
            (OP_CONTINUATION, None) | (_, Some(_)) => return (out, Stop::Other),
            (_, None) if !fin => {
                fragments = Some((opcode, rsv1, payload));
                continue;
            }
            (_, None) => (data_message(opcode, payload), rsv1),
        };
        out.push(message);
    }
}

fn data_message(opcode: u8, payload: Vec<u8>) -> Owned {
    if opcode == OP_TEXT {
        Owned::Text(payload)
    } else {
        Owned::Binary(payload)
    }
}

// ---------------------------------------------------------------------------------------------
// permessage-deflate read path (decoder with RSV1, inflater, UTF-8 after inflating)

/// Message limits for the `deflate` target: they bound the inflated size too, so none is
/// unbounded (the server's range is 256 B to 64 MiB; 16 MiB is the echo route's, 64 KiB
/// the default), and the ones near the ratio floor (16 KiB) are there.
const DEFLATE_LIMITS: [usize; 16] = [
    0,
    1,
    16,
    125,
    126,
    256,
    1000,
    4096,
    16383,
    16384,
    16385,
    65535,
    65536,
    100_000,
    1 << 20,
    16 << 20,
];

/// `deflate.inflate_ratio_max` values (the server allows 1 to 100000; 100 is the default).
const RATIOS: [usize; 8] = [1, 2, 7, 10, 100, 100, 1000, 100_000];

/// `src/ws/deflate/inflate.rs`'s `SCRATCH_RETAIN_BYTES_MAX`: an output buffer over it is
/// dropped at the next call that needs no more.
const INFLATE_RETAIN_BYTES_MAX: usize = 256 * 1024;

/// What a connection that negotiated permessage-deflate does with client bytes: the decoder
/// with [`Decoder::set_deflate`], every compressed message through one [`Inflater`] (a shard
/// holds one for all its connections: here one for the whole stream), text validated after
/// inflating. Besides the frame checks: the inflated output is never over the message limit
/// or the ratio bound; each failure is the one the bounds and the data call for, with its
/// close code (1009 too big or compressed too well, 1007 not DEFLATE or not UTF-8); and the
/// output equals a flate2 reference inflate of the same bytes, and what an RFC 7692 receiver
/// that appends only 00 00 ff ff reads (see [`check_inflate`]).
pub fn deflate(data: &[u8]) {
    deflate_outcomes(data);
}

/// [`deflate`], returning what happened, in order: each compressed message's outcome
/// (`inflated`, `invalid UTF-8`, or the [`InflateError`]'s close reason) and the violation
/// that ended the stream (its close reason), so the replay test can tell that the corpus
/// reaches each of them.
pub fn deflate_outcomes(data: &[u8]) -> Vec<&'static str> {
    let mut outcomes = Vec::new();
    let [limit_sel, ratio_sel, c1, c2, c3, ref stream @ ..] = *data else {
        return outcomes;
    };
    let limit = DEFLATE_LIMITS[usize::from(limit_sel & 15)];
    let ratio = RATIOS[usize::from(ratio_sel & 7)];
    // Mostly negotiated; one input in eight not, where RSV1 is a protocol error.
    let negotiated = ratio_sel & 0x38 != 0x38;
    let mut inflater = Inflater::with_ratio_max(ratio);
    let mut got = Vec::new();
    let violation = feed(
        stream,
        [c1, c2, c3],
        limit,
        negotiated,
        |message, compressed| {
            if let (true, Message::Text(p) | Message::Binary(p)) = (compressed, &message) {
                let text = matches!(message, Message::Text(_));
                outcomes.push(check_inflate(&mut inflater, p, text, limit, ratio));
            }
            got.push((check_message(message, limit, compressed), compressed));
        },
    );
    check_against_reference(stream, negotiated, &got, violation);
    outcomes.extend(violation.map(|v| v.reason()));
    outcomes
}

/// A defect this target found, fixed in `Inflater::inflate`: a message that stops inside a
/// DEFLATE block could have the 9 bytes the inflater appends (RFC 7692 §7.2.2's 00 00 ff ff,
/// then an empty final stored block 01 00 00 ff ff) read as that block's data, and was then
/// accepted with output the client never sent (`01 09 00 f6 ff` inflated to the tail itself).
/// Now such a message is 1007 (`InflateError::Invalid`). `false` makes the check demand that;
/// `true` would accept the old behaviour (outcome `tail read as data`).
const TAIL_READ_AS_DATA_ACCEPTED: bool = false;

/// One compressed message through the shard's inflater, as `src/shard/conn/read.rs` does;
/// returns the outcome (see [`deflate_outcomes`]).
///
/// What is right comes from three flate2 inflates done differently from the inflater's (one
/// contiguous input, an output grown 4 KiB at a time and cut one byte past the bound): `full`,
/// the payload with the inflater's 9-byte tail, says whether the message ends the DEFLATE
/// stream; `rfc`, the payload with RFC 7692's 4 bytes, is what other receivers read; `alone`,
/// the payload without tail, tells output the tail produced. Output over the bound is 1009
/// (`TooBig` when the message limit is the tighter bound, else `Ratio`); data that is not
/// DEFLATE or stops inside a block is 1007; anything else is the bytes all three agree on.
/// Where two answers are both defensible, either is accepted: over the bound with invalid
/// data after it or only through the tail (1009 or 1007), and a block that RFC 7692's 4 bytes
/// themselves end (the bytes, or 1007). Output read from the inflater's extra 5 bytes should be
/// 1007 (see [`TAIL_READ_AS_DATA_ACCEPTED`]).
fn check_inflate(
    inflater: &mut Inflater,
    payload: &[u8],
    text: bool,
    limit: usize,
    ratio: usize,
) -> &'static str {
    let bound = limit.min(payload.len().saturating_mul(ratio).max(RATIO_FLOOR_BYTES));
    let result = inflater.inflate(payload, limit).map(|out| out.to_vec());
    if bound < INFLATE_RETAIN_BYTES_MAX {
        // Memory follows the bound of the message at hand, not the largest one seen.
        assert!(
            inflater.scratch_bytes() <= 2 * INFLATE_RETAIN_BYTES_MAX,
            "inflater holds {} bytes for a {bound}-byte bound",
            inflater.scratch_bytes()
        );
    }
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0xFF, 0xFF]);
    let (full, full_end) = reference_inflate(&input, bound);
    let (rfc, _) = reference_inflate(&input[..payload.len() + 4], bound);
    let (alone, _) = reference_inflate(payload, bound);
    let over = if bound == limit {
        InflateError::TooBig
    } else {
        InflateError::Ratio
    };
    let (ok, errors): (Option<&[u8]>, &[InflateError]) = if full.len() > bound {
        // zlib may also read invalid data past a full output (a block header needs no room),
        // and output over the bound may come from the tail: either answer refuses it then.
        if full_end == Ending::Invalid || alone.len() <= bound {
            (None, &[InflateError::Invalid, over])
        } else {
            (None, std::slice::from_ref(&over))
        }
    } else if full_end != Ending::Stream {
        (None, &[InflateError::Invalid])
    } else if full != rfc {
        // The tail read as data (see TAIL_READ_AS_DATA_ACCEPTED).
        assert!(full.starts_with(&rfc), "the tail changed earlier output");
        (
            TAIL_READ_AS_DATA_ACCEPTED.then_some(&full[..]),
            &[InflateError::Invalid],
        )
    } else if full.len() > alone.len() {
        // RFC 7692's 4 bytes read as data, and the block ended there: an RFC 7692 receiver
        // reads the same bytes, but no sender makes such a message; accepting and refusing
        // are both right.
        (Some(&full[..]), &[InflateError::Invalid])
    } else {
        (Some(&full[..]), &[])
    };
    match &result {
        Ok(out) => {
            let Some(want) = ok else {
                panic!("inflated {} bytes; want one of {errors:?}", out.len());
            };
            assert!(out.len() <= bound && out.len() <= limit);
            assert_same(out, want, "inflater and reference");
            if text {
                let checked = tickcast::ws::deflate::check_text(out);
                assert_eq!(checked.is_ok(), std::str::from_utf8(out).is_ok());
                if let Err(v) = checked {
                    assert_eq!(v, Violation::InvalidUtf8);
                    assert_eq!(v.close_code(), 1007);
                    return "invalid UTF-8";
                }
            }
            if full != rfc {
                "tail read as data"
            } else {
                "inflated"
            }
        }
        Err(e) => {
            assert!(
                errors.contains(e),
                "inflater {e:?}; want {:?} (bound {bound}, limit {limit}, ratio {ratio})",
                ok.map(|w| w.len())
            );
            let code = match e {
                InflateError::Invalid => 1007,
                InflateError::TooBig | InflateError::Ratio => 1009,
            };
            assert_eq!(e.close_code(), code);
            assert!(!e.reason().is_empty() && e.reason().len() <= 123);
            e.reason()
        }
    }
}

/// Panics, naming the first difference, unless `got == want`.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes against {}, first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// How [`reference_inflate`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The DEFLATE stream ended (a block with BFINAL set).
    Stream,
    /// The input was used up inside the stream, or the output reached `cap + 1` bytes.
    Input,
    /// Invalid data.
    Invalid,
}

/// Raw DEFLATE of `input` with flate2 into an output grown 4 KiB at a time and cut at
/// `cap + 1` bytes: the output (up to an error, if any) and how it stopped.
fn reference_inflate(input: &[u8], cap: usize) -> (Vec<u8>, Ending) {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut d = Decompress::new(false);
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let room = (cap + 1 - out.len()).min(chunk.len());
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let rest = &input[before_in as usize..];
        let status = d.decompress(rest, &mut chunk[..room], FlushDecompress::None);
        let n = (d.total_out() - before_out) as usize;
        out.extend_from_slice(&chunk[..n]);
        let ending = match status {
            Err(_) => Ending::Invalid,
            Ok(Status::StreamEnd) => Ending::Stream,
            Ok(_) if out.len() > cap || (n == 0 && d.total_in() == before_in) => Ending::Input,
            Ok(_) => continue,
        };
        return (out, ending);
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol op parser

/// `scan_top_level` on any bytes; `protocol::parse` on UTF-8 ones (the decoder only hands out
/// valid text). Every reply built from what parse returns must be valid JSON, `id` must be
/// echoed byte for byte, and a publish's `data` (forwarded verbatim) must be one JSON value.
pub fn protocol(data: &[u8]) {
    let spans = protocol::scan_top_level(data);
    for span in [&spans.id, &spans.data].into_iter().flatten() {
        assert!(span.start <= span.end && span.end <= data.len(), "{span:?}");
    }
    if std::str::from_utf8(data).is_err() {
        return;
    }
    let mut msg = data.to_vec();
    let mut buffers = simd_json::Buffers::default();
    match protocol::parse(&mut msg, &mut buffers) {
        Ok(req) => {
            // simd-json accepted the message: a strict parser must agree, or the spans the
            // scanner found may not be the values simd-json validated.
            assert_json_syntax(data, "accepted message");
            let id = req.id.as_deref();
            if let Some(id) = id {
                assert_id(id);
            }
            if let Some(d) = &req.data {
                assert_json_syntax(d, "data");
            }
            let mut out = Vec::new();
            protocol::error(&mut out, id, ErrorCode::Internal, "x", Some("t"));
            check_reply(&out, id);
            out.clear();
            let done = tickcast::protocol::Published {
                seq: 7,
                epoch: u64::MAX,
                duplicate: true,
            };
            protocol::ack_seq(&mut out, id, done);
            check_reply(&out, id);
            out.clear();
            protocol::pong(&mut out, id, 7);
            check_reply(&out, id);
            out.clear();
            match &req.op {
                protocol::Op::Subscribe { topics, since } => {
                    assert!(!topics.is_empty());
                    assert!(since.len() <= topics.len().max(protocol::SINCE_PER_REQUEST_MAX));
                    protocol::ack_topics(&mut out, id, topics);
                    check_reply(&out, id);
                    out.clear();
                    for s in since {
                        // A client's since topic goes back in gap messages: any string.
                        protocol::gap(
                            &mut out,
                            &s.topic,
                            tickcast::protocol::parse_epoch(&s.epoch).unwrap_or(0),
                            s.seq,
                            s.seq,
                            tickcast::protocol::GapReason::Epoch,
                        );
                        let v = check_reply(&out, None);
                        assert_eq!(v["topic"].as_str(), Some(&*s.topic));
                        out.clear();
                    }
                }
                protocol::Op::Unsubscribe { topics } => {
                    assert!(!topics.is_empty());
                    protocol::ack_topics(&mut out, id, topics);
                    let v = check_reply(&out, id);
                    let echoed = v["topics"].as_array().expect("topics");
                    assert_eq!(echoed.len(), topics.len());
                    for (e, t) in echoed.iter().zip(topics) {
                        assert_eq!(e.as_str(), Some(&**t));
                    }
                }
                protocol::Op::Auth { token } => {
                    assert!(!token.is_empty());
                    protocol::ack_auth(&mut out, id, token, Some(1), &[token.as_ref()]);
                    let v = check_reply(&out, id);
                    assert_eq!(v["user"].as_str(), Some(&**token));
                }
                protocol::Op::Publish { topic, idem } => {
                    assert!(
                        idem.as_deref()
                            .is_none_or(|k| !k.is_empty() && k.len() <= 128)
                    );
                    assert!(req.data.is_some(), "publish without data");
                    protocol::error(&mut out, id, ErrorCode::InvalidTopic, "x", Some(topic));
                    let v = check_reply(&out, id);
                    assert_eq!(v["topic"].as_str(), Some(&**topic));
                }
                protocol::Op::Ping => {}
            }
        }
        Err(bad) => {
            if let Some(id) = bad.id.as_deref() {
                assert_id(id);
            }
            let mut out = Vec::new();
            protocol::error(
                &mut out,
                bad.id.as_deref(),
                ErrorCode::BadRequest,
                &bad.message,
                None,
            );
            let v = check_reply(&out, bad.id.as_deref());
            assert_eq!(v["message"].as_str(), Some(&*bad.message));
        }
    }
}

/// Whether `raw` is one JSON value by the grammar of RFC 8259. Numbers are checked for syntax
/// only: `1e999` is valid JSON that `serde_json::Value` refuses as out of range, and ids and
/// data are echoed verbatim, whatever their magnitude.
fn assert_json_syntax(raw: &[u8], what: &str) {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
        panic!(
            "{what} is not JSON ({e}): {:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

/// An `id` as echoed: one JSON number or string literal.
fn assert_id(id: &[u8]) {
    assert!(
        matches!(id.first(), Some(b'"' | b'-' | b'0'..=b'9')),
        "id {:?} is not a number or a string",
        String::from_utf8_lossy(id)
    );
    assert_json_syntax(id, "id");
}

/// The reply is one JSON object starting `{"op":"..."` then, if there is an id, `,"id":` and
/// the raw id byte for byte. It is returned parsed, with the id replaced by `0` (the id's
/// own validity is [`assert_id`]'s business).
fn check_reply(out: &[u8], id: Option<&[u8]>) -> serde_json::Value {
    assert_json_syntax(out, "reply");
    assert!(out.starts_with(b"{\"op\":\""), "reply starts wrong");
    let op_end = 7 + out[7..].iter().position(|&b| b == b'"').expect("no op") + 1;
    let mut plain = out.to_vec();
    if let Some(id) = id {
        assert_id(id);
        let at = op_end + 6;
        assert_eq!(&out[op_end..at], b",\"id\":");
        assert_eq!(&out[at..at + id.len()], id, "id not echoed verbatim");
        plain.splice(at..at + id.len(), *b"0");
    }
    let v: serde_json::Value = serde_json::from_slice(&plain).expect("reply");
    assert!(v.is_object());
    assert_eq!(v.get("id").is_some(), id.is_some());
    v
}

// ---------------------------------------------------------------------------------------------
// Cluster envelope (what a broker hands a node)

/// `envelope::decode` on arbitrary bytes: an error or an envelope, never a panic; a decoded
/// envelope has a valid topic, its `data` lies inside the buffer (read in place), and
/// encoding what was read gives an envelope that reads back the same.
pub fn envelope(data: &[u8]) {
    use tickcast::cluster::envelope::{Envelope, decode};
    let buf = bytes::Bytes::copy_from_slice(data);
    let Ok(m) = decode(&buf) else {
        return;
    };
    assert!(tickcast::pubsub::topic::validate_topic(&m.topic).is_ok());
    if !m.data.is_empty() {
        let (start, at) = (buf.as_ptr() as usize, m.data.as_ptr() as usize);
        assert!(
            at >= start && at + m.data.len() <= start + buf.len(),
            "data not in place"
        );
    }
    let env = Envelope {
        seq: m.seq,
        epoch: m.epoch,
        ts_us: m.ts_us,
        flags: m.flags,
        origin: String::new(),
        topic: m.topic.to_string(),
        data: m.data.to_vec(),
    };
    let again = decode(&bytes::Bytes::from(env.encode())).expect("re-encoded envelope");
    assert_eq!(
        (again.seq, again.epoch, again.ts_us, again.flags),
        (m.seq, m.epoch, m.ts_us, m.flags)
    );
    assert_eq!((&*again.topic, &again.data[..]), (&*m.topic, &m.data[..]));
}

// ---------------------------------------------------------------------------------------------
// Client addresses behind proxies: PROXY protocol headers, forwarded headers

/// `[mode, split]` then the bytes. Even `mode`: `ws::proxy::header::parse` on the bytes as the
/// first bytes of a connection. Odd `mode`: the bytes are forwarded header lines (split at
/// `\n`), walked with `ws::proxy::forwarded::client` as X-Forwarded-For (`mode & 2` clear) or
/// Forwarded, from a trusted sender, against one of four trusted sets (`mode >> 2`).
pub fn proxy(data: &[u8]) {
    let [mode, split, ref buf @ ..] = *data else {
        return;
    };
    if mode & 1 == 0 {
        proxy_header(buf, split);
    } else {
        proxy_forwarded(buf, mode >> 1);
    }
}

fn proxy_header(buf: &[u8], split: u8) {
    use tickcast::ws::proxy::header::{self, Preamble, V1_BYTES_MAX, V2_BYTES_MAX, V2_SIGNATURE};
    let got = header::parse(buf);
    // Appending bytes never changes a decision: a header stays the same header (what follows
    // it is the caller's), an error stays an error, "absent" stays absent.
    let mut more = buf.to_vec();
    more.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let again = header::parse(&more);
    match got {
        Ok(Preamble::Incomplete) => {
            assert!(buf.len() < V2_BYTES_MAX, "incomplete past every bound");
        }
        Ok(Preamble::Absent) => {
            assert!(!buf.is_empty());
            assert!(!buf.starts_with(b"PROXY ") && !buf.starts_with(&V2_SIGNATURE));
            assert_eq!(again, got);
        }
        Ok(Preamble::Header { len, source }) => {
            assert!(len <= buf.len(), "a header longer than the input");
            if buf.starts_with(b"PROXY ") {
                assert!(len <= V1_BYTES_MAX && buf[..len].ends_with(b"\r\n"));
            } else {
                assert!(buf.starts_with(&V2_SIGNATURE) && len <= V2_BYTES_MAX);
            }
            assert_eq!(again, got);
            assert_eq!(
                header::parse(&buf[..len]),
                Ok(Preamble::Header { len, source })
            );
            // Trickling in, every prefix is "incomplete", never an error or "absent".
            for cut in [len - 1, usize::from(split) % len] {
                assert_eq!(
                    header::parse(&buf[..cut]),
                    Ok(Preamble::Incomplete),
                    "{cut}"
                );
            }
        }
        Err(e) => {
            assert!(!e.reason().is_empty());
            assert_eq!(again, got);
        }
    }
}

fn proxy_forwarded(buf: &[u8], sel: u8) {
    use std::net::IpAddr;
    use tickcast::ws::proxy::{
        Trusted,
        forwarded::{self, Field, Walk},
    };
    let field = if sel & 1 == 0 {
        Field::XForwardedFor
    } else {
        Field::Forwarded
    };
    let sets: [&[&str]; 4] = [
        &["127.0.0.1"],
        &["10.0.0.0/8", "192.168.0.0/16"],
        &["::/0"],
        &["2001:db8::/32", "127.0.0.0/8"],
    ];
    let trusted = Trusted::parse(sets[usize::from(sel >> 1) % 4]).unwrap();
    let sender: IpAddr = "127.0.0.1".parse().unwrap();
    let lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').take(4).collect();
    match forwarded::client(lines.iter().copied(), field, sender, &trusted) {
        Walk::Absent => {}
        // The client is untrusted, unless every address in the chain was trusted.
        Walk::Client(ip) => assert_eq!(ip, ip.to_canonical()),
        // An unusable element leaves the sender or an address the walk trusted.
        Walk::Invalid(ip) => assert!(ip == sender || trusted.contains(ip), "{ip}"),
    }
}
