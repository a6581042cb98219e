//! Channel mapping and defensive reading of Redis replies.

use super::*;

#[test]
fn exact_topics_subscribe_to_their_channel() {
    assert_eq!(
        channel_for("tc.live.", "md.x"),
        ("tc.live.md.x".to_string(), false)
    );
    assert_eq!(
        channel_for("tc.", "node.r.n-1"),
        ("tc.node.r.n-1".to_string(), false)
    );
}

#[test]
fn wildcards_become_globs() {
    assert_eq!(
        channel_for("tc.live.", "md.*.trades"),
        ("tc.live.md.*.trades".to_string(), true)
    );
    assert_eq!(
        channel_for("tc.live.", "user.>"),
        ("tc.live.user.*".to_string(), true)
    );
    assert_eq!(channel_for("tc.", "in.>"), ("tc.in.*".to_string(), true));
    assert_eq!(
        channel_for("tc.live.", ">"),
        ("tc.live.*".to_string(), true)
    );
    assert_eq!(
        channel_for("tc.live.", "*.*"),
        ("tc.live.*.*".to_string(), true)
    );
    // `md.*` and `md.>` share one glob (counted per channel by the engine).
    assert_eq!(
        channel_for("tc.live.", "md.*").0,
        channel_for("tc.live.", "md.>").0
    );
}

#[test]
fn literal_parts_of_globs_are_escaped() {
    assert_eq!(
        channel_for("t[c]?.live.", "a\\b.*").0,
        "t\\[c\\]\\?.live.a\\\\b.*"
    );
    // `*` inside a segment is not a wildcard (validation refuses it anyway).
    assert_eq!(channel_for("tc.", "a*.>").0, "tc.a\\*.*");
    // An exact channel is literal: nothing to escape.
    assert_eq!(channel_for("t*.", "a.b").0, "t*.a.b");
}

#[test]
fn stream_replies_are_read_defensively() {
    let entry = |id: &str, f: &str, v: &[u8]| {
        Value::Array(vec![
            Value::BulkString(id.into()),
            Value::Array(vec![
                Value::BulkString(f.into()),
                Value::BulkString(v.to_vec()),
            ]),
        ])
    };
    let v = Value::Array(vec![
        entry("2-1", "m", b"two"),
        Value::Int(3),
        entry("1-1", "x", b"skip"),
        Value::Array(vec![Value::Nil]),
        entry("0-1", "m", b"zero"),
    ]);
    let got = stream_payloads(v);
    assert_eq!(
        got,
        vec![Bytes::from_static(b"two"), Bytes::from_static(b"zero")]
    );
    assert!(stream_payloads(Value::Nil).is_empty());
    assert_eq!(meta_num(&Value::Nil), Ok(0));
    assert_eq!(meta_num(&Value::BulkString(b"42".to_vec())), Ok(42));
    assert!(meta_num(&Value::BulkString(b"x".to_vec())).is_err());
}
