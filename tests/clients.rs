//! Real client libraries against the real server, unmodified: Python `websockets` with
//! permessage-deflate (its default) and Node `ws` with `perMessageDeflate`. tests/run.sh
//! installs the pinned versions (target/venv, target/node) and passes their places as
//! `TICKCAST_TEST_PYTHON` and `TICKCAST_TEST_NODE_PATH`; run alone, `cargo test --test clients`
//! needs both set.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

both_drivers!(python_websockets_with_compression, node_ws_with_compression);

/// A setting of tests/run.sh (where the pinned client libraries are).
fn suite_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the suite with `bash tests/run.sh`, which installs the \
             pinned client libraries under target/ and sets it"
        )
    })
}

/// Runs a client script (`program script url http admin_key`) and returns the JSON line it
/// prints.
async fn run_client(server: &Server, mut cmd: Command, script: &str) -> Value {
    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    cmd.args([
        script.as_str(),
        &server.ws_url(),
        &format!("http://{}", server.addr),
        ADMIN_KEY,
    ]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the client"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What both clients report: the subscribe (compressed by the client) understood, the
/// published frame (compressed by the server) read back intact.
async fn check_compressed_both_ways(server: &Server, seen: &Value) {
    assert_eq!(seen["ack_topics"], 60, "{seen}");
    assert_eq!(seen["frame_ok"], true, "{seen}");
    assert!(server.metric("tickcast_compressions_total").await >= 1.0);
    assert!(server.metric("tickcast_inflations_total").await >= 1.0);
}

async fn node_ws_with_compression(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", suite_var("TICKCAST_TEST_NODE_PATH"));
    let seen = run_client(&server, cmd, "deflate_ws.mjs").await;
    assert_eq!(seen["extensions"], "permessage-deflate", "{seen}");
    check_compressed_both_ways(&server, &seen).await;
}

/// Compressed both ways: the server's frames inflate in the client, the client's compressed
/// subscribe is understood, and the counters show both.
async fn python_websockets_with_compression(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let cmd = Command::new(suite_var("TICKCAST_TEST_PYTHON"));
    let seen = run_client(&server, cmd, "deflate_websockets.py").await;
    assert_eq!(
        seen["extensions"],
        serde_json::json!(["permessage-deflate"])
    );
    assert_eq!(seen["welcome"], "welcome");
    check_compressed_both_ways(&server, &seen).await;
}
