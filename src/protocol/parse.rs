//! Parsing a client op: the raw spans of `id` and `data` found first (they are forwarded
//! verbatim), then simd-json over the whole message in place, which decides validity.

use std::borrow::Cow;

use serde::Deserialize;

use super::{ID_BYTES_MAX, SINCE_PER_REQUEST_MAX, check_idem};

/// Byte ranges of the top-level `id`, `data` and `filter` values of a JSON object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Spans {
    pub id: Option<std::ops::Range<usize>>,
    pub data: Option<std::ops::Range<usize>>,
    pub filter: Option<std::ops::Range<usize>>,
}

/// Finds the raw spans of the top-level `"id"`, `"data"` and `"filter"` values. Tolerant and
/// bounded: on anything that is not a JSON object it returns what it found so far; the
/// simd-json pass that follows is what decides validity (duplicate keys included, escaped or
/// not). Linear time, no recursion, no allocation unless a key is written with escapes.
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
            b"filter" if spans.filter.is_none() => spans.filter = Some(value_start..value_end),
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
/// `id`, `data` and `filter` are validated here but read from [`Spans`].
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
    /// `subscribe` op: whether a `filter` is present (its grammar is checked by the shard,
    /// within the configured bounds: `crate::pubsub::filter`).
    #[serde(default, deserialize_with = "present")]
    pub filter: bool,
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
        /// Raw JSON of the `filter` value, as sent (`null` included).
        filter: Option<Box<[u8]>>,
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
    let filter = spans.filter.clone().map(|r| Box::<[u8]>::from(&msg[r]));
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
                if filter.is_some() != fields.filter {
                    // The scan and simd-json disagree on what the message holds: never
                    // guess what a filter was.
                    return Err(bad("\"filter\" could not be read"));
                }
                Op::Subscribe {
                    topics,
                    since,
                    filter,
                }
            } else {
                if fields.since.is_some() {
                    return Err(bad("\"since\" belongs to subscribe"));
                }
                if fields.filter {
                    return Err(bad(
                        "\"filter\" belongs to subscribe (unsubscribe removes a pattern and its filter)",
                    ));
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
