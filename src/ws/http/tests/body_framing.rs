//! Body framing and smuggling defences: strict `Content-Length`, conflicts with
//! `Transfer-Encoding`, chunked bodies, and headers that must appear once.

use super::*;

#[test]
fn content_length_is_parsed_strictly() {
    let req = parsed(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\n");
    assert_eq!(req.content_length, Some(42));
    let req =
        parsed(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(req.content_length, Some(5));
    for value in [
        "",
        "+5",
        "-1",
        "5 5",
        "5,5",
        "0x10",
        "1e3",
        "99999999999999999999999",
    ] {
        let head = format!("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n");
        assert_eq!(
            parse(head.as_bytes()).unwrap_err(),
            HttpError::Malformed,
            "{value:?}"
        );
    }
}

#[test]
fn differing_content_lengths_are_malformed() {
    let head = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
    assert_eq!(parse(head).unwrap_err(), HttpError::Malformed);
}

#[test]
fn content_length_with_transfer_encoding_is_malformed() {
    let head =
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(parse(head).unwrap_err(), HttpError::Malformed);
    let head =
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(parse(head).unwrap_err(), HttpError::Malformed);
}

#[test]
fn chunked_transfer_encoding_is_reported() {
    let req = parsed(b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
    assert!(req.chunked);
    assert_eq!(req.content_length, None);
}

#[test]
fn transfer_encoding_that_leaves_the_length_unknown_is_malformed() {
    // Not ending in chunked: the body would run until the connection closes.
    for value in ["gzip", "chunked, gzip", ""] {
        let head = format!("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {value}\r\n\r\n");
        assert_eq!(
            parse(head.as_bytes()).unwrap_err(),
            HttpError::Malformed,
            "{value:?}"
        );
    }
    // HTTP/1.0 has no chunked coding.
    let head = b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(parse(head).unwrap_err(), HttpError::Malformed);
}

#[test]
fn one_host_header_exactly() {
    // RFC 9112 §3.2: HTTP/1.1 needs one; two are refused too. HTTP/1.0 needs none.
    for head in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
    ] {
        let err = parse(head).unwrap_err();
        assert_eq!((err, err.status()), (HttpError::Host, 400));
    }
    assert!(parsed(b"GET / HTTP/1.0\r\n\r\n").path == "/");
}

#[test]
fn duplicated_singleton_headers_are_malformed() {
    for name in [
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Origin",
        "Authorization",
    ] {
        let head = format!("GET / HTTP/1.1\r\nHost: x\r\n{name}: a\r\n{name}: a\r\n\r\n");
        assert_eq!(
            parse(head.as_bytes()).unwrap_err(),
            HttpError::Malformed,
            "{name}"
        );
    }
}
