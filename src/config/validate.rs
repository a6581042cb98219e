//! Every key is checked after the layers are merged; the message names the key and says why.
//! Numeric bounds come from the key table (`keys.rs`); what depends on other keys or is not a
//! number is checked here.

use std::net::SocketAddr;

use super::{Bounds, Config, Delivery, Engine, keys::ARRAYS as ARRAY_SECTIONS, keys::keys};

/// The paths of the port's own endpoints and what is under them (the route table,
/// `shard/http/routes.rs`, whose test keeps every route within these): the dialects'
/// configurable paths may be none of them, nor under one, nor above one.
pub const RESERVED_PATHS: &[&str] = &[
    "/ws",
    "/echo",
    "/health",
    "/ready",
    "/metrics",
    "/v1",
    "/dashboard",
];

/// `config: <key>: <why>`.
fn bad(key: &str, why: impl std::fmt::Display) -> Result<(), String> {
    Err(format!("config: {key}: {why}"))
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.check_bounds()?;
        self.validate_dialects()?;
        let s = &self.server;
        if s.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "server.listen",
                format!("{:?} is not an IP:port address", s.listen),
            );
        }
        if let Err((i, why)) = crate::ws::proxy::Trusted::parse(&s.trusted_proxies) {
            return bad(&format!("server.trusted_proxies[{i}]"), why);
        }
        if s.proxy_protocol && s.trusted_proxies.is_empty() {
            return bad(
                "server.proxy_protocol",
                "needs server.trusted_proxies: a PROXY header is read only from a trusted peer",
            );
        }
        if !s.uring_entries.is_power_of_two() {
            return bad("server.uring_entries", "must be a power of two");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad(
                "log.level",
                format!("{:?} is not a tracing filter: {e}", self.log.level),
            );
        }
        let l = &self.limits;
        if l.publish_data_bytes_max > l.message_bytes_max {
            return bad(
                "limits.publish_data_bytes_max",
                format!(
                    "{} exceeds limits.message_bytes_max ({}): such a publish could never arrive",
                    l.publish_data_bytes_max, l.message_bytes_max
                ),
            );
        }
        let frame_max = l.publish_data_bytes_max + crate::limits::ENVELOPE_BYTES_MAX;
        if l.write_queue_bytes_max < frame_max {
            return bad(
                "limits.write_queue_bytes_max",
                format!(
                    "{} is below one largest data frame ({frame_max} bytes = \
                     limits.publish_data_bytes_max + envelope)",
                    l.write_queue_bytes_max
                ),
            );
        }
        let t = &self.timeouts;
        if t.idle_s <= t.ping_interval_s {
            return bad(
                "timeouts.idle_s",
                format!(
                    "{} must exceed timeouts.ping_interval_s ({}), or every client times out \
                     before it is pinged",
                    t.idle_s, t.ping_interval_s
                ),
            );
        }
        if l.partial_bytes_max < l.message_bytes_max {
            return bad(
                "limits.partial_bytes_max",
                format!(
                    "{} is below limits.message_bytes_max ({}): no large message could ever \
                     arrive",
                    l.partial_bytes_max, l.message_bytes_max
                ),
            );
        }
        self.validate_topics()?;
        let a = &self.auth;
        for (i, k) in a.api_keys.iter().enumerate() {
            if k.messages_burst.is_some() && k.messages_per_s.is_none() {
                return bad(
                    &format!("auth.api_keys[{i}].messages_burst"),
                    "needs messages_per_s (the rate the burst belongs to)",
                );
            }
        }
        for (i, o) in a.allowed_origins.iter().enumerate() {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return bad(
                    &format!("auth.allowed_origins[{i}]"),
                    format!("{o:?} is not an origin like https://app.example.com"),
                );
            }
        }
        for (i, sym) in self.demo.symbols.iter().enumerate() {
            let ok = !sym.is_empty()
                && sym.len() <= 32
                && sym
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return bad(
                    &format!("demo.symbols[{i}]"),
                    format!("{sym:?} is not [A-Za-z0-9_-]{{1,32}}"),
                );
            }
        }
        self.validate_tls()?;
        self.validate_cluster()
    }

    /// The bounds of the key table, for every key that has them (array entries one by one).
    fn check_bounds(&self) -> Result<(), String> {
        let tree = serde_json::to_value(self).map_err(|e| format!("config: {e}"))?;
        let section = |path: &str| {
            path.split('.')
                .try_fold(&tree, |v, part| v.get(part))
                .cloned()
        };
        for key in keys() {
            let Some(bounds) = key.bounds else {
                continue;
            };
            let Some(value) = section(key.section) else {
                continue;
            };
            let entries: Vec<(String, &serde_json::Value)> =
                if ARRAY_SECTIONS.contains(&key.section) {
                    let Some(items) = value.as_array() else {
                        continue;
                    };
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{}[{i}].{}", key.section, key.name), item))
                        .collect()
                } else {
                    vec![(format!("{}.{}", key.section, key.name), &value)]
                };
            for (path, table) in entries {
                let Some(v) = table.get(key.name).and_then(serde_json::Value::as_u64) else {
                    continue;
                };
                let (lo, hi) = match bounds {
                    Bounds::Range(lo, hi) => (lo, hi),
                    Bounds::ZeroOrRange(_, _) if v == 0 => continue,
                    Bounds::ZeroOrRange(lo, hi) => (lo, hi),
                };
                if v < lo || v > hi {
                    return bad(&path, format!("{v} is out of range {lo}..={hi}"));
                }
            }
        }
        Ok(())
    }

    /// `[binance]` and `[centrifugo]`: paths that are paths, templates that map both ways,
    /// no path that another route answers.
    fn validate_dialects(&self) -> Result<(), String> {
        let path_ok = |p: &str| {
            p.len() > 1
                && p.len() <= 128
                && p.starts_with('/')
                && !p.ends_with('/')
                && !p.contains("//")
                && p[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
        };
        let fixed = |p: &str| {
            RESERVED_PATHS.iter().any(|r| {
                *r == p || r.starts_with(&format!("{p}/")) || p.starts_with(&format!("{r}/"))
            })
        };
        let b = &self.binance;
        if b.enabled {
            if !path_ok(&b.prefix) || fixed(&b.prefix) {
                return bad(
                    "binance.prefix",
                    format!(
                        "{:?}: `/` then letters, digits, `_`, `-` and `/`, no trailing `/`, not \
                         an endpoint of its own",
                        b.prefix
                    ),
                );
            }
            for (i, t) in b.streams.iter().enumerate() {
                if let Err(e) =
                    crate::dialect::binance::StreamMap::new([(t.stream.as_str(), t.topic.as_str())])
                {
                    return bad(&format!("binance.streams[{i}]"), e);
                }
            }
        }
        let c = &self.centrifugo;
        if c.enabled {
            let under_binance =
                b.enabled && (c.path == b.prefix || c.path.starts_with(&format!("{}/", b.prefix)));
            if !path_ok(&c.path) || fixed(&c.path) || under_binance {
                return bad(
                    "centrifugo.path",
                    format!(
                        "{:?}: `/` then letters, digits, `_`, `-` and `/`, no trailing `/`, not \
                         an endpoint of its own or under binance.prefix",
                        c.path
                    ),
                );
            }
        }
        Ok(())
    }

    /// `[[topics]]`: patterns, and what each delivery and option needs.
    fn validate_topics(&self) -> Result<(), String> {
        let range = |key: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                return bad(key, format!("{v} is out of range {lo}..={hi}"));
            }
            Ok(())
        };
        for (i, c) in self.topics.iter().enumerate() {
            let key = |f: &str| format!("topics[{i}].{f}");
            if let Err(e) = crate::pubsub::topic::validate_pattern(&c.pattern) {
                return bad(&key("pattern"), format!("{:?}: {e}", c.pattern));
            }
            // Bounds that apply only with their delivery (see the key table).
            if c.delivery == Delivery::Batched {
                range(&key("batch_window_ms"), c.batch_window_ms, 1, 1000)?;
            }
            if c.delivery == Delivery::Throttled {
                range(&key("throttle_per_s"), c.throttle_per_s as u64, 1, 1000)?;
            }
            if c.presence && (c.pattern == "presence" || c.pattern.starts_with("presence.")) {
                return bad(
                    &key("presence"),
                    "presence.* topics carry presence events and have none of their own",
                );
            }
            if c.cache && c.history_size == 0 {
                return bad(
                    &key("cache"),
                    "needs history_size >= 1 (the last message is kept there)",
                );
            }
        }
        Ok(())
    }

    /// `[cluster]`: the URL's scheme, names that are one subject token, what depends on other
    /// keys.
    fn validate_cluster(&self) -> Result<(), String> {
        let c = &self.cluster;
        if c.node_ttl_ms <= c.heartbeat_ms {
            return bad(
                "cluster.node_ttl_ms",
                format!(
                    "{} must exceed cluster.heartbeat_ms ({}), or live nodes expire",
                    c.node_ttl_ms, c.heartbeat_ms
                ),
            );
        }
        if c.reconnect_max_ms < c.reconnect_min_ms || c.reconnect_max_ms > 600_000 {
            return bad(
                "cluster.reconnect_max_ms",
                format!(
                    "{} is out of range {}..=600000",
                    c.reconnect_max_ms, c.reconnect_min_ms
                ),
            );
        }
        if !matches!(c.nats_storage.as_str(), "file" | "memory") {
            return bad(
                "cluster.nats_storage",
                format!("{:?} is not file or memory", c.nats_storage),
            );
        }
        if !matches!(c.nats_live_reader.as_str(), "shard" | "bridge") {
            return bad(
                "cluster.nats_live_reader",
                format!("{:?} is not shard or bridge", c.nats_live_reader),
            );
        }
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !token(&c.prefix) {
            return bad(
                "cluster.prefix",
                format!("{:?} is not [A-Za-z0-9_-]{{1,64}}", c.prefix),
            );
        }
        if !c.node_id.is_empty() && !token(&c.node_id) {
            return bad(
                "cluster.node_id",
                format!("{:?} is not [A-Za-z0-9_-]{{1,64}}", c.node_id),
            );
        }
        let scheme = match c.engine {
            Engine::Memory => return Ok(()),
            Engine::Nats => "nats://",
            Engine::Redis => "redis://",
        };
        if !c.url.is_empty() {
            let mut credentials = None;
            for (i, server) in crate::config::broker_urls(&c.url).enumerate() {
                // Only the position is named: an entry may be a piece of a password that held a
                // literal comma.
                if !server.starts_with(scheme) {
                    return bad(
                        "cluster.url",
                        format!(
                            "server {} does not start with {scheme} (separate servers with \
                             commas; percent-encode a comma in a password as %2C)",
                            i + 1
                        ),
                    );
                }
                match url::Url::parse(server) {
                    Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {}
                    Ok(_) => return bad("cluster.url", format!("server {} has no host", i + 1)),
                    Err(e) => {
                        return bad("cluster.url", format!("server {} is not a URL: {e}", i + 1));
                    }
                }
                // A node is one user of the broker: servers that name credentials name the same.
                if let Some(found) = crate::config::url_credentials(server) {
                    if credentials.get_or_insert_with(|| found.clone()) != &found {
                        return bad(
                            "cluster.url",
                            "its servers carry different credentials".to_string(),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// `[tls]`: an address and both files when enabled. The files' contents are checked when
    /// the server starts (`tls::TlsState::load`), which names the key and the file too.
    fn validate_tls(&self) -> Result<(), String> {
        let t = &self.tls;
        if t.listen.is_empty() {
            return Ok(());
        }
        let Ok(addr) = t.listen.parse::<SocketAddr>() else {
            return bad(
                "tls.listen",
                format!("{:?} is not an IP:port address (empty = no TLS)", t.listen),
            );
        };
        if addr.port() != 0 && Some(addr) == self.server.listen.parse().ok() {
            return bad(
                "tls.listen",
                format!("{addr} is also server.listen; TLS needs its own port"),
            );
        }
        for (key, file) in [
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
        ] {
            if file.is_empty() {
                return bad(key, "required when tls.listen is set (a PEM file)");
            }
        }
        Ok(())
    }
}
