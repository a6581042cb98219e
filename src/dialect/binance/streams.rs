//! Binance stream names ↔ tickcast topics, by configured templates (`[[binance.streams]]`):
//! `{sym}@trade` ↔ `trades.{SYM}`. A placeholder `{name}` stands for a run of ASCII letters and
//! digits; written `{NAME}` (upper case) it is that value in upper case, and the value read
//! through it is taken in lower case. So `btcusdt@trade` is `trades.BTCUSDT` and back, and
//! `btcusdt@kline_1M` (a one-month kline) is `kline.BTCUSDT.1M` with `{sym}@kline_{i}` ↔
//! `kline.{SYM}.{i}`. The first template that matches wins, in both directions. A stream name
//! is valid only if it maps to a topic that maps back to the very same name (so `BTCUSDT@trade`
//! is refused: Binance stream names are lower case), which keeps subscription lists and
//! combined frames in the client's own spelling.

use std::{cell::RefCell, rc::Rc};

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    /// A placeholder: its name (lower case) and whether it is written in upper case.
    Var(String, bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    parts: Vec<Part>,
}

/// Why a template is refused (config validation).
pub fn check_template(t: &str) -> Result<(), String> {
    Template::parse(t).map(|_| ())
}

impl Template {
    fn parse(t: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = t;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("`{t}`: `{{` without `}}`"))?;
                let name = &after[..end];
                let upper = name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
                let lower = name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                if name.is_empty() || !(upper || lower) {
                    return Err(format!(
                        "`{t}`: a placeholder is `{{name}}` or `{{NAME}}` (letters and `_`)"
                    ));
                }
                if matches!(parts.last(), Some(Part::Var(..))) {
                    return Err(format!(
                        "`{t}`: two placeholders need a separator between them"
                    ));
                }
                parts.push(Part::Var(name.to_ascii_lowercase(), upper));
                rest = &after[end + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let lit = &rest[..end];
                if lit.contains('}') {
                    return Err(format!("`{t}`: `}}` without `{{`"));
                }
                if matches!(parts.last(), Some(Part::Var(..)))
                    && lit.as_bytes()[0].is_ascii_alphanumeric()
                {
                    return Err(format!(
                        "`{t}`: a placeholder must be followed by the end or by a character \
                         other than a letter or digit"
                    ));
                }
                parts.push(Part::Lit(lit.to_string()));
                rest = &rest[end..];
            }
        }
        if parts.is_empty() {
            return Err("an empty template".into());
        }
        Ok(Template { parts })
    }

    fn vars(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Var(n, _) => Some(n.as_str()),
                Part::Lit(_) => None,
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// The placeholder values `s` gives this template (name, value in canonical case).
    fn read<'a>(&'a self, s: &str) -> Option<Vec<(&'a str, String)>> {
        let mut rest = s;
        let mut vals = Vec::new();
        for part in &self.parts {
            match part {
                Part::Lit(l) => rest = rest.strip_prefix(l.as_str())?,
                Part::Var(name, upper) => {
                    let end = rest
                        .bytes()
                        .position(|b| !b.is_ascii_alphanumeric())
                        .unwrap_or(rest.len());
                    if end == 0 {
                        return None;
                    }
                    let v = &rest[..end];
                    let v = if *upper {
                        v.to_ascii_lowercase()
                    } else {
                        v.to_string()
                    };
                    // A placeholder met twice must read the same both times.
                    if let Some((_, seen)) = vals.iter().find(|(n, _)| *n == name.as_str()) {
                        if *seen != v {
                            return None;
                        }
                    }
                    vals.push((name.as_str(), v));
                    rest = &rest[end..];
                }
            }
        }
        rest.is_empty().then_some(vals)
    }

    fn render(&self, vals: &[(&str, String)]) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(l) => out.push_str(l),
                Part::Var(name, upper) => {
                    let (_, v) = vals.iter().find(|(n, _)| n == name)?;
                    if *upper {
                        out.push_str(&v.to_ascii_uppercase());
                    } else {
                        out.push_str(v);
                    }
                }
            }
        }
        Some(out)
    }
}

/// The configured stream-name templates, in order.
#[derive(Debug, Clone, Default)]
pub struct StreamMap {
    pairs: Vec<(Template, Template)>,
}

/// Where a stream name no template reads goes: `btcusdt@aggTrade` is the topic
/// `binance.btcusdt@aggTrade`. Binance answers a well-formed name it has no data for with
/// `result: null` and silence, and connectors keep such names and send them again in their
/// reconnect URLs; so does tickcast, and anything published to the topic reaches them.
pub const FALLBACK_PREFIX: &str = "binance.";

/// The default templates: the demo feed's topics (`[[binance.streams]]`).
pub const DEFAULT_STREAMS: &[(&str, &str)] = &[
    ("{sym}@trade", "trades.{SYM}"),
    ("{sym}@bookTicker", "bbo.{SYM}"),
    ("{sym}@kline_{i}", "kline.{SYM}.{i}"),
    ("{sym}@depth", "depth.{SYM}"),
    ("{sym}@ticker", "ticker.{SYM}"),
];

impl StreamMap {
    /// Builds the map from (stream template, topic template) pairs; why not, if it cannot.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut out = Vec::new();
        for (stream, topic) in pairs {
            let (s, t) = (Template::parse(stream)?, Template::parse(topic)?);
            let (mut sv, mut tv) = (s.vars(), t.vars());
            sv.dedup();
            tv.dedup();
            if sv != tv {
                return Err(format!(
                    "`{stream}` and `{topic}` must name the same placeholders"
                ));
            }
            out.push((s, t));
        }
        Ok(StreamMap { pairs: out })
    }

    pub fn defaults() -> StreamMap {
        StreamMap::new(DEFAULT_STREAMS.iter().copied()).expect("the defaults are valid")
    }

    /// The topic of stream name `stream`: by the first template that reads it, if that topic
    /// maps back to the same name; a name no template reads is `binance.<name>` (see
    /// [`FALLBACK_PREFIX`]) when it is one topic segment.
    pub fn topic_of(&self, stream: &str) -> Option<String> {
        for (s, t) in &self.pairs {
            if let Some(vals) = s.read(stream) {
                let topic = t.render(&vals)?;
                return (self.stream_of(&topic).as_deref() == Some(stream)).then_some(topic);
            }
        }
        let topic = format!("{FALLBACK_PREFIX}{stream}");
        let one_segment = !stream.is_empty() && !stream.contains(['.', '*', '>']);
        (one_segment && crate::pubsub::topic::validate_topic(&topic).is_ok()).then_some(topic)
    }

    /// The stream name of `topic` (the first template whose topic side matches, else the
    /// name of a `binance.<name>` topic).
    pub fn stream_of(&self, topic: &str) -> Option<String> {
        self.pairs
            .iter()
            .find_map(|(s, t)| t.read(topic).and_then(|vals| s.render(&vals)))
            .or_else(|| {
                let name = topic.strip_prefix(FALLBACK_PREFIX)?;
                (!name.is_empty() && !name.contains('.')).then(|| name.to_owned())
            })
    }
}

thread_local! {
    /// This shard's templates (set at its start from the config), for the combined-stream
    /// frames it encodes (`super::super::encode_form`).
    static STREAMS: RefCell<Rc<StreamMap>> = RefCell::new(Rc::new(StreamMap::defaults()));
}

/// Sets this thread's templates.
pub fn set_streams(map: StreamMap) {
    STREAMS.with_borrow_mut(|m| *m = Rc::new(map));
}

/// Runs `f` with this thread's templates.
pub fn with_streams<R>(f: impl FnOnce(&StreamMap) -> R) -> R {
    let map = STREAMS.with_borrow(Rc::clone);
    f(&map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_templates_map_both_ways() {
        let m = StreamMap::defaults();
        for (stream, topic) in [
            ("btcusdt@trade", "trades.BTCUSDT"),
            ("ethusdt@bookTicker", "bbo.ETHUSDT"),
            ("btcusdt@kline_1m", "kline.BTCUSDT.1m"),
            ("btcusdt@kline_1M", "kline.BTCUSDT.1M"),
            ("solusdt@depth", "depth.SOLUSDT"),
            ("bnbusdt@ticker", "ticker.BNBUSDT"),
        ] {
            assert_eq!(m.topic_of(stream).as_deref(), Some(topic), "{stream}");
            assert_eq!(m.stream_of(topic).as_deref(), Some(stream), "{topic}");
        }
    }

    #[test]
    fn names_that_do_not_map_back_are_refused() {
        let m = StreamMap::defaults();
        // Read by a template but not mapped back to the same name.
        for bad in [
            "BTCUSDT@trade",
            "",
            "a.b@x",
            "!ticker@arr",
            "x*y",
            "btcusdt@kline_1m@+08:00",
        ] {
            assert_eq!(m.topic_of(bad), None, "{bad}");
        }
        assert_eq!(m.stream_of("orders.alice"), None);
        // Names no template reads: `binance.<name>`, both ways.
        for name in [
            "btcusdt@aggTrade",
            "btcusdt@depth@100ms",
            "btcusdt@trades",
            "btcusdt",
        ] {
            let topic = m.topic_of(name).unwrap();
            assert_eq!(topic, format!("binance.{name}"));
            assert_eq!(m.stream_of(&topic).as_deref(), Some(name));
        }
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (s, t) in [
            ("{sym}{i}", "k.{SYM}.{i}"),
            ("{sym}x", "t.{SYM}"),
            ("{sym}@trade", "t.{SYM}.{i}"),
            ("{Sym}@trade", "t.{SYM}"),
            ("{sym@trade", "t.{SYM}"),
            ("", "t"),
        ] {
            assert!(StreamMap::new([(s, t)]).is_err(), "{s} -> {t}");
        }
    }
}
