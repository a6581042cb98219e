//! The client's address behind proxies (`server.trusted_proxies`, `server.proxy_protocol`,
//! `server.forwarded_header`; docs/OPERATIONS.md "Behind a proxy"), on io_uring and epoll,
//! with proxies played by the test: connections from chosen loopback addresses (127.0.0.2 is
//! not 127.0.0.1), PROXY headers written by hand, forwarded headers spoofed by clients.
//! The real nginx and HAProxy in front of real nodes are tests/proxies.rs.
//!
//! Hostile PROXY headers (malformed, oversized, stalled, from untrusted peers) are here; the
//! parser alone is fuzzed (tests/fuzz, target `proxy`).

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{proxy::*, *};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::{MaybeTlsStream, client_async, tungstenite::client::IntoClientRequest};

both_drivers!(
    spoofed_forwarded_headers_do_not_escape_the_per_ip_limit,
    a_trusted_proxys_forwarded_header_names_the_client,
    forwarded_is_read_only_when_configured,
    proxy_headers_name_the_client_and_are_optional,
    proxy_headers_are_refused_from_untrusted_peers_and_when_off,
    malformed_oversized_and_stalled_headers_are_refused_and_counted,
);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A WebSocket to `server` from `from` (see [`ws_from`]).
async fn ws_via(
    server: &Server,
    from: &str,
    preamble: &[u8],
    headers: &[(&str, &str)],
) -> Result<Ws, u16> {
    ws_from(server.addr, from, preamble, headers).await
}

/// Sends `bytes` from `from` and reads until the server closes: its answer.
async fn exchange_from(server: &Server, from: &str, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = tcp_from(ip(from), server.addr).await;
    tcp.write_all(bytes).await.unwrap();
    read_to_close(&mut tcp).await
}

/// Sorted, to compare with what a test opened.
async fn ips(server: &Server) -> Vec<String> {
    let mut ips = connection_ips(server).await;
    ips.sort();
    ips
}

/// Waits until the server holds no connection but the scrape's own: every close handled.
async fn all_closed(server: &Server) {
    server
        .wait_metric_at_most("tickcast_connections", 1.0)
        .await;
}

const LIMIT_2: (&str, &str) = ("TICKCAST_LIMITS__CONNECTIONS_PER_IP_MAX", "2");
const TRUST_LOOPBACK_1: (&str, &str) = ("TICKCAST_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]");

/// With no trusted proxy (the default) a client's `X-Forwarded-For` and `Forwarded` are its
/// own words: ignored, so naming a new address per connection does not get a client past its
/// per-IP limit. The same from a peer that is not the trusted one.
async fn spoofed_forwarded_headers_do_not_escape_the_per_ip_limit(driver: Driver) {
    for env in [vec![LIMIT_2], vec![LIMIT_2, TRUST_LOOPBACK_1]] {
        let server = Server::start(driver, &env, &[]);
        let from = if env.len() == 1 {
            "127.0.0.1"
        } else {
            "127.0.0.2"
        };
        let mut open = Vec::new();
        for i in 0..2 {
            let spoof = format!("203.0.113.{i}");
            let fwd = format!("for={spoof}");
            let headers = [("X-Forwarded-For", spoof.as_str()), ("Forwarded", &fwd)];
            open.push(ws_via(&server, from, b"", &headers).await.unwrap());
        }
        let headers = [("X-Forwarded-For", "203.0.113.77")];
        assert_eq!(ws_via(&server, from, b"", &headers).await.err(), Some(429));
        assert_eq!(ips(&server).await, [from, from]);
        let forwarded = server
            .metric_with("tickcast_proxy_events_total", "event", "forwarded")
            .await;
        assert_eq!(forwarded, 0.0);
    }
}

/// From the trusted proxy, the right-most address not trusted is the client: it is what
/// `/v1/connections` shows and what the per-IP limit counts, and a closed connection gives
/// its count back to that address (none is left behind under the proxy's or the client's).
/// A plain request's `X-Forwarded-For` decides the loopback rule of `/metrics`.
async fn a_trusted_proxys_forwarded_header_names_the_client(driver: Driver) {
    let server = Server::start(driver, &[LIMIT_2, TRUST_LOOPBACK_1], &[]);
    let chain = [("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 127.0.0.1")];
    for _round in 0..2 {
        let a = ws_via(&server, "127.0.0.1", b"", &chain).await.unwrap();
        let b = ws_via(&server, "127.0.0.1", b"", &chain).await.unwrap();
        assert_eq!(
            ws_via(&server, "127.0.0.1", b"", &chain).await.err(),
            Some(429)
        );
        let other = [("X-Forwarded-For", "198.51.100.8")];
        let c = ws_via(&server, "127.0.0.1", b"", &other).await.unwrap();
        assert_eq!(
            ips(&server).await,
            ["198.51.100.7", "198.51.100.7", "198.51.100.8"]
        );
        drop((a, b, c));
        all_closed(&server).await;
    }
    // Not an address where the client should be: the proxy's own stands. (Admitted under the
    // limit of 2: none of the eight connections moved away from 127.0.0.1 left a count there.)
    let _d = ws_via(&server, "127.0.0.1", b"", &[("X-Forwarded-For", "unknown")])
        .await
        .unwrap();
    assert_eq!(ips(&server).await, ["127.0.0.1"]);
    let events = |e| server.metric_with("tickcast_proxy_events_total", "event", e);
    assert_eq!(events("forwarded").await, 8.0);
    assert_eq!(events("forwarded_invalid").await, 1.0);
    // The loopback rule of health_metrics judges the client, not the proxy on loopback.
    for (xff, status) in [("198.51.100.7", 401), ("127.0.0.5", 200)] {
        let headers = format!("X-Forwarded-For: {xff}\r\n");
        let got = server.http_with("GET", "/metrics", None, &headers).await.0;
        assert_eq!(got, status, "/metrics for {xff}");
    }
}

/// With `forwarded_header = "forwarded"`, RFC 7239 `for=` names the client and a client's
/// `X-Forwarded-For` passed on by the proxy is not read.
async fn forwarded_is_read_only_when_configured(driver: Driver) {
    let env = [
        TRUST_LOOPBACK_1,
        ("TICKCAST_SERVER__FORWARDED_HEADER", "forwarded"),
    ];
    let server = Server::start(driver, &env, &[]);
    let headers = [
        ("X-Forwarded-For", "6.6.6.6"),
        (
            "Forwarded",
            "for=1.1.1.1, for=\"[2001:db8::7]:4711\";proto=http",
        ),
    ];
    let _ws = ws_via(&server, "127.0.0.1", b"", &headers).await.unwrap();
    assert_eq!(ips(&server).await, ["2001:db8::7"]);
}

/// A trusted peer's PROXY header (v1 or v2, IPv4 or IPv6, arriving a byte at a time or
/// whole) names the client; a `LOCAL` header (a health check) and no header at all keep the
/// peer's address; the header's source, not trusted, makes any `X-Forwarded-For` after it
/// the client's own words. The per-IP limit counts the header's address.
async fn proxy_headers_name_the_client_and_are_optional(driver: Driver) {
    let env = [
        LIMIT_2,
        TRUST_LOOPBACK_1,
        ("TICKCAST_SERVER__PROXY_PROTOCOL", "true"),
    ];
    let server = Server::start(driver, &env, &[]);
    let dst = server.addr;
    let src = |s: &str| s.parse::<SocketAddr>().unwrap();
    let v1 = proxy_v1(src("192.0.2.10:5555"), dst);
    // A byte at a time: every prefix is "incomplete", none an error.
    let mut tcp = tcp_from(ip("127.0.0.1"), dst).await;
    for b in &v1 {
        tcp.write_all(std::slice::from_ref(b)).await.unwrap();
        tcp.flush().await.unwrap();
    }
    let req = server.ws_url().into_client_request().unwrap();
    let (mut a, _) = client_async(req, MaybeTlsStream::Plain(tcp)).await.unwrap();
    assert_eq!(recv_json(&mut a).await["op"], "welcome");
    let b = ws_via(&server, "127.0.0.1", &v1, &[]).await.unwrap();
    assert_eq!(
        ws_via(&server, "127.0.0.1", &v1, &[]).await.err(),
        Some(429)
    );
    let v2 = proxy_v2(Some(src("[2001:db8::10]:6000")), src("[2001:db8::1]:8080"));
    let c = ws_via(&server, "127.0.0.1", &v2, &[]).await.unwrap();
    let v2 = proxy_v2(Some(src("192.0.2.11:1")), dst);
    let spoof = [("X-Forwarded-For", "6.6.6.6")];
    let d = ws_via(&server, "127.0.0.1", &v2, &spoof).await.unwrap();
    let e = ws_via(&server, "127.0.0.1", b"", &[]).await.unwrap();
    assert_eq!(
        ips(&server).await,
        [
            "127.0.0.1",
            "192.0.2.10",
            "192.0.2.10",
            "192.0.2.11",
            "2001:db8::10"
        ]
    );
    // A health check as HAProxy sends it: LOCAL, the proxy's own address (loopback).
    let mut check = proxy_v2(None, dst);
    check.extend_from_slice(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, body) = parse_http(&exchange_from(&server, "127.0.0.1", &check).await);
    assert_eq!(status, 200, "{body}");
    let events = |e| server.metric_with("tickcast_proxy_events_total", "event", e);
    assert_eq!(events("header").await, 5.0);
    assert_eq!(events("header_local").await, 1.0);
    // Every count given back where it was taken: the limit admits two again.
    drop((a, b, c, d, e));
    all_closed(&server).await;
    let _a = ws_via(&server, "127.0.0.1", &v1, &[]).await.unwrap();
    let _b = ws_via(&server, "127.0.0.1", &v1, &[]).await.unwrap();
}

/// A PROXY header from a peer that is not trusted, or with `proxy_protocol` off, is refused
/// with a 400 that says why, and counted; the connection is not read on as HTTP.
async fn proxy_headers_are_refused_from_untrusted_peers_and_when_off(driver: Driver) {
    let on = [
        TRUST_LOOPBACK_1,
        ("TICKCAST_SERVER__PROXY_PROTOCOL", "true"),
    ];
    let off = [TRUST_LOOPBACK_1];
    for (env, from) in [(&on[..], "127.0.0.2"), (&off[..], "127.0.0.1")] {
        let server = Server::start(driver, env, &[]);
        let src = "203.0.113.1:1".parse().unwrap();
        for header in [proxy_v1(src, server.addr), proxy_v2(Some(src), server.addr)] {
            let mut bytes = header;
            bytes.extend_from_slice(&upgrade_request(""));
            let (status, body) = parse_http(&exchange_from(&server, from, &bytes).await);
            assert_eq!(status, 400);
            assert!(body.contains("not accepted from this address"), "{body}");
        }
        let untrusted = server
            .metric_with("tickcast_proxy_events_total", "event", "header_untrusted")
            .await;
        assert_eq!(untrusted, 2.0);
        assert!(connection_ips(&server).await.is_empty());
    }
}

/// A trusted peer's malformed header, one over its size bound (a v2 length field is enough:
/// the rest is never waited for), and one that stalls until the handshake deadline.
async fn malformed_oversized_and_stalled_headers_are_refused_and_counted(driver: Driver) {
    let env = [
        TRUST_LOOPBACK_1,
        ("TICKCAST_SERVER__PROXY_PROTOCOL", "true"),
        ("TICKCAST_TIMEOUTS__HANDSHAKE_MS", "500"),
    ];
    let mut server = Server::start(driver, &env, &[]);
    let mut huge_v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    huge_v2.extend_from_slice(&u16::MAX.to_be_bytes());
    let long_v1 = format!("PROXY UNKNOWN {}", "f".repeat(200)).into_bytes();
    for (bytes, reason) in [
        (
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1\r\n".to_vec(),
            "expected TCP4",
        ),
        (huge_v2, "too large"),
        (long_v1, "too large"),
    ] {
        let (status, body) = parse_http(&exchange_from(&server, "127.0.0.1", &bytes).await);
        assert_eq!(status, 400);
        assert!(body.contains(reason), "{body}");
    }
    // Part of a header, then nothing: closed at the deadline, unanswered.
    let answer = exchange_from(&server, "127.0.0.1", b"PROXY TCP4 192.0.2").await;
    assert!(answer.is_empty(), "{answer:?}");
    let events = |e| server.metric_with("tickcast_proxy_events_total", "event", e);
    assert_eq!(events("header_invalid").await, 1.0);
    assert_eq!(events("header_too_large").await, 2.0);
    assert_eq!(events("header_timeout").await, 1.0);
    server.assert_alive();
}
