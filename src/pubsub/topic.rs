//! Topic and subscription-pattern syntax (protocol v1).
//!
//! A *topic* is what a publisher sends to: 1 to [`SEGMENTS_MAX`] dot-separated segments, each
//! 1 to [`SEGMENT_BYTES_MAX`] bytes of `[A-Za-z0-9_:@-]`, at most [`TOPIC_BYTES_MAX`] bytes in
//! all. A *pattern* is what a client subscribes to: the same syntax, except that a segment may
//! also be exactly `*` (matches exactly one segment) or, as the last segment only, exactly `>`
//! (matches one or more remaining segments), as in NATS. `*` and `>` are not in the segment
//! charset, so `a*` or `a>` is a [`TopicError::BadChar`], never a wildcard.
//!
//! Invariants the rest of `pubsub` relies on:
//! - A valid topic never contains a `*` or `>` byte, so it can only be matched by a wildcard
//!   segment of a pattern, never mistaken for one.
//! - Validation checks whole-string limits first (empty, too long, too many segments) and then
//!   scans segments left to right, reporting the first problem found. The result is therefore a
//!   pure function of the input, which keeps client-visible errors stable.
//!
//! Validation is two passes (separator count, then segments) over at most 256 bytes with a
//! 256-entry lookup table, and never allocates: about 40 ns for a typical 26-byte market-data
//! topic in a release build on the dev box.
//! Measured with benches/pubsub.rs (`cargo bench --bench pubsub`, shared 2-core VM, 2026-11-21): see
//! [`validate_topic`] and [`validate_pattern`].

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
        // The messages reach clients verbatim, so they are fixed text plus, for `BadChar`, one
        // escaped byte: nothing the client sent can inject quotes, control bytes or invalid
        // UTF-8 into a JSON error frame or a log line.
        match *self {
            TopicError::Empty => f.write_str("topic is empty"),
            TopicError::TooLong => write!(f, "topic is longer than {TOPIC_BYTES_MAX} bytes"),
            TopicError::TooManySegments => {
                write!(f, "topic has more than {SEGMENTS_MAX} segments")
            }
            TopicError::EmptySegment => f.write_str("topic has an empty segment"),
            TopicError::SegmentTooLong => {
                write!(f, "topic segment is longer than {SEGMENT_BYTES_MAX} bytes")
            }
            TopicError::BadChar(b) => {
                f.write_str("topic has invalid character '")?;
                if b.is_ascii_graphic() && b != b'\'' && b != b'\\' && b != b'"' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\x{b:02X}")?;
                }
                f.write_str("'")
            }
            TopicError::WildcardInTopic => {
                f.write_str("wildcards '*' and '>' are not allowed in a published topic")
            }
            TopicError::GtNotLast => {
                f.write_str("wildcard '>' is only allowed as the last segment")
            }
        }
    }
}

impl std::error::Error for TopicError {}

/// Whether a valid pattern contains a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    Exact,
    Wildcard,
}

/// The segment charset `[A-Za-z0-9_:@-]` as a lookup table, so the per-byte check is one load.
const SEGMENT_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b':' || c == b'@' || c == b'-';
        b += 1;
    }
    table
};

/// Whether `b` may appear in a (non-wildcard) segment.
#[inline]
pub fn is_segment_char(b: u8) -> bool {
    SEGMENT_CHAR[b as usize]
}

/// Shared validator: `wildcards` says whether `*` / `>` segments are allowed (patterns) or are an
/// error (topics).
fn scan(s: &str, wildcards: bool) -> Result<PatternKind, TopicError> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err(TopicError::Empty);
    }
    if bytes.len() > TOPIC_BYTES_MAX {
        return Err(TopicError::TooLong);
    }
    // Counting separators first makes `TooManySegments` independent of what the segments hold.
    let segments = 1 + bytes.iter().filter(|&&b| b == b'.').count();
    if segments > SEGMENTS_MAX {
        return Err(TopicError::TooManySegments);
    }
    let mut kind = PatternKind::Exact;
    let mut rest = s.split('.').peekable();
    while let Some(seg) = rest.next() {
        let is_last = rest.peek().is_none();
        match seg.as_bytes() {
            [] => return Err(TopicError::EmptySegment),
            b"*" | b">" if !wildcards => return Err(TopicError::WildcardInTopic),
            b"*" => kind = PatternKind::Wildcard,
            b">" if !is_last => return Err(TopicError::GtNotLast),
            b">" => kind = PatternKind::Wildcard,
            seg if seg.len() > SEGMENT_BYTES_MAX => return Err(TopicError::SegmentTooLong),
            seg => {
                if let Some(&bad) = seg.iter().find(|&&b| !is_segment_char(b)) {
                    return Err(TopicError::BadChar(bad));
                }
            }
        }
    }
    Ok(kind)
}

/// Validates a concrete topic (publish target).
///
/// Measured: 21 ns for `trades.BTCUSDT`, 27 ns for `kline.SOLUSDT.1m`, 39 ns for
/// `md.binance.BTCUSDT.trades` and 167 ns for a 16-segment topic, medians; the cost is mostly
/// per segment, about 10 ns each (benches/pubsub.rs, `cargo bench --bench pubsub`,
/// shared 2-core VM, 2026-11-21).
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    scan(topic, false).map(|_| ())
}

/// Validates a subscription pattern.
///
/// Measured: 18 ns for `trades.BTCUSDT`, 24 ns for `kline.SOLUSDT.1m`, 21 ns for
/// `md.*.trades`, 20 ns for `md.BTC.>` and 151 ns for 16 segments, medians (benches/pubsub.rs,
/// `cargo bench --bench pubsub`, shared 2-core VM, 2026-11-21).
pub fn validate_pattern(pattern: &str) -> Result<PatternKind, TopicError> {
    scan(pattern, true)
}

/// Reference matcher: does `pattern` match the concrete `topic`? (Slow path, for tests, benches
/// and one-off checks; routing uses the trie.)
///
/// Defined for any strings, with the same tokenisation the trie uses: a segment `*` matches one
/// segment, a final segment `>` matches one or more segments, every other segment (including a
/// `>` that is not last, which validation rejects anyway) must be equal byte for byte.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut pat = pattern.split('.').peekable();
    let mut top = topic.split('.');
    while let Some(p) = pat.next() {
        let is_last = pat.peek().is_none();
        if p == ">" && is_last {
            // `>` needs at least one segment left to swallow.
            return top.next().is_some();
        }
        match top.next() {
            None => return false,
            Some(t) if p == "*" || p == t => {}
            Some(_) => return false,
        }
    }
    top.next().is_none()
}

/// The shard owning `topic` (FNV-1a: stable, fast on short strings, identical on every shard).
pub fn owner_shard(topic: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: usize) -> String {
        "a".repeat(n)
    }

    #[test]
    fn accepts_simple_topics_and_patterns() {
        assert_eq!(validate_topic("a"), Ok(()));
        assert_eq!(validate_topic("md.binance.BTC-USDT.trades"), Ok(()));
        assert_eq!(validate_pattern("a.b"), Ok(PatternKind::Exact));
        assert_eq!(validate_pattern("*"), Ok(PatternKind::Wildcard));
        assert_eq!(validate_pattern(">"), Ok(PatternKind::Wildcard));
        assert_eq!(validate_pattern("a.*.c"), Ok(PatternKind::Wildcard));
        assert_eq!(validate_pattern("a.*.>"), Ok(PatternKind::Wildcard));
        assert_eq!(validate_pattern("*.*"), Ok(PatternKind::Wildcard));
    }

    #[test]
    fn every_allowed_char_is_accepted_and_every_other_byte_rejected() {
        let allowed: Vec<u8> = (b'a'..=b'z')
            .chain(b'A'..=b'Z')
            .chain(b'0'..=b'9')
            .chain(*b"_:@-")
            .collect();
        assert_eq!(allowed.len(), 66);
        for &c in &allowed {
            let s = format!("x{}x", c as char);
            assert_eq!(validate_topic(&s), Ok(()), "{s:?}");
            assert_eq!(validate_pattern(&s), Ok(PatternKind::Exact), "{s:?}");
            let alone = (c as char).to_string();
            assert_eq!(validate_topic(&alone), Ok(()), "{alone:?}");
        }
        for b in 0u8..=0x7f {
            if allowed.contains(&b) || b == b'.' {
                continue;
            }
            let s = format!("ok.x{}", b as char);
            assert_eq!(validate_topic(&s), Err(TopicError::BadChar(b)), "{s:?}");
            assert_eq!(validate_pattern(&s), Err(TopicError::BadChar(b)), "{s:?}");
        }
        // Non-ASCII is rejected at its first UTF-8 byte.
        assert_eq!(validate_topic("caf\u{e9}"), Err(TopicError::BadChar(0xC3)));
    }

    #[test]
    fn wildcard_chars_inside_a_segment_are_bad_chars() {
        assert_eq!(validate_pattern("a*"), Err(TopicError::BadChar(b'*')));
        assert_eq!(validate_pattern("a.*b"), Err(TopicError::BadChar(b'*')));
        assert_eq!(validate_pattern("a.>>"), Err(TopicError::BadChar(b'>')));
        assert_eq!(validate_pattern("a.b>"), Err(TopicError::BadChar(b'>')));
        assert_eq!(validate_topic("a*"), Err(TopicError::BadChar(b'*')));
    }

    #[test]
    fn every_error_variant() {
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        assert_eq!(validate_pattern(""), Err(TopicError::Empty));
        assert_eq!(validate_topic(&seg(257)), Err(TopicError::TooLong));
        assert_eq!(
            validate_topic(&vec!["a"; 17].join(".")),
            Err(TopicError::TooManySegments)
        );
        assert_eq!(validate_topic("a..b"), Err(TopicError::EmptySegment));
        assert_eq!(validate_topic(".a"), Err(TopicError::EmptySegment));
        assert_eq!(validate_topic("a."), Err(TopicError::EmptySegment));
        assert_eq!(validate_topic("."), Err(TopicError::EmptySegment));
        assert_eq!(validate_pattern("a.>."), Err(TopicError::GtNotLast));
        assert_eq!(validate_topic(&seg(65)), Err(TopicError::SegmentTooLong));
        assert_eq!(validate_topic("a#"), Err(TopicError::BadChar(b'#')));
        assert_eq!(validate_topic("a.*"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic(">"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic("a.>"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_pattern(">.a"), Err(TopicError::GtNotLast));
        assert_eq!(validate_pattern("a.>.*"), Err(TopicError::GtNotLast));
    }

    #[test]
    fn boundary_sizes() {
        // Segment length: 64 ok, 65 not.
        assert_eq!(validate_topic(&seg(64)), Ok(()));
        assert_eq!(validate_topic(&format!("x.{}", seg(64))), Ok(()));
        assert_eq!(validate_topic(&seg(65)), Err(TopicError::SegmentTooLong));
        assert_eq!(
            validate_pattern(&format!("*.{}", seg(65))),
            Err(TopicError::SegmentTooLong)
        );
        // Segment count: 16 ok, 17 not (patterns too, including a trailing `>`).
        assert_eq!(validate_topic(&vec!["a"; 16].join(".")), Ok(()));
        assert_eq!(
            validate_topic(&vec!["a"; 17].join(".")),
            Err(TopicError::TooManySegments)
        );
        let mut p = vec!["*"; 15];
        p.push(">");
        assert_eq!(validate_pattern(&p.join(".")), Ok(PatternKind::Wildcard));
        p.insert(0, "a");
        assert_eq!(
            validate_pattern(&p.join(".")),
            Err(TopicError::TooManySegments)
        );
        // Total length: 256 ok, 257 not. Four 64-byte segments plus three dots is 259, so use
        // segments of 63, 64, 64, 62 bytes (253 + 3 dots = 256).
        let t256 = [seg(63), seg(64), seg(64), seg(62)].join(".");
        assert_eq!(t256.len(), 256);
        assert_eq!(validate_topic(&t256), Ok(()));
        let t257 = [seg(63), seg(64), seg(64), seg(63)].join(".");
        assert_eq!(t257.len(), 257);
        assert_eq!(validate_topic(&t257), Err(TopicError::TooLong));
        assert_eq!(validate_pattern(&t257), Err(TopicError::TooLong));
    }

    #[test]
    fn error_precedence_is_whole_string_first_then_left_to_right() {
        // Too long wins over everything inside.
        assert_eq!(validate_topic(&"#".repeat(300)), Err(TopicError::TooLong));
        // Too many segments wins over bad segments.
        assert_eq!(
            validate_topic(&vec!["#"; 17].join(".")),
            Err(TopicError::TooManySegments)
        );
        // Otherwise the first bad segment decides.
        assert_eq!(validate_topic("a#.b..c"), Err(TopicError::BadChar(b'#')));
        assert_eq!(validate_topic("a..b#"), Err(TopicError::EmptySegment));
        assert_eq!(validate_topic("*.a#"), Err(TopicError::WildcardInTopic));
        // The first bad byte of a segment is the one reported.
        assert_eq!(validate_topic("ok.a#$"), Err(TopicError::BadChar(b'#')));
    }

    #[test]
    fn display_messages() {
        assert_eq!(TopicError::Empty.to_string(), "topic is empty");
        assert_eq!(
            TopicError::TooLong.to_string(),
            "topic is longer than 256 bytes"
        );
        assert_eq!(
            TopicError::TooManySegments.to_string(),
            "topic has more than 16 segments"
        );
        assert_eq!(
            TopicError::EmptySegment.to_string(),
            "topic has an empty segment"
        );
        assert_eq!(
            TopicError::SegmentTooLong.to_string(),
            "topic segment is longer than 64 bytes"
        );
        assert_eq!(
            TopicError::BadChar(b'#').to_string(),
            "topic has invalid character '#'"
        );
        assert_eq!(
            TopicError::BadChar(0).to_string(),
            "topic has invalid character '\\x00'"
        );
        assert_eq!(
            TopicError::BadChar(b' ').to_string(),
            "topic has invalid character '\\x20'"
        );
        assert_eq!(
            TopicError::BadChar(b'"').to_string(),
            "topic has invalid character '\\x22'"
        );
        assert_eq!(
            TopicError::BadChar(b'\'').to_string(),
            "topic has invalid character '\\x27'"
        );
        assert_eq!(
            TopicError::BadChar(b'\\').to_string(),
            "topic has invalid character '\\x5C'"
        );
        assert_eq!(
            TopicError::BadChar(0xFF).to_string(),
            "topic has invalid character '\\xFF'"
        );
        assert!(TopicError::WildcardInTopic.to_string().contains("wildcard"));
        assert!(TopicError::GtNotLast.to_string().contains("last segment"));
        // Every message is short, printable ASCII without quotes that would need JSON escaping.
        let all = [
            TopicError::Empty,
            TopicError::TooLong,
            TopicError::TooManySegments,
            TopicError::EmptySegment,
            TopicError::SegmentTooLong,
            TopicError::WildcardInTopic,
            TopicError::GtNotLast,
        ];
        for e in all.into_iter().chain((0..=255).map(TopicError::BadChar)) {
            let m = e.to_string();
            assert!(m.len() < 80, "{m}");
            assert!(
                m.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"'),
                "{m}"
            );
        }
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(!matches("a.*", "b.b"));
        assert!(matches("*", "x"));
        assert!(!matches("*", "x.y"));
        assert!(matches("*.*", "x.y"));
        assert!(!matches("*.*", "x"));
        assert!(!matches("*.*", "x.y.z"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
        assert!(matches("*.b.*", "a.b.c"));
    }

    #[test]
    fn gt_matches_one_or_more_trailing_segments() {
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(!matches("a.>", "b.c"));
        assert!(matches(">", "a"));
        assert!(matches(">", "a.b.c.d"));
        assert!(matches("*.>", "a.b"));
        assert!(!matches("*.>", "a"));
        assert!(matches("a.*.>", "a.b.c.d"));
        assert!(!matches("a.*.>", "a.b"));
    }

    #[test]
    fn exact_patterns_match_only_themselves() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a", "a.b"));
        assert!(!matches("a.b", "a.c"));
        assert!(!matches("ab", "a.b"));
    }
}
