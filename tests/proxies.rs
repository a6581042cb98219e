//! The shipped proxy configurations, run with the real servers in front of two real tickcast
//! nodes: Debian's `nginx` with tuning/nginx/tickcast.conf (X-Forwarded-For) and `haproxy`
//! with tuning/haproxy/haproxy.cfg (PROXY protocol v2). Each file is rendered from the shipped
//! one by substituting only its addresses and ports; nginx also gets the few lines of its main
//! configuration a package would provide (the `http {}` context the file is included in, and
//! paths in a temporary directory). Both proxies run in the foreground as children of the
//! test, killed when it ends.
//!
//! The nodes run in cluster mode over a real `nats-server` (tests/common/cluster.rs): a client
//! that moves from a stopped node to the other can recover with `since` only where `seq`,
//! epoch and history are shared, and two memory-mode nodes would each have their own.
//!
//! Clients are real WebSocket clients (tokio-tungstenite), each connecting from its own
//! loopback address (127.0.0.x), so the per-IP limits and `/v1/connections` show whether the
//! nodes see the client or the proxy (127.0.0.1, the only trusted address). Every wait is
//! bounded by `DEADLINE` and polls an observable state, never a timed pause.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{cluster::*, proxy::*, *};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Haproxy,
}

/// A proxy server process, its files in a directory of its own; killed and removed on drop.
struct Proxy {
    addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Proxy {
    /// `kind` with its shipped configuration in front of `nodes` (the first two).
    fn start(kind: Kind, nodes: &[Server]) -> Proxy {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tickcast-proxy-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let (a, b) = (nodes[0].addr.to_string(), nodes[1].addr.to_string());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = match kind {
            Kind::Nginx => {
                let conf = render(
                    &root.join("tuning/nginx/tickcast.conf"),
                    &[
                        ("10.0.0.11:8080", &a),
                        ("10.0.0.12:8080", &b),
                        ("listen 80;", &format!("listen {addr};")),
                    ],
                );
                std::fs::write(dir.join("tickcast.conf"), conf).unwrap();
                // What the package's /etc/nginx/nginx.conf provides, here in the foreground,
                // one process (killed whole on drop), every path in `dir`.
                let d = dir.display();
                let main = format!(
                    "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr;\n\
                     events {{ worker_connections 1024; }}\n\
                     http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
                     proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
                     uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                     include {d}/tickcast.conf;\n}}\n"
                );
                std::fs::write(dir.join("nginx.conf"), main).unwrap();
                let mut c = Command::new("nginx");
                c.arg("-e").arg(dir.join("error.log"));
                c.arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf"));
                c
            }
            Kind::Haproxy => {
                let conf = render(
                    &root.join("tuning/haproxy/haproxy.cfg"),
                    &[
                        ("10.0.0.11:8080", &a),
                        ("10.0.0.12:8080", &b),
                        ("bind :80", &format!("bind {addr}")),
                    ],
                );
                std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
                let mut c = Command::new("haproxy");
                // -db: in the foreground.
                c.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {kind:?} ({e}): install nginx and haproxy (tests/run.sh does)")
            });
        let mut proxy = Proxy { addr, child, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("{kind:?} exited before listening on {addr}: {status}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{kind:?} did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shipped file at `path` with each `(from, to)` substituted; each `from` must be there, so
/// a change to the shipped file that these tests no longer match fails here, not later.
fn render(path: &Path, subs: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in subs {
        assert!(
            text.contains(from),
            "{} no longer has {from:?}",
            path.display()
        );
        text = text.replace(from, to);
    }
    text
}

/// Two cluster nodes that trust the proxy's address (127.0.0.1) and no other, with `extra`.
async fn nodes(broker: &Broker, kind: Kind, extra: &[(&str, &str)]) -> Vec<Server> {
    let mut env = vec![("TICKCAST_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]")];
    if kind == Kind::Haproxy {
        env.push(("TICKCAST_SERVER__PROXY_PROTOCOL", "true"));
    }
    env.extend_from_slice(extra);
    let nodes = vec![
        node_with(broker, "node-a", &env),
        node_with(broker, "node-b", &env),
    ];
    for n in &nodes {
        wait_cluster(n, 2).await;
    }
    nodes
}

/// Prints the proxies' versions: Debian replaces them with its updates, so a run's log says
/// which ones passed or failed.
fn versions() {
    for (program, flag) in [("nginx", "-v"), ("haproxy", "-v")] {
        if let Ok(out) = Command::new(program).arg(flag).output() {
            let text = [out.stdout, out.stderr].concat();
            let first = String::from_utf8_lossy(&text);
            eprintln!("{}", first.lines().next().unwrap_or(program));
        }
    }
}

/// A WebSocket through `proxy` from `from` with extra upgrade headers (see [`ws_from`]).
async fn ws_via(proxy: &Proxy, from: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    ws_from(proxy.addr, from, b"", headers).await
}

/// The client addresses both nodes list, sorted.
async fn all_ips(nodes: &[Server]) -> Vec<String> {
    let mut ips = Vec::new();
    for n in nodes {
        ips.extend(connection_ips(n).await);
    }
    ips.sort();
    ips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_the_client_address_and_the_per_ip_limit_counts_it() {
    per_ip_limits_count_the_client(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_passes_the_client_address_and_the_per_ip_limit_counts_it() {
    per_ip_limits_count_the_client(Kind::Haproxy).await;
}

/// Two clients' addresses, each with a limit of two connections per address: each is refused
/// its third (429 through the proxy), although all of them come from the one proxy; the nodes
/// list the clients' addresses. A client naming another address (an `X-Forwarded-For` of its
/// own to nginx, a PROXY header of its own behind HAProxy's) does not get past its limit.
async fn per_ip_limits_count_the_client(kind: Kind) {
    versions();
    let broker = Broker::start(Engine::Nats);
    let limit = [("TICKCAST_LIMITS__CONNECTIONS_PER_IP_MAX", "2")];
    let nodes = nodes(&broker, kind, &limit).await;
    let proxy = Proxy::start(kind, &nodes);
    let mut open = Vec::new();
    for from in ["127.0.0.10", "127.0.0.11"] {
        for _ in 0..2 {
            open.push(ws_via(&proxy, from, &[]).await.unwrap());
        }
        assert_eq!(ws_via(&proxy, from, &[]).await.err(), Some(429), "{from}");
    }
    assert_eq!(
        all_ips(&nodes).await,
        ["127.0.0.10", "127.0.0.10", "127.0.0.11", "127.0.0.11"]
    );
    match kind {
        Kind::Nginx => {
            let spoof = [("X-Forwarded-For", "203.0.113.9")];
            assert_eq!(ws_via(&proxy, "127.0.0.10", &spoof).await.err(), Some(429));
            open.push(ws_via(&proxy, "127.0.0.12", &spoof).await.unwrap());
            let ips = all_ips(&nodes).await;
            assert!(ips.contains(&"127.0.0.12".to_string()), "{ips:?}");
            assert!(!ips.contains(&"203.0.113.9".to_string()), "{ips:?}");
        }
        Kind::Haproxy => {
            // The node reads HAProxy's header; a second one, from the client, is not HTTP.
            let mut tcp = tcp_from("127.0.0.12".parse().unwrap(), proxy.addr).await;
            let src = "203.0.113.9:1".parse().unwrap();
            let mut bytes = proxy_v1(src, proxy.addr);
            bytes.extend_from_slice(&upgrade_request(""));
            tcp.write_all(&bytes).await.unwrap();
            let (status, _) = parse_http(&read_to_close(&mut tcp).await);
            assert_eq!(status, 400);
        }
    }
    let mut events = 0.0;
    for n in &nodes {
        let event = match kind {
            Kind::Nginx => "forwarded",
            Kind::Haproxy => "header",
        };
        events += n
            .metric_with("tickcast_proxy_events_total", "event", event)
            .await;
    }
    assert!(
        events >= 6.0,
        "{events} client addresses taken from the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_moves_a_stopped_nodes_clients_to_the_other_without_a_gap() {
    clients_move_to_the_other_node_without_a_gap(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_moves_a_drained_nodes_clients_to_the_other_without_a_gap() {
    clients_move_to_the_other_node_without_a_gap(Kind::Haproxy).await;
}

/// Clients from eight addresses subscribe through the proxy while a publisher publishes (on the
/// node that stays, through the broker). One node that holds clients is stopped gracefully:
/// with SIGTERM behind nginx (close 1001), drained with SIGUSR2 behind HAProxy (close 1012;
/// its `/ready` turns 503 and the checks take it out). Its clients reconnect through the proxy,
/// which takes them to the other node, resubscribe with `since` and get every message once, in
/// order, no `gap`; the other node lists them under their own addresses.
async fn clients_move_to_the_other_node_without_a_gap(kind: Kind) {
    const CLIENTS: u8 = 8;
    const MESSAGES: u64 = 30;
    versions();
    let broker = Broker::start(Engine::Nats);
    let drain = [("TICKCAST_TIMEOUTS__DRAIN_S", "1")];
    let mut nodes = nodes(&broker, kind, &drain).await;
    let proxy = Proxy::start(kind, &nodes);
    let addrs: Vec<IpAddr> = (0..CLIENTS)
        .map(|i| IpAddr::from([127, 0, 0, 20 + i]))
        .collect();
    let from = addrs.iter().map(|&ip| Some(ip));
    let clients = recovering_clients(proxy.addr, from, "md.px", MESSAGES).await;
    // The node with the most clients stops (behind nginx's ip_hash: all of them).
    let counts = [
        connection_ips(&nodes[0]).await.len(),
        connection_ips(&nodes[1]).await.len(),
    ];
    assert_eq!(counts[0] + counts[1], addrs.len());
    let victim = usize::from(counts[1] > counts[0]);
    let mut stopped = nodes.remove(victim);
    let stays = &nodes[0];
    let publish = |i: u64| async move {
        let body = json!({"topic": "md.px", "data": {"i": i}, "idem": format!("px-{i}")});
        let start = Instant::now();
        loop {
            let (status, answer) = stays
                .http("POST", "/v1/publish", Some(&body.to_string()))
                .await;
            match status {
                200 => return serde_json::from_str::<Value>(&answer).unwrap(),
                // The broker did not confirm in time: the same publish again (same idem).
                503 => assert!(start.elapsed() < DEADLINE, "publish {i}: {answer}"),
                _ => panic!("publish {i}: {status} {answer}"),
            }
        }
    };
    for i in 1..=MESSAGES / 3 {
        assert_eq!(publish(i).await["seq"], i);
    }
    let pid = rustix::process::Pid::from_raw(stopped.pid() as i32).unwrap();
    let (signal, code) = match kind {
        Kind::Nginx => (rustix::process::Signal::TERM, 1001),
        Kind::Haproxy => (rustix::process::Signal::USR2, 1012),
    };
    rustix::process::kill_process(pid, signal).unwrap();
    for i in MESSAGES / 3 + 1..=MESSAGES * 2 / 3 {
        assert_eq!(publish(i).await["seq"], i);
    }
    let status = tokio::task::spawn_blocking(move || stopped.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "the stopped node exits cleanly: {status}");
    // Every client is on the node that stays, under its own address.
    let want: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    let start = Instant::now();
    loop {
        let mut ips = connection_ips(stays).await;
        ips.sort();
        if ips == want {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "clients on the node that stays: {ips:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in MESSAGES * 2 / 3 + 1..=MESSAGES {
        assert_eq!(publish(i).await["seq"], i);
    }
    let moved = every_client_got_everything(clients, MESSAGES, code).await;
    assert_eq!(
        moved, counts[victim],
        "the stopped node's clients, and only they, moved"
    );
    drop(proxy);
}
