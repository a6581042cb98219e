//! Negotiation: the offers real clients send, RFC 7692 §7's decline conditions, RFC 6455
//! §9.1's grammar, and the response line.

use super::*;

fn offer(lines: &[&str]) -> Result<Option<Agreed>, Malformed> {
    negotiate_values(lines.iter().map(|l| l.as_bytes()))
}

fn agreed(bits: Option<u8>) -> Option<Agreed> {
    Some(Agreed {
        server_max_window_bits: bits.map(|b| WindowBits::new(b).unwrap()),
    })
}

fn response(a: Agreed) -> String {
    let mut out = Vec::new();
    write_response_header(&mut out, a);
    String::from_utf8(out).unwrap()
}

/// (offer, expected): what clients in the wild send, one header line each.
const CLIENTS: &[(&str, &str, Option<Option<u8>>)] = &[
    // Chromium, Python websockets (default factory) and Node ws all send this.
    (
        "chromium/websockets/ws",
        "permessage-deflate; client_max_window_bits",
        Some(None),
    ),
    // Firefox and Safari.
    ("firefox", "permessage-deflate", Some(None)),
    // Autobahn 13.x offers.
    (
        "autobahn no context takeover",
        "permessage-deflate; client_no_context_takeover; client_max_window_bits",
        Some(None),
    ),
    (
        "autobahn window 9",
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits",
        Some(Some(9)),
    ),
    (
        "autobahn window 15",
        "permessage-deflate; client_max_window_bits; server_max_window_bits=15",
        Some(Some(15)),
    ),
    (
        "autobahn server no context takeover",
        "permessage-deflate; client_max_window_bits; server_no_context_takeover",
        Some(None),
    ),
    (
        "client window value",
        "permessage-deflate; client_max_window_bits=10",
        Some(None),
    ),
    // 8 is a valid value the server cannot honour: declined, no other offer.
    (
        "autobahn window 8",
        "permessage-deflate; client_max_window_bits; server_max_window_bits=8",
        None,
    ),
    ("no offer", "x-webkit-deflate-frame", None),
];

#[test]
fn offers_real_clients_send() {
    for (who, line, expected) in CLIENTS {
        let expected = expected.map(|bits| agreed(bits).unwrap());
        assert_eq!(offer(&[line]), Ok(expected), "{who}: {line}");
    }
}

#[test]
fn the_first_offer_the_server_can_honour_wins() {
    // Autobahn 13.7: three offers in one header, the first asks for a window of 8.
    let line = "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
                server_max_window_bits=8, permessage-deflate; client_no_context_takeover; \
                server_max_window_bits=10, permessage-deflate";
    assert_eq!(offer(&[line]), Ok(agreed(Some(10))));
    // Across header lines, in order (RFC 6455 §9.1: one list split over lines).
    assert_eq!(
        offer(&[
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=12",
            "permessage-deflate",
        ]),
        Ok(agreed(Some(12)))
    );
    // Unknown extensions before a valid offer are skipped, whatever their parameters.
    assert_eq!(
        offer(&["x-foo; bar=1; baz=\"q\", permessage-deflate; client_max_window_bits"]),
        Ok(agreed(None))
    );
    assert_eq!(
        offer(&[
            "x-foo",
            "mux; max-channels=4, permessage-deflate; server_max_window_bits=11"
        ]),
        Ok(agreed(Some(11)))
    );
}

#[test]
fn offers_the_rfc_says_to_decline_are_skipped() {
    // RFC 7692 §7: unknown parameter, invalid value, duplicate parameter, unsupported.
    let declined = [
        "permessage-deflate; foo",
        "permessage-deflate; foo=1",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=+9",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=09",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=true",
        "permessage-deflate; client_max_window_bits; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        // Names are compared exactly (see negotiate.rs).
        "permessage-deflate; Server_Max_Window_Bits=10",
        "Permessage-Deflate",
    ];
    for line in declined {
        assert_eq!(offer(&[line]), Ok(None), "{line}");
        // ... and the next offer is considered.
        let two = format!("{line}, permessage-deflate; server_max_window_bits=13");
        assert_eq!(offer(&[&two]), Ok(agreed(Some(13))), "{two}");
    }
}

#[test]
fn quoted_values_unescape_to_tokens() {
    // RFC 6455 §9.1: "the value after quoted-string unescaping MUST conform to the 'token'
    // ABNF".
    assert_eq!(
        offer(&["permessage-deflate; server_max_window_bits=\"10\""]),
        Ok(agreed(Some(10)))
    );
    assert_eq!(
        offer(&["permessage-deflate; server_max_window_bits=\"1\\1\""]),
        Ok(agreed(Some(11)))
    );
    assert_eq!(
        offer(&["permessage-deflate; client_max_window_bits=\"15\""]),
        Ok(agreed(None))
    );
    // A quoted comma or semicolon inside another extension's value is not a token: malformed.
    for line in [
        "x-foo; a=\"b,c\", permessage-deflate",
        "x-foo; a=\"b;c\"",
        "x-foo; a=\"b c\"",
        "x-foo; a=\"\"",
        "x-foo; a=\"b",
        "x-foo; a=\"b\\\"",
    ] {
        assert!(offer(&[line]).is_err(), "{line}");
    }
}

#[test]
fn whitespace_and_null_elements_follow_rfc_2616() {
    // Implied *LWS around separators, and null list elements (RFC 2616 §2.1).
    for line in [
        "permessage-deflate ; server_max_window_bits = 12",
        "\tpermessage-deflate;server_max_window_bits=12\t",
        ", ,permessage-deflate; server_max_window_bits=12,,",
    ] {
        assert_eq!(offer(&[line]), Ok(agreed(Some(12))), "{line:?}");
    }
}

#[test]
fn malformed_headers_fail_the_handshake() {
    // RFC 6455 §9.1: "the recipient of such malformed data MUST immediately _Fail the
    // WebSocket Connection_", even after an acceptable offer.
    for line in [
        "",
        " ",
        ",",
        "permessage-deflate;",
        "permessage-deflate; ;server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate server_no_context_takeover",
        "permessage-deflate, x/y",
        "permessage-deflate; a=b=c",
        "perm\u{e9}ssage-deflate",
        "permessage-deflate; =10",
        "\"permessage-deflate\"",
    ] {
        assert!(offer(&[line]).is_err(), "{line:?}");
        assert!(offer(&["permessage-deflate", line]).is_err(), "{line:?}");
    }
}

#[test]
fn the_header_is_ignored_when_deflate_is_disabled() {
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Extensions: ;;;\r\n\
                 Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
    let limits = crate::ws::http::HttpLimits {
        header_bytes_max: 8192,
        headers_max: 32,
    };
    let req = crate::ws::http::parse_request(head, &limits)
        .unwrap()
        .unwrap();
    assert_eq!(negotiate(&req, false), Ok(None));
    assert_eq!(
        negotiate(&req, true),
        Err(Malformed("extension name is not a token"))
    );
    let err: crate::ws::http::UpgradeError = negotiate(&req, true).unwrap_err().into();
    assert_eq!(err.status(), 400);
}

#[test]
fn response_line_always_carries_both_no_context_takeover_parameters() {
    assert_eq!(
        response(agreed(None).unwrap()),
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
         client_no_context_takeover\r\n"
    );
    assert_eq!(
        response(agreed(Some(9)).unwrap()),
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
         client_no_context_takeover; server_max_window_bits=9\r\n"
    );
    assert_eq!(agreed(Some(9)).unwrap().window_bits(), WindowBits::MIN);
    assert_eq!(agreed(None).unwrap().window_bits(), WindowBits::MAX);
}

#[test]
fn window_bits_are_9_to_15() {
    assert_eq!(WindowBits::new(8), None);
    assert_eq!(WindowBits::new(16), None);
    assert_eq!(WindowBits::new(9), Some(WindowBits::MIN));
    assert_eq!(WindowBits::new(15), Some(WindowBits::MAX));
}
