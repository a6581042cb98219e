//! Topics and subscription routing, pure: no runtime, no I/O.
//!
//! - [`topic`]: topic and pattern syntax (validation).
//! - [`trie`]: a pattern trie mapping subscription patterns (with `*` and `>`) to values,
//!   matched against a concrete topic without scanning every pattern.
//! - [`index`]: a shard's local index from pattern to the connections subscribed to it, and
//!   the filters of those subscriptions.
//! - [`filter`]: subscription filters: grammar, canonical form, evaluation, a shard's table.
//!
//! Callers validate client input with [`topic::validate_pattern`] / [`topic::validate_topic`]
//! once, at the edge; the trie and the index trust their input and do not validate again
//! (only a `debug_assert` on insertion).

pub mod filter;
pub mod index;
pub mod topic;
pub mod trie;
