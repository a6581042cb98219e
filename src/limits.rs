//! Compile-time bounds, each with the reason for its number. Runtime bounds (with config keys)
//! live in `config.rs`.

use crate::pubsub::topic::TOPIC_BYTES_MAX;

/// Shards per process: shard sets travel as a `u64` bit mask in the interest map.
pub const SHARDS_MAX: usize = 64;

/// Descriptors that are not client connections: per shard its listeners (plain, TLS), its
/// io_uring or epoll descriptor, eventfds and the spare kept for answering 503 when the process
/// is out of descriptors (8 is above what they take); for the process stdio, log files, the
/// cluster bridge's broker sockets and its runtime (64). `limits.connections_max` is lowered
/// to `RLIMIT_NOFILE` minus this at start.
pub const fn reserved_descriptors(shards: usize) -> u64 {
    64 + 8 * shards as u64
}

/// Connections kept for plain HTTP (health checks, scrapes, the admin API) when
/// `limits.connections_max` is lowered to fit `RLIMIT_NOFILE`: WebSockets may take all the
/// descriptors but these.
pub const HTTP_HEADROOM: u64 = 64;

/// Bytes a shard reads from one socket per `recv`. Client traffic is small ops; 64 KiB takes a
/// burst of a publisher's messages in one call. One buffer per shard, not per connection.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Reads per readiness event before yielding to other connections, so one flooding client
/// cannot starve the rest of its shard.
pub const READS_PER_WAKE_MAX: usize = 4;

/// Readiness events taken per wait on a shard's readiness set (`shard::conn::poll`), and so
/// connections read per section: 256 × 12-byte events is a 3 KiB buffer per shard; a fuller
/// set is waited on again after the flusher ran, so writes are not held back by a burst of
/// readers (a handshake storm).
pub const EVENTS_PER_WAIT: usize = 256;

/// Connections accepted per wake of a listener before the shard's other tasks run
/// (`shard::accept`): a burst of handshakes is taken in batches, not one task wake each,
/// without starving the connections already open.
pub const ACCEPTS_PER_WAKE: usize = 64;

/// Frames gathered into one `sendmsg`. Linux allows 1024 (IOV_MAX); 64 already turns a
/// backlog of small frames into one write of several KiB, where the per-write kernel cost
/// (~4 µs at 10k sockets) is amortised ~64 times, and keeps the iovec array at 1 KiB of stack.
pub const IOVECS_PER_WRITE: usize = 64;

/// Messages a shard takes from its mesh rings in one round before yielding to the flusher and
/// the readers. Bigger rounds coalesce more frames per write under load; this bound keeps one
/// round's latency for the first subscriber at a few milliseconds.
pub const MESH_ROUND_MAX: usize = 8192;

/// Largest data-frame envelope around `data`: WebSocket header (10) +
/// `{"topic":"` (10) + topic (256) + `","seq":` (8) + u64 (20) + `,"ts":` (6) + u64 (20) +
/// `,"data":` (8) + `}` (1).
pub const ENVELOPE_BYTES_MAX: usize = 10 + 10 + TOPIC_BYTES_MAX + 8 + 20 + 6 + 20 + 8 + 1;

/// Capacity of a connection's empty out-queue kept between flushes (entries of 8 bytes).
pub const OUTQ_KEEP_ENTRIES: usize = 8;

/// Frames a `conflate` offer searches, from the back of a queue, for an older frame of the
/// same topic: bounds the cost of one delivery to a stalled subscriber (a queue of 1 MiB holds
/// ~10k small frames). Not found within it: the lane's oldest frames are dropped instead.
pub const CONFLATE_SCAN_MAX: usize = 1024;

/// Admin API pages (`limit` of `GET /v1/connections`, `/v1/topics`, `/v1/history`,
/// `/v1/online`): the default, and the most one request may ask for. A page is built in one
/// synchronous section of every shard; 1000 entries keep that section well under a
/// millisecond and the answer far below `limits.write_queue_bytes_max`.
pub const ADMIN_PAGE_DEFAULT: usize = 100;
pub const ADMIN_PAGE_MAX: usize = 1000;

/// Bytes of the `reason` of `POST /v1/disconnect`: a close frame's payload is at most 125
/// bytes (RFC 6455 §5.5), 2 of them the code; 120 is a round number below that.
pub const CLOSE_REASON_BYTES_MAX: usize = 120;

/// Per-IP, per-user and connect-rate counters are hashed into this many buckets, shared by
/// all shards (lock-free, approximate: two addresses sharing a bucket share its allowance,
/// which only errs on the strict side). 65,536 keeps collisions rare at 100k clients for
/// 256 KiB per counter array.
pub const HASHED_COUNTER_BUCKETS: usize = 1 << 16;

/// How often a shard walks its connections for deadlines (handshake, message, idle, close)
/// and pings, and flushes its statistics. Walking 20k connections costs well under a
/// millisecond a second.
pub const CONN_SCAN_EVERY_MS: u64 = 1000;

/// Topics a shard examines for an idle one per timer tick (`timeouts.tick_ms`, 250 ms by
/// default: 8k a second, a million-topic table in about two minutes). One examination is a
/// few loads unless interest changed since the topic's mask was computed.
pub const TOPIC_SWEEP_PER_TICK: usize = 2048;

/// Topics a full topic table examines for an idle one before refusing a new topic: bounds the
/// cost of a refused publish while a table of needed topics stays full.
pub const TOPIC_RECLAIM_SCAN_MAX: usize = 64;

/// Cluster: messages a topic's owner holds while a fetch fills a hole; past this, the oldest
/// held are dropped and the fetch's answer reports them as a gap.
pub const CLUSTER_HELD_PER_TOPIC_MAX: usize = 16_384;

/// Cluster: history fetches from the broker in flight per node. After a reconnect every
/// topic with subscribers is checked; thousands of simultaneous reads would only queue at the
/// broker.
pub const CLUSTER_FETCHES_MAX: usize = 32;

/// Cluster, NATS, shard 0's live reader: the largest message it buffers is the server's
/// `max_payload` (its `INFO`), and never more than this, NATS' own ceiling for that setting.
pub const CLUSTER_LIVE_MESSAGE_MAX: usize = 64 << 20;

/// Cluster, NATS, shard 0's live reader: the most servers it keeps of those the broker
/// announces (INFO `connect_urls`); the rest are ignored. A NATS cluster has a handful of
/// servers (superclusters announce only their own cluster's), and each server tried costs up
/// to `cluster.publish_timeout_ms` per round.
pub const CLUSTER_ANNOUNCED_SERVERS_MAX: usize = 32;

/// Cluster, NATS, shard 0's live reader: the least silence after an unanswered keep-alive
/// `PING` that counts as a dead broker, whatever `cluster.node_ttl_ms` says. A `PONG` is a few
/// microseconds of the server's work, but a node whose shard or machine is held up for a
/// moment must not drop a healthy connection and repair every topic (async-nats waits two
/// minutes); 5 s keeps a dead broker noticed quickly.
pub const LIVE_SILENCE_MIN_MS: u64 = 5_000;
