//! History and recovery with a real client: reconnect with `since` while a publisher runs at
//! full speed (gap-free, duplicate-free), eviction and epoch change (exactly one `gap`), the
//! latest-value cache, wildcard subscriptions with `since`, epochs in acks.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

both_drivers!(
    reconnect_with_since_under_load,
    evicted_history_gives_one_gap,
    epoch_change_gives_a_gap,
    cache_gives_the_last_message,
    wildcard_subscription_with_since,
    idem_key_deduplicates_retries,
);

/// Publishes with an id; returns (seq, epoch) from the ack (data frames in between skipped).
async fn publish(ws: &mut Ws, topic: &str, data: Value) -> (u64, String) {
    send_json(
        ws,
        json!({"op":"publish","id":"p","topic":topic,"data":data}),
    )
    .await;
    loop {
        let m = recv_json(ws).await;
        if m["op"] == "ack" && m["id"] == "p" {
            return (
                m["seq"].as_u64().unwrap(),
                m["epoch"].as_str().unwrap().to_string(),
            );
        }
    }
}

/// Reads until the next data frame.
async fn next_data(ws: &mut Ws) -> Value {
    loop {
        let m = recv_json(ws).await;
        if m.get("op").is_none() {
            return m;
        }
    }
}

/// Sends a subscribe and returns (ack, every message before the ack).
async fn subscribe_with(ws: &mut Ws, v: Value) -> (Value, Vec<Value>) {
    let id = v["id"].clone();
    send_json(ws, v).await;
    let mut before = Vec::new();
    loop {
        let m = recv_json(ws).await;
        if m["op"] == "ack" && m["id"] == id {
            return (m, before);
        }
        before.push(m);
    }
}

fn position(ack: &Value, topic: &str) -> (u64, String) {
    let p = ack["positions"]
        .as_array()
        .unwrap_or_else(|| panic!("no positions in {ack}"))
        .iter()
        .find(|p| p["topic"] == topic)
        .unwrap_or_else(|| panic!("no position for {topic} in {ack}"));
    (
        p["seq"].as_u64().unwrap(),
        p["epoch"].as_str().unwrap().to_string(),
    )
}

async fn reconnect_with_since_under_load(driver: Driver) {
    let server = Server::with_topics(
        driver,
        r#"[{pattern="md.>",history_size=1000000}]"#,
        &[("TICKCAST_LIMITS__WRITE_QUEUE_BYTES_MAX", "67108864")],
    );
    // A publisher at full speed until told to stop: bursts of 100, each closed by one publish
    // with an id whose ack it awaits (as a real publisher does; without any flow control a
    // debug-build server on a shared machine would only measure its read backlog).
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let (mut publisher, _) = connect(&server).await;
    let pub_stop = stop.clone();
    let pub_acked = acked.clone();
    let pub_task = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            for _ in 0..99 {
                n += 1;
                let op = json!({"op":"publish","topic":"md.x","data":n}).to_string();
                publisher.feed(Message::text(op)).await.unwrap();
            }
            // The last ack's seq is the end of the stream.
            let last = publish(&mut publisher, "md.x", json!("burst end")).await;
            pub_acked.store(last.0, Ordering::Relaxed);
            if pub_stop.load(Ordering::Relaxed) {
                return last;
            }
        }
    });

    let (mut sub, _) = connect(&server).await;
    let (ack, _) =
        subscribe_with(&mut sub, json!({"op":"subscribe","id":1,"topics":["md.x"]})).await;
    let (start, epoch) = position(&ack, "md.x");
    let mut last = start;
    while last < start + 2_000 {
        let m = next_data(&mut sub).await;
        let seq = m["seq"].as_u64().unwrap();
        assert_eq!(seq, last + 1, "live stream before the disconnect");
        last = seq;
    }
    drop(sub);
    // Disconnected: let the stream run on without us for a while.
    let missed_until = last + 1_000;
    let start_wait = std::time::Instant::now();
    while acked.load(Ordering::Relaxed) < missed_until {
        assert!(start_wait.elapsed() < DEADLINE, "the publisher stalled");
        // A poll, not a spin: a spinning test thread takes a core from the server it waits for.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }

    // Reconnect while the publisher keeps going; resume from `last`.
    let (mut sub, _) = connect(&server).await;
    let since = json!({"md.x": {"seq": last, "epoch": epoch}});
    let (ack, before) = subscribe_with(
        &mut sub,
        json!({"op":"subscribe","id":2,"topics":["md.x"],"since":since}),
    )
    .await;
    assert!(before.is_empty(), "nothing precedes the ack: {before:?}");
    let (now_seq, now_epoch) = position(&ack, "md.x");
    // The first ack may have come before anything was published (epoch "none yet", compared
    // by `seq` alone); otherwise the epoch is the same.
    if epoch != "0000000000000000" {
        assert_eq!(now_epoch, epoch);
    }
    assert!(
        now_seq >= missed_until,
        "publishes went on while disconnected"
    );
    for _ in 0..2_000 {
        let m = recv_json(&mut sub).await;
        assert!(
            m.get("op").is_none(),
            "no gap or other message expected: {m}"
        );
        let seq = m["seq"].as_u64().unwrap();
        assert_eq!(
            seq,
            last + 1,
            "gap-free and duplicate-free after the reconnect"
        );
        last = seq;
    }
    stop.store(true, Ordering::Relaxed);
    let (end, _) = pub_task.await.unwrap();
    while last < end {
        let m = next_data(&mut sub).await;
        let seq = m["seq"].as_u64().unwrap();
        assert_eq!(seq, last + 1, "gap-free and duplicate-free to the end");
        last = seq;
    }
    assert_eq!(server.metric("tickcast_gaps_total").await, 0.0);
    assert!(server.metric("tickcast_replayed_total").await >= 1_000.0);
}

async fn evicted_history_gives_one_gap(driver: Driver) {
    let server = Server::with_topics(driver, r#"[{pattern="ev.>",history_size=5}]"#, &[]);
    let (mut p, _) = connect(&server).await;
    let mut epoch = String::new();
    for i in 1..=20 {
        let (seq, e) = publish(&mut p, "ev.t", json!(i)).await;
        assert_eq!(seq, i);
        epoch = e;
    }
    let (mut sub, _) = connect(&server).await;
    let (ack, _) = subscribe_with(
        &mut sub,
        json!({"op":"subscribe","id":1,"topics":["ev.t"],"since":{"ev.t":{"seq":3,"epoch":epoch}}}),
    )
    .await;
    assert_eq!(position(&ack, "ev.t").0, 20);
    let gap = recv_json(&mut sub).await;
    assert_eq!(
        (
            &gap["op"],
            &gap["topic"],
            &gap["from"],
            &gap["to"],
            &gap["reason"]
        ),
        (
            &json!("gap"),
            &json!("ev.t"),
            &json!(4),
            &json!(15),
            &json!("evicted")
        ),
        "{gap}"
    );
    for want in 16..=20 {
        let m = recv_json(&mut sub).await;
        assert_eq!(m["seq"], want, "replayed in order: {m}");
    }
    publish(&mut p, "ev.t", json!(21)).await;
    let m = recv_json(&mut sub).await;
    assert_eq!(
        m["seq"], 21,
        "live after the replay, and exactly one gap: {m}"
    );
    assert_eq!(server.metric("tickcast_gaps_total").await, 1.0);
}

async fn epoch_change_gives_a_gap(driver: Driver) {
    let server = Server::with_topics(driver, r#"[{pattern="ep.>",history_size=100}]"#, &[]);
    let (mut p, _) = connect(&server).await;
    for i in 1..=3 {
        publish(&mut p, "ep.t", json!(i)).await;
    }
    let (mut sub, _) = connect(&server).await;
    let (ack, _) = subscribe_with(
        &mut sub,
        json!({"op":"subscribe","id":1,"topics":["ep.t"],
               "since":{"ep.t":{"seq":2,"epoch":"00000000deadbeef"}}}),
    )
    .await;
    let (seq, epoch) = position(&ack, "ep.t");
    let gap = recv_json(&mut sub).await;
    assert_eq!(gap["op"], "gap", "{gap}");
    assert_eq!(gap["reason"], "epoch");
    assert_eq!(gap["epoch"], json!(epoch));
    assert_eq!((&gap["from"], &gap["to"]), (&json!(1), &json!(seq)));
    publish(&mut p, "ep.t", json!(4)).await;
    assert_eq!(
        recv_json(&mut sub).await["seq"],
        4,
        "no replay, live continues"
    );
}

async fn cache_gives_the_last_message(driver: Driver) {
    let server = Server::with_topics(
        driver,
        r#"[{pattern="px.>",history_size=1,cache=true}]"#,
        &[],
    );
    let (mut p, _) = connect(&server).await;
    for i in 1..=3 {
        publish(&mut p, "px.btc", json!(i)).await;
    }
    let (mut sub, _) = connect(&server).await;
    let (ack, _) = subscribe_with(
        &mut sub,
        json!({"op":"subscribe","id":1,"topics":["px.btc"]}),
    )
    .await;
    assert_eq!(position(&ack, "px.btc").0, 3);
    let m = recv_json(&mut sub).await;
    assert_eq!(
        (&m["seq"], &m["data"]),
        (&json!(3), &json!(3)),
        "the latest value first"
    );
    publish(&mut p, "px.btc", json!(4)).await;
    assert_eq!(recv_json(&mut sub).await["seq"], 4);
}

async fn wildcard_subscription_with_since(driver: Driver) {
    let server = Server::with_topics(driver, r#"[{pattern="wc.>",history_size=100}]"#, &[]);
    let (mut p, _) = connect(&server).await;
    let mut epoch = String::new();
    for i in 1..=4 {
        epoch = publish(&mut p, "wc.a", json!(i)).await.1;
        publish(&mut p, "wc.b", json!(i)).await;
    }
    let (mut sub, _) = connect(&server).await;
    let (ack, _) = subscribe_with(
        &mut sub,
        json!({"op":"subscribe","id":1,"topics":["wc.*"],"since":{"wc.a":{"seq":2,"epoch":epoch}}}),
    )
    .await;
    assert_eq!(ack["topics"], json!(["wc.*"]));
    assert_eq!(position(&ack, "wc.a").0, 4);
    for want in 3..=4 {
        let m = recv_json(&mut sub).await;
        assert_eq!(
            (&m["topic"], &m["seq"]),
            (&json!("wc.a"), &json!(want)),
            "{m}"
        );
    }
    publish(&mut p, "wc.b", json!(5)).await;
    let m = recv_json(&mut sub).await;
    assert_eq!(
        (&m["topic"], &m["seq"]),
        (&json!("wc.b"), &json!(5)),
        "wc.b is live only: {m}"
    );
    // A since for a topic the request does not cover is refused, the rest still acked.
    let (ack, before) = subscribe_with(
        &mut sub,
        json!({"op":"subscribe","id":2,"topics":["wc.c"],"since":{"other.x":{"seq":1,"epoch":epoch}}}),
    )
    .await;
    assert_eq!(ack["topics"], json!(["wc.c"]));
    assert_eq!(before[0]["code"], "bad_request", "{before:?}");
    assert_eq!(before[0]["topic"], "other.x");
}

async fn idem_key_deduplicates_retries(driver: Driver) {
    let server = Server::with_topics(driver, "[]", &[]);
    let (mut sub, _) = connect(&server).await;
    subscribe(&mut sub, 1, &["orders.new"]).await;
    let (mut p, _) = connect(&server).await;
    let op = json!({"op":"publish","id":1,"topic":"orders.new","data":"buy","idem":"ord-17"});
    send_json(&mut p, op.clone()).await;
    let first = recv_json(&mut p).await;
    assert_eq!(first["seq"], 1, "{first}");
    assert!(first.get("duplicate").is_none());
    // The retry after a "lost" ack: same seq, marked duplicate, nothing published.
    send_json(&mut p, op).await;
    let retry = recv_json(&mut p).await;
    assert_eq!(
        (&retry["seq"], &retry["duplicate"], &retry["epoch"]),
        (&json!(1), &json!(true), &first["epoch"])
    );
    // Over HTTP too, and a new key publishes.
    let body = r#"{"topic":"orders.new","data":"buy","idem":"ord-17"}"#;
    let (status, text) = server.http("POST", "/v1/publish", Some(body)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&v["seq"], &v["duplicate"]), (&json!(1), &json!(true)));
    let body = r#"{"topic":"orders.new","data":"sell","idem":"ord-18"}"#;
    let v: Value =
        serde_json::from_str(&server.http("POST", "/v1/publish", Some(body)).await.1).unwrap();
    assert_eq!(v["seq"], 2);
    let a = recv_json(&mut sub).await;
    let b = recv_json(&mut sub).await;
    assert_eq!(
        (&a["seq"], &a["data"], &b["seq"], &b["data"]),
        (&json!(1), &json!("buy"), &json!(2), &json!("sell"))
    );
    assert_eq!(
        server.metric("tickcast_duplicate_publishes_total").await,
        2.0
    );
    let bad = json!({"op":"publish","id":2,"topic":"orders.new","data":1,"idem":""});
    send_json(&mut p, bad).await;
    assert_eq!(recv_json(&mut p).await["code"], "bad_request");
}
