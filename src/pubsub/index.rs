//! CONTRACT STUB: implemented on the pubsub branch.

/// A shard-local connection id (slab key).
pub type ConnId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubOutcome {
    /// Added; `first` when no connection of this shard had this pattern before.
    Added { first: bool },
    AlreadySubscribed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsubOutcome {
    /// Removed; `last` when no connection of this shard has this pattern any more.
    Removed { last: bool },
    NotSubscribed,
}

/// Pattern -> subscribed connections of one shard.
#[derive(Debug, Default)]
pub struct LocalIndex {}

impl LocalIndex {
    pub fn subscribe(&mut self, pattern: &str, conn: ConnId) -> SubOutcome {
        let _ = (pattern, conn);
        todo!()
    }
    pub fn unsubscribe(&mut self, pattern: &str, conn: ConnId) -> UnsubOutcome {
        let _ = (pattern, conn);
        todo!()
    }
    /// Calls `f` for each connection subscribed to a pattern matching `topic`. A connection with
    /// several matching patterns is passed once per pattern: the caller deduplicates.
    pub fn for_each_subscriber(&self, topic: &str, f: impl FnMut(ConnId)) {
        let _ = (topic, f);
        todo!()
    }
    /// Distinct patterns with at least one subscriber.
    pub fn pattern_count(&self) -> usize {
        todo!()
    }
    /// Total (pattern, connection) pairs.
    pub fn subscription_count(&self) -> usize {
        todo!()
    }
}
