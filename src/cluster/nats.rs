//! The NATS engine (JetStream enabled), docs/CLUSTER.md "NATS".
//!
//! Subjects, below `cluster.prefix` (`tc` here):
//! - `tc.msg.<topic>`: one JetStream stream (`tickcast-tc`) stores every message. A node
//!   publishes with `Nats-Expected-Last-Subject-Sequence` set to the stream sequence of the
//!   topic's last message: a compare-and-set, so the topic's `seq` (last `seq` + 1, carried
//!   in the envelope) is assigned exactly once cluster-wide. A node that lost the race reads
//!   the new last message and tries again.
//! - `tc.live.<topic>`: the stream republishes (`RePublish`) every message it *stored*, in
//!   stream order; nodes subscribe there, per interest pattern. A publish the stream refused
//!   never shows up live.
//! - `tc.in.<topic>`: external publishers (plain JSON data), sequenced by the leader node.
//! - `tc.node.*`: heartbeats and cluster queries.
//!
//! One stream rather than one per topic class: NATS refuses streams with overlapping
//! subjects, and `[[topics]]` patterns may overlap (first match wins). The stream keeps the
//! largest `history_size` of any class per topic; each owner trims to its own class.

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{self, DiscardPolicy, LastRawMessageErrorKind, Republish, StorageType},
};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{Broker, BrokerError, Ctx, Fetched, Inbound, InboundTx, envelope};
use crate::protocol::Published;

/// Compare-and-set attempts per publish before giving up (each lost race means another
/// node's publish to the same topic got in first).
const CAS_ATTEMPTS: usize = 64;

/// Topics whose last (stream seq, seq, epoch) a node remembers for its next publish; past
/// this many the cache starts over (a miss costs one read).
const CAS_CACHE_MAX: usize = 1 << 20;

pub(crate) struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: RefCell<stream::Stream>,
    /// The stream's configuration, to create it again if the broker lost it.
    config: stream::Config,
    prefix: String,
    inbound: InboundTx,
    /// Per topic: (stream sequence, seq, epoch) of its last message as this node knows it.
    cas: RefCell<HashMap<String, (u64, u64, u64)>>,
    /// Subscriptions by full subject: the task forwarding its messages, and how many callers
    /// want it (the bridge's own `user.>` and a client's `user.>` share one).
    subs: RefCell<HashMap<String, (tokio::task::JoinHandle<()>, u32)>>,
}

/// Creates the stream, or brings an existing one to `config`; returns it.
async fn ensure_stream(
    js: &jetstream::Context,
    config: &stream::Config,
) -> Result<stream::Stream, BrokerError> {
    match js.get_stream(&config.name).await {
        Ok(_) => {
            js.update_stream(config.clone())
                .await
                .map_err(|e| BrokerError::failed(e.to_string()))?;
        }
        Err(_) => {
            js.create_stream(config.clone())
                .await
                .map_err(|e| BrokerError::failed(e.to_string()))?;
        }
    }
    js.get_stream(&config.name)
        .await
        .map_err(|e| BrokerError::failed(e.to_string()))
}

impl Nats {
    /// One publish by compare-and-set on the topic's last stream sequence.
    async fn publish_cas(
        &self,
        mut env: envelope::Envelope,
        idem: Option<&str>,
    ) -> Result<Published, BrokerError> {
        let subject = self.subject("msg", &env.topic);
        // Once per publish: if the stream is gone, create it again and retry.
        let mut recreated = false;
        for _ in 0..CAS_ATTEMPTS {
            let cached = self.cas.borrow().get(&env.topic).copied();
            let (last_stream_seq, seq, epoch) = match cached {
                Some(c) => c,
                None => match self.last_of(&subject).await {
                    Ok(last) => last,
                    Err(e) if !recreated => {
                        recreated = true;
                        self.recreate_stream().await.map_err(|_| e)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            env.seq = seq + 1;
            env.epoch = if epoch == 0 {
                envelope::new_epoch()
            } else {
                epoch
            };
            let mut msg = PublishMessage::build()
                .payload(Bytes::from(env.encode()))
                .expected_last_subject_sequence(last_stream_seq);
            if let Some(key) = idem {
                msg = msg.message_id(format!("{}:{key}", env.topic));
            }
            let ack = self
                .js
                .send_publish(subject.clone(), msg)
                .await
                .map_err(|e| BrokerError::failed(format!("publish to {subject}: {e}")))?
                .await;
            match ack {
                Ok(ack) if ack.duplicate => {
                    self.cas.borrow_mut().remove(&env.topic);
                    let first = self
                        .stream()
                        .get_raw_message(ack.sequence)
                        .await
                        .map_err(|e| {
                            BrokerError::failed(format!("read duplicate's original: {e}"))
                        })?;
                    let r = envelope::decode(&first.payload)?;
                    return Ok(Published {
                        seq: r.seq,
                        epoch: r.epoch,
                        duplicate: true,
                    });
                }
                Ok(ack) => {
                    let mut cas = self.cas.borrow_mut();
                    if cas.len() >= CAS_CACHE_MAX {
                        cas.clear();
                    }
                    cas.insert(env.topic.clone(), (ack.sequence, env.seq, env.epoch));
                    return Ok(Published {
                        seq: env.seq,
                        epoch: env.epoch,
                        duplicate: false,
                    });
                }
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound && !recreated => {
                    recreated = true;
                    self.recreate_stream().await?;
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    metrics::counter!("tickcast_cluster_cas_retries_total").increment(1);
                    self.cas.borrow_mut().remove(&env.topic);
                }
                Err(e) => {
                    self.cas.borrow_mut().remove(&env.topic);
                    return Err(BrokerError::failed(format!("publish to {subject}: {e}")));
                }
            }
        }
        Err(BrokerError::failed(format!(
            "{subject}: {CAS_ATTEMPTS} compare-and-set attempts lost to other publishers"
        )))
    }

    /// The broker lost the stream (a restart with `nats_storage = "memory"`, an operator):
    /// it is created again, and topics start new epochs.
    async fn recreate_stream(&self) -> Result<(), BrokerError> {
        let s = ensure_stream(&self.js, &self.config).await?;
        tracing::warn!(stream = %self.config.name, "cluster: the JetStream stream was gone; created it again");
        *self.stream.borrow_mut() = s;
        self.cas.borrow_mut().clear();
        Ok(())
    }

    /// The stream handle (cloned: never borrowed across an await).
    fn stream(&self) -> stream::Stream {
        self.stream.borrow().clone()
    }

    fn subject(&self, kind: &str, rest: &str) -> String {
        format!("{}.{kind}.{rest}", self.prefix)
    }

    /// (stream sequence, seq, epoch) of `topic`'s last stored message; zeros if none.
    async fn last_of(&self, subject: &str) -> Result<(u64, u64, u64), BrokerError> {
        match self.stream().get_last_raw_message_by_subject(subject).await {
            Ok(m) => {
                let r = envelope::decode(&m.payload)?;
                Ok((m.sequence, r.seq, r.epoch))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok((0, 0, 0)),
            Err(e) => Err(BrokerError::failed(format!(
                "read last message of {subject}: {e}"
            ))),
        }
    }

    async fn subscribe_forward(&self, subject: String, live: bool) -> Result<(), BrokerError> {
        if let Some((_, n)) = self.subs.borrow_mut().get_mut(&subject) {
            *n += 1;
            return Ok(());
        }
        let mut sub = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| BrokerError::failed(format!("subscribe {subject}: {e}")))?;
        let tx = self.inbound.clone();
        let strip = self.prefix.len() + 1;
        let task = tokio::task::spawn_local(async move {
            while let Some(m) = sub.next().await {
                let msg = if live {
                    Inbound::Live(m.payload)
                } else {
                    Inbound::Raw(m.subject.as_str()[strip..].to_string(), m.payload)
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
        self.subs.borrow_mut().insert(subject, (task, 1));
        Ok(())
    }

    fn unsubscribe_subject(&self, subject: &str) {
        // Dropping the subscriber (with its task) sends UNSUB.
        let mut subs = self.subs.borrow_mut();
        if let Some((task, n)) = subs.get_mut(subject) {
            *n -= 1;
            if *n == 0 {
                task.abort();
                subs.remove(subject);
            }
        }
    }
}

impl Broker for Nats {
    const SERIAL_PER_TOPIC: bool = true;

    async fn connect(ctx: &Ctx, inbound: InboundTx) -> Nats {
        let cfg = ctx.cluster().clone();
        let mut attempt = 0;
        let client = loop {
            let events = inbound.clone();
            let lost = Arc::new(AtomicBool::new(false));
            // The client, once connected: the event callback asks it to reconnect when its
            // server enters lame duck mode (async-nats only reports that).
            let this: Arc<std::sync::OnceLock<async_nats::Client>> = Arc::default();
            let this_in_events = this.clone();
            let backoff_cfg = cfg.clone();
            let opts = async_nats::ConnectOptions::new()
                .name(format!("tickcast {}", ctx.bridge.node_id))
                .max_reconnects(None)
                .connection_timeout(Duration::from_millis(cfg.publish_timeout_ms))
                .reconnect_delay_callback(move |n| super::backoff(&backoff_cfg, n))
                .event_callback(move |event| {
                    let events = events.clone();
                    let lost = lost.clone();
                    let this = this_in_events.clone();
                    async move {
                        match event {
                            async_nats::Event::Disconnected => {
                                lost.store(true, Ordering::Relaxed);
                                let _ = events.send(Inbound::Down);
                            }
                            async_nats::Event::Connected if lost.swap(false, Ordering::Relaxed) => {
                                let _ = events.send(Inbound::Up);
                            }
                            // The server is shutting down gracefully and will close the
                            // connection within its lame duck duration: move to another now
                            // (it no longer accepts connections). Repaired like any loss.
                            async_nats::Event::LameDuckMode => {
                                tracing::warn!(
                                    "cluster: the NATS server entered lame duck mode; reconnecting"
                                );
                                if let Some(client) = this.get() {
                                    let _ = client.force_reconnect().await;
                                }
                            }
                            async_nats::Event::SlowConsumer(_) => {
                                metrics::counter!("tickcast_cluster_slow_consumer_total")
                                    .increment(1);
                            }
                            _ => {}
                        }
                    }
                });
            // async-nats reads the address from the URL but not its user info: credentials
            // in `cluster.url` (`nats://user:password@host` or `nats://token@host`) are
            // handed over explicitly.
            let opts = match crate::config::url_credentials(&ctx.url) {
                Some((user, Some(pass))) => opts.user_and_password(user, pass),
                Some((token, None)) => opts.token(token),
                None => opts,
            };
            // Every server of `cluster.url` (validated: each parses), without its user info:
            // async-nats shows a server's URL in its debug logs. async-nats adds the servers
            // the one it connects to announces.
            let servers: Vec<async_nats::ServerAddr> = crate::config::broker_urls(&ctx.url)
                .filter_map(|u| {
                    let mut url = url::Url::parse(u).ok()?;
                    let _ = url.set_password(None);
                    let _ = url.set_username("");
                    async_nats::ServerAddr::from_url(url).ok()
                })
                .collect();
            match opts.connect(servers).await {
                Ok(c) => {
                    let _ = this.set(c.clone());
                    break c;
                }
                Err(e) => {
                    let wait = ctx.backoff(attempt);
                    attempt += 1;
                    tracing::error!(url = %ctx.url_shown, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "cluster: cannot connect to NATS; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let js = jetstream::new(client.clone());
        let name = format!("tickcast-{}", cfg.prefix);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{}.msg.>", cfg.prefix)],
            max_messages_per_subject: ctx.history_max() as i64,
            max_bytes: cfg.nats_stream_max_bytes as i64,
            discard: DiscardPolicy::Old,
            storage: if cfg.nats_storage == "memory" {
                StorageType::Memory
            } else {
                StorageType::File
            },
            republish: Some(Republish {
                source: format!("{}.msg.>", cfg.prefix),
                destination: format!("{}.live.>", cfg.prefix),
                headers_only: false,
            }),
            duplicate_window: Duration::from_secs(cfg.idem_window_s),
            num_replicas: cfg.nats_replicas,
            allow_direct: true,
            ..Default::default()
        };
        let mut attempt = 0;
        let stream = loop {
            match ensure_stream(&js, &config).await {
                Ok(s) => break s,
                Err(e) => {
                    let wait = ctx.backoff(attempt);
                    attempt += 1;
                    tracing::error!(stream = %name, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "cluster: cannot set up the JetStream stream (is JetStream enabled: \
                         nats-server -js? cluster.nats_replicas at most the NATS servers?); \
                         retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        Nats {
            client,
            js,
            stream: RefCell::new(stream),
            config,
            prefix: cfg.prefix,
            inbound,
            cas: RefCell::new(HashMap::new()),
            subs: RefCell::new(HashMap::new()),
        }
    }

    fn publish(
        self: &Rc<Self>,
        env: envelope::Envelope,
        idem: Option<Box<str>>,
    ) -> impl std::future::Future<Output = Result<Published, BrokerError>> + 'static {
        // The bridge keeps one publish per topic in flight (`SERIAL_PER_TOPIC`): the order is
        // kept there, nothing to fix here.
        let this = self.clone();
        async move { this.publish_cas(env, idem.as_deref()).await }
    }

    async fn fetch(&self, topic: &str, max: usize) -> Result<Fetched, BrokerError> {
        let subject = self.subject("msg", topic);
        let (last_stream_seq, last, epoch) = self.last_of(&subject).await?;
        let mut msgs = std::collections::VecDeque::new();
        if last_stream_seq > 0 && max > 1 {
            // An ordered consumer over the topic's subject: the stream holds at most the
            // largest class history per subject, so this reads a bounded number.
            let consumer = self
                .stream()
                .create_consumer(pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .map_err(|e| BrokerError::failed(format!("consumer on {subject}: {e}")))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| BrokerError::failed(format!("read {subject}: {e}")))?;
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| BrokerError::failed(format!("read {subject}: {e}")))?;
                let info = m
                    .info()
                    .map_err(|e| BrokerError::failed(format!("read {subject}: {e}")))?;
                let (stream_seq, pending) = (info.stream_sequence, info.pending);
                if let Ok(r) = envelope::decode(&m.payload) {
                    if r.epoch == epoch {
                        if msgs.len() == max {
                            msgs.pop_front();
                        }
                        msgs.push_back(r);
                    }
                }
                if pending == 0 || stream_seq >= last_stream_seq {
                    break;
                }
            }
        } else if last_stream_seq > 0 {
            let m = self
                .stream()
                .get_raw_message(last_stream_seq)
                .await
                .map_err(|e| BrokerError::failed(format!("read {subject}: {e}")))?;
            msgs.extend(envelope::decode(&m.payload).ok());
        }
        Ok(Fetched {
            topic: topic.into(),
            ok: true,
            last,
            epoch,
            msgs: msgs.into(),
        })
    }

    async fn live_subscribe(&self, pattern: &str) -> Result<(), BrokerError> {
        self.subscribe_forward(self.subject("live", pattern), true)
            .await
    }

    async fn live_unsubscribe(&self, pattern: &str) -> Result<(), BrokerError> {
        self.unsubscribe_subject(&self.subject("live", pattern));
        Ok(())
    }

    async fn raw_subscribe(&self, name: &str) -> Result<(), BrokerError> {
        self.subscribe_forward(format!("{}.{name}", self.prefix), false)
            .await
    }

    async fn raw_unsubscribe(&self, name: &str) -> Result<(), BrokerError> {
        self.unsubscribe_subject(&format!("{}.{name}", self.prefix));
        Ok(())
    }

    async fn raw_publish(&self, name: &str, payload: Bytes) -> Result<(), BrokerError> {
        self.client
            .publish(format!("{}.{name}", self.prefix), payload)
            .await
            .map_err(|e| BrokerError::failed(e.to_string()))
    }

    /// A round trip through the server: `Client::flush` only writes the client's buffer out,
    /// it does not wait for the server to have processed what was written (a `SUB` still in
    /// flight would miss a message published by another connection after the subscriber's
    /// ack). The server handles one connection's operations in order, so once a message
    /// published on this connection to a fresh subject this connection subscribed to comes
    /// back, every subscription change made before it is in force. (A request to a subject
    /// nobody serves would also round-trip, but would wait for a timeout whenever something
    /// like `nats sub '>'` listens there without answering.) The subject is under
    /// `cluster.prefix` (`<prefix>.sync.<unique>`), which a node's NATS account may publish and
    /// subscribe to anyway: `_INBOX.>` is usually subscribe-only for a requester (docs/CLUSTER.md,
    /// permissions), and a refused publish would make every round trip wait for its timeout.
    async fn flush(&self) -> Result<(), BrokerError> {
        let failed = |e: &dyn std::fmt::Display| BrokerError::failed(format!("round trip: {e}"));
        let unique = self.client.new_inbox();
        let unique = unique.trim_start_matches("_INBOX.");
        let inbox = format!("{}.sync.{unique}", self.prefix);
        let mut echo = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| failed(&e))?;
        self.client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| failed(&e))?;
        match echo.next().await {
            Some(_) => Ok(()),
            None => Err(failed(&"the connection closed")),
        }
    }
}
