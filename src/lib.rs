//! tickcast: a thread-per-core io_uring WebSocket fan-out gateway.
//!
//! Data flows one way: `ingest -> frame -> mesh -> shard fan-out -> connection queues -> writer`.
//! `ws` and `pubsub` are pure (no runtime) so they can be fuzzed, property-tested and benched.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod config;
pub mod dialect;
pub mod fault;
pub mod frame;
pub mod ingest;
pub mod limits;
pub mod mesh;
pub mod protocol;
pub mod publish;
pub mod pubsub;
pub mod service;
pub mod shard;
pub mod stats;
pub mod sys;
pub mod tls;
pub mod topology;
pub mod ws;
