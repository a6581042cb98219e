//! The bridge's main loop: connect (retrying with backoff), subscribe to the node channels,
//! then serve the shards' commands and the broker's messages until the process exits; history
//! fetches, publishes and interest changes each in their own task, so none waits on another.

use std::{
    collections::{HashMap, VecDeque},
    rc::Rc,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::*;
use crate::protocol::ErrorCode;

/// The bridge: connect, subscribe to the node channels, then serve commands and broker
/// messages until the process exits.
pub(super) async fn run<B: Broker>(ctx: Rc<Ctx>, cmds: flume::Receiver<Cmd>) {
    describe_metrics();
    let (inbound_tx, mut inbound) = mpsc::unbounded_channel();
    // Until the first connection the node serves without the broker: publishes fail at
    // once (`unavailable`), fetches report failure, interest is acknowledged and kept for
    // when the broker is there.
    let mut early_interest = Vec::new();
    let connecting = B::connect(&ctx, inbound_tx);
    tokio::pin!(connecting);
    let broker = loop {
        tokio::select! {
            broker = &mut connecting => break Rc::new(broker),
            cmd = cmds.recv_async() => {
                let Ok(cmd) = cmd else { return };
                match cmd {
                    Cmd::Publish(p) => {
                        crate::fault::check(crate::fault::Site::Bridge, &p.topic);
                        ctx.bridge.publishes.fetch_sub(1, Ordering::Relaxed);
                        ctx.reply(p.shard, p.reply, Err(ErrorCode::Unavailable));
                    }
                    Cmd::Interest { shard, pattern, add, seq } => {
                        early_interest.push((shard, pattern, add, seq));
                        ctx.deliver(shard as usize, ToShard::InterestAck { seq }, false);
                    }
                    Cmd::Fetch { shard, topic, .. } => {
                        let failed = Fetched { topic, ok: false, last: 0, epoch: 0, msgs: Vec::new() };
                        ctx.deliver(shard as usize, ToShard::Fetched(Box::new(failed)), false);
                    }
                    Cmd::Query { shard, token, .. } => {
                        let rep = QueryReply { token, parts: Vec::new(), missing: Vec::new() };
                        ctx.deliver(shard as usize, ToShard::QueryReply(Box::new(rep)), false);
                    }
                }
            }
        }
    };
    ctx.bridge.up.store(true, Ordering::Relaxed);
    metrics::gauge!("tickcast_cluster_broker_up").set(1.0);
    // Heartbeats are heard from now on: no lead before they have had a TTL to come, however
    // long the first connection took (before, a node connecting later than that after its
    // start took the lead at once, next to the node holding it).
    let settle = Duration::from_millis(ctx.cluster().node_ttl_ms);
    ctx.settle_until.set(Instant::now() + settle);
    tracing::info!(node = %ctx.bridge.node_id, url = %ctx.url_shown, "cluster: connected to the broker");
    for name in [HEARTBEATS, QUERIES, &answers_for(&ctx.bridge.node_id)] {
        if let Err(e) = broker.raw_subscribe(name).await {
            tracing::error!(error = %e, channel = name, "cluster: subscribe failed");
        }
    }
    // User messages may be for a connection on any node: every node takes them all (with
    // shard 0's live reader, on its connection).
    if !live_in_shard(&ctx.cfg) {
        if let Err(e) = broker.live_subscribe("user.>").await {
            tracing::error!(error = %e, "cluster: subscribe to user messages failed");
        }
    }
    // Bounded: a broker lost again right away must not hold the bridge (the engine
    // re-subscribes on the reconnect).
    let limit = Duration::from_millis(ctx.cluster().publish_timeout_ms);
    let _ = tokio::time::timeout(limit, broker.flush()).await;
    let started = crate::frame::unix_us() / 1_000_000;

    // Messages a full shard ring did not take: retried every millisecond while any wait
    // (no timer at all otherwise). Nothing else runs in this task, so a slow broker call can
    // never hold deliveries back.
    {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            loop {
                ctx.outlet_waiting.notified().await;
                while ctx.retry_outlet() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
    }
    // Heartbeats, node expiry, ingest leadership.
    {
        let ctx = ctx.clone();
        let broker = broker.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(ctx.cluster().heartbeat_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = broker
                    .raw_publish(HEARTBEATS, heartbeat(&ctx, started))
                    .await;
                expire_nodes(&ctx);
                sync_leadership(&ctx, &*broker).await;
            }
        });
    }
    // Interest changes, in order, each acknowledged once the broker has it.
    let (interest_tx, interest_rx) = mpsc::unbounded_channel();
    for early in early_interest {
        let _ = interest_tx.send(early);
    }
    tokio::task::spawn_local(interest_task(ctx.clone(), broker.clone(), interest_rx));
    // Broker messages.
    {
        let ctx = ctx.clone();
        let broker = broker.clone();
        tokio::task::spawn_local(async move {
            while let Some(msg) = inbound.recv().await {
                match msg {
                    Inbound::Live(wire) => ctx.on_live(wire),
                    Inbound::Raw(name, body) => on_raw(&ctx, &broker, &name, body),
                    Inbound::Up => {
                        ctx.bridge.up.store(true, Ordering::Relaxed);
                        metrics::gauge!("tickcast_cluster_broker_up").set(1.0);
                        let settle = Duration::from_millis(ctx.cluster().node_ttl_ms);
                        ctx.settle_until.set(Instant::now() + settle);
                        tracing::warn!("cluster: broker connection restored; repairing topics");
                        metrics::counter!("tickcast_cluster_reconnects_total").increment(1);
                        ctx.to_every_shard(|| ToShard::Up);
                    }
                    Inbound::Down => {
                        ctx.bridge.up.store(false, Ordering::Relaxed);
                        metrics::gauge!("tickcast_cluster_broker_up").set(0.0);
                        tracing::warn!("cluster: broker connection lost; reconnecting");
                    }
                }
            }
        });
    }
    // Publishes: per topic one at a time when the broker sequences by compare-and-set. An
    // entry in `in_flight` means one publish of the topic is out; it holds the ones waiting.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Box<str>>();
    let mut in_flight: HashMap<Box<str>, VecDeque<Box<PublishCmd>>> = HashMap::new();
    let start = |p: Box<PublishCmd>| {
        let topic = p.topic.clone();
        // Called here, in command order; only the wait for the broker runs in a task.
        let publishing = publish_one(ctx.clone(), &broker, *p);
        let done = done_tx.clone();
        tokio::task::spawn_local(async move {
            publishing.await;
            let _ = done.send(topic);
        });
    };
    loop {
        tokio::select! {
            cmd = cmds.recv_async() => {
                let Ok(cmd) = cmd else { return };
                match cmd {
                    Cmd::Publish(p) => {
                        crate::fault::check(crate::fault::Site::Bridge, &p.topic);
                        if !B::SERIAL_PER_TOPIC {
                            start(p);
                        } else if let Some(waiting) = in_flight.get_mut(&p.topic) {
                            waiting.push_back(p);
                        } else {
                            in_flight.insert(p.topic.clone(), VecDeque::new());
                            start(p);
                        }
                    }
                    Cmd::Interest { shard, pattern, add, seq } => {
                        let _ = interest_tx.send((shard, pattern, add, seq));
                    }
                    Cmd::Fetch { shard, topic, max } => {
                        tokio::task::spawn_local(fetch_one(ctx.clone(), broker.clone(), shard, topic, max));
                    }
                    Cmd::Query { shard, token, path } => {
                        tokio::task::spawn_local(start_query(ctx.clone(), broker.clone(), shard, token, path));
                    }
                }
            }
            Some(topic) = done_rx.recv() => {
                ctx.bridge.publishes.fetch_sub(1, Ordering::Relaxed);
                if !B::SERIAL_PER_TOPIC {
                    continue;
                }
                if let Some(waiting) = in_flight.get_mut(&topic) {
                    match waiting.pop_front() {
                        Some(next) => start(next),
                        None => {
                            in_flight.remove(&topic);
                        }
                    }
                }
            }
        }
    }
}

/// A history fetch for the topic's owner shard; always answered (`ok: false` on failure).
pub(super) async fn fetch_one<B: Broker>(
    ctx: Rc<Ctx>,
    broker: Rc<B>,
    shard: u8,
    topic: Box<str>,
    max: usize,
) {
    let _permit = ctx.fetches.acquire().await;
    let limit = Duration::from_millis(ctx.cluster().publish_timeout_ms);
    // A failed fetch turns a hole into a reported loss: a transient error gets two more
    // attempts, with the reconnect backoff between them.
    let mut attempt = 0;
    let fetched = loop {
        let error = match tokio::time::timeout(limit, broker.fetch(&topic, max)).await {
            Ok(Ok(f)) => break f,
            Ok(Err(e)) => e,
            Err(_) => BrokerError::timeout(format!("fetch {topic}: no answer in time")),
        };
        if attempt == 2 {
            crate::warn_sampled!(topic = %topic, error = %error, "cluster: history fetch failed");
            break Fetched {
                topic,
                ok: false,
                last: 0,
                epoch: 0,
                msgs: Vec::new(),
            };
        }
        tokio::time::sleep(ctx.backoff(attempt)).await;
        attempt += 1;
    };
    metrics::counter!("tickcast_cluster_fetches_total").increment(1);
    ctx.deliver(shard as usize, ToShard::Fetched(Box::new(fetched)), false);
}

/// One publish through the broker, its outcome back to the shard that asked.
pub(super) fn publish_one<B: Broker>(
    ctx: Rc<Ctx>,
    broker: &Rc<B>,
    p: PublishCmd,
) -> impl std::future::Future<Output = ()> + 'static {
    let env = Envelope {
        seq: 0,
        epoch: 0,
        ts_us: crate::frame::unix_us(),
        flags: if p.to_user { envelope::FLAG_TO_USER } else { 0 },
        origin: ctx.bridge.node_id.clone(),
        topic: p.topic.to_string(),
        data: p.data,
    };
    let limit = Duration::from_millis(ctx.cluster().publish_timeout_ms);
    let publishing = broker.publish(env, p.idem);
    async move {
        let result = match tokio::time::timeout(limit, publishing).await {
            Ok(Ok(done)) => {
                metrics::counter!("tickcast_cluster_published_total").increment(1);
                Ok(done)
            }
            Ok(Err(e)) => {
                metrics::counter!("tickcast_cluster_publish_errors_total").increment(1);
                crate::warn_sampled!(topic = %p.topic, error = %e, "cluster: publish failed");
                Err(ErrorCode::Unavailable)
            }
            Err(_) => {
                metrics::counter!("tickcast_cluster_publish_errors_total").increment(1);
                crate::warn_sampled!(topic = %p.topic, "cluster: publish not confirmed in time");
                Err(ErrorCode::Unavailable)
            }
        };
        ctx.reply(p.shard, p.reply, result);
    }
}

/// Applies interest changes in order; per batch one flush, then the acknowledgements.
pub(super) async fn interest_task<B: Broker>(
    ctx: Rc<Ctx>,
    broker: Rc<B>,
    mut rx: mpsc::UnboundedReceiver<(u8, Box<str>, bool, u64)>,
) {
    let mut counts: HashMap<Box<str>, u32> = HashMap::new();
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut added = false;
        for (_, pattern, add, _) in &batch {
            if *add {
                let n = counts.entry(pattern.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    added = true;
                    if let Err(e) = broker.live_subscribe(pattern).await {
                        // Not counted: the next local subscriber of the pattern tries again.
                        // (The engine re-makes wanted subscriptions on a reconnect.)
                        tracing::error!(pattern = %pattern, error = %e, "cluster: subscribe failed");
                        counts.remove(pattern);
                        continue;
                    }
                    metrics::gauge!("tickcast_cluster_subscriptions").increment(1.0);
                }
            } else if let Some(n) = counts.get_mut(pattern) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(pattern);
                    if let Err(e) = broker.live_unsubscribe(pattern).await {
                        tracing::warn!(pattern = %pattern, error = %e, "cluster: unsubscribe failed");
                    }
                    metrics::gauge!("tickcast_cluster_subscriptions").decrement(1.0);
                }
            }
        }
        // While the broker is down a flush would wait for the reconnect: the engine
        // re-subscribes on reconnect and the owners repair what was missed, so subscribers are
        // not held back.
        if added && ctx.bridge.is_up() {
            let limit = Duration::from_millis(ctx.cluster().publish_timeout_ms);
            // A subscriber acknowledged without the round trip may miss what is published
            // before the broker applies its subscription: say so (the ack is not held longer,
            // a broker that slow is failing anyway).
            match tokio::time::timeout(limit, broker.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e,
                    "cluster: subscriptions not confirmed by the broker; acknowledging anyway"),
                Err(_) => tracing::warn!(
                    timeout_ms = limit.as_millis() as u64,
                    "cluster: subscriptions not confirmed by the broker in time; acknowledging anyway"
                ),
            }
        }
        for (shard, _, _, seq) in batch.drain(..) {
            ctx.deliver(shard as usize, ToShard::InterestAck { seq }, false);
        }
    }
}

/// Heartbeats, queries and answers from other nodes, and external publishes (leader only).
/// Never waits: whatever needs the broker or the shards runs in its own task, so the task
/// feeding live messages to the shards is never held up.
pub(super) fn on_raw<B: Broker>(ctx: &Rc<Ctx>, broker: &Rc<B>, name: &str, body: Bytes) {
    if name == HEARTBEATS {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return;
        };
        let Some(id) = v["node"].as_str() else { return };
        if id == ctx.bridge.node_id {
            return;
        }
        let info = NodeInfo {
            id: id.to_string(),
            connections: v["connections"].as_u64().unwrap_or(0),
            shards: v["shards"].as_u64().unwrap_or(0),
            addr: v["addr"].as_str().unwrap_or("").to_string(),
            started_unix_s: v["started"].as_u64().unwrap_or(0),
            seen: Instant::now(),
        };
        let new = ctx
            .nodes
            .borrow_mut()
            .insert(id.to_string(), info)
            .is_none();
        publish_nodes(ctx);
        if new {
            tracing::info!(node = id, "cluster: node joined");
            let (ctx, broker) = (ctx.clone(), broker.clone());
            tokio::task::spawn_local(async move { sync_leadership(&ctx, &*broker).await });
        }
    } else if name == QUERIES {
        tokio::task::spawn_local(on_query(ctx.clone(), broker.clone(), body));
    } else if name == answers_for(&ctx.bridge.node_id) {
        on_answer(ctx, body);
    } else if let Some(topic) = name.strip_prefix(INGEST).and_then(|t| t.strip_prefix('.')) {
        ingest_external(ctx, topic, body);
    }
}

pub(super) fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "tickcast_cluster_broker_up",
        "1 while the node's connection to the broker is up, 0 while it is lost or not yet made."
    );
    metrics::gauge!("tickcast_cluster_broker_up").set(0.0);
    describe_counter!(
        "tickcast_cluster_published_total",
        "Publishes the broker confirmed (sequenced and stored)."
    );
    describe_counter!(
        "tickcast_cluster_publish_errors_total",
        "Publishes the broker refused or did not confirm within cluster.publish_timeout_ms."
    );
    describe_counter!(
        "tickcast_cluster_publish_rejects_total",
        "Publishes refused at once: cluster.publish_queue_max publishes already waiting."
    );
    describe_counter!(
        "tickcast_cluster_received_total",
        "Sequenced messages received from the broker."
    );
    describe_counter!(
        "tickcast_cluster_invalid_total",
        "Broker messages that were not valid tickcast envelopes (dropped)."
    );
    describe_counter!(
        "tickcast_cluster_inbound_drops_total",
        "Broker messages dropped because a shard was cluster.inbound_queue_max behind."
    );
    describe_counter!(
        "tickcast_cluster_fetches_total",
        "History fetches from the broker (recovery, hole repair)."
    );
    describe_counter!(
        "tickcast_cluster_reconnects_total",
        "Broker connections restored after a loss."
    );
    describe_counter!(
        "tickcast_cluster_node_expiries_total",
        "Nodes dropped for missing heartbeats (cluster.node_ttl_ms)."
    );
    describe_counter!(
        "tickcast_cluster_ingested_total",
        "External publishes (<prefix>.in.<topic>) taken by this node as leader."
    );
    describe_counter!(
        "tickcast_cluster_ingest_rejects_total",
        "External publishes refused (invalid topic or JSON, too large, queue full)."
    );
    describe_counter!(
        "tickcast_cluster_cas_retries_total",
        "NATS: publishes that lost the per-topic compare-and-set to another node and were retried."
    );
    describe_counter!(
        "tickcast_cluster_slow_consumer_total",
        "NATS: the client's subscription buffer overflowed and dropped messages (repaired)."
    );
    describe_counter!(
        "tickcast_cluster_live_reconnects_total",
        "NATS, cluster.nats_live_reader = shard: shard 0's live connection restored after a loss."
    );
    describe_counter!(
        "tickcast_cluster_live_errors_total",
        "NATS, cluster.nats_live_reader = shard: live connections lost or not made, and -ERR from the server on it."
    );
    describe_gauge!(
        "tickcast_cluster_live_up",
        "NATS, cluster.nats_live_reader = shard: 1 while shard 0's live connection is up."
    );
    describe_gauge!("tickcast_cluster_nodes", "Live nodes, this one included.");
    describe_gauge!(
        "tickcast_cluster_subscriptions",
        "Patterns this node is subscribed to at the broker (interest)."
    );
    describe_gauge!(
        "tickcast_cluster_leader",
        "1 while this node sequences external publishes."
    );
}
