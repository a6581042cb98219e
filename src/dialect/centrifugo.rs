//! Centrifugo's client protocol, JSON (docs/DIALECTS.md): commands `{"id":N,"<method>":{…}}`
//! (several per text message, one per line), replies `{"id":N,"<method>":{…}}` or
//! `{"id":N,"error":{…}}`, pushes `{"push":{"channel":…,"pub":{…}}}`, and `{}` as ping and
//! pong. Codes are Centrifugo's, so the SDKs decide to retry, refresh or stop as they do
//! against Centrifugo. This module is the wire format only; the shard runs it
//! (`src/shard/centrifugo.rs`).
//!
//! What the SDKs rely on (centrifuge-js 5.x, centrifuge-python 0.7; read in their sources): one
//! `\n` between messages of a frame and no blank line (centrifuge-python fails for good on
//! one); `client` in the connect result and `ttl` whenever `expires` is set; `message` in every
//! error; `temporary: true` on the errors worth retrying; a plain-text reason on every close.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::push_json_str;

/// Error codes of replies (Centrifugo's numbers).
pub mod error {
    /// Temporary.
    pub const INTERNAL: u16 = 100;
    pub const UNAUTHORIZED: u16 = 101;
    pub const UNKNOWN_CHANNEL: u16 = 102;
    pub const PERMISSION_DENIED: u16 = 103;
    pub const METHOD_NOT_FOUND: u16 = 104;
    pub const ALREADY_SUBSCRIBED: u16 = 105;
    pub const LIMIT_EXCEEDED: u16 = 106;
    pub const BAD_REQUEST: u16 = 107;
    pub const NOT_AVAILABLE: u16 = 108;
    pub const TOKEN_EXPIRED: u16 = 109;
    /// Temporary.
    pub const TOO_MANY_REQUESTS: u16 = 111;
    /// The `since` of a `history` request is of another epoch.
    pub const UNRECOVERABLE_POSITION: u16 = 112;
}

/// Close codes (Centrifugo's disconnect codes). 3000–3499 and 4000–4499: the SDKs reconnect;
/// 3500–3999 and 4500–4999: they stop.
pub const DISCONNECT_SHUTDOWN: u16 = 3001;
pub const DISCONNECT_INTERNAL: u16 = 3004;
pub const DISCONNECT_EXPIRED: u16 = 3005;
pub const DISCONNECT_SLOW: u16 = 3008;
pub const DISCONNECT_NO_PONG: u16 = 3012;
pub const DISCONNECT_TOO_MANY_REQUESTS: u16 = 3013;
pub const DISCONNECT_INVALID_TOKEN: u16 = 3500;
pub const DISCONNECT_BAD_REQUEST: u16 = 3501;
pub const DISCONNECT_PERMISSION_DENIED: u16 = 3507;

/// Unsubscribe push code: the server ended the subscription for good (the SDK does not
/// subscribe again).
pub const UNSUBSCRIBE_SERVER: u16 = 2000;

/// Unsubscribe push code: the subscription lost messages; the SDK subscribes again, asking to
/// recover.
pub const UNSUBSCRIBE_INSUFFICIENT_STATE: u16 = 2500;

/// The Centrifugo close code and reason for a close tickcast decided with WebSocket or
/// tickcast code `code` (docs/DIALECTS.md, the mapping table). An operator's
/// `POST /v1/disconnect` does not come here: its code reaches the client unchanged.
pub fn close_for(code: u16, reason: &str) -> (u16, &str) {
    use crate::ws::close as cc;
    match code {
        cc::GOING_AWAY | cc::SERVICE_RESTART => (DISCONNECT_SHUTDOWN, "shutdown"),
        cc::OVERLOADED | cc::INTERNAL => (DISCONNECT_INTERNAL, "internal server error"),
        cc::UNAUTHORIZED => (DISCONNECT_EXPIRED, "connection expired"),
        cc::SLOW_CONSUMER => (DISCONNECT_SLOW, "slow"),
        cc::RATE_LIMITED => (DISCONNECT_TOO_MANY_REQUESTS, "too many requests"),
        cc::FORBIDDEN => (DISCONNECT_PERMISSION_DENIED, "permission denied"),
        cc::PROTOCOL_ERROR | cc::INVALID_PAYLOAD | cc::POLICY | cc::TOO_LARGE => {
            (DISCONNECT_BAD_REQUEST, "bad request")
        }
        _ => (code, reason),
    }
}

/// One command, as sent. Unknown fields (`flag`, `delta`, `tf`, …) are ignored, as the SDKs
/// send some that only Centrifugo PRO understands.
#[derive(Debug, Default, Deserialize)]
pub struct Command<'a> {
    #[serde(default)]
    pub id: u32,
    #[serde(borrow)]
    pub connect: Option<Connect<'a>>,
    #[serde(borrow)]
    pub subscribe: Option<Subscribe<'a>>,
    #[serde(borrow)]
    pub unsubscribe: Option<Channel<'a>>,
    #[serde(borrow)]
    pub publish: Option<Publish<'a>>,
    #[serde(borrow)]
    pub presence: Option<Channel<'a>>,
    #[serde(borrow)]
    pub presence_stats: Option<Channel<'a>>,
    #[serde(borrow)]
    pub history: Option<History<'a>>,
    #[serde(borrow)]
    pub refresh: Option<Refresh<'a>>,
    #[serde(borrow)]
    pub sub_refresh: Option<&'a RawValue>,
    #[serde(borrow)]
    pub rpc: Option<&'a RawValue>,
    #[serde(borrow)]
    pub send: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Connect<'a> {
    #[serde(default, borrow)]
    pub token: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Subscribe<'a> {
    #[serde(borrow)]
    pub channel: std::borrow::Cow<'a, str>,
    #[serde(default)]
    pub recover: bool,
    #[serde(default)]
    pub offset: u64,
    #[serde(default, borrow)]
    pub epoch: Option<std::borrow::Cow<'a, str>>,
    /// Join and leave pushes asked for (the SDKs' `joinLeave` / `join_leave` option).
    #[serde(default)]
    pub join_leave: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct Channel<'a> {
    #[serde(borrow)]
    pub channel: std::borrow::Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct Publish<'a> {
    #[serde(borrow)]
    pub channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

#[derive(Debug, Default, Deserialize)]
pub struct History<'a> {
    #[serde(borrow)]
    pub channel: std::borrow::Cow<'a, str>,
    #[serde(default)]
    pub limit: i64,
    #[serde(default)]
    pub since: Option<Since>,
    #[serde(default)]
    pub reverse: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct Since {
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub epoch: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Refresh<'a> {
    #[serde(borrow)]
    pub token: std::borrow::Cow<'a, str>,
}

impl Command<'_> {
    /// `{}`: the client's pong (no id, no method).
    pub fn is_pong(&self) -> bool {
        self.id == 0
            && self.connect.is_none()
            && self.subscribe.is_none()
            && self.unsubscribe.is_none()
            && self.publish.is_none()
            && self.presence.is_none()
            && self.presence_stats.is_none()
            && self.history.is_none()
            && self.refresh.is_none()
            && self.sub_refresh.is_none()
            && self.rpc.is_none()
            && self.send.is_none()
    }
}

/// The commands of one text message: one JSON object per line; blank lines are skipped.
pub fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| *b == b'\n')
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
}

fn open(out: &mut Vec<u8>, id: u32, method: &str) {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.extend_from_slice(b",\"");
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(b"\":{");
}

fn expiry(out: &mut Vec<u8>, ttl_s: Option<u64>) {
    if let Some(ttl) = ttl_s {
        // centrifuge-python reads `ttl` whenever `expires` is set: never 0.
        out.extend_from_slice(b",\"expires\":true,\"ttl\":");
        out.extend_from_slice(itoa::Buffer::new().format(ttl.max(1)).as_bytes());
    }
}

/// `{"id":N,"connect":{"client":…,"version":…,["expires":true,"ttl":T,]"ping":P,"pong":true}}`
pub fn connect_result(out: &mut Vec<u8>, id: u32, client: &str, ttl_s: Option<u64>, ping_s: u64) {
    open(out, id, "connect");
    out.extend_from_slice(b"\"client\":");
    push_json_str(out, client);
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.push(b'"');
    expiry(out, ttl_s);
    out.extend_from_slice(b",\"ping\":");
    out.extend_from_slice(itoa::Buffer::new().format(ping_s).as_bytes());
    out.extend_from_slice(b",\"pong\":true}}");
}

/// `{"id":N,"refresh":{"client":…,"version":…,["expires":true,"ttl":T]}}`
pub fn refresh_result(out: &mut Vec<u8>, id: u32, client: &str, ttl_s: Option<u64>) {
    open(out, id, "refresh");
    out.extend_from_slice(b"\"client\":");
    push_json_str(out, client);
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.push(b'"');
    expiry(out, ttl_s);
    out.extend_from_slice(b"}}");
}

/// The subscribe result.
pub struct Subscribed<'a> {
    /// Every offset reaches the subscriber (its class never skips frames).
    pub positioned: bool,
    pub recoverable: bool,
    pub epoch: &'a str,
    pub offset: u64,
    /// `Some(recovered)` when the client asked to recover.
    pub recovering: Option<bool>,
    /// (offset, data) of the publications the client gets with the result.
    pub publications: &'a [(u64, &'a [u8])],
}

pub fn subscribe_result(out: &mut Vec<u8>, id: u32, s: &Subscribed<'_>) {
    open(out, id, "subscribe");
    // Every tickcast topic has a position (`seq`, `epoch`); positioned when no frame is ever
    // skipped, recoverable when its class keeps history.
    if s.positioned {
        out.extend_from_slice(b"\"positioned\":true,");
    }
    if s.recoverable {
        out.extend_from_slice(b"\"recoverable\":true,");
    }
    out.extend_from_slice(b"\"epoch\":");
    push_json_str(out, s.epoch);
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(s.offset).as_bytes());
    if let Some(recovered) = s.recovering {
        out.extend_from_slice(b",\"was_recovering\":true,\"recovered\":");
        out.extend_from_slice(if recovered { b"true" } else { b"false" });
    }
    publications(out, s.publications);
    out.extend_from_slice(b"}}");
}

fn publications(out: &mut Vec<u8>, pubs: &[(u64, &[u8])]) {
    if pubs.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"publications\":[");
    for (i, (offset, data)) in pubs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"data\":");
        out.extend_from_slice(data);
        out.extend_from_slice(b",\"offset\":");
        out.extend_from_slice(itoa::Buffer::new().format(*offset).as_bytes());
        out.push(b'}');
    }
    out.push(b']');
}

/// `{"id":N,"history":{"publications":[…],"epoch":…,"offset":…}}`
pub fn history_result(out: &mut Vec<u8>, id: u32, pubs: &[(u64, &[u8])], epoch: &str, offset: u64) {
    open(out, id, "history");
    out.extend_from_slice(b"\"epoch\":");
    push_json_str(out, epoch);
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    publications(out, pubs);
    out.extend_from_slice(b"}}");
}

/// `{"id":N,"presence":{"presence":{"<client>":{"client":…,"user":…},…}}}`
pub fn presence_result<'a>(
    out: &mut Vec<u8>,
    id: u32,
    clients: impl Iterator<Item = (&'a str, &'a str)>,
) {
    open(out, id, "presence");
    out.extend_from_slice(b"\"presence\":{");
    for (i, (client, user)) in clients.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, client);
        out.extend_from_slice(b":{\"client\":");
        push_json_str(out, client);
        out.extend_from_slice(b",\"user\":");
        push_json_str(out, user);
        out.push(b'}');
    }
    out.extend_from_slice(b"}}}");
}

/// `{"id":N,"presence_stats":{"num_clients":C,"num_users":U}}` (zeros written: the JS SDK
/// shows a missing count as `undefined`).
pub fn presence_stats_result(out: &mut Vec<u8>, id: u32, clients: u64, users: u64) {
    open(out, id, "presence_stats");
    out.extend_from_slice(b"\"num_clients\":");
    out.extend_from_slice(itoa::Buffer::new().format(clients).as_bytes());
    out.extend_from_slice(b",\"num_users\":");
    out.extend_from_slice(itoa::Buffer::new().format(users).as_bytes());
    out.extend_from_slice(b"}}");
}

/// `{"id":N,"<method>":{}}` (unsubscribe, publish).
pub fn empty_result(out: &mut Vec<u8>, id: u32, method: &str) {
    open(out, id, method);
    out.extend_from_slice(b"}}");
}

/// `{"id":N,"error":{"code":C,"message":…[,"temporary":true]}}`
pub fn error(out: &mut Vec<u8>, id: u32, code: u16, message: &str) {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.extend_from_slice(b",\"error\":{\"code\":");
    out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    out.extend_from_slice(b",\"message\":");
    push_json_str(out, message);
    // The SDKs retry only errors marked temporary.
    if matches!(code, error::INTERNAL | error::TOO_MANY_REQUESTS) {
        out.extend_from_slice(b",\"temporary\":true");
    }
    out.extend_from_slice(b"}}");
}

/// `{"push":{"channel":…,"unsubscribe":{"code":C,"reason":…}}}`
pub fn unsubscribe_push(out: &mut Vec<u8>, channel: &str, code: u16, reason: &str) {
    out.extend_from_slice(b"{\"push\":{\"channel\":");
    push_json_str(out, channel);
    out.extend_from_slice(b",\"unsubscribe\":{\"code\":");
    out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    out.extend_from_slice(b",\"reason\":");
    push_json_str(out, reason);
    out.extend_from_slice(b"}}}");
}

/// A presence event's frame (topic `presence.<channel>`, data
/// `{"event":"join"|"leave","user":…,"conn":…}`, built by the shard) as Centrifugo's push:
/// `{"push":{"channel":<channel>,"join":{"info":{"client":…,"user":…}}}}` (or `leave`).
/// `None` for anything else published there.
pub fn presence_push(topic: &str, data: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        event: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        user: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        conn: std::borrow::Cow<'a, str>,
    }
    let channel = topic.strip_prefix(PRESENCE_PREFIX)?;
    let e: Event<'_> = serde_json::from_slice(data).ok()?;
    let kind = match e.event.as_ref() {
        "join" => "join",
        "leave" => "leave",
        _ => return None,
    };
    let mut out = Vec::with_capacity(96 + channel.len() + e.user.len());
    out.extend_from_slice(b"{\"push\":{\"channel\":");
    push_json_str(&mut out, channel);
    out.extend_from_slice(b",\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\":{\"info\":{\"client\":");
    push_json_str(&mut out, &e.conn);
    out.extend_from_slice(b",\"user\":");
    push_json_str(&mut out, &e.user);
    out.extend_from_slice(b"}}}}");
    Some(out)
}

/// Where a topic's presence events are published (`presence.<topic>`).
pub const PRESENCE_PREFIX: &str = "presence.";

/// `{"push":{"message":{"data":…}}}` (an operator's broadcast).
pub fn message_push(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(b"{\"push\":{\"message\":{\"data\":");
    out.extend_from_slice(data);
    out.extend_from_slice(b"}}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn commands_as_the_sdks_send_them() {
        // centrifuge-js: connect and subscribe in one frame, `id` last; centrifuge-python:
        // `id` first with spaces.
        let frame = b"{\"connect\":{\"token\":\"t\",\"name\":\"js\"},\"id\":1}\n{\"subscribe\":{\"channel\":\"trades.BTCUSDT\",\"flag\":1},\"id\":2}";
        let cmds: Vec<Command<'_>> = lines(frame)
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(cmds[0].id, 1);
        assert_eq!(
            cmds[0].connect.as_ref().unwrap().token.as_deref(),
            Some("t")
        );
        assert_eq!(
            cmds[1].subscribe.as_ref().unwrap().channel,
            "trades.BTCUSDT"
        );
        let py = br#"{"id": 4, "subscribe": {"channel": "a", "recover": true, "epoch": "e1", "offset": 9, "flag": 1}}"#;
        let c: Command<'_> = serde_json::from_slice(py).unwrap();
        let sub = c.subscribe.unwrap();
        assert!(sub.recover);
        assert_eq!((sub.offset, sub.epoch.as_deref()), (9, Some("e1")));
        let pong: Command<'_> = serde_json::from_slice(b"{}").unwrap();
        assert!(pong.is_pong());
        assert_eq!(lines(b"{}\n\n  \n{}").count(), 2);
    }

    #[test]
    fn replies_have_centrifugo_shapes() {
        assert_eq!(
            s(|o| connect_result(o, 1, "0-5", Some(60), 25)),
            format!(
                r#"{{"id":1,"connect":{{"client":"0-5","version":"{}","expires":true,"ttl":60,"ping":25,"pong":true}}}}"#,
                env!("CARGO_PKG_VERSION")
            )
        );
        let pubs: [(u64, &[u8]); 2] = [(5, b"{\"a\":1}"), (6, b"2")];
        assert_eq!(
            s(|o| subscribe_result(
                o,
                2,
                &Subscribed {
                    positioned: true,
                    recoverable: true,
                    epoch: "ab",
                    offset: 4,
                    recovering: Some(true),
                    publications: &pubs,
                }
            )),
            r#"{"id":2,"subscribe":{"positioned":true,"recoverable":true,"epoch":"ab","offset":4,"was_recovering":true,"recovered":true,"publications":[{"data":{"a":1},"offset":5},{"data":2,"offset":6}]}}"#
        );
        assert_eq!(
            s(|o| error(o, 3, error::PERMISSION_DENIED, "permission denied")),
            r#"{"id":3,"error":{"code":103,"message":"permission denied"}}"#
        );
        assert_eq!(
            s(|o| error(o, 3, error::INTERNAL, "x")),
            r#"{"id":3,"error":{"code":100,"message":"x","temporary":true}}"#
        );
        assert_eq!(
            presence_push(
                "presence.room",
                br#"{"event":"join","user":"al\"ice","conn":"0-7"}"#
            )
            .map(String::from_utf8),
            Some(Ok(
                r#"{"push":{"channel":"room","join":{"info":{"client":"0-7","user":"al\"ice"}}}}"#
                    .into()
            ))
        );
        assert_eq!(presence_push("presence.room", b"{\"event\":\"x\"}"), None);
        assert_eq!(presence_push("room", b"{}"), None);
        assert_eq!(
            s(|o| unsubscribe_push(o, "t", 2500, "insufficient state")),
            r#"{"push":{"channel":"t","unsubscribe":{"code":2500,"reason":"insufficient state"}}}"#
        );
    }

    #[test]
    fn close_codes_map_to_centrifugo_codes() {
        use crate::ws::close as cc;
        assert_eq!(
            close_for(cc::SLOW_CONSUMER, "slow consumer").0,
            DISCONNECT_SLOW
        );
        assert_eq!(
            close_for(cc::UNAUTHORIZED, "token expired").0,
            DISCONNECT_EXPIRED
        );
        assert_eq!(
            close_for(cc::RATE_LIMITED, "x").0,
            DISCONNECT_TOO_MANY_REQUESTS
        );
        assert_eq!(close_for(cc::GOING_AWAY, "x").0, DISCONNECT_SHUTDOWN);
        assert_eq!(close_for(cc::SERVICE_RESTART, "x").0, DISCONNECT_SHUTDOWN);
        assert_eq!(
            close_for(cc::FORBIDDEN, "x").0,
            DISCONNECT_PERMISSION_DENIED
        );
        assert_eq!(
            close_for(cc::POLICY, "x"),
            (DISCONNECT_BAD_REQUEST, "bad request")
        );
    }
}
