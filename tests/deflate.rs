//! permessage-deflate (RFC 7692, issue 12) as a client sees it: compressed once per frame
//! however many subscribers get it, plain where it should be, client messages inflated within
//! bounds. Clients here are raw sockets that do their own DEFLATE (flate2), so every byte on the
//! wire is checked; tests/clients.rs drives a real client library (Python `websockets`). Every test runs the real
//! server on io_uring and on epoll.

mod common;

use common::*;
use flate2::Compression;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::Message;

both_drivers!(
    deflate_is_negotiated_and_declined_as_offered,
    many_deflate_subscribers_cost_one_compression,
    small_frames_and_replies_go_plain,
    compressed_client_messages_are_understood,
    hostile_compressed_input_is_closed_cleanly,
    recovery_and_cache_replay_compressed_frames,
    batched_and_alert_lane_frames_go_compressed,
    the_message_rate_applies_before_inflating,
    slow_policies_act_on_compressed_frames,
);

/// One server frame as read from a raw socket.
#[derive(Debug)]
struct ServerFrame {
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl ServerFrame {
    /// The message text: inflated when RSV1 is set (RFC 7692 §7.2.2: append 00 00 ff ff).
    fn text(&self) -> String {
        let bytes = if self.rsv1 {
            let mut input = self.payload.clone();
            input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
            let mut out = Vec::new();
            let mut d = flate2::Decompress::new(false);
            // Output bounded well above anything these tests publish.
            out.reserve(1 << 20);
            d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
                .expect("a compressed frame inflates");
            out
        } else {
            self.payload.clone()
        };
        String::from_utf8(bytes).expect("text frames are UTF-8")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text()).unwrap()
    }
}

/// A raw WebSocket connection: the 101 response head and the frames after it.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    head: String,
}

impl Raw {
    /// Connects to `path` offering `extensions` (the `Sec-WebSocket-Extensions` value, if any).
    async fn connect(server: &Server, path: &str, extensions: Option<&str>) -> Raw {
        Raw::connect_with(
            TcpStream::connect(server.addr).await.unwrap(),
            path,
            extensions,
        )
        .await
    }

    /// A client that reads nothing for a while: a 4 KiB receive buffer, so the server's queue
    /// for it fills after a few kilobytes instead of the kernel's megabytes.
    async fn connect_stalled(server: &Server, path: &str, extensions: Option<&str>) -> Raw {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let s = sock.connect(server.addr).await.unwrap();
        Raw::connect_with(s, path, extensions).await
    }

    async fn connect_with(mut s: TcpStream, path: &str, extensions: Option<&str>) -> Raw {
        let ext = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Raw {
            s,
            buf: Vec::new(),
            head: String::new(),
        };
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill().await;
        };
        raw.head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        raw.buf.drain(..end);
        raw
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(DEADLINE, self.s.read(&mut chunk))
            .await
            .expect("the server answers in time")
            .unwrap();
        assert!(n > 0, "connection closed; had {:?}", self.buf);
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The extension the server accepted (the response header's value).
    fn accepted(&self) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_string())
        })
    }

    async fn frame(&mut self) -> ServerFrame {
        loop {
            if let Some((hdr, len)) = server_frame_lens(&self.buf) {
                if self.buf.len() >= hdr + len {
                    let f = ServerFrame {
                        rsv1: self.buf[0] & 0x40 != 0,
                        opcode: self.buf[0] & 0x0f,
                        payload: self.buf[hdr..hdr + len].to_vec(),
                    };
                    assert_eq!(self.buf[0] & 0x30, 0, "RSV2/RSV3 are never set");
                    assert!(self.buf[0] & 0x80 != 0, "server frames are whole (FIN)");
                    self.buf.drain(..hdr + len);
                    return f;
                }
            }
            self.fill().await;
        }
    }

    /// The next text frame (pings skipped).
    async fn text_frame(&mut self) -> ServerFrame {
        loop {
            let f = self.frame().await;
            if f.opcode == 0x1 {
                return f;
            }
            assert_eq!(f.opcode, 0x9, "unexpected frame {f:?}");
        }
    }

    async fn send(&mut self, frame: &[u8]) {
        self.s.write_all(frame).await.unwrap();
    }

    async fn send_json(&mut self, v: Value) {
        self.send(&client_frame(true, 0, 0x1, v.to_string().as_bytes(), true))
            .await;
    }

    /// The code of the close frame the server sends next (frames before it skipped).
    async fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame().await;
            if f.opcode == 0x8 {
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }
}

/// `data` compressed as one permessage-deflate message payload (§7.2.1: a sync flush, the
/// trailing 00 00 ff ff removed).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A payload long enough to be compressed (over `deflate.min_bytes`, 128) and repetitive
/// enough to shrink.
fn big_data(n: usize) -> Value {
    json!({"levels": (0..n).map(|i| json!({"px": format!("{}.25", 100 + i), "qty": "1.000"})).collect::<Vec<_>>()})
}

async fn publish(server: &Server, topic: &str, data: &Value) -> Value {
    let body = json!({"topic": topic, "data": data}).to_string();
    let (status, body) = server.http("POST", "/v1/publish", Some(&body)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn subscribe_raw(c: &mut Raw, topics: &[&str]) -> Value {
    c.send_json(json!({"op": "subscribe", "id": 1, "topics": topics}))
        .await;
    loop {
        let v = c.text_frame().await.json();
        if v["op"] == "ack" {
            return v;
        }
        assert_eq!(v["op"], "welcome", "{v}");
    }
}

async fn deflate_is_negotiated_and_declined_as_offered(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    // Chromium's offer: accepted, both sides without context takeover.
    let c = Raw::connect(&server, "/ws", Some(OFFER)).await;
    assert_eq!(
        c.accepted().as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    // A window the server can keep to is echoed.
    let c = Raw::connect(
        &server,
        "/ws",
        Some("permessage-deflate; server_max_window_bits=10"),
    )
    .await;
    assert!(
        c.accepted().unwrap().contains("server_max_window_bits=10"),
        "{}",
        c.head
    );
    // One it cannot (8) is declined, and the next offer taken.
    let c = Raw::connect(
        &server,
        "/ws",
        Some("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
    )
    .await;
    assert!(!c.accepted().unwrap().contains("server_max_window_bits"));
    // An unknown parameter declines the offer: no extension at all.
    let c = Raw::connect(&server, "/ws", Some("permessage-deflate; x_unknown")).await;
    assert_eq!(c.accepted(), None, "{}", c.head);
    // No offer, no extension.
    let c = Raw::connect(&server, "/ws", None).await;
    assert_eq!(c.accepted(), None);
    drop(server);
    // deflate.enabled = false declines every offer.
    let server = Server::start(driver, &[("TICKCAST_DEFLATE__ENABLED", "false")], &[]);
    let c = Raw::connect(&server, "/ws", Some(OFFER)).await;
    assert_eq!(c.accepted(), None);
}

/// The issue's proof of compress once: N deflate subscribers on both shards, one publish, one
/// compression; each gets the same bytes, and a plain subscriber the plain frame.
async fn many_deflate_subscribers_cost_one_compression(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let mut subs = Vec::new();
    let mut shards = std::collections::HashSet::new();
    while subs.len() < 8 || shards.len() < 2 {
        let mut c = Raw::connect(&server, "/ws", Some(OFFER)).await;
        let welcome = c.text_frame().await.json();
        shards.insert(welcome["shard"].as_u64().unwrap());
        c.send_json(json!({"op": "subscribe", "id": 1, "topics": ["md.book"]}))
            .await;
        assert_eq!(c.text_frame().await.json()["op"], "ack");
        subs.push(c);
        assert!(subs.len() < 200, "connections never reached both shards");
    }
    let mut plain = Raw::connect(&server, "/ws", None).await;
    subscribe_raw(&mut plain, &["md.book"]).await;
    let before = server.metric("tickcast_compressions_total").await;
    let data = big_data(40);
    let ack = publish(&server, "md.book", &data).await;
    let mut wire = Vec::new();
    for c in &mut subs {
        let f = c.text_frame().await;
        assert!(f.rsv1, "a frame over deflate.min_bytes goes compressed");
        let v = f.json();
        assert_eq!(v["data"], data);
        assert_eq!(v["seq"], ack["seq"]);
        wire.push(f.payload);
    }
    assert!(
        wire.windows(2).all(|w| w[0] == w[1]),
        "every subscriber gets the same bytes"
    );
    let p = plain.text_frame().await;
    assert!(!p.rsv1);
    assert_eq!(p.json()["data"], data);
    assert!(wire[0].len() < p.payload.len(), "compressed is smaller");
    let after = server
        .wait_metric("tickcast_compressions_total", before + 1.0)
        .await;
    assert_eq!(
        after,
        before + 1.0,
        "one compression for {} subscribers",
        subs.len()
    );
}

async fn small_frames_and_replies_go_plain(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let mut c = Raw::connect(&server, "/ws", Some(OFFER)).await;
    let welcome = c.text_frame().await;
    assert!(!welcome.rsv1, "replies go plain");
    let ack = subscribe_raw(&mut c, &["md.small"]).await;
    assert_eq!(ack["topics"], json!(["md.small"]));
    publish(&server, "md.small", &json!({"p": 1})).await;
    let f = c.text_frame().await;
    assert!(!f.rsv1, "a payload under deflate.min_bytes goes plain");
    assert_eq!(f.json()["data"], json!({"p": 1}));
    // A class may turn compression off for its topics.
    drop(server);
    let server = Server::with_topics(driver, r#"[{pattern = "raw.>", deflate_level = 0}]"#, &[]);
    let mut c = Raw::connect(&server, "/ws", Some(OFFER)).await;
    subscribe_raw(&mut c, &["raw.x", "md.x"]).await;
    let data = big_data(40);
    publish(&server, "raw.x", &data).await;
    publish(&server, "md.x", &data).await;
    let (a, b) = (c.text_frame().await, c.text_frame().await);
    assert_eq!(a.json()["topic"], "raw.x");
    assert!(!a.rsv1, "deflate_level = 0");
    assert_eq!(b.json()["topic"], "md.x");
    assert!(b.rsv1);
}

async fn compressed_client_messages_are_understood(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let mut c = Raw::connect(&server, "/ws", Some(OFFER)).await;
    c.text_frame().await; // welcome
    let op = json!({"op": "subscribe", "id": 7, "topics": ["md.a", "md.b"]}).to_string();
    c.send(&client_frame(
        true,
        0b100,
        0x1,
        &deflate(op.as_bytes()),
        true,
    ))
    .await;
    let ack = c.text_frame().await.json();
    assert_eq!(ack["id"], 7, "{ack}");
    assert_eq!(ack["topics"], json!(["md.a", "md.b"]));
    // Fragmented: RSV1 on the first frame only, the compressed bytes split anywhere.
    let op = json!({"op": "ping", "id": 8}).to_string();
    let z = deflate(op.as_bytes());
    let (x, y) = z.split_at(z.len() / 2);
    c.send(&client_frame(false, 0b100, 0x1, x, true)).await;
    c.send(&client_frame(true, 0, 0x0, y, true)).await;
    let pong = c.text_frame().await.json();
    assert_eq!(
        (pong["op"].as_str(), pong["id"].as_u64()),
        (Some("pong"), Some(8))
    );
    // Plain messages still work on a deflate connection.
    c.send_json(json!({"op": "ping", "id": 9})).await;
    assert_eq!(c.text_frame().await.json()["id"], 9);
    assert!(server.metric("tickcast_inflations_total").await >= 2.0);
}

async fn hostile_compressed_input_is_closed_cleanly(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    // A bomb: 1 MiB of spaces in ~1 KiB, over limits.message_bytes_max (64 KiB) inflated.
    let bomb = deflate(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 2048, "{}", bomb.len());
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        (
            "bomb",
            Some(OFFER),
            client_frame(true, 0b100, 0x1, &bomb, true),
            1009,
        ),
        (
            "ratio",
            Some(OFFER),
            client_frame(true, 0b100, 0x1, &deflate(&vec![b'a'; 60_000]), true),
            1009,
        ),
        (
            "not deflate",
            Some(OFFER),
            client_frame(true, 0b100, 0x1, &[0xff, 0xff, 0xff, 0xff], true),
            1007,
        ),
        (
            // A final stored block announcing 9 bytes and sending none: the message stops
            // inside a block (once accepted, with the inflater's own padding as its data).
            "truncated inside a block",
            Some(OFFER),
            client_frame(true, 0b100, 0x2, &[0x01, 0x09, 0x00, 0xf6, 0xff], true),
            1007,
        ),
        (
            "invalid UTF-8 inside",
            Some(OFFER),
            client_frame(true, 0b100, 0x1, &deflate(&[0xc3, 0x28]), true),
            1007,
        ),
        (
            "RSV1 without deflate",
            None,
            client_frame(true, 0b100, 0x1, &deflate(b"{}"), true),
            1002,
        ),
        (
            "RSV1 on a ping",
            Some(OFFER),
            client_frame(true, 0b100, 0x9, b"", true),
            1002,
        ),
        (
            "RSV1 on a continuation",
            Some(OFFER),
            [
                client_frame(false, 0, 0x1, b"{\"op\":", true),
                client_frame(true, 0b100, 0x0, b"\"ping\"}", true),
            ]
            .concat(),
            1002,
        ),
    ];
    for (name, offer, bytes, code) in cases {
        let mut c = Raw::connect(&server, "/ws", offer).await;
        c.send(&bytes).await;
        assert_eq!(c.close_code().await, code, "{name}");
    }
    // The server is healthy afterwards.
    let (status, _) = server.http("GET", "/health", None).await;
    assert_eq!(status, 200);
}

/// History replay (`since`) and the cached last value go out compressed like live frames.
async fn recovery_and_cache_replay_compressed_frames(driver: Driver) {
    let server = Server::with_topics(
        driver,
        r#"[{pattern = "hist.>", history_size = 10}, {pattern = "last.>", cache = true, history_size = 1}]"#,
        &[],
    );
    let data = big_data(30);
    let first = publish(&server, "hist.a", &data).await;
    publish(&server, "hist.a", &data).await;
    publish(&server, "last.a", &data).await;
    let mut c = Raw::connect(&server, "/ws", Some(OFFER)).await;
    c.text_frame().await; // welcome
    let since = json!({"hist.a": {"seq": 0, "epoch": first["epoch"]}});
    c.send_json(
        json!({"op": "subscribe", "id": 1, "topics": ["hist.a", "last.a"], "since": since}),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let f = c.text_frame().await;
        let v = f.json();
        if v.get("op").is_some() {
            continue;
        }
        assert!(f.rsv1, "replayed frame {v} goes compressed");
        assert_eq!(v["data"], data);
        seen.push((
            v["topic"].as_str().unwrap().to_string(),
            v["seq"].as_u64().unwrap(),
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("hist.a".into(), 1),
            ("hist.a".into(), 2),
            ("last.a".into(), 1)
        ]
    );
}

/// Delivery strategies and lanes act on the shared frame, whichever form a connection is sent:
/// batched frames arrive compressed and in order, an alert-lane frame too.
async fn batched_and_alert_lane_frames_go_compressed(driver: Driver) {
    let server = Server::with_topics(
        driver,
        r#"[{pattern = "b.>", delivery = "batched", batch_window_ms = 5}, {pattern = "risk.>", lane = "alert"}]"#,
        &[],
    );
    let mut c = Raw::connect(&server, "/ws", Some(OFFER)).await;
    c.text_frame().await; // welcome
    c.send_json(json!({"op": "subscribe", "id": 1, "topics": ["b.x", "risk.x"]}))
        .await;
    assert_eq!(c.text_frame().await.json()["op"], "ack");
    let data = big_data(30);
    for _ in 0..3 {
        publish(&server, "b.x", &data).await;
    }
    publish(&server, "risk.x", &data).await;
    let mut seqs = Vec::new();
    let mut alert = false;
    while seqs.len() < 3 || !alert {
        let f = c.text_frame().await;
        assert!(f.rsv1, "compressed");
        let v = f.json();
        assert_eq!(v["data"], data);
        match v["topic"].as_str() {
            Some("b.x") => seqs.push(v["seq"].as_u64().unwrap()),
            Some("risk.x") => alert = true,
            other => panic!("unexpected topic {other:?}"),
        }
    }
    assert_eq!(seqs, vec![1, 2, 3], "batched frames keep their order");
}

/// A client over its message rate costs no inflate: the rate is checked first.
async fn the_message_rate_applies_before_inflating(driver: Driver) {
    let server = Server::start(
        driver,
        &[
            ("TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S", "1"),
            ("TICKCAST_LIMITS__CLIENT_MESSAGES_BURST", "1"),
        ],
        &[],
    );
    let mut c = Raw::connect(&server, "/ws", Some(OFFER)).await;
    c.text_frame().await; // welcome
    let ping = deflate(json!({"op": "ping", "id": 1}).to_string().as_bytes());
    let frame = client_frame(true, 0b100, 0x1, &ping, true);
    c.send(&[frame.clone(), frame.clone(), frame].concat())
        .await;
    let mut replies = Vec::new();
    while replies.len() < 3 {
        replies.push(c.text_frame().await.json());
    }
    let refused = replies
        .iter()
        .filter(|r| r["code"] == "rate_limited")
        .count();
    assert!(refused >= 1, "{replies:?}");
    let inflated = server.metric("tickcast_inflations_total").await;
    assert_eq!(inflated as usize, 3 - refused, "{replies:?}");
}

/// `conflate` and `drop_oldest` act on the shared frame whatever form a connection is sent: a
/// stalled deflate subscriber, once it reads again, gets compressed frames that inflate to the
/// message their `seq` says, newest last, some skipped (and counted).
async fn slow_policies_act_on_compressed_frames(driver: Driver) {
    // Small bounds so a stall fills the lanes with a few hundred compressed frames: 16 KiB of
    // unsent bytes in the kernel, conflation past 4 KiB, `drop_oldest` past ~40 KB (the bound
    // must hold one largest data frame).
    let server = Server::start(
        driver,
        &[
            ("TICKCAST_SERVER__TCP_NOTSENT_LOWAT_BYTES", "16384"),
            ("TICKCAST_LIMITS__CONFLATE_AFTER_BYTES", "4096"),
            ("TICKCAST_LIMITS__WRITE_QUEUE_BYTES_MAX", "40000"),
            (
                "TICKCAST_TOPICS",
                r#"[{pattern="cf.>",slow_policy="conflate"},{pattern="do.>",slow_policy="drop_oldest"}]"#,
            ),
        ],
        &[],
    );
    const N: u64 = 3000;
    const TOPICS: [&str; 2] = ["cf.a", "do.a"];
    let mut stalled = Raw::connect_stalled(&server, "/ws", Some(OFFER)).await;
    assert!(stalled.accepted().is_some(), "{}", stalled.head);
    subscribe_raw(&mut stalled, &TOPICS).await;
    // Every message differs (its `i`) and compresses well (repetitive levels).
    let (mut p, _) = connect(&server).await;
    for i in 0..N {
        for t in TOPICS {
            let op = json!({"op":"publish","topic":t,"data":{"i":i,"book":big_data(12)}});
            p.feed(Message::text(op.to_string())).await.unwrap();
        }
    }
    p.flush().await.unwrap();
    // A last, short message per topic (plain: under min_bytes), acked once sequenced.
    let mut last = std::collections::HashMap::new();
    for t in TOPICS {
        send_json(
            &mut p,
            json!({"op":"publish","id":t,"topic":t,"data":"last"}),
        )
        .await;
        loop {
            let m = recv_json(&mut p).await;
            if m["op"] == "ack" && m["id"] == t {
                last.insert(t, m["seq"].as_u64().unwrap());
                break;
            }
        }
    }
    assert_eq!(last[TOPICS[0]], N + 1);
    // Both lanes overflowed before the stalled client reads a byte.
    server.wait_metric("tickcast_conflated_total", 1.0).await;
    server
        .wait_metric("tickcast_dropped_oldest_total", 1.0)
        .await;
    let mut got: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    while TOPICS
        .iter()
        .any(|t| got.get(t).and_then(|v| v.last()) != Some(&(N + 1)))
    {
        let f = stalled.text_frame().await;
        let v = f.json();
        let topic = TOPICS
            .into_iter()
            .find(|t| v["topic"] == *t)
            .unwrap_or_else(|| panic!("unexpected frame {v}"));
        let seq = v["seq"].as_u64().unwrap();
        if v["data"] == "last" {
            assert_eq!(seq, N + 1, "{v}");
        } else {
            assert!(f.rsv1, "{topic} seq {seq} goes compressed");
            assert_eq!(v["data"]["i"], seq - 1, "{v}");
            assert_eq!(v["data"]["book"], big_data(12));
        }
        got.entry(topic).or_default().push(seq);
    }
    for (t, seqs) in &got {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{t}: increasing seqs {seqs:?}"
        );
        assert!(
            (seqs.len() as u64) < N + 1,
            "{t}: some frames were skipped ({} of {})",
            seqs.len(),
            N + 1
        );
    }
}
