//! CONTRACT STUB: implemented on the pubsub branch.

pub const TOPIC_BYTES_MAX: usize = 256;
pub const SEGMENTS_MAX: usize = 16;
pub const SEGMENT_BYTES_MAX: usize = 64;

/// Why a topic or pattern is invalid. `Display` gives the human message sent to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    TooLong,
    TooManySegments,
    EmptySegment,
    SegmentTooLong,
    BadChar(u8),
    /// A wildcard in a topic one publishes to.
    WildcardInTopic,
    /// `>` anywhere but the last segment.
    GtNotLast,
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}

/// Whether a valid pattern contains a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    Exact,
    Wildcard,
}

/// Validates a concrete topic (publish target).
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    let _ = topic;
    todo!()
}

/// Validates a subscription pattern.
pub fn validate_pattern(pattern: &str) -> Result<PatternKind, TopicError> {
    let _ = pattern;
    todo!()
}

/// Reference matcher: does `pattern` match the concrete `topic`? (Slow path, for tests, benches
/// and one-off checks; routing uses the trie.)
pub fn matches(pattern: &str, topic: &str) -> bool {
    let _ = (pattern, topic);
    todo!()
}
