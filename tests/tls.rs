//! The TLS (`wss://`) listener, each test on io_uring and epoll: round trips over TLS 1.3 and
//! 1.2 with ALPN, plain and TLS side by side, certificate reload on SIGHUP, garbage and
//! slowloris on the TLS port, a slow TLS consumer, permessage-deflate over TLS; records split,
//! large, stalled, closed, and a Python client, in `tls/records.rs`. Certificates are
//! generated here with rcgen; the clients (tokio-rustls, ring) trust only the certificate a
//! test gives them.

mod common;
#[path = "tls/records.rs"]
mod records;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{self, ClientConfig, RootCertStore, pki_types::CertificateDer},
};
use tokio_tungstenite::{WebSocketStream, client_async, tungstenite::Message};

both_drivers!(
    wss_round_trip_tls13_and_tls12,
    plain_and_tls_side_by_side,
    sighup_reloads_the_certificate,
    garbage_on_the_tls_port_is_closed_and_counted,
    stalled_tls_handshake_hits_the_deadline,
    slow_tls_consumer_is_closed,
    permessage_deflate_over_tls,
    a_proxy_header_before_the_client_hello_names_the_client,
    a_client_hello_in_one_byte_records_is_refused_at_the_bound,
);

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A self-signed certificate for `localhost` / 127.0.0.1.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn new_cert() -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    TestCert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

/// A temporary directory holding `cert.pem` and `key.pem`; removed when dropped.
struct CertDir(PathBuf);

impl CertDir {
    fn new(cert: &TestCert) -> CertDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tickcast-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let d = CertDir(dir);
        d.install(cert);
        d
    }

    /// Writes the pair (each file replaced atomically by a rename).
    fn install(&self, cert: &TestCert) {
        write_atomic(&self.cert(), &cert.cert_pem);
        write_atomic(&self.key(), &cert.key_pem);
    }

    fn cert(&self) -> PathBuf {
        self.0.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.0.join("key.pem")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TICKCAST_TLS__LISTEN", "127.0.0.1:0".into()),
            ("TICKCAST_TLS__CERT_FILE", self.cert().display().to_string()),
            ("TICKCAST_TLS__KEY_FILE", self.key().display().to_string()),
        ]
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `Server::start` with the TLS listener on 127.0.0.1:0 and `extra` settings.
fn start_tls(driver: Driver, dir: &CertDir, extra: &[(&str, &str)]) -> Server {
    let env = dir.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    Server::start(driver, &all, &[])
}

fn client_config(trust: &CertificateDer<'static>, tls12_only: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS connection to `addr` for the name `localhost`.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    tcp: Option<TcpStream>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = match tcp {
        Some(tcp) => tcp,
        None => TcpStream::connect(addr).await?,
    };
    let name = "localhost".try_into().unwrap();
    tokio::time::timeout(DEADLINE, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("TLS handshake within the deadline")
}

/// A wss client over `tls`; consumes the welcome frame.
async fn wss_over(tls: TlsStream<TcpStream>) -> Wss {
    let (mut ws, _) = tokio::time::timeout(DEADLINE, client_async("wss://localhost/ws", tls))
        .await
        .expect("upgrade within the deadline")
        .expect("upgrade");
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    ws
}

async fn wss(server: &Server, trust: &CertificateDer<'static>) -> Wss {
    let tls = tls_connect(server.tls_addr.unwrap(), client_config(trust, false), None)
        .await
        .expect("TLS handshake");
    wss_over(tls).await
}

/// A wss client whose socket receive buffer is tiny: once it stops reading, the server's
/// queue for it fills after a few KB.
async fn tiny_window_wss(server: &Server, trust: &CertificateDer<'static>) -> Wss {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(server.tls_addr.unwrap()).await.unwrap();
    let tls = tls_connect(
        server.tls_addr.unwrap(),
        client_config(trust, false),
        Some(tcp),
    )
    .await
    .unwrap();
    wss_over(tls).await
}

async fn sub<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, topic: &str) {
    send_json(ws, json!({"op":"subscribe","id":1,"topics":[topic]})).await;
    let ack = recv_json(ws).await;
    assert_eq!(ack["op"], "ack", "{ack}");
}

/// Publishes with an id and waits for the ack; returns the sequence number.
async fn publish<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    topic: &str,
    data: Value,
) -> u64 {
    send_json(ws, json!({"op":"publish","id":2,"topic":topic,"data":data})).await;
    let ack = recv_json(ws).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    ack["seq"].as_u64().unwrap()
}

/// Publishes without an id (no ack): for a connection subscribed to the topic itself, whose
/// data frame and ack could arrive in either order.
async fn publish_noack<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    topic: &str,
    data: Value,
) {
    send_json(ws, json!({"op":"publish","topic":topic,"data":data})).await;
}

/// The next data frame: its topic, seq and data.
async fn recv_data<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    let m = recv_json(ws).await;
    assert!(m.get("seq").is_some() && m.get("topic").is_some(), "{m}");
    m
}

async fn wss_round_trip_tls13_and_tls12(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let server = start_tls(driver, &dir, &[]);
    let addr = server.tls_addr.unwrap();

    let tls = tls_connect(addr, client_config(&cert.der, false), None)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let mut subscriber = wss_over(tls).await;
    sub(&mut subscriber, "tls.a").await;

    // The publisher speaks TLS 1.2.
    let tls12 = tls_connect(addr, client_config(&cert.der, true), None)
        .await
        .unwrap();
    let (_, session) = tls12.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut publisher = wss_over(tls12).await;
    // Larger than one TLS record (16 KiB): the frame spans records.
    let big = "p".repeat(20_000);
    let seq = publish(&mut publisher, "tls.a", json!({"px": 1})).await;
    let seq2 = publish(&mut publisher, "tls.a", json!(big)).await;
    let m = recv_data(&mut subscriber).await;
    assert_eq!(
        (m["topic"].clone(), m["seq"].clone()),
        (json!("tls.a"), json!(seq))
    );
    assert_eq!(m["data"], json!({"px": 1}));
    let m = recv_data(&mut subscriber).await;
    assert_eq!(m["seq"], json!(seq2));
    assert_eq!(m["data"], json!(big));

    server
        .wait_metric("tickcast_tls_handshakes_total", 2.0)
        .await;
    assert_eq!(
        server.metric("tickcast_tls_handshake_failures_total").await,
        0.0
    );

    // A clean close over TLS: the server's close frame arrives, then EOF.
    subscriber.close(None).await.unwrap();
    while let Some(Ok(_)) = tokio::time::timeout(DEADLINE, subscriber.next())
        .await
        .expect("close within the deadline")
    {}
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "client_close",
            1.0,
        )
        .await;
}

async fn plain_and_tls_side_by_side(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let server = start_tls(driver, &dir, &[]);
    assert_ne!(server.addr, server.tls_addr.unwrap());

    let mut secure = wss(&server, &cert.der).await;
    sub(&mut secure, "both.x").await;
    let (mut plain, _) = connect(&server).await;
    sub(&mut plain, "both.x").await;

    let (mut publisher, _) = connect(&server).await;
    let seq = publish(&mut publisher, "both.x", json!("hello")).await;
    let a = recv_data(&mut secure).await;
    let b = recv_data(&mut plain).await;
    assert_eq!(a, b, "plain and TLS subscribers see the same data frame");
    assert_eq!(a["seq"], json!(seq));
    assert_eq!(a["data"], json!("hello"));

    // And a TLS publisher reaches the plain subscriber.
    publish_noack(&mut secure, "both.x", json!(2)).await;
    let a = recv_data(&mut plain).await;
    assert_eq!(a["data"], json!(2));
    assert_eq!(recv_data(&mut secure).await, a);

    // Server-initiated close over TLS: SIGTERM sends 1001 (then close_notify and EOF).
    let mut server = server;
    let stopping = tokio::task::spawn_blocking(move || server.terminate());
    let code = loop {
        match tokio::time::timeout(DEADLINE, secure.next())
            .await
            .expect("close within the deadline")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1001));
    assert!(stopping.await.unwrap().success());
}

/// `server.proxy_protocol` on the TLS listener: a trusted load balancer in TCP mode
/// (HAProxy `send-proxy-v2`) puts its header before the ClientHello; the TLS connection that
/// follows is the client's, under the header's address. From a peer that is not trusted the
/// header is refused: the connection is closed (plain text is no answer on the TLS port).
async fn a_proxy_header_before_the_client_hello_names_the_client(driver: Driver) {
    use common::proxy::{connection_ips, proxy_v2, tcp_from};
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let env = [
        ("TICKCAST_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ("TICKCAST_SERVER__PROXY_PROTOCOL", "true"),
    ];
    let server = start_tls(driver, &dir, &env);
    let tls_addr = server.tls_addr.unwrap();
    let header = proxy_v2(Some("198.51.100.20:40000".parse().unwrap()), tls_addr);
    let mut tcp = tcp_from("127.0.0.1".parse().unwrap(), tls_addr).await;
    tcp.write_all(&header).await.unwrap();
    let tls = tls_connect(tls_addr, client_config(&cert.der, false), Some(tcp))
        .await
        .expect("TLS handshake after the header");
    let mut ws = wss_over(tls).await;
    sub(&mut ws, "pp.x").await;
    assert_eq!(connection_ips(&server).await, ["198.51.100.20"]);
    let mut tcp = tcp_from("127.0.0.2".parse().unwrap(), tls_addr).await;
    tcp.write_all(&header).await.unwrap();
    let refused = tls_connect(tls_addr, client_config(&cert.der, false), Some(tcp)).await;
    assert!(refused.is_err(), "a TLS session after an untrusted header");
    let untrusted = server
        .metric_with("tickcast_proxy_events_total", "event", "header_untrusted")
        .await;
    assert_eq!(untrusted, 1.0);
}

async fn sighup_reloads_the_certificate(driver: Driver) {
    let cert_a = new_cert();
    let cert_b = new_cert();
    let dir = CertDir::new(&cert_a);
    let server = start_tls(driver, &dir, &[]);
    let addr = server.tls_addr.unwrap();

    let mut old = wss(&server, &cert_a.der).await;
    sub(&mut old, "reload.t").await;

    dir.install(&cert_b);
    sighup(&server);
    server
        .wait_metric_with("tickcast_tls_cert_reloads_total", "result", "ok", 1.0)
        .await;

    // The connection made with A goes on.
    publish_noack(&mut old, "reload.t", json!("still here")).await;
    assert_eq!(recv_data(&mut old).await["data"], json!("still here"));

    // New connections get B: a client trusting only B connects, one trusting only A fails.
    let mut new = wss(&server, &cert_b.der).await;
    sub(&mut new, "reload.t").await;
    let refused = tls_connect(addr, client_config(&cert_a.der, false), None).await;
    assert!(
        refused.is_err(),
        "a client trusting only the old cert connected"
    );

    // A broken file: the reload fails, is counted, and B keeps serving.
    std::fs::write(dir.cert(), "not a certificate").unwrap();
    sighup(&server);
    server
        .wait_metric_with("tickcast_tls_cert_reloads_total", "result", "error", 1.0)
        .await;
    let mut again = wss(&server, &cert_b.der).await;
    sub(&mut again, "reload.t").await;
    let (mut plain, _) = connect(&server).await;
    let seq = publish(&mut plain, "reload.t", json!(3)).await;
    for ws in [&mut old, &mut new, &mut again] {
        assert_eq!(recv_data(ws).await["seq"], json!(seq));
    }
    assert_eq!(
        server
            .metric_with("tickcast_tls_cert_reloads_total", "result", "ok")
            .await,
        1.0
    );
}

fn sighup(server: &Server) {
    let pid = rustix::process::Pid::from_raw(server.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
}

async fn garbage_on_the_tls_port_is_closed_and_counted(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let server = start_tls(driver, &dir, &[]);
    let addr = server.tls_addr.unwrap();

    // Plain HTTP on the TLS port: no HTTP answer, the connection is closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    // Whatever came back is at most a TLS alert record (content type 21).
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");

    // Bytes that are no TLS at all.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0xff; 300]).await.unwrap();
    read_to_close(&mut s).await;

    server
        .wait_metric("tickcast_tls_handshake_failures_total", 2.0)
        .await;
    assert_eq!(server.metric("tickcast_tls_handshakes_total").await, 0.0);

    // The server is fine: TLS and plain clients still get through.
    let mut ws = wss(&server, &cert.der).await;
    sub(&mut ws, "after.garbage").await;
    let (mut plain, _) = connect(&server).await;
    let seq = publish(&mut plain, "after.garbage", json!(1)).await;
    assert_eq!(recv_data(&mut ws).await["seq"], json!(seq));
}

/// A ClientHello sent a byte per record: rustls keeps every record of a message it collects, so
/// the connection is refused once it would keep more than a handshake message and a record
/// (`tls::session::HANDSHAKE_HELD_BYTES_MAX`), long before the handshake deadline (five
/// minutes here; `read_to_close` gives up after one).
async fn a_client_hello_in_one_byte_records_is_refused_at_the_bound(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let server = start_tls(
        driver,
        &dir,
        &[("TICKCAST_TIMEOUTS__HANDSHAKE_MS", "300000")],
    );
    let addr = server.tls_addr.unwrap();
    // 30,000 bytes of a message announcing 65,520, six bytes on the wire each: 180 KB.
    let mut hello = vec![1u8, 0x00, 0xff, 0xf0];
    hello.resize(30_000, 0);
    let wire: Vec<u8> = hello.iter().flat_map(|&b| [22, 3, 1, 0, 1, b]).collect();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may close before all of it is written.
    let _ = s.write_all(&wire).await;
    read_to_close(&mut s).await;
    server
        .wait_metric("tickcast_tls_handshake_failures_total", 1.0)
        .await;
}

async fn stalled_tls_handshake_hits_the_deadline(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let server = start_tls(driver, &dir, &[("TICKCAST_TIMEOUTS__HANDSHAKE_MS", "200")]);
    let addr = server.tls_addr.unwrap();

    // Silent after connecting.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Half a real ClientHello.
    let mut client = rustls::ClientConnection::new(
        client_config(&cert.der, false),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a ClientHello is a few hundred bytes");
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&hello[..hello.len() / 2]).await.unwrap();
    // Both are closed by the server (each read ends at EOF or reset within DEADLINE).
    read_to_close(&mut silent).await;
    read_to_close(&mut half).await;
    server
        .wait_metric_with(
            "tickcast_connections_closed_total",
            "reason",
            "handshake_timeout",
            2.0,
        )
        .await;
    server
        .wait_metric("tickcast_tls_handshake_failures_total", 2.0)
        .await;
    // A complete handshake still works with the short deadline. A loaded machine may not
    // finish one (TLS, then the upgrade) within 200 ms: the server then drops it like the
    // stalled ones, and the client connects again, as a real one would.
    let start = std::time::Instant::now();
    let mut ws = loop {
        if let Some(ws) = try_wss(&server, &cert.der).await {
            break ws;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no TLS handshake and upgrade completed within the 200 ms deadline"
        );
    };
    sub(&mut ws, "t").await;
}

/// Like `wss`, but `None` when the server drops the connection during the TLS handshake or the
/// upgrade (its handshake deadline passed).
async fn try_wss(server: &Server, trust: &CertificateDer<'static>) -> Option<Wss> {
    let tls = tls_connect(server.tls_addr.unwrap(), client_config(trust, false), None)
        .await
        .ok()?;
    let (mut ws, _) = tokio::time::timeout(DEADLINE, client_async("wss://localhost/ws", tls))
        .await
        .expect("upgrade within the deadline")
        .ok()?;
    // The welcome frame, or the end of a connection dropped right after the upgrade.
    let welcome = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("welcome within the deadline")?
        .ok()?;
    let welcome: Value = serde_json::from_str(welcome.to_text().ok()?).ok()?;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    Some(ws)
}

async fn slow_tls_consumer_is_closed(driver: Driver) {
    let env = [
        ("TICKCAST_LIMITS__WRITE_QUEUE_BYTES_MAX", "262144"),
        ("TICKCAST_LIMITS__PUBLISH_DATA_BYTES_MAX", "2048"),
    ];
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let server = start_tls(driver, &dir, &env);
    // The slow client: it never reads after subscribing.
    let mut slow = tiny_window_wss(&server, &cert.der).await;
    sub(&mut slow, "flood").await;

    let mut fast = wss(&server, &cert.der).await;
    sub(&mut fast, "flood").await;
    let (mut p, _) = connect(&server).await;
    let pad = "x".repeat(1000);
    let mut sent = 0u64;
    let mut received = 0u64;
    while server.metric("tickcast_slow_consumer_closes_total").await < 1.0 {
        assert!(
            sent < 50_000,
            "slow TLS consumer never closed after {sent} messages"
        );
        for _ in 0..50 {
            p.feed(Message::text(
                json!({"op":"publish","topic":"flood","data":pad}).to_string(),
            ))
            .await
            .unwrap();
            sent += 1;
        }
        p.flush().await.unwrap();
        let seq = publish(&mut p, "sync", json!(0)).await;
        assert!(seq > 0);
        // The fast TLS subscriber keeps up: it reads everything sent so far.
        while received < sent {
            let m = recv_data(&mut fast).await;
            received = m["seq"].as_u64().unwrap();
        }
    }
    assert_eq!(
        server
            .metric_with(
                "tickcast_connections_closed_total",
                "reason",
                "slow_consumer"
            )
            .await,
        1.0
    );
    // The fast one is still open.
    let seq = publish(&mut p, "flood", json!("last")).await;
    assert_eq!(recv_data(&mut fast).await["seq"], json!(seq));
    drop(slow);
}

#[test]
fn tls_configuration_errors_name_the_key_and_the_file() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = common::tickcast_cmd();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--shards", "1"]);
        cmd.env("TICKCAST_SERVER__PIN_CORES", "false");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&[("TICKCAST_TLS__LISTEN", "127.0.0.1:0")]);
    assert!(err.contains("tls.cert_file"), "{err}");

    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let cert_path = dir.cert().display().to_string();
    let key_path = dir.key().display().to_string();
    let missing = dir.0.join("missing.pem").display().to_string();
    let err = run(&[
        ("TICKCAST_TLS__LISTEN", "127.0.0.1:0"),
        ("TICKCAST_TLS__CERT_FILE", &cert_path),
        ("TICKCAST_TLS__KEY_FILE", &missing),
    ]);
    assert!(
        err.contains("tls.key_file") && err.contains(&missing),
        "{err}"
    );

    // A key file that holds a certificate: no private key in it.
    let err = run(&[
        ("TICKCAST_TLS__LISTEN", "127.0.0.1:0"),
        ("TICKCAST_TLS__CERT_FILE", &cert_path),
        ("TICKCAST_TLS__KEY_FILE", &cert_path),
    ]);
    assert!(
        err.contains("tls.key_file") && err.contains(&cert_path),
        "{err}"
    );

    let garbage = dir.0.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let garbage = garbage.display().to_string();
    let err = run(&[
        ("TICKCAST_TLS__LISTEN", "127.0.0.1:0"),
        ("TICKCAST_TLS__CERT_FILE", &garbage),
        ("TICKCAST_TLS__KEY_FILE", &key_path),
    ]);
    assert!(
        err.contains("tls.cert_file") && err.contains(&garbage),
        "{err}"
    );
}

/// Measurement, not a check (ignored by default): server CPU per delivered frame with plain and
/// TLS subscribers. 200 subscribers on one topic, one plain publisher pacing 300 messages/s of
/// ~100 bytes for 10 s (3 every 10 ms); CPU is the server's utime+stime from /proc (10 ms ticks).
///
///     CARGO_TARGET_DIR=... cargo test --release --test tls -- --ignored --nocapture cpu_per_delivery
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn cpu_per_delivery_plain_vs_tls() {
    let subs: usize = env_or("TC_SUBS", 200);
    let msgs: u64 = env_or("TC_MSGS", 3000);
    let rate: u64 = env_or("TC_RATE", 300);
    for tls in [false, true] {
        let cert = new_cert();
        let dir = CertDir::new(&cert);
        let server = start_tls(Driver::IoUring, &dir, &[]);
        let rss_before = server.rss_kib();
        let mut readers = Vec::new();
        for _ in 0..subs {
            if tls {
                let mut ws = wss(&server, &cert.der).await;
                sub(&mut ws, "m").await;
                readers.push(tokio::spawn(
                    async move { count_until(&mut ws, msgs).await },
                ));
            } else {
                let (mut ws, _) = connect(&server).await;
                sub(&mut ws, "m").await;
                readers.push(tokio::spawn(
                    async move { count_until(&mut ws, msgs).await },
                ));
            }
        }
        let rss_kib_per_sub = (server.rss_kib().saturating_sub(rss_before)) as f64 / subs as f64;
        let (mut p, _) = connect(&server).await;
        let data = json!({"px": "12345.67", "qty": "0.015", "side": "buy", "pad": "x".repeat(40)});
        let before_cpu = cpu_ticks(server.pid());
        let before = server.metric("tickcast_deliveries_total").await;
        let start = std::time::Instant::now();
        // Paced in ticks of `TC_TICK_MS`: 10 ms spreads the messages (a few per write), 100 ms
        // sends bursts that coalesce into one write (and one encryption) per subscriber.
        let tick_ms: u64 = env_or("TC_TICK_MS", 10);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(tick_ms));
        let per_tick = (rate * tick_ms / 1000).max(1);
        let mut sent = 0;
        while sent < msgs {
            tick.tick().await;
            for _ in 0..per_tick.min(msgs - sent) {
                p.feed(Message::text(
                    json!({"op":"publish","topic":"m","data":data}).to_string(),
                ))
                .await
                .unwrap();
                sent += 1;
            }
            p.flush().await.unwrap();
        }
        for r in readers {
            r.await.unwrap();
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = (cpu_ticks(server.pid()) - before_cpu) as f64 / ticks_per_s();
        let delivered = server.metric("tickcast_deliveries_total").await - before;
        println!(
            "{}: {subs} subscribers, {msgs} msgs at {rate}/s ({tick_ms} ms ticks), {delivered} deliveries in {wall:.1} s: \
             server CPU {cpu:.2} s = {:.2} us per delivery ({:.0}% of one core); \
             RSS {rss_kib_per_sub:.1} KiB per subscribed idle connection",
            if tls { "TLS  " } else { "plain" },
            cpu * 1e6 / delivered,
            cpu / wall * 100.0
        );
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads data frames on topic `m` until the one with seq `last`.
async fn count_until<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, last: u64) {
    loop {
        let m = recv_json(ws).await;
        if m["topic"] == "m" && m["seq"].as_u64() == Some(last) {
            return;
        }
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after_comm` starts at field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// USER_HZ: /proc reports CPU time in 1/100 s on Linux, whatever the kernel's HZ.
fn ticks_per_s() -> f64 {
    100.0
}

/// permessage-deflate over TLS: negotiated on the TLS listener, a compressed client message
/// inflated, the published frame sent compressed (RSV1) inside the TLS records and inflating
/// to what was published. (A raw WebSocket client over tokio-rustls: tungstenite does not do
/// permessage-deflate.)
async fn permessage_deflate_over_tls(driver: Driver) {
    let cert = new_cert();
    let dir = CertDir::new(&cert);
    let server = start_tls(driver, &dir, &[]);
    let tls = tls_connect(
        server.tls_addr.unwrap(),
        client_config(&cert.der, false),
        None,
    )
    .await
    .unwrap();
    let extension = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (mut raw, head) = Raw::upgrade(tls, extension).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-extensions: permessage-deflate"),
        "{head}"
    );
    let inflate = |payload: &[u8]| -> Value {
        let mut input = payload.to_vec();
        input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
        let mut out = Vec::with_capacity(1 << 16);
        flate2::Decompress::new(false)
            .decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
            .expect("a compressed frame inflates");
        serde_json::from_slice(&out).unwrap()
    };
    let (b0, welcome) = raw.frame().await;
    assert_eq!(b0 & 0x0f, 0x1);
    let welcome: Value = if b0 & 0x40 != 0 {
        inflate(&welcome)
    } else {
        serde_json::from_slice(&welcome).unwrap()
    };
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    // The subscribe goes compressed (RSV1, raw DEFLATE without the 00 00 ff ff tail).
    let sub = json!({"op":"subscribe","id":1,"topics":["z.tls"]}).to_string();
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut deflated = Vec::with_capacity(sub.len() + 64);
    c.compress_vec(sub.as_bytes(), &mut deflated, flate2::FlushCompress::Sync)
        .unwrap();
    deflated.truncate(deflated.len() - 4);
    raw.tls
        .write_all(&client_frame(true, 0x4, 0x1, &deflated, true))
        .await
        .unwrap();
    let (b0, ack) = raw.frame().await;
    let ack: Value = if b0 & 0x40 != 0 {
        inflate(&ack)
    } else {
        serde_json::from_slice(&ack).unwrap()
    };
    assert_eq!(ack["op"], "ack", "{ack}");
    // Published by a plain client; long and repetitive enough to be compressed.
    let data = json!({"levels": (0..40).map(|i| json!({"px": format!("{}.5", 100 + i), "qty": "2.000"})).collect::<Vec<_>>()});
    let (mut publisher, _) = connect(&server).await;
    let seq = publish(&mut publisher, "z.tls", data.clone()).await;
    let (b0, payload) = raw.frame().await;
    assert_eq!(b0 & 0x4f, 0x41, "a compressed text frame: {b0:#x}");
    let v = inflate(&payload);
    assert_eq!(v["seq"], json!(seq), "{v}");
    assert_eq!(v["data"], data);
    assert!(
        payload.len() < data.to_string().len(),
        "compressed is shorter"
    );
    assert!(server.metric("tickcast_inflations_total").await >= 1.0);
}

/// A WebSocket spoken by hand over TLS, for what tungstenite does not show a test (the
/// permessage-deflate bits, how the TLS stream ends).
struct Raw {
    tls: TlsStream<TcpStream>,
    /// Bytes read and not yet taken.
    buf: Vec<u8>,
}

impl Raw {
    /// Upgrades `tls` at `/ws` with `extra` header lines; returns the client and the 101
    /// response's head.
    async fn upgrade(mut tls: TlsStream<TcpStream>, extra: &str) -> (Raw, String) {
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Raw {
            tls,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(raw.fill().await > 0, "connection closed");
        };
        let head = String::from_utf8_lossy(&raw.buf[..head_end]).into_owned();
        raw.buf.drain(..head_end);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        (raw, head)
    }

    /// The next whole server frame: (first byte, payload).
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some((hdr, len)) = server_frame_lens(&self.buf) {
                if self.buf.len() >= hdr + len {
                    let f = (self.buf[0], self.buf[hdr..hdr + len].to_vec());
                    self.buf.drain(..hdr + len);
                    return f;
                }
            }
            assert!(self.fill().await > 0, "connection closed");
        }
    }

    /// Appends what the server sends next; 0 at a clean end of the TLS stream (close_notify).
    async fn fill(&mut self) -> usize {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(DEADLINE, self.tls.read(&mut chunk))
            .await
            .expect("the server answers in time")
            .expect("a TLS stream that ends with close_notify");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }
}
