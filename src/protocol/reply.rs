//! The replies and events a client receives, built into a caller-provided `Vec` (then
//! framed), one allocation per reply.

use super::{ErrorCode, GapReason, Published, TopicPosition, epoch_str};

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

/// The subscribe ack: accepted patterns, the position of every exact topic and every topic
/// named in `since` (`"positions":[{"topic":..,"seq":N,"epoch":"…"}]`), and the patterns
/// held already whose filter the subscribe replaced (`"replaced":[..]`, when there are some).
pub fn ack_subscribe<S: AsRef<str>>(
    out: &mut Vec<u8>,
    id: Option<&[u8]>,
    topics: &[S],
    positions: &[TopicPosition<'_>],
    replaced: &[S],
) {
    ack_topics(out, id, topics);
    if !replaced.is_empty() {
        out.pop();
        push_str_array(out, "replaced", replaced);
        out.push(b'}');
    }
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
