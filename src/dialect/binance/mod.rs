//! Binance market streams (docs/DIALECTS.md): raw streams `<prefix>/ws/<stream>…` whose frames
//! are the published `data` verbatim, combined streams `<prefix>/stream?streams=<a>/<b>` whose
//! frames are `{"stream":<name>,"data":<data>}`, and the live control requests of both
//! (`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`), with
//! Binance's request, reply and error shapes. Stream names map to topics by templates
//! (`streams.rs`). This module is the wire format only; the shard runs it
//! (`src/shard/binance.rs`).

mod streams;

use serde::Deserialize;
use serde_json::value::RawValue;
pub use streams::{
    DEFAULT_STREAMS, FALLBACK_PREFIX, StreamMap, check_template, set_streams, with_streams,
};

use crate::protocol::push_json_str;

/// Longest string `id` (Binance's bound: UUIDs fit).
pub const ID_CHARS_MAX: usize = 36;

const BAD_ID: &str = "Invalid request: request ID must be a 64-bit integer, a string of at most 36 characters or null";

/// A control request, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    List,
    SetCombined(bool),
    GetCombined,
}

/// A request refused: Binance's error code and message.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub code: u16,
    pub msg: String,
}

fn refused(code: u16, msg: impl Into<String>) -> Refused {
    Refused {
        code,
        msg: msg.into(),
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    /// `null` kept as `Some` (echoed as `null`); `None` only when absent.
    #[serde(borrow, default, deserialize_with = "raw_some")]
    id: Option<&'a RawValue>,
}

fn raw_some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses one text message. The `id` (its JSON text, to echo byte for byte) comes back
/// whenever it could be read, with or without an error.
pub fn parse(text: &[u8], streams_max: usize) -> (Option<&[u8]>, Result<Request, Refused>) {
    let raw: Raw<'_> = match serde_json::from_slice(text) {
        Ok(raw) => raw,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return (None, Err(refused(3, format!("Invalid JSON: {e}"))));
        }
        Err(e) => return (None, Err(refused(2, format!("Invalid request: {e}")))),
    };
    let id = raw.id.map(|v| v.get().as_bytes());
    // Binance's rule: a 64-bit integer, a string of at most 36 characters (UUIDs), or null.
    let id_ok = match raw.id.map(RawValue::get) {
        None => false,
        Some("null") => true,
        Some(v) if v.starts_with('"') => {
            serde_json::from_str::<String>(v).is_ok_and(|s| s.chars().count() <= ID_CHARS_MAX)
        }
        Some(v) => v.bytes().all(|b| b.is_ascii_digit() || b == b'-') && v.parse::<i64>().is_ok(),
    };
    if !id_ok {
        return (None, Err(refused(2, BAD_ID)));
    }
    (id, request(&raw, streams_max))
}

fn request(raw: &Raw<'_>, streams_max: usize) -> Result<Request, Refused> {
    let method: String = match raw.method.map(|m| serde_json::from_str(m.get())) {
        Some(Ok(m)) => m,
        Some(Err(_)) => return Err(refused(2, "Invalid request: method must be a string")),
        None => return Err(refused(2, "Invalid request: missing field `method`")),
    };
    let params: Vec<serde_json::Value> = match raw.params.map(|p| serde_json::from_str(p.get())) {
        None => Vec::new(),
        Some(Ok(p)) => p,
        Some(Err(_)) => return Err(refused(2, "Invalid request: params must be an array")),
    };
    let names = |params: Vec<serde_json::Value>| -> Result<Vec<String>, Refused> {
        if params.len() > streams_max {
            return Err(refused(
                2,
                format!("Invalid request: at most {streams_max} streams per request"),
            ));
        }
        params
            .into_iter()
            .map(|p| match p {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(refused(2, "Invalid request: stream names must be strings")),
            })
            .collect()
    };
    let property = |params: &[serde_json::Value]| -> Result<(), Refused> {
        match params.first() {
            Some(serde_json::Value::String(p)) if p == "combined" => Ok(()),
            Some(serde_json::Value::String(_)) => Err(refused(0, "Unknown property")),
            _ => Err(refused(
                2,
                "Invalid request: property name must be a string",
            )),
        }
    };
    match method.as_str() {
        "SUBSCRIBE" => names(params).map(Request::Subscribe),
        "UNSUBSCRIBE" => names(params).map(Request::Unsubscribe),
        "LIST_SUBSCRIPTIONS" => Ok(Request::List),
        "SET_PROPERTY" => {
            property(&params)?;
            match params.as_slice() {
                [_, serde_json::Value::Bool(b)] => Ok(Request::SetCombined(*b)),
                [_, _] => Err(refused(1, "Invalid value type: expected Boolean")),
                [_] => Err(refused(2, "Invalid request: missing property value")),
                _ => Err(refused(2, "Invalid request: too many parameters")),
            }
        }
        "GET_PROPERTY" => {
            property(&params)?;
            if params.len() > 1 {
                return Err(refused(2, "Invalid request: too many parameters"));
            }
            Ok(Request::GetCombined)
        }
        other => {
            let mut shown: String = other.chars().take(64).collect();
            if shown.len() < other.len() {
                shown.push('…');
            }
            Err(refused(
                2,
                format!(
                    "Invalid request: unknown variant `{shown}`, expected one of `SUBSCRIBE`, \
                     `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
                ),
            ))
        }
    }
}

fn push_id(out: &mut Vec<u8>, id: Option<&[u8]>) {
    out.extend_from_slice(b",\"id\":");
    out.extend_from_slice(id.unwrap_or(b"null"));
    out.push(b'}');
}

/// `{"result":null,"id":<id>}`
pub fn result_null(out: &mut Vec<u8>, id: Option<&[u8]>) {
    out.extend_from_slice(b"{\"result\":null");
    push_id(out, id);
}

/// `{"result":true|false,"id":<id>}`
pub fn result_bool(out: &mut Vec<u8>, id: Option<&[u8]>, value: bool) {
    out.extend_from_slice(if value {
        b"{\"result\":true"
    } else {
        b"{\"result\":false"
    });
    push_id(out, id);
}

/// `{"result":["<name>",…],"id":<id>}`
pub fn result_list<'a>(out: &mut Vec<u8>, id: Option<&[u8]>, names: impl Iterator<Item = &'a str>) {
    out.extend_from_slice(b"{\"result\":[");
    for (i, name) in names.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, name);
    }
    out.push(b']');
    push_id(out, id);
}

/// `{"error":{"code":<code>,"msg":"<msg>"},"id":<id>}`
pub fn error(out: &mut Vec<u8>, id: Option<&[u8]>, code: u16, msg: &str) {
    out.extend_from_slice(b"{\"error\":{\"code\":");
    out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    out.extend_from_slice(b",\"msg\":");
    push_json_str(out, msg);
    out.push(b'}');
    push_id(out, id);
}

/// Where an upgrade under the prefix asks to go: its format and the streams it names.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub combined: bool,
    /// Percent-decoded (`%40` is `@`, `%2F` separates names).
    pub streams: Vec<String>,
}

/// Reads `path` (after the prefix) and `query`: `/ws`, `/ws/<s1>/<s2>…` (raw), `/stream`,
/// `/stream?streams=<s1>/<s2>…` (combined). `None`: not a stream path.
/// Repeated slashes after the prefix are one (`<prefix>//stream`: a connector's base URL given
/// with a trailing slash).
pub fn target(rest: &str, query: Option<&str>) -> Option<Target> {
    let rest = match rest.find(|c| c != '/') {
        Some(i) if i > 1 => &rest[i - 1..],
        _ => rest,
    };
    // Decoded first, then split: `%2F` separates names too (`streams=a%40trade%2Fb%40trade`,
    // what URL encoders produce). A value that does not decode to UTF-8 is kept as sent and
    // its names are refused as invalid streams.
    let split = |s: &str| -> Vec<String> {
        let decoded = percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .unwrap_or(std::borrow::Cow::Borrowed(s));
        decoded
            .split('/')
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    };
    if rest == "/ws" || rest == "/ws/" {
        return Some(Target {
            combined: false,
            streams: Vec::new(),
        });
    }
    if let Some(names) = rest.strip_prefix("/ws/") {
        return Some(Target {
            combined: false,
            streams: split(names),
        });
    }
    if rest == "/stream" || rest == "/stream/" {
        let streams = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|kv| kv.strip_prefix("streams="))
            .flat_map(split)
            .collect();
        return Some(Target {
            combined: true,
            streams,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn requests_parse_and_ids_are_echoed_as_sent() {
        for (text, id, req) in [
            (
                r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}"#,
                "1",
                Request::Subscribe(vec!["btcusdt@trade".into()]),
            ),
            (
                r#"{"method":"UNSUBSCRIBE","params":["a@trade"],"id":1712345678901}"#,
                "1712345678901",
                Request::Unsubscribe(vec!["a@trade".into()]),
            ),
            (
                r#"{"method":"LIST_SUBSCRIPTIONS","id":"0b5c2f3e-8a1d-4c6b-9e7f-2d3c4b5a6e7f"}"#,
                r#""0b5c2f3e-8a1d-4c6b-9e7f-2d3c4b5a6e7f""#,
                Request::List,
            ),
            (
                r#"{"method":"SET_PROPERTY","params":["combined",true],"id":"a1b2c3d4e5f60718293a4b5c6d7e8f90"}"#,
                r#""a1b2c3d4e5f60718293a4b5c6d7e8f90""#,
                Request::SetCombined(true),
            ),
            (
                r#"{"method":"GET_PROPERTY","params":["combined"],"id":null}"#,
                "null",
                Request::GetCombined,
            ),
        ] {
            let (got_id, got) = parse(text.as_bytes(), 1024);
            assert_eq!(got_id, Some(id.as_bytes()), "{text}");
            assert_eq!(got, Ok(req), "{text}");
        }
    }

    #[test]
    fn bad_requests_get_binance_codes() {
        for (text, code) in [
            ("{", 3),
            ("not json", 3),
            (r#"{"method":"SUBSCRIBE","params":["a"]}"#, 2),
            (r#"{"method":"SUBSCRIBE","params":["a"],"id":true}"#, 2),
            (r#"{"method":"FOO","id":1}"#, 2),
            (r#"{"method":"SUBSCRIBE","params":[1],"id":1}"#, 2),
            (r#"{"method":"SUBSCRIBE","params":"a","id":1}"#, 2),
            (
                r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":1}"#,
                1,
            ),
            (
                r#"{"method":"SET_PROPERTY","params":["other",true],"id":1}"#,
                0,
            ),
            (r#"{"method":"GET_PROPERTY","params":[7],"id":1}"#, 2),
            (r#"{"params":[],"id":1}"#, 2),
            (r#"[1,2]"#, 2),
        ] {
            let (_, got) = parse(text.as_bytes(), 1024);
            assert_eq!(got.map_err(|r| r.code), Err(code), "{text}");
        }
        let many = format!(
            r#"{{"method":"SUBSCRIBE","params":[{}],"id":1}}"#,
            ["\"a@trade\""; 3].join(",")
        );
        assert_eq!(parse(many.as_bytes(), 2).1.map_err(|r| r.code), Err(2));
        for id in [
            "9".repeat(20),
            "1.5".into(),
            "1e3".into(),
            format!("\"{}\"", "x".repeat(37)),
            "[1]".into(),
        ] {
            let text = format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#);
            assert_eq!(
                parse(text.as_bytes(), 2),
                (None, Err(refused(2, BAD_ID))),
                "{id}"
            );
        }
        for id in [
            "-1",
            "9223372036854775807",
            "\"é\"",
            "\"0b5c2f3e-8a1d-4c6b-9e7f-2d3c4b5a6e7f\"",
        ] {
            let text = format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#);
            assert_eq!(parse(text.as_bytes(), 2).0, Some(id.as_bytes()), "{id}");
        }
    }

    #[test]
    fn replies_have_binance_shapes() {
        assert_eq!(
            reply(|o| result_null(o, Some(b"7"))),
            r#"{"result":null,"id":7}"#
        );
        assert_eq!(
            reply(|o| result_list(o, Some(b"\"x\""), ["a@trade", "b@depth"].into_iter())),
            r#"{"result":["a@trade","b@depth"],"id":"x"}"#
        );
        assert_eq!(
            reply(|o| result_bool(o, None, true)),
            r#"{"result":true,"id":null}"#
        );
        assert_eq!(
            reply(|o| error(o, Some(b"1"), 2, "Invalid request: \"x\"")),
            r#"{"error":{"code":2,"msg":"Invalid request: \"x\""},"id":1}"#
        );
    }

    #[test]
    fn stream_paths() {
        let t = |p, q| target(p, q);
        assert_eq!(
            t("/ws/btcusdt@trade/ethusdt@bookTicker", None),
            Some(Target {
                combined: false,
                streams: vec!["btcusdt@trade".into(), "ethusdt@bookTicker".into()]
            })
        );
        assert_eq!(t("/ws", None).unwrap().streams.len(), 0);
        assert_eq!(
            t("/stream", Some("streams=a@trade%2Fb%40trade")).unwrap(),
            Target {
                combined: true,
                streams: vec!["a@trade".into(), "b@trade".into()]
            }
        );
        assert_eq!(t("/stream", Some("streams=")).unwrap().streams.len(), 0);
        assert_eq!(t("/stream", None).unwrap().streams.len(), 0);
        assert_eq!(t("//stream", None).unwrap().streams.len(), 0);
        assert_eq!(t("/other", None), None);
        assert_eq!(t("/wsx", None), None);
    }
}
