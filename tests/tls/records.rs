//! TLS records on a live server, each test on io_uring and epoll: records arriving a byte at a
//! time, frames larger than a write batch (64 KiB) both ways, a stalled subscriber whose
//! socket fills and which then gets everything in order, close_notify both ways, and Python
//! `websockets` (OpenSSL's TLS, TLS 1.3 and 1.2, permessage-deflate) as a client.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::client_async;

use super::{
    CertDir, Raw, client_config, new_cert, publish, publish_noack, recv_data, start_tls, sub,
    tiny_window_wss, tls_connect, wss,
};
use crate::common::*;

crate::both_drivers!(
    records_arriving_a_byte_at_a_time,
    frames_larger_than_a_write_batch,
    a_stalled_wss_subscriber_that_reads_again_gets_everything,
    close_notify_both_ways,
    python_websockets_over_wss,
);

/// A socket whose every write takes one byte (Nagle off): each TLS record the client sends,
/// handshake ones included, reaches the server in pieces.
struct Trickle(TcpStream);

impl AsyncRead for Trickle {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let one = &buf[..buf.len().min(1)];
        Pin::new(&mut self.get_mut().0).poll_write(cx, one)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

async fn records_arriving_a_byte_at_a_time(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let server = start_tls(driver, &dir, &[]);
    let tcp = TcpStream::connect(server.tls_addr.unwrap()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = "localhost".try_into().unwrap();
    let connector = TlsConnector::from(client_config(&cert.der, false));
    let tls = tokio::time::timeout(DEADLINE, connector.connect(name, Trickle(tcp)))
        .await
        .expect("TLS handshake within the deadline")
        .expect("TLS handshake");
    let (mut ws, _) = tokio::time::timeout(DEADLINE, client_async("wss://localhost/ws", tls))
        .await
        .expect("upgrade within the deadline")
        .expect("upgrade");
    assert_eq!(recv_json(&mut ws).await["op"], "welcome");
    sub(&mut ws, "trickle").await;
    // A message of two records, sent a byte at a time, published to itself.
    let data = "t".repeat(20_000);
    publish_noack(&mut ws, "trickle", json!(data)).await;
    assert_eq!(recv_data(&mut ws).await["data"], json!(data));
    server
        .wait_metric("tickcast_tls_handshakes_total", 1.0)
        .await;
}

async fn frames_larger_than_a_write_batch(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let env = [
        ("TICKCAST_LIMITS__MESSAGE_BYTES_MAX", "1048576"),
        ("TICKCAST_LIMITS__PUBLISH_DATA_BYTES_MAX", "524288"),
        ("TICKCAST_LIMITS__WRITE_QUEUE_BYTES_MAX", "4194304"),
    ];
    let server = start_tls(driver, &dir, &env);
    let mut secure = wss(&server, &cert.der).await;
    sub(&mut secure, "big").await;
    let (mut plain, _) = connect(&server).await;
    // Server to client: ~300 KB (five write batches, nineteen records), then small frames
    // queued right behind it.
    let big = "b".repeat(300_000);
    let first = publish(&mut plain, "big", json!(big)).await;
    for i in 0..3 {
        publish(&mut plain, "big", json!(i)).await;
    }
    let m = recv_data(&mut secure).await;
    assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(first), &json!(big)));
    for i in 0..3 {
        let m = recv_data(&mut secure).await;
        assert_eq!(
            (m["seq"].as_u64(), &m["data"]),
            (Some(first + 1 + i), &json!(i))
        );
    }
    // Client to server: as many records in a row, decrypted in place.
    let up = "u".repeat(400_000);
    publish_noack(&mut secure, "big", json!(up)).await;
    assert_eq!(recv_data(&mut secure).await["data"], json!(up));
}

/// A wss subscriber that stops reading until the server's queue for it holds ~0.5 MB, then
/// reads again: it gets every message in order and stays connected (the rest of an encrypted
/// batch the socket did not take is written first, when the readiness set says there is room).
async fn a_stalled_wss_subscriber_that_reads_again_gets_everything(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let env = [
        ("TICKCAST_LIMITS__WRITE_QUEUE_BYTES_MAX", "8388608"),
        ("TICKCAST_SERVER__TCP_NOTSENT_LOWAT_BYTES", "16384"),
    ];
    let server = start_tls(driver, &dir, &env);
    let mut stalled = tiny_window_wss(&server, &cert.der).await;
    sub(&mut stalled, "bulk").await;
    let (mut p, _) = connect(&server).await;
    // ~1 MB for a client that takes a few KB: most of it waits in the server.
    let last = flood(&mut p, &["bulk"], 1000, 1000).await["bulk"];
    wait_for_queued(&server, 500_000).await;
    for want in 1..=last {
        assert_eq!(recv_data(&mut stalled).await["seq"].as_u64(), Some(want));
    }
    // Nothing is left queued or held, and the connection takes new messages.
    assert_eq!(largest_queue_bytes(&server).await, 0);
    let next = publish(&mut p, "bulk", json!("next")).await;
    assert_eq!(recv_data(&mut stalled).await["seq"].as_u64(), Some(next));
    assert_eq!(
        server.metric("tickcast_slow_consumer_closes_total").await,
        0.0
    );
}

async fn close_notify_both_ways(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let server = start_tls(driver, &dir, &[]);
    let addr = server.tls_addr.unwrap();
    let config = client_config(&cert.der, false);

    // The server's: after its close frame, the TLS stream ends with close_notify (a read
    // gives a clean end, not an unexpected EOF).
    let tls = tls_connect(addr, config.clone(), None).await.unwrap();
    let (mut raw, _) = Raw::upgrade(tls, "").await;
    let (b0, _) = raw.frame().await;
    assert_eq!(b0 & 0x0f, 0x1, "the welcome");
    let close = client_frame(true, 0, 0x8, &1000u16.to_be_bytes(), true);
    raw.tls.write_all(&close).await.unwrap();
    let (b0, payload) = raw.frame().await;
    assert_eq!((b0 & 0x0f, &payload[..]), (0x8, &1000u16.to_be_bytes()[..]));
    assert_eq!(raw.fill().await, 0, "close_notify after the close frame");

    // The client's, with its TCP connection left open: the server ends the connection as on
    // EOF.
    let tls = tls_connect(addr, config, None).await.unwrap();
    let (mut raw, _) = Raw::upgrade(tls, "").await;
    raw.frame().await;
    raw.tls.get_mut().1.send_close_notify();
    raw.tls.flush().await.unwrap();
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "client_gone",
            1.0,
        )
        .await;
    let mut rest = [0u8; 64];
    let end = tokio::time::timeout(
        DEADLINE,
        tokio::io::AsyncReadExt::read(&mut raw.tls, &mut rest),
    )
    .await
    .expect("the server closes the connection");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
}

/// Python `websockets` over wss: OpenSSL's TLS 1.3 and 1.2 against tickcast's record layer,
/// with permessage-deflate (its default): a subscribe, a ~100 KB publish to itself, the frame
/// back. tests/run.sh installs the pinned library and sets `TICKCAST_TEST_PYTHON`.
async fn python_websockets_over_wss(driver: Driver) {
    let python = std::env::var("TICKCAST_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "TICKCAST_TEST_PYTHON is not set: run the suite with `bash tests/run.sh`, which \
             installs the pinned client libraries under target/ and sets it"
        )
    });
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let env = [
        ("TICKCAST_LIMITS__MESSAGE_BYTES_MAX", "524288"),
        ("TICKCAST_LIMITS__PUBLISH_DATA_BYTES_MAX", "262144"),
    ];
    let server = start_tls(driver, &dir, &env);
    let url = format!("wss://localhost:{}/ws", server.tls_addr.unwrap().port());
    for version in ["1.3", "1.2"] {
        let mut cmd = std::process::Command::new(&python);
        cmd.args(["-c", PYTHON_CLIENT, &url])
            .arg(dir.cert())
            .arg(version);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run python"))
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "python client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
        let tls = if version == "1.3" {
            "TLSv1.3"
        } else {
            "TLSv1.2"
        };
        assert_eq!(seen["tls"], tls, "{seen}");
        assert_eq!(seen["extensions"], json!(["permessage-deflate"]), "{seen}");
        assert_eq!(
            (seen["welcome"].as_str(), seen["ack"].as_str()),
            (Some("welcome"), Some("ack"))
        );
        assert_eq!(seen["data_ok"], true, "{seen}");
    }
    assert!(server.metric("tickcast_inflations_total").await >= 2.0);
}

/// `python -c PYTHON_CLIENT URL CA_FILE TLS_VERSION`: prints what it saw as one JSON line.
const PYTHON_CLIENT: &str = r#"
import asyncio, json, random, ssl, sys
import websockets

async def main(url, ca, version):
    ctx = ssl.create_default_context(cafile=ca)
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with websockets.connect(url, ssl=ctx, max_size=None) as ws:
        welcome = json.loads(await ws.recv())
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "topics": ["py.tls"]}))
        ack = json.loads(await ws.recv())
        rng = random.Random(7)
        big = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(100000))
        await ws.send(json.dumps({"op": "publish", "topic": "py.tls", "data": big}))
        while True:
            m = json.loads(await ws.recv())
            if m.get("topic") == "py.tls":
                break
        print(json.dumps({
            "welcome": welcome["op"], "ack": ack["op"], "data_ok": m["data"] == big,
            "tls": ws.transport.get_extra_info("ssl_object").version(),
            "extensions": [e.name for e in ws.protocol.extensions],
        }))

asyncio.run(main(*sys.argv[1:]))
"#;
