//! Metrics. Hot-path counting is plain `u64` arithmetic on shard-owned structs: no atomics, no
//! locks per message. A shard publishes its counters into the `metrics` registry (one atomic
//! store per metric) on its timer tick and whenever `/metrics` is scraped (the scraping shard
//! asks every shard to flush first, so a scrape is exact).
//!
//! The publish-to-write histogram is kept per shard in fixed power-of-two buckets (one array
//! increment per delivery) and rendered at scrape time: `metrics`' own histograms store every
//! sample, which would be a per-delivery allocation-and-atomic cost.

use std::{fmt::Write as _, sync::Mutex};

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
}

impl CloseReason {
    pub const ALL: [CloseReason; 16] = [
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

/// Per-shard counters; the hot path increments these directly.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Publishes accepted at ingest (client op, HTTP, demo feed), counted where they enter.
    pub publishes: u64,
    /// Data frames built (encode once: must equal `publishes`).
    pub serializations: u64,
    /// Data frames completely written to a subscriber socket.
    pub deliveries: u64,
    pub bytes_out: u64,
    /// `sendmsg` calls that wrote data (deliveries / writes = frames coalesced per write).
    pub writes: u64,
    pub messages_in: u64,
    pub accepted: u64,
    pub closed: [u64; CloseReason::ALL.len()],
    pub http_requests: u64,
    /// Mesh messages that found a peer's ring full and waited in the local spill.
    pub mesh_spills: u64,
    /// Mesh messages dropped because the spill was full too.
    pub mesh_drops: u64,
    /// Connections refused for `limits.connections_max` / `connections_per_ip_max` /
    /// `handshakes_per_shard_max`.
    pub limit_rejects: u64,
    /// Publishes refused for `limits.topics_per_shard_max`.
    pub topic_limit_rejects: u64,
    pub security: [u64; SecEvent::ALL.len()],
    /// `gap` messages sent (recovery could not cover what a client missed).
    pub gaps: u64,
    /// Frames replayed from history to recovering subscribers.
    pub replayed: u64,
    /// Publishes answered as duplicates of an earlier one with the same `idem` key.
    pub duplicates: u64,
    /// Cluster: broker messages a topic's owner had already delivered (dropped).
    pub cluster_duplicates: u64,
    /// Cluster: holes in a topic's broker stream (each started a repair fetch).
    pub cluster_holes: u64,
    /// Cluster: broker messages far beyond anything the broker has (forged or corrupt).
    pub cluster_implausible: u64,
    /// Frames a subscriber did not get because a newer frame of the topic replaced them
    /// (`conflate` queues, `throttled` delivery).
    pub conflated: u64,
    /// Frames dropped from a full lane (`drop_oldest`, or `conflate` with nothing to replace).
    pub dropped_oldest: u64,
    /// Tokens refused, by `AuthError::label`.
    pub auth_failures: [u64; crate::auth::AuthError::LABELS.len()],
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS connections that ended before their handshake completed (bad records, plain HTTP
    /// on the TLS port, handshake deadline, EOF).
    pub tls_handshake_failures: u64,
}

/// Per-shard gauges, set on flush.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub connections: u64,
    pub subscriptions: u64,
    pub patterns: u64,
    pub topics: u64,
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
    publishes: Counter,
    serializations: Counter,
    deliveries: Counter,
    bytes_out: Counter,
    writes: Counter,
    messages_in: Counter,
    accepted: Counter,
    closed: Vec<Counter>,
    slow_consumer_closes: Counter,
    http_requests: Counter,
    mesh_spills: Counter,
    mesh_drops: Counter,
    limit_rejects: Counter,
    topic_limit_rejects: Counter,
    security: Vec<Counter>,
    auth_failures: Vec<Counter>,
    gaps: Counter,
    replayed: Counter,
    duplicates: Counter,
    cluster_duplicates: Counter,
    cluster_holes: Counter,
    cluster_implausible: Counter,
    conflated: Counter,
    dropped_oldest: Counter,
    tls_handshakes: Counter,
    tls_handshake_failures: Counter,
    connections: Gauge,
    subscriptions: Gauge,
    patterns: Gauge,
    topics: Gauge,
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
            publishes: c("tickcast_publishes_total"),
            serializations: c("tickcast_serializations_total"),
            deliveries: c("tickcast_deliveries_total"),
            bytes_out: c("tickcast_bytes_out_total"),
            writes: c("tickcast_writes_total"),
            messages_in: c("tickcast_messages_in_total"),
            accepted: c("tickcast_connections_accepted_total"),
            closed: CloseReason::ALL
                .iter()
                .map(|r| {
                    metrics::counter!("tickcast_connections_closed_total",
                        "shard" => label.clone(), "reason" => r.as_str())
                })
                .collect(),
            slow_consumer_closes: c("tickcast_slow_consumer_closes_total"),
            http_requests: c("tickcast_http_requests_total"),
            mesh_spills: c("tickcast_mesh_spills_total"),
            mesh_drops: c("tickcast_mesh_drops_total"),
            limit_rejects: c("tickcast_limit_rejects_total"),
            topic_limit_rejects: c("tickcast_topic_limit_rejects_total"),
            gaps: c("tickcast_gaps_total"),
            replayed: c("tickcast_replayed_total"),
            duplicates: c("tickcast_duplicate_publishes_total"),
            cluster_duplicates: c("tickcast_cluster_duplicates_total"),
            cluster_holes: c("tickcast_cluster_holes_total"),
            cluster_implausible: c("tickcast_cluster_implausible_total"),
            conflated: c("tickcast_conflated_total"),
            dropped_oldest: c("tickcast_dropped_oldest_total"),
            security: SecEvent::ALL
                .iter()
                .map(|e| {
                    metrics::counter!("tickcast_security_events_total",
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
            tls_handshakes: c("tickcast_tls_handshakes_total"),
            tls_handshake_failures: c("tickcast_tls_handshake_failures_total"),
            connections: g("tickcast_connections"),
            subscriptions: g("tickcast_subscriptions"),
            patterns: g("tickcast_subscription_patterns"),
            topics: g("tickcast_topics"),
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
        h.publishes.absolute(c.publishes);
        h.serializations.absolute(c.serializations);
        h.deliveries.absolute(c.deliveries);
        h.bytes_out.absolute(c.bytes_out);
        h.writes.absolute(c.writes);
        h.messages_in.absolute(c.messages_in);
        h.accepted.absolute(c.accepted);
        for (handle, v) in h.closed.iter().zip(c.closed.iter()) {
            handle.absolute(*v);
        }
        h.slow_consumer_closes
            .absolute(c.closed[CloseReason::SlowConsumer as usize]);
        h.http_requests.absolute(c.http_requests);
        h.mesh_spills.absolute(c.mesh_spills);
        h.mesh_drops.absolute(c.mesh_drops);
        h.limit_rejects.absolute(c.limit_rejects);
        h.topic_limit_rejects.absolute(c.topic_limit_rejects);
        h.gaps.absolute(c.gaps);
        h.replayed.absolute(c.replayed);
        h.duplicates.absolute(c.duplicates);
        h.cluster_duplicates.absolute(c.cluster_duplicates);
        h.cluster_holes.absolute(c.cluster_holes);
        h.cluster_implausible.absolute(c.cluster_implausible);
        h.conflated.absolute(c.conflated);
        h.dropped_oldest.absolute(c.dropped_oldest);
        for (handle, v) in h.security.iter().zip(c.security.iter()) {
            handle.absolute(*v);
        }
        for (handle, v) in h.auth_failures.iter().zip(c.auth_failures.iter()) {
            handle.absolute(*v);
        }
        h.tls_handshakes.absolute(c.tls_handshakes);
        h.tls_handshake_failures.absolute(c.tls_handshake_failures);
        h.connections.set(gauges.connections as f64);
        h.subscriptions.set(gauges.subscriptions as f64);
        h.patterns.set(gauges.patterns as f64);
        h.topics.set(gauges.topics as f64);
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
        })
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
        out
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!("tickcast_publishes_total", "Publishes accepted at ingest.");
    describe_counter!(
        "tickcast_serializations_total",
        "Data frames built, once per publish sequenced (encode once)."
    );
    describe_counter!(
        "tickcast_deliveries_total",
        "Data frames fully written to subscribers."
    );
    describe_counter!(
        "tickcast_bytes_out_total",
        "Bytes written to client sockets."
    );
    describe_counter!(
        "tickcast_writes_total",
        "sendmsg calls that wrote to client sockets."
    );
    describe_counter!(
        "tickcast_messages_in_total",
        "WebSocket messages received from clients, control frames (ping, pong, close) included."
    );
    describe_counter!(
        "tickcast_connections_accepted_total",
        "TCP connections accepted."
    );
    describe_counter!(
        "tickcast_connections_closed_total",
        "Connections closed, by reason."
    );
    describe_counter!(
        "tickcast_slow_consumer_closes_total",
        "Connections closed with 4008 for exceeding limits.write_queue_bytes_max."
    );
    describe_counter!(
        "tickcast_http_requests_total",
        "Complete HTTP requests handled, WebSocket upgrade requests included."
    );
    describe_counter!(
        "tickcast_mesh_spills_total",
        "Cross-shard messages held back because the peer's ring was full."
    );
    describe_counter!(
        "tickcast_mesh_drops_total",
        "Cross-shard messages dropped because ring and spill (mesh.spill_max) were full."
    );
    describe_counter!(
        "tickcast_limit_rejects_total",
        "Connections refused by connection limits (HTTP 503/429)."
    );
    describe_counter!(
        "tickcast_topic_limit_rejects_total",
        "Publishes refused by limits.topics_per_shard_max."
    );
    describe_counter!(
        "tickcast_gaps_total",
        "gap messages sent: a subscriber's since could not be covered by history."
    );
    describe_counter!(
        "tickcast_duplicate_publishes_total",
        "Publishes not published again: an earlier one with the same idem key got their seq."
    );
    describe_counter!(
        "tickcast_conflated_total",
        "Frames a subscriber skipped because a newer frame of the same topic replaced them \
         (conflate queues, throttled delivery)."
    );
    describe_counter!(
        "tickcast_dropped_oldest_total",
        "Frames dropped from a subscriber's full lane (drop_oldest; conflate with nothing to replace)."
    );
    describe_counter!(
        "tickcast_replayed_total",
        "Frames replayed from history to recovering subscribers."
    );
    describe_counter!(
        "tickcast_cluster_duplicates_total",
        "Cluster: broker messages a topic's owner had already delivered (dropped)."
    );
    describe_counter!(
        "tickcast_cluster_holes_total",
        "Cluster: holes seen in a topic's broker stream (each repaired from history or reported as a gap)."
    );
    describe_counter!(
        "tickcast_cluster_implausible_total",
        "Cluster: broker messages far beyond anything the broker has (forged or corrupt): dropped."
    );
    describe_counter!(
        "tickcast_security_events_total",
        "Authentication, authorization and rate-limit decisions, by event."
    );
    describe_counter!("tickcast_auth_failures_total", "Tokens refused, by reason.");
    describe_counter!(
        "tickcast_tls_handshakes_total",
        "TLS handshakes completed on the TLS listener."
    );
    describe_counter!(
        "tickcast_tls_handshake_failures_total",
        "TLS connections that ended before their handshake completed."
    );
    describe_gauge!(
        "tickcast_connections",
        "Open connections (HTTP and WebSocket)."
    );
    describe_gauge!(
        "tickcast_subscriptions",
        "(pattern, connection) subscription pairs."
    );
    describe_gauge!(
        "tickcast_subscription_patterns",
        "Distinct subscribed patterns."
    );
    describe_gauge!(
        "tickcast_topics",
        "Topics with a sequence counter on this shard."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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
