//! Tests for request parsing, the upgrade check and response writing.

use super::*;

const LIMITS: HttpLimits = HttpLimits {
    header_bytes_max: 8192,
    headers_max: 32,
};

fn parse(head: &[u8]) -> Result<Option<Request<'_>>, HttpError> {
    parse_request(head, &LIMITS)
}

fn parsed(head: &[u8]) -> Request<'_> {
    parse(head).expect("parse error").expect("incomplete head")
}

/// What Chrome sends to open a WebSocket, RFC 6455 §1.3 sample key included.
const BROWSER_UPGRADE: &[u8] = b"GET /ws?token=abc HTTP/1.1\r\n\
Host: gateway.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://app.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=1\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

/// `BROWSER_UPGRADE` with one header line replaced (or removed when `with` is empty).
fn upgrade_with(header: &str, with: &str) -> Vec<u8> {
    let text = std::str::from_utf8(BROWSER_UPGRADE).unwrap();
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        if line.starts_with(header) {
            if !with.is_empty() {
                out.push_str(with);
                out.push_str("\r\n");
            }
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// Splits a response into status, headers and body (with httparse, an independent parser).
fn response(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = res.parse(bytes).unwrap() else {
        panic!("incomplete response");
    };
    let headers = res
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    (res.code.unwrap(), headers, bytes[n..].to_vec())
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

// ---- Parsing ----

#[test]
fn browser_upgrade_request_is_accepted() {
    let req = parsed(BROWSER_UPGRADE);
    assert_eq!(req.method, Method::Get);
    assert_eq!(req.version_minor, 1);
    assert_eq!(req.path, "/ws");
    assert_eq!(req.query, Some("token=abc"));
    assert_eq!(req.head_len, BROWSER_UPGRADE.len());
    assert!(req.upgrade_websocket);
    assert!(req.keep_alive);
    assert_eq!(req.ws_key, Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
    assert_eq!(req.ws_version, Some(&b"13"[..]));
    assert_eq!(req.origin, Some("https://app.example.com"));
    assert_eq!(req.authorization, None);
    assert_eq!(req.content_length, None);
    assert!(!req.chunked);
    assert_eq!(check_upgrade(&req), Ok(()));
}

#[test]
fn upgrade_response_carries_the_rfc_accept_key_and_no_extension() {
    let mut out = Vec::new();
    write_upgrade_response(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==");
    // RFC 6455 §1.3 gives this exact key / accept pair.
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
}

#[test]
fn curl_get_is_parsed() {
    let head = b"GET /health?verbose=1 HTTP/1.1\r\n\
        Host: localhost:8080\r\n\
        User-Agent: curl/8.5.0\r\n\
        Accept: */*\r\n\r\nBODY";
    let req = parsed(head);
    assert_eq!(req.method, Method::Get);
    assert_eq!(req.path, "/health");
    assert_eq!(req.query, Some("verbose=1"));
    assert_eq!(req.head_len, head.len() - 4);
    assert!(req.keep_alive);
    assert!(!req.upgrade_websocket);
    assert_eq!(req.content_length, None);
    assert_eq!(check_upgrade(&req).unwrap_err().status(), 400);
}

#[test]
fn methods_are_recognised() {
    for (line, method) in [
        ("HEAD / HTTP/1.1", Method::Head),
        ("POST /publish HTTP/1.1", Method::Post),
        ("DELETE / HTTP/1.1", Method::Other),
    ] {
        let head = format!("{line}\r\nHost: x\r\n\r\n");
        assert_eq!(parsed(head.as_bytes()).method, method, "{line}");
    }
}

#[test]
fn keep_alive_defaults_depend_on_the_version() {
    assert!(!parsed(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(parsed(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(parsed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
    assert!(!parsed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!parsed(b"GET / HTTP/1.1\r\nHost: x\r\nconnection: upgrade, CLOSE\r\n\r\n").keep_alive);
}

#[test]
fn upgrade_tokens_are_case_insensitive_list_members() {
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\r\n";
    assert!(parsed(head).upgrade_websocket);
    // Firefox sends exactly this Connection value.
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive,upgrade\r\n\r\n";
    assert!(parsed(head).upgrade_websocket);
    // A token must match whole, not as a substring.
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocketx\r\nConnection: upgrade\r\n\r\n";
    assert!(!parsed(head).upgrade_websocket);
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgraded\r\n\r\n";
    assert!(!parsed(head).upgrade_websocket);
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
    assert!(!parsed(head).upgrade_websocket);
}

#[test]
fn non_utf8_origin_and_authorization_are_dropped() {
    let head =
        b"GET / HTTP/1.1\r\nHost: x\r\nOrigin: http://\xFF\r\nAuthorization: Bearer \xC3\r\n\r\n";
    let req = parsed(head);
    assert_eq!(req.origin, None);
    assert_eq!(req.authorization, None);
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nauthorization: Bearer t0k3n\r\n\r\n";
    assert_eq!(parsed(head).authorization, Some("Bearer t0k3n"));
}

#[test]
fn every_prefix_of_a_head_is_incomplete() {
    for end in 0..BROWSER_UPGRADE.len() {
        assert!(
            parse(&BROWSER_UPGRADE[..end]).unwrap().is_none(),
            "prefix of {end} bytes"
        );
    }
}

#[test]
fn too_many_headers_is_head_too_large() {
    let limits = HttpLimits {
        header_bytes_max: 8192,
        headers_max: 3,
    };
    let ok = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n";
    assert!(parse_request(ok, &limits).unwrap().is_some());
    let too_many = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let err = parse_request(too_many, &limits).unwrap_err();
    assert_eq!(err, HttpError::HeadTooLarge);
    assert_eq!(err.status(), 431);
}

#[test]
fn head_over_the_byte_limit_is_refused_without_its_end() {
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let exact = HttpLimits {
        header_bytes_max: head.len(),
        headers_max: 8,
    };
    assert!(parse_request(head, &exact).unwrap().is_some());
    let short = HttpLimits {
        header_bytes_max: head.len() - 1,
        headers_max: 8,
    };
    assert_eq!(
        parse_request(head, &short).unwrap_err(),
        HttpError::HeadTooLarge
    );
    // An endless header line is refused once the limit is reached, no CRLF CRLF needed.
    let mut endless = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    endless.resize(100, b'a');
    let limits = HttpLimits {
        header_bytes_max: 64,
        headers_max: 8,
    };
    assert_eq!(
        parse_request(&endless[..63], &limits)
            .unwrap()
            .map(|r| r.head_len),
        None
    );
    assert_eq!(
        parse_request(&endless, &limits).unwrap_err(),
        HttpError::HeadTooLarge
    );
}

#[test]
fn malformed_heads_are_rejected() {
    for head in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n"[..],
        b"GET / FOO/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let err = parse(head).unwrap_err();
        assert_eq!(
            err,
            HttpError::Malformed,
            "{:?}",
            String::from_utf8_lossy(head)
        );
        assert_eq!(err.status(), 400);
    }
}

#[test]
fn other_http_versions_are_unsupported() {
    for head in [
        &b"GET / HTTP/2.0\r\n\r\n"[..],
        b"GET / HTTP/1.2\r\n\r\n",
        b"GET / HTTP/0.9\r\n",
    ] {
        let err = parse(head).unwrap_err();
        assert_eq!(
            err,
            HttpError::BadVersion,
            "{:?}",
            String::from_utf8_lossy(head)
        );
        assert_eq!(err.status(), 505);
    }
}

// ---- Body framing and smuggling defences ----

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

// ---- Upgrade checks ----

#[test]
fn upgrade_requires_get() {
    let head = b"POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(check_upgrade(&parsed(head)), Err(UpgradeError::Method));
}

#[test]
fn upgrade_requires_http_1_1() {
    let head = b"GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert!(matches!(
        check_upgrade(&parsed(head)),
        Err(UpgradeError::BadRequest(_))
    ));
}

#[test]
fn upgrade_requires_the_upgrade_and_connection_headers() {
    for line in ["Upgrade", "Connection"] {
        let head = upgrade_with(line, "");
        assert!(matches!(
            check_upgrade(&parsed(&head)),
            Err(UpgradeError::BadRequest(_))
        ));
    }
}

#[test]
fn missing_key_is_a_bad_request() {
    let head = upgrade_with("Sec-WebSocket-Key", "");
    assert_eq!(
        check_upgrade(&parsed(&head)),
        Err(UpgradeError::BadRequest("missing Sec-WebSocket-Key"))
    );
}

#[test]
fn key_must_decode_to_16_bytes() {
    for key in [
        "abc",
        "dGhlIHNhbXBsZSBub25jZQ",     // Padding missing.
        "dGhlIHNhbXBsZSBub25jZQ=",    // Padding short.
        "dGhlIHNhbXBsZSBub25jZSE=",   // 17 bytes.
        "dGhlIHNhbXBsZSBub25j",       // 15 bytes.
        "dGhlIHNhbXBsZSBub25jZ*==",   // Not in the alphabet.
        "dGhlIHNhbXBsZSBub25jZQ====", // Too much padding.
    ] {
        let head = upgrade_with("Sec-WebSocket-Key", &format!("Sec-WebSocket-Key: {key}"));
        assert_eq!(
            check_upgrade(&parsed(&head)),
            Err(UpgradeError::BadRequest("invalid Sec-WebSocket-Key")),
            "{key}"
        );
    }
    let head = upgrade_with(
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==",
    );
    assert_eq!(check_upgrade(&parsed(&head)), Ok(()));
}

#[test]
fn wrong_or_missing_version_is_426() {
    for line in [
        "Sec-WebSocket-Version: 8",
        "Sec-WebSocket-Version: 13, 8",
        "",
    ] {
        let head = upgrade_with("Sec-WebSocket-Version", line);
        assert_eq!(
            check_upgrade(&parsed(&head)),
            Err(UpgradeError::Version),
            "{line:?}"
        );
    }
}

// ---- Responses ----

#[test]
fn write_response_writes_status_headers_and_body() {
    let mut out = Vec::new();
    write_response(
        &mut out,
        200,
        "application/json",
        b"{}",
        true,
        &[("Cache-Control", "no-store")],
    );
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\n\
          Content-Type: application/json\r\n\
          Content-Length: 2\r\n\
          Connection: keep-alive\r\n\
          Cache-Control: no-store\r\n\
          \r\n{}"
    );
}

#[test]
fn no_content_has_no_content_length() {
    let mut out = Vec::new();
    write_response(&mut out, 204, "text/plain", b"", false, &[]);
    assert_eq!(out, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
}

#[test]
fn every_status_used_has_its_reason_phrase() {
    for (status, reason) in [
        (101, "Switching Protocols"),
        (200, "OK"),
        (204, "No Content"),
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (411, "Length Required"),
        (413, "Content Too Large"),
        (426, "Upgrade Required"),
        (429, "Too Many Requests"),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (501, "Not Implemented"),
        (503, "Service Unavailable"),
        (505, "HTTP Version Not Supported"),
    ] {
        let mut out = Vec::new();
        write_response(&mut out, status, "", b"", true, &[]);
        let expected = format!("HTTP/1.1 {status} {reason}\r\n");
        assert!(out.starts_with(expected.as_bytes()), "{status}");
    }
}

fn json_body(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    (
        v["error"].as_str().unwrap().to_owned(),
        v["message"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn version_error_response_is_426_with_the_supported_version() {
    let mut out = Vec::new();
    upgrade_error_response(&mut out, UpgradeError::Version);
    let (status, headers, body) = response(&out);
    assert_eq!(status, 426);
    assert_eq!(header(&headers, "Sec-WebSocket-Version"), Some("13"));
    assert_eq!(header(&headers, "Connection"), Some("close"));
    assert_eq!(header(&headers, "Content-Type"), Some("application/json"));
    assert_eq!(
        header(&headers, "Content-Length"),
        Some(&*body.len().to_string())
    );
    assert_eq!(json_body(&body).0, "unsupported_websocket_version");
}

#[test]
fn method_error_response_is_405_allowing_get() {
    let mut out = Vec::new();
    upgrade_error_response(&mut out, UpgradeError::Method);
    let (status, headers, body) = response(&out);
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "Allow"), Some("GET"));
    assert_eq!(json_body(&body).0, "method_not_allowed");
}

#[test]
fn bad_request_response_carries_the_reason() {
    let mut out = Vec::new();
    upgrade_error_response(&mut out, UpgradeError::BadRequest("missing \"key\""));
    let (status, headers, body) = response(&out);
    assert_eq!(status, 400);
    assert_eq!(header(&headers, "Connection"), Some("close"));
    assert_eq!(
        json_body(&body),
        ("bad_request".into(), "missing \"key\"".into())
    );
}

#[test]
fn http_error_response_uses_the_error_status() {
    for err in [
        HttpError::Malformed,
        HttpError::HeadTooLarge,
        HttpError::BadVersion,
    ] {
        let mut out = Vec::new();
        http_error_response(&mut out, err);
        let (status, headers, body) = response(&out);
        assert_eq!(status, err.status());
        assert_eq!(header(&headers, "Connection"), Some("close"));
        assert_eq!(json_body(&body).0, err.code());
    }
}
