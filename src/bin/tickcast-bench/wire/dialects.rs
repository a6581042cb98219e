//! The two dialects a fan-out subscriber may speak besides protocol v1 (`--dialect`,
//! docs/DIALECTS.md): Centrifugo's client protocol (JSON) and Binance combined market streams.
//! Requests are built here; server messages are classified by byte search like protocol v1's
//! (`fields.rs`): no JSON parser on the receive path.
//!
//! Centrifugo: `{"id":1,"connect":{}}` then one `{"id":N,"subscribe":{"channel":…}}` per topic
//! (ids 2.., one per line of the same text message); replies `{"id":N,"<method>":{…}}` or
//! `{"id":N,"error":{"code":C,…}}`; data `{"push":{"channel":"bench.t17","pub":{"data":{…},
//! "offset":N}}}` (offset = the topic's seq); `{}` is the server's ping, answered with `{}`.
//!
//! Binance combined streams (`/binance/stream`): `{"method":"SUBSCRIBE","params":["bench17@t",…],
//! "id":1}`, answered `{"result":null,"id":1}` or `{"error":{"code":C,"msg":…},"id":1}`; data
//! `{"stream":"bench17@t","data":{…}}`, which carries no sequence number (counted, not checked
//! for gaps). The stream `bench<N>@t` maps to topic `bench.t<N>` through the server's
//! `binance.streams` template `{stream="bench{n}@t",topic="bench.t{n}"}`.

use super::fields::{find, number_after, parse_u64};

/// The URL path of a Centrifugo subscriber.
pub const CENTRIFUGO_PATH: &str = "/connection/websocket";
/// The URL path of a Binance combined-streams subscriber (no stream in the URL: `SUBSCRIBE`).
pub const BINANCE_PATH: &str = "/binance/stream";

/// Centrifugo's connect and subscribe commands for `topics`, one per line; the connect has id 1,
/// the subscribe of `topics[i]` id `i + 2`.
pub fn centrifugo_subscribe(topics: &[String]) -> Vec<u8> {
    let mut out = b"{\"id\":1,\"connect\":{}}".to_vec();
    for (i, t) in topics.iter().enumerate() {
        out.extend_from_slice(b"\n{\"id\":");
        out.extend_from_slice(itoa::Buffer::new().format(i + 2).as_bytes());
        out.extend_from_slice(b",\"subscribe\":{\"channel\":");
        out.extend_from_slice(serde_json::to_string(t).expect("a string").as_bytes());
        out.extend_from_slice(b"}}");
    }
    out
}

/// The Binance stream of bench topic `bench.t<i>` (see the module doc), or `None` for a topic
/// not of that form.
pub fn binance_stream(topic: &str) -> Option<String> {
    let n: u32 = topic.strip_prefix("bench.t")?.parse().ok()?;
    Some(format!("bench{n}@t"))
}

/// Binance's `SUBSCRIBE` (id 1) of `streams`.
pub fn binance_subscribe(streams: &[String]) -> Vec<u8> {
    let params = serde_json::to_string(streams).expect("strings");
    format!("{{\"method\":\"SUBSCRIBE\",\"params\":{params},\"id\":1}}").into_bytes()
}

/// One Centrifugo message (a line of a text frame), as the bench reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Centrifugo<'a> {
    /// `{}`: the server's ping.
    Ping,
    /// A publication push.
    Pub {
        /// The `offset`, i.e. the topic's seq.
        offset: u64,
        /// Index N of a `bench.t<N>` channel.
        topic_idx: Option<u32>,
        /// `"t":` inside `data`.
        sent_ns: Option<u64>,
    },
    /// Any other push (`unsubscribe`, `disconnect`, `message`): its name and `code`, if any.
    OtherPush { kind: &'a [u8], code: Option<u64> },
    /// A reply to command `id`; `error` is its error code, if it is an error.
    Reply { id: u64, error: Option<u64> },
    /// Anything else.
    Unknown,
}

/// Classifies one Centrifugo message (one line: the server may put several in a text frame,
/// `\n`-separated).
pub fn parse_centrifugo(msg: &[u8]) -> Centrifugo<'_> {
    let msg = msg.trim_ascii();
    if msg == b"{}" {
        return Centrifugo::Ping;
    }
    if let Some(rest) = msg.strip_prefix(b"{\"push\":{") {
        // The channel comes first; `"pub":` then holds data before offset (the server's order).
        let topic_idx = find(rest, b"\"channel\":\"bench.t").and_then(|i| {
            let n = parse_u64(&rest[i + b"\"channel\":\"bench.t".len()..])?;
            u32::try_from(n).ok()
        });
        let Some(p) = find(rest, b"\"pub\":{") else {
            let kind = ["unsubscribe", "disconnect", "message", "join", "leave"]
                .into_iter()
                .find(|k| find(rest, format!("\"{k}\":").as_bytes()).is_some())
                .map_or(&b"?"[..], str::as_bytes);
            return Centrifugo::OtherPush {
                kind,
                code: number_after(rest, b"\"code\":"),
            };
        };
        let body = &rest[p..];
        // The last `"offset":` is the publication's (data comes first and could hold one).
        let Some(offset) = rfind(body, b"\"offset\":").and_then(|i| parse_u64(&body[i + 9..]))
        else {
            return Centrifugo::Unknown;
        };
        let sent_ns = find(body, b"\"data\":").and_then(|d| number_after(&body[d..], b"\"t\":"));
        return Centrifugo::Pub {
            offset,
            topic_idx,
            sent_ns,
        };
    }
    if msg.starts_with(b"{\"id\":") {
        let Some(id) = number_after(msg, b"\"id\":") else {
            return Centrifugo::Unknown;
        };
        let error =
            find(msg, b"\"error\":{").map(|i| number_after(&msg[i..], b"\"code\":").unwrap_or(0));
        return Centrifugo::Reply { id, error };
    }
    Centrifugo::Unknown
}

/// The shard of a Centrifugo connect reply (`"client":"<shard>-<n>"`), if it has that form.
pub fn centrifugo_shard(reply: &[u8]) -> Option<u64> {
    let i = find(reply, b"\"client\":\"")? + b"\"client\":\"".len();
    let rest = &reply[i..];
    let dash = rest.iter().position(|&b| b == b'-')?;
    let shard = &rest[..dash];
    (!shard.is_empty() && shard.iter().all(u8::is_ascii_digit))
        .then(|| parse_u64(shard))
        .flatten()
}

/// One Binance combined-stream message, as the bench reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binance {
    /// `{"stream":…,"data":…}`.
    Data {
        /// N of a `bench<N>@t` stream.
        topic_idx: Option<u32>,
        /// `"t":` inside `data`.
        sent_ns: Option<u64>,
    },
    /// `{"result":…,"id":N}`.
    Result {
        id: Option<u64>,
    },
    /// `{"error":{"code":C,…},"id":N}`.
    Error {
        code: Option<u64>,
    },
    Unknown,
}

pub fn parse_binance(msg: &[u8]) -> Binance {
    if let Some(rest) = msg.strip_prefix(b"{\"stream\":\"") {
        let topic_idx = rest
            .strip_prefix(b"bench")
            .and_then(parse_u64)
            .and_then(|n| u32::try_from(n).ok());
        let sent_ns = find(rest, b"\"data\":").and_then(|d| number_after(&rest[d..], b"\"t\":"));
        return Binance::Data { topic_idx, sent_ns };
    }
    if msg.starts_with(b"{\"result\":") {
        // The id follows the result; the result (null for SUBSCRIBE) holds no `"id":`.
        return Binance::Result {
            id: rfind(msg, b"\"id\":").and_then(|i| parse_u64(&msg[i + 5..])),
        };
    }
    if msg.starts_with(b"{\"error\":") {
        return Binance::Error {
            code: number_after(msg, b"\"code\":"),
        };
    }
    Binance::Unknown
}

/// Position of the last `needle` in `hay`.
fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centrifugo_requests() {
        let r = centrifugo_subscribe(&["bench.t0".into(), "bench.t7".into()]);
        assert_eq!(
            std::str::from_utf8(&r).unwrap(),
            "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"bench.t0\"}}\n\
             {\"id\":3,\"subscribe\":{\"channel\":\"bench.t7\"}}"
        );
        for line in r.split(|b| *b == b'\n') {
            serde_json::from_slice::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn centrifugo_messages_by_byte_search() {
        assert_eq!(parse_centrifugo(b"{}"), Centrifugo::Ping);
        assert_eq!(parse_centrifugo(b" {}\n"), Centrifugo::Ping);
        let p = br#"{"push":{"channel":"bench.t17","pub":{"data":{"t":98765,"pad":"xx"},"offset":1051}}}"#;
        assert_eq!(
            parse_centrifugo(p),
            Centrifugo::Pub {
                offset: 1051,
                topic_idx: Some(17),
                sent_ns: Some(98765)
            }
        );
        // An "offset" or "t" elsewhere is not taken for the publication's.
        let p = br#"{"push":{"channel":"md.x","pub":{"data":{"offset":3,"q":"1","t": 42},"offset":9}}}"#;
        assert_eq!(
            parse_centrifugo(p),
            Centrifugo::Pub {
                offset: 9,
                topic_idx: None,
                sent_ns: Some(42)
            }
        );
        let u = br#"{"push":{"channel":"bench.t1","unsubscribe":{"code":2500,"reason":"insufficient state"}}}"#;
        assert_eq!(
            parse_centrifugo(u),
            Centrifugo::OtherPush {
                kind: b"unsubscribe",
                code: Some(2500)
            }
        );
        let c = br#"{"id":1,"connect":{"client":"0-42","version":"0.1.0","ping":25,"pong":true}}"#;
        assert_eq!(
            parse_centrifugo(c),
            Centrifugo::Reply { id: 1, error: None }
        );
        assert_eq!(centrifugo_shard(c), Some(0));
        assert_eq!(centrifugo_shard(br#"{"client":"abc"}"#), None);
        let s = br#"{"id":3,"subscribe":{"positioned":true,"epoch":"ab","offset":0}}"#;
        assert_eq!(
            parse_centrifugo(s),
            Centrifugo::Reply { id: 3, error: None }
        );
        let e = br#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#;
        assert_eq!(
            parse_centrifugo(e),
            Centrifugo::Reply {
                id: 2,
                error: Some(103)
            }
        );
        assert_eq!(parse_centrifugo(b"[1]"), Centrifugo::Unknown);
    }

    #[test]
    fn binance_requests_and_messages() {
        assert_eq!(binance_stream("bench.t17").as_deref(), Some("bench17@t"));
        assert_eq!(binance_stream("trades.X"), None);
        let r = binance_subscribe(&["bench0@t".into(), "bench17@t".into()]);
        assert_eq!(
            r,
            br#"{"method":"SUBSCRIBE","params":["bench0@t","bench17@t"],"id":1}"#
        );
        let d = br#"{"stream":"bench17@t","data":{"t":98765,"pad":"xx"}}"#;
        assert_eq!(
            parse_binance(d),
            Binance::Data {
                topic_idx: Some(17),
                sent_ns: Some(98765)
            }
        );
        let d = br#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","t": 5}}"#;
        assert_eq!(
            parse_binance(d),
            Binance::Data {
                topic_idx: None,
                sent_ns: Some(5)
            }
        );
        assert_eq!(
            parse_binance(br#"{"result":null,"id":1}"#),
            Binance::Result { id: Some(1) }
        );
        assert_eq!(
            parse_binance(br#"{"error":{"code":2,"msg":"Invalid request"},"id":1}"#),
            Binance::Error { code: Some(2) }
        );
        assert_eq!(parse_binance(b"{}"), Binance::Unknown);
        assert_eq!(rfind(b"abcabc", b"bc"), Some(4));
        assert_eq!(rfind(b"ab", b"abc"), None);
    }
}
