//! Hostile input must not make the server hold memory it does not need (each test on io_uring
//! and epoll). Memory is read from the server's VmRSS with wide margins: the assertions separate
//! "bounded" from "grows with what the client sends", not a few KiB either way.

mod common;

use common::*;
use tokio::io::AsyncWriteExt;

both_drivers!(
    garbage_after_a_violation_is_dropped,
    slow_handshakes_cost_what_they_sent
);

async fn garbage_after_a_violation_is_dropped(driver: Driver) {
    // The longest close deadline allowed, so the garbage arrives while the server still holds
    // the socket (it drops the connection when the deadline passes: the writes below would fail).
    let server = Server::start(driver, &[("TICKCAST_TIMEOUTS__CLOSE_MS", "60000")], &[]);
    let mut s = raw_ws(&server).await;
    let before = server.rss_kib();
    // An unmasked frame fails the connection (1002) ...
    s.write_all(&client_frame(true, 0, 1, b"{}", false))
        .await
        .unwrap();
    // ... and 64 MiB of bytes that are not frames follow it.
    let junk = vec![0x41u8; 1 << 20];
    for _ in 0..64 {
        s.write_all(&junk).await.unwrap();
    }
    // The server keeps reading (and dropping) until it has the client's EOF.
    s.shutdown().await.unwrap();
    assert_eq!(raw_read_close_code(&mut s).await, Some(1002));
    let grown_kib = server.rss_kib().saturating_sub(before);
    assert!(
        grown_kib < 16 * 1024,
        "RSS grew by {grown_kib} KiB while dropping 64 MiB of input"
    );
}

async fn slow_handshakes_cost_what_they_sent(driver: Driver) {
    let server = Server::start(driver, &[("TICKCAST_TIMEOUTS__HANDSHAKE_MS", "60000")], &[]);
    let before = server.rss_kib();
    let mut conns = Vec::new();
    for _ in 0..2000 {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"G").await.unwrap();
        conns.push(s);
    }
    // Wait until the server holds all of them (their reader tasks have been spawned, and each
    // byte was readable before its connection was accepted, so the reads are done by the time
    // the cross-shard /metrics scrape has gone round).
    server.wait_metric("tickcast_connections", 2000.0).await;
    let grown_kib = server.rss_kib().saturating_sub(before);
    // A 64 KiB read buffer per half-open handshake would be 125 MiB here.
    assert!(
        grown_kib < 24 * 1024,
        "2000 one-byte handshakes grew RSS by {grown_kib} KiB"
    );
    drop(conns);
}
