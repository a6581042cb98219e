//! Cluster mode with real brokers (docs/CLUSTER.md): a `nats-server -js` or `redis-server` on
//! a free loopback port with its data in a fresh directory, tickcast nodes on it, and a client
//! that recovers with `since` across restarts. Used by tests/cluster.rs and tests/proxies.rs.

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Nats,
    Redis,
}

/// A loopback port for a broker: free now, and below the kernel's ephemeral port range. A port
/// from that range (what binding port 0 gives) is free only until the kernel hands it out
/// again, as the source port of any outgoing connection or to any server binding port 0, and
/// a broker's port stays unbound for a while: from here until its process listens, and again
/// while a test restarts it. A port taken meanwhile makes the broker fail to start, or the
/// nodes reconnect to whatever has it. Each port is handed out once per test process.
pub fn free_port() -> u16 {
    static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let range = 10_000..ephemeral_low.max(10_000);
    if range.len() < 1000 {
        // No room below the ephemeral range on this machine: the kernel's choice, then.
        return TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    for _ in 0..1000 {
        let port = fastrand::u16(range.clone());
        if TAKEN.lock().unwrap().insert(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {range:?}");
}

/// A broker process on a free loopback port, with its data in a fresh directory.
pub struct Broker {
    pub engine: Engine,
    pub port: u16,
    /// nats-server's HTTP monitoring port.
    pub monitor: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Redis keeps its data across a restart (append-only file); NATS keeps the stream when
    /// the nodes use file storage (their default).
    pub persistent: bool,
    /// The broker's own NATS client for raw publishes: one connection, so what a test
    /// publishes in order reaches the broker in order (one connection per publish did not:
    /// the server reads each connection on its own).
    pub raw_nats: tokio::sync::OnceCell<async_nats::Client>,
    /// NATS: a user with only the permissions docs/CLUSTER.md lists, the nodes connecting as it
    /// (`nats://user:password@…`); `None`: no authorization.
    pub account: Option<(&'static str, &'static str)>,
    /// NATS: this server's part in a cluster of servers (`Broker::nats_cluster`); `None`: a
    /// server on its own.
    pub routes: Option<Routes>,
}

/// A NATS server's place in a cluster of servers: its name, its own route port and every
/// server's route port (its own among them: nats-server ignores a route to itself).
#[derive(Debug, Clone)]
pub struct Routes {
    pub name: String,
    pub port: u16,
    pub all: Vec<u16>,
}

impl Broker {
    pub fn start(engine: Engine) -> Broker {
        let mut b = Broker::reserve(engine);
        b.spawn();
        b
    }

    /// A broker's port and directory, the process not started yet.
    pub fn reserve(engine: Engine) -> Broker {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tickcast-broker-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory left by an earlier process with the same id would hold its data.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Broker {
            engine,
            port: free_port(),
            monitor: free_port(),
            dir,
            child: None,
            persistent: true,
            raw_nats: tokio::sync::OnceCell::new(),
            account: None,
            routes: None,
        }
    }

    /// `n` nats-servers with JetStream, routed into one cluster (JetStream clustered: a
    /// stream with `cluster.nats_replicas = 3` survives the loss of one of three), each on its
    /// own client port and data directory; returns once every server has its routes to all
    /// the others (so a client connecting now is told of them all).
    pub async fn nats_cluster(n: usize) -> Vec<Broker> {
        let mut servers: Vec<Broker> = (0..n).map(|_| Broker::reserve(Engine::Nats)).collect();
        let all: Vec<u16> = servers.iter().map(|_| free_port()).collect();
        for (i, s) in servers.iter_mut().enumerate() {
            s.routes = Some(Routes {
                name: format!("n{i}"),
                port: all[i],
                all: all.clone(),
            });
            s.spawn();
        }
        for s in &servers {
            let start = Instant::now();
            loop {
                let v: Value = serde_json::from_str(&http_get(s.monitor, "/routez").await).unwrap();
                if v["num_routes"].as_u64() >= Some(n as u64 - 1) {
                    break;
                }
                assert!(start.elapsed() < DEADLINE, "routes not formed: {v}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        servers
    }

    /// NATS: the names of the clients connected to this server (`/connz`).
    pub async fn client_names(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&http_get(self.monitor, "/connz").await).unwrap();
        v["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some(c["name"].as_str()?.to_string()))
            .collect()
    }

    pub fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = match self.engine {
            Engine::Nats => {
                let mut c = Command::new("nats-server");
                c.args(["-js", "-a", "127.0.0.1", "-p", &port])
                    .args(["-m", &self.monitor.to_string()])
                    .arg("-sd")
                    .arg(&self.dir);
                if let Some(r) = &self.routes {
                    let routes: Vec<String> = r
                        .all
                        .iter()
                        .map(|p| format!("nats://127.0.0.1:{p}"))
                        .collect();
                    c.args(["--server_name", &r.name, "--cluster_name", "tc-test"])
                        .args(["--cluster", &format!("nats://127.0.0.1:{}", r.port)])
                        .args(["--routes", &routes.join(",")]);
                }
                if let Some((user, pass)) = self.account {
                    // The permissions a node needs, no more (docs/CLUSTER.md, "NATS").
                    let conf = self.dir.join("nats.conf");
                    std::fs::write(
                        &conf,
                        format!(
                            "authorization {{ users = [ {{ user: {user}, password: {pass}, \
                             permissions: {{ publish: [\"tc.>\", \"$JS.API.>\", \"$JS.ACK.>\"], \
                             subscribe: [\"tc.>\", \"_INBOX.>\"] }} }} ] }}\n"
                        ),
                    )
                    .unwrap();
                    c.arg("-c").arg(conf);
                }
                c
            }
            Engine::Redis => {
                let mut c = Command::new("redis-server");
                // Append-only with fsync per write: a killed server keeps what it confirmed.
                let aof = if self.persistent { "yes" } else { "no" };
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                    .args(["--appendonly", aof, "--appendfsync", "always"])
                    .arg("--dir")
                    .arg(&self.dir);
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the {:?} broker ({e}); install nats-server and redis-server \
                     (.ci/run does)",
                    self.engine
                )
            });
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the {:?} broker exited before listening on {}: {status}",
                    self.engine, self.port
                );
            }
            assert!(start.elapsed() < DEADLINE, "broker did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        match self.engine {
            Engine::Nats => match self.account {
                Some((user, pass)) => format!("nats://{user}:{pass}@127.0.0.1:{}", self.port),
                None => format!("nats://127.0.0.1:{}", self.port),
            },
            Engine::Redis => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// SIGKILL, then the same broker again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL: the server is gone (its port refuses), its data stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How many broker subscriptions carry `topic`'s live traffic (one per interested node).
    pub async fn live_subscribers(&self, topic: &str) -> usize {
        match self.engine {
            Engine::Nats => {
                let body = http_get(self.monitor, "/subsz?subs=1&limit=100000").await;
                let v: Value = serde_json::from_str(&body).unwrap();
                let subject = format!("tc.live.{topic}");
                v["subscriptions_list"]
                    .as_array()
                    .map(|l| l.iter().filter(|s| s["subject"] == *subject).count())
                    .unwrap_or(0)
            }
            Engine::Redis => {
                let mut c = self.redis().await;
                let (_, n): (String, usize) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(format!("tc.live.{topic}"))
                    .query_async(&mut c)
                    .await
                    .unwrap();
                n
            }
        }
    }

    /// How many broker subscriptions take external publishes (`tc.in.>`); NATS only (see
    /// `external_publishers_go_through_the_broker`): 1 on Redis.
    pub async fn ingest_subscribers(&self) -> usize {
        match self.engine {
            Engine::Nats => {
                let body = http_get(self.monitor, "/subsz?subs=1&limit=100000").await;
                let v: Value = serde_json::from_str(&body).unwrap();
                v["subscriptions_list"]
                    .as_array()
                    .map(|l| l.iter().filter(|s| s["subject"] == "tc.in.>").count())
                    .unwrap_or(0)
            }
            Engine::Redis => 1,
        }
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Puts raw bytes on a live channel, as a faulty broker path could deliver them.
    pub async fn raw_live(&self, topic: &str, payload: Vec<u8>) {
        self.publish_raw(format!("tc.live.{topic}"), payload).await;
    }

    /// A core NATS publish or a Redis `PUBLISH`, with the broker's own client.
    pub async fn publish_raw(&self, subject: String, payload: Vec<u8>) {
        match self.engine {
            Engine::Nats => {
                let c = self
                    .raw_nats
                    .get_or_init(|| async { async_nats::connect(self.url()).await.unwrap() })
                    .await;
                c.publish(subject, payload.into()).await.unwrap();
                c.flush().await.unwrap();
            }
            Engine::Redis => {
                let mut c = self.redis().await;
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(subject)
                    .arg(payload)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }
    }

    /// Stores a message of `topic` at the broker as a node's publish would, but without the
    /// live copy reaching anyone yet (Redis: history and sequence only; NATS: into the stream,
    /// whose republished copy then races the test's next step).
    pub async fn store_only(&self, topic: &str, env: Vec<u8>, seq: u64, epoch: u64) {
        match self.engine {
            Engine::Nats => {
                let c = async_nats::connect(self.url()).await.unwrap();
                let js = async_nats::jetstream::new(c);
                js.publish(format!("tc.msg.{topic}"), env.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
            Engine::Redis => {
                let mut c = self.redis().await;
                let _: () = redis::pipe()
                    .cmd("HSET")
                    .arg(format!("tc:m:{{{topic}}}"))
                    .arg("s")
                    .arg(seq)
                    .arg("e")
                    .arg(epoch)
                    .ignore()
                    .cmd("XADD")
                    .arg(format!("tc:h:{{{topic}}}"))
                    .arg(format!("{seq}-1"))
                    .arg("m")
                    .arg(env)
                    .ignore()
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }
    }

    /// What an external trading system does: plain JSON on `<prefix>.in.<topic>` with the
    /// broker's own client.
    pub async fn external_publish(&self, topic: &str, body: &str) {
        self.publish_raw(format!("tc.in.{topic}"), body.as_bytes().to_vec())
            .await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // HTTP/1.0: the answer comes whole, not chunked, and the connection closes after it.
    let req = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_http(&raw).1
}

/// API key of user "alice" (plus the harness' admin key).
pub const ALICE_KEY: &str = "alice-key";

pub fn api_keys() -> String {
    let sha = |k: &str| {
        ring::digest::digest(&ring::digest::SHA256, k.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    format!(
        "[{{name=\"test-admin\",sha256=\"{}\",admin=true,pubs=[\">\"]}},\
         {{name=\"alice\",sha256=\"{}\",subs=[\"user.{{sub}}.>\"]}}]",
        sha(ADMIN_KEY),
        sha(ALICE_KEY)
    )
}

/// Node `id` of the cluster on `broker`; `md.>` topics keep 10,000 messages of history.
pub fn node(broker: &Broker, id: &str) -> Server {
    node_with(broker, id, &[])
}

/// `node` with extra `TICKCAST_*` settings.
pub fn node_with(broker: &Broker, id: &str, extra: &[(&str, &str)]) -> Server {
    let url = broker.url();
    let engine = match broker.engine {
        Engine::Nats => "nats",
        Engine::Redis => "redis",
    };
    let keys = api_keys();
    let mut env = vec![
        ("TICKCAST_CLUSTER__ENGINE", engine),
        ("TICKCAST_CLUSTER__URL", url.as_str()),
        ("TICKCAST_CLUSTER__NODE_ID", id),
        ("TICKCAST_CLUSTER__HEARTBEAT_MS", "100"),
        ("TICKCAST_CLUSTER__NODE_TTL_MS", "600"),
        ("TICKCAST_CLUSTER__RECONNECT_MAX_MS", "300"),
        ("TICKCAST_TOPICS", "[{pattern=\"md.>\",history_size=10000}]"),
        ("TICKCAST_AUTH__API_KEYS", keys.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(Driver::IoUring, &env, &[])
}

/// `node_with` listening on `listen`.
pub fn node_on(broker: &Broker, id: &str, extra: &[(&str, &str)], listen: &str) -> Server {
    let url = broker.url();
    let keys = api_keys();
    let mut env = vec![
        ("TICKCAST_CLUSTER__ENGINE", "nats"),
        ("TICKCAST_CLUSTER__URL", url.as_str()),
        ("TICKCAST_CLUSTER__NODE_ID", id),
        ("TICKCAST_CLUSTER__HEARTBEAT_MS", "100"),
        ("TICKCAST_CLUSTER__NODE_TTL_MS", "600"),
        ("TICKCAST_TOPICS", "[{pattern=\"md.>\",history_size=10000}]"),
        ("TICKCAST_AUTH__API_KEYS", keys.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start_on(listen, Driver::IoUring, &env, &[])
}

/// Three nodes, each seeing the broker and the two others.
pub async fn cluster(broker: &Broker) -> Vec<Server> {
    let nodes: Vec<Server> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|id| node(broker, id))
        .collect();
    for n in &nodes {
        wait_cluster(n, 3).await;
    }
    nodes
}

/// Polls `/v1/cluster` until the broker is up and `count` nodes are live.
pub async fn wait_cluster(n: &Server, count: usize) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = n.http("GET", "/v1/cluster", None).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        // NATS with the live reader in shard 0: its connection too (absent otherwise).
        let live = v["live"] == "up" || v["live"].is_null();
        if v["broker"] == "up" && live && v["nodes"].as_array().map(Vec::len) == Some(count) {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "cluster not formed: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that recovers across restarts: subscribes to `topic` at `addr` (from the loopback
/// address `from`, if given: a client of its own behind a proxy), and after every close
/// reconnects to the same address and resubscribes with `since` (the last `seq` it has and
/// the epoch its last ack gave); a `gap` fails the test. Says so on `subscribed` after its
/// first subscribe. Returns the seqs it received, the close codes it got and how many
/// connections it made, once it has `last`.
pub async fn recovering_client(
    addr: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    topic: &'static str,
    subscribed: tokio::sync::mpsc::UnboundedSender<()>,
    last: u64,
) -> (Vec<u64>, Vec<u16>, usize) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{addr}/ws");
    let (mut seqs, mut codes, mut conns) = (Vec::new(), Vec::new(), 0usize);
    let mut epoch = "0000000000000000".to_string();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE * 2, "client never got {last}");
        // While the address changes hands a connect may be refused: again at once (bounded).
        let connect = async {
            let tcp = match from {
                None => tokio::net::TcpStream::connect(addr).await?,
                Some(ip) => {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.bind(std::net::SocketAddr::new(ip, 0))?;
                    socket.connect(addr).await?
                }
            };
            let tcp = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
            tokio_tungstenite::client_async(&url, tcp)
                .await
                .map_err(std::io::Error::other)
        };
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(DEADLINE, connect).await else {
            tokio::task::yield_now().await;
            continue;
        };
        conns += 1;
        assert_eq!(recv_json(&mut ws).await["op"], "welcome");
        let mut sub = json!({"op":"subscribe","id":1,"topics":[topic]});
        if let Some(&seq) = seqs.last() {
            sub["since"] = json!({ topic: {"seq": seq, "epoch": epoch} });
        }
        send_json(&mut ws, sub).await;
        loop {
            let m = recv_json(&mut ws).await;
            if m["op"] == "ack" {
                epoch = m["positions"][0]["epoch"].as_str().unwrap().to_string();
                break;
            }
            assert_ne!(m["op"], "gap", "{m}");
            assert_ne!(m["op"], "error", "{m}");
            if m["topic"] == topic {
                seqs.push(m["seq"].as_u64().unwrap());
            }
        }
        if conns == 1 {
            let _ = subscribed.send(());
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if seqs.last() == Some(&last) {
                return (seqs, codes, conns);
            }
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let m: Value = serde_json::from_str(&t).unwrap();
                    assert_ne!(m["op"], "gap", "{m}");
                    if m["topic"] == topic {
                        seqs.push(m["seq"].as_u64().unwrap());
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    codes.push(frame.map_or(1005, |f| u16::from(f.code)));
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("connection error instead of a close frame: {e}"),
                Ok(None) => panic!("connection ended without a close frame"),
                Err(_) => panic!("nothing within the deadline at seq {:?}", seqs.last()),
            }
        }
    }
}

/// What each [`recovering_client`] returns: the seqs it got, its close codes, its connections.
pub type Recovered = (Vec<u64>, Vec<u16>, usize);

/// One [`recovering_client`] of `topic` at `addr` per entry of `from`; returns once every one
/// has subscribed.
pub async fn recovering_clients(
    addr: std::net::SocketAddr,
    from: impl IntoIterator<Item = Option<std::net::IpAddr>>,
    topic: &'static str,
    last: u64,
) -> tokio::task::JoinSet<Recovered> {
    let (subscribed, mut acks) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = tokio::task::JoinSet::new();
    for ip in from {
        clients.spawn(recovering_client(addr, ip, topic, subscribed.clone(), last));
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for n in 0..clients.len() {
        tokio::time::timeout_at(deadline, acks.recv())
            .await
            .unwrap_or_else(|_| panic!("{n} of {} clients subscribed", clients.len()));
    }
    clients
}

/// Waits for every client: each got seqs 1..=`last` once, in order, and was closed only with
/// `code`. Returns how many of them reconnected.
pub async fn every_client_got_everything(
    mut clients: tokio::task::JoinSet<Recovered>,
    last: u64,
    code: u16,
) -> usize {
    let mut reconnected = 0;
    while let Some(r) = clients.join_next().await {
        let (seqs, codes, conns) = r.unwrap();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "every message once, in order"
        );
        assert!(codes.iter().all(|&c| c == code), "only {code}: {codes:?}");
        assert_eq!(
            conns,
            codes.len() + 1,
            "one connection per close, and one more"
        );
        reconnected += usize::from(conns > 1);
    }
    reconnected
}

/// What a [`Relay`] does to a picked connection.
pub enum Ctl {
    /// Writes these bytes to the client, as if the broker sent them.
    Write(Vec<u8>),
    /// Closes the connection.
    Cut,
    /// Stops passing on what the broker sends (the client's bytes still reach it): a broker
    /// that went silent without closing anything.
    Stall,
}

/// A TCP relay in front of a broker that can cut, or write into, the connections whose client
/// named itself with `marker` in its first bytes (NATS: `CONNECT {"name":…}`), as a broken
/// network path or a faulty broker would.
pub struct Relay {
    pub port: u16,
    /// Per matched connection: what to do to it.
    picked: std::sync::Arc<Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Ctl>>>>,
    /// While set, a matched connection is closed as soon as it is matched.
    refuse: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    pub async fn start(upstream: u16, marker: &'static str) -> Relay {
        // The kernel's choice, bound at once: unlike a broker's, the relay's port is never
        // given up and bound again, so it needs no port reserved below the ephemeral range
        // (`free_port`'s check-then-bind left a moment in which the bind could fail).
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the relay's port");
        let port = listener.local_addr().unwrap().port();
        let picked = std::sync::Arc::new(Mutex::new(Vec::new()));
        let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (list, no) = (picked.clone(), refuse.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                tokio::spawn(relay_one(client, server, marker, list.clone(), no.clone()));
            }
        });
        Relay {
            port,
            picked,
            refuse,
        }
    }

    /// From now on (`true`) closes matched connections as soon as they are matched, until
    /// called with `false`.
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    /// Connections matched so far (each a connection the client made).
    pub fn matched(&self) -> usize {
        self.picked.lock().unwrap().len()
    }

    /// Does `what()` to every open matched connection.
    pub fn apply(&self, what: impl Fn() -> Ctl) {
        for tx in self.picked.lock().unwrap().iter() {
            let _ = tx.send(what());
        }
    }
}

async fn relay_one(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    marker: &'static str,
    picked: std::sync::Arc<Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Ctl>>>>,
    refuse: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let (tx, mut ctl) = tokio::sync::mpsc::unbounded_channel::<Ctl>();
    let mut tx = Some(tx);
    // Client to broker; the connection is picked when the client's bytes name it.
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        loop {
            let n = match client_rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if tx.is_some() && seen.len() < 4096 {
                seen.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&seen).contains(marker) {
                    let tx = tx.take().unwrap();
                    if refuse.load(Ordering::SeqCst) {
                        let _ = tx.send(Ctl::Cut);
                    }
                    picked.lock().unwrap().push(tx);
                }
            }
            if server_wr.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    // Broker to client, and what the test does.
    let mut buf = vec![0u8; 64 * 1024];
    let mut stalled = false;
    loop {
        tokio::select! {
            read = server_rd.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !stalled && client_wr.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Some(what) = ctl.recv() => match what {
                Ctl::Cut => {
                    let _ = client_wr.shutdown().await;
                    return;
                }
                Ctl::Stall => stalled = true,
                Ctl::Write(bytes) => {
                    if client_wr.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}
