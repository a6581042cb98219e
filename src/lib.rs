//! tickcast: a thread-per-core io_uring WebSocket fan-out gateway.
//!
//! Data flows one way: `ingest -> frame -> mesh -> shard fan-out -> connection queues -> writer`.
//! `ws` and `pubsub` are pure (no runtime) so they can be fuzzed, property-tested and benched.

pub mod pubsub;
pub mod ws;
