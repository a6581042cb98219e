//! Tests for request parsing, the upgrade check and response writing.
//!
//! This file holds the shared helpers (parsing with test limits, a browser's upgrade request
//! and variants of it); the tests are in `tests/`, one file a topic: [`parsing`],
//! [`body_framing`] (smuggling defences), [`upgrade`] and [`responses`].

use super::*;

mod body_framing;
mod parsing;
mod responses;
mod upgrade;

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
