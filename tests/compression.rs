//! The Autobahn|Testsuite compression cases (12.* and 13.*, permessage-deflate) as far as a real
//! client library can run them against the `/echo` route: the pinned Python `websockets`
//! (tests/clients/compression_echo.py), unmodified, with its own DEFLATE (zlib) both ways.
//!
//! Why not Autobahn itself: the only installable runner, kosoku 0.1.0, hands compressed
//! messages to its case code as `str` and every 12/13 case errors ("Strings must be encoded
//! before hashing") before judging the server; the original autobahntestsuite needs Python 2.
//! The script follows Autobahn's case12_x_x.py (its MSG_SIZES table, its payload kinds, type,
//! length and SHA-1 compared) with generated payloads and fewer messages; see the script's
//! docstring for the differences. The server's counters prove that compression really ran
//! both ways: every message the client compressed was inflated, every echo over
//! `deflate.min_bytes` was compressed once.
//!
//! tests/run.sh passes the pinned interpreter as `TICKCAST_TEST_PYTHON`; run alone,
//! `cargo test --test compression` needs it set.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::{Value, json};

both_drivers!(
    autobahn_12_payloads_echo_intact,
    autobahn_13_offers_agreed_and_echoed,
);

/// The response to every offer the server accepts (RFC 7692 §7.1: it always asks both sides
/// for no context takeover, docs/PROTOCOL.md#compression), before `server_max_window_bits`.
const ACCEPTED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The script bounds itself to 120 s; this bounds the script.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(150);

/// Runs tests/clients/compression_echo.py with `args` under the suite's pinned Python and
/// returns the JSON line it prints. Fails if it does not finish within `SCRIPT_DEADLINE`.
async fn run_script(args: &[&str]) -> Value {
    let python = std::env::var("TICKCAST_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "TICKCAST_TEST_PYTHON is not set: run the suite with `bash tests/run.sh`, which \
             installs the pinned Python websockets under target/venv and sets it"
        )
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/compression_echo.py"
    );
    let child = Command::new(python)
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python client");
    let pid = child.id();
    let waited = tokio::time::timeout(
        SCRIPT_DEADLINE,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let Ok(out) = waited else {
        // Not reaped yet (the blocking wait still holds it), so the pid is still our child's.
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("child pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        panic!("the Python client did not finish within {SCRIPT_DEADLINE:?}");
    };
    let out = out.unwrap().expect("wait for the Python client");
    assert!(
        out.status.success(),
        "the Python client failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the Python client printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn echo_url(server: &Server) -> String {
    format!("ws://{}/echo", server.addr)
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {key} in {v}"))
}

/// Every size row of a run echoed intact (the first failing one is named).
fn assert_rows_ok(rows: &Value, want: usize, what: &str) {
    let rows = rows.as_array().expect("rows");
    for row in rows {
        assert!(row["error"].is_null(), "{what}: {row}");
        assert!(num(row, "count") >= 3, "{what}: {row}");
    }
    assert_eq!(rows.len(), want, "{what}: every size ran");
}

/// One connection's counts: the client compressed every message it sent (websockets does once
/// the extension is agreed), and no echo under `deflate.min_bytes` came compressed.
fn assert_client_compressed_all(stats: &Value, what: &str) {
    assert_eq!(
        num(stats, "sent_compressed"),
        num(stats, "sent"),
        "{what}: {stats}"
    );
    assert_eq!(num(stats, "compressed_under_min"), 0, "{what}: {stats}");
    assert_eq!(
        stats["window_errors"],
        json!([]),
        "{what}: server_max_window_bits broken"
    );
}

/// The server inflated exactly the messages the client compressed, and compressed exactly
/// once each echo at or over `deflate.min_bytes` on a deflate connection (compressing a frame
/// that then does not shrink counts too). Counters are exact at a scrape (every shard flushes
/// first) and every echo was read before, so nothing is still in flight.
async fn assert_server_counts(server: &Server, inflated: u64, compressed: u64) {
    assert!(inflated > 0 && compressed > 0, "nothing compressed");
    let inflations = server.metric("tickcast_inflations_total").await;
    assert_eq!(inflations, inflated as f64, "tickcast_inflations_total");
    let compressions = server.metric("tickcast_compressions_total").await;
    assert_eq!(
        compressions, compressed as f64,
        "tickcast_compressions_total"
    );
}

/// 12.x: Autobahn's payload kinds times its MSG_SIZES table (16 B to 128 KiB, and 8 KiB to
/// 128 KiB auto-fragmented into 256 B to 32 KiB frames), the default offer, each message
/// echoed back with the same type, length and SHA-1. The echo route's message limit is
/// `limits.echo_message_bytes_max` (16 MiB), far above 128 KiB; the payloads compress 1 to 8
/// times, within `deflate.inflate_ratio_max` (100).
async fn autobahn_12_payloads_echo_intact(driver: Driver) {
    let server = Server::start(driver, &[], &["--echo"]);
    let seen = run_script(&["payloads", &echo_url(&server)]).await;
    assert_eq!(seen["extensions"], ACCEPTED, "{seen}");
    // 5 kinds x the 18 rows of MSG_SIZES.
    assert_rows_ok(&seen["rows"], 5 * 18, "12.x");
    let (mut inflated, mut compressed) = (0, 0);
    for (kind, stats) in seen["by_kind"].as_object().expect("by_kind") {
        assert_client_compressed_all(stats, kind);
        let over_min = num(stats, "echo_over_min");
        if kind == "random" {
            // Incompressible: tried, did not shrink, sent plain (RFC 7692 §6.1 allows it).
            assert_eq!(num(stats, "echo_compressed"), 0, "{kind}: {stats}");
        } else {
            assert_eq!(num(stats, "echo_compressed"), over_min, "{kind}: {stats}");
        }
        inflated += num(stats, "sent_compressed");
        compressed += over_min;
    }
    assert_eq!(seen["by_kind"].as_object().unwrap().len(), 5);
    assert_server_counts(&server, inflated, compressed).await;
}

/// A 13.x offer: its name, its elements (websockets' `ClientPerMessageDeflateFactory`
/// arguments, one factory per element, in preference order) and the
/// `server_max_window_bits` the server must answer: `None` for no such parameter, and the
/// whole offer declined when `declined`.
struct Offer {
    name: &'static str,
    elements: Value,
    window: Option<u64>,
    declined: bool,
}

fn offer(name: &'static str, elements: Value, window: Option<u64>) -> Offer {
    Offer {
        name,
        elements,
        window,
        declined: false,
    }
}

/// Autobahn's 13.1 to 13.7 (its `PerMessageDeflateOffer()` sends `client_no_context_takeover;
/// client_max_window_bits`, plus `server_no_context_takeover` and `server_max_window_bits=N`
/// as the case asks), then the parameters Autobahn leaves out.
fn offers() -> Vec<Offer> {
    let ab = |snct: bool, smwb: Option<u64>| {
        let mut o = json!({"client_no_context_takeover": true, "client_max_window_bits": true});
        if snct {
            o["server_no_context_takeover"] = json!(true);
        }
        if let Some(bits) = smwb {
            o["server_max_window_bits"] = json!(bits);
        }
        o
    };
    // 8 is declined (zlib cannot keep to a 256-byte window, PROTOCOL.md): Autobahn would
    // mark these UNIMPLEMENTED; here the connection goes on without compression.
    let declined = |name, elements| Offer {
        name,
        elements,
        window: None,
        declined: true,
    };
    vec![
        offer("13.1", json!([ab(false, None)]), None),
        offer("13.2", json!([ab(true, None)]), None),
        declined("13.3", json!([ab(false, Some(8))])),
        offer("13.4", json!([ab(false, Some(15))]), Some(15)),
        declined("13.5", json!([ab(true, Some(8))])),
        offer("13.6", json!([ab(true, Some(15))]), Some(15)),
        // The first is declined, the second (server_no_context_takeover) accepted.
        offer(
            "13.7",
            json!([ab(true, Some(8)), ab(true, None), ab(false, None)]),
            None,
        ),
        offer(
            "websockets default",
            json!([{"client_max_window_bits": true}]),
            None,
        ),
        offer(
            "client_no_context_takeover",
            json!([{"client_no_context_takeover": true}]),
            None,
        ),
        offer(
            "client_max_window_bits=9",
            json!([{"client_max_window_bits": 9}]),
            None,
        ),
        offer(
            "client_max_window_bits=15",
            json!([{"client_max_window_bits": 15}]),
            None,
        ),
        offer(
            "server_max_window_bits=9",
            json!([{"server_max_window_bits": 9}]),
            Some(9),
        ),
        offer(
            "server_no_context_takeover, server_max_window_bits=9",
            json!([{"server_no_context_takeover": true, "server_max_window_bits": 9}]),
            Some(9),
        ),
        offer(
            "all four parameters",
            json!([{"server_no_context_takeover": true, "client_no_context_takeover": true,
                    "server_max_window_bits": 10, "client_max_window_bits": 9}]),
            Some(10),
        ),
        offer(
            "server_max_window_bits=8 then =9",
            json!([{"server_max_window_bits": 8}, {"server_max_window_bits": 9}]),
            Some(9),
        ),
    ]
}

/// The response header the server must send for `o`, and the parameters websockets must then
/// use: both sides without context takeover, the server's window as answered (15 when not),
/// the client's as it offered (RFC 7692 §7.1.2.2: the server's silence leaves the client's
/// own limit).
fn expected(o: &Offer) -> (Value, Value) {
    if o.declined {
        return (Value::Null, Value::Null);
    }
    let response = match o.window {
        Some(bits) => format!("{ACCEPTED}; server_max_window_bits={bits}"),
        None => ACCEPTED.to_string(),
    };
    // The element the server takes: the first it can honour (never one asking for 8).
    let taken = o
        .elements
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["server_max_window_bits"] != 8);
    let client_bits = taken
        .and_then(|e| e["client_max_window_bits"].as_u64())
        .unwrap_or(15);
    let agreed = json!({
        "server_no_context_takeover": true,
        "client_no_context_takeover": true,
        "server_max_window_bits": o.window.unwrap_or(15),
        "client_max_window_bits": client_bits,
    });
    (json!(response), agreed)
}

/// 13.x: each offer on its own connection: the agreed parameters, then JSON messages from 16 B
/// to 128 KiB (some fragmented) echoed intact under them. Where the server agreed to a window
/// of 9 or 10 bits, the script checks every compressed echo against it (websockets does not:
/// zlib resolves distances from its whole output buffer). Then the ratio bound with a
/// real client: an echo of 16 KiB of one character (under the bound's floor) is fine, 64 KiB
/// of it is refused with 1009.
async fn autobahn_13_offers_agreed_and_echoed(driver: Driver) {
    let server = Server::start(driver, &[], &["--echo"]);
    let offers = offers();
    let spec: Vec<Value> = offers.iter().map(|o| json!([o.name, o.elements])).collect();
    let spec = Value::Array(spec).to_string();
    let seen = run_script(&["offers", &echo_url(&server), &spec]).await;
    let rows = seen["offers"].as_array().expect("offers");
    assert_eq!(rows.len(), offers.len());
    let (mut inflated, mut compressed) = (0, 0);
    for (o, row) in offers.iter().zip(rows) {
        let what = format!("{} (offer {})", o.name, row["offer"]);
        let (response, agreed) = expected(o);
        assert_eq!(row["response"], response, "{what}");
        assert_eq!(row["agreed"], agreed, "{what}");
        // 7 sizes of the script's OFFER_SIZES.
        assert_rows_ok(&row["rows"], 7, &what);
        let stats = &row["stats"];
        if o.declined {
            assert_eq!(num(stats, "sent_compressed"), 0, "{what}: {stats}");
            assert_eq!(num(stats, "echo_compressed"), 0, "{what}: {stats}");
            continue;
        }
        assert_client_compressed_all(stats, &what);
        // JSON over deflate.min_bytes always shrinks: every such echo came compressed.
        let over_min = num(stats, "echo_over_min");
        assert_eq!(num(stats, "echo_compressed"), over_min, "{what}: {stats}");
        if o.window.is_some_and(|bits| bits < 15) {
            // Every compressed echo was checked against the window (the script's
            // check_window), not only inflated.
            assert_eq!(num(stats, "window_checked"), over_min, "{what}: {stats}");
        }
        inflated += num(stats, "sent_compressed");
        compressed += over_min;
    }
    let bounds = &seen["bounds"];
    assert!(bounds["floor"].is_null(), "{bounds}");
    assert_eq!(
        bounds["over_ratio"],
        json!({"code": 1009, "reason": "message compressed too well"}),
        "{bounds}"
    );
    // The refused message was not inflated (the bound stops it) and not echoed.
    let floor = &bounds["floor_stats"];
    assert_eq!(num(floor, "sent_compressed"), 1, "{bounds}");
    assert_eq!(num(floor, "echo_compressed"), 1, "{bounds}");
    inflated += 1;
    compressed += 1;
    assert_server_counts(&server, inflated, compressed).await;
}
