//! Metrics. Hot-path counting is plain `u64` arithmetic on shard-owned structs: no atomics, no
//! locks per message. A shard publishes its counters into the `metrics` registry (one atomic
//! store per metric) on its timer tick and whenever `/metrics` is scraped (the scraping shard
//! asks every shard to flush first, so a scrape is exact).
//!
//! The publish-to-write histogram is kept per shard in fixed power-of-two buckets (one array
//! increment per delivery) and rendered at scrape time: `metrics`' own histograms store every
//! sample, which would be a per-delivery allocation-and-atomic cost.

use std::{
    fmt::Write as _,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Why a connection ended; one counter each (`tickcast_connections_closed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The client sent a close frame.
    ClientClose,
    /// EOF without a close frame (a reset counts as `IoError`).
    ClientGone,
    /// RFC 6455 violation (1002).
    ProtocolError,
    /// Invalid UTF-8 in a text message (1007).
    InvalidUtf8,
    /// Message over the size limit (1009).
    TooLarge,
    /// Outbound queue over its bound (4008).
    SlowConsumer,
    /// Nothing received for `timeouts.idle_s`.
    IdleTimeout,
    /// HTTP request / upgrade not complete within `timeouts.handshake_ms`, or an HTTP
    /// keep-alive connection idle for as long.
    HandshakeTimeout,
    /// Refused before or at the upgrade (bad request, limits).
    Rejected,
    /// A plain HTTP request/response exchange ended.
    HttpDone,
    /// Server shutdown (1001).
    Shutdown,
    /// Socket error.
    IoError,
    /// No valid token in time: authentication required, or expired and not refreshed (4001).
    Unauthorized,
    /// An invalid token sent with the `auth` op (1008).
    AuthFailed,
    /// Kept sending over the message rate limit (4029).
    RateLimited,
    /// Closed by an operator (`POST /v1/disconnect`).
    Admin,
    /// A message started and not finished within `timeouts.message_ms` (1008).
    MessageTimeout,
    /// Its partial message would have passed `limits.partial_bytes_max` (1013, HTTP 503).
    Overloaded,
    /// Reached its dialect's maximum connection age (`binance.connection_age_max_s`).
    MaxAge,
    /// A configuration reload took its credential or the rights it needed (4003).
    Revoked,
}

impl CloseReason {
    pub const ALL: [CloseReason; 20] = [
        CloseReason::ClientClose,
        CloseReason::ClientGone,
        CloseReason::ProtocolError,
        CloseReason::InvalidUtf8,
        CloseReason::TooLarge,
        CloseReason::SlowConsumer,
        CloseReason::IdleTimeout,
        CloseReason::HandshakeTimeout,
        CloseReason::Rejected,
        CloseReason::HttpDone,
        CloseReason::Shutdown,
        CloseReason::IoError,
        CloseReason::Unauthorized,
        CloseReason::AuthFailed,
        CloseReason::RateLimited,
        CloseReason::Admin,
        CloseReason::MessageTimeout,
        CloseReason::Overloaded,
        CloseReason::MaxAge,
        CloseReason::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_close",
            CloseReason::ClientGone => "client_gone",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::TooLarge => "too_large",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::Rejected => "rejected",
            CloseReason::HttpDone => "http_done",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::Admin => "admin",
            CloseReason::MessageTimeout => "message_timeout",
            CloseReason::Overloaded => "overloaded",
            CloseReason::MaxAge => "max_age",
            CloseReason::Revoked => "revoked",
        }
    }
}

/// Security decisions, one counter each (`tickcast_security_events_total{event}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SecEvent {
    /// A JWT was accepted (at upgrade or with the `auth` op).
    AuthJwt,
    /// An API key was accepted.
    AuthApiKey,
    /// A subscribe pattern refused for lack of permission.
    ForbiddenSubscribe,
    /// A publish refused for lack of permission.
    ForbiddenPublish,
    /// An HTTP admin/observability request without the required token (401/403).
    ForbiddenHttp,
    /// A client message refused by `limits.client_messages_per_s`.
    RateLimitedMessage,
    /// An upgrade refused by `limits.connect_rate_per_ip_per_s`.
    RateLimitedConnect,
    /// An upgrade or `auth` op refused by `limits.connections_per_user_max`.
    UserLimit,
    /// An upgrade refused by `auth.allowed_origins`.
    OriginRejected,
    /// A connection's token expired (it was told; close 4001 follows unless refreshed).
    TokenExpired,
    /// A token refreshed with the `auth` op.
    Refreshed,
}

impl SecEvent {
    pub const ALL: [SecEvent; 11] = [
        SecEvent::AuthJwt,
        SecEvent::AuthApiKey,
        SecEvent::ForbiddenSubscribe,
        SecEvent::ForbiddenPublish,
        SecEvent::ForbiddenHttp,
        SecEvent::RateLimitedMessage,
        SecEvent::RateLimitedConnect,
        SecEvent::UserLimit,
        SecEvent::OriginRejected,
        SecEvent::TokenExpired,
        SecEvent::Refreshed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SecEvent::AuthJwt => "auth_jwt",
            SecEvent::AuthApiKey => "auth_api_key",
            SecEvent::ForbiddenSubscribe => "forbidden_subscribe",
            SecEvent::ForbiddenPublish => "forbidden_publish",
            SecEvent::ForbiddenHttp => "forbidden_http",
            SecEvent::RateLimitedMessage => "rate_limited_message",
            SecEvent::RateLimitedConnect => "rate_limited_connect",
            SecEvent::UserLimit => "user_limit",
            SecEvent::OriginRejected => "origin_rejected",
            SecEvent::TokenExpired => "token_expired",
            SecEvent::Refreshed => "refreshed",
        }
    }
}

/// The client's address behind proxies (`crate::ws::proxy`), one counter each
/// (`tickcast_proxy_events_total{event}`): what was believed, and what was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyEvent {
    /// A trusted peer's PROXY header gave the client's address.
    Header,
    /// A trusted peer's PROXY header named no client (v2 `LOCAL`, v1 `UNKNOWN`): its own
    /// connection, a health check.
    HeaderLocal,
    /// A PROXY header from a peer not in `server.trusted_proxies`, or with
    /// `server.proxy_protocol` off: refused.
    HeaderUntrusted,
    /// A malformed PROXY header from a trusted peer: refused.
    HeaderInvalid,
    /// A PROXY header over its size bound: refused.
    HeaderTooLarge,
    /// The handshake deadline passed in the middle of a PROXY header.
    HeaderTimeout,
    /// An upgrade whose client address came from a trusted peer's forwarded header.
    Forwarded,
    /// A trusted peer's forwarded header named no usable address: the proxy's stands.
    ForwardedInvalid,
}

impl ProxyEvent {
    pub const ALL: [ProxyEvent; 8] = [
        ProxyEvent::Header,
        ProxyEvent::HeaderLocal,
        ProxyEvent::HeaderUntrusted,
        ProxyEvent::HeaderInvalid,
        ProxyEvent::HeaderTooLarge,
        ProxyEvent::HeaderTimeout,
        ProxyEvent::Forwarded,
        ProxyEvent::ForwardedInvalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProxyEvent::Header => "header",
            ProxyEvent::HeaderLocal => "header_local",
            ProxyEvent::HeaderUntrusted => "header_untrusted",
            ProxyEvent::HeaderInvalid => "header_invalid",
            ProxyEvent::HeaderTooLarge => "header_too_large",
            ProxyEvent::HeaderTimeout => "header_timeout",
            ProxyEvent::Forwarded => "forwarded",
            ProxyEvent::ForwardedInvalid => "forwarded_invalid",
        }
    }
}

/// The per-shard counters: one line each (field, Prometheus name, help). The macro below turns
/// this table into the hot-path struct, the registry handles, the flush and the descriptions.
macro_rules! shard_counters {
    ($( $(#[$doc:meta])* $field:ident: $name:literal, $help:expr; )*) => {
        /// Per-shard counters; the hot path increments these directly.
        #[derive(Debug, Default, Clone)]
        pub struct Counters {
            $( $(#[$doc])* pub $field: u64, )*
            /// Data frames built (encode once: must equal `publishes`), protocol v1 form, by
            /// the topic's owner (`tickcast_serializations_total{format="v1"}`).
            pub serializations: u64,
            /// Data frames encoded in each dialect's format on this shard (index
            /// `dialect::Format`; 0 unused): once per frame and format, by the first shard
            /// that queues it for such a connection.
            pub formats: [u64; crate::dialect::FORMATS],
            pub closed: [u64; CloseReason::ALL.len()],
            pub security: [u64; SecEvent::ALL.len()],
            pub proxy: [u64; ProxyEvent::ALL.len()],
            /// Tokens refused, by `AuthError::label`.
            pub auth_failures: [u64; crate::auth::AuthError::LABELS.len()],
            /// Subscribes refused for their filter, by `filter::Refusal`.
            pub filter_rejects: [u64; crate::pubsub::filter::Refusal::ALL.len()],
        }

        /// Registry handles of the unlabelled counters of one shard.
        struct Scalars {
            $( $field: Counter, )*
        }

        impl Scalars {
            fn register(shard: &str) -> Scalars {
                Scalars { $( $field: metrics::counter!($name, "shard" => shard.to_string()), )* }
            }

            fn flush(&self, c: &Counters) {
                $( self.$field.absolute(c.$field); )*
            }
        }

        /// Every unlabelled per-shard counter: (name, help).
        pub const SHARD_COUNTERS: &[(&str, &str)] = &[ $( ($name, $help), )* ];
    };
}

shard_counters! {
    /// Publishes accepted at ingest (client op, HTTP, demo feed), counted where they enter.
    publishes: "tickcast_publishes_total",
        "Publishes accepted at ingest.";
    /// Frames compressed for permessage-deflate connections: once per frame and window
    /// (compress once), however many subscribers get it.
    compressions: "tickcast_compressions_total",
        "Frames compressed for permessage-deflate connections, once per frame and window however many connections get them (compress once).";
    /// Compressed client messages inflated.
    inflations: "tickcast_inflations_total",
        "Compressed (permessage-deflate) client messages inflated.";
    /// Data frames completely written to a subscriber socket.
    deliveries: "tickcast_deliveries_total",
        "Data frames fully written to subscribers.";
    bytes_out: "tickcast_bytes_out_total",
        "Bytes written to client sockets.";
    /// `sendmsg` calls that wrote data (deliveries / writes = frames coalesced per write).
    writes: "tickcast_writes_total",
        "sendmsg calls that wrote to client sockets.";
    messages_in: "tickcast_messages_in_total",
        "WebSocket messages received from clients, control frames (ping, pong, close) included.";
    accepted: "tickcast_connections_accepted_total",
        "TCP connections accepted.";
    http_requests: "tickcast_http_requests_total",
        "Complete HTTP requests handled, WebSocket upgrade requests included.";
    /// Mesh messages that found a peer's ring full and waited in the local spill.
    mesh_spills: "tickcast_mesh_spills_total",
        "Cross-shard messages held back because the peer's ring was full.";
    /// Mesh messages dropped because the spill was full too.
    mesh_drops: "tickcast_mesh_drops_total",
        "Cross-shard messages dropped because ring and spill (mesh.spill_max) were full.";
    /// Connections refused for `limits.connections_max` / `connections_per_ip_max` /
    /// `handshakes_per_shard_max`.
    limit_rejects: "tickcast_limit_rejects_total",
        "Connections refused by connection limits (HTTP 503/429).";
    /// Topics whose owner state was dropped because nothing needed it any more.
    topics_dropped: "tickcast_topics_dropped_total",
        "Topics forgotten by their owner shard: no subscriber, history or idem key needed them.";
    /// Times a connection's reading paused because replies to its own requests waited.
    reply_pauses: "tickcast_reply_pauses_total",
        "Times reading a connection paused: replies to its own requests held limits.control_queue_bytes_max.";
    /// Connections closed because their partial message would pass `limits.partial_bytes_max`.
    partial_budget_closes: "tickcast_partial_budget_closes_total",
        "Connections closed (1013, HTTP 503) because their partial message would pass limits.partial_bytes_max.";
    /// Connections answered 503 at accept because the process was out of descriptors.
    fd_rejects: "tickcast_fd_rejects_total",
        "Connections answered 503 and closed at accept: the process was out of file descriptors.";
    /// Publishes refused for `limits.topics_per_shard_max`.
    topic_limit_rejects: "tickcast_topic_limit_rejects_total",
        "Publishes refused by limits.topics_per_shard_max.";
    /// `gap` messages sent (recovery could not cover what a client missed).
    gaps: "tickcast_gaps_total",
        "gap messages sent: a subscriber's since could not be covered by history.";
    /// Frames replayed from history to recovering subscribers.
    replayed: "tickcast_replayed_total",
        "Frames replayed from history to recovering subscribers.";
    /// Publishes answered as duplicates of an earlier one with the same `idem` key.
    duplicates: "tickcast_duplicate_publishes_total",
        "Publishes not published again: an earlier one with the same idem key got their seq.";
    /// Cluster: broker messages a topic's owner had already delivered (dropped).
    cluster_duplicates: "tickcast_cluster_duplicates_total",
        "Cluster: broker messages a topic's owner had already delivered (dropped).";
    /// Cluster: holes in a topic's broker stream (each started a repair fetch).
    cluster_holes: "tickcast_cluster_holes_total",
        "Cluster: holes seen in a topic's broker stream (each repaired from history or reported as a gap).";
    /// Cluster: broker messages far beyond anything the broker has (forged or corrupt).
    cluster_implausible: "tickcast_cluster_implausible_total",
        "Cluster: broker messages far beyond anything the broker has (forged or corrupt): dropped.";
    /// Frames a subscriber did not get because a newer frame of the topic replaced them
    /// (`conflate` queues, `throttled` delivery).
    conflated: "tickcast_conflated_total",
        "Frames a subscriber skipped because a newer frame of the same topic replaced them (conflate queues, throttled delivery).";
    /// Frames dropped from a full lane (`drop_oldest`, or `conflate` with nothing to replace).
    dropped_oldest: "tickcast_dropped_oldest_total",
        "Frames dropped from a subscriber's full lane (drop_oldest; conflate with nothing to replace).";
    /// TLS handshakes completed.
    tls_handshakes: "tickcast_tls_handshakes_total",
        "TLS handshakes completed on the TLS listener.";
    /// TLS connections that ended before their handshake completed (bad records, plain HTTP
    /// on the TLS port, handshake deadline, EOF).
    tls_handshake_failures: "tickcast_tls_handshake_failures_total",
        "TLS connections that ended before their handshake completed.";
    /// Subscription filters evaluated by the fan-out: at most once per message, shard and
    /// distinct filter with a subscriber of the topic there.
    filter_evaluations: "tickcast_filter_evaluations_total",
        "Subscription filters evaluated by the fan-out: at most once per message, shard and distinct filter with a subscriber of the topic on the shard.";
    /// Messages whose data a shard parsed for its filters (at most once per message and shard).
    filter_parses: "tickcast_filter_parses_total",
        "Messages whose data a shard parsed for subscription filters: at most once per message and shard, only when a filter was evaluated.";
    /// (subscription, frame) pairs a filter turned away, live or replayed.
    filter_skips: "tickcast_filter_skips_total",
        "(subscription, frame) pairs a subscription filter turned away, live or replayed.";
}

/// Per-shard gauges, set on flush.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub connections: u64,
    /// Connections in their HTTP phase (holding a handshake slot).
    pub handshakes: u64,
    /// Process-wide: bytes of partial messages held (`limits.partial_bytes_max`); set by
    /// shard 0 only.
    pub partial_bytes: Option<u64>,
    pub subscriptions: u64,
    pub patterns: u64,
    pub topics: u64,
    /// Distinct subscription filters held (`limits.filters_per_shard_max`).
    pub filters: u64,
}

/// Publish-to-write latency in power-of-two microsecond buckets: bucket `i` counts latencies in
/// `(2^(i-1), 2^i]` µs (bucket 0: up to 1 µs), matching Prometheus' inclusive `le`. The last
/// bucket holds everything above 2^22 µs (4.19 s) and is exposed only through `+Inf`.
#[derive(Debug, Clone)]
pub struct Latency {
    pub buckets: [u64; LATENCY_BUCKETS],
    pub sum_ns: u64,
    pub count: u64,
}

pub const LATENCY_BUCKETS: usize = 24;

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: [0; LATENCY_BUCKETS],
            sum_ns: 0,
            count: 0,
        }
    }
}

impl Latency {
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let us = ns.div_ceil(1000);
        let i = if us <= 1 {
            0
        } else {
            (u64::BITS - (us - 1).leading_zeros()) as usize
        };
        self.buckets[i.min(LATENCY_BUCKETS - 1)] += 1;
        self.sum_ns += ns;
        self.count += 1;
    }

    fn add(&mut self, other: &Latency) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
        self.count += other.count;
    }
}

/// Registered metric handles of one shard (label `shard`).
struct Handles {
    scalars: Scalars,
    /// `tickcast_serializations_total{format}`, by `dialect::Format`.
    serializations: Vec<Counter>,
    closed: Vec<Counter>,
    slow_consumer_closes: Counter,
    security: Vec<Counter>,
    proxy: Vec<Counter>,
    auth_failures: Vec<Counter>,
    filter_rejects: Vec<Counter>,
    connections: Gauge,
    handshakes: Gauge,
    partial_bytes: Gauge,
    subscriptions: Gauge,
    patterns: Gauge,
    topics: Gauge,
    filters: Gauge,
}

/// A shard's statistics: what the hot path touches, plus its registry handles.
pub struct ShardStats {
    pub c: Counters,
    pub latency: Latency,
    shard: usize,
    handles: Handles,
}

impl ShardStats {
    pub fn new(shard: usize) -> ShardStats {
        let label = shard.to_string();
        let c = |name: &'static str| metrics::counter!(name, "shard" => label.clone());
        let g = |name: &'static str| metrics::gauge!(name, "shard" => label.clone());
        let handles = Handles {
            scalars: Scalars::register(&label),
            serializations: crate::dialect::Format::ALL
                .iter()
                .map(|f| {
                    metrics::counter!("tickcast_serializations_total",
                        "shard" => label.clone(), "format" => f.as_str())
                })
                .collect(),
            closed: CloseReason::ALL
                .iter()
                .map(|r| {
                    metrics::counter!("tickcast_connections_closed_total",
                        "shard" => label.clone(), "reason" => r.as_str())
                })
                .collect(),
            slow_consumer_closes: c("tickcast_slow_consumer_closes_total"),
            security: SecEvent::ALL
                .iter()
                .map(|e| {
                    metrics::counter!("tickcast_security_events_total",
                        "shard" => label.clone(), "event" => e.as_str())
                })
                .collect(),
            proxy: ProxyEvent::ALL
                .iter()
                .map(|e| {
                    metrics::counter!("tickcast_proxy_events_total",
                        "shard" => label.clone(), "event" => e.as_str())
                })
                .collect(),
            auth_failures: crate::auth::AuthError::LABELS
                .iter()
                .map(|r| {
                    metrics::counter!("tickcast_auth_failures_total",
                        "shard" => label.clone(), "reason" => *r)
                })
                .collect(),
            filter_rejects: crate::pubsub::filter::Refusal::ALL
                .iter()
                .map(|r| {
                    metrics::counter!("tickcast_filter_rejects_total",
                        "shard" => label.clone(), "reason" => r.as_str())
                })
                .collect(),
            connections: g("tickcast_connections"),
            handshakes: g("tickcast_handshakes"),
            partial_bytes: metrics::gauge!("tickcast_partial_bytes"),
            subscriptions: g("tickcast_subscriptions"),
            patterns: g("tickcast_subscription_patterns"),
            topics: g("tickcast_topics"),
            filters: g("tickcast_subscription_filters"),
        };
        ShardStats {
            c: Counters::default(),
            latency: Latency::default(),
            shard,
            handles,
        }
    }

    #[inline]
    pub fn closed(&mut self, reason: CloseReason) {
        self.c.closed[reason as usize] += 1;
    }

    pub fn security(&mut self, event: SecEvent) {
        self.c.security[event as usize] += 1;
    }

    pub fn proxy(&mut self, event: ProxyEvent) {
        self.c.proxy[event as usize] += 1;
    }

    pub fn auth_failed(&mut self, e: &crate::auth::AuthError) {
        let i = crate::auth::AuthError::LABELS
            .iter()
            .position(|l| *l == e.label())
            .expect("every label is listed");
        self.c.auth_failures[i] += 1;
    }

    /// Publishes this shard's counters, gauges and histogram for the next scrape.
    pub fn flush(&self, gauges: Gauges, hub: &StatsHub) {
        let h = &self.handles;
        let c = &self.c;
        h.scalars.flush(c);
        for (i, handle) in h.serializations.iter().enumerate() {
            handle.absolute(if i == 0 {
                c.serializations
            } else {
                c.formats[i]
            });
        }
        for (handle, v) in h.closed.iter().zip(c.closed.iter()) {
            handle.absolute(*v);
        }
        h.slow_consumer_closes
            .absolute(c.closed[CloseReason::SlowConsumer as usize]);
        for (handle, v) in h.security.iter().zip(c.security.iter()) {
            handle.absolute(*v);
        }
        for (handle, v) in h.proxy.iter().zip(c.proxy.iter()) {
            handle.absolute(*v);
        }
        for (handle, v) in h.auth_failures.iter().zip(c.auth_failures.iter()) {
            handle.absolute(*v);
        }
        for (handle, v) in h.filter_rejects.iter().zip(c.filter_rejects.iter()) {
            handle.absolute(*v);
        }
        h.connections.set(gauges.connections as f64);
        h.handshakes.set(gauges.handshakes as f64);
        if let Some(bytes) = gauges.partial_bytes {
            h.partial_bytes.set(bytes as f64);
        }
        h.subscriptions.set(gauges.subscriptions as f64);
        h.patterns.set(gauges.patterns as f64);
        h.topics.set(gauges.topics as f64);
        h.filters.set(gauges.filters as f64);
        if let Some(d) = hub.deliveries.get(self.shard) {
            d.store(c.deliveries, Ordering::Relaxed);
        }
        if let Some(slot) = hub.latency.get(self.shard) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = self.latency.clone();
        }
    }
}

/// Process-wide metrics: the Prometheus registry and each shard's last histogram snapshot.
pub struct StatsHub {
    prometheus: PrometheusHandle,
    /// Written by a shard on flush, read on render; never touched per message.
    latency: Vec<Mutex<Latency>>,
    /// Each shard's deliveries as of its last flush (about once a second): the service
    /// manager's status line reads them without rendering the registry.
    deliveries: Vec<AtomicU64>,
    /// Each shard's timer ticks: a shard whose count stops moving is stuck (the watchdog).
    ticks: Vec<AtomicU64>,
}

impl StatsHub {
    /// Installs the global recorder; call once, before shards register their handles.
    pub fn install(shards: usize) -> Result<StatsHub, String> {
        let prometheus = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| format!("metrics recorder: {e}"))?;
        describe();
        Ok(StatsHub {
            prometheus,
            latency: (0..shards).map(|_| Mutex::default()).collect(),
            deliveries: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            ticks: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Shard `shard`'s loop ran its timer once more.
    #[inline]
    pub fn tick(&self, shard: usize) {
        if let Some(t) = self.ticks.get(shard) {
            t.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every shard's timer ticks so far.
    pub fn ticks(&self) -> Vec<u64> {
        self.ticks
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .collect()
    }

    /// Deliveries of all shards, as of their last statistics flush.
    pub fn deliveries(&self) -> u64 {
        self.deliveries
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum()
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = self.prometheus.render();
        let mut total = Latency::default();
        for slot in &self.latency {
            total.add(&slot.lock().unwrap_or_else(|p| p.into_inner()));
        }
        let name = "tickcast_publish_to_write_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from publish (frame built) to the write that put it on a \
             subscriber's socket.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, n) in total.buckets.iter().enumerate() {
            cumulative += n;
            if i + 1 < LATENCY_BUCKETS {
                // Bucket i holds latencies up to and including 2^i µs.
                let le = (1u64 << i) as f64 / 1e6;
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            }
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", total.sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {}", total.count);
        // Read at scrape time, not flushed by the shard: a stuck shard's count stops moving
        // while the rest of the process answers (alert on its rate).
        let name = "tickcast_shard_ticks_total";
        let _ = writeln!(
            out,
            "# HELP {name} Timer ticks of each shard's loop (every timeouts.tick_ms): flat while \
             the shard is stuck.\n# TYPE {name} counter"
        );
        for (shard, ticks) in self.ticks().iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {ticks}");
        }
        if let Some(rss) = crate::sys::resident_bytes() {
            let name = "tickcast_process_resident_memory_bytes";
            let _ = writeln!(
                out,
                "# HELP {name} Resident set size of the process (VmRSS), read at scrape \
                 time.\n# TYPE {name} gauge\n{name} {rss}"
            );
        }
        out
    }
}

/// The labelled per-shard counters and the gauges: (name, help).
const OTHER_SHARD_METRICS: &[(&str, &str)] = &[
    (
        "tickcast_serializations_total",
        "Data frames built, once per publish and wire format with a subscriber (encode once), by format.",
    ),
    (
        "tickcast_connections_closed_total",
        "Connections closed, by reason.",
    ),
    (
        "tickcast_slow_consumer_closes_total",
        "Connections closed as slow consumers (close 4008 or reset) for exceeding limits.write_queue_bytes_max.",
    ),
    (
        "tickcast_security_events_total",
        "Authentication, authorization and rate-limit decisions, by event.",
    ),
    ("tickcast_auth_failures_total", "Tokens refused, by reason."),
    (
        "tickcast_proxy_events_total",
        "Client addresses taken from trusted proxies (PROXY header, forwarded header) and PROXY headers refused, by event.",
    ),
    (
        "tickcast_filter_rejects_total",
        "Subscribes refused for their filter, by reason (malformed, a limits.filter_* bound, the shard's table full).",
    ),
];

const SHARD_GAUGES: &[(&str, &str)] = &[
    (
        "tickcast_handshakes",
        "Connections in their HTTP phase on this shard (limits.handshakes_per_shard_max).",
    ),
    (
        "tickcast_partial_bytes",
        "Bytes of partly arrived messages and requests held by the process (limits.partial_bytes_max).",
    ),
    (
        "tickcast_connections",
        "Open connections (HTTP and WebSocket).",
    ),
    (
        "tickcast_subscriptions",
        "(pattern, connection) subscription pairs.",
    ),
    (
        "tickcast_subscription_patterns",
        "Distinct subscribed patterns.",
    ),
    (
        "tickcast_topics",
        "Topics with a sequence counter on this shard.",
    ),
    (
        "tickcast_subscription_filters",
        "Distinct subscription filters held on this shard (limits.filters_per_shard_max).",
    ),
];

fn describe() {
    for (name, help) in SHARD_COUNTERS.iter().chain(OTHER_SHARD_METRICS) {
        metrics::describe_counter!(*name, *help);
    }
    for (name, help) in SHARD_GAUGES {
        metrics::describe_gauge!(*name, *help);
    }
}

/// One call site's count for [`log_sampled`].
#[derive(Debug, Default)]
pub struct Sampled {
    count: AtomicU64,
    /// When the last occurrence was (monotonic seconds).
    last_s: AtomicU64,
}

impl Sampled {
    pub const fn new() -> Sampled {
        Sampled {
            count: AtomicU64::new(0),
            last_s: AtomicU64::new(0),
        }
    }
}

/// A quiet spell this long (seconds) ends an episode: the next occurrence is logged as the
/// first of a new one, so a second outage is not hidden behind the count of the first.
pub const LOG_EPISODE_QUIET_S: u64 = 60;

/// For a log line that outside input (a broker's messages, an external publisher, a broker
/// outage under a publish load) can repeat at will: counts one occurrence and returns the
/// count of the episode so far when it is a power of two (1, 2, 4, …), the occurrences worth a
/// line. A flood of n costs log2(n) + 1 lines, each saying how many there were so far; the
/// metric beside it counts every one. An episode ends after `LOG_EPISODE_QUIET_S` without an
/// occurrence. The rule of the per-connection logs (`shard/proxy.rs`, `shard/accept.rs`), with
/// the count kept in a static per call site ([`crate::warn_sampled`]).
pub fn log_sampled(site: &Sampled, now_s: u64) -> Option<u64> {
    let last = site.last_s.swap(now_s, Ordering::Relaxed);
    if now_s.saturating_sub(last) >= LOG_EPISODE_QUIET_S {
        site.count.store(0, Ordering::Relaxed);
    }
    let n = site.count.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    n.is_power_of_two().then_some(n)
}

/// `tracing::warn!` for a line that outside input can repeat at will: logged on the 1st, 2nd,
/// 4th, 8th, … occurrence at this call site, with the field `count` (occurrences so far in
/// this episode, process-wide). See [`stats::log_sampled`](crate::stats::log_sampled).
#[macro_export]
macro_rules! warn_sampled {
    ($($arg:tt)+) => {{
        static SITE: $crate::stats::Sampled = $crate::stats::Sampled::new();
        let now_s = $crate::frame::monotonic_ns() / 1_000_000_000;
        if let Some(count) = $crate::stats::log_sampled(&SITE, now_s) {
            ::tracing::warn!(count, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_log_line_is_sampled_at_powers_of_two() {
        let site = Sampled::new();
        let start = 1_000;
        let logged: Vec<u64> = (0..100)
            .filter_map(|i| log_sampled(&site, start + i / 10))
            .collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64]);
        // Still the same episode just short of the quiet spell; a new one after it.
        let later = start + 9 + LOG_EPISODE_QUIET_S - 1;
        assert_eq!(log_sampled(&site, later), None);
        assert_eq!(log_sampled(&site, later + LOG_EPISODE_QUIET_S), Some(1));
        assert_eq!(log_sampled(&site, later + LOG_EPISODE_QUIET_S), Some(2));
    }

    /// Every metric a shard registers has its line in docs/METRICS.md.
    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../docs/METRICS.md");
        let names = SHARD_COUNTERS
            .iter()
            .chain(OTHER_SHARD_METRICS)
            .chain(SHARD_GAUGES)
            .map(|(n, _)| *n)
            .chain(["tickcast_publish_to_write_seconds"]);
        for name in names {
            assert!(
                doc.contains(&format!("`{name}")),
                "{name} is not in docs/METRICS.md"
            );
        }
    }

    #[test]
    fn latency_buckets_are_powers_of_two_microseconds() {
        let mut l = Latency::default();
        l.record(1_000); // exactly 1 µs -> le 1 µs
        l.record(1_001); // just over -> le 2 µs
        l.record(4_000); // exactly 4 µs -> le 4 µs
        l.record(u64::MAX / 2); // clamps to the last (+Inf only) bucket
        assert_eq!(l.buckets[0], 1);
        assert_eq!(l.buckets[1], 1);
        assert_eq!(l.buckets[2], 1);
        assert_eq!(l.buckets[LATENCY_BUCKETS - 1], 1);
        assert_eq!(l.count, 4);
    }
}
