//! Binance market streams under `/binance` (docs/DIALECTS.md) with the real connectors,
//! unmodified: PyPI `binance-sdk-spot` and npm `@binance/spot`, pinned in
//! tests/clients/binance/ and installed by its install.sh (tests/run.sh runs it and passes
//! `TICKCAST_TEST_BINANCE_PYTHON` and `TICKCAST_TEST_BINANCE_NODE_PATH`; run alone,
//! `cargo test --test binance` needs both set). Each SDK, against the demo feed in Binance's
//! shapes (`demo.format = "binance"`), gets trades and book tickers parsed in its typed
//! callbacks, lists its subscriptions, unsubscribes (and receives nothing of those streams
//! after), subscribes again, and stays connected past the pong timeout by its own pongs, all
//! within Binance's own message rate.
//!
//! With a plain WebSocket client: raw frames are the published `data` byte for byte, combined
//! ones `{"stream","data"}`; `SET_PROPERTY combined` switches a connection mid-stream; a
//! `SUBSCRIBE` for a stream its URL named delivers nothing twice; request ids come back exactly
//! as sent; `LIST_SUBSCRIPTIONS` keeps subscription order; one publish is encoded once per
//! format however many Binance subscribers it has; hostile input gets Binance's error codes
//! (nothing half-subscribed, the connection usable after); and a client over the message rate
//! is closed 1008 while another on the same topic loses nothing.

mod common;

use std::process::Command;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{self, Message},
};

both_drivers!(
    python_sdk_spot,
    node_spot,
    raw_and_combined,
    ids_echoed_exactly,
    list_subscriptions_in_order,
    stream_paths,
    permissions_hold_for_streams,
    one_serialization_per_format,
    hostile_input,
    rate_limit_closes_only_the_flooder,
    silent_client_is_dropped,
);

/// Binance's message rate (5/s, burst 10) lifted, for tests that send many requests; the
/// connector tests and the rate-limit test run with Binance's own.
const LENIENT: &[(&str, &str)] = &[
    ("TICKCAST_BINANCE__MESSAGES_PER_S", "10000"),
    ("TICKCAST_BINANCE__MESSAGES_BURST", "10000"),
];

/// A setting of tests/run.sh (where the pinned connectors are).
fn suite_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the suite with `bash tests/run.sh`, which installs the \
             pinned Binance connectors under target/ (tests/clients/binance/install.sh) and \
             sets it"
        )
    })
}

/// The demo feed in Binance's shapes; Binance's keep-alive shortened (a ping every second, a
/// connection silent for 3 s after one is dropped) so that the connectors' own pongs are what
/// keeps their sessions open.
fn demo_server(driver: Driver) -> Server {
    Server::start(
        driver,
        &[
            ("TICKCAST_DEMO__FORMAT", "binance"),
            ("TICKCAST_BINANCE__PING_INTERVAL_S", "1"),
            ("TICKCAST_BINANCE__PONG_TIMEOUT_S", "3"),
        ],
        &["--demo-feed"],
    )
}

/// Runs a connector script (`program script ws://ADDR/binance`) and returns the JSON line it
/// prints last. The scripts stop by themselves (each wait bounded, 60 s at most in all).
async fn run_client(server: &Server, mut cmd: Command, script: &str) -> Value {
    let script = format!(
        "{}/tests/clients/binance/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    cmd.args([script.as_str(), &format!("ws://{}/binance", server.addr)]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the connector"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "connector failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
    serde_json::from_str(line.unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON line from the connector ({e}): {stdout}"))
}

/// A Binance decimal string (`"64000.01"`): digits, one point, digits; positive.
fn decimal(v: &Value) -> f64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    assert!(
        !int.is_empty()
            && !frac.is_empty()
            && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()),
        "not a decimal string: {s}"
    );
    let x: f64 = s.parse().unwrap();
    assert!(x > 0.0, "{s}");
    x
}

/// What both connectors report alike: BTCUSDT trades and book tickers in their callbacks with
/// Binance's types, trade ids rising (nothing twice), both streams listed, none after the
/// unsubscribe, and ETHUSDT trades after subscribing again.
fn check_session(seen: &Value, string: &str, int: &str, boolean: &str) {
    assert_eq!(seen["errors"], json!([]), "{seen}");
    assert!(seen["trades"].as_u64().unwrap() >= 5, "{seen}");
    assert!(seen["book_tickers"].as_u64().unwrap() >= 3, "{seen}");
    let t = &seen["trade"];
    assert_eq!(t["e"], "trade", "{seen}");
    assert_eq!(t["s"], "BTCUSDT", "{seen}");
    decimal(&t["p"]);
    decimal(&t["q"]);
    assert_eq!(t["p_type"], string, "{seen}");
    assert_eq!(t["t_type"], int, "{seen}");
    assert_eq!(t["T_type"], int, "{seen}");
    assert_eq!(t["m_type"], boolean, "{seen}");
    assert_eq!(seen["trade_ids_increasing"], true, "{seen}");
    let b = &seen["book_ticker"];
    assert_eq!(b["s"], "BTCUSDT", "{seen}");
    assert!(decimal(&b["b"]) < decimal(&b["a"]), "{seen}");
    assert_eq!(b["b_type"], string, "{seen}");
    assert_eq!(b["u_type"], int, "{seen}");
    assert_eq!(
        seen["list"],
        json!(["btcusdt@trade", "btcusdt@bookTicker"]),
        "{seen}"
    );
    assert_eq!(seen["list_after_unsubscribe"], json!([]), "{seen}");
    assert_eq!(seen["btc_after_unsubscribe"], 0, "{seen}");
    assert!(seen["pings"].as_u64().unwrap() >= 5, "{seen}");
}

/// The connectors' traffic stayed within Binance's limits and their pongs kept them alive:
/// nothing closed for its rate or for silence.
async fn check_not_closed(server: &Server) {
    for reason in ["rate_limited", "idle_timeout"] {
        let closed = server
            .metric_with("tickcast_connections_closed_total", "reason", reason)
            .await;
        assert_eq!(closed, 0.0, "{reason}");
    }
}

/// binance-sdk-spot: `/binance/stream` with no stream, SUBSCRIBEs with uuid ids, its strict
/// pydantic models (a number where Binance sends a string fails validation, reported as an
/// `error` event: none here), LIST_SUBSCRIPTIONS through its own helper, and an untyped
/// subscription's callback given the whole combined envelope.
async fn python_sdk_spot(driver: Driver) {
    let server = demo_server(driver);
    let cmd = Command::new(suite_var("TICKCAST_TEST_BINANCE_PYTHON"));
    let seen = run_client(&server, cmd, "sdk_spot.py").await;
    check_session(&seen, "str", "int", "bool");
    assert_eq!(seen["trade"]["model"], "TradeResponse", "{seen}");
    assert_eq!(seen["book_ticker"]["model"], "BookTickerResponse", "{seen}");
    assert_eq!(seen["update_ids_increasing"], true, "{seen}");
    assert_eq!(seen["list_id_is_uuid"], true, "{seen}");
    assert_eq!(seen["callbacks_after_unsubscribe"], 0, "{seen}");
    assert!(seen["eth_frames"].as_u64().unwrap() >= 5, "{seen}");
    assert_eq!(
        seen["eth_envelope"],
        json!({"stream": "ethusdt@trade", "s": "ETHUSDT"}),
        "{seen}"
    );
    assert_eq!(seen["list_final"], json!(["ethusdt@trade"]), "{seen}");
    check_not_closed(&server).await;
}

/// @binance/spot: `/binance/stream?streams=btcusdt@trade` (permessage-deflate offered), then
/// a SUBSCRIBE for that same stream (its map does not know URL streams) and one per helper,
/// each with a 32-hex id, every one answered `result: null` with its id; one UNSUBSCRIBE per
/// stream. The duplicate SUBSCRIBE delivers no trade twice.
async fn node_spot(driver: Driver) {
    let server = demo_server(driver);
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", suite_var("TICKCAST_TEST_BINANCE_NODE_PATH"));
    let seen = run_client(&server, cmd, "spot.cjs").await;
    check_session(&seen, "string", "number", "boolean");
    assert_eq!(seen["duplicate_trade_ids"], 0, "{seen}");
    assert_eq!(seen["combined"], true, "{seen}");
    assert_eq!(seen["extensions"], "permessage-deflate", "{seen}");
    assert_eq!(
        seen["sdk_requests"],
        json!([
            ["SUBSCRIBE", ["btcusdt@trade"]],
            ["SUBSCRIBE", ["btcusdt@bookTicker"]],
            ["UNSUBSCRIBE", ["btcusdt@trade"]],
            ["UNSUBSCRIBE", ["btcusdt@bookTicker"]],
            ["SUBSCRIBE", ["ethusdt@trade"]],
        ]),
        "{seen}"
    );
    assert_eq!(seen["sdk_ids"], 5, "{seen}");
    assert_eq!(seen["sdk_replies"], 5, "{seen}");
    assert!(seen["eth_trades"].as_u64().unwrap() >= 5, "{seen}");
    assert_eq!(seen["eth_symbols"], json!(["ETHUSDT"]), "{seen}");
    assert_eq!(seen["list_final"], json!(["ethusdt@trade"]), "{seen}");
    check_not_closed(&server).await;
}

fn binance_url(server: &Server, path: &str) -> String {
    format!("ws://{}/binance{path}", server.addr)
}

/// A connection to `/binance<path>` (no welcome: Binance's connections just stream).
async fn open(server: &Server, path: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(DEADLINE, connect_async(binance_url(server, path)))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("upgrade to /binance{path}: {e}"));
    ws
}

/// The HTTP status an upgrade to `/binance<path>` is refused with.
async fn refusal(server: &Server, path: &str) -> u16 {
    match tokio::time::timeout(DEADLINE, connect_async(binance_url(server, path)))
        .await
        .expect("connect timed out")
    {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Ok(_) => panic!("/binance{path} was upgraded; want a refusal"),
        Err(e) => panic!("/binance{path}: {e}"),
    }
}

/// The next text message as sent (pings and pongs skipped).
async fn next_text(ws: &mut Ws) -> String {
    recv_text(ws).await
}

/// Sends request `req` and returns the next text message: its reply, on a connection with no
/// data in flight.
async fn ask(ws: &mut Ws, req: &str) -> String {
    ws.send(Message::text(req)).await.unwrap();
    next_text(ws).await
}

/// `ask`, the reply parsed.
async fn ask_json(ws: &mut Ws, req: Value) -> Value {
    let reply = ask(ws, &req.to_string()).await;
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

async fn list(ws: &mut Ws) -> Value {
    let reply = ask_json(ws, json!({"method": "LIST_SUBSCRIPTIONS", "id": 424242})).await;
    assert_eq!(reply["id"], 424242, "{reply}");
    reply["result"].clone()
}

/// `SUBSCRIBE` `streams`, answered `{"result":null,"id":<id>}`. Once answered, the streams
/// are subscribed on every shard (also streams the URL named, which are not answered): a
/// publish after it reaches the connection.
async fn subscribe_streams(ws: &mut Ws, id: u64, streams: &[&str]) {
    let req = json!({"method": "SUBSCRIBE", "params": streams, "id": id});
    let reply = ask(ws, &req.to_string()).await;
    assert_eq!(reply, format!(r#"{{"result":null,"id":{id}}}"#));
}

/// `POST /v1/publish` of `data` (JSON text, kept as written) to `topic`.
async fn publish(server: &Server, topic: &str, data: &str) {
    let body = format!(r#"{{"topic":"{topic}","data":{data}}}"#);
    let (status, answer) = server.http("POST", "/v1/publish", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// The combined-stream frame of `data` on `stream`.
fn combined_frame(stream: &str, data: &str) -> String {
    format!(r#"{{"stream":"{stream}","data":{data}}}"#)
}

/// Raw frames are the published data byte for byte, combined frames wrap it with the stream
/// name as the client spelled it; a SUBSCRIBE for a stream the URL already named is answered
/// and delivers nothing twice; `SET_PROPERTY combined` switches the format mid-stream and
/// `GET_PROPERTY` reports it; `%40` in a URL is `@`.
async fn raw_and_combined(driver: Driver) {
    let server = Server::start(driver, LENIENT, &[]);
    let mut raw = open(&server, "/ws/btcusdt%40trade").await;
    subscribe_streams(&mut raw, 1, &["btcusdt@trade"]).await;
    assert_eq!(list(&mut raw).await, json!(["btcusdt@trade"]));
    let get = r#"{"method":"GET_PROPERTY","params":["combined"],"id":3}"#;
    assert_eq!(ask(&mut raw, get).await, r#"{"result":false,"id":3}"#);

    let mut combined = open(&server, "/stream?streams=btcusdt@trade/bnbusdt@kline_1m").await;
    // Both URL streams again: the reply waits until each is subscribed on every shard.
    subscribe_streams(&mut combined, 4, &["btcusdt@trade", "bnbusdt@kline_1m"]).await;
    assert_eq!(
        list(&mut combined).await,
        json!(["btcusdt@trade", "bnbusdt@kline_1m"])
    );
    assert_eq!(ask(&mut combined, get).await, r#"{"result":true,"id":3}"#);

    // A kline: the stream name comes from the templates (`{sym}@kline_{i}`).
    let kline = r#"{"e":"kline","E":1712345678901,"s":"BNBUSDT","k":{"t":1712345640000,"i":"1m","o":"600.1","c":"600.2","x":false}}"#;
    publish(&server, "kline.BNBUSDT.1m", kline).await;
    assert_eq!(
        next_text(&mut combined).await,
        combined_frame("bnbusdt@kline_1m", kline)
    );

    // Published data byte for byte: spacing, escapes, non-ASCII, 2^53 + 1 (no f64 holds it).
    let datas = [
        r#"{"e":"trade","E":1712345678901,"s":"BTCUSDT","t":1,"p":"64000.01000000","q":"0.50000000","T":1712345678901,"m":true,"M":true}"#,
        r#"{ "e" : "trade", "t" : 2, "note": "caf\u00e9 \"q\" é" }"#,
        r#"{"t":3,"big":9007199254740993,"a":[1, 2.50, -3e-7]}"#,
        r#"{"t":"end"}"#,
    ];
    for d in datas {
        publish(&server, "trades.BTCUSDT", d).await;
    }
    for d in datas {
        assert_eq!(next_text(&mut raw).await, d);
        assert_eq!(
            next_text(&mut combined).await,
            combined_frame("btcusdt@trade", d)
        );
    }
    // Nothing twice: a duplicate would have been queued with its original, before this reply.
    assert_eq!(list(&mut raw).await, json!(["btcusdt@trade"]));
    assert_eq!(
        list(&mut combined).await,
        json!(["btcusdt@trade", "bnbusdt@kline_1m"])
    );

    // The raw connection turns combined, the combined one raw.
    let set_on = r#"{"method":"SET_PROPERTY","params":["combined",true],"id":"a1b2c3d4e5f60718293a4b5c6d7e8f90"}"#;
    assert_eq!(
        ask(&mut raw, set_on).await,
        r#"{"result":null,"id":"a1b2c3d4e5f60718293a4b5c6d7e8f90"}"#
    );
    assert_eq!(ask(&mut raw, get).await, r#"{"result":true,"id":3}"#);
    let set_off = r#"{"method":"SET_PROPERTY","params":["combined",false],"id":9}"#;
    assert_eq!(
        ask(&mut combined, set_off).await,
        r#"{"result":null,"id":9}"#
    );
    assert_eq!(ask(&mut combined, get).await, r#"{"result":false,"id":3}"#);
    let d = r#"{"t":5,"p":"64000.05"}"#;
    publish(&server, "trades.BTCUSDT", d).await;
    assert_eq!(
        next_text(&mut raw).await,
        combined_frame("btcusdt@trade", d)
    );
    assert_eq!(next_text(&mut combined).await, d);
    // And back.
    let set_off_raw = r#"{"method":"SET_PROPERTY","params":["combined",false],"id":10}"#;
    assert_eq!(
        ask(&mut raw, set_off_raw).await,
        r#"{"result":null,"id":10}"#
    );
    let d = r#"{"t":6}"#;
    publish(&server, "trades.BTCUSDT", d).await;
    assert_eq!(next_text(&mut raw).await, d);
    assert_eq!(next_text(&mut combined).await, d);
}

/// Ids come back with their JSON type and text: integers (a millisecond timestamp, i64::MAX,
/// negative), the Python SDK's uuid, the Node SDK's 32 hex characters, `null`, escapes, the
/// same id twice; on errors too. A request without an id is refused (`id: null`).
async fn ids_echoed_exactly(driver: Driver) {
    let server = Server::start(driver, LENIENT, &[]);
    let mut ws = open(&server, "/ws").await;
    let ids = [
        "1",
        "1712345678901",
        "9223372036854775807",
        "-7",
        "0",
        r#""0b5c2f3e-8a1d-4c6b-9e7f-2d3c4b5a6e7f""#,
        r#""a1b2c3d4e5f60718293a4b5c6d7e8f90""#,
        r#""caf\u00e9 \"x\"""#,
        "null",
    ];
    for id in ids {
        let req = format!(r#"{{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":{id}}}"#);
        assert_eq!(
            ask(&mut ws, &req).await,
            format!(r#"{{"result":null,"id":{id}}}"#)
        );
        let req = format!(r#"{{"method":"GET_PROPERTY","params":["combined"],"id":{id}}}"#);
        assert_eq!(
            ask(&mut ws, &req).await,
            format!(r#"{{"result":false,"id":{id}}}"#)
        );
        let req = format!(r#"{{"method":"NO_SUCH","id":{id}}}"#);
        let reply: Value = serde_json::from_str(&ask(&mut ws, &req).await).unwrap();
        assert_eq!(reply["error"]["code"], 2, "{reply}");
        assert_eq!(
            reply["id"],
            serde_json::from_str::<Value>(id).unwrap(),
            "{reply}"
        );
    }
    // Python's json.dumps spacing, as binance-sdk-spot sends it.
    let req = r#"{"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": "fa60ceee-99fb-4d23-a40f-b9bb07f0888b"}"#;
    assert_eq!(
        ask(&mut ws, req).await,
        r#"{"result":null,"id":"fa60ceee-99fb-4d23-a40f-b9bb07f0888b"}"#
    );
    // The same id twice, pipelined (the legacy Python connector's millisecond ids repeat).
    let req = r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1712345678901}"#;
    let req2 = r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":1712345678901}"#;
    ws.send(Message::text(req)).await.unwrap();
    ws.send(Message::text(req2)).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            next_text(&mut ws).await,
            r#"{"result":null,"id":1712345678901}"#
        );
    }
    assert_eq!(
        list(&mut ws).await,
        json!(["btcusdt@trade", "btcusdt@bookTicker"])
    );
    // Pipelined requests answered in order.
    for i in 0..5 {
        let req = json!({"method": "GET_PROPERTY", "params": ["combined"], "id": i});
        ws.send(Message::text(req.to_string())).await.unwrap();
    }
    for i in 0..5 {
        assert_eq!(
            next_text(&mut ws).await,
            format!(r#"{{"result":false,"id":{i}}}"#)
        );
    }
    // No id: refused, `id: null`.
    let reply = ask_json(&mut ws, json!({"method": "LIST_SUBSCRIPTIONS"})).await;
    assert_eq!(reply["error"]["code"], 2, "{reply}");
    assert_eq!(reply["id"], Value::Null, "{reply}");
    // A string of 36 characters (a UUID's length) is the longest id echoed, as on Binance;
    // one more is refused and not echoed.
    let long = "x".repeat(36);
    let reply = ask_json(&mut ws, json!({"method": "LIST_SUBSCRIPTIONS", "id": long})).await;
    assert_eq!(reply["id"], json!(long), "{reply}");
    let longer = "x".repeat(37);
    let reply = ask_json(
        &mut ws,
        json!({"method": "LIST_SUBSCRIPTIONS", "id": longer}),
    )
    .await;
    assert_eq!(reply["error"]["code"], 2, "{reply}");
    assert_eq!(reply["id"], Value::Null, "{reply}");
}

/// `LIST_SUBSCRIPTIONS` gives the URL's streams then the subscribed ones, in subscription
/// order, and keeps that order across an `UNSUBSCRIBE`; unsubscribing unknown or unheld
/// names is harmless.
async fn list_subscriptions_in_order(driver: Driver) {
    let server = Server::start(driver, LENIENT, &[]);
    let mut ws = open(&server, "/stream?streams=btcusdt@trade/ethusdt@bookTicker").await;
    subscribe_streams(
        &mut ws,
        1,
        &["solusdt@depth", "bnbusdt@kline_1m", "xrpusdt@ticker"],
    )
    .await;
    assert_eq!(
        list(&mut ws).await,
        json!([
            "btcusdt@trade",
            "ethusdt@bookTicker",
            "solusdt@depth",
            "bnbusdt@kline_1m",
            "xrpusdt@ticker"
        ])
    );
    let unsub = json!({"method": "UNSUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": 2});
    assert_eq!(
        ask_json(&mut ws, unsub).await,
        json!({"result": null, "id": 2})
    );
    assert_eq!(
        list(&mut ws).await,
        json!([
            "btcusdt@trade",
            "solusdt@depth",
            "bnbusdt@kline_1m",
            "xrpusdt@ticker"
        ])
    );
    subscribe_streams(&mut ws, 3, &["ethusdt@bookTicker", "ethusdt@bookTicker"]).await;
    let unsub = json!({"method": "UNSUBSCRIBE", "params": ["adausdt@trade", "nonsense", "btcusdt@trade"], "id": 4});
    assert_eq!(
        ask_json(&mut ws, unsub).await,
        json!({"result": null, "id": 4})
    );
    assert_eq!(
        list(&mut ws).await,
        json!([
            "solusdt@depth",
            "bnbusdt@kline_1m",
            "xrpusdt@ticker",
            "ethusdt@bookTicker"
        ])
    );
}

/// Every stream path opens, with the streams it names (each once) and the format it implies:
/// `/ws`, `/ws/`, `/stream`, `/stream?streams=` (the Node SDK's first connect), `//stream` (a
/// connector's base URL given with a trailing slash), several raw streams in the path, other
/// query parameters beside `streams`, and URL-encoded names: `%40` for `@`, and a whole
/// `streams` value encoded (`%2F` between names), as `urlencode`/`URLSearchParams` write it.
async fn stream_paths(driver: Driver) {
    let server = Server::start(driver, LENIENT, &[]);
    for (path, combined, streams) in [
        ("/ws", false, json!([])),
        ("/ws/", false, json!([])),
        ("/stream", true, json!([])),
        ("/stream?streams=", true, json!([])),
        ("//stream", true, json!([])),
        (
            "/ws/btcusdt@trade/ethusdt@trade/btcusdt@trade",
            false,
            json!(["btcusdt@trade", "ethusdt@trade"]),
        ),
        (
            "/stream?streams=btcusdt@trade/bnbusdt@kline_1M/btcusdt@bookTicker",
            true,
            json!(["btcusdt@trade", "bnbusdt@kline_1M", "btcusdt@bookTicker"]),
        ),
        (
            "/stream?timeUnit=millisecond&streams=btcusdt%40trade/ethusdt@trade",
            true,
            json!(["btcusdt@trade", "ethusdt@trade"]),
        ),
        (
            "/stream?streams=btcusdt%40trade%2Fethusdt%40trade",
            true,
            json!(["btcusdt@trade", "ethusdt@trade"]),
        ),
    ] {
        let mut ws = open(&server, path).await;
        assert_eq!(list(&mut ws).await, streams, "{path}");
        let get = json!({"method": "GET_PROPERTY", "params": ["combined"], "id": 1});
        assert_eq!(ask_json(&mut ws, get).await["result"], combined, "{path}");
    }
    // A well-formed name no template maps (Binance's aggTrade, a depth with an update speed)
    // is accepted as Binance accepts a symbol it has no data for, kept for LIST, and in the
    // URL a connector sends again on reconnect; it is the topic `binance.<name>`, so what is
    // published there reaches it.
    let mut ws = open(
        &server,
        "/stream?streams=btcusdt@aggTrade/btcusdt@depth@100ms",
    )
    .await;
    assert_eq!(
        list(&mut ws).await,
        json!(["btcusdt@aggTrade", "btcusdt@depth@100ms"])
    );
    let body = r#"{"topic":"binance.btcusdt@aggTrade","data":{"e":"aggTrade","a":7}}"#;
    assert_eq!(server.http("POST", "/v1/publish", Some(body)).await.0, 200);
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","a":7}}"#
    );
}

/// Streams are topics, so the server's permissions hold for them: with anonymous clients
/// allowed `trades.>` only, a SUBSCRIBE naming a book ticker is refused whole (code 2, the
/// permitted trade stream beside it not subscribed either), and a URL naming one is upgraded
/// then closed 4003. With `binance.enabled = false` the paths are not found.
async fn permissions_hold_for_streams(driver: Driver) {
    let mut env = LENIENT.to_vec();
    env.push(("TICKCAST_AUTH__ANONYMOUS_SUBS", "[\"trades.>\"]"));
    let server = Server::start(driver, &env, &[]);
    let mut ws = open(&server, "/ws").await;
    let req = r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}"#;
    check_error(&ask(&mut ws, req).await, 2, &json!(1), req);
    assert_eq!(list(&mut ws).await, json!([]));
    subscribe_streams(&mut ws, 2, &["btcusdt@trade"]).await;
    assert_eq!(list(&mut ws).await, json!(["btcusdt@trade"]));

    let mut forbidden = open(&server, "/stream?streams=btcusdt@trade/btcusdt@bookTicker").await;
    let close = recv_close(&mut forbidden).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4003, "{close:?}");

    let off = Server::start(driver, &[("TICKCAST_BINANCE__ENABLED", "false")], &[]);
    assert_eq!(refusal(&off, "/ws/btcusdt@trade").await, 404);
    assert_eq!(refusal(&off, "/stream").await, 404);
}

/// Encode once per format: 50 combined and 20 raw subscribers of one topic (half by URL,
/// half by SUBSCRIBE, on both shards) and one protocol v1 subscriber; K publishes cost
/// exactly K serializations in each format, and a topic no Binance client holds costs none
/// in theirs.
async fn one_serialization_per_format(driver: Driver) {
    const COMBINED: usize = 50;
    const RAW: usize = 20;
    const K: usize = 20;
    const OTHER: usize = 5;
    let server = Server::start(driver, &[], &[]);
    let mut combined = Vec::new();
    let mut raw = Vec::new();
    for i in 0..COMBINED + RAW {
        let path = match (i < COMBINED, i % 2 == 0) {
            (true, true) => "/stream?streams=btcusdt@trade",
            (true, false) => "/stream",
            (false, true) => "/ws/btcusdt@trade",
            (false, false) => "/ws",
        };
        let mut ws = open(&server, path).await;
        subscribe_streams(&mut ws, i as u64, &["btcusdt@trade"]).await;
        if i < COMBINED {
            combined.push(ws);
        } else {
            raw.push(ws);
        }
    }
    let (mut v1, _) = connect(&server).await;
    subscribe(&mut v1, 1, &["trades.BTCUSDT"]).await;

    let metrics = server.scrape().await;
    let ser = |text: &str, format: &str| {
        sum_metric(
            text,
            "tickcast_serializations_total",
            Some(("format", format)),
        )
    };
    let before: Vec<f64> = ["v1", "centrifugo", "binance_raw", "binance_combined"]
        .iter()
        .map(|f| ser(&metrics, f))
        .collect();
    let deliveries = sum_metric(&metrics, "tickcast_deliveries_total", None);

    let data = |k: usize| format!(r#"{{"e":"trade","s":"BTCUSDT","t":{k},"p":"64000.{k:02}"}}"#);
    for k in 0..K {
        publish(&server, "trades.BTCUSDT", &data(k)).await;
    }
    for k in 0..OTHER {
        publish(&server, "trades.ETHUSDT", &data(k)).await;
    }
    for ws in &mut combined {
        for k in 0..K {
            assert_eq!(
                next_text(ws).await,
                combined_frame("btcusdt@trade", &data(k))
            );
        }
    }
    for ws in &mut raw {
        for k in 0..K {
            assert_eq!(next_text(ws).await, data(k));
        }
    }
    for k in 0..K {
        let frame = recv_json(&mut v1).await;
        assert_eq!(frame["data"]["t"], k, "{frame}");
    }
    // Every shard has written (and counted) all it delivered: its encodes came before.
    let delivered = deliveries + ((COMBINED + RAW + 1) * K) as f64;
    server
        .wait_metric("tickcast_deliveries_total", delivered)
        .await;
    let metrics = server.scrape().await;
    let after: Vec<f64> = ["v1", "centrifugo", "binance_raw", "binance_combined"]
        .iter()
        .map(|f| ser(&metrics, f))
        .collect();
    let encoded: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        encoded,
        vec![(K + OTHER) as f64, 0.0, K as f64, K as f64],
        "serializations by format (v1, centrifugo, binance_raw, binance_combined)"
    );
}

/// An error reply: Binance's shape `{"error":{"code","msg"},"id"}` and nothing else.
fn check_error(reply: &str, code: u64, id: &Value, req: &str) {
    let v: Value = serde_json::from_str(reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
    let obj = v.as_object().unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(obj.len(), 2, "{req} -> {reply}");
    assert_eq!(v["error"]["code"], code, "{req} -> {reply}");
    assert_eq!(v["error"].as_object().unwrap().len(), 2, "{reply}");
    let msg = v["error"]["msg"].as_str().unwrap();
    assert!(!msg.is_empty() && msg.len() < 400, "{req} -> {reply}");
    assert_eq!(&v["id"], id, "{req} -> {reply}");
}

/// Hostile input on one connection: every malformed request gets Binance's error code (3
/// for JSON that does not parse, 2 for a bad request, 1 and 0 for bad properties), with the
/// id when it could be read; no refused request subscribes anything, not even in part; the
/// stream limit (1024) holds per request and per connection; bad stream paths are refused at
/// the upgrade (400); a binary frame is code 3. The connection works after, and so does the
/// server.
async fn hostile_input(driver: Driver) {
    let mut env = LENIENT.to_vec();
    env.push(("TICKCAST_LIMITS__HTTP_HEADER_BYTES_MAX", "65536"));
    let server = Server::start(driver, &env, &[]);
    let mut ws = open(&server, "/ws").await;
    let deep = format!(
        r#"{{"method":"SUBSCRIBE","params":{}{},"id":1}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let long_method = format!(r#"{{"method":"{}","id":2}}"#, "X".repeat(10_000));
    // Ids over Binance's bounds (a 64-bit integer, 36 characters): refused, not echoed.
    let huge_id = format!(
        r#"{{"method":"LIST_SUBSCRIPTIONS","id":"{}"}}"#,
        "i".repeat(4096)
    );
    let huge_num = format!(
        r#"{{"method":"LIST_SUBSCRIPTIONS","id":{}}}"#,
        "9".repeat(200)
    );
    let cases: Vec<(&str, u64, Value)> = vec![
        ("{not json", 3, Value::Null),
        ("", 3, Value::Null),
        ("   ", 3, Value::Null),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1"#,
            3,
            Value::Null,
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1} trailing"#,
            3,
            Value::Null,
        ),
        // Valid JSON nested past the parser's depth: a bad request, not a crash.
        (deep.as_str(), 2, json!(1)),
        (long_method.as_str(), 2, json!(2)),
        (huge_id.as_str(), 2, Value::Null),
        (huge_num.as_str(), 2, Value::Null),
        (r#"{"method":"FOO","id":1}"#, 2, json!(1)),
        (
            r#"{"method":"subscribe","params":["btcusdt@trade"],"id":2}"#,
            2,
            json!(2),
        ),
        (r#"{"method":7,"id":3}"#, 2, json!(3)),
        (r#"{"params":["btcusdt@trade"],"id":4}"#, 2, json!(4)),
        (
            r#"{"method":"SUBSCRIBE","params":[1,2],"id":5}"#,
            2,
            json!(5),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":[null],"id":6}"#,
            2,
            json!(6),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade",["ethusdt@trade"]],"id":7}"#,
            2,
            json!(7),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":"btcusdt@trade","id":8}"#,
            2,
            json!(8),
        ),
        (
            r#"{"method":"UNSUBSCRIBE","params":[{}],"id":9}"#,
            2,
            json!(9),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"]}"#,
            2,
            Value::Null,
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":true}"#,
            2,
            Value::Null,
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":{"a":1}}"#,
            2,
            Value::Null,
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":[1]}"#,
            2,
            Value::Null,
        ),
        ("[1,2]", 2, Value::Null),
        ("null", 2, Value::Null),
        ("7", 2, Value::Null),
        (r#""SUBSCRIBE""#, 2, Value::Null),
        (
            r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":10}"#,
            1,
            json!(10),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined",1],"id":11}"#,
            1,
            json!(11),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["other",true],"id":12}"#,
            0,
            json!(12),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined"],"id":13}"#,
            2,
            json!(13),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined",true,1],"id":14}"#,
            2,
            json!(14),
        ),
        (
            r#"{"method":"GET_PROPERTY","params":[],"id":15}"#,
            2,
            json!(15),
        ),
        (
            r#"{"method":"GET_PROPERTY","params":["combined","x"],"id":16}"#,
            2,
            json!(16),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["BTCUSDT@trade"],"id":17}"#,
            2,
            json!(17),
        ),
        // One unknown stream refuses the whole request.
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","BTCUSDT@trade"],"id":18}"#,
            2,
            json!(18),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["ethusdt@trade","btc usdt@trade"],"id":19}"#,
            2,
            json!(19),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["ethusdt@trade",""],"id":20}"#,
            2,
            json!(20),
        ),
    ];
    for (req, code, id) in &cases {
        let reply = ask(&mut ws, req).await;
        check_error(&reply, *code, id, &req[..req.len().min(120)]);
    }
    // A refused request subscribed nothing, and left the format alone.
    assert_eq!(list(&mut ws).await, json!([]));
    let get = json!({"method": "GET_PROPERTY", "params": ["combined"], "id": 1});
    assert_eq!(ask_json(&mut ws, get).await["result"], false);

    // A binary frame: code 3, the connection stays.
    ws.send(Message::binary(
        br#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#.to_vec(),
    ))
    .await
    .unwrap();
    check_error(&next_text(&mut ws).await, 3, &Value::Null, "binary");

    // 1025 streams in one request: refused whole; 1024 fit; the 1025th then does not, while
    // one already held does.
    let names: Vec<String> = (0..1025).map(|i| format!("s{i}usdt@trade")).collect();
    let req = json!({"method": "SUBSCRIBE", "params": names, "id": 30}).to_string();
    check_error(&ask(&mut ws, &req).await, 2, &json!(30), "1025 streams");
    assert_eq!(list(&mut ws).await, json!([]));
    let req = json!({"method": "SUBSCRIBE", "params": names[..1024], "id": 31}).to_string();
    assert_eq!(ask(&mut ws, &req).await, r#"{"result":null,"id":31}"#);
    assert!(
        list(&mut ws).await == json!(names[..1024]),
        "1024 streams held"
    );
    let req = json!({"method": "SUBSCRIBE", "params": [names[1024]], "id": 32}).to_string();
    check_error(&ask(&mut ws, &req).await, 2, &json!(32), "stream 1025");
    subscribe_streams(&mut ws, 33, &[&names[0]]).await;
    let req = json!({"method": "UNSUBSCRIBE", "params": names, "id": 34}).to_string();
    check_error(&ask(&mut ws, &req).await, 2, &json!(34), "unsubscribe 1025");
    assert!(
        list(&mut ws).await == json!(names[..1024]),
        "1024 streams held"
    );
    let req = json!({"method": "UNSUBSCRIBE", "params": names[..1024], "id": 35}).to_string();
    assert_eq!(ask(&mut ws, &req).await, r#"{"result":null,"id":35}"#);
    assert_eq!(list(&mut ws).await, json!([]));

    // Bad stream paths: refused at the upgrade.
    let many = names.join("/");
    for path in [
        "/ws/btcusdt@trade.x".to_string(),
        "/ws/BTCUSDT@trade".to_string(),
        "/ws/btcusdt@trade/!ticker@arr".to_string(),
        "/stream?streams=btcusdt@trade/BTCUSDT@trade".to_string(),
        "/ws/%FF%FE@trade".to_string(),
        format!("/ws/{many}"),
        format!("/stream?streams={many}"),
    ] {
        assert_eq!(
            refusal(&server, &path).await,
            400,
            "{}",
            &path[..path.len().min(80)]
        );
    }
    // 1024 streams in the URL are fine.
    let mut full = open(
        &server,
        &format!("/stream?streams={}", names[..1024].join("/")),
    )
    .await;
    assert!(
        list(&mut full).await == json!(names[..1024]),
        "1024 streams of the URL"
    );
    let req = json!({"method": "SUBSCRIBE", "params": [names[1024]], "id": 36}).to_string();
    check_error(
        &ask(&mut full, &req).await,
        2,
        &json!(36),
        "stream 1025 after the URL's",
    );
    assert_eq!(refusal(&server, "/nosuch").await, 404);
    assert_eq!(refusal(&server, "/wsx/btcusdt@trade").await, 404);

    // The first connection still works: subscribe, receive.
    subscribe_streams(&mut ws, 40, &["btcusdt@trade"]).await;
    let d = r#"{"t":1}"#;
    publish(&server, "trades.BTCUSDT", d).await;
    assert_eq!(next_text(&mut ws).await, d);
    let (status, _) = server.http("GET", "/health", None).await;
    assert_eq!(status, 200);
}

/// Binance's message rate (5/s, burst 10): a client flooding requests is closed at once with
/// 1008 `too many requests`, and so is one flooding pings; pongs are free. Another client of
/// the same topic on the same server gets every message published meanwhile, in order.
async fn rate_limit_closes_only_the_flooder(driver: Driver) {
    const K: u64 = 40;
    let server = Server::start(driver, &[], &[]);
    let mut victim = open(&server, "/ws/btcusdt@trade").await;
    subscribe_streams(&mut victim, 1, &["btcusdt@trade"]).await;
    let mut flooder = open(&server, "/stream?streams=btcusdt@trade").await;
    subscribe_streams(&mut flooder, 1, &["btcusdt@trade"]).await;

    let publisher = {
        let addr = server.addr;
        tokio::spawn(async move {
            let server = Server::attach(addr);
            for t in 0..K {
                publish(&server, "trades.BTCUSDT", &format!(r#"{{"t":{t}}}"#)).await;
            }
        })
    };
    // 30 requests at once: well over the burst of 10 (the send fails once closed).
    for i in 0..30 {
        let req = json!({"method": "LIST_SUBSCRIPTIONS", "id": i}).to_string();
        if flooder.send(Message::text(req)).await.is_err() {
            break;
        }
    }
    let close = recv_close(&mut flooder).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "too many requests");

    for t in 0..K {
        assert_eq!(next_text(&mut victim).await, format!(r#"{{"t":{t}}}"#));
    }
    publisher.await.unwrap();
    assert_eq!(list(&mut victim).await, json!(["btcusdt@trade"]));

    // Pings count; pongs do not.
    let mut pinger = open(&server, "/ws").await;
    for _ in 0..30 {
        if pinger
            .send(Message::Ping(b"p".to_vec().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let close = recv_close(&mut pinger).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    let mut ponger = open(&server, "/ws").await;
    for _ in 0..50 {
        ponger
            .send(Message::Pong(b"p".to_vec().into()))
            .await
            .unwrap();
    }
    assert_eq!(list(&mut ponger).await, json!([]));

    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "rate_limited",
            2.0,
        )
        .await;
    let (status, _) = server.http("GET", "/health", None).await;
    assert_eq!(status, 200);
}

/// Binance's keep-alive, shortened: a client that never answers the server's pings (a raw
/// socket: WebSocket libraries pong by themselves) is pinged, then closed 1001 `idle timeout`
/// once silent for `binance.pong_timeout_s` after a ping.
async fn silent_client_is_dropped(driver: Driver) {
    let server = Server::start(
        driver,
        &[
            ("TICKCAST_BINANCE__PING_INTERVAL_S", "1"),
            ("TICKCAST_BINANCE__PONG_TIMEOUT_S", "2"),
        ],
        &[],
    );
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"GET /binance/ws/btcusdt@trade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let data = read_to_close(&mut s).await;
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert!(data.starts_with(b"HTTP/1.1 101"), "{data:?}");
    // The frames after the head: pings, then the close.
    let mut frames = Vec::new();
    let mut i = head_end;
    while i + 2 <= data.len() {
        let (hdr, len) = server_frame_lens(&data[i..]).expect("a whole frame header");
        frames.push((data[i] & 0x0f, data[i + hdr..i + hdr + len].to_vec()));
        i += hdr + len;
    }
    let (last_op, close) = frames.last().expect("frames").clone();
    assert_eq!(last_op, 0x8, "{frames:?}");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);
    assert_eq!(&close[2..], b"idle timeout");
    assert!(
        frames.iter().any(|(op, _)| *op == 0x9),
        "pinged first: {frames:?}"
    );
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "idle_timeout",
            1.0,
        )
        .await;
}
