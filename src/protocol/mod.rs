//! Protocol v1 (docs/PROTOCOL.md): client ops to typed commands, and the replies.
//!
//! Parsing is in two steps over the text message, which the frame decoder hands out mutably:
//! 1. [`scan_top_level`] finds the raw byte spans of the top-level `"id"` and `"data"` values.
//!    `data` is forwarded verbatim into the published frame, and `id` echoed verbatim, so
//!    neither is ever re-serialized.
//! 2. simd-json parses the message in place (which rewrites string escapes in the buffer, hence
//!    the spans are copied out first) into [`OpFields`], validating the whole document.

mod parse;
mod reply;

pub use parse::*;
pub use reply::*;

/// Error codes of `{"op":"error"}` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidTopic,
    TooManySubscriptions,
    Forbidden,
    Unauthorized,
    RateLimited,
    MessageTooLarge,
    /// Cluster mode: the broker did not confirm a publish (down, or too slow).
    Unavailable,
    /// A publish refused because the server is at capacity: its topic's owner cannot hold
    /// another topic (`limits.topics_per_shard_max`), or a queue on its way is full. Or a
    /// subscribe with a new filter while its shard holds `limits.filters_per_shard_max`.
    Capacity,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Capacity => "capacity",
            ErrorCode::Internal => "internal",
        }
    }

    /// HTTP status for the same error on the HTTP API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidTopic => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::MessageTooLarge => 413,
            ErrorCode::TooManySubscriptions | ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable | ErrorCode::Capacity => 503,
        }
    }
}

/// Why a `gap` is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The history no longer holds (or never held) the missed frames.
    Evicted,
    /// The topic's epoch changed (server restart, topic dropped): the client's `seq` is void.
    Epoch,
    /// Cluster: messages this node did not get from the broker, and the broker's history no
    /// longer holds (or the broker could not be asked).
    Lost,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Evicted => "evicted",
            GapReason::Epoch => "epoch",
            GapReason::Lost => "lost",
        }
    }
}

/// Renders a topic epoch as clients see it: 16 hex digits.
pub fn epoch_str(epoch: u64) -> String {
    format!("{epoch:016x}")
}

/// Parses a client's epoch string: 1 to 16 hex digits (`"0"` or all zeros: "not known",
/// compared by `seq` alone). Anything else is malformed: `None`.
pub fn parse_epoch(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Topics named in one subscribe's `since` (wildcard subscriptions may name many topics).
pub const SINCE_PER_REQUEST_MAX: usize = 100;

/// Longest `id` (its JSON text, quotes included): replies echo it.
pub const ID_BYTES_MAX: usize = 256;

/// Longest `idem` key.
pub const IDEM_BYTES_MAX: usize = 128;

/// Why an `idem` key is refused, if it is.
pub fn check_idem(idem: Option<&str>) -> Result<(), &'static str> {
    match idem {
        Some("") => Err("\"idem\" must not be empty"),
        Some(k) if k.len() > IDEM_BYTES_MAX => Err("\"idem\" is longer than 128 bytes"),
        _ => Ok(()),
    }
}

/// The outcome of a publish at the topic's owner (or the broker), as its ack reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub epoch: u64,
    /// An earlier publish with the same `idem` key got `seq`; nothing was published now.
    pub duplicate: bool,
}

/// Where one topic stands, as a subscribe ack reports it.
#[derive(Debug, Clone, Copy)]
pub struct TopicPosition<'a> {
    pub topic: &'a str,
    pub seq: u64,
    pub epoch: u64,
}

#[cfg(test)]
mod tests;
