//! Security, end to end with a real client library (tokio-tungstenite) and real tokens
//! (jsonwebtoken, test keys in tests/fixtures/jwt): token sources, JWT algorithms, rejected
//! tokens, API keys, permissions, refresh and expiry, rate limits, Origin, admin HTTP access,
//! hostile bursts. Every wait is a condition bounded by `DEADLINE`, never a sleep.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use futures_util::SinkExt;

both_drivers!(
    token_sources,
    secret_files_from_the_credentials_directory,
    every_jwt_algorithm,
    bad_tokens_get_401_before_the_upgrade,
    bad_token_in_auth_op_closes_1008,
    api_key_by_hash,
    private_topics_owner_only,
    publish_needs_the_right,
    refresh_keeps_allowed_subscriptions,
    expiry_without_refresh_closes_4001,
    expiry_then_refresh_within_grace,
    anonymous_off_requires_auth,
    message_rate_limit_then_4029,
    connect_rate_limit_per_ip,
    connections_per_user,
    origin_allow_list,
    admin_http_access,
    subscribe_burst_is_bounded,
    compression_off_declines_the_offer_and_rsv1_fails,
    ping_flood_is_cut,
    huge_fragmented_message_is_refused,
);

const HS_SECRET: &str = "tickcast-test-secret-0123456789abcdef";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

/// Security defaults (anonymous: public.> only, no publish), the test keys, plus `env`.
fn secure_server(driver: Driver, env: &[(&str, &str)]) -> Server {
    let keys = format!(
        "[{{algorithm=\"HS256\",secret=\"{HS_SECRET}\"}},\
          {{algorithm=\"HS384\",secret=\"{HS_SECRET}\"}},\
          {{algorithm=\"HS512\",secret=\"{HS_SECRET}\"}},\
          {{algorithm=\"RS256\",public_key_file=\"{FIXTURES}/rsa_public.pem\"}},\
          {{algorithm=\"ES256\",public_key_file=\"{FIXTURES}/ec_public.pem\"}}]"
    );
    let api_keys = format!(
        "[{{name=\"test-admin\",sha256=\"{}\",admin=true,pubs=[\">\"]}},\
          {{name=\"ops\",sha256=\"{}\",admin=true,pubs=[\"public.>\"]}},\
          {{name=\"pricer\",sha256=\"{}\",pubs=[\"prices.>\"],subs=[\"prices.>\"]}}]",
        tickcast::auth::hash_api_key(ADMIN_KEY),
        tickcast::auth::hash_api_key(OPS_KEY),
        tickcast::auth::hash_api_key(PRICER_KEY),
    );
    let mut all: Vec<(&str, &str)> = vec![
        ("TICKCAST_AUTH__ANONYMOUS_SUBS", "[\"public.>\"]"),
        ("TICKCAST_AUTH__ANONYMOUS_PUBS", "[]"),
        ("TICKCAST_AUTH__JWT_KEYS", &keys),
        ("TICKCAST_AUTH__API_KEYS", &api_keys),
        // The shipped rate limits (the harness turns them off for engine tests).
        ("TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S", "20"),
        ("TICKCAST_LIMITS__CONNECT_RATE_PER_IP_PER_S", "10"),
    ];
    all.extend_from_slice(env);
    Server::start(driver, &all, &[])
}

const PRICER_KEY: &str = "tk_pricer-test-key";
/// An admin key that may publish to `public.>` only.
const OPS_KEY: &str = "tk_ops-test-key";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn token(alg: Algorithm, claims: Value) -> String {
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(HS_SECRET.as_bytes())
        }
        Algorithm::RS256 => EncodingKey::from_rsa_pem(
            &std::fs::read(format!("{FIXTURES}/rsa_private.pem")).unwrap(),
        )
        .unwrap(),
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(&std::fs::read(format!("{FIXTURES}/ec_private.pem")).unwrap())
                .unwrap()
        }
        other => panic!("no test key for {other:?}"),
    };
    encode(&Header::new(alg), &claims, &key).unwrap()
}

/// A user token valid for an hour: `user.{sub}.>` to read, `orders.{sub}` to publish.
fn user_token(sub: &str) -> String {
    token(
        Algorithm::HS256,
        json!({"sub": sub, "exp": now() + 3600, "subs": ["user.{sub}.>"], "pubs": ["orders.{sub}"]}),
    )
}

async fn connect_as(server: &Server, token: &str) -> (Ws, Value) {
    try_connect(server, &format!("/ws?token={token}"), &[])
        .await
        .expect("token accepted")
}

/// Sends an op and returns the next message that is not a data frame.
async fn op(ws: &mut Ws, v: Value) -> Value {
    send_json(ws, v).await;
    loop {
        let m = recv_json(ws).await;
        if m.get("op").is_some() {
            return m;
        }
    }
}

/// Publishes over HTTP with the admin key; returns the status.
async fn admin_publish(server: &Server, topic: &str, data: Value) -> u16 {
    let body = json!({"topic": topic, "data": data}).to_string();
    server.http("POST", "/v1/publish", Some(&body)).await.0
}

async fn token_sources(driver: Driver) {
    let server = secure_server(driver, &[]);
    let t = user_token("alice");
    let (_ws, w) = connect_as(&server, &t).await;
    assert_eq!(w["user"], "alice");
    assert!(w["exp"].as_u64().unwrap() > now());

    let bearer = format!("Bearer {t}");
    let (_ws, w) = try_connect(&server, "/ws", &[("Authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(w["user"], "alice");

    let (mut ws, w) = try_connect(&server, "/ws", &[]).await.unwrap();
    assert_eq!(w["user"], Value::Null, "no token: anonymous");
    let ack = op(&mut ws, json!({"op":"auth","id":1,"token":t})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(ack["user"], "alice");
    let ack = subscribe(&mut ws, 2, &["user.alice.orders"]).await;
    assert_eq!(ack["topics"], json!(["user.alice.orders"]));
    assert_eq!(
        server
            .metric_with("tickcast_security_events_total", "event", "auth_jwt")
            .await,
        3.0
    );
}

async fn every_jwt_algorithm(driver: Driver) {
    let server = secure_server(driver, &[]);
    for alg in [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::ES256,
    ] {
        let t = token(alg, json!({"sub": format!("{alg:?}"), "exp": now() + 60}));
        let (_ws, w) = connect_as(&server, &t).await;
        assert_eq!(w["user"], format!("{alg:?}"));
    }
}

/// Tokens the server must refuse, each with why.
fn bad_tokens() -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let good = user_token("alice");
    let mut tampered: Vec<String> = good.split('.').map(String::from).collect();
    tampered[1] = b64.encode(format!(
        r#"{{"sub":"root","exp":{},"subs":[">"]}}"#,
        now() + 60
    ));
    // Algorithm confusion: an HS256 token whose "secret" is the RS256 public key.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"mallory","exp":now()+60}),
        &EncodingKey::from_secret(&std::fs::read(format!("{FIXTURES}/rsa_public.pem")).unwrap()),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"sub":"root","exp":{}}}"#, now() + 60))
    );
    vec![
        (
            "expired",
            token(Algorithm::HS256, json!({"sub":"a","exp":now()-3600})),
        ),
        (
            "not yet valid",
            token(
                Algorithm::HS256,
                json!({"sub":"a","exp":now()+7200,"nbf":now()+3600}),
            ),
        ),
        (
            "wrong key",
            encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub":"a","exp":now()+60}),
                &EncodingKey::from_secret(b"some-other-secret-some-other-secret"),
            )
            .unwrap(),
        ),
        ("wrong alg (confusion)", confused),
        ("alg none", none),
        ("tampered", tampered.join(".")),
        ("unknown api key", "tk_nope".to_string()),
    ]
}

async fn bad_tokens_get_401_before_the_upgrade(driver: Driver) {
    let server = secure_server(driver, &[]);
    for (what, t) in bad_tokens() {
        let status = try_connect(&server, &format!("/ws?token={t}"), &[])
            .await
            .err();
        assert_eq!(status, Some(401), "{what}");
        let bearer = format!("Bearer {t}");
        let status = try_connect(&server, "/ws", &[("Authorization", &bearer)])
            .await
            .err();
        assert_eq!(status, Some(401), "{what} (header)");
    }
    assert!(
        server
            .metric_with("tickcast_auth_failures_total", "reason", "signature")
            .await
            >= 2.0
    );
}

async fn bad_token_in_auth_op_closes_1008(driver: Driver) {
    let server = secure_server(driver, &[]);
    for (what, t) in bad_tokens() {
        let (mut ws, _) = try_connect(&server, "/ws", &[]).await.unwrap();
        let err = op(&mut ws, json!({"op":"auth","id":7,"token":t})).await;
        assert_eq!(err["code"], "unauthorized", "{what}: {err}");
        assert_eq!(err["id"], 7);
        let close = recv_close(&mut ws).await.expect("close frame");
        assert_eq!(u16::from(close.code), 1008, "{what}");
    }
}

async fn api_key_by_hash(driver: Driver) {
    let server = secure_server(driver, &[]);
    let (mut ws, w) = connect_as(&server, PRICER_KEY).await;
    assert_eq!(w["user"], "pricer");
    assert!(w.get("exp").is_none(), "API keys do not expire: {w}");
    subscribe(&mut ws, 1, &["prices.btc"]).await;
    send_json(
        &mut ws,
        json!({"op":"publish","id":2,"topic":"prices.btc","data":1}),
    )
    .await;
    // The ack and the data frame, in either order.
    let (a, b) = (recv_json(&mut ws).await, recv_json(&mut ws).await);
    let (ack, data) = if a.get("op").is_some() {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(data["topic"], "prices.btc");
    assert_eq!(
        try_connect(&server, "/ws?token=tk_pricer-test-kez", &[])
            .await
            .err(),
        Some(401)
    );
}

async fn private_topics_owner_only(driver: Driver) {
    let server = secure_server(driver, &[]);
    let (mut alice, _) = connect_as(&server, &user_token("alice")).await;
    let (mut bob, _) = connect_as(&server, &user_token("bob")).await;
    subscribe(&mut alice, 1, &["user.alice.>"]).await;
    subscribe(&mut bob, 1, &["user.bob.orders"]).await;
    for (pattern, is_bob) in [
        ("user.alice.orders", true),
        ("user.*.orders", false),
        ("user.>", false),
    ] {
        let who = if is_bob { &mut bob } else { &mut alice };
        let err = op(who, json!({"op":"subscribe","id":2,"topics":[pattern]})).await;
        assert_eq!(err["code"], "forbidden", "{pattern}: {err}");
        assert_eq!(err["topic"], pattern);
    }
    let (mut anon, _) = try_connect(&server, "/ws", &[]).await.unwrap();
    let err = op(
        &mut anon,
        json!({"op":"subscribe","id":3,"topics":["user.alice.orders"]}),
    )
    .await;
    assert_eq!(err["code"], "forbidden");

    assert_eq!(
        admin_publish(&server, "user.alice.orders", json!(1)).await,
        200
    );
    assert_eq!(
        admin_publish(&server, "user.bob.orders", json!(2)).await,
        200
    );
    let a = recv_json(&mut alice).await;
    assert_eq!(
        (a["topic"].as_str(), a["data"].as_i64()),
        (Some("user.alice.orders"), Some(1))
    );
    let b = recv_json(&mut bob).await;
    assert_eq!(
        (b["topic"].as_str(), b["data"].as_i64()),
        (Some("user.bob.orders"), Some(2))
    );
    // Alice got nothing of Bob's: her next frame is the pong to this ping.
    assert_eq!(
        op(&mut alice, json!({"op":"ping","id":9})).await["op"],
        "pong"
    );
}

async fn publish_needs_the_right(driver: Driver) {
    let server = secure_server(driver, &[]);
    let (mut anon, _) = try_connect(&server, "/ws", &[]).await.unwrap();
    let err = op(
        &mut anon,
        json!({"op":"publish","id":1,"topic":"public.x","data":1}),
    )
    .await;
    assert_eq!(err["code"], "forbidden", "anonymous may not publish: {err}");
    assert_eq!(err["id"], 1);

    let (mut alice, _) = connect_as(&server, &user_token("alice")).await;
    let err = op(
        &mut alice,
        json!({"op":"publish","id":2,"topic":"orders.bob","data":1}),
    )
    .await;
    assert_eq!(err["code"], "forbidden", "{err}");
    let ack = op(
        &mut alice,
        json!({"op":"publish","id":3,"topic":"orders.alice","data":1}),
    )
    .await;
    assert_eq!(ack["op"], "ack", "{ack}");

    // One request, one allowed and one forbidden topic: an error for one, an ack for the other.
    send_json(
        &mut alice,
        json!({"op":"subscribe","id":4,"topics":["public.news","user.bob.x"]}),
    )
    .await;
    let first = recv_json(&mut alice).await;
    let second = recv_json(&mut alice).await;
    assert_eq!(first["code"], "forbidden");
    assert_eq!(first["topic"], "user.bob.x");
    assert_eq!(second["op"], "ack");
    assert_eq!(second["topics"], json!(["public.news"]));
    assert!(
        server
            .metric_with(
                "tickcast_security_events_total",
                "event",
                "forbidden_publish"
            )
            .await
            >= 2.0
    );
}

async fn refresh_keeps_allowed_subscriptions(driver: Driver) {
    let server = secure_server(driver, &[]);
    let wide = token(
        Algorithm::HS256,
        json!({"sub":"alice","exp":now()+3600,"subs":["user.{sub}.>","desk.>"]}),
    );
    let (mut ws, _) = connect_as(&server, &wide).await;
    subscribe(&mut ws, 1, &["user.alice.orders", "desk.fx"]).await;
    // A fresh token with fewer rights: the subscription it no longer allows is dropped.
    let narrow = token(
        Algorithm::RS256,
        json!({"sub":"alice","exp":now()+7200,"subs":["user.{sub}.>"]}),
    );
    let ack = op(&mut ws, json!({"op":"auth","id":2,"token":narrow})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(ack["dropped"], json!(["desk.fx"]));
    assert!(
        ack["exp"].as_u64().unwrap() > now() + 3600,
        "the new expiry: {ack}"
    );
    assert_eq!(admin_publish(&server, "desk.fx", json!("gone")).await, 200);
    assert_eq!(
        admin_publish(&server, "user.alice.orders", json!("kept")).await,
        200
    );
    let m = recv_json(&mut ws).await;
    assert_eq!(
        m["data"], "kept",
        "the kept subscription still delivers, the dropped one not"
    );
    // Another user's token is refused as a refresh.
    let err = op(
        &mut ws,
        json!({"op":"auth","id":3,"token":user_token("bob")}),
    )
    .await;
    assert_eq!(err["code"], "forbidden", "{err}");
    assert_eq!(u16::from(recv_close(&mut ws).await.unwrap().code), 1008);
}

/// A connection with a token of `claims` plus an `exp` a second or two away (`jwt_leeway_s` = 0:
/// the server refuses it from the second after `exp`). A connect slow enough (a loaded
/// machine) for the token to expire first is refused with 401: like a real client, this takes
/// a fresh token and connects again. Bounded by `DEADLINE`.
async fn connect_with_expiring_token(server: &Server, claims: Value) -> Ws {
    let start = std::time::Instant::now();
    loop {
        let mut claims = claims.clone();
        claims["exp"] = json!(now() + 1);
        let t = token(Algorithm::HS256, claims);
        match try_connect(server, &format!("/ws?token={t}"), &[]).await {
            Ok((ws, _)) => return ws,
            Err(401) => assert!(
                start.elapsed() < DEADLINE,
                "every token expired before its connection was made"
            ),
            Err(status) => panic!("connect with a short token: HTTP {status}"),
        }
    }
}

async fn expiry_without_refresh_closes_4001(driver: Driver) {
    let server = secure_server(
        driver,
        &[
            ("TICKCAST_AUTH__JWT_LEEWAY_S", "0"),
            ("TICKCAST_AUTH__REFRESH_GRACE_S", "1"),
        ],
    );
    let mut ws = connect_with_expiring_token(&server, json!({"sub":"alice"})).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(err["code"], "unauthorized", "{err}");
    assert_eq!(err["message"], "token expired");
    let close = recv_close(&mut ws).await.expect("close frame");
    assert_eq!(u16::from(close.code), 4001);
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "unauthorized",
            1.0,
        )
        .await;
}

async fn expiry_then_refresh_within_grace(driver: Driver) {
    let server = secure_server(driver, &[("TICKCAST_AUTH__JWT_LEEWAY_S", "0")]);
    // A subscription made while the token is valid. If the token expires first (a loaded
    // machine), the subscribe is refused after the `token expired` error: start over with a
    // fresh token and connection, as a client would.
    let start = std::time::Instant::now();
    let mut ws = loop {
        let mut ws =
            connect_with_expiring_token(&server, json!({"sub":"alice","subs":["user.{sub}.>"]}))
                .await;
        send_json(
            &mut ws,
            json!({"op":"subscribe","id":1,"topics":["user.alice.orders"]}),
        )
        .await;
        let first = recv_json(&mut ws).await;
        if first["op"] == "ack" {
            assert_eq!(first["id"], 1, "{first}");
            break ws;
        }
        assert_eq!(first["message"], "token expired", "{first}");
        let refused = recv_json(&mut ws).await;
        assert_eq!(
            (&refused["id"], &refused["code"]),
            (&json!(1), &json!("unauthorized")),
            "{refused}"
        );
        assert!(
            start.elapsed() < DEADLINE,
            "every token expired before its subscribe"
        );
    };
    let err = recv_json(&mut ws).await;
    assert_eq!(err["message"], "token expired", "{err}");
    // Expired: new subscriptions wait for a fresh token.
    let refused = op(
        &mut ws,
        json!({"op":"subscribe","id":2,"topics":["user.alice.x"]}),
    )
    .await;
    assert_eq!(refused["code"], "unauthorized");
    let ack = op(
        &mut ws,
        json!({"op":"auth","id":3,"token":user_token("alice")}),
    )
    .await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert!(ack.get("dropped").is_none());
    subscribe(&mut ws, 4, &["user.alice.x"]).await;
    assert_eq!(
        admin_publish(&server, "user.alice.orders", json!(5)).await,
        200
    );
    assert_eq!(
        recv_json(&mut ws).await["data"],
        5,
        "the old subscription survived"
    );
}

async fn anonymous_off_requires_auth(driver: Driver) {
    // Time to authenticate (`auth_timeout_ms`): here the longest allowed, so that nothing below
    // races the close; the close itself is checked on a second server, below.
    let server = secure_server(
        driver,
        &[
            ("TICKCAST_AUTH__ALLOW_ANONYMOUS", "false"),
            ("TICKCAST_AUTH__AUTH_TIMEOUT_MS", "600000"),
        ],
    );
    let (mut ws, w) = try_connect(&server, "/ws", &[]).await.unwrap();
    assert_eq!(w["auth_required"], true);
    let err = op(
        &mut ws,
        json!({"op":"subscribe","id":1,"topics":["public.x"]}),
    )
    .await;
    assert_eq!(err["code"], "unauthorized");
    assert_eq!(op(&mut ws, json!({"op":"ping"})).await["op"], "pong");

    let (mut ws, _) = try_connect(&server, "/ws", &[]).await.unwrap();
    let ack = op(
        &mut ws,
        json!({"op":"auth","id":1,"token":user_token("carol")}),
    )
    .await;
    assert_eq!(ack["user"], "carol");
    subscribe(&mut ws, 2, &["user.carol.orders"]).await;
    // With anonymous access off, even the public patterns need a grant in the token.
    let err = op(
        &mut ws,
        json!({"op":"subscribe","id":3,"topics":["public.x"]}),
    )
    .await;
    assert_eq!(err["code"], "forbidden");

    // No `auth` within `auth_timeout_ms`: close 4001, whatever else the client sent (answered
    // before the close, or cut by it, depending on how soon the server gets to them).
    let server = secure_server(
        driver,
        &[
            ("TICKCAST_AUTH__ALLOW_ANONYMOUS", "false"),
            ("TICKCAST_AUTH__AUTH_TIMEOUT_MS", "300"),
        ],
    );
    let (mut ws, w) = try_connect(&server, "/ws", &[]).await.unwrap();
    assert_eq!(w["auth_required"], true);
    send_json(
        &mut ws,
        json!({"op":"subscribe","id":1,"topics":["public.x"]}),
    )
    .await;
    send_json(&mut ws, json!({"op":"ping","id":2})).await;
    let code = loop {
        let msg = tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(&mut ws))
            .await
            .expect("no close within the deadline")
            .expect("stream ended without a close frame")
            .expect("websocket error");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                let expected = (v["id"] == 1 && v["code"] == "unauthorized")
                    || (v["id"] == 2 && v["op"] == "pong");
                assert!(expected, "{v}");
            }
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            _ => {}
        }
    };
    assert_eq!(code, Some(4001));
}

async fn message_rate_limit_then_4029(driver: Driver) {
    let server = secure_server(
        driver,
        &[
            ("TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S", "1"),
            ("TICKCAST_LIMITS__CLIENT_MESSAGES_BURST", "3"),
            ("TICKCAST_LIMITS__CLIENT_RATE_LIMITED_CLOSE_AFTER", "5"),
        ],
    );
    let (mut ws, _) = try_connect(&server, "/ws", &[]).await.unwrap();
    // Far more pings than the burst plus the refusals that close: even a server slow enough to
    // see a token refill between them (which resets the count of refusals in a row) runs into
    // five refusals in a row long before the end.
    let start = std::time::Instant::now();
    for i in 0..100 {
        ws.feed(Message::text(json!({"op":"ping","id":i}).to_string()))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    let mut pongs = 0u64;
    let mut limited = 0;
    loop {
        let msg = tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["op"].as_str() {
                    Some("pong") => pongs += 1,
                    Some("error") => {
                        assert_eq!(v["code"], "rate_limited", "{v}");
                        limited += 1;
                    }
                    _ => panic!("{v}"),
                }
            }
            Message::Close(frame) => {
                assert_eq!(u16::from(frame.unwrap().code), 4029);
                break;
            }
            _ => {}
        }
    }
    // The burst of 3, plus one per second the server took over them (a token refilled meanwhile;
    // one more for the rounding); then 4 errors, and the 5th refusal in a row closes.
    let elapsed = start.elapsed();
    assert!(
        (3..=3 + elapsed.as_secs() + 1).contains(&pongs),
        "{pongs} pongs in {elapsed:?} at 1/s, burst 3"
    );
    assert!(limited >= 4, "{limited} rate_limited errors");
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "rate_limited",
            1.0,
        )
        .await;
}

async fn connect_rate_limit_per_ip(driver: Driver) {
    let server = secure_server(
        driver,
        &[
            ("TICKCAST_LIMITS__CONNECT_RATE_PER_IP_PER_S", "1"),
            ("TICKCAST_LIMITS__CONNECT_BURST_PER_IP", "2"),
        ],
    );
    // Upgrades (each closed at once by a close frame after it) until one is refused: the burst
    // of 2 gets through, plus one per second the attempts took (a slow machine lets the bucket
    // refill in between; one more for the rounding).
    let start = std::time::Instant::now();
    let mut accepted = 0u64;
    let text = loop {
        let raw = server
            .raw_exchange(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\
                  \x88\x82\x00\x00\x00\x00\x03\xe8",
            )
            .await;
        let text = String::from_utf8_lossy(&raw).to_string();
        if !text.starts_with("HTTP/1.1 101") {
            break text;
        }
        accepted += 1;
        assert!(
            start.elapsed() < DEADLINE,
            "{accepted} upgrades, none refused"
        );
    };
    let elapsed = start.elapsed();
    assert!(
        (2..=2 + elapsed.as_secs() + 1).contains(&accepted),
        "{accepted} upgrades accepted in {elapsed:?} at 1/s, burst 2"
    );
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(text.contains("Retry-After: "), "{text}");
    assert!(text.contains("rate_limited"), "{text}");
    assert_eq!(
        server
            .metric_with(
                "tickcast_security_events_total",
                "event",
                "rate_limited_connect"
            )
            .await,
        1.0
    );
}

async fn connections_per_user(driver: Driver) {
    let server = secure_server(
        driver,
        &[("TICKCAST_LIMITS__CONNECTIONS_PER_USER_MAX", "2")],
    );
    let t = user_token("dave");
    let (_a, _) = connect_as(&server, &t).await;
    let (b, _) = connect_as(&server, &t).await;
    assert_eq!(
        try_connect(&server, &format!("/ws?token={t}"), &[])
            .await
            .err(),
        Some(429)
    );
    // Through the auth op too.
    let (mut c, _) = try_connect(&server, "/ws", &[]).await.unwrap();
    let err = op(&mut c, json!({"op":"auth","id":1,"token":t})).await;
    assert_eq!(err["code"], "rate_limited");
    assert_eq!(u16::from(recv_close(&mut c).await.unwrap().code), 4029);
    // Another user is not affected; a slot frees when a connection of dave's closes.
    let (_e, _) = connect_as(&server, &user_token("erin")).await;
    drop(b);
    let start = std::time::Instant::now();
    while try_connect(&server, &format!("/ws?token={t}"), &[])
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < DEADLINE,
            "the user slot was never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn origin_allow_list(driver: Driver) {
    let server = secure_server(
        driver,
        &[(
            "TICKCAST_AUTH__ALLOWED_ORIGINS",
            "[\"https://app.example.com\", \"https://*.desk.example\"]",
        )],
    );
    let ok = |o: &'static str| [("Origin", o)];
    assert!(
        try_connect(&server, "/ws", &ok("https://app.example.com"))
            .await
            .is_ok()
    );
    assert!(
        try_connect(&server, "/ws", &ok("https://eu.desk.example"))
            .await
            .is_ok()
    );
    assert!(
        try_connect(&server, "/ws", &[]).await.is_ok(),
        "non-browser client"
    );
    for bad in [
        "https://evil.example",
        "https://app.example.com.evil",
        "null",
    ] {
        assert_eq!(
            try_connect(&server, "/ws", &ok(bad)).await.err(),
            Some(403),
            "{bad}"
        );
    }
}

async fn admin_http_access(driver: Driver) {
    let server = secure_server(driver, &[]);
    let body = Some(r#"{"topic":"public.x","data":1}"#);
    assert_eq!(
        server.http_with("POST", "/v1/publish", body, "").await.0,
        401
    );
    let user = format!("Authorization: Bearer {}\r\n", user_token("alice"));
    assert_eq!(
        server.http_with("POST", "/v1/publish", body, &user).await.0,
        403
    );
    let pricer = format!("Authorization: Bearer {PRICER_KEY}\r\n");
    assert_eq!(
        server
            .http_with("POST", "/v1/publish", body, &pricer)
            .await
            .0,
        403
    );
    assert_eq!(server.http("POST", "/v1/publish", body).await.0, 200);
    // The admin role opens the endpoint; the topic still needs a publish right.
    let ops = format!("Authorization: Bearer {OPS_KEY}\r\n");
    assert_eq!(
        server.http_with("POST", "/v1/publish", body, &ops).await.0,
        200
    );
    let private = Some(r#"{"topic":"user.alice.orders","data":1}"#);
    let (status, text) = server.http_with("POST", "/v1/publish", private, &ops).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("forbidden"), "{text}");
    // /health and /metrics: open on loopback by default.
    assert_eq!(server.http_with("GET", "/health", None, "").await.0, 200);
    assert_eq!(server.http_with("GET", "/metrics", None, "").await.0, 200);

    let locked = secure_server(driver, &[("TICKCAST_AUTH__HEALTH_METRICS", "admin")]);
    assert_eq!(locked.http_with("GET", "/metrics", None, "").await.0, 401);
    assert_eq!(locked.http_with("GET", "/health", None, &user).await.0, 403);
    assert_eq!(locked.http("GET", "/metrics", None).await.0, 200);
}

/// 10,000 subscribe ops in one burst: the rate limit answers, then closes with 4029; the
/// server holds nothing of it afterwards and keeps serving.
async fn subscribe_burst_is_bounded(driver: Driver) {
    let server = secure_server(driver, &[]);
    let mut s = raw_ws(&server).await;
    let mut burst = Vec::new();
    for i in 0..10_000 {
        let op = json!({"op":"subscribe","id":i,"topics":[format!("public.t{i}")]});
        burst.extend(client_frame(true, 0, 1, op.to_string().as_bytes(), true));
    }
    let start = std::time::Instant::now();
    // The server may close mid-burst; a write error then is expected.
    let _ = s.write_all(&burst).await;
    let frames = server_frames(&read_to_close(&mut s).await);
    let elapsed = start.elapsed();
    assert_eq!(frames.close, Some(4029));
    // The default burst of 40, plus 20 per second the server took over the burst (one more
    // for the rounding).
    let most = 40 + 20 * elapsed.as_secs_f64() as u64 + 1;
    assert!(
        frames.acks <= most,
        "{} subscribes acked in {elapsed:?} at 20/s, burst 40",
        frames.acks
    );
    // Once the connection is gone, so are its subscriptions.
    server
        .wait_metric_at_most("tickcast_subscriptions", 0.0)
        .await;
    let (_ws, _) = try_connect(&server, "/ws", &[]).await.unwrap();
}

/// With `deflate.enabled = false` the offer is declined (no extension in the 101), and a
/// compressed frame (RSV1) then fails the connection with 1002 instead of being misparsed.
/// (With compression on, tests/deflate.rs.)
async fn compression_off_declines_the_offer_and_rsv1_fails(driver: Driver) {
    let server = secure_server(driver, &[("TICKCAST_DEFLATE__ENABLED", "false")]);
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    )
    .await
    .unwrap();
    s.write_all(&client_frame(
        true,
        0b100,
        1,
        b"\xf2\x48\xcd\xc9\xc9\x07\x00",
        true,
    ))
    .await
    .unwrap();
    let raw = read_to_close(&mut s).await;
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    // Frames after the head: the welcome, then a close 1002.
    let frames = &raw[head_end..];
    let close_at = frames
        .iter()
        .rposition(|b| *b == 0x88)
        .expect("a close frame");
    let code = u16::from_be_bytes([frames[close_at + 2], frames[close_at + 3]]);
    assert_eq!(code, 1002);
}

/// A ping flood costs at most the burst in pongs, then the connection is closed with 4029.
async fn ping_flood_is_cut(driver: Driver) {
    let server = secure_server(driver, &[]);
    let mut s = raw_ws(&server).await;
    let mut flood = Vec::new();
    for _ in 0..5_000 {
        flood.extend(client_frame(true, 0, 9, b"ping", true));
    }
    let start = std::time::Instant::now();
    let _ = s.write_all(&flood).await;
    let frames = server_frames(&read_to_close(&mut s).await);
    let elapsed = start.elapsed();
    // The default burst of 40, plus 20 per second the server took over the flood (one more for
    // the rounding).
    let most = 40 + 20 * elapsed.as_secs_f64() as u64 + 1;
    assert!(
        frames.pongs <= most,
        "{} pongs in {elapsed:?} for a flood of 5000 pings at 20/s, burst 40",
        frames.pongs
    );
    assert_eq!(frames.close, Some(4029));
}

/// A message fragmented into many small frames is bounded by its total size: over
/// `limits.message_bytes_max` the connection is closed with 1009, the server holds no more.
async fn huge_fragmented_message_is_refused(driver: Driver) {
    let server = secure_server(
        driver,
        &[
            ("TICKCAST_LIMITS__MESSAGE_BYTES_MAX", "4096"),
            ("TICKCAST_LIMITS__PUBLISH_DATA_BYTES_MAX", "2048"),
        ],
    );
    let mut s = raw_ws(&server).await;
    let mut frames = client_frame(false, 0, 1, &[b' '; 100], true);
    for _ in 0..10_000 {
        frames.extend(client_frame(false, 0, 0, &[b' '; 100], true));
    }
    let _ = s.write_all(&frames).await;
    assert_eq!(raw_read_close_code(&mut s).await, Some(1009));
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "too_large",
            1.0,
        )
        .await;
}

/// What a raw server-to-client byte stream held.
struct ServerFrames {
    pongs: u64,
    /// Text frames that are acks (`"op":"ack"`).
    acks: u64,
    close: Option<u16>,
}

/// Counts pong frames and acks and finds the close code in raw server-to-client frames.
fn server_frames(data: &[u8]) -> ServerFrames {
    let mut i = 0;
    let mut frames = ServerFrames {
        pongs: 0,
        acks: 0,
        close: None,
    };
    while i + 2 <= data.len() {
        let opcode = data[i] & 0x0f;
        let (len, hdr) = match data[i + 1] & 0x7f {
            126 => (u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(data[i + 2..i + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let payload = &data[(i + hdr).min(data.len())..(i + hdr + len).min(data.len())];
        match opcode {
            0x1 => {
                let v: Value = serde_json::from_slice(payload).unwrap_or_default();
                if v["op"] == "ack" {
                    frames.acks += 1;
                }
            }
            0xA => frames.pongs += 1,
            0x8 if payload.len() >= 2 => {
                frames.close = Some(u16::from_be_bytes([payload[0], payload[1]]))
            }
            _ => {}
        }
        i += hdr + len;
    }
    frames
}

/// `$CREDENTIALS_DIRECTORY/…` in a file setting reads the file systemd's `LoadCredential=` put
/// there (docs/SECURITY.md): the HMAC secret comes from that directory, and a token signed with
/// it is accepted.
async fn secret_files_from_the_credentials_directory(driver: Driver) {
    let dir = std::env::temp_dir().join(format!(
        "tickcast-creds-{}-{:?}",
        std::process::id(),
        driver
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("jwt.secret"), format!("{HS_SECRET}\n")).unwrap();
    let keys = r#"[{algorithm="HS256",secret_file="$CREDENTIALS_DIRECTORY/jwt.secret"}]"#;
    let server = Server::start(
        driver,
        &[
            ("TICKCAST_AUTH__JWT_KEYS", keys),
            ("CREDENTIALS_DIRECTORY", dir.to_str().unwrap()),
        ],
        &[],
    );
    let (_ws, welcome) = connect_as(&server, &user_token("carol")).await;
    assert_eq!(welcome["user"], "carol", "{welcome}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
