//! Real client libraries against the real server, unmodified: Python `websockets` with
//! permessage-deflate (its default). The interpreter is the suite's virtualenv
//! (`TICKCAST_TEST_PYTHON`, set by tests/run.sh, which installs the pinned versions); run alone,
//! `cargo test --test clients` needs that variable pointing at a Python with `websockets`.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

both_drivers!(python_websockets_with_compression);

fn python() -> String {
    std::env::var("TICKCAST_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "TICKCAST_TEST_PYTHON is not set: run the suite with `bash tests/run.sh`, which \
             creates target/venv with the pinned client libraries"
        )
    })
}

/// Compressed both ways: the server's frames inflate in the client, the client's compressed
/// subscribe is understood, and the counters show both.
async fn python_websockets_with_compression(driver: Driver) {
    let server = Server::start(driver, &[], &[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/deflate_websockets.py"
    );
    let http = format!("http://{}", server.addr);
    let out = tokio::task::spawn_blocking({
        let url = server.ws_url();
        move || {
            Command::new(python())
                .args([script, &url, &http, ADMIN_KEY])
                .output()
                .expect("run the Python client")
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["extensions"],
        serde_json::json!(["permessage-deflate"])
    );
    assert_eq!(seen["welcome"], "welcome");
    assert_eq!(seen["ack_topics"], 60);
    assert_eq!(seen["frame_ok"], true, "{seen}");
    assert!(server.metric("tickcast_compressions_total").await >= 1.0);
    assert!(server.metric("tickcast_inflations_total").await >= 1.0);
}
