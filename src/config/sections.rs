//! The sections of the configuration, each with its defaults (the reasons for them are in the
//! key table, `keys/`, and docs/CONFIG.md).

use serde::{Deserialize, Serialize};

/// One topic class (`[[topics]]`, docs/PROTOCOL.md "Recovery").
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TopicClass {
    /// Topics this class applies to (topic pattern syntax).
    pub pattern: String,
    /// Frames of history kept per topic for recovery (0 = none). Each kept frame is the
    /// already-encoded frame shared with subscribers: memory is about
    /// `history_size × frame size` per topic.
    pub history_size: usize,
    /// Frames older than this leave the history (0 = only `history_size` bounds it).
    pub history_ttl_s: u64,
    /// A new subscriber to an exact topic first receives the topic's last message.
    pub cache: bool,
    /// Outbound lane of this class's frames: a higher lane is written first.
    pub lane: Lane,
    /// What happens when a subscriber's lane is full (or, for `conflate`, past
    /// `limits.conflate_after_bytes`).
    pub slow_policy: SlowPolicy,
    /// When frames are written: at once, after a coalescing window, or at most N per second
    /// per subscriber (latest value).
    pub delivery: Delivery,
    /// `delivery = "batched"`: frames wait this long for a fuller write (a 1 ms pacer checks
    /// it, so under load a little longer).
    pub batch_window_ms: u64,
    /// `delivery = "throttled"`: messages per second per subscriber and topic.
    pub throttle_per_s: u32,
    /// Presence: authenticated connections subscribing to (unsubscribing from, leaving) an
    /// exact topic of this class publish `join` (`leave`) events to `presence.<topic>`.
    pub presence: bool,
    /// permessage-deflate level of this class's frames (0: never compressed; 1..=9); unset:
    /// `deflate.level`. E.g. 0 for topics whose payloads do not compress (already compressed,
    /// random), so no CPU is spent trying.
    pub deflate_level: Option<u8>,
}

/// Outbound lanes, highest priority first. `control` (acks, errors, pongs, pings) is not a
/// class lane: it is where replies go.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Alert,
    Private,
    #[default]
    Data,
}

/// Slow-consumer policy of a topic class (docs/PROTOCOL.md "Slow consumers").
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SlowPolicy {
    /// Close with 4008 when the lane is full (the client reconnects and recovers).
    #[default]
    Disconnect,
    /// Past `limits.conflate_after_bytes`, keep only the newest unsent frame per topic.
    Conflate,
    /// When the lane is full, drop its oldest unsent frames.
    DropOldest,
}

/// Delivery strategy of a topic class.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    Immediate,
    Batched,
    Throttled,
}

/// Which io driver a shard runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring or fail to start.
    IoUring,
    /// monoio's legacy epoll driver.
    Epoll,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Address every shard listens on (SO_REUSEPORT). Loopback by default so a first run
    /// exposes nothing; set `0.0.0.0:8080` to serve the network.
    pub listen: String,
    /// Number of shards (threads, one per core). 0 = one per core available to the process.
    pub shards: usize,
    /// Pin each shard to its own core (core_affinity). Off only when sharing cores on purpose.
    pub pin_cores: bool,
    pub driver: DriverKind,
    /// io_uring submission queue entries per shard. 4096 lets a shard submit a large fan-out
    /// round in one `io_uring_enter` without the queue filling.
    pub uring_entries: u32,
    /// Listen backlog per shard. Handshake bursts of thousands per second overflow the
    /// default 1024 (seen with tokio-tungstenite on this class of machine); the kernel caps it
    /// at net.core.somaxconn.
    pub listen_backlog: u32,
    /// Adds `GET /echo` (echo every message; conformance testing only).
    pub echo: bool,
    /// Runs the synthetic market-data publisher (see `[demo]`).
    pub demo_feed: bool,
    /// Bind beside a tickcast already listening on `listen` (SO_REUSEPORT) instead of refusing
    /// to start: the new half of a zero-downtime restart (the old process is then drained
    /// with SIGUSR2).
    pub takeover: bool,
    /// Unsent bytes the kernel may queue per client socket (TCP_NOTSENT_LOWAT; 0 = the
    /// kernel's default, no cap). Beyond it the socket takes no more, so a backlog stays in
    /// tickcast's own lanes, where priority, conflation and the queue bounds act on it,
    /// instead of becoming megabytes of stale data in the kernel (measured: a stalled client
    /// piled up ~2.8 MB there before tickcast saw it, perf/README.md). 128 KiB is many rounds
    /// of a healthy subscriber's frames.
    pub tcp_notsent_lowat_bytes: u32,
    /// Peers (IP addresses, CIDR blocks) whose word on the client's address is taken: the
    /// PROXY protocol header they send, the forwarded header of their requests. Empty: every
    /// peer is the client, whatever its headers say.
    pub trusted_proxies: Vec<String>,
    /// A trusted peer may begin its connections with a PROXY protocol header (v1 or v2), on
    /// the plain and the TLS listener; a connection without one is read as usual.
    pub proxy_protocol: bool,
    /// Which header of a trusted peer's requests names the client.
    pub forwarded_header: ForwardedHeader,
}

/// `server.forwarded_header`: the header the proxies in front write (a proxy passes the other
/// one on from the client as it came, so it is not read).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx `$proxy_add_x_forwarded_for`, HAProxy `option forwardfor`,
    /// cloud HTTP load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=`.
    Forwarded,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            shards: 0,
            pin_cores: true,
            driver: DriverKind::Auto,
            uring_entries: 4096,
            listen_backlog: 4096,
            echo: false,
            demo_feed: false,
            takeover: false,
            tcp_notsent_lowat_bytes: 128 * 1024,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            forwarded_header: ForwardedHeader::XForwardedFor,
        }
    }
}

/// Bounds on what a client can make the server hold. Units last in every name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open connections per process (WebSocket and plain HTTP both count). A process holds at
    /// most RLIMIT_NOFILE descriptors; 100k is what the budget of 1 KiB each makes cheap.
    /// Checked at each WebSocket upgrade (over: HTTP 503); plain HTTP requests (`/health`,
    /// `/metrics`, `/v1/publish`) are always answered.
    pub connections_max: usize,
    /// Open connections per client IP (WebSocket and plain HTTP both count). One NAT'd office
    /// of bots stays far below 10k, one abusive host cannot take the whole process. Checked at
    /// each WebSocket upgrade (over: HTTP 429).
    pub connections_per_ip_max: usize,
    /// Connections still in the HTTP/handshake phase per shard. Beyond this, new TCP
    /// connections are closed at once: a flood of half-open handshakes cannot pile up.
    pub handshakes_per_shard_max: usize,
    /// Bytes of one HTTP request head. 8 KiB is what common servers allow (nginx, Node).
    pub http_header_bytes_max: usize,
    /// Header lines in one HTTP request head; browsers send about 15.
    pub http_headers_max: usize,
    /// Bytes of one WebSocket message from a client (after reassembly) and of one HTTP body.
    /// Client ops are small; 64 KiB leaves room for large publishes. Over: close 1009 / 413.
    pub message_bytes_max: usize,
    /// Bytes of one message on the `/echo` conformance route (Autobahn sends up to 16 MiB).
    pub echo_message_bytes_max: usize,
    /// Bytes of the `data` of one publish. Every queued copy counts against subscribers'
    /// write queues, so a 1 MiB queue holds at least 32 maximal messages. Over:
    /// `message_too_large`, the connection stays open.
    pub publish_data_bytes_max: usize,
    /// Subscriptions one connection may hold (Binance allows 1024 streams, Centrifugo 128).
    pub subscriptions_per_conn_max: usize,
    /// Topics in one subscribe or unsubscribe request.
    pub topics_per_request_max: usize,
    /// Bytes of one subscription filter's JSON text. A filter of a few fields is under 200
    /// bytes, an `in` list of 128 symbols about 2 KiB; a shard keeps each distinct filter, so
    /// this times `filters_per_shard_max` bounds what filters can hold. Over: `bad_request`.
    pub filter_bytes_max: usize,
    /// Nesting of `and`/`or` in a filter (the filter object is level 1). Three levels of
    /// `and`/`or` inside it express any hand-written filter; the bound keeps evaluation's
    /// recursion shallow. Over: `bad_request`.
    pub filter_depth_max: usize,
    /// Tests (a field and one operator) in one filter. Evaluation costs about one test's
    /// time each, for every distinct filter of a topic's subscribers, per message. Over:
    /// `bad_request`.
    pub filter_clauses_max: usize,
    /// Values in one `in` list of a filter (looked up by binary search). Over: `bad_request`.
    pub filter_in_max: usize,
    /// Distinct filters one shard holds (identical filters are held once). Each is evaluated
    /// once per message of a topic it has a subscriber of, so this bounds both the memory and
    /// the per-message CPU that clients' filters can take. Over: `capacity`.
    pub filters_per_shard_max: usize,
    /// Bytes of frames queued for one connection before it is closed as a slow consumer
    /// (4008). 1 MiB is seconds of a busy market-data stream; beyond it a client is not
    /// keeping up and would only see ever staler data.
    pub write_queue_bytes_max: usize,
    /// Topics with a sequence counter per shard (each shard owns a share of all topics).
    /// Bounds memory against publishers inventing topics. Over: `rate_limited`.
    pub topics_per_shard_max: usize,
    /// WebSocket upgrade attempts per second per client IP (token bucket, shared by all
    /// shards; 0 = off). Over: HTTP 429 with `Retry-After`. 10/s with a burst of 100 lets a
    /// NAT'd office reconnect its bots at once and caps a reconnect loop (Binance allows 300
    /// per 5 minutes).
    pub connect_rate_per_ip_per_s: u32,
    /// Burst of `connect_rate_per_ip_per_s`.
    pub connect_burst_per_ip: u32,
    /// Open WebSocket connections per authenticated user or API key, over all shards (hashed
    /// counters: a collision only makes it stricter). A user with more than 100 sockets is a
    /// bug or abuse. Over: HTTP 429 (token in the request) or `rate_limited` + close 4029
    /// (`auth` op).
    pub connections_per_user_max: usize,
    /// Messages per second one connection may send (ops, pings; 0 = off). 20/s with a burst
    /// of 40 is four times Binance's 5/s: ample for subscribe churn, useless for flooding.
    /// Over: error `rate_limited`, the message is not processed. API keys may override it.
    pub client_messages_per_s: u32,
    /// Burst of `client_messages_per_s`.
    pub client_messages_burst: u32,
    /// Bytes of control frames (acks, errors, pongs) queued for one connection. While replies
    /// to its own requests hold this much, the server stops reading the connection (it is
    /// waiting for the client to read), and resumes once half of it is written: a client's own
    /// requests never make it a slow consumer. 64 KiB is hundreds of replies. Server-initiated
    /// control frames (pings, broadcasts) close it with 4008 only at four times this.
    pub control_queue_bytes_max: usize,
    /// Bytes of messages and HTTP requests that arrived in part (a frame waiting for its end,
    /// fragments being reassembled), over the whole process. A client may pin at most one
    /// message's worth for at most `timeouts.message_ms`; this bounds all of them together
    /// (100k connections × 64 KiB would be 6.4 GB). 64 MiB is a thousand maximal messages in
    /// flight at once. Over: the connection that would pass it is closed with 1013 (HTTP 503).
    pub partial_bytes_max: usize,
    /// Bytes of `alert`-lane frames queued for one connection (risk alerts, notices).
    pub alert_queue_bytes_max: usize,
    /// Bytes of `private`-lane frames queued for one connection (orders, positions).
    pub private_queue_bytes_max: usize,
    /// A `conflate` topic's subscriber whose lane holds more than this keeps only the newest
    /// unsent frame per topic. A subscriber keeping up never has 64 KiB waiting.
    pub conflate_after_bytes: usize,
    /// `idem` keys remembered per topic for publish deduplication. A publisher retries a
    /// lost ack within seconds; 1024 keys cover that at 100 keyed publishes/s per topic, for
    /// about 150 KiB per busy topic at most.
    pub idem_keys_per_topic: usize,
    /// Messages refused in a row for the rate limit before the connection is closed with
    /// 4029: a client that ignores 40 `rate_limited` errors is abusive, not unlucky.
    pub client_rate_limited_close_after: u32,
}

impl Limits {
    /// The bounds a subscription filter is parsed within.
    pub fn filter(&self) -> crate::pubsub::filter::FilterLimits {
        crate::pubsub::filter::FilterLimits {
            bytes_max: self.filter_bytes_max,
            depth_max: self.filter_depth_max,
            clauses_max: self.filter_clauses_max,
            in_max: self.filter_in_max,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_max: 100_000,
            connections_per_ip_max: 10_000,
            handshakes_per_shard_max: 4096,
            http_header_bytes_max: 8 * 1024,
            http_headers_max: 64,
            message_bytes_max: 64 * 1024,
            echo_message_bytes_max: 16 * 1024 * 1024,
            publish_data_bytes_max: 32 * 1024,
            subscriptions_per_conn_max: 100,
            topics_per_request_max: 100,
            filter_bytes_max: 4096,
            filter_depth_max: 4,
            filter_clauses_max: 32,
            filter_in_max: 128,
            filters_per_shard_max: 4096,
            write_queue_bytes_max: 1024 * 1024,
            topics_per_shard_max: 1_000_000,
            connect_rate_per_ip_per_s: 10,
            connect_burst_per_ip: 100,
            connections_per_user_max: 100,
            client_messages_per_s: 20,
            client_messages_burst: 40,
            client_rate_limited_close_after: 40,
            idem_keys_per_topic: 1024,
            control_queue_bytes_max: 64 * 1024,
            partial_bytes_max: 64 * 1024 * 1024,
            alert_queue_bytes_max: 256 * 1024,
            private_queue_bytes_max: 1024 * 1024,
            conflate_after_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// A connection must complete its HTTP request / upgrade within this. 5 s covers a slow
    /// mobile link; slowloris clients are cut after it.
    pub handshake_ms: u64,
    /// The server pings every connection this often (RFC 6455 ping). 20 s keeps NAT and load
    /// balancer mappings alive (most drop idle flows after 30-60 s).
    pub ping_interval_s: u64,
    /// A connection that sent nothing (not even a pong) for this long is closed. Three ping
    /// intervals: a client misses two pings before it is dropped.
    pub idle_s: u64,
    /// After the server sends a close frame, how long it waits for the client's close frame
    /// before dropping the TCP connection.
    pub close_ms: u64,
    /// A WebSocket message that has started arriving must be complete within this (a frame
    /// waiting for the rest of its bytes, a fragmented message waiting for its last fragment).
    /// A client on a slow link sends 64 KiB in well under a second; a stalled one pins its
    /// bytes no longer than 10 s. Over: close 1008.
    pub message_ms: u64,
    /// On SIGTERM/SIGINT: time for clients to receive close 1001 before the process exits.
    /// systemd's default stop timeout is 90 s; 5 s is a quick restart.
    pub shutdown_grace_s: u64,
    /// On SIGUSR2 (drain): the time over which the WebSocket clients are closed with 1012, a
    /// share every tick, so they reconnect (to the process that took over) gradually: 30 s
    /// spreads 100k reconnects to ~3.3k/s, well under one core's handshake rate.
    pub drain_s: u64,
    /// Coarse timer tick of each shard (idle, ping, handshake deadlines are checked on it).
    pub tick_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake_ms: 5_000,
            ping_interval_s: 20,
            idle_s: 60,
            close_ms: 2_000,
            message_ms: 10_000,
            shutdown_grace_s: 5,
            drain_s: 30,
            tick_ms: 250,
        }
    }
}

/// permessage-deflate (RFC 7692, docs/PROTOCOL.md "Compression"): each frame is compressed
/// once and the same bytes go to every connection that negotiated it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Deflate {
    /// Accept a client's permessage-deflate offer. Browsers always offer it.
    pub enabled: bool,
    /// Compression level, zlib's scale 1 (fastest) ..= 9 (smallest). Paid once per frame,
    /// not per subscriber.
    pub level: u8,
    /// Frames with a shorter payload are sent plain (RSV1 off: RFC 7692 chooses per message).
    /// A deflate block of a short message saves little and costs the client an inflate.
    pub min_bytes: usize,
    /// A client message may inflate to at most this many times its compressed size (and
    /// never beyond `limits.message_bytes_max`): a bound on the work one small message can
    /// cause. Text that compresses better than 100:1 is not what clients send.
    pub inflate_ratio_max: u32,
}

impl Default for Deflate {
    fn default() -> Self {
        Self {
            enabled: true,
            level: 6,
            min_bytes: 128,
            inflate_ratio_max: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Mesh {
    /// Messages in flight towards one shard from all other shards together; each sender's
    /// lock-free ring holds `queue_len / shards` (at least 1024). At 64k, a shard can be ~30 ms
    /// behind peers sending it 2M frames/s before they spill. Rings are allocated at start:
    /// about `(shards + 1) × queue_len × 24` bytes in all.
    pub queue_len: usize,
    /// Messages a shard holds back locally when a peer's ring is full. Beyond this they are
    /// dropped and counted (`tickcast_mesh_drops_total`): a stuck shard cannot exhaust memory.
    pub spill_max: usize,
}

impl Default for Mesh {
    fn default() -> Self {
        Self {
            queue_len: 65_536,
            spill_max: 1_048_576,
        }
    }
}

/// Which engine carries publishes between nodes (docs/CLUSTER.md).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// One node: shards talk over the in-process mesh only.
    #[default]
    Memory,
    /// NATS with JetStream (sequence, history) and core subjects (live traffic).
    Nats,
    /// Redis: a Lua script sequences and appends to a Stream; Pub/Sub carries live traffic.
    Redis,
}

/// `[cluster]`: many nodes, one topic space, over a broker (docs/CLUSTER.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    pub engine: Engine,
    /// The broker: `nats://host:port` or `redis://host:port[/db]`. Empty = the engine's
    /// default on loopback (nats://127.0.0.1:4222, redis://127.0.0.1:6379). NATS: several
    /// servers of one NATS cluster, separated by commas; a node also follows the servers the
    /// cluster announces.
    pub url: String,
    /// This node's name in the cluster (`/v1/cluster`, `origin` of its publishes). Empty = a
    /// random one per start (`n-` + 8 hex digits): a restarted node is a new node.
    pub node_id: String,
    /// Prefix of every subject, channel and key tickcast uses on the broker, so several
    /// clusters (or other applications) can share one broker.
    pub prefix: String,
    /// How often a node announces itself (and its connection count) to the others.
    pub heartbeat_ms: u64,
    /// A node not heard from for this long is dead: it leaves `/v1/cluster`, and its
    /// connections leave cluster-wide presence and `/v1/online`. 3 heartbeats: one lost
    /// heartbeat never declares a node dead.
    pub node_ttl_ms: u64,
    /// Reconnect backoff after the broker is lost (or unreachable at start): starts here and
    /// doubles up to `reconnect_max_ms`, with jitter.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// A publish not confirmed by the broker within this time gets an error (the message may
    /// still have been published: retry with the same `idem` key).
    pub publish_timeout_ms: u64,
    /// Publishes waiting for the broker, per node. Beyond it a publish is refused at once
    /// with `rate_limited` (counted in `tickcast_cluster_publish_rejects_total`): a stalled
    /// broker cannot grow the node's memory.
    pub publish_queue_max: usize,
    /// Broker messages waiting for a busy shard, per shard. Beyond it they are dropped and
    /// counted; the topic's owner sees the hole and repairs it from the broker's history.
    pub inbound_queue_max: usize,
    /// Cluster-wide queries (`/v1/online`, `/v1/presence`, `/v1/cluster`) wait this long for
    /// the other nodes' answers; a node that does not answer in time is left out (and named).
    pub query_timeout_ms: u64,
    /// NATS: JetStream storage of the history stream, `file` (survives a broker restart) or
    /// `memory`.
    pub nats_storage: String,
    /// NATS: the history stream's size bound (`max_bytes`). Per topic it keeps the largest
    /// `history_size` of any class (at least 1: the last message carries the topic's
    /// sequence number and epoch).
    pub nats_stream_max_bytes: u64,
    /// NATS: replicas of the history stream (JetStream's `num_replicas`): 1 on a single
    /// server; 3 on a cluster of NATS servers keeps the stream (and so publishing) through the
    /// loss of one of them.
    pub nats_replicas: usize,
    /// NATS: how long JetStream remembers an `idem` key (its duplicate window).
    pub idem_window_s: u64,
    /// NATS: who reads the live messages. `shard`: shard 0 holds its own connection to the
    /// broker for them (no thread hop per message); `bridge`: the bridge thread's async-nats
    /// client, like every other broker operation.
    pub nats_live_reader: String,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            engine: Engine::Memory,
            url: String::new(),
            node_id: String::new(),
            prefix: "tc".into(),
            heartbeat_ms: 1000,
            node_ttl_ms: 3000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5000,
            publish_timeout_ms: 5000,
            publish_queue_max: 65_536,
            inbound_queue_max: 65_536,
            query_timeout_ms: 1000,
            nats_storage: "file".into(),
            nats_stream_max_bytes: 1 << 30,
            nats_replicas: 1,
            idem_window_s: 120,
            nats_live_reader: "shard".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Demo {
    /// Trade and best-bid/offer messages per second the demo feed publishes in total; one-minute
    /// kline updates come on top (one per symbol per second).
    pub rate_per_s: u64,
    /// Symbols; empty = 20 built-in crypto pairs.
    pub symbols: Vec<String>,
    /// Payload shapes: tickcast's compact ones, or Binance's events (for Binance connectors).
    pub format: DemoFormat,
}

/// `demo.format`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DemoFormat {
    #[default]
    Tickcast,
    Binance,
}

impl Default for Demo {
    fn default() -> Self {
        Self {
            rate_per_s: 200,
            symbols: Vec::new(),
            format: DemoFormat::Tickcast,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// tracing filter, e.g. `info` or `tickcast=debug`. `RUST_LOG` wins when set.
    pub level: String,
    /// One line per event: readable text, or one JSON object for log collectors.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `2026-12-05T01:00:00.000000Z  INFO target: message key=value`; ANSI colour only when
    /// stderr is a terminal and `NO_COLOR` is unset.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields.message`, fields).
    Json,
}

/// The TLS (`wss://`) listener, beside the plain one. See docs/TLS.md.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// Address of the TLS listener (SO_REUSEPORT, one per shard, like `server.listen`).
    /// Empty = no TLS listener (the default).
    pub listen: String,
    /// PEM certificate chain, leaf first. Required when `listen` is set; re-read on SIGHUP.
    pub cert_file: String,
    /// PEM private key (PKCS#8, RSA or EC). Required when `listen` is set; re-read on SIGHUP.
    pub key_file: String,
}

/// Who may call `/health` and `/metrics`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndpointAccess {
    /// Anyone.
    Open,
    /// Clients on a loopback address without a token; others need an admin token.
    Loopback,
    /// Admin token always.
    Admin,
}

/// `[auth]`: tokens, keys, anonymous rights (docs/SECURITY.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Connections without a token are accepted as anonymous. When false, a connection must
    /// authenticate (token at upgrade or `auth` op within `auth_timeout_ms`) before any op.
    pub allow_anonymous: bool,
    /// Patterns anonymous connections may subscribe to. Public market data only by default:
    /// private topics (`user.>`, orders, positions) need a token.
    pub anonymous_subs: Vec<String>,
    /// Patterns anonymous connections may publish to. None: publishing moves money.
    pub anonymous_pubs: Vec<String>,
    /// Time to send the `auth` op when `allow_anonymous` is false (close 4001 after it).
    pub auth_timeout_ms: u64,
    /// After a token expires: time to send a fresh one with the `auth` op before close 4001.
    /// 25 s is Centrifugo's default; a client refreshing on the `unauthorized` error needs
    /// one round trip to its token issuer.
    pub refresh_grace_s: u64,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub jwt_leeway_s: u64,
    /// JWTs must carry `exp` (a token that never expires cannot be revoked by time).
    pub jwt_require_exp: bool,
    /// Required `iss` of JWTs; empty = not checked.
    pub jwt_issuer: String,
    /// Required `aud` of JWTs; empty = not checked.
    pub jwt_audience: String,
    /// Access to `/health` and `/metrics`.
    pub health_metrics: EndpointAccess,
    /// `Origin` values browsers may connect from (exact, or `https://*.example.com`); empty =
    /// any. Requests without `Origin` (non-browser clients) are not affected.
    pub allowed_origins: Vec<String>,
    /// JWT verification keys.
    pub jwt_keys: Vec<JwtKeyConfig>,
    /// API keys, by SHA-256 (`tickcast hash-key`).
    pub api_keys: Vec<ApiKeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            anonymous_subs: [
                "trades.>",
                "bbo.>",
                "kline.>",
                "ticker.>",
                "public.>",
                "binance.>",
            ]
            .map(String::from)
            .to_vec(),
            anonymous_pubs: Vec::new(),
            auth_timeout_ms: 5_000,
            refresh_grace_s: 25,
            jwt_leeway_s: 5,
            jwt_require_exp: true,
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            health_metrics: EndpointAccess::Loopback,
            allowed_origins: Vec::new(),
            jwt_keys: Vec::new(),
            api_keys: Vec::new(),
        }
    }
}

/// One JWT verification key (`[[auth.jwt_keys]]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// `HS256`, `HS384`, `HS512`, `RS256` or `ES256`: the only algorithm this key verifies.
    pub algorithm: String,
    /// Matched against the token header's `kid` when both are set (key rotation).
    pub kid: String,
    /// HMAC secret, inline (prefer `secret_file`).
    pub secret: String,
    /// File holding the HMAC secret (trailing whitespace ignored).
    pub secret_file: String,
    /// PEM public key for RS256 / ES256.
    pub public_key_file: String,
}

/// One API key (`[[auth.api_keys]]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Shown in logs, welcome frames and as the user id (`{sub}`).
    pub name: String,
    /// SHA-256 of the key, hex.
    pub sha256: String,
    pub subs: Vec<String>,
    pub pubs: Vec<String>,
    /// May use the admin HTTP API (`POST /v1/publish`).
    pub admin: bool,
    /// Overrides `limits.client_messages_per_s` (0 = unlimited) for this key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_s: Option<u32>,
    /// Overrides `limits.client_messages_burst` (default: twice `messages_per_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_burst: Option<u32>,
}

/// Binance market streams (docs/DIALECTS.md): raw and combined streams with live
/// `SUBSCRIBE`, under `prefix`. Every bound defaults to Binance's own value, so connectors
/// written against Binance meet the limits they expect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Binance {
    pub enabled: bool,
    /// Path prefix: `<prefix>/ws/<stream>` and `<prefix>/stream?streams=`.
    pub prefix: String,
    /// Incoming messages (requests and pings) per second per connection; Binance's 5.
    pub messages_per_s: u32,
    /// Messages a connection may send at once before the rate applies.
    pub messages_burst: u32,
    /// Streams one connection may hold; Binance's 1024.
    pub streams_per_conn_max: usize,
    /// A WebSocket ping every this many seconds; Binance's 20.
    pub ping_interval_s: u64,
    /// Closed when nothing (no pong) came for this long after a ping; Binance's 60.
    pub pong_timeout_s: u64,
    /// Connections are closed at this age (0: never); Binance's 24 h.
    pub connection_age_max_s: u64,
    /// Stream-name templates, first match wins (`[[binance.streams]]`).
    pub streams: Vec<StreamTemplate>,
}

/// One `[[binance.streams]]` entry: `{sym}@trade` ↔ `trades.{SYM}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamTemplate {
    pub stream: String,
    pub topic: String,
}

impl Default for Binance {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: "/binance".into(),
            messages_per_s: 5,
            messages_burst: 10,
            streams_per_conn_max: 1024,
            ping_interval_s: 20,
            pong_timeout_s: 60,
            connection_age_max_s: 86_400,
            streams: crate::dialect::binance::DEFAULT_STREAMS
                .iter()
                .map(|(stream, topic)| StreamTemplate {
                    stream: (*stream).into(),
                    topic: (*topic).into(),
                })
                .collect(),
        }
    }
}

/// Centrifugo's client protocol (JSON) (docs/DIALECTS.md), on `path`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Centrifugo {
    pub enabled: bool,
    /// The WebSocket endpoint; the SDKs' default URL ends in `/connection/websocket`.
    pub path: String,
    /// The server sends `{}` every this many seconds and tells the client so (`ping` in the
    /// connect reply); Centrifugo's 25.
    pub ping_interval_s: u64,
    /// Closed (3012 `no pong`) when the client sent nothing for this long after a ping;
    /// Centrifugo's 8.
    pub pong_timeout_s: u64,
}

impl Default for Centrifugo {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/connection/websocket".into(),
            ping_interval_s: 25,
            pong_timeout_s: 8,
        }
    }
}
