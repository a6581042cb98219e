//! The admin HTTP API (docs/API.md), end to end with the real binary, a real WebSocket client
//! (tokio-tungstenite) and real JWTs (HS256): every endpoint, its bad parameters (400) and its
//! missing token (401); user messages reaching every connection of a user once; presence
//! events; broadcast; disconnect. Every wait is a condition bounded by `DEADLINE`; "nothing
//! more arrived" is proven with a ping whose pong must come next (the server answers a
//! connection's ops in order, behind what was queued for it before).

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;

both_drivers!(
    admin_endpoints_need_the_admin_token,
    bad_parameters_are_400,
    stats_and_connections,
    topics_and_history,
    a_topic_nothing_holds_is_forgotten,
    broadcast_reaches_every_connection_once,
    send_reaches_every_connection_of_the_user_once,
    presence_join_leave_and_online,
    a_watcher_of_its_own_presence_disconnects,
    disconnect_by_user_and_by_conn,
    dashboard_is_one_self_contained_page_for_the_admin,
);

const HS_SECRET: &str = "tickcast-admin-test-secret-0123456789";

/// The harness' open server plus an HS256 key and topic classes: `room.>` with presence,
/// `hist.>` and `user.>` with history. `idem` keys are remembered for a day (the most allowed),
/// so a topic published with one is held for the whole test even without a subscriber or
/// history (src/shard/topics: a topic nothing needs is forgotten at the next sweep).
fn admin_server(driver: Driver) -> Server {
    let keys = format!("[{{algorithm=\"HS256\",secret=\"{HS_SECRET}\"}}]");
    let topics = "[{pattern=\"room.>\",presence=true},\
                  {pattern=\"hist.>\",history_size=10},\
                  {pattern=\"user.>\",history_size=10}]";
    Server::start(
        driver,
        &[
            ("TICKCAST_AUTH__JWT_KEYS", &keys),
            ("TICKCAST_TOPICS", topics),
            ("TICKCAST_CLUSTER__IDEM_WINDOW_S", "86400"),
        ],
        &[],
    )
}

fn user_token(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 3600});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

/// A connection authenticated as `user`; the welcome frame too.
async fn connect_as(server: &Server, user: &str) -> (Ws, Value) {
    let url = format!("ws://{}/ws?token={}", server.addr, user_token(user));
    let (mut ws, _) = tokio::time::timeout(DEADLINE, connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    assert_eq!(welcome["user"], user);
    (ws, welcome)
}

/// One connection of `user` on each shard (extra connections made on the way are closed, and
/// the server is polled until only these remain).
async fn user_on_every_shard(server: &Server, user: &str) -> Vec<(Ws, Value)> {
    let mut found: Vec<Option<(Ws, Value)>> = vec![None, None];
    for _ in 0..200 {
        let (mut ws, w) = connect_as(server, user).await;
        let shard = w["shard"].as_u64().unwrap() as usize;
        if found[shard].is_none() {
            found[shard] = Some((ws, w));
            if found.iter().all(Option::is_some) {
                let all: Vec<_> = found.into_iter().map(Option::unwrap).collect();
                wait_online(server, user, 2).await;
                return all;
            }
        } else {
            ws.close(None).await.unwrap();
        }
    }
    panic!("200 connections never covered both shards");
}

/// Polls `/v1/online` until `user` has `n` connections.
async fn wait_online(server: &Server, user: &str, n: u64) {
    let start = Instant::now();
    loop {
        let online = get(server, "/v1/online?limit=1000").await;
        let count = online["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["user"] == user)
            .map_or(0, |u| u["connections"].as_u64().unwrap());
        if count == n {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{user} stayed at {count} != {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET` with the admin key; must answer 200 with JSON.
async fn get(server: &Server, path: &str) -> Value {
    let (status, body) = server.http("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `POST` with the admin key; must answer 200 with JSON.
async fn post(server: &Server, path: &str, body: Value) -> Value {
    let (status, text) = server.http("POST", path, Some(&body.to_string())).await;
    assert_eq!(status, 200, "{path} {body}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// `field` of every element of the array `list`.
fn pluck<'a>(list: &'a Value, field: &str) -> Vec<&'a Value> {
    list.as_array().unwrap().iter().map(|v| &v[field]).collect()
}

/// Asserts `ws` has nothing queued: a ping's pong is the next message.
async fn nothing_more(ws: &mut Ws) {
    send_json(ws, json!({"op":"ping","id":"sentinel"})).await;
    let m = recv_json(ws).await;
    assert_eq!(m["op"], "pong", "expected nothing before the pong, got {m}");
    assert_eq!(m["id"], "sentinel");
}

async fn admin_endpoints_need_the_admin_token(driver: Driver) {
    let server = admin_server(driver);
    let endpoints = [
        ("GET", "/v1/stats"),
        ("GET", "/v1/connections"),
        ("GET", "/v1/topics"),
        ("GET", "/v1/history?topic=a"),
        ("GET", "/v1/presence?topic=a"),
        ("GET", "/v1/online"),
        ("POST", "/v1/broadcast"),
        ("POST", "/v1/disconnect"),
        ("POST", "/v1/send"),
        ("GET", "/dashboard"),
    ];
    let user = format!("Authorization: Bearer {}\r\n", user_token("alice"));
    for (method, path) in endpoints {
        let body = (method == "POST").then_some("{}");
        let (status, text) = server.http_with(method, path, body, "").await;
        assert_eq!(status, 401, "{method} {path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"], "unauthorized", "{text}");
        // A valid token without the admin role.
        let (status, _) = server.http_with(method, path, body, &user).await;
        assert_eq!(status, 403, "{method} {path} as a user");
        // The other method.
        let other = if method == "GET" { "POST" } else { "GET" };
        let (status, _) = server.http(other, path, None).await;
        assert_eq!(status, 405, "{other} {path}");
    }
}

/// `GET /dashboard` (API.md): the admin token in the header or the query, an HTML page that
/// loads nothing from elsewhere and polls the admin API; without the token, 401 (the endpoint
/// list above checks 403 and 405 too).
async fn dashboard_is_one_self_contained_page_for_the_admin(driver: Driver) {
    let server = admin_server(driver);
    let (status, text) = server.http_with("GET", "/dashboard", None, "").await;
    assert_eq!(status, 401, "{text}");
    let (status, _) = server
        .http_with("GET", "/dashboard?token=wrong", None, "")
        .await;
    assert_eq!(status, 401);
    for (path, auth) in [
        (
            "/dashboard",
            format!("Authorization: Bearer {ADMIN_KEY}\r\n"),
        ),
        (&format!("/dashboard?token={ADMIN_KEY}"), String::new()),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n");
        let raw = String::from_utf8(server.raw_exchange(req.as_bytes()).await).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {head}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("\r\ncontent-type: text/html; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        assert!(head.contains("\r\ncontent-security-policy: default-src 'none';"));
        assert!(head.contains("\r\nreferrer-policy: no-referrer\r\n"));
        assert!(body.starts_with("<!doctype html>"), "{body}");
        for id in [
            "deliveries-per-s",
            "messages-per-s",
            "shards",
            "topics",
            "nodes",
        ] {
            assert!(body.contains(&format!("id=\"{id}\"")), "no #{id}");
        }
        for polled in [
            "\"/v1/stats\"",
            "\"/v1/topics?limit=1000\"",
            "\"/v1/cluster\"",
        ] {
            assert!(body.contains(polled), "does not poll {polled}");
        }
        // Served whole from the binary: no script, style or image from anywhere else.
        for external in ["http://", "https://", " src=", "<link"] {
            assert!(!body.contains(external), "{external} in the page");
        }
    }
}

async fn bad_parameters_are_400(driver: Driver) {
    let server = admin_server(driver);
    let gets = [
        "/v1/stats?x=1",
        "/v1/connections?limit=0",
        "/v1/connections?limit=1001",
        "/v1/connections?limit=ten",
        "/v1/connections?cursor=abc",
        "/v1/connections?cursor=7-1",
        "/v1/connections?topic=a..b",
        "/v1/connections?user=a&user=b",
        "/v1/topics?limit=-1",
        "/v1/topics?nope=1",
        "/v1/history",
        "/v1/history?topic=a.*",
        "/v1/history?topic=a&since=x",
        "/v1/history?topic=a&limit=5000",
        "/v1/presence",
        "/v1/presence?topic=",
        "/v1/online?limit=2000",
    ];
    for path in gets {
        let (status, body) = server.http("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "bad_request", "{path}: {body}");
        assert!(!v["message"].as_str().unwrap().is_empty(), "{path}");
    }
    let long = "x".repeat(121);
    let posts = [
        ("/v1/broadcast", json!({})),
        ("/v1/broadcast", json!({"data": 1, "extra": 2})),
        ("/v1/disconnect", json!({})),
        ("/v1/disconnect", json!({"user": "a", "conn": "0-1"})),
        ("/v1/disconnect", json!({"conn": "zero"})),
        ("/v1/disconnect", json!({"user": "a", "code": 1006})),
        ("/v1/disconnect", json!({"user": "a", "code": 3000})),
        ("/v1/disconnect", json!({"user": "a", "reason": long})),
        ("/v1/send", json!({"user": "a", "topic": "user.a.x"})),
        (
            "/v1/send",
            json!({"user": "a", "topic": "user.b.x", "data": 1}),
        ),
        (
            "/v1/send",
            json!({"user": "a", "topic": "user.a", "data": 1}),
        ),
        (
            "/v1/send",
            json!({"user": "a.b", "topic": "user.a.b.x", "data": 1}),
        ),
        (
            "/v1/send",
            json!({"user": "a", "topic": "orders.a", "data": 1}),
        ),
    ];
    for (path, body) in posts {
        let (status, text) = server.http("POST", path, Some(&body.to_string())).await;
        assert_eq!(status, 400, "{path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"], "bad_request", "{path} {body}: {text}");
    }
    let (status, _) = server
        .http("POST", "/v1/broadcast", Some("{\"data\":"))
        .await;
    assert_eq!(status, 400, "malformed JSON");
    // Unknown topic: 404.
    let (status, body) = server
        .http("GET", "/v1/history?topic=never.seen", None)
        .await;
    assert_eq!(status, 404, "{body}");
}

async fn stats_and_connections(driver: Driver) {
    let server = admin_server(driver);
    let mut alice = user_on_every_shard(&server, "alice").await;
    let (mut anon, anon_w) = connect(&server).await;
    subscribe(&mut alice[0].0, 1, &["quotes.x", "room.*"]).await;
    // A filtered subscription (docs/PROTOCOL.md "Filters"): the listing shows its canonical form.
    subscribe_op(
        &mut anon,
        json!({"op":"subscribe","id":1,"topics":["quotes.>"],"filter":{"s":{"in":["ETH","BTC"]}}}),
    )
    .await;

    let stats = get(&server, "/v1/stats").await;
    assert_eq!(stats["shards"], 2);
    let total = &stats["total"];
    assert_eq!(total["websockets"], 3, "{stats}");
    assert_eq!(total["subscriptions"], 3, "{stats}");
    for k in [
        "connections",
        "patterns",
        "topics",
        "messages_in",
        "deliveries",
        "bytes_out",
        "queued_bytes",
        "largest_queue_bytes",
        "slow_consumer_closes",
        "mesh_drops",
    ] {
        assert!(total[k].is_u64(), "{k}: {stats}");
    }
    assert!(total["closes"]["client_close"].is_u64(), "{stats}");
    let shards = stats["per_shard"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let ws_sum: u64 = shards
        .iter()
        .map(|s| s["websockets"].as_u64().unwrap())
        .sum();
    assert_eq!(ws_sum, 3);

    // All three, in (shard, no) order.
    let all = get(&server, "/v1/connections").await;
    let conns = all["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 3, "{all}");
    assert_eq!(all["next_cursor"], Value::Null);
    let key = |c: &Value| -> (u64, u64) {
        let (s, n) = c["conn"].as_str().unwrap().split_once('-').unwrap();
        (s.parse().unwrap(), n.parse().unwrap())
    };
    assert!(conns.windows(2).all(|w| key(&w[0]) < key(&w[1])), "{all}");
    let a0 = conns
        .iter()
        .find(|c| c["conn"] == alice[0].1["conn"])
        .expect("alice's first connection");
    assert_eq!(a0["user"], "alice");
    assert_eq!(a0["ip"], "127.0.0.1");
    assert_eq!(a0["tls"], false);
    assert_eq!(a0["protocol"], "v1");
    assert_eq!(a0["shard"], alice[0].1["shard"]);
    assert!(a0["age_s"].is_u64());
    assert!(a0["queued_bytes"].is_u64());
    assert_eq!(a0["subscriptions"], json!(["quotes.x", "room.*"]));
    assert_eq!(a0["filters"], json!({}), "{all}");
    let an = conns.iter().find(|c| c["conn"] == anon_w["conn"]).unwrap();
    assert_eq!(an["user"], Value::Null);
    assert_eq!(an["subscriptions"], json!(["quotes.>"]));
    assert_eq!(
        an["filters"],
        json!({"quotes.>": {"s": {"in": ["BTC", "ETH"]}}}),
        "{all}"
    );

    // Filters.
    let by_user = get(&server, "/v1/connections?user=alice").await;
    assert_eq!(by_user["connections"].as_array().unwrap().len(), 2);
    let by_topic = get(&server, "/v1/connections?topic=quotes.x").await;
    let ids = pluck(&by_topic["connections"], "conn");
    assert_eq!(ids.len(), 2, "{by_topic}");
    assert!(ids.contains(&&alice[0].1["conn"]) && ids.contains(&&anon_w["conn"]));
    let both = get(&server, "/v1/connections?user=alice&topic=room.1").await;
    assert_eq!(both["connections"].as_array().unwrap().len(), 1);
    assert_eq!(both["connections"][0]["conn"], alice[0].1["conn"]);

    // Pages of one.
    let mut cursor = String::new();
    let mut paged = Vec::new();
    loop {
        let page = get(&server, &format!("/v1/connections?limit=1&cursor={cursor}")).await;
        let list = page["connections"].as_array().unwrap();
        assert!(list.len() <= 1);
        paged.extend(list.iter().map(|c| c["conn"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let all_ids: Vec<Value> = conns.iter().map(|c| c["conn"].clone()).collect();
    assert_eq!(paged, all_ids);
}

async fn topics_and_history(driver: Driver) {
    let server = admin_server(driver);
    let (mut sub, _) = connect(&server).await;
    subscribe(&mut sub, 1, &["hist.a", "hist.*"]).await;
    let (mut sub2, _) = connect(&server).await;
    subscribe(&mut sub2, 1, &["hist.>"]).await;
    for i in 1..=5 {
        post(
            &server,
            "/v1/publish",
            json!({"topic":"hist.a","data":{"i":i}}),
        )
        .await;
    }
    post(&server, "/v1/publish", json!({"topic":"hist.b","data":0})).await;
    // `other.c` has no subscriber and no history class: its `idem` key is what holds it until
    // the checks below (without one, the owner's sweep may forget it at any tick).
    post(
        &server,
        "/v1/publish",
        json!({"topic":"other.c","data":0,"idem":"other-c-1"}),
    )
    .await;

    let topics = get(&server, "/v1/topics?prefix=hist.").await;
    assert_eq!(topics["next_cursor"], Value::Null);
    let list = topics["topics"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{topics}");
    assert_eq!(list[0]["topic"], "hist.a");
    assert_eq!(list[0]["seq"], 5);
    assert_eq!(list[0]["history"], 5);
    assert_eq!(list[0]["subscribers"], 2, "each connection once: {topics}");
    assert_eq!(list[0]["epoch"].as_str().unwrap().len(), 16);
    assert_eq!(list[1]["topic"], "hist.b");
    assert_eq!(list[1]["subscribers"], 2);

    let first = get(&server, "/v1/topics?limit=1").await;
    assert_eq!(first["topics"][0]["topic"], "hist.a");
    assert_eq!(first["next_cursor"], "hist.a");
    let second = get(&server, "/v1/topics?limit=2&cursor=hist.a").await;
    let names = pluck(&second["topics"], "topic");
    assert_eq!(names, [&json!("hist.b"), &json!("other.c")]);
    assert_eq!(second["next_cursor"], Value::Null);
    assert_eq!(second["topics"][1]["subscribers"], 0);
    assert_eq!(second["topics"][1]["history"], 0);

    let h = get(&server, "/v1/history?topic=hist.a&since=2&limit=2").await;
    assert_eq!(h["topic"], "hist.a");
    assert_eq!(h["seq"], 5);
    assert_eq!(h["epoch"], list[0]["epoch"]);
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{h}");
    assert_eq!(msgs[0]["seq"], 3);
    assert_eq!(msgs[0]["data"], json!({"i":3}));
    assert_eq!(msgs[1]["seq"], 4);
    let h = get(&server, "/v1/history?topic=hist.a").await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 5);
    let h = get(&server, "/v1/history?topic=other.c").await;
    assert_eq!(h["messages"], json!([]), "no history class");
    assert_eq!(h["seq"], 1);
}

/// The other side of `topics_and_history`, as a user of the admin API sees it: a topic that
/// nothing holds (no subscriber, no history class, no `idem` key) is forgotten by its owner's
/// sweep. It leaves `/v1/topics`, its `/v1/history` is a 404 `not_found`, and a publish to it
/// starts a new epoch at seq 1. (tests/hardening.rs `topics_nobody_needs_are_forgotten` shows
/// the same for a topic whose last subscriber left, with the metrics and the `gap` a client
/// recovering with the old epoch gets.)
async fn a_topic_nothing_holds_is_forgotten(driver: Driver) {
    let server = admin_server(driver);
    let first = post(&server, "/v1/publish", json!({"topic":"gone.t","data":1})).await;
    assert_eq!(first["seq"], 1, "{first}");
    // Listed until a sweep (every `timeouts.tick_ms`) finds nothing needs it.
    let start = Instant::now();
    loop {
        let topics = get(&server, "/v1/topics?prefix=gone.").await;
        let names = pluck(&topics["topics"], "topic");
        if names.is_empty() {
            break;
        }
        assert_eq!(names, [&json!("gone.t")], "{topics}");
        assert!(
            start.elapsed() < DEADLINE,
            "gone.t was never forgotten: {topics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.metric("tickcast_topics_dropped_total").await,
        1.0,
        "forgotten, not hidden"
    );
    let (status, body) = server.http("GET", "/v1/history?topic=gone.t", None).await;
    assert_eq!(status, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "not_found", "{body}");
    let again = post(&server, "/v1/publish", json!({"topic":"gone.t","data":2})).await;
    assert_eq!(again["seq"], 1, "a new epoch starts at seq 1: {again}");
    assert_ne!(again["epoch"], first["epoch"], "{again}");
}

async fn broadcast_reaches_every_connection_once(driver: Driver) {
    let server = admin_server(driver);
    let mut conns = connect_on_shards(&server, 2).await;
    let (mut extra, _) = connect_as(&server, "carol").await;
    subscribe(&mut extra, 1, &[">"]).await;
    // `connect_on_shards` may have left extra connections closing: wait for exactly ours.
    let start = Instant::now();
    while get(&server, "/v1/stats").await["total"]["websockets"] != 3 {
        assert!(start.elapsed() < DEADLINE, "stray connections stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = post(
        &server,
        "/v1/broadcast",
        json!({"data": {"notice": "maintenance at 22:00", "n": [1, 2.5]}}),
    )
    .await;
    assert_eq!(answer, json!({"connections": 3}));
    conns.push(extra);
    for ws in &mut conns {
        let m = recv_json(ws).await;
        assert_eq!(m["op"], "broadcast", "{m}");
        assert_eq!(
            m["data"],
            json!({"notice": "maintenance at 22:00", "n": [1, 2.5]})
        );
        assert!(m["ts"].as_u64().unwrap() > 0);
        nothing_more(ws).await;
    }
    let (status, _) = server
        .http(
            "POST",
            "/v1/broadcast",
            Some(&json!({"data": "x".repeat(40_000)}).to_string()),
        )
        .await;
    assert_eq!(status, 413, "over limits.publish_data_bytes_max");
}

async fn send_reaches_every_connection_of_the_user_once(driver: Driver) {
    let server = admin_server(driver);
    let mut alice = user_on_every_shard(&server, "alice").await;
    // One of alice's connections also subscribes to the topic: it still gets the message once.
    subscribe(&mut alice[1].0, 1, &["user.alice.>"]).await;
    // Bob, on each shard, subscribed to nothing relevant; an anonymous watcher of the topic.
    let mut bob = user_on_every_shard(&server, "bob").await;
    let (mut watcher, _) = connect(&server).await;
    subscribe(&mut watcher, 1, &["user.alice.orders"]).await;

    let answer = post(
        &server,
        "/v1/send",
        json!({"user":"alice","topic":"user.alice.orders","data":{"order":42,"state":"filled"}}),
    )
    .await;
    assert_eq!(answer["seq"], 1, "{answer}");
    let epoch = answer["epoch"].as_str().unwrap().to_string();
    assert_eq!(epoch.len(), 16);

    for (ws, _) in &mut alice {
        let m = recv_json(ws).await;
        assert_eq!(m["topic"], "user.alice.orders", "{m}");
        assert_eq!(m["seq"], 1);
        assert_eq!(m["data"], json!({"order":42,"state":"filled"}));
        nothing_more(ws).await;
    }
    // A subscriber of the topic gets it like any publish.
    let m = recv_json(&mut watcher).await;
    assert_eq!(m["seq"], 1, "{m}");
    nothing_more(&mut watcher).await;
    // Bob shares both shards with alice, whose connections there already have it: nothing
    // can still be on its way to him.
    for (ws, _) in &mut bob {
        nothing_more(ws).await;
    }

    // Sequenced like a publish: in the topic's history, recoverable with `since`.
    let h = get(&server, "/v1/history?topic=user.alice.orders").await;
    assert_eq!(h["epoch"], epoch.as_str());
    assert_eq!(h["messages"][0]["data"]["order"], 42);
    let (mut late, _) = connect_as(&server, "alice").await;
    send_json(
        &mut late,
        json!({"op":"subscribe","id":1,"topics":["user.alice.orders"],
               "since":{"user.alice.orders":{"seq":0,"epoch":epoch}}}),
    )
    .await;
    let ack = recv_json(&mut late).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let replayed = recv_json(&mut late).await;
    assert_eq!(replayed["seq"], 1, "{replayed}");
    assert_eq!(replayed["data"]["order"], 42);
}

/// The next data frame's `data` (presence events).
async fn next_event(ws: &mut Ws) -> Value {
    let m = recv_json(ws).await;
    assert!(m.get("topic").is_some(), "expected a data frame: {m}");
    m["data"].clone()
}

async fn presence_join_leave_and_online(driver: Driver) {
    let server = admin_server(driver);
    let (mut watcher, _) = connect(&server).await;
    subscribe(&mut watcher, 1, &["presence.room.1"]).await;
    let (mut alice, aw) = connect_as(&server, "alice").await;
    let (mut bob, bw) = connect_as(&server, "bob").await;
    let (mut anon, _) = connect(&server).await;

    subscribe(&mut alice, 1, &["room.1"]).await;
    let e = next_event(&mut watcher).await;
    assert_eq!(e, json!({"event":"join","user":"alice","conn":aw["conn"]}));
    // Wildcards, anonymous connections and classes without presence announce nothing.
    subscribe(&mut bob, 1, &["room.*", "quotes.x"]).await;
    subscribe(&mut anon, 1, &["room.1"]).await;
    subscribe(&mut bob, 2, &["room.1"]).await;
    let e = next_event(&mut watcher).await;
    assert_eq!(e, json!({"event":"join","user":"bob","conn":bw["conn"]}));
    // A second subscribe to the same topic is not a join.
    subscribe(&mut bob, 3, &["room.1"]).await;

    let p = get(&server, "/v1/presence?topic=room.1").await;
    assert_eq!(
        p,
        json!({"topic":"room.1","users":[{"user":"alice","connections":1},
                                          {"user":"bob","connections":1}],"anonymous":1})
    );
    let (mut alice2, _) = connect_as(&server, "alice").await;
    wait_online(&server, "alice", 2).await;
    let online = get(&server, "/v1/online").await;
    assert_eq!(
        online,
        json!({"users":[{"user":"alice","connections":2},{"user":"bob","connections":1}],
               "next_cursor":null})
    );
    let page = get(&server, "/v1/online?limit=1").await;
    assert_eq!(page["users"], json!([{"user":"alice","connections":2}]));
    assert_eq!(page["next_cursor"], "alice");
    let page = get(&server, "/v1/online?limit=1&cursor=alice").await;
    assert_eq!(page["users"], json!([{"user":"bob","connections":1}]));
    assert_eq!(page["next_cursor"], Value::Null);
    alice2.close(None).await.unwrap();
    drop(alice2);

    send_json(
        &mut bob,
        json!({"op":"unsubscribe","id":4,"topics":["room.1"]}),
    )
    .await;
    assert_eq!(recv_json(&mut bob).await["op"], "ack");
    let e = next_event(&mut watcher).await;
    assert_eq!(e, json!({"event":"leave","user":"bob","conn":bw["conn"]}));

    // Disconnecting leaves.
    alice.close(None).await.unwrap();
    drop(alice);
    let e = next_event(&mut watcher).await;
    assert_eq!(e, json!({"event":"leave","user":"alice","conn":aw["conn"]}));
    let p = get(&server, "/v1/presence?topic=room.1").await;
    assert_eq!(p["users"], json!([]), "{p}");
    assert_eq!(p["anonymous"], 1);
    nothing_more(&mut watcher).await;
}

/// A user subscribed to a topic and to its presence events (`presence.<topic>`) on every
/// shard disconnects: its `leave` events are published while it goes, on the shard that owns
/// the presence topic too, and must not reach the connection being removed (they crashed the
/// shard once). Another watcher gets both leaves; the server carries on.
async fn a_watcher_of_its_own_presence_disconnects(driver: Driver) {
    let server = admin_server(driver);
    let (mut watcher, _) = connect(&server).await;
    subscribe(&mut watcher, 1, &["presence.room.9"]).await;
    let alice = user_on_every_shard(&server, "alice").await;
    let mut conns = Vec::new();
    for (mut ws, w) in alice {
        subscribe(&mut ws, 1, &["room.9", "presence.room.9"]).await;
        assert_eq!(next_event(&mut watcher).await["event"], "join");
        conns.push((ws, w));
    }
    let mut left = Vec::new();
    for (mut ws, w) in conns {
        ws.close(None).await.unwrap();
        drop(ws);
        let e = next_event(&mut watcher).await;
        assert_eq!(e["event"], "leave", "{e}");
        left.push(e["conn"].clone());
        assert!(left.contains(&w["conn"]), "{left:?}");
    }
    assert_eq!(server.http("GET", "/health", None).await.0, 200);
}

async fn disconnect_by_user_and_by_conn(driver: Driver) {
    let server = admin_server(driver);
    let mut alice = user_on_every_shard(&server, "alice").await;
    let (mut bob, bw) = connect_as(&server, "bob").await;
    let (mut anon, aw) = connect(&server).await;

    let answer = post(
        &server,
        "/v1/disconnect",
        json!({"user":"alice","code":4321,"reason":"account suspended"}),
    )
    .await;
    assert_eq!(answer, json!({"disconnected": 2}));
    for (ws, _) in &mut alice {
        let close = recv_close(ws).await.expect("a close frame");
        assert_eq!(u16::from(close.code), 4321);
        assert_eq!(close.reason.as_str(), "account suspended");
    }
    nothing_more(&mut bob).await;

    let answer = post(&server, "/v1/disconnect", json!({"conn": bw["conn"]})).await;
    assert_eq!(answer, json!({"disconnected": 1}));
    let close = recv_close(&mut bob).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4000, "the default code");

    let answer = post(
        &server,
        "/v1/disconnect",
        json!({"conn": aw["conn"], "code": 1001, "reason": ""}),
    )
    .await;
    assert_eq!(answer, json!({"disconnected": 1}));
    let close = recv_close(&mut anon).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);

    // Nobody left to disconnect.
    let answer = post(&server, "/v1/disconnect", json!({"user":"nobody"})).await;
    assert_eq!(answer, json!({"disconnected": 0}));
    server
        .wait_metric_with("tickcast_connections_closed_total", "reason", "admin", 4.0)
        .await;
}
