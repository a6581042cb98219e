//! A real browser with compression on: headless Chromium (Debian package `chromium`) receives
//! demo-feed frames over permessage-deflate, as a page would with the README's browser-console
//! example. The test drives Chromium over the Chrome DevTools Protocol (tokio-tungstenite) and
//! evaluates tests/clients/browser_feed.js in a blank page.
//!
//! The page connects through a relay in this test that reads the server's frame headers on
//! their way to the browser: that every data frame came compressed (RSV1) is seen on the wire,
//! not only inferred from the server's counters.
//!
//! The same browser also opens the admin dashboard (`GET /dashboard`) and waits for live
//! numbers in it; with `TICKCAST_BLESS_SCREENSHOT=1` that test saves docs/dashboard.png.
//!
//! tests/run.sh passes the browser as `TICKCAST_TEST_CHROMIUM`; run alone, `cargo test --test
//! browser` needs it set (e.g. `TICKCAST_TEST_CHROMIUM=$(command -v chromium)`).

mod common;

use std::{
    collections::HashMap,
    fs::File,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_tungstenite::{connect_async, tungstenite::Message};

both_drivers!(
    chromium_receives_compressed_demo_feed,
    dashboard_shows_live_numbers
);

/// What the page subscribes to: an exact topic (its ack carries a position), a one-segment
/// wildcard and a trailing one, all public demo-feed topics.
const TOPICS: [&str; 3] = ["trades.BTCUSDT", "bbo.*", "kline.>"];

/// Data frames the page waits for (it also waits for one of every topic family; klines come
/// once a second per symbol).
const WANT: usize = 20;

/// A setting of tests/run.sh (which installs the Debian package `chromium` and sets it).
fn suite_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the suite with `bash tests/run.sh`, which installs \
             chromium and sets it (alone: {name}=$(command -v chromium) cargo test --test browser)"
        )
    })
}

async fn chromium_receives_compressed_demo_feed(driver: Driver) {
    // Demo frames are roughly 120 to 200 bytes: many bbo and trade frames are under the default
    // `deflate.min_bytes` (128) and would go plain. At 0 every data frame is compressed, so the
    // browser inflates each one and the wire check below can demand RSV1 on all of them.
    let server = Server::start(
        driver,
        &[("TICKCAST_DEFLATE__MIN_BYTES", "0")],
        &["--demo-feed"],
    );
    let relay = Relay::start(server.addr).await;
    let mut chromium = Chromium::launch(&suite_var("TICKCAST_TEST_CHROMIUM"));
    let mut cdp = chromium.devtools().await;

    let page = cdp.blank_page().await;
    let script = format!(
        "({})({}, {}, {WANT})",
        include_str!("clients/browser_feed.js"),
        json!(relay.ws_url()),
        json!(TOPICS),
    );
    let seen = cdp.evaluate(&page, &script).await;
    let wire = relay.wire();

    // Chromium reports the server's response header as it came.
    assert_eq!(
        seen["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(
        (&seen["code"], &seen["clean"]),
        (&json!(1000), &json!(true))
    );
    let data = check_messages(seen["messages"].as_array().unwrap());
    assert!(data >= WANT);

    // On the wire: the two replies (welcome, ack) plain, every data frame compressed, no
    // control frame with RSV1. The relay counts a frame before passing it on, so it has
    // counted at least every frame the page read.
    assert_eq!(wire.connections, 1, "{wire:?}");
    assert_eq!(wire.plain_text, 2, "{wire:?}");
    assert!(wire.compressed_text >= data, "{wire:?}, {data} data frames");
    assert_eq!(wire.compressed_other, 0, "{wire:?}");
    // One deflate connection: each frame it was sent compressed was compressed once, for it
    // (the counter is published within about a second).
    server
        .wait_metric("tickcast_compressions_total", wire.compressed_text as f64)
        .await;
}

/// `GET /dashboard` (API.md) in Chromium, with the demo feed and one subscriber that keeps up:
/// the page, opened with the admin token in its URL, polls the admin API and shows deliveries
/// and publishes per second that are non-zero and change. With `TICKCAST_BLESS_SCREENSHOT=1`
/// (epoll run only) it saves docs/dashboard.png once the plots hold some history.
async fn dashboard_shows_live_numbers(driver: Driver) {
    let server = Server::start(driver, &[], &["--demo-feed"]);
    let (status, body) = server.http_with("GET", "/dashboard", None, "").await;
    assert_eq!(status, 401, "{body}");

    // Deliveries need a subscriber: one that reads everything, so it is never slow.
    let (mut ws, _) = connect(&server).await;
    send_json(
        &mut ws,
        json!({"op":"subscribe","id":1,"topics":["trades.*","bbo.*","kline.>"]}),
    )
    .await;
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });

    let mut chromium = Chromium::launch(&suite_var("TICKCAST_TEST_CHROMIUM"));
    let mut cdp = chromium.devtools().await;
    let page = cdp.blank_page().await;
    let viewport = json!({"width": 1280, "height": 860, "deviceScaleFactor": 1, "mobile": false});
    cdp.call("Emulation.setDeviceMetricsOverride", viewport, Some(&page))
        .await;
    let url = format!("http://{}/dashboard?token={ADMIN_KEY}", server.addr);
    let nav = cdp
        .call("Page.navigate", json!({"url": url}), Some(&page))
        .await;
    assert!(nav.get("errorText").is_none(), "{nav}");
    // The dashboard's document is the page's (its script runs once it has loaded).
    let start = Instant::now();
    while cdp
        .evaluate(&page, "location.pathname + ' ' + document.readyState")
        .await
        != "/dashboard complete"
    {
        assert!(start.elapsed() < DEADLINE, "the dashboard did not load");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let seen = cdp.evaluate(&page, DASHBOARD_WAIT).await;
    println!("dashboard: {seen}");
    let reads = seen["deliveries"].as_array().unwrap();
    assert!(reads.len() >= 2 && reads[0] != reads[1], "{seen}");
    assert_eq!(seen["status"], "live", "{seen}");
    assert!(seen["shards"].as_u64().unwrap() == 2, "{seen}");
    assert!(seen["topics"].as_u64().unwrap() > 0, "{seen}");
    assert_eq!(seen["nodes"], 1, "{seen}");

    if std::env::var("TICKCAST_BLESS_SCREENSHOT").as_deref() == Ok("1")
        && matches!(driver, Driver::Epoll)
    {
        // A minute of history in the plots, then the picture of the whole page.
        let wait = "new Promise((ok, no) => { const t0 = Date.now(); (function w() { \
                    if (+document.body.dataset.samples >= 60) return ok(true); \
                    if (Date.now() - t0 > 75000) return no(new Error('samples stalled')); \
                    setTimeout(w, 100); })(); })";
        cdp.evaluate(&page, wait).await;
        let shot = cdp
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
                Some(&page),
            )
            .await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        std::fs::write(&path, png).unwrap();
        println!("wrote {}", path.display());
    }
    reader.abort();
}

/// Evaluated in the dashboard: waits (polling the DOM, at most 30 s) until `#deliveries-per-s`
/// and `#published-per-s` show non-zero numbers and `#deliveries-per-s` has shown two different
/// ones; resolves to what it read.
const DASHBOARD_WAIT: &str = r##"new Promise((resolve, reject) => {
  const t0 = Date.now();
  const text = (id) => document.getElementById(id).textContent;
  const nonzero = (id) => parseFloat(text(id)) > 0;
  const deliveries = [];
  (function poll() {
    if (nonzero("deliveries-per-s") && nonzero("published-per-s")) {
      const d = text("deliveries-per-s");
      if (!deliveries.includes(d)) deliveries.push(d);
      if (deliveries.length >= 2) {
        return resolve({
          deliveries,
          published: text("published-per-s"),
          status: document.getElementById("status").textContent,
          samples: +document.body.dataset.samples,
          shards: document.querySelectorAll("#shards tbody tr").length,
          topics: document.querySelectorAll("#topics tbody tr").length,
          nodes: document.querySelectorAll("#nodes tbody tr").length,
        });
      }
    }
    if (Date.now() - t0 > 30000) {
      return reject(new Error("no live numbers: deliveries " + JSON.stringify(deliveries) +
        ", now " + text("deliveries-per-s") + ", published " + text("published-per-s") +
        ", status " + document.getElementById("status").textContent));
    }
    setTimeout(poll, 50);
  })();
})"##;

/// Checks the messages the page saw, in arrival order (welcome, then the ack and demo-feed data
/// frames: data of the new patterns may come before the ack); returns how many data frames.
fn check_messages(messages: &[Value]) -> usize {
    assert_eq!(messages[0]["op"], "welcome", "{}", messages[0]);
    let acks: Vec<&Value> = messages.iter().filter(|m| m["op"] == "ack").collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(
        (&acks[0]["id"], &acks[0]["topics"]),
        (&json!(1), &json!(TOPICS))
    );
    // The exact topic's position: its frames follow on from it.
    let positions = acks[0]["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 1, "{}", acks[0]);
    assert_eq!(positions[0]["topic"], TOPICS[0]);
    let mut last_seq: HashMap<&str, u64> =
        HashMap::from([(TOPICS[0], positions[0]["seq"].as_u64().unwrap())]);

    let data: Vec<&Value> = messages[1..].iter().filter(|m| m["op"] != "ack").collect();
    for m in &data {
        let topic = m["topic"].as_str().unwrap_or_else(|| panic!("{m}"));
        let seq = m["seq"].as_u64().unwrap_or_else(|| panic!("{m}"));
        assert!(m["ts"].as_u64().is_some(), "{m}");
        let d = &m["data"];
        let symbol = d["s"].as_str().unwrap_or_else(|| panic!("{m}"));
        // The topic is one the page asked for, named after the symbol in the data.
        let price = match topic.split('.').collect::<Vec<_>>()[..] {
            ["trades", s] if topic == TOPICS[0] && s == symbol => &d["p"],
            ["bbo", s] if s == symbol => &d["bp"],
            ["kline", s, "1m"] if s == symbol && d["i"] == "1m" => &d["c"],
            _ => panic!("not a demo frame of {TOPICS:?}: {m}"),
        };
        let price: f64 = price
            .as_str()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{m}"));
        assert!(price > 0.0, "{m}");
        // A subscriber that keeps up gets every frame of a topic, in seq order.
        if let Some(prev) = last_seq.insert(topic, seq) {
            assert_eq!(seq, prev + 1, "{topic} after seq {prev}: {m}");
        }
    }
    data.len()
}

/// The server's frames as the relay saw them go to the browser.
#[derive(Debug, Default, Clone, Copy)]
struct Wire {
    connections: usize,
    /// Text frames with RSV1 set (compressed, RFC 7692).
    compressed_text: usize,
    /// Text frames sent plain.
    plain_text: usize,
    /// Any other frame with RSV1 set (never allowed: control frames are not compressed).
    compressed_other: usize,
}

/// A loopback TCP relay to the server that counts the server's frames by their headers.
struct Relay {
    addr: SocketAddr,
    wire: Arc<Mutex<Wire>>,
    /// Aborted on drop, and with it every relayed connection.
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let wire = Arc::new(Mutex::new(Wire::default()));
        let counts = wire.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (browser, _) = listener.accept().await.unwrap();
                counts.lock().unwrap().connections += 1;
                conns.spawn(relay(browser, server, counts.clone()));
            }
        });
        Relay { addr, wire, task }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn wire(&self) -> Wire {
        *self.wire.lock().unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one connection: the browser's bytes as they are, the server's counted first (its
/// HTTP response head, then frame by frame) and passed on.
async fn relay(browser: TcpStream, server: SocketAddr, wire: Arc<Mutex<Wire>>) {
    let upstream = TcpStream::connect(server).await.unwrap();
    let (mut from_browser, mut to_browser) = browser.into_split();
    let (mut from_server, mut to_server) = upstream.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_browser, &mut to_server).await;
        let _ = to_server.shutdown().await;
    });
    let mut seen = Vec::new();
    let mut at = None; // where the next frame starts, once the response head is past
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match from_server.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.extend_from_slice(&buf[..n]);
        if at.is_none() {
            at = seen
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| i + 4);
        }
        while let Some(start) = at {
            let Some((hdr, len)) = server_frame_lens(&seen[start..]) else {
                break;
            };
            if seen.len() < start + hdr + len {
                break;
            }
            let (rsv1, text) = (seen[start] & 0x40 != 0, seen[start] & 0x0f == 1);
            let mut w = wire.lock().unwrap();
            match (rsv1, text) {
                (true, true) => w.compressed_text += 1,
                (false, true) => w.plain_text += 1,
                (true, false) => w.compressed_other += 1,
                (false, false) => {}
            }
            at = Some(start + hdr + len);
        }
        if to_browser.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to_browser.shutdown().await;
    up.abort();
}

/// Headless Chromium with a fresh profile, its DevTools on a free loopback port. Killed with
/// every process it started, and its profile removed, when dropped: on every exit path of a
/// test, a panic included (then its log is printed).
struct Chromium {
    child: Child,
    /// Holds `profile/` and `chromium.log`.
    dir: PathBuf,
    /// What it says it is (`Browser.getVersion`), once connected.
    product: String,
}

impl Chromium {
    fn launch(path: &str) -> Chromium {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tickcast-browser-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).unwrap();
        let log = File::create(dir.join("chromium.log")).unwrap();
        let spawned = Command::new(path)
            .args([
                "--headless=new",
                // Chromium refuses to run as root with its sandbox, and many CI containers
                // cannot give it one anyway; the page runs only this test's script.
                "--no-sandbox",
                "--no-first-run",
                "--disable-gpu",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            // Its own process group: the browser's children (zygotes, renderer, network
            // service) are killed with it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        match spawned {
            Ok(child) => Chromium {
                child,
                dir,
                product: "chromium (not connected)".into(),
            },
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("start {path}: {e}");
            }
        }
    }

    /// Connects to the browser's DevTools endpoint, once Chromium has written where it is
    /// (`DevToolsActivePort` in the profile: the port, then the path), and asks its version.
    async fn devtools(&mut self) -> Cdp {
        let file = self.dir.join("profile/DevToolsActivePort");
        let start = Instant::now();
        let url = loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if let [port, path] = text.lines().collect::<Vec<_>>()[..] {
                break format!("ws://127.0.0.1:{port}{path}");
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("chromium exited before it opened DevTools: {status}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "chromium did not open DevTools within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (ws, _) = tokio::time::timeout(DEADLINE, connect_async(&url))
            .await
            .expect("DevTools connect timed out")
            .expect("DevTools connect");
        let mut cdp = Cdp { ws, next_id: 0 };
        let version = cdp.call("Browser.getVersion", json!({}), None).await;
        self.product = version["product"].as_str().unwrap_or("?").to_string();
        println!("browser: {}", self.product);
        cdp
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "{}: its log (last 40 lines):\n{}",
                self.product,
                tail.join("\n")
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Chrome DevTools Protocol connection to the browser; commands to a page carry its session
/// (`Target.attachToTarget` with `flatten`).
struct Cdp {
    ws: Ws,
    next_id: u64,
}

impl Cdp {
    /// Sends a command and returns its result, skipping events; panics on a protocol error.
    async fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut cmd = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            cmd["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(cmd.to_string())).await.unwrap();
        let answer = tokio::time::timeout(DEADLINE, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(&t).unwrap();
                        if v["id"] == id {
                            return v;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("DevTools connection ended during {method}: {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer within {DEADLINE:?}"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Opens a blank page and returns its session id.
    async fn blank_page(&mut self) -> String {
        let target = self
            .call("Target.createTarget", json!({"url": "about:blank"}), None)
            .await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
                None,
            )
            .await;
        attached["sessionId"].as_str().unwrap().to_string()
    }

    /// Evaluates `expression` (a promise) in the page; returns the value it resolves to, or
    /// panics with the error it rejects with.
    async fn evaluate(&mut self, session: &str, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
                Some(session),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!(
                "the page's script failed: {}",
                e["exception"]["description"]
                    .as_str()
                    .unwrap_or(&e.to_string())
            );
        }
        r["result"]["value"].clone()
    }
}
