//! Protocol v1 (docs/PROTOCOL.md): client ops to typed commands, and the replies.
//!
//! Parsing is in two steps over the text message, which the frame decoder hands out mutably:
//! 1. [`scan_top_level`] finds the raw byte spans of the top-level `"id"` and `"data"` values.
//!    `data` is forwarded verbatim into the published frame, and `id` echoed verbatim, so
//!    neither is ever re-serialized.
//! 2. simd-json parses the message in place (which rewrites string escapes in the buffer, hence
//!    the spans are copied out first) into [`OpFields`], validating the whole document.

use std::borrow::Cow;

use serde::Deserialize;

/// Error codes of `{"op":"error"}` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidTopic,
    TooManySubscriptions,
    Forbidden,
    Unauthorized,
    RateLimited,
    MessageTooLarge,
    /// Cluster mode: the broker did not confirm a publish (down, or too slow).
    Unavailable,
    /// A publish refused because the server is at capacity: its topic's owner cannot hold
    /// another topic (`limits.topics_per_shard_max`), or a queue on its way is full.
    Capacity,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Capacity => "capacity",
            ErrorCode::Internal => "internal",
        }
    }

    /// HTTP status for the same error on the HTTP API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidTopic => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::MessageTooLarge => 413,
            ErrorCode::TooManySubscriptions | ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable | ErrorCode::Capacity => 503,
        }
    }
}

/// Byte ranges of the top-level `id` and `data` values of a JSON object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Spans {
    pub id: Option<std::ops::Range<usize>>,
    pub data: Option<std::ops::Range<usize>>,
}

/// Finds the raw spans of the top-level `"id"` and `"data"` values. Tolerant and bounded: on
/// anything that is not a JSON object it returns what it found so far; the simd-json pass that
/// follows is what decides validity (duplicate keys included, escaped or not). Linear time, no
/// recursion, no allocation unless a key is written with escapes.
///
/// Measured: 13 ns for a 20 B ping, 36 ns for a 119 B subscribe, 69 ns for a 190 B publish and
/// 0.32-0.36 µs for a 1 KiB publish (about 2.7 GiB/s, byte at a time), medians
/// (benches/protocol.rs, `cargo bench --bench protocol`, shared 2-core VM, 2026-11-21).
pub fn scan_top_level(json: &[u8]) -> Spans {
    let mut spans = Spans::default();
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return spans;
    }
    i += 1;
    loop {
        i = skip_ws(json, i);
        match json.get(i) {
            Some(b'"') => {}
            _ => return spans,
        }
        let key_start = i + 1;
        let Some(key_end) = skip_string(json, i) else {
            return spans;
        };
        // key_end is one past the closing quote. A key written with escapes (`"\u0064ata"`)
        // is decoded, so this scan and simd-json agree on what every key is.
        let raw_key = &json[key_start..key_end - 1];
        let decoded;
        let key = if raw_key.contains(&b'\\') {
            decoded = serde_json::from_slice::<String>(&json[key_start - 1..key_end]).ok();
            decoded.as_deref().map_or(&b""[..], str::as_bytes)
        } else {
            raw_key
        };
        i = skip_ws(json, key_end);
        if json.get(i) != Some(&b':') {
            return spans;
        }
        i = skip_ws(json, i + 1);
        let value_start = i;
        let Some(value_end) = skip_value(json, i) else {
            return spans;
        };
        match key {
            b"id" if spans.id.is_none() => spans.id = Some(value_start..value_end),
            b"data" if spans.data.is_none() => spans.data = Some(value_start..value_end),
            _ => {}
        }
        i = skip_ws(json, value_end);
        match json.get(i) {
            Some(b',') => i += 1,
            _ => return spans,
        }
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = json.get(i) {
        i += 1;
    }
    i
}

/// `json[i]` is `"`; returns the index one past the closing quote.
fn skip_string(json: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < json.len() {
        match json[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Returns the index one past the value starting at `json[i]`.
fn skip_value(json: &[u8], i: usize) -> Option<usize> {
    match json.get(i)? {
        b'"' => skip_string(json, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < json.len() {
                match json[j] {
                    b'"' => {
                        j = skip_string(json, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            // Number or literal: up to the next delimiter.
            let mut j = i;
            while j < json.len()
                && !matches!(json[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The fields of any client op, as simd-json deserializes them (borrowing from the buffer).
/// `id` and `data` are validated here but read from [`Spans`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpFields<'a> {
    #[serde(borrow)]
    pub op: Cow<'a, str>,
    #[serde(default)]
    pub id: Option<IdValue>,
    #[serde(borrow, default)]
    pub topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub topics: Option<Vec<Cow<'a, str>>>,
    /// `auth` op: a JWT or an API key.
    #[serde(borrow, default)]
    pub token: Option<Cow<'a, str>>,
    /// `publish` op: deduplication key.
    #[serde(borrow, default)]
    pub idem: Option<Cow<'a, str>>,
    /// `subscribe` op: where the client's stream of each topic stopped.
    #[serde(borrow, default)]
    pub since: Option<std::collections::HashMap<Cow<'a, str>, SinceValue<'a>>>,
    /// Whether `data` is present (any JSON value, `null` included).
    #[serde(default, deserialize_with = "present")]
    pub data: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// Accepts only a number or a string for `id`.
#[derive(Debug)]
pub struct IdValue;

impl<'de> Deserialize<'de> for IdValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IdValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E>(self, _: u64) -> Result<IdValue, E> {
                Ok(IdValue)
            }
            fn visit_i64<E>(self, _: i64) -> Result<IdValue, E> {
                Ok(IdValue)
            }
            fn visit_f64<E>(self, _: f64) -> Result<IdValue, E> {
                Ok(IdValue)
            }
            fn visit_str<E>(self, _: &str) -> Result<IdValue, E> {
                Ok(IdValue)
            }
        }
        d.deserialize_any(V)
    }
}

/// `{"seq": N, "epoch": "…"}` in a subscribe's `since`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinceValue<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub epoch: Cow<'a, str>,
}

/// One entry of a subscribe's `since`.
#[derive(Debug)]
pub struct Since<'a> {
    pub topic: Cow<'a, str>,
    pub seq: u64,
    pub epoch: Cow<'a, str>,
}

/// A client op, parsed. Raw `id` and `data` bytes are copies of the original text.
#[derive(Debug)]
pub enum Op<'a> {
    Subscribe {
        topics: Vec<Cow<'a, str>>,
        since: Vec<Since<'a>>,
    },
    Unsubscribe {
        topics: Vec<Cow<'a, str>>,
    },
    Publish {
        topic: Cow<'a, str>,
        idem: Option<Cow<'a, str>>,
    },
    Auth {
        token: Cow<'a, str>,
    },
    Ping,
}

/// A parsed client message: the op and its raw id (if any).
#[derive(Debug)]
pub struct Request<'a> {
    pub op: Op<'a>,
    /// Raw JSON of the `id` value, echoed verbatim in replies.
    pub id: Option<Box<[u8]>>,
    /// Raw JSON of the `data` value (publish only).
    pub data: Option<Vec<u8>>,
}

/// Why a message is not a valid op; the error reply carries `id` when it could be read.
#[derive(Debug)]
pub struct BadRequest {
    pub id: Option<Box<[u8]>>,
    pub message: String,
}

/// Parses one text message. `buffers` is the shard's reusable simd-json scratch.
///
/// Measured, medians: 111 ns for a 20 B ping, 238 ns for a 119 B subscribe, 384 ns for a 190 B
/// publish, 1.58 µs for a 1 KiB publish. The same function on serde_json (same span scan, same
/// `OpFields`) took 94 ns, 241 ns, 338 ns and 1.15 µs: at these sizes simd-json (AVX2 chosen at
/// run time) is not faster (benches/protocol.rs, `cargo bench --bench protocol`, shared 2-core VM, 2026-11-21).
pub fn parse<'a>(
    msg: &'a mut [u8],
    buffers: &mut simd_json::Buffers,
) -> Result<Request<'a>, BadRequest> {
    let spans = scan_top_level(msg);
    if spans.id.as_ref().is_some_and(|r| r.len() > ID_BYTES_MAX) {
        // Every reply echoes the id: a client must not make its replies this large.
        return Err(BadRequest {
            id: None,
            message: format!("\"id\" is longer than {ID_BYTES_MAX} bytes"),
        });
    }
    let id = spans.id.clone().map(|r| Box::<[u8]>::from(&msg[r]));
    let data = spans.data.clone().map(|r| msg[r].to_vec());
    let fields: OpFields<'a> = match simd_json::serde::from_slice_with_buffers(msg, buffers) {
        Ok(f) => f,
        Err(e) => {
            // Only echo an id that simd-json would have accepted: on a parse error, the
            // spans may come from a broken document.
            let id = id.filter(|raw| is_id_literal(raw));
            return Err(BadRequest {
                id,
                message: describe_json_error(&e),
            });
        }
    };
    // `"id": null` counts as no id.
    let id = if fields.id.is_some() { id } else { None };
    let bad = |message: &str| BadRequest {
        id: id.clone(),
        message: message.to_string(),
    };
    let op = match &*fields.op {
        "subscribe" | "unsubscribe" => {
            let Some(topics) = fields.topics else {
                return Err(bad("\"topics\" (an array of strings) is required"));
            };
            if topics.is_empty() {
                return Err(bad("\"topics\" must not be empty"));
            }
            if fields.op == "subscribe" {
                let since: Vec<Since<'a>> = fields
                    .since
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(topic, v)| Since {
                        topic,
                        seq: v.seq,
                        epoch: v.epoch,
                    })
                    .collect();
                if since.len() > topics.len().max(SINCE_PER_REQUEST_MAX) {
                    return Err(bad("\"since\" names too many topics"));
                }
                Op::Subscribe { topics, since }
            } else {
                if fields.since.is_some() {
                    return Err(bad("\"since\" belongs to subscribe"));
                }
                Op::Unsubscribe { topics }
            }
        }
        "publish" => {
            let Some(topic) = fields.topic else {
                return Err(bad("\"topic\" (a string) is required"));
            };
            if data.is_none() || !fields.data {
                return Err(bad("\"data\" is required"));
            }
            check_idem(fields.idem.as_deref()).map_err(bad)?;
            Op::Publish {
                topic,
                idem: fields.idem,
            }
        }
        "auth" => {
            let Some(token) = fields.token.filter(|t| !t.is_empty()) else {
                return Err(bad("\"token\" (a string) is required"));
            };
            Op::Auth { token }
        }
        "ping" => Op::Ping,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(bad(&format!("unknown op {shown:?}")));
        }
    };
    Ok(Request { op, id, data })
}

/// Whether raw id bytes look like a JSON number or string literal (for echoing on errors).
fn is_id_literal(raw: &[u8]) -> bool {
    // The spans of a broken document may hold anything (`007`, `"\q"`, a raw newline): echo
    // only what is itself one valid JSON number or string, so the error reply stays JSON.
    matches!(raw.first(), Some(b'"' | b'-' | b'0'..=b'9'))
        && serde_json::from_slice::<serde::de::IgnoredAny>(raw).is_ok()
}

fn describe_json_error(e: &simd_json::Error) -> String {
    let text = e.to_string();
    // simd-json's messages are terse but safe; bound the length anyway.
    let text: String = text.chars().take(160).collect();
    format!("malformed request: {text}")
}

/// Why a `gap` is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The history no longer holds (or never held) the missed frames.
    Evicted,
    /// The topic's epoch changed (server restart, topic dropped): the client's `seq` is void.
    Epoch,
    /// Cluster: messages this node did not get from the broker, and the broker's history no
    /// longer holds (or the broker could not be asked).
    Lost,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Evicted => "evicted",
            GapReason::Epoch => "epoch",
            GapReason::Lost => "lost",
        }
    }
}

/// Renders a topic epoch as clients see it: 16 hex digits.
pub fn epoch_str(epoch: u64) -> String {
    format!("{epoch:016x}")
}

/// Parses a client's epoch string: 1 to 16 hex digits (`"0"` or all zeros: "not known",
/// compared by `seq` alone). Anything else is malformed: `None`.
pub fn parse_epoch(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

// ---------------------------------------------------------------------------------------------
// Replies. Built into a caller-provided Vec (then framed) so there is one allocation per reply.

fn open(out: &mut Vec<u8>, op: &str, id: Option<&[u8]>) {
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(op.as_bytes());
    out.push(b'"');
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id);
    }
}

/// Appends `s` as a JSON string (escaped).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// Who a connection is, for the welcome frame.
pub struct WelcomeUser<'a> {
    /// User id or API key name; `None` = anonymous.
    pub user: Option<&'a str>,
    /// Token expiry (Unix seconds).
    pub exp: Option<u64>,
    /// Anonymous access is off: the `auth` op must come first.
    pub auth_required: bool,
}

pub fn welcome(
    out: &mut Vec<u8>,
    conn: &str,
    shard: usize,
    ping_interval_s: u64,
    who: WelcomeUser<'_>,
) {
    out.extend_from_slice(b"{\"op\":\"welcome\",\"conn\":");
    push_json_str(out, conn);
    out.extend_from_slice(b",\"user\":");
    match who.user {
        Some(u) => push_json_str(out, u),
        None => out.extend_from_slice(b"null"),
    }
    push_exp(out, who.exp);
    if who.auth_required {
        out.extend_from_slice(b",\"auth_required\":true");
    }
    out.extend_from_slice(b",\"shard\":");
    out.extend_from_slice(itoa::Buffer::new().format(shard).as_bytes());
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\",\"ping_interval_s\":");
    out.extend_from_slice(itoa::Buffer::new().format(ping_interval_s).as_bytes());
    out.push(b'}');
}

/// `{"op":"ack","id":..,"topics":[..]}`. Topics are valid, so they need no escaping, but are
/// escaped anyway: this is not a hot path and it keeps the function safe for any input.
pub fn ack_topics<S: AsRef<str>>(out: &mut Vec<u8>, id: Option<&[u8]>, topics: &[S]) {
    open(out, "ack", id);
    push_str_array(out, "topics", topics);
    out.push(b'}');
}

/// `,"<key>":["…",…]`, each string escaped.
fn push_str_array<S: AsRef<str>>(out: &mut Vec<u8>, key: &str, items: &[S]) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":[");
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, t.as_ref());
    }
    out.push(b']');
}

fn push_exp(out: &mut Vec<u8>, exp: Option<u64>) {
    if let Some(exp) = exp {
        out.extend_from_slice(b",\"exp\":");
        out.extend_from_slice(itoa::Buffer::new().format(exp).as_bytes());
    }
}

/// `{"op":"ack","id":..,"user":..,"exp":..,"dropped":[..]}`: the answer to `auth`.
pub fn ack_auth<S: AsRef<str>>(
    out: &mut Vec<u8>,
    id: Option<&[u8]>,
    user: &str,
    exp: Option<u64>,
    dropped: &[S],
) {
    open(out, "ack", id);
    out.extend_from_slice(b",\"user\":");
    push_json_str(out, user);
    push_exp(out, exp);
    if !dropped.is_empty() {
        push_str_array(out, "dropped", dropped);
    }
    out.push(b'}');
}

/// Topics named in one subscribe's `since` (wildcard subscriptions may name many topics).
pub const SINCE_PER_REQUEST_MAX: usize = 100;

/// Longest `id` (its JSON text, quotes included): replies echo it.
pub const ID_BYTES_MAX: usize = 256;

/// Longest `idem` key.
pub const IDEM_BYTES_MAX: usize = 128;

/// Why an `idem` key is refused, if it is.
pub fn check_idem(idem: Option<&str>) -> Result<(), &'static str> {
    match idem {
        Some("") => Err("\"idem\" must not be empty"),
        Some(k) if k.len() > IDEM_BYTES_MAX => Err("\"idem\" is longer than 128 bytes"),
        _ => Ok(()),
    }
}

/// The publish ack: `{"op":"ack","id":..,"seq":N,"epoch":"…"}` (+ `"duplicate":true`).
pub fn ack_seq(out: &mut Vec<u8>, id: Option<&[u8]>, done: Published) {
    open(out, "ack", id);
    out.push(b',');
    publish_fields(out, done);
    out.push(b'}');
}

/// The body of `POST /v1/publish`'s answer: `{"seq":N,"epoch":"…"}` (+ `"duplicate":true`).
pub fn publish_result(out: &mut Vec<u8>, done: Published) {
    out.push(b'{');
    publish_fields(out, done);
    out.push(b'}');
}

fn publish_fields(out: &mut Vec<u8>, done: Published) {
    out.extend_from_slice(b"\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(done.seq).as_bytes());
    push_epoch(out, done.epoch);
    if done.duplicate {
        out.extend_from_slice(b",\"duplicate\":true");
    }
}

fn push_epoch(out: &mut Vec<u8>, epoch: u64) {
    out.extend_from_slice(b",\"epoch\":\"");
    out.extend_from_slice(epoch_str(epoch).as_bytes());
    out.push(b'"');
}

/// The outcome of a publish at the topic's owner (or the broker), as its ack reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub epoch: u64,
    /// An earlier publish with the same `idem` key got `seq`; nothing was published now.
    pub duplicate: bool,
}

/// Where one topic stands, as a subscribe ack reports it.
#[derive(Debug, Clone, Copy)]
pub struct TopicPosition<'a> {
    pub topic: &'a str,
    pub seq: u64,
    pub epoch: u64,
}

/// The subscribe ack: accepted patterns, and the position of every exact topic and every
/// topic named in `since`: `"positions":[{"topic":..,"seq":N,"epoch":"…"}]`.
pub fn ack_subscribe<S: AsRef<str>>(
    out: &mut Vec<u8>,
    id: Option<&[u8]>,
    topics: &[S],
    positions: &[TopicPosition<'_>],
) {
    ack_topics(out, id, topics);
    if positions.is_empty() {
        return;
    }
    out.pop();
    out.extend_from_slice(b",\"positions\":[");
    for (i, p) in positions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"topic\":");
        push_json_str(out, p.topic);
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(p.seq).as_bytes());
        push_epoch(out, p.epoch);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// `{"op":"gap","topic":..,"epoch":"…","from":F,"to":T,"reason":"evicted"|"epoch"|"lost"}`.
pub fn gap(out: &mut Vec<u8>, topic: &str, epoch: u64, from: u64, to: u64, reason: GapReason) {
    open(out, "gap", None);
    out.extend_from_slice(b",\"topic\":");
    push_json_str(out, topic);
    push_epoch(out, epoch);
    out.extend_from_slice(b",\"from\":");
    out.extend_from_slice(itoa::Buffer::new().format(from).as_bytes());
    out.extend_from_slice(b",\"to\":");
    out.extend_from_slice(itoa::Buffer::new().format(to).as_bytes());
    out.extend_from_slice(b",\"reason\":\"");
    out.extend_from_slice(reason.as_str().as_bytes());
    out.extend_from_slice(b"\"}");
}

pub fn pong(out: &mut Vec<u8>, id: Option<&[u8]>, ts_us: u64) {
    open(out, "pong", id);
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(itoa::Buffer::new().format(ts_us).as_bytes());
    out.push(b'}');
}

pub fn error(
    out: &mut Vec<u8>,
    id: Option<&[u8]>,
    code: ErrorCode,
    message: &str,
    topic: Option<&str>,
) {
    open(out, "error", id);
    out.extend_from_slice(b",\"code\":\"");
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    push_json_str(out, message);
    if let Some(topic) = topic {
        out.extend_from_slice(b",\"topic\":");
        push_json_str(out, topic);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<(String, Option<String>, Option<String>), String> {
        let mut buf = s.as_bytes().to_vec();
        let mut buffers = simd_json::Buffers::default();
        match parse(&mut buf, &mut buffers) {
            Ok(r) => Ok((
                format!("{:?}", r.op),
                r.id.map(|i| String::from_utf8(i.into()).unwrap()),
                r.data.map(|d| String::from_utf8(d).unwrap()),
            )),
            Err(e) => Err(e.message),
        }
    }

    #[test]
    fn spans_find_id_and_data_verbatim() {
        let s = br#" { "op" : "publish", "id": "a\"b", "topic":"x", "data" : {"k":[1, 2.50e1, "}"]} } "#;
        let spans = scan_top_level(s);
        assert_eq!(&s[spans.id.unwrap()], br#""a\"b""#);
        assert_eq!(&s[spans.data.unwrap()], br#"{"k":[1, 2.50e1, "}"]}"#);
    }

    #[test]
    fn spans_ignore_nested_keys() {
        let s = br#"{"op":"publish","data":{"id":7,"data":1},"id":3}"#;
        let spans = scan_top_level(s);
        assert_eq!(&s[spans.id.unwrap()], b"3");
        assert_eq!(&s[spans.data.unwrap()], br#"{"id":7,"data":1}"#);
    }

    #[test]
    fn epochs_round_trip_as_hex() {
        assert_eq!(epoch_str(0xab), "00000000000000ab");
        assert_eq!(parse_epoch(&epoch_str(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_epoch("0"), Some(0));
        assert_eq!(parse_epoch("AB"), Some(0xab));
        for bad in ["zz", "", "+1", "-1", "0x1", "00000000000000000", " 1"] {
            assert_eq!(parse_epoch(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_are_bounded() {
        let ok = format!(r#"{{"op":"ping","id":"{}"}}"#, "x".repeat(ID_BYTES_MAX - 2));
        assert!(parse_str(&ok).is_ok());
        let long = format!(r#"{{"op":"ping","id":"{}"}}"#, "x".repeat(ID_BYTES_MAX - 1));
        let mut buf = long.into_bytes();
        let err = parse(&mut buf, &mut simd_json::Buffers::default()).unwrap_err();
        assert!(err.message.contains("longer than 256"), "{}", err.message);
        assert!(err.id.is_none(), "a refused id is not echoed");
    }

    #[test]
    fn escaped_keys_are_the_keys_they_spell() {
        let (op, id, data) =
            parse_str(r#"{"op":"publish","\u0069d":5,"topic":"a.b","d\u0061ta":{"x":1}}"#).unwrap();
        assert!(op.starts_with("Publish"));
        assert_eq!(id.as_deref(), Some("5"));
        assert_eq!(data.as_deref(), Some(r#"{"x":1}"#));
        // Written twice, once escaped: a duplicate, refused like any other.
        let err = parse_str(r#"{"op":"publish","topic":"a","data":1,"\u0064ata":2}"#);
        assert!(err.unwrap_err().contains("malformed"));
        // A broken escape in a key is not a key the scan knows.
        let s = br#"{"\u00zzata":1,"data":2}"#;
        assert_eq!(&s[scan_top_level(s).data.unwrap()], b"2");
    }

    #[test]
    fn scanner_survives_garbage() {
        for s in [
            &b""[..],
            b"{",
            b"{\"",
            b"{\"a\":",
            b"{\"a\":[",
            b"[1,2]",
            b"{\"data\":\"\\",
        ] {
            let _ = scan_top_level(s);
        }
    }

    #[test]
    fn publish_keeps_data_verbatim_and_id_raw() {
        let (op, id, data) = parse_str(
            r#"{"op":"publish","id":1.50,"topic":"a.b","data":{"p": 1.0e2 , "s":"\u00e9"}}"#,
        )
        .unwrap();
        assert!(op.starts_with("Publish"));
        assert_eq!(id.unwrap(), "1.50");
        assert_eq!(data.unwrap(), r#"{"p": 1.0e2 , "s":"\u00e9"}"#);
    }

    #[test]
    fn rejects_what_the_protocol_rejects() {
        let cases = [
            (r#"{"op":"nope"}"#, "unknown op"),
            (r#"{"op":"subscribe"}"#, "topics"),
            (r#"{"op":"subscribe","topics":[]}"#, "empty"),
            (r#"{"op":"publish","topic":"a"}"#, "data"),
            (r#"{"op":"publish","data":1}"#, "topic"),
            (r#"{"op":"ping","id":{"x":1}}"#, "malformed"),
            (r#"{"op":"ping","id":true}"#, "malformed"),
            (r#"{"op":"ping","bogus":1}"#, "malformed"),
            (r#"{"op":"ping""#, "malformed"),
            (r#"[1]"#, "malformed"),
            (r#"{"op":"ping","op":"ping"}"#, "malformed"),
        ];
        for (input, want) in cases {
            let err = parse_str(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn error_replies_for_broken_documents_stay_json() {
        for input in [
            r#"{"op":"nope","id":007,"#,
            r#"{"op":"x","id":1.2.3,"#,
            "{\"op\":\"x\",\"id\":\"a\nb\",",
            r#"{"op":"x","id":"\q","#,
            r#"{"op":"x","id":7,"#,
        ] {
            let mut buf = input.as_bytes().to_vec();
            let err = parse(&mut buf, &mut simd_json::Buffers::default()).unwrap_err();
            let mut out = Vec::new();
            error(
                &mut out,
                err.id.as_deref(),
                ErrorCode::BadRequest,
                &err.message,
                None,
            );
            let v: serde_json::Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{input}: reply is not JSON ({e})"));
            assert_eq!(v["code"], "bad_request");
        }
        let mut buf = br#"{"op":"x","id":7,"#.to_vec();
        let err = parse(&mut buf, &mut simd_json::Buffers::default()).unwrap_err();
        assert_eq!(
            err.id.as_deref(),
            Some(&b"7"[..]),
            "a valid id is still echoed"
        );
    }

    #[test]
    fn error_reply_escapes_message_and_topic() {
        let mut out = Vec::new();
        error(
            &mut out,
            Some(b"7"),
            ErrorCode::InvalidTopic,
            "bad \"x\"",
            Some("a\nb"),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["code"], "invalid_topic");
        assert_eq!(v["topic"], "a\nb");
    }
}
