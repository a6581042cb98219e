//! The WebSocket upgrade check (RFC 6455 §4.2.1): method, version, `Upgrade`/`Connection`,
//! the key and `Sec-WebSocket-Version`.

use super::*;

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
