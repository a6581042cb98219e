//! Defect 8 of issue 11: a panic in a shard or in the cluster bridge must end the process with
//! a non-zero status and the reason in the log, so the service manager restarts it, instead of
//! leaving a process that answers `/health` while some of its topics are silently dead.
//! Needs the `fault-injection` feature (tests/run.sh enables it): a publish to
//! `fault.panic.shard` / `fault.panic.bridge` panics that thread (src/fault.rs).
#![cfg(feature = "fault-injection")]

mod common;

use common::{proc::Proc, *};
use serde_json::json;

both_drivers!(
    a_shard_panic_ends_the_process,
    a_bridge_panic_ends_the_process
);

/// Exit status of a crash (EX_SOFTWARE), as docs/CONFIG.md says.
const CRASH_STATUS: i32 = 70;

async fn a_shard_panic_ends_the_process(driver: Driver) {
    let p = Proc::start("", &[], &["--driver", driver.flag()]);
    let log = crash(p, "fault.panic.shard").await;
    assert!(log.contains("tc-shard-"), "the log names the thread: {log}");
}

async fn a_bridge_panic_ends_the_process(driver: Driver) {
    // A broker nobody listens on: the bridge keeps trying to connect, and answers publishes
    // itself meanwhile, so the fault reaches it without a broker.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", closed.local_addr().unwrap());
    drop(closed);
    let args = [
        "--driver",
        driver.flag(),
        "--cluster",
        "nats",
        "--broker",
        &url,
    ];
    let log = crash(Proc::start("", &[], &args), "fault.panic.bridge").await;
    assert!(log.contains("tc-bridge"), "the log names the thread: {log}");
}

/// Publishes to the fault topic from a subscribed client; the process must exit with
/// `CRASH_STATUS` and say why. Returns its stderr.
async fn crash(mut p: Proc, topic: &str) -> String {
    let server = p.server();
    let (mut ws, _) = connect(&server).await;
    subscribe(&mut ws, 1, &["x.y"]).await;
    send_json(&mut ws, json!({"op":"publish","topic":topic,"data":1})).await;
    let status = p.wait_exit();
    let log = p.stderr();
    assert_eq!(
        status.code(),
        Some(CRASH_STATUS),
        "{status:?}; stderr: {log}"
    );
    assert!(log.contains("fault injection"), "{log}");
    assert!(log.contains("exiting with status 70"), "{log}");
    log
}
