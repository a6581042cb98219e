//! Centrifugo's client protocol (docs/DIALECTS.md) with the real SDKs, unmodified: npm
//! `centrifuge` (with Node `ws`) and PyPI `centrifuge-python`, pinned in
//! tests/clients/centrifugo/ and installed by its install.sh (tests/run.sh runs it and passes
//! `TICKCAST_TEST_CENTRIFUGO_PYTHON` and `TICKCAST_TEST_CENTRIFUGO_NODE_PATH`). Each SDK:
//! connects with a JWT, subscribes, gets publications in order, is disconnected mid-stream by
//! an operator with a reconnect code and recovers every missed publication (nothing lost,
//! nothing twice, `recovered: true`), publishes, and sees a permission error as its own
//! `unsubscribed` event with code 103, reads presence, presence stats and history, gets join
//! and leave pushes, and sees an expired token as its own error event (109), fetches a fresh
//! one and refreshes it on the connection. Plus, with a plain WebSocket client: encode once per
//! format, the wire shapes, refresh and expiry, and hostile input.

mod common;

use std::process::Command;

use common::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

both_drivers!(
    node_sdk,
    python_sdk,
    one_serialization_per_format,
    wire_shapes_and_hostile_input,
    refresh_narrows_rights_and_expiry_ends_the_connection,
    a_command_flood_is_closed_and_costs_others_nothing
);

const SECRET: &str = "centrifugo-test-secret-0123456789abcdef";
/// A recoverable channel (its class keeps history) alice may read and write.
const CHANNEL: &str = "chat.room1";

fn suite_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the suite with `bash tests/run.sh`, which installs the \
             pinned Centrifugo SDKs under target/ and sets it"
        )
    })
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn jwt(exp: u64) -> String {
    jwt_for(exp, "chat.>")
}

/// Alice's token until `exp`, reading and writing `rights`.
fn jwt_for(exp: u64, rights: &str) -> String {
    let claims = json!({"sub": "alice", "exp": exp, "subs": [rights], "pubs": [rights]});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn server(driver: Driver) -> Server {
    server_with(driver, &[])
}

fn server_with(driver: Driver, extra: &[(&str, &str)]) -> Server {
    let keys = format!("[{{algorithm=\"HS256\",secret=\"{SECRET}\"}}]");
    let mut env: Vec<(&str, &str)> = vec![
        ("TICKCAST_AUTH__JWT_KEYS", &keys),
        ("TICKCAST_AUTH__ANONYMOUS_SUBS", "[\"public.>\"]"),
        ("TICKCAST_AUTH__ANONYMOUS_PUBS", "[\"public.>\"]"),
        (
            "TICKCAST_TOPICS",
            "[{pattern=\"chat.lobby\",presence=true},{pattern=\"chat.>\",history_size=100},\
             {pattern=\"public.h\",history_size=10},{pattern=\"public.a\",presence=true}]",
        ),
    ];
    env.extend_from_slice(extra);
    Server::start(driver, &env, &[])
}

fn cf_url(server: &Server) -> String {
    format!("ws://{}/connection/websocket", server.addr)
}

async fn run_sdk(server: &Server, mut cmd: Command, script: &str) -> Value {
    let script = format!(
        "{}/tests/clients/centrifugo/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let args = json!({
        "token": jwt(now() + 3600),
        "expired": jwt(now() - 600),
        "short": jwt(now() + 3),
        "channel": CHANNEL,
        "forbidden": "secret.x",
        "presence": "chat.lobby",
    });
    cmd.args([
        script.as_str(),
        &cf_url(server),
        &format!("http://{}", server.addr),
        ADMIN_KEY,
        &args.to_string(),
    ]);
    json_output(cmd).await
}

/// What both SDKs report: 11 publications, offsets 1..=11 each once in order (5 before the
/// disconnect, 5 published while it reconnected and recovered, 1 its own), two subscribes
/// (the second recovering, recovered), the disconnect seen with the operator's code, and a
/// forbidden channel as `unsubscribed` 103.
fn check_session(seen: &Value, snake: bool) {
    let pubs = seen["pubs"].as_array().unwrap();
    let offsets: Vec<u64> = pubs.iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (1..=11).collect::<Vec<_>>(), "{seen}");
    for p in pubs {
        assert_eq!(p["n"], p["offset"], "{seen}");
    }
    let subs = seen["subscribed"].as_array().unwrap();
    assert_eq!(subs.len(), 2, "{seen}");
    let (was, rec) = if snake {
        ("was_recovering", "recovered")
    } else {
        ("wasRecovering", "recovered")
    };
    assert_eq!(subs[0]["recoverable"], true, "{seen}");
    assert_eq!(subs[0]["positioned"], true, "{seen}");
    assert_eq!(subs[1][was], true, "{seen}");
    assert_eq!(subs[1][rec], true, "{seen}");
    assert!(
        seen["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["connecting"] == 4100),
        "{seen}"
    );
    assert_eq!(seen["denied"]["code"], 103, "{seen}");
    // Presence: this client, as alice; history: the newest three, newest first.
    assert_eq!(seen["presence"], json!(["alice"]), "{seen}");
    assert_eq!(
        seen["presence_stats"],
        json!({"clients": 1, "users": 1}),
        "{seen}"
    );
    assert_eq!(seen["history"]["offsets"], json!([11, 10, 9]), "{seen}");
    assert_eq!(seen["history"]["n"], json!([11, 10, 9]), "{seen}");
    assert_eq!(seen["history"]["top"], 11, "{seen}");
    assert_eq!(
        seen["history"]["epoch"].as_str().unwrap().len(),
        16,
        "{seen}"
    );
    // Join and leave pushes of the other client, once each, as alice.
    let jl = &seen["join_leave"];
    let other = json!([{"user": "alice", "client": jl["other"]}]);
    assert_eq!(jl["joins"], other, "{seen}");
    assert_eq!(jl["leaves"], other, "{seen}");
}

async fn node_sdk(driver: Driver) {
    let server = server(driver);
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", suite_var("TICKCAST_TEST_CENTRIFUGO_NODE_PATH"));
    let seen = run_sdk(&server, cmd, "sdk.cjs").await;
    check_session(&seen, false);
    // rpc is not offered: an error reply (108 not available), not silence.
    assert_eq!(seen["rpc"], 108, "{seen}");
    check_expired_then_refreshed(&server, &seen).await;
}

async fn python_sdk(driver: Driver) {
    let server = server(driver);
    let cmd = Command::new(suite_var("TICKCAST_TEST_CENTRIFUGO_PYTHON"));
    let seen = run_sdk(&server, cmd, "sdk.py").await;
    check_session(&seen, true);
    check_expired_then_refreshed(&server, &seen).await;
}

/// An expired token: error 109 on connect (the SDK's error event), a fresh token from its
/// token callback, connected once, then the short-lived token refreshed on the connection
/// (another token call, the connection kept).
async fn check_expired_then_refreshed(server: &Server, seen: &Value) {
    let exp = &seen["expired"];
    assert_eq!(exp["errors"][0], 109, "{seen}");
    assert!(exp["token_calls"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(exp["connects"], 1, "{seen}");
    assert_eq!(exp["state"], "connected", "{seen}");
    assert!(
        server
            .metric_with("tickcast_security_events_total", "event", "refreshed")
            .await
            >= 1.0
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn cf_connect(server: &Server) -> Ws {
    cf_connect_with(server, "{}").await
}

/// Connected with `connect` body `body`.
async fn cf_connect_with(server: &Server, body: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(cf_url(server))
        .await
        .unwrap();
    ws.send(Message::text(format!(r#"{{"id":1,"connect":{body}}}"#)))
        .await
        .unwrap();
    let reply = cf_recv(&mut ws).await;
    assert_eq!(reply["id"], 1, "{reply}");
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    ws
}

/// The next message that is not a ping (`{}`), within 10 s.
async fn cf_recv(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the connection is open")
            .unwrap();
        match msg {
            Message::Text(t) if t.as_str() == "{}" => continue,
            Message::Text(t) => {
                assert!(!t.contains("\n\n") && !t.ends_with('\n'), "{t:?}");
                return serde_json::from_str(&t).unwrap();
            }
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

/// N subscribers of one channel in the Centrifugo format cost one serialization per publish,
/// besides protocol v1's one.
async fn one_serialization_per_format(driver: Driver) {
    let server = server(driver);
    let mut clients = Vec::new();
    for i in 0..20u32 {
        let mut ws = cf_connect(&server).await;
        let sub = format!(
            r#"{{"id":{},"subscribe":{{"channel":"public.fx","flag":1}}}}"#,
            i + 2
        );
        ws.send(Message::text(sub)).await.unwrap();
        let reply = cf_recv(&mut ws).await;
        assert_eq!(reply["subscribe"]["positioned"], true, "{reply}");
        clients.push(ws);
    }
    let before = server
        .metric_with("tickcast_serializations_total", "format", "centrifugo")
        .await;
    for n in 1..=10 {
        let body = format!(r#"{{"topic":"public.fx","data":{{"n":{n}}}}}"#);
        assert_eq!(server.http("POST", "/v1/publish", Some(&body)).await.0, 200);
    }
    for ws in &mut clients {
        for n in 1..=10u64 {
            let push = cf_recv(ws).await;
            assert_eq!(
                push,
                json!({"push":{"channel":"public.fx","pub":{"data":{"n":n},"offset":n}}})
            );
        }
    }
    let after = server
        .wait_metric_with(
            "tickcast_serializations_total",
            "format",
            "centrifugo",
            before + 10.0,
        )
        .await;
    assert_eq!(
        after - before,
        10.0,
        "one centrifugo serialization per publish"
    );
    assert_eq!(
        server
            .metric_with("tickcast_serializations_total", "format", "binance_raw")
            .await,
        0.0
    );
}

/// Shapes the SDKs rely on, and what hostile or unsupported input gets.
async fn wire_shapes_and_hostile_input(driver: Driver) {
    let server = server(driver);
    let mut ws = cf_connect(&server).await;
    // Several commands in one message, handled in order; unknown fields ignored.
    ws.send(Message::text(
        "{\"id\":2,\"subscribe\":{\"channel\":\"public.a\",\"flag\":1,\"delta\":\"fossil\"}}\n\
         {\"id\":3,\"subscribe\":{\"channel\":\"public.a\"}}\n\
         {\"id\":4,\"subscribe\":{\"channel\":\"secret.a\"}}\n\
         {\"id\":5,\"subscribe\":{\"channel\":\"public.*\"}}\n\
         {\"id\":6,\"presence\":{\"channel\":\"public.a\"}}\n\
         {\"id\":7,\"sub_refresh\":{\"channel\":\"public.a\",\"token\":\"x\"}}\n\
         {\"id\":8,\"publish\":{\"channel\":\"secret.a\",\"data\":1}}\n\
         {\"id\":9,\"unsubscribe\":{\"channel\":\"public.a\"}}",
    ))
    .await
    .unwrap();
    let mut replies = std::collections::BTreeMap::new();
    while replies.len() < 8 {
        let r = cf_recv(&mut ws).await;
        replies.insert(r["id"].as_u64().unwrap(), r);
    }
    assert_eq!(replies[&2]["subscribe"]["offset"], 0, "{replies:?}");
    assert!(replies[&2]["subscribe"].get("id").is_none());
    assert_eq!(replies[&3]["error"]["code"], 105, "already subscribed");
    assert_eq!(replies[&4]["error"]["code"], 103, "permission denied");
    assert_eq!(
        replies[&5]["error"]["code"], 102,
        "wildcards are not channels"
    );
    let clients = &replies[&6]["presence"]["presence"];
    let (id, info) = clients.as_object().unwrap().iter().next().unwrap();
    assert_eq!(info["client"], id.as_str(), "{replies:?}");
    assert_eq!(info["user"], "", "anonymous");
    assert_eq!(replies[&7]["error"]["code"], 108);
    assert_eq!(replies[&8]["error"]["code"], 103);
    assert_eq!(replies[&9], json!({"id":9,"unsubscribe":{}}));
    for r in replies.values().filter(|r| r.get("error").is_some()) {
        assert!(r["error"]["message"].is_string(), "{r}");
    }
    // The operator sees the client and what it speaks.
    let (status, body) = server.http("GET", "/v1/connections", None).await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["connections"][0]["protocol"], "centrifugo",
        "{listed}"
    );
    // History: limit, reverse, since; another epoch's since is an unrecoverable position;
    // a channel without history is not available; presence stats count clients and users.
    for n in 1..=3 {
        let body = format!(r#"{{"topic":"public.h","data":{{"n":{n}}}}}"#);
        assert_eq!(server.http("POST", "/v1/publish", Some(&body)).await.0, 200);
    }
    ws.send(Message::text(
        r#"{"id":20,"history":{"channel":"public.h","limit":2,"reverse":true}}"#,
    ))
    .await
    .unwrap();
    let h = cf_recv(&mut ws).await;
    let pubs = &h["history"]["publications"];
    assert_eq!(pubs[0], json!({"data":{"n":3},"offset":3}), "{h}");
    assert_eq!(pubs[1], json!({"data":{"n":2},"offset":2}), "{h}");
    assert_eq!(h["history"]["offset"], 3, "{h}");
    let epoch = h["history"]["epoch"].as_str().unwrap().to_string();
    let since = format!(
        r#"{{"id":21,"history":{{"channel":"public.h","limit":-1,"since":{{"offset":1,"epoch":"{epoch}"}}}}}}"#
    );
    ws.send(Message::text(since)).await.unwrap();
    let h = cf_recv(&mut ws).await;
    let offsets: Vec<u64> = h["history"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3], "{h}");
    ws.send(Message::text(
        "{\"id\":22,\"history\":{\"channel\":\"public.h\",\"limit\":5,\"since\":{\"offset\":1,\"epoch\":\"123\"}}}\n\
         {\"id\":23,\"history\":{\"channel\":\"public.a\",\"limit\":5}}\n\
         {\"id\":24,\"history\":{\"channel\":\"secret.a\",\"limit\":5}}\n\
         {\"id\":25,\"subscribe\":{\"channel\":\"public.h\"}}",
    ))
    .await
    .unwrap();
    let mut got = std::collections::BTreeMap::new();
    while got.len() < 4 {
        let r = cf_recv(&mut ws).await;
        got.insert(r["id"].as_u64().unwrap(), r);
    }
    assert_eq!(got[&22]["error"]["code"], 112, "{got:?}");
    assert_eq!(got[&23]["error"]["code"], 108, "{got:?}");
    assert_eq!(got[&24]["error"]["code"], 103, "{got:?}");
    assert_eq!(got[&25]["subscribe"]["recoverable"], true, "{got:?}");
    // Presence is shown where the class has it on: public.a (now left: zeros, written),
    // not public.h.
    ws.send(Message::text(
        "{\"id\":26,\"presence_stats\":{\"channel\":\"public.a\"}}\n\
         {\"id\":28,\"presence\":{\"channel\":\"public.h\"}}",
    ))
    .await
    .unwrap();
    // (Replies in any order: an error is immediate, the stats wait for the shards.)
    let (a, b) = (cf_recv(&mut ws).await, cf_recv(&mut ws).await);
    let (stats, err) = if a["id"] == 26 { (a, b) } else { (b, a) };
    assert_eq!(
        stats,
        json!({"id":26,"presence_stats":{"num_clients":0,"num_users":0}})
    );
    assert_eq!(err["error"]["code"], 108, "{err}");
    // Presence events are join and leave pushes, not a channel of their own.
    ws.send(Message::text(
        r#"{"id":27,"subscribe":{"channel":"presence.public.h"}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(cf_recv(&mut ws).await["error"]["code"], 102);
    // Malformed input and commands before connect: closed 3501 with a reason; the server
    // serves others meanwhile.
    for bad in [
        "{not json",
        r#"{"id":1,"subscribe":{"channel":"public.a"}}"#,
        r#"{"subscribe":{"channel":"public.a"}}"#,
        "[1,2,3]",
    ] {
        let (mut raw, _) = tokio_tungstenite::connect_async(cf_url(&server))
            .await
            .unwrap();
        raw.send(Message::text(bad)).await.unwrap();
        let close = loop {
            match raw.next().await {
                Some(Ok(Message::Close(c))) => break c,
                Some(Ok(_)) => continue,
                other => panic!("{bad}: {other:?}"),
            }
        };
        let close = close.expect("a close frame");
        assert_eq!(u16::from(close.code), 3501, "{bad}");
        assert_eq!(close.reason.as_str(), "bad request", "{bad}");
    }
    // A huge id is not a u32: bad request too. The first connection still works.
    ws.send(Message::text(
        r#"{"id":1,"publish":{"channel":"public.a","data":{"k":[1,2]}}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(cf_recv(&mut ws).await, json!({"id":1,"publish":{}}));
    ws.send(Message::text(
        r#"{"id":99999999999999,"publish":{"channel":"public.a","data":1}}"#,
    ))
    .await
    .unwrap();
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(c))) => break c.unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 3501);
    assert_eq!(server.http("GET", "/health", None).await.0, 200);
}

/// The close frame that ends `ws` (other messages skipped), within 30 s.
async fn cf_close(ws: &mut Ws) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("closed within 30 s");
        match msg {
            Some(Ok(Message::Close(Some(c)))) => return (u16::from(c.code), c.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// A refresh with narrower rights unsubscribes what they no longer allow (push 2000); an
/// invalid token on refresh closes 3500; a token that expires without a refresh makes the next
/// command close the connection with 3005 (the SDK reconnects, gets 109, fetches a token);
/// too many commands in one message close 3501.
async fn refresh_narrows_rights_and_expiry_ends_the_connection(driver: Driver) {
    let server = server_with(
        driver,
        &[
            ("TICKCAST_AUTH__JWT_LEEWAY_S", "0"),
            ("TICKCAST_LIMITS__SUBSCRIPTIONS_PER_CONN_MAX", "4"),
        ],
    );
    let body = format!(r#"{{"token":"{}"}}"#, jwt(now() + 3600));
    let mut ws = cf_connect_with(&server, &body).await;
    ws.send(Message::text(
        "{\"id\":2,\"subscribe\":{\"channel\":\"chat.a\"}}\n{\"id\":3,\"subscribe\":{\"channel\":\"chat.b\"}}",
    ))
    .await
    .unwrap();
    for _ in 0..2 {
        assert!(cf_recv(&mut ws).await.get("subscribe").is_some());
    }
    let narrower = jwt_for(now() + 3600, "chat.b");
    ws.send(Message::text(format!(
        r#"{{"id":4,"refresh":{{"token":"{narrower}"}}}}"#
    )))
    .await
    .unwrap();
    let r = cf_recv(&mut ws).await;
    assert_eq!(r["id"], 4, "{r}");
    assert_eq!(r["refresh"]["expires"], true, "{r}");
    assert_eq!(
        cf_recv(&mut ws).await,
        json!({"push":{"channel":"chat.a","unsubscribe":{"code":2000,"reason":"permission denied"}}})
    );
    // chat.b is still subscribed: a publish reaches it.
    let body = r#"{"topic":"chat.b","data":{"k":1}}"#;
    assert_eq!(server.http("POST", "/v1/publish", Some(body)).await.0, 200);
    assert_eq!(cf_recv(&mut ws).await["push"]["pub"]["data"]["k"], 1);
    ws.send(Message::text(r#"{"id":5,"refresh":{"token":"garbage"}}"#))
        .await
        .unwrap();
    assert_eq!(cf_close(&mut ws).await, (3500, "invalid token".into()));

    // Expiry: the next command after the token ran out closes 3005.
    let body = format!(r#"{{"token":"{}"}}"#, jwt(now() + 2));
    let mut ws = cf_connect_with(&server, &body).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut id = 10;
    let closed = loop {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        id += 1;
        let cmd = format!(r#"{{"id":{id},"presence_stats":{{"channel":"chat.a"}}}}"#);
        if ws.send(Message::text(cmd)).await.is_err() {
            panic!("closed without a close frame");
        }
        match tokio::time::timeout(std::time::Duration::from_millis(500), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(c))))) => {
                break (u16::from(c.code), c.reason.to_string());
            }
            Ok(Some(Ok(_))) | Err(_) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(closed, (3005, "connection expired".into()));

    // More commands in one message than subscriptions_per_conn_max + 16: 3501, none handled.
    let mut ws = cf_connect(&server).await;
    let flood: Vec<String> = (0..21)
        .map(|i| {
            format!(
                r#"{{"id":{},"presence_stats":{{"channel":"public.a"}}}}"#,
                i + 2
            )
        })
        .collect();
    ws.send(Message::text(flood.join("\n"))).await.unwrap();
    assert_eq!(cf_close(&mut ws).await, (3501, "bad request".into()));
    assert_eq!(server.http("GET", "/health", None).await.0, 200);
}

/// A client flooding commands over the message rate (a burst of 40 here) is closed with 3013
/// at once (too many requests: the SDKs reconnect with backoff); another client meanwhile
/// gets every publication.
async fn a_command_flood_is_closed_and_costs_others_nothing(driver: Driver) {
    let server = server_with(
        driver,
        &[
            ("TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S", "20"),
            ("TICKCAST_LIMITS__CLIENT_MESSAGES_BURST", "40"),
        ],
    );
    let mut calm = cf_connect(&server).await;
    calm.send(Message::text(
        r#"{"id":2,"subscribe":{"channel":"public.calm"}}"#,
    ))
    .await
    .unwrap();
    assert!(cf_recv(&mut calm).await.get("subscribe").is_some());
    let mut flood = cf_connect(&server).await;
    let mut closed = None;
    let mut published = 0u64;
    for i in 0..2000u32 {
        let cmd = format!(
            r#"{{"id":{},"presence_stats":{{"channel":"public.x"}}}}"#,
            i + 2
        );
        if flood.send(Message::text(cmd)).await.is_err() {
            break;
        }
        if i % 10 == 9 {
            let body = format!(r#"{{"topic":"public.calm","data":{{"n":{}}}}}"#, i / 10 + 1);
            assert_eq!(server.http("POST", "/v1/publish", Some(&body)).await.0, 200);
            published += 1;
        }
        if let Ok(Some(Ok(Message::Close(c)))) =
            tokio::time::timeout(std::time::Duration::ZERO, flood.next()).await
        {
            closed = c.map(|c| (u16::from(c.code), c.reason.to_string()));
            break;
        }
    }
    let closed = match closed {
        Some(c) => c,
        None => cf_close(&mut flood).await,
    };
    assert_eq!(closed, (3013, "too many requests".into()));
    assert!(published >= 1, "closed before anything was published");
    for n in 1..=published {
        let push = cf_recv(&mut calm).await;
        assert_eq!(push["push"]["pub"]["offset"], n, "{push}");
    }
    assert!(
        server
            .metric_with(
                "tickcast_security_events_total",
                "event",
                "rate_limited_message"
            )
            .await
            >= 1.0
    );
}
