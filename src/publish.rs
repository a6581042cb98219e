//! What a publish carries across threads besides its data: who waits for its outcome
//! ([`ReplyTo`]) and that outcome ([`PublishOutcome`]). Plain data, below the shards and the
//! cluster bridge, which both hand it on without looking inside.

use crate::protocol::{ErrorCode, Published};

/// Who waits for a publish's outcome.
#[derive(Debug, Clone)]
pub enum ReplyTo {
    /// Nobody (fire-and-forget op without `id`, demo feed).
    None,
    /// A WebSocket connection; `id` is the raw JSON id to echo (None: reply only on error).
    Conn {
        conn: u32,
        epoch: u32,
        id: Option<Box<[u8]>>,
    },
    /// An HTTP request waiting on its shard.
    Http { token: u32 },
}

/// The outcome of a publish, on its way back to whoever waits for it.
#[derive(Debug)]
pub struct PublishOutcome {
    pub reply: ReplyTo,
    pub result: Result<Published, ErrorCode>,
}
