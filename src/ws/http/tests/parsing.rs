//! Parsing request heads: a browser's upgrade, curl, methods, versions, keep-alive, header
//! tokens, incomplete heads, and the header count and byte limits.

use super::*;

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
    write_upgrade_response(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==", None);
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
fn extension_header_lines_are_kept_in_order() {
    let req = parsed(BROWSER_UPGRADE);
    let lines: Vec<&[u8]> = req.ws_extensions.iter().collect();
    assert_eq!(lines, [&b"permessage-deflate; client_max_window_bits"[..]]);

    let mut head = upgrade_with("Sec-WebSocket-Extensions", "Sec-WebSocket-Extensions: a ");
    head.truncate(head.len() - 2);
    for i in 0..HEADER_LINES_CAP + 2 {
        head.extend_from_slice(format!("sec-websocket-extensions:  x{i}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let req = parsed(&head);
    let lines: Vec<&[u8]> = req.ws_extensions.iter().collect();
    // Trimmed, in order, the lines past the cap ignored.
    assert_eq!(lines, [&b"a"[..], b"x0", b"x1", b"x2"]);
    assert!(
        parsed(&upgrade_with("Sec-WebSocket-Extensions", ""))
            .ws_extensions
            .is_empty()
    );
}

/// A proxy appends its `X-Forwarded-For` line after the client's own: the last lines are the
/// ones kept, however many the client sent before.
#[test]
fn forwarded_header_lines_keep_the_last_ones() {
    let mut head = BROWSER_UPGRADE[..BROWSER_UPGRADE.len() - 2].to_vec();
    for i in 0..HEADER_LINES_CAP + 2 {
        head.extend_from_slice(format!("X-Forwarded-For: 10.0.0.{i}\r\n").as_bytes());
    }
    head.extend_from_slice(b"forwarded: for=192.0.2.1\r\n\r\n");
    let req = parsed(&head);
    let lines: Vec<&[u8]> = req.x_forwarded_for.iter().collect();
    assert_eq!(
        lines,
        [&b"10.0.0.2"[..], b"10.0.0.3", b"10.0.0.4", b"10.0.0.5"]
    );
    let lines: Vec<&[u8]> = req.forwarded.iter().collect();
    assert_eq!(lines, [&b"for=192.0.2.1"[..]]);
    assert_eq!(parsed(BROWSER_UPGRADE).x_forwarded_for.iter().count(), 0);
}

#[test]
fn upgrade_response_can_accept_permessage_deflate() {
    let req = parsed(BROWSER_UPGRADE);
    let agreed = crate::ws::deflate::negotiate(&req, true).unwrap();
    assert!(agreed.is_some());
    let mut out = Vec::new();
    write_upgrade_response(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==", agreed);
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
          Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
          client_no_context_takeover\r\n\r\n"
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
