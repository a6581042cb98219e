//! Defects that would take a production node down or mislead a client (issue 11), each as the
//! behaviour a user relies on. Every test runs the real server on io_uring and on epoll.

mod common;

use std::time::Instant;

use common::{proc::Proc, *};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

both_drivers!(
    server_closed_http_connections_give_their_handshake_slot_back,
    admin_get_endpoints_take_the_token_query_parameter,
    escaped_keys_mean_the_same_to_every_parser,
    since_epochs_are_checked,
    requests_without_one_host_header_get_400,
    ready_says_whether_the_node_can_serve,
    out_of_descriptors_new_connections_get_503,
    subscribe_churn_creates_no_topic_state,
    topics_nobody_needs_are_forgotten,
    a_full_topic_table_refuses_with_capacity,
    replies_to_a_burst_pause_reading_instead_of_closing,
    ids_are_bounded,
    a_stalled_message_is_closed_after_its_deadline,
    a_client_that_keeps_sending_is_not_cut,
    partial_messages_share_one_budget,
);

/// Reads one HTTP response (head and its `Content-Length` body) from a keep-alive connection.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + len {
                return parse_http(&buf[..head_end + 4 + len]);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut chunk))
            .await
            .expect("no complete response within the deadline")
            .expect("read");
        assert!(n > 0, "connection closed before a complete response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits until the server ends the connection (EOF or reset); the client keeps its side open.
async fn wait_closed_by_server(s: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    let waited = tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "the server never closed the connection");
}

/// Defect 1: an HTTP-phase connection the server closes on a timer (keep-alive idle, handshake
/// timeout, the `close_ms` wait after a final response while the client keeps its socket) must
/// give its handshake slot back, or after `handshakes_per_shard_max` such closes every new
/// connection (health checks included) is refused until restart.
async fn server_closed_http_connections_give_their_handshake_slot_back(driver: Driver) {
    let env = [
        ("TICKCAST_LIMITS__HANDSHAKES_PER_SHARD_MAX", "4"),
        ("TICKCAST_TIMEOUTS__HANDSHAKE_MS", "200"),
        ("TICKCAST_TIMEOUTS__CLOSE_MS", "200"),
    ];
    let server = Server::start(driver, &env, &[]);
    // 4 rounds x 3 kinds = 12 server-side closes, over 2 shards of 4 slots each; never more
    // than 3 connections in their HTTP phase at a time.
    for _ in 0..4 {
        let mut conns = Vec::new();
        // Keep-alive scraper: one request answered, then idle until the server closes it.
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.0, 200);
        conns.push(s);
        // A client that never sends its request (handshake timeout).
        conns.push(TcpStream::connect(server.addr).await.unwrap());
        // A final response (404, Connection: close) to a client that keeps its socket open:
        // the server waits `close_ms` for its EOF, then drops it.
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.0, 404);
        conns.push(s);
        for s in &mut conns {
            wait_closed_by_server(s).await;
        }
    }
    // Every slot is free again: health checks, metrics and new WebSockets get through.
    for _ in 0..8 {
        let (status, body) = server.http("GET", "/health", None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (mut ws, _) = connect(&server).await;
    subscribe(&mut ws, 1, &["a.b"]).await;
}

/// Defect 5: every admin endpoint takes its token as `?token=` (docs/API.md), GETs included.
async fn admin_get_endpoints_take_the_token_query_parameter(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let token = format!("token={ADMIN_KEY}");
    for path in [
        format!("/v1/stats?{token}"),
        format!("/v1/connections?limit=5&{token}"),
        format!("/v1/topics?{token}&prefix=a"),
        format!("/v1/online?{token}"),
        format!("/v1/presence?topic=a.b&{token}"),
        format!("/v1/history?topic=a.b&{token}"),
        format!("/v1/cluster?{token}"),
        format!("/metrics?{token}"),
        format!("/health?{token}"),
    ] {
        let (status, body) = server.http_with("GET", &path, None, "").await;
        // History of a topic nothing was published to is a 404; everything else a 200.
        let want = if path.starts_with("/v1/history") {
            404
        } else {
            200
        };
        assert_eq!(status, want, "{path}: {body}");
    }
    // Without it (and without a header) the admin API still refuses.
    let (status, _) = server.http_with("GET", "/v1/stats", None, "").await;
    assert_eq!(status, 401);
    // A wrong one is refused, not ignored.
    let (status, _) = server
        .http_with("GET", "/v1/stats?token=nope", None, "")
        .await;
    assert_eq!(status, 401);
}

/// Defect 6: a key written with JSON escapes is the same key to every part of the server: the
/// publish below carries `data`, so it is published with that data verbatim.
async fn escaped_keys_mean_the_same_to_every_parser(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let (mut sub, _) = connect(&server).await;
    subscribe(&mut sub, 1, &["a.b"]).await;
    let (mut publ, _) = connect(&server).await;
    let op = r#"{"op":"publish","id":2,"topic":"a.b","\u0064ata":{"x":1}}"#;
    publ.send_text(op).await;
    let ack = recv_json(&mut publ).await;
    assert_eq!(
        (&ack["op"], &ack["seq"]),
        (&json!("ack"), &json!(1)),
        "{ack}"
    );
    let frame = recv_json(&mut sub).await;
    assert_eq!(frame["data"], json!({"x":1}), "{frame}");
    // The same over HTTP, and for `id`.
    let body = r#"{"topic":"a.b","d\u0061ta":[2]}"#;
    let (status, reply) = server.http("POST", "/v1/publish", Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(recv_json(&mut sub).await["data"], json!([2]));
    publ.send_text(r#"{"op":"ping","\u0069d":"x7"}"#).await;
    let pong = recv_json(&mut publ).await;
    assert_eq!(
        (&pong["op"], &pong["id"]),
        (&json!("pong"), &json!("x7")),
        "{pong}"
    );
    // An escaped key the protocol does not know is still refused, and a duplicate `data`
    // written twice (once escaped) is malformed, not "whichever parser wins".
    publ.send_text(r#"{"op":"publish","topic":"a.b","data":1,"\u0064ata":2}"#)
        .await;
    let err = recv_json(&mut publ).await;
    assert_eq!(err["code"], "bad_request", "{err}");
}

/// Defect 7: an epoch in `since` that is not 16 hex digits is a `bad_request` for that topic;
/// a well-formed epoch the topic does not have is a `gap` with reason `epoch`, never a replay
/// compared by `seq` alone.
async fn since_epochs_are_checked(driver: Driver) {
    let classes = r#"[{pattern="h.>",history_size=100}]"#;
    let server = Server::with_topics(driver, classes, &[]);
    let (mut publ, _) = connect(&server).await;
    let mut epoch = String::new();
    for i in 1..=5 {
        publ.send_text(&json!({"op":"publish","id":i,"topic":"h.t","data":i}).to_string())
            .await;
        let ack = recv_json(&mut publ).await;
        epoch = ack["epoch"].as_str().unwrap().to_string();
    }
    let (mut ws, _) = connect(&server).await;
    for bad in ["zz", "", "00000000000000000", "0x12", "-1"] {
        send_json(
            &mut ws,
            json!({"op":"subscribe","id":1,"topics":["h.t"],"since":{"h.t":{"seq":2,"epoch":bad}}}),
        )
        .await;
        // The malformed `since` entry is refused with its topic; the subscription itself is
        // still acknowledged.
        let mut got_error = false;
        let mut got_ack = false;
        while !(got_error && got_ack) {
            let m = recv_json(&mut ws).await;
            match m["op"].as_str() {
                Some("error") => {
                    assert_eq!(
                        (&m["code"], &m["topic"]),
                        (&json!("bad_request"), &json!("h.t")),
                        "{bad:?}: {m}"
                    );
                    got_error = true;
                }
                Some("ack") => got_ack = true,
                Some("gap") => panic!("{bad:?}: a malformed epoch must not be compared: {m}"),
                _ => {}
            }
        }
        send_json(&mut ws, json!({"op":"unsubscribe","id":9,"topics":["h.t"]})).await;
        loop {
            let m = recv_json(&mut ws).await;
            assert_ne!(m["op"], "gap", "{bad:?}: {m}");
            if m["op"] == "ack" && m["id"] == 9 {
                break;
            }
        }
    }
    // A well-formed epoch that is not the topic's: one gap, reason epoch, nothing replayed.
    let other = if epoch == "0123456789abcdef" {
        "fedcba9876543210"
    } else {
        "0123456789abcdef"
    };
    send_json(
        &mut ws,
        json!({"op":"subscribe","id":2,"topics":["h.t"],"since":{"h.t":{"seq":2,"epoch":other}}}),
    )
    .await;
    let ack = recv_json(&mut ws).await;
    assert_eq!(
        (&ack["op"], &ack["id"]),
        (&json!("ack"), &json!(2)),
        "{ack}"
    );
    let gap = recv_json(&mut ws).await;
    assert_eq!(
        (&gap["op"], &gap["reason"], &gap["from"], &gap["to"]),
        (&json!("gap"), &json!("epoch"), &json!(1), &json!(5)),
        "{gap}"
    );
    // The right epoch replays what was missed.
    let (mut ws2, _) = connect(&server).await;
    send_json(
        &mut ws2,
        json!({"op":"subscribe","id":3,"topics":["h.t"],"since":{"h.t":{"seq":3,"epoch":epoch}}}),
    )
    .await;
    assert_eq!(recv_json(&mut ws2).await["op"], "ack");
    let seqs: Vec<Value> = vec![
        recv_json(&mut ws2).await["seq"].clone(),
        recv_json(&mut ws2).await["seq"].clone(),
    ];
    assert_eq!(seqs, vec![json!(4), json!(5)]);
}

/// Defect 10: RFC 9112 §3.2: an HTTP/1.1 request without a Host header, or with two, gets 400.
async fn requests_without_one_host_header_get_400(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    for req in [
        &b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ] {
        let (status, body) = parse_http(&server.raw_exchange(req).await);
        assert_eq!(status, 400, "{}: {body}", String::from_utf8_lossy(req));
        assert!(body.contains("Host"), "{body}");
    }
    // HTTP/1.0 has no Host requirement.
    let (status, _) = parse_http(&server.raw_exchange(b"GET /health HTTP/1.0\r\n\r\n").await);
    assert_eq!(status, 200);
}

/// Defect 11: `/ready` is 200 once every shard listens and, in cluster mode, the broker is
/// connected (NATS: shard 0's live connection too); 503 with the reasons otherwise. `/health` (liveness) stays 200 meanwhile.
async fn ready_says_whether_the_node_can_serve(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let (status, body) = server.http("GET", "/ready", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, body) = server.http("HEAD", "/ready", None).await;
    assert_eq!((status, body.as_str()), (200, ""));
    // A cluster node whose broker is unreachable serves its clients but is not ready.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", closed.local_addr().unwrap());
    drop(closed);
    let node = Server::start(driver, &[], &["--cluster", "nats", "--broker", &url]);
    let (status, body) = node.http("GET", "/ready", None).await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "not_ready");
    // Both of a NATS node's connections: the bridge's, and shard 0's for live messages.
    assert_eq!(
        v["reasons"],
        json!([
            "cluster broker not connected",
            "live connection to NATS (shard 0) not up"
        ]),
        "{body}"
    );
    let (status, body) = node.http("GET", "/health", None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&v["broker"], &v["live"]),
        (&json!("down"), &json!("down")),
        "{body}"
    );
    let (_ws, _) = connect(&node).await;
}

/// Defect 9: the connection limits follow `RLIMIT_NOFILE` (said once, at INFO): WebSockets
/// up to what leaves room for plain HTTP, all connections up to what leaves the process its
/// own descriptors. Beyond that a new connection is answered 503 at once instead of waiting
/// unanswered in the backlog, and service resumes when connections close.
async fn out_of_descriptors_new_connections_get_503(driver: Driver) {
    let env = [
        ("RUST_LOG", "info"),
        // Connections that never send a request are held as long as the test needs them.
        ("TICKCAST_TIMEOUTS__HANDSHAKE_MS", "60000"),
    ];
    let p = Proc::start("ulimit -n 200", &env, &["--driver", driver.flag()]);
    let server = p.server();
    let log = p.stderr();
    // 200 descriptors, 64 + 8 per shard kept by the process: 120 connections; of them 64 kept
    // for plain HTTP: 56 WebSockets.
    let lowered: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("RLIMIT_NOFILE"))
        .collect();
    assert_eq!(lowered.len(), 1, "{log}");
    assert!(
        lowered[0].contains("INFO") && lowered[0].contains("connections_max 100000 lowered to 56"),
        "{log}"
    );
    let mut held = Vec::new();
    for _ in 0..56 {
        held.push(connect(&server).await.0);
    }
    let refused = tokio_tungstenite::connect_async(server.ws_url()).await;
    let err = refused
        .expect_err("a 57th WebSocket is refused")
        .to_string();
    assert!(err.contains("503"), "{err}");
    // Once the refused one is gone, 56 connections are open (57 with the scrape asking).
    let start = Instant::now();
    while server.metric("tickcast_connections").await != 57.0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the refused connection was never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Plain HTTP keep-alive connections take the rest: 64 more are held ...
    let mut raw = Vec::new();
    for _ in 0..64 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.0, 200);
        raw.push(s);
    }
    // ... and the next ones are answered 503 at once, not left in the backlog.
    for _ in 0..3 {
        let (status, body) = server.http("GET", "/health", None).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("out of file descriptors"), "{body}");
    }
    assert_eq!(
        p.stderr().matches("accept failed").count(),
        0,
        "{}",
        p.stderr()
    );
    drop(raw);
    let start = Instant::now();
    loop {
        let (status, _) = server.http("GET", "/health", None).await;
        if status == 200 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "service never resumed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(server.metric("tickcast_fd_rejects_total").await, 3.0);
    drop(held);
    let (_ws, _) = connect(&server).await;
}

/// Defect 2: subscribing and unsubscribing exact topics (what an anonymous client may do at
/// its allowed rate) must not create topic state: the table grows with what publishers do,
/// never with what subscribers ask. A topic nothing was published to has position 0, epoch 0.
async fn subscribe_churn_creates_no_topic_state(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(connect(&server).await.0);
    }
    for round in 0..10 {
        for (c, ws) in clients.iter_mut().enumerate() {
            let topics: Vec<String> = (0..20)
                .map(|i| format!("public.r{round}c{c}t{i}"))
                .collect();
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            let ack = subscribe(ws, 1, &refs).await;
            let positions = ack["positions"].as_array().unwrap();
            assert_eq!(positions.len(), 20, "{ack}");
            assert_eq!(positions[0]["seq"], 0);
            assert_eq!(positions[0]["epoch"], "0000000000000000", "{ack}");
            send_json(ws, json!({"op":"unsubscribe","id":2,"topics":refs})).await;
            assert_eq!(recv_json(ws).await["op"], "ack");
        }
    }
    // 2,000 topics subscribed and unsubscribed: none is held by any shard.
    assert_eq!(server.metric("tickcast_topics").await, 0.0);
    let (status, body) = server.http("GET", "/v1/stats", None).await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["total"]["topics"], 0, "{body}");
    // Publishing still works, to new topics too.
    let (status, body) = server
        .http(
            "POST",
            "/v1/publish",
            Some(r#"{"topic":"public.new","data":1}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Defect 2: a topic's state lives while something needs it (here: a subscriber), then it is
/// forgotten; published to again, it starts a new epoch, and a client recovering with the old
/// epoch is told so (`gap`, reason `epoch`). The new epoch is held by a new subscriber until
/// that client has its answer.
async fn topics_nobody_needs_are_forgotten(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let (mut sub, _) = connect(&server).await;
    subscribe(&mut sub, 1, &["f.t"]).await;
    let (status, body) = server
        .http("POST", "/v1/publish", Some(r#"{"topic":"f.t","data":1}"#))
        .await;
    assert_eq!(status, 200, "{body}");
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(recv_json(&mut sub).await["seq"], 1);
    // Held while subscribed.
    assert_eq!(server.metric("tickcast_topics").await, 1.0);
    drop(sub);
    // Nobody needs it now: the owner's sweep forgets it.
    server
        .wait_metric("tickcast_topics_dropped_total", 1.0)
        .await;
    assert_eq!(server.metric("tickcast_topics").await, 0.0);
    // A subscriber now finds no position, and holds the new epoch from its first publish on
    // (without one, the sweep could forget it again before the recovering client asks).
    let (mut holder, _) = connect(&server).await;
    let ack = subscribe(&mut holder, 2, &["f.t"]).await;
    assert_eq!(
        (&ack["positions"][0]["seq"], &ack["positions"][0]["epoch"]),
        (&json!(0), &json!("0000000000000000")),
        "{ack}"
    );
    let (_, body) = server
        .http("POST", "/v1/publish", Some(r#"{"topic":"f.t","data":2}"#))
        .await;
    let second: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(second["seq"], 1, "{body}");
    assert_ne!(second["epoch"], first["epoch"]);
    assert_eq!(recv_json(&mut holder).await["seq"], 1);
    let (mut ws, _) = connect(&server).await;
    send_json(
        &mut ws,
        json!({"op":"subscribe","id":3,"topics":["f.t"],"since":{"f.t":{"seq":1,"epoch":first["epoch"]}}}),
    )
    .await;
    let ack = recv_json(&mut ws).await;
    assert_eq!(ack["positions"][0]["epoch"], second["epoch"], "{ack}");
    let gap = recv_json(&mut ws).await;
    assert_eq!(
        (&gap["op"], &gap["reason"]),
        (&json!("gap"), &json!("epoch")),
        "{gap}"
    );
}

/// Defect 2: a publish the owner cannot take because its table is full of topics that are
/// needed gets its own code, `capacity` (HTTP 503), not `rate_limited`; once a topic is no
/// longer needed (its subscriber left), its slot serves a new topic.
async fn a_full_topic_table_refuses_with_capacity(driver: Driver) {
    let env = [("TICKCAST_LIMITS__TOPICS_PER_SHARD_MAX", "1")];
    let server = Server::start(driver, &env, &[]);
    // Two topics with the same owner shard; the first fills its table and a subscriber needs it.
    let (a, b) = same_owner_pair("cap.");
    let (mut sub, _) = connect(&server).await;
    subscribe(&mut sub, 1, &[&a]).await;
    let publish = |t: &str| format!(r#"{{"topic":"{t}","data":1}}"#);
    let (status, body) = server.http("POST", "/v1/publish", Some(&publish(&a))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.http("POST", "/v1/publish", Some(&publish(&b))).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""error":"capacity""#), "{body}");
    let (mut ws, _) = connect(&server).await;
    send_json(&mut ws, json!({"op":"publish","id":4,"topic":b,"data":1})).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(
        (&err["op"], &err["code"]),
        (&json!("error"), &json!("capacity")),
        "{err}"
    );
    assert_eq!(
        server.metric("tickcast_topic_limit_rejects_total").await,
        2.0
    );
    // The subscriber leaves: `a` is no longer needed and gives `b` its slot.
    drop(sub);
    let start = Instant::now();
    loop {
        let (status, body) = server.http("POST", "/v1/publish", Some(&publish(&b))).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            start.elapsed() < DEADLINE,
            "the unneeded topic never gave its slot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Defect 3: replies to a client's own legal requests never make it a slow consumer: a burst
/// of 16 requests in one write, whose replies are larger than the control lane, is answered in
/// full (reading pauses meanwhile), even when the client reads only after all were sent.
async fn replies_to_a_burst_pause_reading_instead_of_closing(driver: Driver) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start(driver, &[], &[]);
    // A client with a small receive buffer, so unread replies back up into the server.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(server.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(), stream)
        .await
        .unwrap();
    assert_eq!(recv_json(&mut ws).await["op"], "welcome");
    // 100 topics of 200 bytes: each subscribe ack is ~45 KB, each unsubscribe ack ~20 KB.
    let seg = "s".repeat(60);
    let topics: Vec<String> = (0..100)
        .map(|i| format!("public.{seg}.{seg}.{seg}.t{i:03}"))
        .collect();
    for round in 0..8 {
        let sub = json!({"op":"subscribe","id":round * 2,"topics":topics});
        let unsub = json!({"op":"unsubscribe","id":round * 2 + 1,"topics":topics});
        ws.feed(Message::text(sub.to_string())).await.unwrap();
        ws.feed(Message::text(unsub.to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
    // Not reading yet: the server pauses reading this client instead of closing it.
    server.wait_metric("tickcast_reply_pauses_total", 1.0).await;
    let mut acked = Vec::new();
    while acked.len() < 16 {
        let m = recv_json(&mut ws).await;
        assert_eq!(m["op"], "ack", "{m}");
        acked.push(m["id"].as_u64().unwrap());
    }
    acked.sort();
    assert_eq!(acked, (0..16).collect::<Vec<u64>>());
    assert_eq!(
        server.metric("tickcast_slow_consumer_closes_total").await,
        0.0
    );
    send_json(&mut ws, json!({"op":"ping","id":"after"})).await;
    assert_eq!(recv_json(&mut ws).await["id"], "after");
}

/// Defect 3: replies echo the `id`; an `id` over 256 bytes is refused (not echoed), and the
/// connection goes on.
async fn ids_are_bounded(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let (mut ws, _) = connect(&server).await;
    let long = "x".repeat(60_000);
    send_json(&mut ws, json!({"op":"ping","id":long})).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(err["code"], "bad_request", "{err}");
    assert!(err.get("id").is_none(), "the long id is not echoed");
    send_json(&mut ws, json!({"op":"ping","id":"y".repeat(250)})).await;
    assert_eq!(recv_json(&mut ws).await["op"], "pong");
}

/// Defect 4: a message that started arriving must complete within `timeouts.message_ms`:
/// a client stalled in the middle of a frame is closed with 1008, not held forever.
async fn a_stalled_message_is_closed_after_its_deadline(driver: Driver) {
    let env = [("TICKCAST_TIMEOUTS__MESSAGE_MS", "300")];
    let server = Server::start(driver, &env, &[]);
    let mut s = raw_ws(&server).await;
    // A text frame announcing 1,000 bytes, of which 10 arrive.
    let frame = client_frame(true, 0, 1, &[b'x'; 1000], true);
    s.write_all(&frame[..18]).await.unwrap();
    assert_eq!(raw_read_close_code(&mut s).await, Some(1008));
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "message_timeout",
            1.0,
        )
        .await;
    // So is one whose fragmented message never gets its last fragment.
    let mut s = raw_ws(&server).await;
    s.write_all(&client_frame(false, 0, 1, b"{\"op\":", true))
        .await
        .unwrap();
    assert_eq!(raw_read_close_code(&mut s).await, Some(1008));
}

/// Defect 4: the deadline is per message: a client that keeps sending (every read ends inside
/// the next message) for several deadlines in a row is not cut.
async fn a_client_that_keeps_sending_is_not_cut(driver: Driver) {
    let env = [("TICKCAST_TIMEOUTS__MESSAGE_MS", "300")];
    let server = Server::start(driver, &env, &[]);
    let mut s = raw_ws(&server).await;
    let ping = client_frame(true, 0, 1, br#"{"op":"ping"}"#, true);
    let half = ping.len() / 2;
    let start = Instant::now();
    let mut sent = 0;
    // Each write completes the previous ping and starts the next one.
    s.write_all(&ping[..half]).await.unwrap();
    while start.elapsed() < std::time::Duration::from_millis(2500) {
        let mut chunk = ping[half..].to_vec();
        chunk.extend_from_slice(&ping[..half]);
        s.write_all(&chunk).await.unwrap();
        sent += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.write_all(&ping[half..]).await.unwrap();
    sent += 1;
    // Every ping is answered; the connection is still open.
    let mut pongs = 0;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while pongs < sent {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("pongs within the deadline")
            .unwrap();
        assert!(n > 0, "closed after {pongs} of {sent} pongs");
        buf.extend_from_slice(&chunk[..n]);
        pongs = String::from_utf8_lossy(&buf)
            .matches("\"op\":\"pong\"")
            .count();
    }
    assert!(!String::from_utf8_lossy(&buf).contains("not completed"));
}

/// Defect 4: bytes of partial messages over the process share one budget
/// (`limits.partial_bytes_max`): connections that would pass it are closed with 1013, and the
/// budget comes back when stalled connections go.
async fn partial_messages_share_one_budget(driver: Driver) {
    let env = [
        ("TICKCAST_LIMITS__PARTIAL_BYTES_MAX", "262144"),
        ("TICKCAST_TIMEOUTS__MESSAGE_MS", "60000"),
    ];
    let server = Server::start(driver, &env, &[]);
    let frame = client_frame(true, 0, 1, &vec![b' '; 60_000], true);
    let mut stalled = Vec::new();
    let (mut held, mut refused) = (0.0, 0.0);
    for _ in 0..8 {
        let mut s = raw_ws(&server).await;
        read_frames(&mut s, 1).await;
        s.write_all(&frame[..50_000]).await.unwrap();
        // Wait until the server has taken these bytes into the budget, or refused them.
        let start = Instant::now();
        loop {
            let closes = server
                .metric_with("tickcast_connections_closed_total", "reason", "overloaded")
                .await;
            if closes > refused {
                refused = closes;
                assert_eq!(raw_read_close_code(&mut s).await, Some(1013));
                break;
            }
            let now = server.metric("tickcast_partial_bytes").await;
            if now >= held + 50_000.0 {
                held = now;
                stalled.push(s);
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the server neither held nor refused them"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // 256 KiB hold at most five of these: the others were refused.
    assert!(refused >= 3.0, "{refused} refused");
    assert!(held <= 262_144.0, "{held}");
    assert_eq!(
        server.metric("tickcast_partial_budget_closes_total").await,
        refused
    );
    drop(stalled);
    // Every byte is given back once they are gone.
    let start = Instant::now();
    while server.metric("tickcast_partial_bytes").await != 0.0 {
        assert!(
            start.elapsed() < DEADLINE,
            "partial bytes were not released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A large message arriving in parts is taken again.
    let mut s = raw_ws(&server).await;
    read_frames(&mut s, 1).await;
    let publish = json!({"op":"publish","id":"big","topic":"p.big","data":"d".repeat(30_000)});
    let big = client_frame(true, 0, 1, publish.to_string().as_bytes(), true);
    s.write_all(&big[..10_000]).await.unwrap();
    s.write_all(&big[10_000..]).await.unwrap();
    let reply = read_frames(&mut s, 1).await;
    assert!(String::from_utf8_lossy(&reply).contains(r#""op":"ack","id":"big""#));
}

/// Reads `n` complete server frames from a raw WebSocket; returns their bytes.
async fn read_frames(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut i = 0;
        let mut frames = 0;
        while let Some((hdr, len)) = server_frame_lens(&buf[i..]) {
            if i + hdr + len > buf.len() {
                break;
            }
            i += hdr + len;
            frames += 1;
        }
        if frames >= n {
            return buf;
        }
        let got = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("frames within the deadline")
            .unwrap();
        assert!(got > 0, "closed while waiting for {n} frames");
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// Two topics `<prefix>N` owned by the same shard of a 2-shard server, by the server's own
/// `owner_shard`.
fn same_owner_pair(prefix: &str) -> (String, String) {
    // The test servers run 2 shards (`Server::start`).
    let owner = |t: &str| tickcast::pubsub::topic::owner_shard(t, 2);
    let first = format!("{prefix}0");
    let second = (1..)
        .map(|i| format!("{prefix}{i}"))
        .find(|t| owner(t) == owner(&first))
        .unwrap();
    (first, second)
}

/// Sends a text message from any client stream.
trait SendText {
    async fn send_text(&mut self, text: &str);
}

impl SendText for Ws {
    async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.send(tokio_tungstenite::tungstenite::Message::text(
            text.to_string(),
        ))
        .await
        .unwrap();
    }
}
