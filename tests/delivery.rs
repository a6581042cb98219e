//! Slow-consumer policies, lanes and delivery strategies per topic class, with a real client
//! library: a stalled subscriber (tiny receive window, not reading) on a `conflate` topic
//! resumes with the newest value per topic while a fast one got everything; an alert overtakes
//! a full data lane; batched delivery coalesces writes; throttled delivery sends the latest
//! value at most N times a second.

mod common;

use std::collections::HashMap;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::{client_async, tungstenite::Message};

both_drivers!(
    conflation_gives_a_stalled_client_the_newest,
    alert_overtakes_a_full_data_lane,
    batched_delivery_coalesces_writes,
    throttled_delivery_sends_the_latest,
    a_stalled_subscriber_that_reads_again_gets_everything,
);

/// A client whose socket receive buffer is tiny: once it stops reading, the server's queue
/// for it fills after a few KB.
async fn stalled_client(server: &Server) -> (Ws, Value) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(server.addr).await.unwrap();
    let (mut ws, _) = client_async(
        server.ws_url(),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let welcome = recv_json(&mut ws).await;
    (ws, welcome)
}

async fn conflation_gives_a_stalled_client_the_newest(driver: Driver) {
    // Per topic: ~2 MB for the stalled client, more than the kernel's socket buffers take.
    const N: u64 = 5_000;
    let server = Server::with_topics(driver, r#"[{pattern="px.>",slow_policy="conflate"}]"#, &[]);
    let (mut stalled, _) = stalled_client(&server).await;
    subscribe(&mut stalled, 1, &["px.*"]).await;
    let (mut fast, _) = connect(&server).await;
    subscribe(&mut fast, 1, &["px.*"]).await;
    // The fast subscriber reports every frame it reads; the publisher sends bursts and waits
    // until the fast one has read each burst: it keeps up by construction.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64)>();
    let fast_task = tokio::spawn(async move {
        let mut got: HashMap<String, Vec<u64>> = HashMap::new();
        loop {
            let m = recv_json(&mut fast).await;
            let topic = m["topic"].as_str().unwrap().to_string();
            let seq = m["seq"].as_u64().unwrap();
            got.entry(topic.clone()).or_default().push(seq);
            let _ = seen_tx.send((topic, seq));
            if m["data"] == "last"
                && got.len() == 2
                && got.values().all(|v| v.len() as u64 == N + 1)
            {
                return got;
            }
        }
    });
    let (mut p, _) = connect(&server).await;
    let filler = "x".repeat(400);
    let mut sent = 0u64;
    while sent < N {
        for _ in 0..50 {
            sent += 1;
            for t in ["px.a", "px.b"] {
                let op = json!({"op":"publish","topic":t,"data":{"i":sent,"pad":filler}});
                p.feed(Message::text(op.to_string())).await.unwrap();
            }
        }
        p.flush().await.unwrap();
        let mut caught_up = 0;
        while caught_up < 2 {
            let (_, seq) = seen_rx.recv().await.unwrap();
            if seq == sent {
                caught_up += 1;
            }
        }
    }
    for t in ["px.a", "px.b"] {
        send_json(&mut p, json!({"op":"publish","topic":t,"data":"last"})).await;
    }
    let fast_got = fast_task.await.unwrap();
    let want: Vec<u64> = (1..=N + 1).collect();
    for (t, seqs) in &fast_got {
        assert_eq!(seqs, &want, "the fast subscriber got every message of {t}");
    }
    server.wait_metric("tickcast_conflated_total", 1.0).await;
    // The admin API shows who skipped frames: the stalled connection.
    let (status, body) = server.http("GET", "/v1/connections?topic=px.a", None).await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let skipped: Vec<u64> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["skipped"].as_u64().unwrap())
        .collect();
    // (The fast subscriber has gone by now, or shows 0.)
    assert_eq!(skipped.iter().filter(|s| **s > 0).count(), 1, "{body}");

    // The stalled client resumes: per topic, increasing seqs, the newest last, not all.
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    while ["px.a", "px.b"]
        .iter()
        .any(|t| got.get(*t).and_then(|s| s.last()) != Some(&(N + 1)))
    {
        let m = recv_json(&mut stalled).await;
        let topic = m["topic"].as_str().unwrap().to_string();
        got.entry(topic)
            .or_default()
            .push(m["seq"].as_u64().unwrap());
    }
    for (t, seqs) in &got {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{t}: seqs increase");
        assert!(
            (seqs.len() as u64) < N + 1,
            "{t}: conflated, not every message ({})",
            seqs.len()
        );
    }
    // Still connected: a ping is answered.
    send_json(&mut stalled, json!({"op":"ping","id":"alive"})).await;
    assert_eq!(recv_json(&mut stalled).await["op"], "pong");
}

async fn alert_overtakes_a_full_data_lane(driver: Driver) {
    let server = Server::with_topics(
        driver,
        r#"[{pattern="risk.>",lane="alert"}]"#,
        &[("TICKCAST_LIMITS__WRITE_QUEUE_BYTES_MAX", "33554432")],
    );
    let (mut stalled, _) = stalled_client(&server).await;
    subscribe(&mut stalled, 1, &["md.x", "risk.margin"]).await;
    let (mut p, _) = connect(&server).await;
    let last = flood(&mut p, &["md.x"], 10_000, 400).await;
    // 10,000 ticks (~4.5 MB, more than the kernel's socket buffers take) wait in the data
    // lane; now the alert.
    send_json(
        &mut p,
        json!({"op":"publish","id":"a","topic":"risk.margin","data":"call"}),
    )
    .await;
    assert_eq!(recv_json(&mut p).await["id"], "a");
    // Resume: the alert must come before the last queued tick.
    let mut ticks_before_alert = 0u64;
    loop {
        let m = recv_json(&mut stalled).await;
        if m["topic"] == "risk.margin" {
            break;
        }
        ticks_before_alert += 1;
        assert!(
            m["seq"].as_u64().unwrap() < last["md.x"],
            "every tick arrived before the alert"
        );
    }
    assert!(ticks_before_alert < last["md.x"]);
    // The ticks behind it still all arrive, in order.
    let mut seq = 0;
    while seq < last["md.x"] {
        let m = recv_json(&mut stalled).await;
        seq = m["seq"].as_u64().unwrap();
    }
}

async fn batched_delivery_coalesces_writes(driver: Driver) {
    let server = Server::with_topics(
        driver,
        r#"[{pattern="stats.>",delivery="batched",batch_window_ms=200}]"#,
        &[],
    );
    let (mut sub, _) = connect(&server).await;
    subscribe(&mut sub, 1, &["stats.cpu"]).await;
    let (mut p, _) = connect(&server).await;
    let writes_before = server.metric("tickcast_writes_total").await;
    let start = std::time::Instant::now();
    for i in 0..20 {
        let op = json!({"op":"publish","topic":"stats.cpu","data":i});
        p.feed(Message::text(op.to_string())).await.unwrap();
    }
    p.flush().await.unwrap();
    for i in 0..20 {
        let m = recv_json(&mut sub).await;
        assert_eq!((&m["seq"], &m["data"]), (&json!(i + 1), &json!(i)));
    }
    let elapsed = start.elapsed();
    let writes = server.metric("tickcast_writes_total").await - writes_before;
    // The subscriber's frames leave in one write per 200 ms window they arrive in: one window
    // when the server takes them in at once, more only if it took longer than a window over
    // them (one more for the rounding). Besides: the answer to the first /metrics request, and
    // a server ping to each connection.
    let most = (elapsed.as_secs_f64() / 0.2) as u64 + 2 + 3;
    assert!(
        writes <= most as f64,
        "{writes} writes for 20 batched frames in {elapsed:?}"
    );
}

async fn throttled_delivery_sends_the_latest(driver: Driver) {
    let mut server = Server::with_topics(
        driver,
        r#"[{pattern="mon.>",delivery="throttled",throttle_per_s=2}]"#,
        &[],
    );
    let (mut sub, _) = connect(&server).await;
    subscribe(&mut sub, 1, &["mon.load"]).await;
    let (mut p, _) = connect(&server).await;
    let start = std::time::Instant::now();
    let last = flood(&mut p, &["mon.load"], 50, 10).await;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last["mon.load"]) {
        seqs.push(recv_json(&mut sub).await["seq"].as_u64().unwrap());
    }
    let elapsed = start.elapsed();
    assert_eq!(seqs[0], 1, "the first goes out at once");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // Then at most one per half second the flood and its delivery took (one more for the
    // rounding): 51 messages, but the subscriber gets only a few of them.
    let most = 1 + (elapsed.as_secs_f64() * 2.0) as usize + 1;
    assert!(
        seqs.len() <= most,
        "throttled to the latest values, 2/s: {seqs:?} in {elapsed:?}"
    );
    assert!(server.metric("tickcast_conflated_total").await >= 1.0);
    // A throttled subscriber that leaves takes its throttle slots with it, and the shard
    // goes on (this once crashed the process: its slots were looked up after it was gone).
    let closed = server.metric("tickcast_connections_closed_total").await;
    drop(sub);
    server
        .wait_metric("tickcast_connections_closed_total", closed + 1.0)
        .await;
    let (mut again, _) = connect(&server).await;
    subscribe(&mut again, 2, &["mon.load"]).await;
    let last = flood(&mut p, &["mon.load"], 1, 10).await;
    while recv_json(&mut again).await["seq"].as_u64() != Some(last["mon.load"]) {}
    server.assert_alive();
}

/// A subscriber that stops reading until its socket is full, then reads again, gets every
/// message in order and stays connected: the server waits for the socket to take more (a
/// write-space event of its readiness set) instead of closing it or writing out of order.
async fn a_stalled_subscriber_that_reads_again_gets_everything(driver: Driver) {
    // Room in the queue for the whole burst; a low TCP_NOTSENT_LOWAT so the kernel takes
    // only a little of it before the socket reports full.
    let server = Server::start(
        driver,
        &[
            ("TICKCAST_LIMITS__WRITE_QUEUE_BYTES_MAX", "8388608"),
            ("TICKCAST_SERVER__TCP_NOTSENT_LOWAT_BYTES", "16384"),
        ],
        &[],
    );
    let (mut sub, _) = stalled_client(&server).await;
    subscribe(&mut sub, 1, &["bulk"]).await;
    let (mut p, _) = connect(&server).await;
    // ~1 MB for a client that takes a few KB: the rest must wait in the server's queue.
    let last = flood(&mut p, &["bulk"], 1000, 1000).await["bulk"];
    wait_for_queued(&server, 500_000).await;
    // Reading again: everything arrives, in order.
    for want in 1..=last {
        assert_eq!(recv_json(&mut sub).await["seq"].as_u64(), Some(want));
    }
    // Nothing is left queued and the connection still takes new messages.
    assert_eq!(largest_queue_bytes(&server).await, 0);
    let next = flood(&mut p, &["bulk"], 0, 10).await["bulk"];
    assert_eq!(recv_json(&mut sub).await["seq"].as_u64(), Some(next));
    assert_eq!(
        server.metric("tickcast_slow_consumer_closes_total").await,
        0.0
    );
}
