//! Shared test harness: runs the real `tickcast` binary on an ephemeral loopback port and
//! talks to it with a real WebSocket client library (tokio-tungstenite) and raw sockets.
//!
//! Waits in these tests are bounded by `DEADLINE`: that is a failure bound (a hung server fails
//! the test instead of hanging CI), never a synchronisation sleep.

#![allow(dead_code)]

pub mod cluster;
pub mod netns;
pub mod proc;
pub mod proxy;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, client_async, connect_async,
    tungstenite::{Message, protocol::CloseFrame},
};

/// Upper bound on any single wait in a test: a failure bound, so generous. Its slowest users
/// are a broker restart followed by the first publish (a new broker process, the nodes'
/// reconnect backoff, JetStream creating its stream again, and publishes that time out after
/// `cluster.publish_timeout_ms` = 5 s each while the node is still reconnecting), on a machine
/// whose cores a parallel build keeps busy. A passing test never waits for it.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The io driver a test runs the server on.
#[derive(Debug, Clone, Copy)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn flag(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Generates one test per driver from `async fn $name(driver: Driver)`.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Driver::IoUring).await
                }
            )*
        }
        mod epoll {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Driver::Epoll).await
                }
            )*
        }
    };
}

/// `tickcast` with no `TICKCAST_*` setting inherited from the shell that runs the tests: a
/// variable left in a developer's environment must not change what a test checks. To run the
/// suite against a changed setting on purpose (e.g. `TICKCAST_TIMEOUTS__TICK_MS=10` to widen
/// race windows), set `TICKCAST_TEST_INHERIT_ENV=1` as well.
pub fn tickcast_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickcast"));
    no_inherited_settings(&mut cmd);
    cmd
}

/// See [`tickcast_cmd`]; for commands that start `tickcast` in turn (`sh -c`).
pub fn no_inherited_settings(cmd: &mut Command) {
    let inherit = std::env::var_os("TICKCAST_TEST_INHERIT_ENV").is_some();
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        // The harness's own switches are never settings: the server would refuse them as
        // unknown keys.
        if k.starts_with("TICKCAST_TEST_") || (!inherit && k.starts_with("TICKCAST_")) {
            cmd.env_remove(&*k);
        }
    }
}

/// What every test server starts with unless a test overrides it: anyone may subscribe and
/// publish to anything, no rate limits. Engine tests exercise fan-out, not security; the
/// security tests (tests/security.rs) override these to test the defaults and each rule.
pub const OPEN_ENV: &[(&str, &str)] = &[
    ("TICKCAST_AUTH__ANONYMOUS_SUBS", "[\">\"]"),
    ("TICKCAST_AUTH__ANONYMOUS_PUBS", "[\">\"]"),
    ("TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S", "0"),
    ("TICKCAST_LIMITS__CONNECT_RATE_PER_IP_PER_S", "0"),
    (
        "TICKCAST_AUTH__API_KEYS",
        // SHA-256 of ADMIN_KEY.
        "[{name=\"test-admin\",sha256=\"944650a7cd0f9e14d5c4fb15edbffb7fa45fb9ed36a4fa9be3d7e5476ae51bd9\",admin=true,pubs=[\">\"]}]",
    ),
];

/// The admin API key every test server knows (see `OPEN_ENV`); `Server::http` sends it.
pub const ADMIN_KEY: &str = "test-admin-key";

/// A running server process; killed when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// The TLS listener's address, when the server was started with one (`tls.listen`).
    pub tls_addr: Option<SocketAddr>,
    /// The network namespace the server runs in ([`Server::start_in_netns`]): the harness's
    /// connections to it (HTTP, [`connect`]) are made from inside it.
    pub netns: Option<String>,
    child: Option<Child>,
}

impl Server {
    /// `tickcast serve` on 127.0.0.1:0 with 2 shards, plus `env` (`TICKCAST_*` settings) and
    /// extra `args`.
    pub fn start(driver: Driver, env: &[(&str, &str)], args: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", driver, env, args)
    }

    /// [`Server::start`] on the address `listen`.
    pub fn start_on(listen: &str, driver: Driver, env: &[(&str, &str)], args: &[&str]) -> Server {
        Server::spawn(tickcast_cmd(), None, listen, driver, env, args)
    }

    /// [`Server::start`] inside the network namespace `netns` (`ip netns exec`), on its
    /// loopback ([`netns::Netns`]).
    pub fn start_in_netns(
        netns: &str,
        driver: Driver,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        let mut cmd = Command::new("ip");
        no_inherited_settings(&mut cmd);
        // `ip netns exec` execs the program: the child is tickcast itself.
        cmd.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_tickcast")]);
        Server::spawn(cmd, Some(netns), "127.0.0.1:0", driver, env, args)
    }

    fn spawn(
        mut cmd: Command,
        netns: Option<&str>,
        listen: &str,
        driver: Driver,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        cmd.args([
            "serve",
            "--listen",
            listen,
            "--shards",
            "2",
            "--driver",
            driver.flag(),
        ])
        .args(args)
        .env("TICKCAST_SERVER__PIN_CORES", "false")
        .env("RUST_LOG", "warn")
        .envs(OPEN_ENV.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tickcast");
        let stdout = child.stdout.take().unwrap();
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read tickcast stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from tickcast: {line:?}"))
            .parse()
            .unwrap();
        // With a TLS listener, its address follows on the second line.
        let tls = env
            .iter()
            .any(|(k, v)| *k == "TICKCAST_TLS__LISTEN" && !v.is_empty())
            || args.contains(&"--tls-listen");
        let tls_addr = tls.then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read tickcast stdout");
            line.trim()
                .strip_prefix("tls listening on ")
                .unwrap_or_else(|| panic!("unexpected second line from tickcast: {line:?}"))
                .parse()
                .unwrap()
        });
        Server {
            addr,
            tls_addr,
            netns: netns.map(str::to_string),
            child: Some(child),
        }
    }

    /// A handle on a server some other owner started (`proc::Proc`): not killed on drop.
    pub fn attach(addr: SocketAddr) -> Server {
        Server {
            addr,
            tls_addr: None,
            netns: None,
            child: None,
        }
    }

    /// A server with topic classes (`TICKCAST_TOPICS`, TOML inline) plus `extra` env.
    pub fn with_topics(driver: Driver, classes: &str, extra: &[(&str, &str)]) -> Server {
        let mut env = vec![("TICKCAST_TOPICS", classes)];
        env.extend_from_slice(extra);
        Server::start(driver, &env, &[])
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The server's resident set size (VmRSS), KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The process still runs (it did not crash on what the test did so far).
    pub fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let status = child.try_wait().expect("try_wait");
            assert!(status.is_none(), "tickcast exited: {status:?}");
        }
    }

    /// SIGKILL: the process dies at once, closing nothing cleanly (a crashed node).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded by `DEADLINE`) for the process to exit by itself; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "tickcast did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "tickcast did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One Prometheus metric summed over its labels (e.g. over shards).
    pub async fn metric(&self, name: &str) -> f64 {
        sum_metric(&self.scrape().await, name, None)
    }

    /// Like `metric`, only over series carrying `label="value"`.
    pub async fn metric_with(&self, name: &str, label: &str, value: &str) -> f64 {
        sum_metric(&self.scrape().await, name, Some((label, value)))
    }

    /// The `/metrics` text. A scrape the server could not complete is made again, as
    /// Prometheus would: a 503 (a shard did not answer within `timeouts.handshake_ms`) or a
    /// connection closed without an answer (tests that shorten `handshake_ms` to a few hundred
    /// milliseconds cut slow scrapes too on a loaded machine). Bounded by `DEADLINE`.
    pub async fn scrape(&self) -> String {
        let start = std::time::Instant::now();
        loop {
            let req = format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Authorization: Bearer {ADMIN_KEY}\r\n\r\n"
            );
            let raw = self.raw_exchange(req.as_bytes()).await;
            let answer = try_parse_http(&raw);
            if let Some((200, body)) = answer {
                return body;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "/metrics never answered 200; last answer: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/metrics` until the labelled series sums to at least `min` (bounded by
    /// `DEADLINE`): for counters that change when the server finishes closing a connection.
    pub async fn wait_metric_with(&self, name: &str, label: &str, value: &str, min: f64) -> f64 {
        self.wait_metric_where(name, Some((label, value)), min)
            .await
    }

    /// Polls `/metrics` until `name` (summed over all its series) reaches at least `min`.
    pub async fn wait_metric(&self, name: &str, min: f64) -> f64 {
        self.wait_metric_where(name, None, min).await
    }

    async fn wait_metric_where(&self, name: &str, label: Option<(&str, &str)>, min: f64) -> f64 {
        self.wait_metric_until(name, label, &format!(">= {min}"), |v| v >= min)
            .await
    }

    /// Polls `/metrics` until `name` (summed over all its series) is at most `max`: for gauges
    /// that fall when the server has finished releasing something.
    pub async fn wait_metric_at_most(&self, name: &str, max: f64) -> f64 {
        self.wait_metric_until(name, None, &format!("<= {max}"), |v| v <= max)
            .await
    }

    async fn wait_metric_until(
        &self,
        name: &str,
        label: Option<(&str, &str)>,
        want: &str,
        done: impl Fn(f64) -> bool,
    ) -> f64 {
        let start = std::time::Instant::now();
        loop {
            let v = sum_metric(&self.scrape().await, name, label);
            if done(v) {
                return v;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{name} {label:?} stayed at {v}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A plain HTTP/1.1 request with `Connection: close`; returns (status, body).
    /// An HTTP request with the admin key (`Authorization: Bearer ADMIN_KEY`).
    pub async fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let auth = format!("Authorization: Bearer {ADMIN_KEY}\r\n");
        self.http_with(method, path, body, &auth).await
    }

    /// An HTTP request with extra raw header lines (`"Name: value\r\n"` each).
    pub async fn http_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &str,
    ) -> (u16, String) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        req.push_str(headers);
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        let raw = self.raw_exchange(req.as_bytes()).await;
        parse_http(&raw)
    }

    /// A new TCP connection to the server (from inside its network namespace, if it has one).
    pub async fn tcp(&self) -> TcpStream {
        match &self.netns {
            None => TcpStream::connect(self.addr).await.unwrap(),
            Some(ns) => netns::connect(ns, self.addr).await,
        }
    }

    /// Sends `bytes` on a fresh TCP connection and reads until the server closes it.
    pub async fn raw_exchange(&self, bytes: &[u8]) -> Vec<u8> {
        let mut s = self.tcp().await;
        s.write_all(bytes).await.unwrap();
        read_to_close(&mut s).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A server that ended by itself while the test ran crashed (a panic exits with
            // status 70): the test fails even if everything it checked held.
            let exited = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
            if let Some(status) = exited {
                if !std::thread::panicking() {
                    panic!("tickcast exited by itself during the test: {status}");
                }
            }
        }
    }
}

/// Reads until EOF or reset, bounded by `DEADLINE`.
pub async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let res = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(res.is_ok(), "server did not close the connection");
    out
}

pub fn parse_http(raw: &[u8]) -> (u16, String) {
    try_parse_http(raw)
        .unwrap_or_else(|| panic!("not an HTTP response: {:?}", String::from_utf8_lossy(raw)))
}

/// (status, body) of an HTTP response; `None` if `raw` is not one (e.g. empty: the server
/// closed the connection without answering).
pub fn try_parse_http(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw).to_string();
    if !text.starts_with("HTTP/") {
        return None;
    }
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok())?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

pub fn sum_metric(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let pair = label.map(|(k, v)| format!("{k}=\"{v}\""));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter(|l| {
            pair.as_ref()
                .is_none_or(|p| l.split(' ').next().unwrap_or("").contains(p.as_str()))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Connects to `path` (e.g. `/ws?token=..`) with extra headers; the welcome frame or the HTTP
/// status of the refusal.
pub async fn try_connect(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, Value), u16> {
    use tokio_tungstenite::tungstenite::{Error as WsError, client::IntoClientRequest};
    let mut req = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = k.parse().unwrap();
        req.headers_mut()
            .insert(name, v.parse().expect("header value"));
    }
    match tokio::time::timeout(DEADLINE, connect_async(req))
        .await
        .expect("connect timed out")
    {
        Ok((mut ws, _)) => {
            let welcome = recv_json(&mut ws).await;
            assert_eq!(welcome["op"], "welcome", "{welcome}");
            Ok((ws, welcome))
        }
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// Connects a client and consumes the welcome frame; returns it too.
pub async fn connect(server: &Server) -> (Ws, Value) {
    let (mut ws, _) = match &server.netns {
        None => tokio::time::timeout(DEADLINE, connect_async(server.ws_url())).await,
        Some(_) => {
            let tcp = MaybeTlsStream::Plain(server.tcp().await);
            tokio::time::timeout(DEADLINE, client_async(server.ws_url(), tcp)).await
        }
    }
    .expect("connect timed out")
    .expect("connect");
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    (ws, welcome)
}

pub async fn send_json<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next text message as JSON (pings are answered by the library); any client stream
/// (plain or TLS).
pub async fn recv_json<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    serde_json::from_str(&recv_text(ws).await).unwrap()
}

/// The next text message as sent, WebSocket pings and pongs skipped, within `DEADLINE`.
pub async fn recv_text<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> String {
    // One deadline for the call: the server's pings (every 20 s) must not restart it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no message within the deadline")
            .expect("stream ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Waits for the server's close frame; returns its code.
pub async fn recv_close(ws: &mut Ws) -> Option<CloseFrame> {
    // One deadline for the call: the server's pings (every 20 s) must not restart it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no close within the deadline");
        match msg {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Subscribes and returns the ack.
pub async fn subscribe(ws: &mut Ws, id: u64, topics: &[&str]) -> Value {
    subscribe_op(
        ws,
        serde_json::json!({"op":"subscribe","id":id,"topics":topics}),
    )
    .await
}

/// Sends the subscribe op `op` (one with an `id`), and returns its ack: the next message, which
/// must be it.
pub async fn subscribe_op(ws: &mut Ws, op: Value) -> Value {
    let id = op["id"].clone();
    send_json(ws, op).await;
    let ack = recv_json(ws).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(ack["id"], id);
    ack
}

/// Publishes `data` to `topic` with `id` on a connection whose next message is the ack (one not
/// subscribed to the topic); returns the `seq` it got.
pub async fn publish(ws: &mut Ws, id: u64, topic: &str, data: Value) -> u64 {
    send_json(
        ws,
        serde_json::json!({"op":"publish","id":id,"topic":topic,"data":data}),
    )
    .await;
    let ack = recv_json(ws).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    ack["seq"].as_u64().unwrap()
}

/// A setting of tests/run.sh (where the pinned client libraries are).
pub fn suite_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the suite with `bash tests/run.sh`, which installs the \
             pinned client libraries under target/ and sets it"
        )
    })
}

/// Runs a client script of tests/clients/ (`program script url http admin_key args…`) and
/// returns the JSON line it prints.
pub async fn run_client(server: &Server, mut cmd: Command, script: &str, args: &[&str]) -> Value {
    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    cmd.args([
        script.as_str(),
        &server.ws_url(),
        &format!("http://{}", server.addr),
        ADMIN_KEY,
    ])
    .args(args);
    json_output(cmd).await
}

/// Runs a client program `cmd` to its end and returns the JSON it printed; a program that fails
/// fails the test, with what it printed.
pub async fn json_output(mut cmd: Command) -> Value {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the client"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Opens connections until there is at least one on every shard in `shards`; returns one per
/// shard (SO_REUSEPORT spreads connections by hash, so a few attempts suffice).
pub async fn connect_on_shards(server: &Server, shards: usize) -> Vec<Ws> {
    let mut found: Vec<Option<Ws>> = (0..shards).map(|_| None).collect();
    for _ in 0..200 {
        let (ws, welcome) = connect(server).await;
        let shard = welcome["shard"].as_u64().unwrap() as usize;
        if found[shard].is_none() {
            found[shard] = Some(ws);
        }
        if found.iter().all(Option::is_some) {
            return found.into_iter().map(Option::unwrap).collect();
        }
    }
    panic!("200 connections never covered all {shards} shards");
}

/// A raw TCP connection that has completed the WebSocket handshake (for sending frames a
/// conforming client library would refuse to send).
pub async fn raw_ws(server: &Server) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // Read the 101 response head; the welcome frame follows.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame.
pub fn client_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | (rsv << 4) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// The (header, payload) lengths of the unmasked server frame at the start of `buf`, once its
/// header is complete (the payload may not be).
pub fn server_frame_lens(buf: &[u8]) -> Option<(usize, usize)> {
    match *buf.get(1)? & 0x7f {
        126 if buf.len() >= 4 => Some((4, u16::from_be_bytes([buf[2], buf[3]]) as usize)),
        127 if buf.len() >= 10 => Some((
            10,
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
        )),
        n if n < 126 => Some((2, n as usize)),
        _ => None,
    }
}

/// Reads server frames from a raw socket until a close frame; returns its code (None if the
/// connection ended without one).
pub async fn raw_read_close_code(s: &mut TcpStream) -> Option<u16> {
    let data = read_to_close(s).await;
    let mut i = 0;
    while i + 2 <= data.len() {
        let opcode = data[i] & 0x0f;
        let (hdr, len) = server_frame_lens(&data[i..])?;
        if opcode == 0x8 {
            let p = &data[i + hdr..(i + hdr + len).min(data.len())];
            return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
        }
        i += hdr + len;
    }
    None
}

/// The largest out-queue of any connection, in bytes (`/v1/stats`' `largest_queue_bytes`).
pub async fn largest_queue_bytes(server: &Server) -> u64 {
    let (status, body) = server.http("GET", "/v1/stats", None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["total"]["largest_queue_bytes"].as_u64().unwrap()
}

/// Polls `/v1/stats` (bounded by `DEADLINE`) until some connection has `bytes` queued.
pub async fn wait_for_queued(server: &Server, bytes: u64) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while largest_queue_bytes(server).await < bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "never {bytes} bytes queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Publishes `n` messages of ~`pad` bytes to each of `topics`, without acks, then one with an
/// id per topic (whose ack says the owner sequenced everything before it). Returns the last
/// seq per topic.
pub async fn flood(
    p: &mut Ws,
    topics: &[&str],
    n: u64,
    pad: usize,
) -> std::collections::HashMap<String, u64> {
    let filler = "x".repeat(pad);
    for i in 0..n {
        for t in topics {
            let op = serde_json::json!({"op":"publish","topic":t,"data":{"i":i,"pad":filler}});
            p.feed(Message::text(op.to_string())).await.unwrap();
        }
    }
    p.flush().await.unwrap();
    let mut last = std::collections::HashMap::new();
    for t in topics {
        send_json(
            p,
            serde_json::json!({"op":"publish","id":t,"topic":t,"data":{"i":"last"}}),
        )
        .await;
        loop {
            let m = recv_json(p).await;
            if m["op"] == "ack" && m["id"] == *t {
                last.insert(t.to_string(), m["seq"].as_u64().unwrap());
                break;
            }
        }
    }
    last
}
