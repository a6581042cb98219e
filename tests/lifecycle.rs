//! The connection lifecycle as a property (issue 11): whatever happens to connections (HTTP
//! requests kept alive or cut short, upgrades with and without a token, subscriptions, partial
//! frames and requests, protocol violations, close frames, EOFs, resets, slow consumers,
//! server timeouts, operator disconnects), once they are all gone every count the server keeps
//! for them is back where it was: open connections, handshake slots, partial-message bytes,
//! subscriptions, and the per-IP and per-user connection counts (checked by opening as many
//! connections as those limits allow). One server per driver lives through all the cases, so a
//! leak anywhere accumulates and fails a later case.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// What a client does next.
#[derive(Debug, Clone)]
enum Event {
    Connect {
        small_buffer: bool,
    },
    HttpKeepAlive,
    HttpPartial,
    HttpGarbage,
    Upgrade {
        with_key: bool,
    },
    Subscribe,
    WsPartialFrame,
    WsFragmentStart,
    WsClose,
    WsViolation,
    /// Floods the client's own topic while it does not read: a slow consumer.
    Flood,
    /// Waits until the server closes this client by a deadline of its own.
    AwaitServerClose,
    Shutdown,
    Reset,
    Drop,
    /// `POST /v1/disconnect` for the API key's user.
    AdminDisconnect,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => any::<bool>().prop_map(|small_buffer| Event::Connect { small_buffer }),
        2 => Just(Event::HttpKeepAlive),
        1 => Just(Event::HttpPartial),
        1 => Just(Event::HttpGarbage),
        4 => any::<bool>().prop_map(|with_key| Event::Upgrade { with_key }),
        3 => Just(Event::Subscribe),
        1 => Just(Event::WsPartialFrame),
        1 => Just(Event::WsFragmentStart),
        1 => Just(Event::WsClose),
        1 => Just(Event::WsViolation),
        1 => Just(Event::Flood),
        3 => Just(Event::AwaitServerClose),
        1 => Just(Event::Shutdown),
        1 => Just(Event::Reset),
        1 => Just(Event::Drop),
        1 => Just(Event::AdminDisconnect),
    ]
}

/// Where a client stands, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    None,
    /// Connected, HTTP phase (possibly after keep-alive requests).
    Http,
    /// Sent something the server will close on (a partial request or frame, garbage, a close).
    Ending,
    Ws,
}

struct Client {
    sock: Option<TcpStream>,
    at: At,
    /// Its topic, subscribed while a WebSocket.
    topic: String,
}

/// The clients' own source address: the per-IP count the case checks is theirs alone (the
/// harness's scrapes and the publisher come from 127.0.0.1).
const CLIENT_IP: &str = "127.0.0.2";

async fn connect_from_client_ip(server: &Server, small_buffer: bool) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{CLIENT_IP}:0").parse().unwrap())
        .unwrap();
    if small_buffer {
        sock.set_recv_buffer_size(4096).unwrap();
    }
    sock.connect(server.addr).await.unwrap()
}

/// The limits the case checks by using them all at the end.
const PER_IP: usize = 6;
const PER_USER: usize = 3;
const KEY: &str = "lifecycle-key";

fn env() -> Vec<(&'static str, String)> {
    let sha = sha256_hex(KEY);
    vec![
        ("TICKCAST_TIMEOUTS__HANDSHAKE_MS", "300".into()),
        ("TICKCAST_TIMEOUTS__CLOSE_MS", "200".into()),
        ("TICKCAST_TIMEOUTS__MESSAGE_MS", "300".into()),
        ("TICKCAST_LIMITS__WRITE_QUEUE_BYTES_MAX", "65536".into()),
        (
            "TICKCAST_LIMITS__CONNECTIONS_PER_IP_MAX",
            PER_IP.to_string(),
        ),
        (
            "TICKCAST_LIMITS__CONNECTIONS_PER_USER_MAX",
            PER_USER.to_string(),
        ),
        (
            "TICKCAST_AUTH__API_KEYS",
            format!(
                "[{{name=\"test-admin\",sha256=\"944650a7cd0f9e14d5c4fb15edbffb7fa45fb9ed36a4fa9be3d7e5476ae51bd9\",admin=true,pubs=[\">\"]}},\
                  {{name=\"lc-user\",sha256=\"{sha}\",subs=[\">\"],pubs=[\">\"]}}]"
            ),
        ),
    ]
}

fn sha256_hex(key: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(key.as_bytes())?;
            c.wait_with_output()
        })
        .expect("tickcast hash-key");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .strip_prefix("sha256: ")
        .unwrap()
        .to_string()
}

fn upgrade_request(with_key: bool) -> Vec<u8> {
    let path = if with_key {
        format!("/ws?token={KEY}")
    } else {
        "/ws".into()
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Reads an HTTP response head; its status, or `None` if the server closed first.
async fn read_head(s: &mut TcpStream) -> Option<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(DEADLINE, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            Ok(_) => return None,
            Err(_) => panic!("no response within the deadline"),
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = tokio::time::timeout(DEADLINE, s.read_exact(&mut body)).await;
    Some(status)
}

async fn apply(server: &Server, publisher: &mut Ws, c: &mut Client, ev: &Event) {
    // An event that needs a connection, or a WebSocket, first gets one: most sequences then
    // do something at every step.
    let needs_ws = matches!(
        ev,
        Event::Subscribe
            | Event::WsPartialFrame
            | Event::WsFragmentStart
            | Event::WsClose
            | Event::WsViolation
            | Event::Flood
    );
    let needs_http = matches!(
        ev,
        Event::HttpKeepAlive | Event::HttpPartial | Event::HttpGarbage | Event::Upgrade { .. }
    );
    if (needs_ws || needs_http) && c.at == At::None {
        Box::pin(apply(
            server,
            publisher,
            c,
            &Event::Connect {
                small_buffer: c.topic.ends_with('1'),
            },
        ))
        .await;
    }
    if needs_ws && c.at == At::Http {
        let with_key = c.topic.ends_with('0') || c.topic.ends_with('2');
        Box::pin(apply(server, publisher, c, &Event::Upgrade { with_key })).await;
    }
    match (ev, c.at) {
        (Event::Connect { small_buffer }, At::None) => {
            c.sock = Some(connect_from_client_ip(server, *small_buffer).await);
            c.at = At::Http;
        }
        (Event::HttpKeepAlive, At::Http) => {
            let s = c.sock.as_mut().unwrap();
            let _ = s
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            if read_head(s).await.is_none() {
                c.at = At::Ending;
            }
        }
        (Event::HttpPartial, At::Http) => {
            let _ = c.sock.as_mut().unwrap().write_all(b"GET /heal").await;
            c.at = At::Ending;
        }
        (Event::HttpGarbage, At::Http) => {
            let _ = c
                .sock
                .as_mut()
                .unwrap()
                .write_all(b"\x16\x03\x01\r\n\r\n")
                .await;
            c.at = At::Ending;
        }
        (Event::Upgrade { with_key }, At::Http) => {
            let s = c.sock.as_mut().unwrap();
            let _ = s.write_all(&upgrade_request(*with_key)).await;
            // 101, or a refusal (a limit: per IP, per user) that closes the connection.
            c.at = match read_head(s).await {
                Some(101) => At::Ws,
                _ => At::Ending,
            };
        }
        (Event::Subscribe, At::Ws) => {
            let op = json!({"op":"subscribe","topics":[c.topic, "lc.all.>"]}).to_string();
            let _ = c
                .sock
                .as_mut()
                .unwrap()
                .write_all(&client_frame(true, 0, 1, op.as_bytes(), true))
                .await;
        }
        (Event::WsPartialFrame, At::Ws) => {
            let frame = client_frame(true, 0, 1, &[b' '; 500], true);
            let _ = c.sock.as_mut().unwrap().write_all(&frame[..100]).await;
            c.at = At::Ending;
        }
        (Event::WsFragmentStart, At::Ws) => {
            let frame = client_frame(false, 0, 1, b"{\"op\":", true);
            let _ = c.sock.as_mut().unwrap().write_all(&frame).await;
            c.at = At::Ending;
        }
        (Event::WsClose, At::Ws) => {
            let frame = client_frame(true, 0, 8, &1000u16.to_be_bytes(), true);
            let _ = c.sock.as_mut().unwrap().write_all(&frame).await;
            c.at = At::Ending;
        }
        (Event::WsViolation, At::Ws) => {
            let frame = client_frame(true, 0, 1, b"{}", false);
            let _ = c.sock.as_mut().unwrap().write_all(&frame).await;
            c.at = At::Ending;
        }
        (Event::Flood, At::Ws) => {
            // 30 KB frames to a queue bound of 64 KiB, to a client that is not reading (and
            // whose kernel buffers may be small): it is likely cut as a slow consumer.
            let data = "f".repeat(30_000);
            for _ in 0..12 {
                send_json(
                    publisher,
                    json!({"op":"publish","topic":c.topic,"data":data}),
                )
                .await;
            }
        }
        (Event::AwaitServerClose, At::Ending) => {
            let s = c.sock.as_mut().unwrap();
            let mut buf = [0u8; 4096];
            let closed = tokio::time::timeout(DEADLINE, async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(
                closed.is_ok(),
                "the server never closed an ending connection"
            );
            c.sock = None;
            c.at = At::None;
        }
        (Event::Shutdown, At::Http | At::Ws | At::Ending) => {
            let _ = c.sock.as_mut().unwrap().shutdown().await;
            c.at = At::Ending;
        }
        (Event::Reset, At::Http | At::Ws | At::Ending) => {
            let s = c.sock.take().unwrap();
            // SO_LINGER 0: the close is a TCP reset.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
            c.at = At::None;
        }
        (Event::Drop, At::Http | At::Ws | At::Ending) => {
            c.sock = None;
            c.at = At::None;
        }
        (Event::AdminDisconnect, _) => {
            let (status, body) = server
                .http("POST", "/v1/disconnect", Some(r#"{"user":"lc-user"}"#))
                .await;
            assert_eq!(status, 200, "{body}");
        }
        _ => {}
    }
}

/// Polls `/metrics` until the server holds nothing for the clients that are gone: the scrape's
/// own connection (in its HTTP phase) and the publisher's WebSocket only.
async fn wait_baseline(server: &Server) {
    let start = Instant::now();
    loop {
        let text = server.http("GET", "/metrics", None).await.1;
        let m = |name| sum_metric(&text, name, None);
        let now = (
            m("tickcast_connections"),
            m("tickcast_handshakes"),
            m("tickcast_partial_bytes"),
            m("tickcast_subscriptions"),
        );
        if now == (2.0, 1.0, 0.0, 0.0) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "after every client left: (connections, handshakes, partial bytes, \
             subscriptions) = {now:?}, not (2, 1, 0, 0)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every per-IP and per-user slot is free: as many WebSockets as the limits allow all open.
async fn limits_fully_available(server: &Server) {
    let mut held = Vec::new();
    for i in 0..PER_IP {
        let with_key = i < PER_USER;
        let mut s = connect_from_client_ip(server, false).await;
        s.write_all(&upgrade_request(with_key)).await.unwrap();
        assert_eq!(
            read_head(&mut s).await,
            Some(101),
            "connection {i} (key: {with_key}) refused: a per-IP or per-user count leaked"
        );
        held.push(s);
    }
}

async fn run_case(server: &Server, publisher: &mut Ws, events: &[(usize, Event)]) {
    let mut clients: Vec<Client> = (0..4)
        .map(|i| Client {
            sock: None,
            at: At::None,
            topic: format!("lc.all.c{i}"),
        })
        .collect();
    for (i, ev) in events {
        apply(server, publisher, &mut clients[*i], ev).await;
    }
    drop(clients);
    wait_baseline(server).await;
    limits_fully_available(server).await;
    wait_baseline(server).await;
}

fn lifecycle_counts_return_to_zero(driver: Driver) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(driver, &env, &[]);
    let publisher = std::cell::RefCell::new(rt.block_on(async { connect(&server).await.0 }));
    let cases = std::env::var("LIFECYCLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        // A failing case waits out the deadline; a few shrink steps keep the report quick.
        max_shrink_iters: 8,
        ..ProptestConfig::default()
    });
    let strategy = prop::collection::vec((0usize..4, event()), 1..40);
    runner
        .run(&strategy, |events| {
            rt.block_on(run_case(&server, &mut publisher.borrow_mut(), &events));
            Ok(())
        })
        .unwrap();
}

#[test]
fn io_uring_lifecycle_counts_return_to_zero() {
    lifecycle_counts_return_to_zero(Driver::IoUring);
}

#[test]
fn epoll_lifecycle_counts_return_to_zero() {
    lifecycle_counts_return_to_zero(Driver::Epoll);
}
