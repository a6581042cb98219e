//! The RFC 6455 client handshake (§4.1): the upgrade request with a random key, and the check
//! of the server's response (status 101, `Sec-WebSocket-Accept` derived from the key).

use super::fields::find;

/// Standard base64 (RFC 4648) for the 16-byte handshake key.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = match chunk.len() {
            3 => u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]),
            2 => u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8,
            _ => u32::from(chunk[0]) << 16,
        };
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The HTTP/1.1 upgrade request (RFC 6455 §4.1) and the key it carries; with `deflate`, it
/// offers permessage-deflate ([`super::deflate::OFFER_HEADER`]).
pub fn handshake_request(
    host: &str,
    path: &str,
    key_bytes: [u8; 16],
    deflate: bool,
) -> (Vec<u8>, String) {
    let key = base64(&key_bytes);
    let ext = if deflate {
        super::deflate::OFFER_HEADER
    } else {
        ""
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    );
    (req.into_bytes(), key)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Response status other than 101; carries the status code (0 if unparsable).
    Status(u16),
    /// 101 but `Sec-WebSocket-Accept` missing or wrong.
    Accept,
}

/// Looks for the end of the HTTP response head; returns its length if complete.
pub fn response_head_len(buf: &[u8]) -> Option<usize> {
    find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// Checks a complete response head: status 101 and the accept key derived from `key`.
pub fn check_response(head: &[u8], key: &str) -> Result<(), HandshakeError> {
    let status = head
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u16>().ok())
        .unwrap_or(0);
    if status != 101 {
        return Err(HandshakeError::Status(status));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = line.split_at(colon);
            if name.eq_ignore_ascii_case(b"sec-websocket-accept") {
                return if value[1..].trim_ascii() == expected.as_bytes() {
                    Ok(())
                } else {
                    Err(HandshakeError::Accept)
                };
            }
        }
    }
    Err(HandshakeError::Accept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // RFC 6455 §1.3's example key.
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn handshake_response_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(response_head_len(ok), Some(ok.len()));
        assert_eq!(check_response(ok, key), Ok(()));
        let wrong = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: xxx\r\n\r\n";
        assert_eq!(check_response(wrong, key), Err(HandshakeError::Accept));
        let notfound = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(
            check_response(notfound, key),
            Err(HandshakeError::Status(404))
        );
        assert_eq!(response_head_len(b"HTTP/1.1 101 OK\r\n"), None);
    }
}
