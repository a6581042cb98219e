//! End-to-end behaviour of the engine (issue: core engine), each test on io_uring and epoll.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

both_drivers!(
    welcome_frame,
    subscribe_publish_round_trip,
    wildcards_and_overlap,
    fanout_across_shards,
    ten_thousand_in_order,
    encode_once_with_many_subscribers,
    slow_consumer_closed_fast_keeps_up,
    error_replies_keep_connection_usable,
    subscription_limit_refuses_whole_request,
    close_codes,
    client_close_is_echoed,
    http_endpoints_and_garbage,
    handshake_deadline_cuts_slowloris,
    server_pings_and_idle_timeout,
    busy_subscribers_are_pinged_too,
    graceful_shutdown_sends_1001,
    connection_limits_answer_before_upgrade,
);

async fn welcome_frame(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let (_ws, w) = connect(&server).await;
    assert!(w["conn"].as_str().is_some_and(|c| !c.is_empty()), "{w}");
    assert!(w["shard"].as_u64().is_some_and(|s| s < 2), "{w}");
    assert_eq!(w["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(w["ping_interval_s"], 20);
}

/// Reads the next text frame as a raw string (to check verbatim payloads).
async fn recv_text(ws: &mut Ws) -> String {
    // One deadline for the call: the server's pings (every 20 s) must not restart it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

async fn subscribe_publish_round_trip(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let (mut sub, _) = connect(&server).await;
    let ack = subscribe(&mut sub, 1, &["trades.BTCUSDT"]).await;
    assert_eq!(ack["topics"], json!(["trades.BTCUSDT"]));

    let (mut publ, _) = connect(&server).await;
    // Data with spacing and number formats a re-serializer would change: must arrive verbatim.
    let data = r#"{"p": "67012.35", "q": 1.0e2, "tags": ["a" , "b"]}"#;
    let op = format!(r#"{{"op":"publish","id":3,"topic":"trades.BTCUSDT","data":{data}}}"#);
    publ.send(Message::text(op)).await.unwrap();
    let ack = recv_json(&mut publ).await;
    assert_eq!(
        (&ack["op"], &ack["id"], &ack["seq"]),
        (&json!("ack"), &json!(3), &json!(1))
    );
    assert_eq!(ack["epoch"].as_str().map(str::len), Some(16), "{ack}");

    let raw = recv_text(&mut sub).await;
    assert!(
        raw.starts_with(r#"{"topic":"trades.BTCUSDT","seq":1,"ts":"#),
        "{raw}"
    );
    assert!(raw.ends_with(&format!(r#","data":{data}}}"#)), "{raw}");
    let frame: Value = serde_json::from_str(&raw).unwrap();
    let ts = frame["ts"].as_u64().unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(
        ts <= now_us && now_us - ts < 60_000_000,
        "ts {ts} is not the publish time (now {now_us})"
    );

    // Without an id a publish is fire-and-forget: the next reply the publisher sees is the pong.
    send_json(
        &mut publ,
        json!({"op":"publish","topic":"trades.BTCUSDT","data":2}),
    )
    .await;
    send_json(&mut publ, json!({"op":"ping","id":"p-9"})).await;
    let pong = recv_json(&mut publ).await;
    assert_eq!(pong["op"], "pong");
    assert_eq!(pong["id"], "p-9");
    assert!(pong["ts"].as_u64().is_some());
    let second = recv_json(&mut sub).await;
    assert_eq!(
        (second["seq"].as_u64(), &second["data"]),
        (Some(2), &json!(2))
    );

    // Unsubscribe: the next message this connection sees is the marker on another topic.
    // Another subscriber keeps the topic needed meanwhile (one nothing needs may be forgotten
    // at any sweep, and published to again would start over at seq 1), and gets the message
    // the unsubscribed connection does not.
    let (mut holder, _) = connect(&server).await;
    subscribe(&mut holder, 1, &["trades.BTCUSDT"]).await;
    send_json(
        &mut sub,
        json!({"op":"unsubscribe","id":2,"topics":["trades.BTCUSDT"]}),
    )
    .await;
    assert_eq!(
        recv_json(&mut sub).await,
        json!({"op":"ack","id":2,"topics":["trades.BTCUSDT"]})
    );
    subscribe(&mut sub, 4, &["marker"]).await;
    send_json(
        &mut publ,
        json!({"op":"publish","id":5,"topic":"trades.BTCUSDT","data":3}),
    )
    .await;
    assert_eq!(recv_json(&mut publ).await["seq"], 3);
    assert_eq!(recv_json(&mut holder).await["seq"], 3);
    send_json(
        &mut publ,
        json!({"op":"publish","id":6,"topic":"marker","data":"m"}),
    )
    .await;
    assert_eq!(recv_json(&mut publ).await["seq"], 1);
    assert_eq!(recv_json(&mut sub).await["topic"], "marker");
}

async fn wildcards_and_overlap(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let (mut a, _) = connect(&server).await;
    let (mut b, _) = connect(&server).await;
    let (mut c, _) = connect(&server).await;
    subscribe(&mut a, 1, &["md.*.trades", "end"]).await;
    subscribe(&mut b, 1, &["md.>", "end"]).await;
    // Overlapping patterns: each message once.
    subscribe(&mut c, 1, &["md.*.trades", "md.>", "md.BTC.trades", "end"]).await;
    let (mut p, _) = connect(&server).await;
    publish(&mut p, 1, "md.BTC.trades", json!(1)).await;
    publish(&mut p, 2, "md.BTC.book.l2", json!(2)).await;
    publish(&mut p, 3, "md", json!(3)).await; // `>` needs at least one more segment
    publish(&mut p, 4, "md.ETH", json!(4)).await; // `*.trades` needs two segments
    publish(&mut p, 5, "end", json!("end")).await;
    let topics = |v: Vec<Value>| {
        v.iter()
            .map(|m| m["topic"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let mut got = Vec::new();
    for ws in [&mut a, &mut b, &mut c] {
        let mut msgs = Vec::new();
        loop {
            let m = recv_json(ws).await;
            let end = m["topic"] == "end";
            msgs.push(m);
            if end {
                break;
            }
        }
        got.push(topics(msgs));
    }
    assert_eq!(got[0], ["md.BTC.trades", "end"]);
    assert_eq!(got[1], ["md.BTC.trades", "md.BTC.book.l2", "md.ETH", "end"]);
    assert_eq!(got[2], ["md.BTC.trades", "md.BTC.book.l2", "md.ETH", "end"]);
}

async fn fanout_across_shards(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let mut subs = connect_on_shards(&server, 2).await;
    for ws in subs.iter_mut() {
        subscribe(ws, 1, &["x.*"]).await;
    }
    // From a client, from each shard as publisher.
    let mut pubs = connect_on_shards(&server, 2).await;
    let mut expected = Vec::new();
    for (i, p) in pubs.iter_mut().enumerate() {
        let seq = publish(p, 1, "x.y", json!({"from_shard": i})).await;
        expected.push((seq, json!({"from_shard": i})));
    }
    // From the HTTP API.
    let (status, body) = server
        .http(
            "POST",
            "/v1/publish",
            Some(r#"{"topic":"x.y","data":"http"}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let seq: Value = serde_json::from_str(&body).unwrap();
    expected.push((seq["seq"].as_u64().unwrap(), json!("http")));
    assert_eq!(expected.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
    for ws in subs.iter_mut() {
        for (seq, data) in &expected {
            let m = recv_json(ws).await;
            assert_eq!(
                (m["topic"].as_str(), m["seq"].as_u64(), &m["data"]),
                (Some("x.y"), Some(*seq), data)
            );
        }
    }
}

async fn ten_thousand_in_order(driver: Driver) {
    const N: u64 = 10_000;
    let server = Server::start(driver, &[], &[]);
    let mut subs = connect_on_shards(&server, 2).await;
    for ws in subs.iter_mut() {
        subscribe(ws, 1, &["seq.test"]).await;
    }
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for i in 1..=N {
                    let m = recv_json(&mut ws).await;
                    assert_eq!(m["seq"].as_u64(), Some(i), "gap or reorder: {m}");
                    assert_eq!(m["data"].as_u64(), Some(i), "{m}");
                }
            })
        })
        .collect();
    let (mut p, _) = connect(&server).await;
    for i in 1..=N {
        let op = json!({"op":"publish","topic":"seq.test","data":i}).to_string();
        p.feed(Message::text(op)).await.unwrap();
    }
    p.flush().await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
}

async fn encode_once_with_many_subscribers(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let mut subs = Vec::new();
    for i in 0..60 {
        let (mut ws, _) = connect(&server).await;
        let pattern = if i % 3 == 0 { "enc.*" } else { "enc.a" };
        subscribe(&mut ws, 1, &[pattern]).await;
        subs.push(ws);
    }
    let (mut p, _) = connect(&server).await;
    for i in 0..50 {
        publish(&mut p, i, "enc.a", json!(i)).await;
    }
    for ws in subs.iter_mut() {
        for i in 1..=50u64 {
            assert_eq!(recv_json(ws).await["seq"].as_u64(), Some(i));
        }
    }
    let publishes = server.metric("tickcast_publishes_total").await;
    let serializations = server.metric("tickcast_serializations_total").await;
    let deliveries = server.metric("tickcast_deliveries_total").await;
    assert_eq!(publishes, 50.0);
    assert_eq!(serializations, 50.0, "each publish serialized exactly once");
    assert_eq!(deliveries, 60.0 * 50.0);
}

async fn slow_consumer_closed_fast_keeps_up(driver: Driver) {
    // The bound is 256 KiB; the publisher sends bursts of 50 KB and waits for each to be
    // sequenced, so a subscriber that reads keeps far below the bound.
    let env = [
        ("TICKCAST_LIMITS__WRITE_QUEUE_BYTES_MAX", "262144"),
        ("TICKCAST_LIMITS__PUBLISH_DATA_BYTES_MAX", "2048"),
    ];
    let server = Server::start(driver, &env, &[]);
    // The slow client: a tiny receive window, and it never reads after subscribing.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut slow = sock.connect(server.addr).await.unwrap();
    slow.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let sub = br#"{"op":"subscribe","id":1,"topics":["flood"]}"#;
    slow.write_all(&client_frame(true, 0, 1, sub, true))
        .await
        .unwrap();

    let (mut fast, _) = connect(&server).await;
    subscribe(&mut fast, 1, &["flood", "end"]).await;
    let fast_reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            let m = recv_json(&mut fast).await;
            if m["topic"] == "end" {
                return seqs;
            }
            seqs.push(m["seq"].as_u64().unwrap());
        }
    });
    let (mut p, _) = connect(&server).await;
    let pad = "x".repeat(1000);
    let mut sent = 0u64;
    // Publish until the server reports the slow consumer closed (bounded).
    while server.metric("tickcast_slow_consumer_closes_total").await < 1.0 {
        assert!(
            sent < 50_000,
            "slow consumer never closed after {sent} messages"
        );
        for _ in 0..50 {
            p.feed(Message::text(
                json!({"op":"publish","topic":"flood","data":pad}).to_string(),
            ))
            .await
            .unwrap();
            sent += 1;
        }
        p.flush().await.unwrap();
        publish(&mut p, 1, "sync", json!(0)).await;
    }
    publish(&mut p, 2, "end", json!(0)).await;
    let seqs = fast_reader.await.unwrap();
    assert_eq!(
        seqs,
        (1..=sent).collect::<Vec<_>>(),
        "the fast subscriber missed or reordered"
    );
    // The slow client's connection is released (EOF or reset after whatever was buffered).
    read_to_close(&mut slow).await;
    assert_eq!(
        server
            .metric_with(
                "tickcast_connections_closed_total",
                "reason",
                "slow_consumer"
            )
            .await,
        1.0
    );
    assert_eq!(
        server.metric("tickcast_slow_consumer_closes_total").await,
        1.0
    );
}

async fn error_replies_keep_connection_usable(driver: Driver) {
    let env = [
        ("TICKCAST_LIMITS__PUBLISH_DATA_BYTES_MAX", "1024"),
        ("TICKCAST_LIMITS__TOPICS_PER_SHARD_MAX", "1"),
        ("TICKCAST_LIMITS__TOPICS_PER_REQUEST_MAX", "4"),
    ];
    let server = Server::start(driver, &env, &[]);
    let (mut ws, _) = connect(&server).await;
    let expect_error = async |ws: &mut Ws, raw: &str, code: &str, id: Value| {
        ws.send(Message::text(raw.to_string())).await.unwrap();
        let e = recv_json(ws).await;
        assert_eq!(
            (e["op"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{raw} -> {e}"
        );
        assert_eq!(e["id"], id, "{raw} -> {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e
    };
    expect_error(&mut ws, "{nope", "bad_request", Value::Null).await;
    expect_error(&mut ws, r#"{"op":"dance","id":7}"#, "bad_request", json!(7)).await;
    expect_error(
        &mut ws,
        r#"{"op":"subscribe","id":"s"}"#,
        "bad_request",
        json!("s"),
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"op":"publish","id":8,"topic":"a.*","data":1}"#,
        "invalid_topic",
        json!(8),
    )
    .await;
    let big = format!(
        r#"{{"op":"publish","id":9,"topic":"a","data":"{}"}}"#,
        "x".repeat(2000)
    );
    expect_error(&mut ws, &big, "message_too_large", json!(9)).await;
    // Each shard holds at most one topic: of three new topics a subscriber needs, at least
    // one is refused (`capacity`), since the table has no idle topic to give up.
    let (mut sub, _) = connect(&server).await;
    subscribe(&mut sub, 1, &["t1", "t2", "t3"]).await;
    let mut refused = 0;
    for (i, t) in ["t1", "t2", "t3"].iter().enumerate() {
        send_json(
            &mut ws,
            json!({"op":"publish","id":10 + i,"topic":t,"data":1}),
        )
        .await;
        let r = recv_json(&mut ws).await;
        if r["op"] == "error" {
            assert_eq!(r["code"], "capacity", "{r}");
            refused += 1;
        }
    }
    assert!(refused >= 1);
    let five = r#"{"op":"subscribe","id":11,"topics":["a","b","c","d","e"]}"#;
    expect_error(&mut ws, five, "bad_request", json!(11)).await;
    let five = r#"{"op":"unsubscribe","id":12,"topics":["a","b","c","d","e"]}"#;
    expect_error(&mut ws, five, "bad_request", json!(12)).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["code"], "bad_request");
    // Per-topic errors in one subscribe: one error each (with the topic), the valid one acked.
    send_json(
        &mut ws,
        json!({"op":"subscribe","id":5,"topics":["ok.topic","bad..topic","bad#"]}),
    )
    .await;
    for bad in ["bad..topic", "bad#"] {
        let e = recv_json(&mut ws).await;
        assert_eq!(
            (e["code"].as_str(), e["topic"].as_str(), &e["id"]),
            (Some("invalid_topic"), Some(bad), &json!(5))
        );
    }
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"op":"ack","id":5,"topics":["ok.topic"],
            "positions":[{"topic":"ok.topic","seq":0,"epoch":"0000000000000000"}]})
    );
    // Nothing valid: errors only, no ack (the next reply is the pong).
    send_json(
        &mut ws,
        json!({"op":"subscribe","id":6,"topics":["bad..x"]}),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["code"], "invalid_topic");
    send_json(&mut ws, json!({"op":"ping","id":1})).await;
    assert_eq!(recv_json(&mut ws).await["op"], "pong");
}

async fn subscription_limit_refuses_whole_request(driver: Driver) {
    let server = Server::start(
        driver,
        &[("TICKCAST_LIMITS__SUBSCRIPTIONS_PER_CONN_MAX", "3")],
        &[],
    );
    let (mut ws, _) = connect(&server).await;
    subscribe(&mut ws, 1, &["a", "b"]).await;
    send_json(&mut ws, json!({"op":"subscribe","id":2,"topics":["c","d"]})).await;
    let e = recv_json(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), &e["id"]),
        (Some("too_many_subscriptions"), &json!(2)),
        "{e}"
    );
    // Refused whole: `c` was not subscribed, `a` still is.
    let (mut p, _) = connect(&server).await;
    publish(&mut p, 1, "c", json!("c")).await;
    publish(&mut p, 2, "a", json!("a")).await;
    assert_eq!(recv_json(&mut ws).await["topic"], "a");
    // Re-subscribing what is held does not count twice.
    subscribe(&mut ws, 3, &["a", "b", "c"]).await;
}

async fn close_codes(driver: Driver) {
    let env = [
        ("TICKCAST_LIMITS__MESSAGE_BYTES_MAX", "1024"),
        ("TICKCAST_LIMITS__PUBLISH_DATA_BYTES_MAX", "512"),
    ];
    let server = Server::start(driver, &env, &[]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked frame",
            client_frame(true, 0, 1, b"{}", false),
            1002,
        ),
        (
            "reserved bits",
            client_frame(true, 0b100, 1, b"{}", true),
            1002,
        ),
        ("unknown opcode", client_frame(true, 0, 3, b"", true), 1002),
        (
            "fragmented ping",
            client_frame(false, 0, 9, b"", true),
            1002,
        ),
        (
            "continuation first",
            client_frame(true, 0, 0, b"x", true),
            1002,
        ),
        (
            "invalid utf-8",
            client_frame(true, 0, 1, &[0x7b, 0xff, 0xfe, 0x7d], true),
            1007,
        ),
        (
            "too large",
            client_frame(true, 0, 1, &[b' '; 2000], true),
            1009,
        ),
    ];
    for (what, frame, code) in cases {
        let mut s = raw_ws(&server).await;
        s.write_all(&frame).await.unwrap();
        assert_eq!(raw_read_close_code(&mut s).await, Some(code), "{what}");
    }
}

async fn client_close_is_echoed(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let (mut ws, _) = connect(&server).await;
    ws.close(None).await.unwrap();
    // tungstenite completes the closing handshake: the server's echo ends the stream cleanly.
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                None => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end, Ok(()));
    let mut s = raw_ws(&server).await;
    s.write_all(&client_frame(true, 0, 8, &4321u16.to_be_bytes(), true))
        .await
        .unwrap();
    assert_eq!(raw_read_close_code(&mut s).await, Some(4321));
}

async fn http_endpoints_and_garbage(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let (status, body) = server.http("GET", "/health", None).await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (health["status"].as_str(), health["shards"].as_u64()),
        (Some("ok"), Some(2))
    );
    let (status, body) = server.http("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE tickcast_publish_to_write_seconds histogram"),
        "{body}"
    );
    assert!(body.contains("tickcast_connections{shard="), "{body}");
    assert_eq!(server.http("GET", "/nope", None).await.0, 404);
    assert_eq!(server.http("POST", "/health", None).await.0, 405);
    assert_eq!(server.http("GET", "/v1/publish", None).await.0, 405);
    assert_eq!(
        server.http("GET", "/ws", None).await.0,
        400,
        "plain GET /ws is not an upgrade"
    );
    assert_eq!(
        server
            .http("POST", "/v1/publish", Some(r#"{"topic":"a.*","data":1}"#))
            .await
            .0,
        400
    );
    assert_eq!(
        server
            .http("POST", "/v1/publish", Some(r#"{"topic":"a"}"#))
            .await
            .0,
        400
    );
    assert_eq!(
        server.http("POST", "/v1/publish", Some("not json")).await.0,
        400
    );
    let raw = server
        .raw_exchange(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
        .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 426"), "{text}");
    assert!(text.contains("Sec-WebSocket-Version: 13"), "{text}");
    // Not HTTP at all (a TLS ClientHello): an error response, then close; never a hang.
    let raw = server
        .raw_exchange(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, b'\r', b'\n', b'\r',
            b'\n',
        ])
        .await;
    assert_eq!(parse_http(&raw).0, 400);
    let huge = format!(
        "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(
        parse_http(&server.raw_exchange(huge.as_bytes()).await).0,
        431
    );
    // A compression offer from a client is accepted (docs/PROTOCOL.md "Compression").
    let raw = server
        .raw_exchange(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n\x88\x82\x00\x00\x00\x00\x03\xe8")
        .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"),
        "{text}"
    );
    // Keep-alive: two requests on one connection.
    let raw = server
        .raw_exchange(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(
        String::from_utf8_lossy(&raw)
            .matches("HTTP/1.1 200")
            .count(),
        2
    );
}

async fn handshake_deadline_cuts_slowloris(driver: Driver) {
    let server = Server::start(driver, &[("TICKCAST_TIMEOUTS__HANDSHAKE_MS", "300")], &[]);
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The request never completes; the server must drop the connection by itself.
    let got = read_to_close(&mut s).await;
    assert!(got.is_empty() || !got.starts_with(b"HTTP/1.1 101"));
    drop(s);
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "handshake_timeout",
            1.0,
        )
        .await;
}

async fn server_pings_and_idle_timeout(driver: Driver) {
    let env = [
        ("TICKCAST_TIMEOUTS__PING_INTERVAL_S", "1"),
        ("TICKCAST_TIMEOUTS__IDLE_S", "2"),
    ];
    let server = Server::start(driver, &env, &[]);
    // A raw client that never answers: it sees pings, then close 1001 for idleness.
    let mut s = raw_ws(&server).await;
    let data = read_to_close(&mut s).await;
    assert!(
        data.windows(2).any(|w| w == [0x89, 0x00]),
        "no ping frame before the close: {data:?}"
    );
    let close = data
        .windows(2)
        .position(|w| w[0] == 0x88)
        .expect("close frame");
    assert_eq!(u16::from_be_bytes([data[close + 2], data[close + 3]]), 1001);
    drop(s);
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "idle_timeout",
            1.0,
        )
        .await;
}

/// A due ping waits a little for a data write to ride with (no write of its own); a subscriber
/// that keeps getting data still gets its pings, and no more than one per interval.
async fn busy_subscribers_are_pinged_too(driver: Driver) {
    /// Pings to receive while data flows.
    const PINGS: u64 = 3;
    let env = [
        ("TICKCAST_TIMEOUTS__PING_INTERVAL_S", "1"),
        ("TICKCAST_TIMEOUTS__IDLE_S", "30"),
    ];
    // Every ping the subscriber gets comes after this instant (the server's clock readings
    // all come after its start).
    let started = std::time::Instant::now();
    let server = Server::start(driver, &env, &[]);
    let (mut publisher, _) = connect(&server).await;
    let (mut sub, _) = connect(&server).await;
    subscribe(&mut sub, 1, &["busy"]).await;
    // The subscriber is never left without data: every frame it reads makes the publisher send
    // the next one, however fast or slow the machine runs.
    let op = json!({"op":"publish","topic":"busy","data":1}).to_string();
    publisher.send(Message::text(op.clone())).await.unwrap();
    let (mut pings, mut busy_pings, mut data) = (0u64, 0u64, 0u64);
    while busy_pings < PINGS {
        let msg = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .unwrap_or_else(|_| {
                panic!("nothing within {DEADLINE:?}: {busy_pings} pings while data flowed")
            })
            .expect("stream ended")
            .expect("websocket error");
        match msg {
            Message::Ping(_) => {
                pings += 1;
                // The first ping may come before the first data frame.
                if data > 0 {
                    busy_pings += 1;
                }
            }
            Message::Text(_) => {
                data += 1;
                publisher.send(Message::text(op.clone())).await.unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The first ping comes at a random point of the first interval after the upgrade, every
    // later one at least an interval after the one before (a late scan only delays them).
    let elapsed = started.elapsed();
    assert!(
        pings <= elapsed.as_secs() + 1,
        "{pings} pings in {elapsed:?} at a 1 s interval ({data} data frames)"
    );
}

async fn graceful_shutdown_sends_1001(driver: Driver) {
    let mut server = Server::start(driver, &[], &[]);
    let mut clients = connect_on_shards(&server, 2).await;
    for ws in clients.iter_mut() {
        subscribe(ws, 1, &["x"]).await;
    }
    let waiters: Vec<_> = clients
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { recv_close(&mut ws).await }))
        .collect();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    for w in waiters {
        let frame = w.await.unwrap().expect("close frame with a code");
        assert_eq!(u16::from(frame.code), 1001);
    }
    assert!(status.success(), "exit status {status:?}");
}

/// Upgrade request on a fresh connection; returns the HTTP status line's code.
async fn upgrade_status(server: &Server) -> u16 {
    let raw = server
        .raw_exchange(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\
              \x88\x82\x00\x00\x00\x00\x03\xe8",
        )
        .await;
    parse_http(&raw).0
}

async fn connection_limits_answer_before_upgrade(driver: Driver) {
    // Per IP: two connections from 127.0.0.1 are allowed, the third is refused with 429.
    let server = Server::start(
        driver,
        &[("TICKCAST_LIMITS__CONNECTIONS_PER_IP_MAX", "2")],
        &[],
    );
    let (_a, _) = connect(&server).await;
    let (_b, _) = connect(&server).await;
    assert_eq!(upgrade_status(&server).await, 429);
    drop(_b);
    // Once the server has removed a connection from this address (every TCP connection counts,
    // plain HTTP ones included), a new upgrade is accepted.
    let start = std::time::Instant::now();
    loop {
        match upgrade_status(&server).await {
            101 => break,
            429 => assert!(
                start.elapsed() < DEADLINE,
                "the per-IP slot was never released"
            ),
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // In total: 503 once the process holds `connections_max`.
    let server = Server::start(driver, &[("TICKCAST_LIMITS__CONNECTIONS_MAX", "2")], &[]);
    let (_c, _) = connect(&server).await;
    let (_d, _) = connect(&server).await;
    assert_eq!(upgrade_status(&server).await, 503);
    assert!(server.metric("tickcast_limit_rejects_total").await >= 1.0);
}
