//! The Redis engine, docs/CLUSTER.md "Redis".
//!
//! Keys and channels, below `cluster.prefix` (`tc` here); `{topic}` is a hash tag, so a
//! topic's keys share a Redis Cluster slot and one script may touch them all:
//! - `tc:m:{<topic>}`: hash, `s` = the topic's last `seq`, `e` = its epoch.
//! - `tc:h:{<topic>}`: stream, the history. Entry id `<seq>-1`, one field `m` = the envelope's
//!   wire form. Trimmed with `MAXLEN ~ <largest class history_size>`: the approximate form
//!   trims whole radix-tree nodes (cheap, O(1) amortised per append) and only ever keeps *more*
//!   than asked, never less; a fetch reads the last `max` entries with `COUNT`, so the extra
//!   entries are never seen. Memory stays bounded (at most one node, ~100 entries, over).
//! - `tc:i:{<topic>}:<idem>`: an idempotency key → `<seq>:<epoch>` of the first publish, for
//!   `cluster.idem_window_s` seconds (`SET NX EX`).
//! - `tc.live.<topic>`: Pub/Sub channel of the topic's live traffic.
//! - `tc.<name>`: the bridge's own channels (`node.hb`, `node.q`, `node.r.<id>`, `in.<topic>`).
//!
//! **Sequencing.** One Lua script ([`PUBLISH_LUA`]) per publish does, atomically: the
//! idempotency check, `HINCRBY s`, the epoch (a new one, from the node, if the topic has none:
//! the broker lost it, or it is new; its stale history is deleted since ids restart), patches
//! `seq` and `epoch` into the envelope bytes (fixed offsets from the end of the wire form,
//! [`envelope::seq_epoch_offsets`], written with `struct.pack('<I8', n)`: tested on Redis 7.0),
//! `XADD` with the explicit id `<seq>-1`, `PUBLISH` on the live channel, and the idempotency
//! key. Redis runs scripts one at a time, so every node receives a topic's live messages in
//! `seq` order.
//!
//! **Order of one node's publishes.** `SERIAL_PER_TOPIC` is false: the engine keeps order
//! itself. `publish` hands the job to one writer task synchronously, before it returns its
//! future (the bridge calls it in command order, see `Broker::publish`), and the writer sends
//! batches of script calls as one `MULTI`/`EXEC` pipeline on one connection and waits for each
//! batch before sending the next. So a topic's publishes are applied in the order given, with
//! one round trip per batch rather than per message. `MULTI` makes a batch all-or-nothing with
//! respect to the script cache: after a Redis restart every call of the batch gets `NOSCRIPT`
//! (never some of them while another client loads the script midway, which would let a retry
//! overtake later messages); the writer loads the script and resends them.
//!
//! **Interest.** An exact topic is a `SUBSCRIBE` to its channel. A pattern is a `PSUBSCRIBE`
//! with each `*` and `>` segment turned into the glob `*`: Redis' `*` also matches dots, so
//! `md.*` also receives `md.a.b`. That over-matching is harmless: messages go to the topic's
//! owner shard, which delivers only to subscriptions its own index matches (and counts none
//! for the rest). The topic charset (`[A-Za-z0-9_:@-]`, see `pubsub::topic`) holds no glob
//! metacharacter; literal parts (and the prefix) are escaped anyway. Several tickcast patterns
//! can map to one glob (`md.*`, `md.>`): subscriptions are counted per Redis channel.
//!
//! **Connections.** Commands go through a `ConnectionManager` (reconnects by itself on I/O
//! errors). Pub/Sub has its own connection, watched by a task: on loss it reports
//! `Inbound::Down`, reconnects with `cluster.reconnect_*_ms` backoff, re-makes every
//! subscription and then reports `Inbound::Up` (the owners then repair from history). A
//! `PING` every `PING_EVERY` notices a silently dead connection.

use std::{cell::RefCell, collections::HashMap, rc::Rc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::{
    Value,
    aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream},
};
use tokio::sync::{Mutex, mpsc, oneshot};

mod writer;

use super::{Broker, BrokerError, Ctx, Fetched, Inbound, InboundTx, envelope};
use crate::protocol::Published;
use writer::{Job, PUBLISH_LUA, writer_task};

/// How often the Pub/Sub connection is checked with a `PING`.
const PING_EVERY: Duration = Duration::from_secs(5);

type Reply = oneshot::Sender<Result<Published, BrokerError>>;

pub(crate) struct Redis {
    conn: ConnectionManager,
    prefix: String,
    /// Bound on one (un)subscribe round trip (`cluster.publish_timeout_ms`).
    timeout: Duration,
    jobs: mpsc::UnboundedSender<Job>,
    subs: Rc<Subs>,
}

/// The Pub/Sub side: the wanted subscriptions and the live connection's sink (none while
/// reconnecting). The async mutex orders subscription changes with the re-subscription after
/// a reconnect.
struct Subs {
    /// Redis channel or glob → (is a pattern, how many callers want it).
    want: RefCell<HashMap<String, (bool, u32)>>,
    sink: Mutex<Option<PubSubSink>>,
}

/// Settings the engine's tasks need after `connect` returned.
#[derive(Clone)]
struct Settings {
    url: String,
    prefix: String,
    reconnect_min_ms: u64,
    reconnect_max_ms: u64,
    timeout: Duration,
}

impl Settings {
    fn backoff(&self, n: usize) -> Duration {
        let base = self
            .reconnect_min_ms
            .saturating_mul(1u64 << n.min(20))
            .min(self.reconnect_max_ms);
        Duration::from_millis(base + fastrand::u64(0..=base / 4))
    }
}

/// Escapes Redis glob metacharacters in a literal part of a `PSUBSCRIBE` pattern.
fn glob_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The Redis channel for a tickcast topic or pattern below `base` (e.g. `tc.live.`), and
/// whether it is a glob (`PSUBSCRIBE`). `*` and `>` segments become `*`, which over-matches
/// (it also matches dots; see the module doc).
pub(crate) fn channel_for(base: &str, pattern: &str) -> (String, bool) {
    let wild = pattern.split('.').any(|s| s == "*" || s == ">");
    if !wild {
        return (format!("{base}{pattern}"), false);
    }
    let mut out = String::with_capacity(base.len() + pattern.len() + 4);
    glob_escape(base, &mut out);
    for (i, seg) in pattern.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if seg == "*" || seg == ">" {
            out.push('*');
        } else {
            glob_escape(seg, &mut out);
        }
    }
    (out, true)
}

/// A Redis error as a broker error: the client library's timeouts are timeouts.
fn err(what: &str, e: redis::RedisError) -> BrokerError {
    if e.is_timeout() {
        BrokerError::timeout(format!("{what}: {e}"))
    } else {
        BrokerError::failed(format!("{what}: {e}"))
    }
}

impl Redis {
    fn key(&self, kind: &str, topic: &str) -> String {
        format!("{}:{kind}:{{{topic}}}", self.prefix)
    }

    async fn sub_change(
        &self,
        channel: String,
        pattern: bool,
        add: bool,
    ) -> Result<(), BrokerError> {
        let mut sink = self.subs.sink.lock().await;
        {
            let mut want = self.subs.want.borrow_mut();
            if add {
                let n = &mut want.entry(channel.clone()).or_insert((pattern, 0)).1;
                *n += 1;
                if *n > 1 {
                    return Ok(());
                }
            } else {
                match want.get_mut(&channel) {
                    Some((_, n)) if *n > 1 => {
                        *n -= 1;
                        return Ok(());
                    }
                    Some(_) => {
                        want.remove(&channel);
                    }
                    None => return Ok(()),
                }
            }
        }
        // Without a connection the change is only recorded: the reconnect applies `want`.
        let Some(s) = sink.as_mut() else {
            return Ok(());
        };
        let call = async {
            match (add, pattern) {
                (true, false) => s.subscribe(&channel).await,
                (true, true) => s.psubscribe(&channel).await,
                (false, false) => s.unsubscribe(&channel).await,
                (false, true) => s.punsubscribe(&channel).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Err(e)) if add => {
                // Not made: not wanted either, so the caller's next attempt makes it.
                let mut want = self.subs.want.borrow_mut();
                if let Some((_, n)) = want.get_mut(&channel) {
                    *n -= 1;
                    if *n == 0 {
                        want.remove(&channel);
                    }
                }
                Err(err(&format!("subscribe {channel}"), e))
            }
            Ok(r) => r.map_err(|e| err(&format!("unsubscribe {channel}"), e)),
            Err(_) => {
                // A silent connection (half-open TCP): dropping the sink makes the Pub/Sub task
                // reconnect, which re-makes every wanted subscription, this one included.
                *sink = None;
                Err(BrokerError::timeout(format!(
                    "(un)subscribe {channel}: no answer; reconnecting"
                )))
            }
        }
    }
}

/// Opens a Pub/Sub connection and makes every wanted subscription on it; stores the sink.
async fn open_pubsub(
    client: &redis::Client,
    set: &Settings,
    subs: &Subs,
) -> Result<PubSubStream, BrokerError> {
    let pubsub = tokio::time::timeout(set.timeout, client.get_async_pubsub())
        .await
        .map_err(|_| BrokerError::timeout("pub/sub connection timed out"))?
        .map_err(|e| err("pub/sub connection", e))?;
    let (mut sink, stream) = pubsub.split();
    let mut slot = subs.sink.lock().await;
    let want: Vec<(String, bool)> = subs
        .want
        .borrow()
        .iter()
        .map(|(c, (p, _))| (c.clone(), *p))
        .collect();
    for (channel, pattern) in want {
        // One channel per command: the sink matches one reply per request.
        let r = if pattern {
            tokio::time::timeout(set.timeout, sink.psubscribe(&channel)).await
        } else {
            tokio::time::timeout(set.timeout, sink.subscribe(&channel)).await
        };
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(err(&format!("subscribe {channel}"), e)),
            Err(_) => {
                return Err(BrokerError::timeout(format!(
                    "subscribe {channel}: timed out"
                )));
            }
        }
    }
    *slot = Some(sink);
    Ok(stream)
}

/// Forwards Pub/Sub messages; on loss reports `Down`, reconnects with backoff, re-subscribes
/// and reports `Up`. Ends when the bridge is gone.
async fn pubsub_task(
    client: redis::Client,
    set: Settings,
    subs: Rc<Subs>,
    inbound: InboundTx,
    mut stream: PubSubStream,
) {
    let live = format!("{}.live.", set.prefix);
    let own = format!("{}.", set.prefix);
    loop {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                m = stream.next() => {
                    let Some(m) = m else { break };
                    let channel = m.get_channel_name();
                    let payload = Bytes::copy_from_slice(m.get_payload_bytes());
                    let msg = if channel.starts_with(&live) {
                        Inbound::Live(payload)
                    } else if let Some(name) = channel.strip_prefix(&own) {
                        Inbound::Raw(name.to_string(), payload)
                    } else {
                        continue;
                    };
                    if inbound.send(msg).is_err() {
                        return;
                    }
                }
                _ = ping.tick() => {
                    let mut sink = subs.sink.lock().await;
                    let Some(s) = sink.as_mut() else { break };
                    match tokio::time::timeout(set.timeout, s.ping::<Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "cluster: redis pub/sub ping failed");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!("cluster: redis pub/sub ping timed out");
                            break;
                        }
                    }
                }
            }
        }
        *subs.sink.lock().await = None;
        drop(stream);
        if inbound.send(Inbound::Down).is_err() {
            return;
        }
        let mut attempt = 0;
        let mut wait = set.backoff(attempt);
        stream = loop {
            tokio::time::sleep(wait).await;
            attempt += 1;
            match open_pubsub(&client, &set, &subs).await {
                Ok(s) => break s,
                Err(e) => {
                    wait = set.backoff(attempt);
                    tracing::error!(url = %crate::config::redact_url(&set.url), error = %e, retry_in_ms = wait.as_millis() as u64,
                        "cluster: cannot reconnect to Redis pub/sub; retrying");
                }
            }
        };
        if inbound.send(Inbound::Up).is_err() {
            return;
        }
    }
}

/// The `m` field of each `XREVRANGE` entry (newest first), as given.
fn stream_payloads(v: Value) -> Vec<Bytes> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Value::Array(mut parts) = e else { continue };
        if parts.len() != 2 {
            continue;
        }
        let Some(Value::Array(fields)) = parts.pop() else {
            continue;
        };
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
                if k == b"m" {
                    out.push(Bytes::from(v));
                    break;
                }
            }
        }
    }
    out
}

/// A number Redis stored as a string (the meta hash fields); absent = 0.
fn meta_num(v: &Value) -> Result<u64, BrokerError> {
    match v {
        Value::Nil => Ok(0),
        Value::Int(n) => {
            u64::try_from(*n).map_err(|_| BrokerError::invalid(format!("negative number {n}")))
        }
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| BrokerError::invalid("meta field is not a number")),
        other => Err(BrokerError::invalid(format!(
            "unexpected meta value {other:?}"
        ))),
    }
}

impl Broker for Redis {
    const SERIAL_PER_TOPIC: bool = false;

    async fn connect(ctx: &Ctx, inbound: InboundTx) -> Redis {
        let cfg = ctx.cluster().clone();
        let set = Settings {
            url: ctx.url.clone(),
            prefix: cfg.prefix.clone(),
            reconnect_min_ms: cfg.reconnect_min_ms,
            reconnect_max_ms: cfg.reconnect_max_ms,
            timeout: Duration::from_millis(cfg.publish_timeout_ms),
        };
        let script = redis::Script::new(PUBLISH_LUA);
        let subs = Rc::new(Subs {
            want: RefCell::new(HashMap::new()),
            sink: Mutex::new(None),
        });
        let mut attempt = 0;
        let (client, conn, stream) = loop {
            let tried = async {
                let client = redis::Client::open(ctx.url.as_str()).map_err(|e| err("url", e))?;
                let mcfg = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(cfg.reconnect_min_ms))
                    .set_max_delay(Duration::from_millis(cfg.reconnect_max_ms))
                    .set_connection_timeout(Some(set.timeout))
                    .set_response_timeout(Some(set.timeout));
                let mut conn = ConnectionManager::new_with_config(client.clone(), mcfg)
                    .await
                    .map_err(|e| err("connect", e))?;
                script
                    .load_async(&mut conn)
                    .await
                    .map_err(|e| err("SCRIPT LOAD", e))?;
                let stream = open_pubsub(&client, &set, &subs).await?;
                Ok::<_, BrokerError>((client, conn, stream))
            };
            match tried.await {
                Ok(c) => break c,
                Err(e) => {
                    let wait = ctx.backoff(attempt);
                    attempt += 1;
                    tracing::error!(url = %ctx.url_shown, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "cluster: cannot connect to Redis; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        tokio::task::spawn_local(pubsub_task(client, set, subs.clone(), inbound, stream));
        let (seq_off, epoch_off) = envelope::seq_epoch_offsets();
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::task::spawn_local(writer_task(
            conn.clone(),
            script,
            (
                cfg.prefix.clone(),
                seq_off,
                epoch_off,
                ctx.history_max(),
                cfg.idem_window_s,
            ),
            rx,
        ));
        Redis {
            conn,
            timeout: Duration::from_millis(cfg.publish_timeout_ms),
            prefix: cfg.prefix,
            jobs,
            subs,
        }
    }

    fn publish(
        self: &Rc<Self>,
        env: envelope::Envelope,
        idem: Option<Box<str>>,
    ) -> impl std::future::Future<Output = Result<Published, BrokerError>> + 'static {
        // Queued to the writer now, in the order of the calls: that is the topic's order.
        let (reply, answer) = oneshot::channel();
        let job = Job {
            wire: env.encode(),
            topic: env.topic,
            idem: idem.map(String::from),
            epoch: envelope::new_epoch(),
            reply,
        };
        let sent = self.jobs.send(job);
        async move {
            sent.map_err(|_| BrokerError::failed("redis writer stopped"))?;
            answer
                .await
                .map_err(|_| BrokerError::failed("redis writer dropped the publish"))?
        }
    }

    async fn fetch(&self, topic: &str, max: usize) -> Result<Fetched, BrokerError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HMGET")
            .arg(self.key("m", topic))
            .arg("s")
            .arg("e");
        if max > 0 {
            pipe.cmd("XREVRANGE")
                .arg(self.key("h", topic))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(max);
        }
        let mut conn = self.conn.clone();
        let mut got: Vec<Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| err(&format!("fetch {topic}"), e))?;
        let hist = if max > 0 { got.pop() } else { None };
        let (last, epoch) = match got.pop() {
            Some(Value::Array(v)) if v.len() == 2 => (meta_num(&v[0])?, meta_num(&v[1])?),
            other => {
                return Err(BrokerError::invalid(format!(
                    "fetch {topic}: unexpected HMGET reply {other:?}"
                )));
            }
        };
        let mut msgs: Vec<_> = hist
            .map(stream_payloads)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|wire| envelope::decode(&wire).ok())
            .filter(|r| r.epoch == epoch && *r.topic == *topic)
            .collect();
        msgs.reverse();
        Ok(Fetched {
            topic: topic.into(),
            ok: true,
            last,
            epoch,
            msgs,
        })
    }

    async fn live_subscribe(&self, pattern: &str) -> Result<(), BrokerError> {
        let (c, p) = channel_for(&format!("{}.live.", self.prefix), pattern);
        self.sub_change(c, p, true).await
    }

    async fn live_unsubscribe(&self, pattern: &str) -> Result<(), BrokerError> {
        let (c, p) = channel_for(&format!("{}.live.", self.prefix), pattern);
        self.sub_change(c, p, false).await
    }

    async fn raw_subscribe(&self, name: &str) -> Result<(), BrokerError> {
        let (c, p) = channel_for(&format!("{}.", self.prefix), name);
        self.sub_change(c, p, true).await
    }

    async fn raw_unsubscribe(&self, name: &str) -> Result<(), BrokerError> {
        let (c, p) = channel_for(&format!("{}.", self.prefix), name);
        self.sub_change(c, p, false).await
    }

    /// Fire and forget, like a NATS core publish: heartbeats and query answers must not wait
    /// for a slow or reconnecting Redis. Each send is bounded by the response timeout.
    async fn raw_publish(&self, name: &str, payload: Bytes) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let channel = format!("{}.{name}", self.prefix);
        tokio::task::spawn_local(async move {
            let sent = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&payload[..])
                .query_async::<Value>(&mut conn)
                .await;
            if let Err(e) = sent {
                tracing::debug!(channel, error = %e, "cluster: redis publish failed");
            }
        });
        Ok(())
    }

    /// Every (un)subscribe awaits the server's confirmation before it returns, and they are
    /// serialised by the sink's lock; taking the lock waits for one still in progress, and a
    /// `PING` on the same connection is answered after everything sent before it.
    async fn flush(&self) -> Result<(), BrokerError> {
        let mut sink = self.subs.sink.lock().await;
        match sink.as_mut() {
            Some(s) => s
                .ping::<Value>()
                .await
                .map(|_| ())
                .map_err(|e| err("redis pub/sub ping", e)),
            None => Err(BrokerError::failed("redis pub/sub connection is down")),
        }
    }
}

#[cfg(test)]
mod tests;
