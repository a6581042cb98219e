//! Subscription filters (docs/PROTOCOL.md "Filters") against the real server, on both drivers:
//! a real client library (Python `websockets`) gets exactly the matching messages; subscribers
//! with different filters on one topic, on both shards, each get their own set and the
//! unfiltered one everything, from one encode per publish with the same bytes for all; each
//! distinct filter is evaluated once per message and shard; a new subscribe replaces a
//! pattern's filter (and the ack says so), unsubscribe removes it; replays of `since` and of
//! the latest-value cache are filtered; every bound and malformed filter is refused with its
//! documented error and counted.
//!
//! No sleeps: every message a test waits for is the last of its topic (one topic per
//! sequence, so order holds), or is answered.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

both_drivers!(
    python_websockets_gets_exactly_the_matching_messages,
    each_filter_gets_its_own_set_from_one_encode,
    a_new_subscribe_replaces_the_filter_and_unsubscribe_removes_it,
    replays_are_filtered,
    bad_filters_are_refused_with_the_documented_error,
    a_full_filter_table_refuses_new_filters_only,
    hostile_filters_are_refused_cheaply,
);

/// What the tests publish to one topic, in this order (the last passes every filter used).
fn messages() -> Vec<Value> {
    vec![
        json!({"strategy":"mom","score":0.9}),
        json!({"strategy":"arb","score":0.5}),
        json!({"strategy":"mom","score":0.7}),
        json!({"strategy":"carry","score":0.95}),
        json!({"strategy":"arb","score":0.85}),
        json!("not an object"),
        json!({"score":0.99}),
        json!({"strategy":"mom"}),
        json!([1, 2]),
        json!({"strategy":"mom","score":"0.9"}),
        json!({"strategy":"mom","score":0.8}),
        json!(null),
        json!({"strategy":"arb","score":1.0,"book":{"side":"bid"}}),
        json!({"strategy":"mom","score":1,"end":true}),
    ]
}

fn is_end(data: &Value) -> bool {
    data["end"] == true
}

/// Subscribes `topics` with `filter` and returns the ack (errors fail the test).
async fn subscribe_filtered(ws: &mut Ws, id: u64, topics: &[&str], filter: Value) -> Value {
    subscribe_op(
        ws,
        json!({"op":"subscribe","id":id,"topics":topics,"filter":filter}),
    )
    .await
}

/// The data of every data frame until the end marker (included).
async fn data_until_end(ws: &mut Ws) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let m = recv_json(ws).await;
        if m.get("op").is_some() {
            continue;
        }
        let data = m["data"].clone();
        got.push(data.clone());
        if is_end(&data) {
            return got;
        }
    }
}

/// A connection whose welcome names `shard`.
async fn connect_on(server: &Server, shard: u64) -> Ws {
    for _ in 0..200 {
        let (ws, welcome) = connect(server).await;
        if welcome["shard"] == shard {
            return ws;
        }
    }
    panic!("200 connections never landed on shard {shard}");
}

fn field<'a>(d: &'a Value, name: &str) -> Option<&'a Value> {
    d.as_object().and_then(|o| o.get(name))
}

/// `{"strategy":{"in":["mom","arb"]},"score":{"gte":0.8}}`, written out.
fn mom_or_arb_scoring(d: &Value) -> bool {
    let strategy = field(d, "strategy").and_then(Value::as_str);
    let score = field(d, "score").and_then(Value::as_f64);
    matches!(strategy, Some("mom" | "arb")) && score.is_some_and(|s| s >= 0.8)
}

async fn python_websockets_gets_exactly_the_matching_messages(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let cmd = Command::new(suite_var("TICKCAST_TEST_PYTHON"));
    let sent = serde_json::to_string(&messages()).unwrap();
    let seen = run_client(&server, cmd, "filters_websockets.py", &[&sent]).await;
    let want: Vec<Value> = messages().into_iter().filter(mom_or_arb_scoring).collect();
    assert_eq!(seen["filtered"], json!(want), "{seen}");
    assert_eq!(seen["unfiltered"], json!(messages()), "{seen}");
    assert_eq!(seen["ack"]["topics"], json!(["signals.>"]), "{seen}");
}

async fn each_filter_gets_its_own_set_from_one_encode(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let topic = "signals.momentum";
    // `mom` twice on shard 0, spelled two ways (one filter there); `score` on shard 1; one
    // subscriber without a filter.
    let mut mom = connect_on(&server, 0).await;
    subscribe_filtered(&mut mom, 1, &["signals.>"], json!({"strategy":"mom"})).await;
    let mut mom2 = connect_on(&server, 0).await;
    let spelled = json!({"and":[{"strategy":{"in":["mom"]}},{"strategy":{"eq":"mom"}}]});
    subscribe_filtered(&mut mom2, 1, &[topic], spelled).await;
    let mut score = connect_on(&server, 1).await;
    let f = json!({"score":{"gte":0.8},"book.side":{"exists":false}});
    subscribe_filtered(&mut score, 1, &["signals.*"], f).await;
    let mut all = connect_on(&server, 1).await;
    subscribe(&mut all, 1, &[topic]).await;
    assert_eq!(server.metric("tickcast_subscription_filters").await, 2.0);

    let (mut p, _) = connect(&server).await;
    let msgs = messages();
    for m in &msgs {
        publish(&mut p, 1, topic, m.clone()).await;
    }
    let is_mom = |d: &Value| field(d, "strategy") == Some(&json!("mom"));
    let scores = |d: &Value| {
        field(d, "score")
            .and_then(Value::as_f64)
            .is_some_and(|s| s >= 0.8)
            && d.pointer("/book/side").is_none()
    };
    let want_mom: Vec<Value> = msgs.iter().filter(|d| is_mom(d)).cloned().collect();
    let want_score: Vec<Value> = msgs.iter().filter(|d| scores(d)).cloned().collect();
    assert_eq!(data_until_end(&mut mom).await, want_mom);
    assert_eq!(data_until_end(&mut mom2).await, want_mom);
    assert_eq!(data_until_end(&mut score).await, want_score);
    assert_eq!(data_until_end(&mut all).await, msgs);

    // Encode once: one frame per publish, whoever got it; and every distinct filter was
    // evaluated once per message on its shard, on data parsed once per message there.
    let n = msgs.len() as f64;
    assert_eq!(server.metric("tickcast_publishes_total").await, n);
    assert_eq!(
        server
            .metric_with("tickcast_serializations_total", "format", "v1")
            .await,
        n
    );
    assert_eq!(
        server.metric("tickcast_filter_evaluations_total").await,
        2.0 * n
    );
    assert_eq!(server.metric("tickcast_filter_parses_total").await, 2.0 * n);
    let turned_away =
        msgs.iter().filter(|d| !is_mom(d)).count() * 2 + msgs.iter().filter(|d| !scores(d)).count();
    assert_eq!(
        server.metric("tickcast_filter_skips_total").await,
        turned_away as f64
    );
}

async fn a_new_subscribe_replaces_the_filter_and_unsubscribe_removes_it(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let topic = "r.t";
    let (mut s, _) = connect(&server).await;
    let ack = subscribe_filtered(&mut s, 1, &["r.*"], json!({"k":1})).await;
    assert_eq!(ack, json!({"op":"ack","id":1,"topics":["r.*"]}));
    let (mut p, _) = connect(&server).await;
    for d in [json!({"k":1}), json!({"k":2}), json!({"k":1,"end":true})] {
        publish(&mut p, 1, topic, d).await;
    }
    assert_eq!(
        data_until_end(&mut s).await,
        [json!({"k":1}), json!({"k":1,"end":true})]
    );
    // Another filter for the same pattern replaces the first, and the ack says so.
    let end = json!({"k":9,"end":true});
    let ack = subscribe_filtered(&mut s, 2, &["r.*", "r.x"], json!({"k":{"gte":2}})).await;
    assert_eq!(
        ack,
        json!({"op":"ack","id":2,"topics":["r.*","r.x"],"replaced":["r.*"],
               "positions":[{"topic":"r.x","seq":0,"epoch":"0000000000000000"}]})
    );
    // The same filter again (spelled otherwise) replaces nothing.
    let ack = subscribe_filtered(&mut s, 3, &["r.*"], json!({"k":{"gte":2.0}})).await;
    assert_eq!(ack, json!({"op":"ack","id":3,"topics":["r.*"]}));
    assert_eq!(server.metric("tickcast_subscription_filters").await, 1.0);
    for d in [json!({"k":0}), json!({"k":4}), end.clone()] {
        publish(&mut p, 1, topic, d).await;
    }
    assert_eq!(data_until_end(&mut s).await, [json!({"k":4}), end.clone()]);
    // A subscribe without a filter replaces the filter with none.
    let ack = subscribe(&mut s, 4, &["r.*", "r.x"]).await;
    assert_eq!(ack["replaced"], json!(["r.*", "r.x"]), "{ack}");
    server
        .wait_metric_at_most("tickcast_subscription_filters", 0.0)
        .await;
    for d in [json!({"k":0}), end.clone()] {
        publish(&mut p, 1, topic, d).await;
    }
    assert_eq!(data_until_end(&mut s).await, [json!({"k":0}), end.clone()]);
    // Unsubscribe removes the pattern with its filter: a filtered pattern, then unsubscribed,
    // leaves nothing.
    subscribe_filtered(&mut s, 5, &["q.*"], json!({"k":1})).await;
    assert_eq!(server.metric("tickcast_subscription_filters").await, 1.0);
    send_json(&mut s, json!({"op":"unsubscribe","id":6,"topics":["q.*"]})).await;
    assert_eq!(
        recv_json(&mut s).await,
        json!({"op":"ack","id":6,"topics":["q.*"]})
    );
    assert_eq!(server.metric("tickcast_subscription_filters").await, 0.0);
    // Closing the connection releases its filters too.
    subscribe_filtered(&mut s, 7, &["q.*"], json!({"k":7})).await;
    assert_eq!(server.metric("tickcast_subscription_filters").await, 1.0);
    drop(s);
    server
        .wait_metric_at_most("tickcast_subscription_filters", 0.0)
        .await;
}

async fn replays_are_filtered(driver: Driver) {
    let classes = r#"[{pattern="h.>",history_size=100},{pattern="c.>",history_size=1,cache=true}]"#;
    let server = Server::with_topics(driver, classes, &[]);
    let (mut p, _) = connect(&server).await;
    let mut epoch = String::new();
    for i in 1..=10 {
        send_json(
            &mut p,
            json!({"op":"publish","id":i,"topic":"h.t","data":{"i":i,"odd":i % 2 == 1}}),
        )
        .await;
        let ack = recv_json(&mut p).await;
        epoch = ack["epoch"].as_str().unwrap().to_string();
    }
    // Recover everything after seq 2, with a filter: only the odd ones come back.
    let (mut s, _) = connect(&server).await;
    send_json(
        &mut s,
        json!({"op":"subscribe","id":1,"topics":["h.t"],"filter":{"odd":true},
               "since":{"h.t":{"seq":2,"epoch":epoch}}}),
    )
    .await;
    let ack = recv_json(&mut s).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    publish(&mut p, 11, "h.t", json!({"i":11,"odd":true,"end":true})).await;
    let got: Vec<Value> = data_until_end(&mut s).await;
    let seqs: Vec<u64> = got.iter().map(|d| d["i"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 5, 7, 9, 11]);
    assert_eq!(server.metric("tickcast_replayed_total").await, 4.0);
    assert_eq!(server.metric("tickcast_filter_skips_total").await, 4.0);

    // The latest value of a cache topic is filtered like any frame.
    publish(&mut p, 1, "c.t", json!({"side":"bid"})).await;
    let (mut c, _) = connect(&server).await;
    subscribe_filtered(&mut c, 1, &["c.t"], json!({"side":"ask"})).await;
    let (mut c2, _) = connect(&server).await;
    subscribe_filtered(&mut c2, 1, &["c.t"], json!({"side":"bid"})).await;
    publish(&mut p, 1, "c.t", json!({"side":"ask","end":true})).await;
    assert_eq!(
        data_until_end(&mut c).await,
        [json!({"side":"ask","end":true})]
    );
    // (c2's marker is refused by its filter: its last frame is the cached one.)
    let cached = recv_json(&mut c2).await;
    assert_eq!(cached["data"], json!({"side":"bid"}), "{cached}");
}

/// Sends `op` and expects one error reply, which it returns.
async fn refused(ws: &mut Ws, op: Value) -> Value {
    send_json(ws, op).await;
    let e = recv_json(ws).await;
    assert_eq!(e["op"], "error", "{e}");
    e
}

async fn bad_filters_are_refused_with_the_documented_error(driver: Driver) {
    let small = [
        ("TICKCAST_LIMITS__FILTER_BYTES_MAX", "64"),
        ("TICKCAST_LIMITS__FILTER_DEPTH_MAX", "2"),
        ("TICKCAST_LIMITS__FILTER_CLAUSES_MAX", "3"),
        ("TICKCAST_LIMITS__FILTER_IN_MAX", "4"),
    ];
    let server = Server::start(driver, &small, &[]);
    let (mut s, _) = connect(&server).await;
    let long = "x".repeat(60);
    let cases: Vec<(Value, &str, String)> = vec![
        (
            json!({"s": long}),
            "bytes",
            "\"filter\" is 68 bytes; the limit is 64 (limits.filter_bytes_max)".into(),
        ),
        (
            json!({"or":[{"and":[{"a":1}]}]}),
            "depth",
            "\"filter\" nests \"and\"/\"or\" deeper than 2 levels (limits.filter_depth_max)".into(),
        ),
        (
            json!({"a":1,"b":2,"c":{"gt":1,"lt":5}}),
            "clauses",
            "\"filter\" has more than 3 tests (limits.filter_clauses_max)".into(),
        ),
        (
            json!({"s":{"in":[1,2,3,4,5]}}),
            "in_list",
            "\"filter\": \"in\" of field \"s\" has 5 values; the limit is 4 (limits.filter_in_max)"
                .into(),
        ),
        (
            json!({"score":{"gte":"0.8"}}),
            "malformed",
            "\"filter\": \"gte\" of field \"score\" takes a number".into(),
        ),
        (
            json!({"score":{"above":1}}),
            "malformed",
            "\"filter\": unknown operator \"above\" for field \"score\" (operators: eq, ne, in, \
             gt, gte, lt, lte, exists)"
                .into(),
        ),
        (
            json!({}),
            "malformed",
            "\"filter\": an empty object; give at least one field or \"and\"/\"or\"".into(),
        ),
        (
            json!(["a"]),
            "malformed",
            "\"filter\" must be an object (or null)".into(),
        ),
        (
            json!({"a..b":1}),
            "malformed",
            "\"filter\": field path \"a..b\" has an empty segment".into(),
        ),
    ];
    for (i, (filter, reason, message)) in cases.iter().enumerate() {
        let e = refused(
            &mut s,
            json!({"op":"subscribe","id":i,"topics":["t.a"],"filter":filter}),
        )
        .await;
        assert_eq!(
            e,
            json!({"op":"error","id":i,"code":"bad_request","message":message}),
            "{reason}"
        );
    }
    // A repeated key is refused too (serde_json would keep the last one silently).
    send_json_text(
        &mut s,
        r#"{"op":"subscribe","id":"r","topics":["t.a"],"filter":{"a":1,"a":2}}"#,
    )
    .await;
    let e = recv_json(&mut s).await;
    assert_eq!(e["message"], "\"filter\": key \"a\" is repeated", "{e}");
    // Unsubscribe takes no filter.
    let e = refused(
        &mut s,
        json!({"op":"unsubscribe","id":"u","topics":["t.a"],"filter":{"a":1}}),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    assert_eq!(
        e["message"],
        "\"filter\" belongs to subscribe (unsubscribe removes a pattern and its filter)"
    );
    // Nothing of a refused request was done, and each refusal was counted by reason.
    assert_eq!(server.metric("tickcast_subscriptions").await, 0.0);
    assert_eq!(server.metric("tickcast_subscription_filters").await, 0.0);
    for (reason, n) in [
        ("bytes", 1.0),
        ("depth", 1.0),
        ("clauses", 1.0),
        ("in_list", 1.0),
        ("malformed", 6.0),
        ("shard_table", 0.0),
    ] {
        assert_eq!(
            server
                .metric_with("tickcast_filter_rejects_total", "reason", reason)
                .await,
            n,
            "{reason}"
        );
    }
    // `null` is no filter.
    let ack = subscribe_filtered(&mut s, 99, &["t.a"], Value::Null).await;
    assert_eq!(
        ack,
        json!({"op":"ack","id":99,"topics":["t.a"],
        "positions":[{"topic":"t.a","seq":0,"epoch":"0000000000000000"}]})
    );
}

/// Sends one text message as written.
async fn send_json_text(ws: &mut Ws, text: &str) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .unwrap();
}

async fn a_full_filter_table_refuses_new_filters_only(driver: Driver) {
    let env = [("TICKCAST_LIMITS__FILTERS_PER_SHARD_MAX", "2")];
    let server = Server::start(driver, &env, &[]);
    let (mut s, _) = connect(&server).await;
    subscribe_filtered(&mut s, 1, &["a"], json!({"k":1})).await;
    subscribe_filtered(&mut s, 2, &["b"], json!({"k":2})).await;
    let e = refused(
        &mut s,
        json!({"op":"subscribe","id":3,"topics":["c"],"filter":{"k":3}}),
    )
    .await;
    assert_eq!(
        e,
        json!({"op":"error","id":3,"code":"capacity","message":
            "this shard holds 2 distinct filters, its limit (limits.filters_per_shard_max): \
             subscribe with a filter already in use, without one, or later"})
    );
    // A filter already held is no new one.
    subscribe_filtered(&mut s, 4, &["c"], json!({"k":{"in":[1]}})).await;
    assert_eq!(
        server
            .metric_with("tickcast_filter_rejects_total", "reason", "shard_table")
            .await,
        1.0
    );
    // Once one goes, a new one fits.
    send_json(&mut s, json!({"op":"unsubscribe","id":5,"topics":["b"]})).await;
    assert_eq!(recv_json(&mut s).await["op"], "ack");
    subscribe_filtered(&mut s, 6, &["d"], json!({"k":3})).await;
    assert_eq!(server.metric("tickcast_subscription_filters").await, 2.0);
}

/// Filters built to cost: each is refused (or the message is), and the connection answers the
/// next ping, so nothing held it up. With the largest byte bound, so the other bounds and the
/// grammar are what refuse them.
async fn hostile_filters_are_refused_cheaply(driver: Driver) {
    let env = [("TICKCAST_LIMITS__FILTER_BYTES_MAX", "65536")];
    let server = Server::start(driver, &env, &[]);
    let (mut s, _) = connect(&server).await;
    let keys: Vec<String> = (0..5000).map(|i| format!("\"k{i}\":1")).collect();
    let many_keys = format!("{{{}}}", keys.join(","));
    let repeated: Vec<String> = (0..5000).map(|_| "\"k\":1".to_string()).collect();
    let many_repeats = format!("{{{}}}", repeated.join(","));
    // 50 levels (100 of JSON nesting, under serde_json's 128): the depth bound refuses it.
    let deep_and = format!("{}{{\"a\":1}}{}", "{\"and\":[".repeat(50), "]}".repeat(50));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(120), "}".repeat(120));
    let long_path = format!("{{\"{}\":1}}", vec!["p"; 20_000].join("."));
    let huge_in = format!(
        "{{\"s\":{{\"in\":[{}]}}}}",
        (0..9000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases: [(&str, &str); 5] = [
        (&many_keys, "more than 32 tests"),
        (&many_repeats, "is repeated"),
        (&deep_and, "deeper than 4 levels"),
        (&deep_object, "unknown operator"),
        (&huge_in, "has 9000 values"),
    ];
    for (i, (filter, why)) in cases.iter().enumerate() {
        let op = format!(r#"{{"op":"subscribe","id":{i},"topics":["t"],"filter":{filter}}}"#);
        send_json_text(&mut s, &op).await;
        let e = recv_json(&mut s).await;
        assert_eq!(e["code"], "bad_request", "{i}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(why), "{i}: {message}");
        send_json(&mut s, json!({"op":"ping","id":"alive"})).await;
        assert_eq!(recv_json(&mut s).await["op"], "pong");
    }
    // A path of 20,000 segments is a filter like any other, within the byte bound.
    let op = format!(r#"{{"op":"subscribe","id":8,"topics":["t"],"filter":{long_path}}}"#);
    send_json_text(&mut s, &op).await;
    assert_eq!(recv_json(&mut s).await["op"], "ack");
    send_json(&mut s, json!({"op":"unsubscribe","id":8,"topics":["t"]})).await;
    assert_eq!(recv_json(&mut s).await["op"], "ack");
    // Nesting beyond what the message parser takes refuses the message itself.
    let brackets = format!(
        r#"{{"op":"subscribe","id":9,"topics":["t"],"filter":{}{}}}"#,
        "[".repeat(3000),
        "]".repeat(3000)
    );
    send_json_text(&mut s, &brackets).await;
    let e = recv_json(&mut s).await;
    assert_eq!(e["code"], "bad_request", "{e}");
    assert_eq!(server.metric("tickcast_subscriptions").await, 0.0);
    assert_eq!(server.metric("tickcast_subscription_filters").await, 0.0);
}
