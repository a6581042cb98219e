//! Parsing edge cases and replies that stay valid JSON.

use super::*;

fn parse_str(s: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let mut buf = s.as_bytes().to_vec();
    let mut buffers = simd_json::Buffers::default();
    match parse(&mut buf, &mut buffers) {
        Ok(r) => Ok((
            format!("{:?}", r.op),
            r.id.map(|i| String::from_utf8(i.into()).unwrap()),
            r.data.map(|d| String::from_utf8(d).unwrap()),
        )),
        Err(e) => Err(e.message),
    }
}

#[test]
fn spans_find_id_and_data_verbatim() {
    let s =
        br#" { "op" : "publish", "id": "a\"b", "topic":"x", "data" : {"k":[1, 2.50e1, "}"]} } "#;
    let spans = scan_top_level(s);
    assert_eq!(&s[spans.id.unwrap()], br#""a\"b""#);
    assert_eq!(&s[spans.data.unwrap()], br#"{"k":[1, 2.50e1, "}"]}"#);
}

#[test]
fn spans_ignore_nested_keys() {
    let s = br#"{"op":"publish","data":{"id":7,"data":1},"id":3}"#;
    let spans = scan_top_level(s);
    assert_eq!(&s[spans.id.unwrap()], b"3");
    assert_eq!(&s[spans.data.unwrap()], br#"{"id":7,"data":1}"#);
}

#[test]
fn epochs_round_trip_as_hex() {
    assert_eq!(epoch_str(0xab), "00000000000000ab");
    assert_eq!(parse_epoch(&epoch_str(u64::MAX)), Some(u64::MAX));
    assert_eq!(parse_epoch("0"), Some(0));
    assert_eq!(parse_epoch("AB"), Some(0xab));
    for bad in ["zz", "", "+1", "-1", "0x1", "00000000000000000", " 1"] {
        assert_eq!(parse_epoch(bad), None, "{bad:?}");
    }
}

#[test]
fn ids_are_bounded() {
    let ok = format!(r#"{{"op":"ping","id":"{}"}}"#, "x".repeat(ID_BYTES_MAX - 2));
    assert!(parse_str(&ok).is_ok());
    let long = format!(r#"{{"op":"ping","id":"{}"}}"#, "x".repeat(ID_BYTES_MAX - 1));
    let mut buf = long.into_bytes();
    let err = parse(&mut buf, &mut simd_json::Buffers::default()).unwrap_err();
    assert!(err.message.contains("longer than 256"), "{}", err.message);
    assert!(err.id.is_none(), "a refused id is not echoed");
}

#[test]
fn escaped_keys_are_the_keys_they_spell() {
    let (op, id, data) =
        parse_str(r#"{"op":"publish","\u0069d":5,"topic":"a.b","d\u0061ta":{"x":1}}"#).unwrap();
    assert!(op.starts_with("Publish"));
    assert_eq!(id.as_deref(), Some("5"));
    assert_eq!(data.as_deref(), Some(r#"{"x":1}"#));
    // Written twice, once escaped: a duplicate, refused like any other.
    let err = parse_str(r#"{"op":"publish","topic":"a","data":1,"\u0064ata":2}"#);
    assert!(err.unwrap_err().contains("malformed"));
    // A broken escape in a key is not a key the scan knows.
    let s = br#"{"\u00zzata":1,"data":2}"#;
    assert_eq!(&s[scan_top_level(s).data.unwrap()], b"2");
}

#[test]
fn scanner_survives_garbage() {
    for s in [
        &b""[..],
        b"{",
        b"{\"",
        b"{\"a\":",
        b"{\"a\":[",
        b"[1,2]",
        b"{\"data\":\"\\",
    ] {
        let _ = scan_top_level(s);
    }
}

#[test]
fn publish_keeps_data_verbatim_and_id_raw() {
    let (op, id, data) =
        parse_str(r#"{"op":"publish","id":1.50,"topic":"a.b","data":{"p": 1.0e2 , "s":"\u00e9"}}"#)
            .unwrap();
    assert!(op.starts_with("Publish"));
    assert_eq!(id.unwrap(), "1.50");
    assert_eq!(data.unwrap(), r#"{"p": 1.0e2 , "s":"\u00e9"}"#);
}

#[test]
fn rejects_what_the_protocol_rejects() {
    let cases = [
        (r#"{"op":"nope"}"#, "unknown op"),
        (r#"{"op":"subscribe"}"#, "topics"),
        (r#"{"op":"subscribe","topics":[]}"#, "empty"),
        (r#"{"op":"publish","topic":"a"}"#, "data"),
        (r#"{"op":"publish","data":1}"#, "topic"),
        (r#"{"op":"ping","id":{"x":1}}"#, "malformed"),
        (r#"{"op":"ping","id":true}"#, "malformed"),
        (r#"{"op":"ping","bogus":1}"#, "malformed"),
        (r#"{"op":"ping""#, "malformed"),
        (r#"[1]"#, "malformed"),
        (r#"{"op":"ping","op":"ping"}"#, "malformed"),
    ];
    for (input, want) in cases {
        let err = parse_str(input).unwrap_err();
        assert!(err.contains(want), "{input}: {err}");
    }
}

#[test]
fn error_replies_for_broken_documents_stay_json() {
    for input in [
        r#"{"op":"nope","id":007,"#,
        r#"{"op":"x","id":1.2.3,"#,
        "{\"op\":\"x\",\"id\":\"a\nb\",",
        r#"{"op":"x","id":"\q","#,
        r#"{"op":"x","id":7,"#,
    ] {
        let mut buf = input.as_bytes().to_vec();
        let err = parse(&mut buf, &mut simd_json::Buffers::default()).unwrap_err();
        let mut out = Vec::new();
        error(
            &mut out,
            err.id.as_deref(),
            ErrorCode::BadRequest,
            &err.message,
            None,
        );
        let v: serde_json::Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{input}: reply is not JSON ({e})"));
        assert_eq!(v["code"], "bad_request");
    }
    let mut buf = br#"{"op":"x","id":7,"#.to_vec();
    let err = parse(&mut buf, &mut simd_json::Buffers::default()).unwrap_err();
    assert_eq!(
        err.id.as_deref(),
        Some(&b"7"[..]),
        "a valid id is still echoed"
    );
}

#[test]
fn error_reply_escapes_message_and_topic() {
    let mut out = Vec::new();
    error(
        &mut out,
        Some(b"7"),
        ErrorCode::InvalidTopic,
        "bad \"x\"",
        Some("a\nb"),
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["id"], 7);
    assert_eq!(v["code"], "invalid_topic");
    assert_eq!(v["topic"], "a\nb");
}

#[test]
fn a_subscribe_carries_its_raw_filter() {
    let mut buf =
        br#"{"op":"subscribe","filter" : {"a":{"in":[1,"}"]}} ,"topics":["x"],"id":1}"#.to_vec();
    let req = parse(&mut buf, &mut simd_json::Buffers::default()).unwrap();
    let Op::Subscribe { filter, .. } = req.op else {
        panic!("{:?}", req.op)
    };
    assert_eq!(filter.as_deref(), Some(&br#"{"a":{"in":[1,"}"]}}"#[..]));
    let mut buf = br#"{"op":"subscribe","topics":["x"],"filter":null}"#.to_vec();
    let req = parse(&mut buf, &mut simd_json::Buffers::default()).unwrap();
    assert!(matches!(req.op, Op::Subscribe { filter: Some(f), .. } if &*f == b"null"));
    let mut buf = br#"{"op":"subscribe","topics":["x"]}"#.to_vec();
    let req = parse(&mut buf, &mut simd_json::Buffers::default()).unwrap();
    assert!(matches!(req.op, Op::Subscribe { filter: None, .. }));
    // Not unsubscribe's; ignored by the ops that do not use it, like any known field.
    let err = parse_str(r#"{"op":"unsubscribe","topics":["x"],"filter":{}}"#).unwrap_err();
    assert_eq!(
        err,
        "\"filter\" belongs to subscribe (unsubscribe removes a pattern and its filter)"
    );
    assert!(parse_str(r#"{"op":"ping","filter":{"a":1}}"#).is_ok());
}

#[test]
fn the_subscribe_ack_lists_replaced_patterns() {
    let mut out = Vec::new();
    let pos = [TopicPosition {
        topic: "a.b",
        seq: 3,
        epoch: 1,
    }];
    ack_subscribe(&mut out, Some(b"7"), &["a.*", "a.b"], &pos, &["a.*"]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"op":"ack","id":7,"topics":["a.*","a.b"],"replaced":["a.*"],"positions":[{"topic":"a.b","seq":3,"epoch":"0000000000000001"}]}"#
    );
    let mut out = Vec::new();
    ack_subscribe::<&str>(&mut out, None, &["a"], &[], &[]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"op":"ack","topics":["a"]}"#
    );
}
