//! Sources of publishes besides clients: the demo feed. (The HTTP publish API lives with the
//! other HTTP routes in `shard::http`; all of them enter through `State::ingest_publish`.)

pub mod demo;
