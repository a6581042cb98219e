//! One readable line per server message (`tickcast client` without `--json`).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, value::RawValue};

/// ANSI colours, on only for a terminal without `NO_COLOR` (the rule the server's logs follow).
#[derive(Clone, Copy)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    fn paint<'a>(self, code: &str, s: &'a str) -> Cow<'a, str> {
        if self.colour {
            Cow::Owned(format!("\x1b[{code}m{s}\x1b[0m"))
        } else {
            Cow::Borrowed(s)
        }
    }
    pub fn topic<'a>(self, s: &'a str) -> Cow<'a, str> {
        self.paint("36", s)
    }
    pub fn dim<'a>(self, s: &'a str) -> Cow<'a, str> {
        self.paint("2", s)
    }
    pub fn good<'a>(self, s: &'a str) -> Cow<'a, str> {
        self.paint("32", s)
    }
    pub fn bad<'a>(self, s: &'a str) -> Cow<'a, str> {
        self.paint("31", s)
    }
    pub fn warn<'a>(self, s: &'a str) -> Cow<'a, str> {
        self.paint("33", s)
    }
}

/// A data frame: `{"topic":…,"seq":…,"ts":…,"data":…}`, `data` kept as sent.
#[derive(Deserialize)]
pub struct DataFrame<'a> {
    #[serde(borrow)]
    pub topic: Cow<'a, str>,
    pub seq: u64,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

/// What a server message is, parsed once.
pub enum Message<'a> {
    Data(DataFrame<'a>),
    /// Anything with an `op` (welcome, ack, pong, error, gap, broadcast), or unknown.
    Op(Value),
    /// Not JSON: shown as received.
    Other,
}

pub fn classify(text: &str) -> Message<'_> {
    // Data frames always start with the `topic` key (docs/PROTOCOL.md "Data frames").
    if text.starts_with("{\"topic\":") {
        if let Ok(f) = serde_json::from_str::<DataFrame>(text) {
            return Message::Data(f);
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.is_object() => Message::Op(v),
        _ => Message::Other,
    }
}

pub fn data(style: Style, f: &DataFrame) -> String {
    format!(
        "{} {}  {}",
        style.topic(&f.topic),
        style.dim(&format!("#{}", f.seq)),
        f.data.get()
    )
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> String {
    match v.as_array() {
        Some(items) => format!(
            "[{}]",
            items.iter().map(plain).collect::<Vec<_>>().join(", ")
        ),
        None => plain(v),
    }
}

/// `rtt`: the round trip of a ping this client timed (pong only).
pub fn op(style: Style, v: &Value, rtt: Option<std::time::Duration>) -> String {
    let op = v["op"].as_str().unwrap_or("");
    let id = match v.get("id") {
        Some(id) if !id.is_null() => format!(" id={id}"),
        _ => String::new(),
    };
    let fields = |skip: &[&str]| -> String {
        let Some(obj) = v.as_object() else {
            return String::new();
        };
        // The protocol's order for the known fields (serde_json sorts the others by name).
        const ORDER: &[&str] = &["seq", "epoch", "duplicate", "user", "exp", "dropped"];
        let known = ORDER.iter().filter_map(|k| obj.get_key_value(*k));
        let rest = obj.iter().filter(|(k, _)| !ORDER.contains(&k.as_str()));
        known
            .chain(rest)
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, val)| match val {
                Value::Array(_) => format!(" {k}={}", list(val)),
                _ => format!(" {k}={}", plain(val)),
            })
            .collect()
    };
    match op {
        "welcome" => {
            let user = match &v["user"] {
                Value::String(u) => format!(" user={u}"),
                _ => " anonymous".into(),
            };
            let mut line = format!(
                "{} conn={} shard={}{user} version={}",
                style.good("welcome"),
                plain(&v["conn"]),
                plain(&v["shard"]),
                plain(&v["version"]),
            );
            if let Some(exp) = v.get("exp") {
                line.push_str(&format!(" exp={exp}"));
            }
            if v["auth_required"] == true {
                line.push_str(&style.warn(" (auth required: send auth TOKEN)"));
            }
            line
        }
        "ack" => {
            let mut line = format!("{}{id}", style.good("ack"));
            if let Some(t) = v.get("topics") {
                line.push_str(&format!(" topics={}", list(t)));
            }
            if let Some(ps) = v["positions"].as_array() {
                let ps: Vec<String> = ps
                    .iter()
                    .map(|p| {
                        format!(
                            "{} #{} epoch {}",
                            plain(&p["topic"]),
                            plain(&p["seq"]),
                            plain(&p["epoch"])
                        )
                    })
                    .collect();
                line.push_str(&style.dim(&format!("  at {}", ps.join(", "))));
            }
            line.push_str(&fields(&["op", "id", "topics", "positions"]));
            line
        }
        "pong" => {
            let mut line = format!("{}{id} ts={}", style.good("pong"), plain(&v["ts"]));
            if let Some(rtt) = rtt {
                line.push_str(&format!(" rtt={:.2}ms", rtt.as_secs_f64() * 1e3));
            }
            line
        }
        "error" => {
            let mut line = format!(
                "{} {}: {}",
                style.bad("error"),
                plain(&v["code"]),
                plain(&v["message"])
            );
            if let Some(t) = v.get("topic") {
                line.push_str(&format!(" (topic {})", plain(t)));
            }
            line.push_str(&id);
            line
        }
        "gap" => format!(
            "{} {} {}..{} ({}) epoch {}",
            style.warn("gap"),
            style.topic(&plain(&v["topic"])),
            plain(&v["from"]),
            plain(&v["to"]),
            plain(&v["reason"]),
            plain(&v["epoch"]),
        ),
        "broadcast" => format!(
            "{}  {}",
            style.warn("broadcast"),
            v.get("data").map(|d| d.to_string()).unwrap_or_default()
        ),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style { colour: false };

    fn show(text: &str) -> String {
        match classify(text) {
            Message::Data(f) => data(PLAIN, &f),
            Message::Op(v) => op(PLAIN, &v, None),
            Message::Other => text.to_string(),
        }
    }

    #[test]
    fn lines_are_readable() {
        assert_eq!(
            show(r#"{"topic":"trades.BTCUSDT","seq":42,"ts":1,"data":{"p": "66990.1"}}"#),
            r#"trades.BTCUSDT #42  {"p": "66990.1"}"#
        );
        assert_eq!(
            show(
                r#"{"op":"welcome","conn":"0-1","user":null,"shard":0,"version":"0.1.0","ping_interval_s":20}"#
            ),
            "welcome conn=0-1 shard=0 anonymous version=0.1.0"
        );
        assert_eq!(
            show(
                r#"{"op":"ack","id":1,"topics":["trades.BTCUSDT","bbo.*"],"positions":[{"topic":"trades.BTCUSDT","seq":0,"epoch":"0000000000000000"}]}"#
            ),
            "ack id=1 topics=[trades.BTCUSDT, bbo.*]  at trades.BTCUSDT #0 epoch 0000000000000000"
        );
        assert_eq!(
            show(r#"{"op":"ack","id":7,"seq":1,"epoch":"3f1c"}"#),
            "ack id=7 seq=1 epoch=3f1c"
        );
        assert_eq!(
            show(
                r#"{"op":"error","id":2,"code":"forbidden","message":"no permission to publish to this topic","topic":"signals.x"}"#
            ),
            "error forbidden: no permission to publish to this topic (topic signals.x) id=2"
        );
        assert_eq!(
            show(
                r#"{"op":"gap","topic":"trades.BTCUSDT","epoch":"5d","from":5,"to":9,"reason":"evicted"}"#
            ),
            "gap trades.BTCUSDT 5..9 (evicted) epoch 5d"
        );
        assert_eq!(show("not json"), "not json");
    }

    #[test]
    fn colours_only_when_asked() {
        let f = r#"{"topic":"a","seq":1,"ts":1,"data":1}"#;
        let Message::Data(f) = classify(f) else {
            panic!()
        };
        assert!(data(Style { colour: true }, &f).contains("\x1b[36ma\x1b[0m"));
        assert!(!data(PLAIN, &f).contains('\x1b'));
    }
}
