//! What a line typed at `tickcast client`'s prompt means, and the protocol v1 request it becomes.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

/// One parsed line.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Patterns, and a filter's JSON text if one was typed after them.
    Subscribe(Vec<String>, Option<String>),
    Unsubscribe(Vec<String>),
    /// Topic and the data's JSON text, exactly as typed (the server forwards it verbatim).
    Publish(String, String),
    Ping,
    Auth(String),
    /// `history TOPIC [SEQ]`: a subscribe with `since`.
    History(String, u64),
    /// A line starting with `{`, sent as typed.
    Raw(String),
    Help,
    Quit,
    /// Empty line or `# comment`.
    Nothing,
}

pub const HELP: &str = "\
commands, one per line:
  sub PATTERN... [FILTER]
                        subscribe, e.g. sub trades.BTCUSDT bbo.*; a JSON filter after the
                        patterns keeps only matching messages: sub trades.* {\"side\":\"buy\"}
  unsub PATTERN...      unsubscribe (patterns as subscribed)
  pub TOPIC JSON        publish JSON data, e.g. pub signals.x {\"k\":1}  (a string: pub t \"hi\")
  ping                  application ping; the pong shows the round trip
  auth TOKEN            authenticate or refresh (reconnects then use this token)
  history TOPIC [SEQ]   subscribe to TOPIC with since=SEQ (default 0): the retained messages
                        after SEQ are replayed, then live ones follow (it stays subscribed)
  {\"op\":...}            a raw JSON request, sent as typed
  help                  this list
  quit                  close the connection (1000) and exit; also Ctrl-C, Ctrl-D";

/// Parses one line; `Err` is the message to show (the line is not sent).
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Command::Nothing);
    }
    if line.starts_with('{') {
        return Ok(Command::Raw(line.to_string()));
    }
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let words = || {
        rest.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    match word {
        "sub" | "subscribe" => {
            // Everything from the first `{` on is the filter (JSON may hold spaces).
            let (patterns, filter) = match rest.find('{') {
                Some(at) => (&rest[..at], Some(rest[at..].trim())),
                None => (rest, None),
            };
            let patterns: Vec<String> = patterns.split_whitespace().map(str::to_string).collect();
            if patterns.is_empty() {
                return Err(
                    "usage: sub PATTERN... [FILTER] (e.g. sub trades.* {\"side\":\"buy\"})".into(),
                );
            }
            if let Some(f) = filter {
                if let Err(e) = serde_json::from_str::<&RawValue>(f) {
                    return Err(format!("the filter is not valid JSON ({e}); nothing sent"));
                }
            }
            Ok(Command::Subscribe(patterns, filter.map(str::to_string)))
        }
        "unsub" | "unsubscribe" => match words() {
            t if t.is_empty() => Err("usage: unsub PATTERN...".into()),
            t => Ok(Command::Unsubscribe(t)),
        },
        "pub" | "publish" => {
            let (topic, data) = match rest.split_once(char::is_whitespace) {
                Some((t, d)) => (t, d.trim()),
                None => (rest, ""),
            };
            if topic.is_empty() || data.is_empty() {
                return Err("usage: pub TOPIC JSON (e.g. pub signals.x {\"k\":1})".into());
            }
            if let Err(e) = serde_json::from_str::<&RawValue>(data) {
                return Err(format!(
                    "data is not valid JSON ({e}); nothing sent (a string needs quotes: pub {topic} \"text\")"
                ));
            }
            Ok(Command::Publish(topic.to_string(), data.to_string()))
        }
        "ping" => Ok(Command::Ping),
        "auth" => match words().as_slice() {
            [token] => Ok(Command::Auth(token.clone())),
            _ => Err("usage: auth TOKEN".into()),
        },
        "history" => match words().as_slice() {
            [topic] => Ok(Command::History(topic.clone(), 0)),
            [topic, seq] => seq
                .parse()
                .map(|s| Command::History(topic.clone(), s))
                .map_err(|_| {
                    format!("usage: history TOPIC [SEQ]: {seq:?} is not a sequence number")
                }),
            _ => Err("usage: history TOPIC [SEQ]".into()),
        },
        "help" | "?" => Ok(Command::Help),
        "quit" | "exit" => Ok(Command::Quit),
        other => Err(format!("unknown command {other:?}; type help for the list")),
    }
}

/// A position in `since`: `{"seq":N,"epoch":"…"}`.
#[derive(Serialize)]
pub struct Since<'a> {
    pub seq: u64,
    pub epoch: &'a str,
}

#[derive(Serialize)]
struct Request<'a> {
    op: &'a str,
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    topics: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<&'a BTreeMap<&'a str, Since<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<&'a RawValue>,
}

impl<'a> Request<'a> {
    fn new(op: &'a str, id: u64) -> Self {
        Request {
            op,
            id,
            topics: None,
            topic: None,
            data: None,
            token: None,
            since: None,
            filter: None,
        }
    }
    fn json(&self) -> String {
        serde_json::to_string(self).expect("a request serializes")
    }
}

/// `filter`: a subscription filter's JSON text (docs/PROTOCOL.md "Filters"), sent as it is.
pub fn subscribe(
    id: u64,
    topics: &[String],
    since: &BTreeMap<&str, Since>,
    filter: Option<&str>,
) -> String {
    let filter: Option<&RawValue> = filter.map(|f| {
        serde_json::from_str(f).expect("a filter is kept as the text of a parsed JSON value")
    });
    Request {
        topics: Some(topics),
        since: (!since.is_empty()).then_some(since),
        filter,
        ..Request::new("subscribe", id)
    }
    .json()
}

pub fn unsubscribe(id: u64, topics: &[String]) -> String {
    Request {
        topics: Some(topics),
        ..Request::new("unsubscribe", id)
    }
    .json()
}

/// `data` must be valid JSON (checked by [`parse`]); it is sent byte for byte.
pub fn publish(id: u64, topic: &str, data: &str) -> String {
    let data: &RawValue = serde_json::from_str(data).expect("checked by parse");
    Request {
        topic: Some(topic),
        data: Some(data),
        ..Request::new("publish", id)
    }
    .json()
}

pub fn ping(id: u64) -> String {
    Request::new("ping", id).json()
}

pub fn auth(id: u64, token: &str) -> String {
    Request {
        token: Some(token),
        ..Request::new("auth", id)
    }
    .json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse("sub trades.BTCUSDT  bbo.*").unwrap(),
            Command::Subscribe(vec!["trades.BTCUSDT".into(), "bbo.*".into()], None)
        );
        assert_eq!(
            parse("sub trades.* bbo.x { \"side\": \"buy\", \"q\": {\"gt\": 1} }").unwrap(),
            Command::Subscribe(
                vec!["trades.*".into(), "bbo.x".into()],
                Some("{ \"side\": \"buy\", \"q\": {\"gt\": 1} }".into())
            )
        );
        assert!(
            parse("sub {\"side\":\"buy\"}")
                .unwrap_err()
                .starts_with("usage")
        );
        assert!(
            parse("sub t {\"side\":")
                .unwrap_err()
                .starts_with("the filter is not valid JSON")
        );
        assert_eq!(
            parse("unsubscribe a").unwrap(),
            Command::Unsubscribe(vec!["a".into()])
        );
        assert_eq!(
            parse("pub signals.x {\"k\": 1.50}").unwrap(),
            Command::Publish("signals.x".into(), "{\"k\": 1.50}".into())
        );
        assert_eq!(parse("  ").unwrap(), Command::Nothing);
        assert_eq!(parse("# note").unwrap(), Command::Nothing);
        assert_eq!(
            parse("history t.x 5").unwrap(),
            Command::History("t.x".into(), 5)
        );
        assert_eq!(
            parse("history t.x").unwrap(),
            Command::History("t.x".into(), 0)
        );
        assert_eq!(
            parse("{\"op\":\"ping\"}").unwrap(),
            Command::Raw("{\"op\":\"ping\"}".into())
        );
        assert_eq!(parse("quit").unwrap(), Command::Quit);
    }

    #[test]
    fn bad_lines_are_refused_with_a_hint() {
        assert!(
            parse("pub x {oops}")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(parse("pub x hello").unwrap_err().contains("pub x \"text\""));
        assert!(parse("pub x").unwrap_err().starts_with("usage"));
        assert!(parse("sub").unwrap_err().starts_with("usage"));
        assert!(
            parse("history t x")
                .unwrap_err()
                .contains("not a sequence number")
        );
        assert!(parse("frobnicate").unwrap_err().contains("help"));
    }

    #[test]
    fn requests_keep_the_data_verbatim() {
        assert_eq!(
            publish(3, "s.x", "{\"px\": 1.50e2}"),
            r#"{"op":"publish","id":3,"topic":"s.x","data":{"px": 1.50e2}}"#
        );
        let mut since = BTreeMap::new();
        since.insert(
            "t.x",
            Since {
                seq: 7,
                epoch: "ab",
            },
        );
        assert_eq!(
            subscribe(1, &["t.>".into()], &since, None),
            r#"{"op":"subscribe","id":1,"topics":["t.>"],"since":{"t.x":{"seq":7,"epoch":"ab"}}}"#
        );
        assert_eq!(
            subscribe(2, &["a".into()], &BTreeMap::new(), None),
            r#"{"op":"subscribe","id":2,"topics":["a"]}"#
        );
        assert_eq!(
            subscribe(5, &["a".into()], &since, Some(r#"{"k":{"in":[1,2]}}"#)),
            r#"{"op":"subscribe","id":5,"topics":["a"],"since":{"t.x":{"seq":7,"epoch":"ab"}},"filter":{"k":{"in":[1,2]}}}"#
        );
        assert_eq!(auth(4, "tk"), r#"{"op":"auth","id":4,"token":"tk"}"#);
    }
}
