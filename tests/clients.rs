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
    let seen = run_client(&server, cmd, "deflate_ws.mjs", &[]).await;
    assert_eq!(seen["extensions"], "permessage-deflate", "{seen}");
    check_compressed_both_ways(&server, &seen).await;
}

/// Compressed both ways: the server's frames inflate in the client, the client's compressed
/// subscribe is understood, and the counters show both.
async fn python_websockets_with_compression(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let cmd = Command::new(suite_var("TICKCAST_TEST_PYTHON"));
    let seen = run_client(&server, cmd, "deflate_websockets.py", &[]).await;
    assert_eq!(
        seen["extensions"],
        serde_json::json!(["permessage-deflate"])
    );
    assert_eq!(seen["welcome"], "welcome");
    check_compressed_both_ways(&server, &seen).await;
}
