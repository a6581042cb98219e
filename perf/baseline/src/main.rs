//! The baseline tickcast is measured against: the fan-out server most Rust teams would write first.
//!
//! Deliberately naive, and deliberately so in the usual ways:
//! - multi-threaded tokio, one task per connection, `tokio-tungstenite` with default settings
//!   (128 KiB read buffer per connection, unbounded write buffer, one flush per message);
//! - one `tokio::sync::broadcast` channel per topic, one forwarder task per (connection, topic);
//! - the data frame JSON is serialized again for every subscriber (`serde_json::to_string` in the
//!   forwarder), from a parsed `serde_json::Value`.
//!
//! One concession to fairness: `TCP_NODELAY` is set, as almost every production server does, so
//! Nagle's algorithm does not add delayed-ACK stalls to the latency figures.
//!
//! `--deflate`: permessage-deflate (RFC 7692) the way a naive server, and most servers by
//! default, do it, as the baseline for tickcast's compress-once: a client that offers it gets
//! `Sec-WebSocket-Extensions: permessage-deflate` (no `server_no_context_takeover`), and its
//! connection gets its own zlib compressor (flate2 on zlib-rs, level 6, 32 KiB window, created
//! at its first data message as Node `ws` does) that keeps its context from message to message.
//! So every subscriber compresses its own copy of every message: one compression per delivery,
//! not per publish. Data frames of at least 128 bytes (tickcast's `deflate.min_bytes`) are
//! compressed with a sync flush, the 0x00 0x00 0xff 0xff tail removed (§7.2.1), and written as
//! a raw tungstenite frame with RSV1 set (tokio-tungstenite 0.28 has no permessage-deflate);
//! replies go plain. Intentionally naive, not a model: it cannot read compressed client
//! messages (tungstenite refuses RSV1 frames), which the bench never sends.
//!
//! It speaks the protocol v1 subset the benchmarks use: `welcome`; `subscribe`/`unsubscribe` with
//! exact topics (wildcards are refused with `unsupported`) and their `ack`; `publish` with or
//! without `id` (ack carries the topic's `seq`); data frames `{"topic","seq","ts","data"}`; the
//! `ping` op answered by `pong`; a WebSocket ping every 20 s.
//!
//! Usage: `tickcast-baseline --listen 127.0.0.1:9100 --threads 2 [--deflate]`. Prints
//! `listening on ADDR`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flate2::{Compress, Compression, FlushCompress};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{broadcast, mpsc},
    task::JoinHandle,
};
use tokio_tungstenite::{
    accept_hdr_async,
    tungstenite::{
        Message,
        handshake::server::{ErrorResponse, Request, Response},
        http::{HeaderValue, StatusCode},
        protocol::frame::{
            Frame,
            coding::{Data, OpCode},
        },
    },
};

/// Messages a slow subscriber may fall behind before it misses some (the broadcast ring size).
const TOPIC_RING_MESSAGES: usize = 1024;
/// Outgoing messages queued per connection before forwarders wait.
const CONN_QUEUE_MESSAGES: usize = 1024;
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// `--deflate`: data frames shorter than this go plain (tickcast's `deflate.min_bytes`).
const DEFLATE_MIN_BYTES: usize = 128;
/// `--deflate`: zlib's default level (Node `ws`, Python `websockets` and tickcast use 6 too).
const DEFLATE_LEVEL: u32 = 6;

/// One connection's permessage-deflate compressor, with context takeover.
struct ConnDeflate {
    /// Created at the first compressed message (an idle connection holds none).
    z: Option<Compress>,
    out: Vec<u8>,
}

impl ConnDeflate {
    /// The frame for `text`: compressed with RSV1 set when long enough, else plain.
    fn frame(&mut self, text: &str) -> Message {
        if text.len() < DEFLATE_MIN_BYTES {
            return Message::Text(text.into());
        }
        let z = self
            .z
            .get_or_insert_with(|| Compress::new(Compression::new(DEFLATE_LEVEL), false));
        self.out.clear();
        self.out.reserve(text.len() + 64);
        let mut input = text.as_bytes();
        loop {
            let before = z.total_in();
            z.compress_vec(input, &mut self.out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer");
            input = &input[(z.total_in() - before) as usize..];
            // Done when all input is in and the flush fit (room left after the output).
            if input.is_empty() && self.out.len() < self.out.capacity() {
                break;
            }
            self.out.reserve(self.out.capacity());
        }
        // RFC 7692 §7.2.1: a sync flush ends with 0x00 0x00 0xff 0xff, removed on the wire.
        debug_assert!(self.out.ends_with(&[0, 0, 0xff, 0xff]));
        self.out.truncate(self.out.len() - 4);
        let mut frame = Frame::message(self.out.clone(), OpCode::Data(Data::Text), true);
        frame.header_mut().rsv1 = true;
        Message::Frame(frame)
    }
}

struct Published {
    topic: Arc<str>,
    seq: u64,
    ts: u64,
    data: Value,
}

struct Topic {
    tx: broadcast::Sender<Arc<Published>>,
    seq: u64,
}

#[derive(Default)]
struct Hub {
    topics: Mutex<HashMap<String, Topic>>,
    next_conn: AtomicU64,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientOp {
    Subscribe {
        id: Option<u64>,
        topics: Vec<String>,
    },
    Unsubscribe {
        id: Option<u64>,
        topics: Vec<String>,
    },
    Publish {
        id: Option<u64>,
        topic: String,
        data: Value,
    },
    Ping {
        id: Option<u64>,
    },
}

#[derive(Serialize)]
struct DataFrame<'a> {
    topic: &'a str,
    seq: u64,
    ts: u64,
    data: &'a Value,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn valid_exact_topic(t: &str) -> bool {
    !t.is_empty()
        && t.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_:@-".contains(&b))
        })
}

impl Hub {
    fn subscribe(&self, topic: &str) -> broadcast::Receiver<Arc<Published>> {
        let mut topics = self.topics.lock().unwrap();
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| Topic {
                tx: broadcast::channel(TOPIC_RING_MESSAGES).0,
                seq: 0,
            })
            .tx
            .subscribe()
    }

    fn publish(&self, topic: &str, data: Value) -> u64 {
        let mut topics = self.topics.lock().unwrap();
        let entry = topics.entry(topic.to_owned()).or_insert_with(|| Topic {
            tx: broadcast::channel(TOPIC_RING_MESSAGES).0,
            seq: 0,
        });
        entry.seq += 1;
        let msg = Published {
            topic: Arc::from(topic),
            seq: entry.seq,
            ts: now_us(),
            data,
        };
        // No receivers is not an error for a pub/sub hub.
        let _ = entry.tx.send(Arc::new(msg));
        entry.seq
    }
}

/// One task per (connection, topic): receive from the topic's broadcast, serialize for this
/// subscriber, queue to the connection.
fn spawn_forwarder(
    mut rx: broadcast::Receiver<Arc<Published>>,
    out: mpsc::Sender<Message>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(p) => {
                    let frame = DataFrame {
                        topic: &p.topic,
                        seq: p.seq,
                        ts: p.ts,
                        data: &p.data,
                    };
                    let text = serde_json::to_string(&frame).expect("serializable");
                    if out.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                // The naive server drops what a slow subscriber missed and carries on.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

fn error_reply(id: Option<u64>, code: &str, message: &str) -> String {
    json!({"op": "error", "id": id, "code": code, "message": message}).to_string()
}

/// Whether `req` offers permessage-deflate (any parameters: this server answers with none,
/// which every offer allows, RFC 7692 §7.1).
fn offers_deflate(req: &Request) -> bool {
    req.headers()
        .get_all("sec-websocket-extensions")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|ext| {
            ext.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("permessage-deflate"))
        })
}

async fn handle(stream: TcpStream, hub: Arc<Hub>, deflate: bool) {
    let _ = stream.set_nodelay(true);
    let agreed = std::sync::atomic::AtomicBool::new(false);
    // The error type is tungstenite's callback contract, large or not.
    #[allow(clippy::result_large_err)]
    let check_path = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == "/ws" {
            if deflate && offers_deflate(req) {
                resp.headers_mut().insert(
                    "sec-websocket-extensions",
                    HeaderValue::from_static("permessage-deflate"),
                );
                agreed.store(true, Ordering::Relaxed);
            }
            Ok(resp)
        } else {
            let mut err = ErrorResponse::new(Some("not found".into()));
            *err.status_mut() = StatusCode::NOT_FOUND;
            Err(err)
        }
    };
    let Ok(ws) = accept_hdr_async(stream, check_path).await else {
        return;
    };
    let mut deflater = agreed.load(Ordering::Relaxed).then(|| ConnDeflate {
        z: None,
        out: Vec::new(),
    });
    let (mut sink, mut source) = ws.split();
    let conn = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let welcome = json!({"op": "welcome", "conn": conn.to_string(), "shard": 0,
        "version": "baseline-0.1", "ping_interval_s": PING_INTERVAL.as_secs()});
    if sink
        .send(Message::Text(welcome.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(CONN_QUEUE_MESSAGES);
    let mut forwarders: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            incoming = source.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                let reply = match serde_json::from_str::<ClientOp>(&text) {
                    Err(e) => Some(error_reply(None, "bad_request", &e.to_string())),
                    Ok(ClientOp::Subscribe { id, topics }) => {
                        if let Some(bad) = topics.iter().find(|t| !valid_exact_topic(t)) {
                            Some(error_reply(id, "unsupported", &format!("not an exact topic: {bad}")))
                        } else {
                            for t in &topics {
                                if !forwarders.contains_key(t) {
                                    let handle = spawn_forwarder(hub.subscribe(t), out_tx.clone());
                                    forwarders.insert(t.clone(), handle);
                                }
                            }
                            id.map(|id| json!({"op": "ack", "id": id, "topics": topics}).to_string())
                        }
                    }
                    Ok(ClientOp::Unsubscribe { id, topics }) => {
                        for t in &topics {
                            if let Some(h) = forwarders.remove(t) {
                                h.abort();
                            }
                        }
                        id.map(|id| json!({"op": "ack", "id": id, "topics": topics}).to_string())
                    }
                    Ok(ClientOp::Publish { id, topic, data }) => {
                        if valid_exact_topic(&topic) {
                            let seq = hub.publish(&topic, data);
                            id.map(|id| json!({"op": "ack", "id": id, "seq": seq}).to_string())
                        } else {
                            Some(error_reply(id, "bad_topic", "invalid topic"))
                        }
                    }
                    Ok(ClientOp::Ping { id }) => {
                        Some(json!({"op": "pong", "id": id, "ts": now_us()}).to_string())
                    }
                };
                if let Some(r) = reply
                    && sink.send(Message::Text(r.into())).await.is_err()
                {
                    break;
                }
            }
            Some(msg) = out_rx.recv() => {
                // With deflate, this connection compresses its own copy of the message.
                let msg = match (&mut deflater, msg) {
                    (Some(d), Message::Text(t)) => d.frame(t.as_str()),
                    (_, msg) => msg,
                };
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    for (_, h) in forwarders {
        h.abort();
    }
}

fn parse_args() -> Result<(SocketAddr, usize, bool), String> {
    let mut listen: SocketAddr = "127.0.0.1:9100".parse().unwrap();
    let mut threads = 2usize;
    let mut deflate = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--listen" => {
                listen = value("--listen")?
                    .parse()
                    .map_err(|e| format!("--listen: {e}"))?
            }
            "--threads" => {
                threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--deflate" => deflate = true,
            "-h" | "--help" => {
                return Err(
                    "usage: tickcast-baseline --listen ADDR --threads N [--deflate]".into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((listen, threads.max(1), deflate))
}

fn main() {
    let (listen, threads, deflate) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.expect("bind");
        println!(
            "listening on {}",
            listener.local_addr().expect("local addr")
        );
        let hub = Arc::new(Hub::default());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, hub.clone(), deflate));
                }
                // Out of file descriptors and the like: back off a little, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
}
