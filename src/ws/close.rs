//! Close codes and close frame payload validation (RFC 6455 §5.5.1, §7.4).
//!
//! A client close payload is either empty or a 2-byte big-endian status code followed by a
//! UTF-8 reason. Codes the client must never send (reserved, "no status" placeholders,
//! unassigned ranges) fail the connection with 1002; a reason that is not UTF-8 with 1007.

use crate::ws::frame::Violation;

/// Close codes tickcast sends (docs/PROTOCOL.md).
pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_PAYLOAD: u16 = 1007;
pub const POLICY: u16 = 1008;
pub const TOO_LARGE: u16 = 1009;
pub const INTERNAL: u16 = 1011;
/// RFC 6455 §7.4.1 (IANA registry): the service is restarting; reconnect (to the process that
/// took over). Sent while draining (SIGUSR2).
pub const SERVICE_RESTART: u16 = 1012;
pub const OVERLOADED: u16 = 1013;
/// Authentication required, or the token expired and was not refreshed in time.
pub const UNAUTHORIZED: u16 = 4001;
/// The connection may not do what it asked for and has nothing else to do here (a Binance URL
/// naming a stream it may not read).
pub const FORBIDDEN: u16 = 4003;
pub const SLOW_CONSUMER: u16 = 4008;
/// Kept sending after being told `rate_limited`.
pub const RATE_LIMITED: u16 = 4029;

/// Whether a peer may put `code` in a close frame.
///
/// RFC 6455 §7.4.2: "Status codes in the range 0-999 are not used." 1004 is reserved, and
/// 1005, 1006 and 1015 "MUST NOT be set as a status code in a Close control frame by an
/// endpoint". 1000-1003 and 1007-1011 are defined in §7.4.1; 1012-1014 were registered later
/// with IANA (service restart, try again later, bad gateway). 1016-2999 are reserved for
/// future protocol use, 3000-3999 are registered by libraries and frameworks, 4000-4999 are
/// private use; codes from 5000 on are outside every range.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Validates a client close payload: `Ok(None)` when empty, otherwise the code and reason.
///
/// RFC 6455 §5.5.1: "If there is a body, the first two bytes of the body MUST be a 2-byte
/// unsigned integer (in network byte order) representing a status code [...] Following the
/// 2-byte integer, the body MAY contain UTF-8-encoded data".
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol("close payload of 1 byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(Violation::Protocol("invalid close code"));
            }
            // The frame is complete, so a reason cut inside a character is invalid too.
            let reason = std::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_follow_section_7_4() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ] {
            assert!(is_valid_close_code(code), "{code}");
        }
        for code in [3000, 3999, 4000, 4008, 4999] {
            assert!(is_valid_close_code(code), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_close_code(code), "{code}");
        }
    }

    #[test]
    fn empty_payload_has_no_code() {
        assert_eq!(parse_close_payload(b""), Ok(None));
    }

    #[test]
    fn one_byte_payload_is_a_protocol_error() {
        let err = parse_close_payload(&[0x03]).unwrap_err();
        assert_eq!(err.close_code(), PROTOCOL_ERROR);
    }

    #[test]
    fn code_and_reason_are_returned() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice("bye ☺".as_bytes());
        assert_eq!(parse_close_payload(&payload), Ok(Some((1000, "bye ☺"))));
        assert_eq!(
            parse_close_payload(&4008u16.to_be_bytes()),
            Ok(Some((4008, "")))
        );
    }

    #[test]
    fn reserved_codes_are_protocol_errors() {
        for code in [1005u16, 1006, 1015, 999, 5000] {
            let err = parse_close_payload(&code.to_be_bytes()).unwrap_err();
            assert_eq!(err.close_code(), PROTOCOL_ERROR, "{code}");
        }
    }

    #[test]
    fn non_utf8_reason_is_invalid_payload() {
        let err = parse_close_payload(&[0x03, 0xE8, b'a', 0xFF]).unwrap_err();
        assert_eq!(err.close_code(), INVALID_PAYLOAD);
        // A reason cut inside a character is just as invalid: the frame is complete.
        let err = parse_close_payload(&[0x03, 0xE8, 0xE2, 0x82]).unwrap_err();
        assert_eq!(err.close_code(), INVALID_PAYLOAD);
    }
}
