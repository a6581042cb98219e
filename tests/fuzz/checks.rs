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
//! - `protocol`: the text message itself.
//! - `envelope`: the bytes a broker delivers (a cluster envelope, or anything).

use tickcast::protocol::{self, ErrorCode};
use tickcast::ws::frame::{
    Decoder, Message, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
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
    let chunks = [c1, c2, c3].map(|c| usize::from(c) + 1);
    let mut decoder = Decoder::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut got: Vec<Owned> = Vec::new();
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
                got.push(check_message(message, limit));
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
    let want = reference_decode(stream);
    assert!(
        got.len() <= want.len() && got[..] == want[..got.len()],
        "decoded {got:?}, reference {want:?}"
    );
    if violation.is_none() {
        assert_eq!(got.len(), want.len(), "messages missed without a violation");
    }
}

/// Checks what must hold of any message the decoder hands out, and copies it out.
fn check_message(message: Message<'_>, limit: usize) -> Owned {
    match message {
        Message::Text(p) => {
            assert!(p.len() <= limit, "text of {} over {limit}", p.len());
            assert!(std::str::from_utf8(p).is_ok(), "text message not UTF-8");
            Owned::Text(p.to_vec())
        }
        Message::Binary(p) => {
            assert!(p.len() <= limit, "binary of {} over {limit}", p.len());
            Owned::Binary(p.to_vec())
        }
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

/// A deliberately simple decoder of the whole stream at once: frames with a structural error
/// end it, but payloads are not validated (UTF-8, close codes, size limit). Whatever the real
/// decoder hands out must be a prefix of this; all of it if the decoder found no violation.
fn reference_decode(mut s: &[u8]) -> Vec<Owned> {
    let mut out = Vec::new();
    let mut fragments: Option<(u8, Vec<u8>)> = None;
    loop {
        let [b0, b1, ref rest @ ..] = *s else {
            return out;
        };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        let control = opcode >= OP_CLOSE;
        let known = matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        );
        if b0 & 0x70 != 0 || !known || b1 & 0x80 == 0 || (control && !fin) {
            return out;
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
            126 | 127 => return out,
            n => (u64::from(n), rest),
        };
        if control && len > 125 {
            return out;
        }
        if rest.len() < 4 || len > (rest.len() - 4) as u64 {
            return out;
        }
        let mask = [rest[0], rest[1], rest[2], rest[3]];
        let payload: Vec<u8> = rest[4..4 + len as usize]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        s = &rest[4 + len as usize..];
        let message = match (opcode, &mut fragments) {
            (OP_PING, _) => Owned::Ping(payload),
            (OP_PONG, _) => Owned::Pong(payload),
            (OP_CLOSE, _) => Owned::Close(payload),
            (OP_CONTINUATION, Some((_, acc))) => {
                acc.extend_from_slice(&payload);
                if !fin {
                    continue;
                }
                let (first, acc) = fragments.take().unwrap();
                data_message(first, acc)
            }
            // A continuation without a start, or a new message inside one.
            (OP_CONTINUATION, None) | (_, Some(_)) => return out,
            (_, None) if !fin => {
                fragments = Some((opcode, payload));
                continue;
            }
            (_, None) => data_message(opcode, payload),
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
