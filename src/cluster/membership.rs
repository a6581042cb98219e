//! Membership: every node announces itself on the heartbeat channel; a node not heard from for
//! `cluster.node_ttl_ms` is dead. The smallest live node id leads ingest of external
//! publishes (`<prefix>.in.<topic>`), claimed only once the node has heard the others.

use std::{
    rc::Rc,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::*;
use crate::publish::ReplyTo;

/// Heartbeat body: this node's id, its connection count, shards, address and start time.
pub(super) fn heartbeat(ctx: &Ctx, started_unix_s: u64) -> Bytes {
    let body = serde_json::json!({
        "node": ctx.bridge.node_id,
        "connections": ctx.link.connections(),
        "shards": ctx.link.shards(),
        "addr": ctx.link.local_addr().to_string(),
        "started": started_unix_s,
    });
    Bytes::from(body.to_string())
}

/// Channels below the prefix: heartbeats, queries to every node, answers to one node, and
/// the external publishers' ingest subjects.
pub(super) const HEARTBEATS: &str = "node.hb";
pub(super) const QUERIES: &str = "node.q";
pub(super) fn answers_for(node: &str) -> String {
    format!("node.r.{node}")
}
pub const INGEST: &str = "in";

/// An external system's publish (`<prefix>.in.<topic>`, plain JSON): validated like any
/// publish, then sequenced through the broker by this node (the leader).
pub(super) fn ingest_external(ctx: &Rc<Ctx>, topic: &str, body: Bytes) {
    let cfg = &ctx.cfg;
    let fail = |why: &str| {
        metrics::counter!("tickcast_cluster_ingest_rejects_total").increment(1);
        crate::warn_sampled!(topic, why, "cluster: external publish refused");
    };
    if crate::pubsub::topic::validate_topic(topic).is_err() {
        return fail("invalid topic");
    }
    if body.len() > cfg.limits.publish_data_bytes_max {
        return fail("data over limits.publish_data_bytes_max");
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return fail("data is not one JSON value");
    }
    metrics::counter!("tickcast_cluster_ingested_total").increment(1);
    let cmd = PublishCmd {
        topic: topic.into(),
        data: body.to_vec(),
        idem: None,
        to_user: false,
        shard: 0,
        reply: ReplyTo::None,
    };
    // Through the same queue as local publishes (per-topic order, bounds).
    if ctx.bridge.send_publish(cmd).is_err() {
        fail("publish queue full");
    }
}

/// Drops nodes not heard from within `cluster.node_ttl_ms` (not while this node cannot
/// hear anyone: its broker connection is down).
pub(super) fn expire_nodes(ctx: &Ctx) {
    if !ctx.bridge.is_up() {
        return;
    }
    let ttl = Duration::from_millis(ctx.cluster().node_ttl_ms);
    let mut gone = Vec::new();
    ctx.nodes.borrow_mut().retain(|id, n| {
        let live = n.seen.elapsed() < ttl;
        if !live {
            gone.push(id.clone());
        }
        live
    });
    for id in gone {
        tracing::warn!(node = %id, "cluster: node expired (no heartbeat)");
        metrics::counter!("tickcast_cluster_node_expiries_total").increment(1);
    }
    publish_nodes(ctx);
}

pub(super) fn publish_nodes(ctx: &Ctx) {
    let mut list: Vec<NodeInfo> = ctx.nodes.borrow().values().cloned().collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    metrics::gauge!("tickcast_cluster_nodes").set((list.len() + 1) as f64);
    if let Ok(mut nodes) = ctx.bridge.nodes.lock() {
        *nodes = list;
    }
}

/// The live node with the smallest id sequences external publishes (`<prefix>.in.>`): one
/// node, so one external publisher's messages to a topic keep their order.
pub(super) async fn sync_leadership<B: Broker>(ctx: &Ctx, broker: &B) {
    let me = &ctx.bridge.node_id;
    if !ctx.bridge.is_up() || Instant::now() < ctx.settle_until.get() {
        return;
    }
    let leader = ctx.nodes.borrow().keys().all(|id| id > me);
    if leader == ctx.bridge.is_leader() {
        return;
    }
    let name = format!("{INGEST}.>");
    let result = if leader {
        // Leader only once the broker has the subscription (a round trip, bounded): until
        // then, `/v1/cluster` and the gauge would claim a leader that still misses messages.
        match broker.raw_subscribe(&name).await {
            Ok(()) => {
                let limit = Duration::from_millis(ctx.cluster().publish_timeout_ms);
                let confirmed = match tokio::time::timeout(limit, broker.flush()).await {
                    Ok(r) => r,
                    Err(_) => Err(BrokerError::failed("the broker did not confirm in time")),
                };
                if confirmed.is_err() {
                    // Undone, so the next attempt subscribes once again, not twice.
                    let _ = broker.raw_unsubscribe(&name).await;
                }
                confirmed
            }
            Err(e) => Err(e),
        }
    } else {
        broker.raw_unsubscribe(&name).await
    };
    match result {
        Ok(()) => {
            ctx.bridge.leader.store(leader, Ordering::Relaxed);
            tracing::info!(node = %me, leader, "cluster: external ingest leadership changed");
            metrics::gauge!("tickcast_cluster_leader").set(if leader { 1.0 } else { 0.0 });
        }
        Err(e) => tracing::warn!(error = %e, "cluster: ingest subscription change failed"),
    }
}
