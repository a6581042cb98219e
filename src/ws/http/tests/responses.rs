//! Response writing: status line, headers and body, reason phrases, and the error responses
//! (426, 405, 400 and the HTTP errors' statuses), read back with httparse.

use super::*;

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
