//! Cluster-wide admin queries (`/v1/online`, `/v1/presence`): asked on the query channel,
//! answered by every live node's shards, gathered with a deadline
//! (`cluster.query_timeout_ms`); nodes that did not answer are named.

use std::{rc::Rc, time::Duration};

use bytes::Bytes;

use super::*;

/// Asks every live node for its part of `path`'s answer; the parts go back to `shard`.
pub(super) async fn start_query<B: Broker>(
    ctx: Rc<Ctx>,
    broker: Rc<B>,
    shard: u8,
    token: u32,
    path: Box<str>,
) {
    let want: Vec<String> = ctx.nodes.borrow().keys().cloned().collect();
    if want.is_empty() {
        let rep = QueryReply {
            token,
            parts: Vec::new(),
            missing: Vec::new(),
        };
        ctx.deliver(shard as usize, ToShard::QueryReply(Box::new(rep)), false);
        return;
    }
    let id = fastrand::u64(..);
    ctx.queries.borrow_mut().insert(
        id,
        PendingQuery {
            shard,
            token,
            want,
            parts: Vec::new(),
        },
    );
    let body = serde_json::json!({ "id": id, "from": ctx.bridge.node_id, "path": &*path });
    let _ = broker
        .raw_publish(QUERIES, Bytes::from(body.to_string()))
        .await;
    let ctx = ctx.clone();
    tokio::task::spawn_local(async move {
        tokio::time::sleep(Duration::from_millis(ctx.cluster().query_timeout_ms)).await;
        finish_query(&ctx, id);
    });
}

/// Another node's query: this node's part is computed by its shards (`QueryLocal`), and the
/// answer published to the asking node's channel.
pub(super) async fn on_query<B: Broker>(ctx: Rc<Ctx>, broker: Rc<B>, body: Bytes) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return;
    };
    let (Some(id), Some(from), Some(path)) =
        (v["id"].as_u64(), v["from"].as_str(), v["path"].as_str())
    else {
        return;
    };
    if from == ctx.bridge.node_id {
        return;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    ctx.deliver(
        0,
        ToShard::QueryLocal(Box::new(QueryLocal {
            path: path.into(),
            reply: Some(tx),
        })),
        false,
    );
    let limit = Duration::from_millis(ctx.cluster().query_timeout_ms);
    let Ok(Ok(part)) = tokio::time::timeout(limit, rx).await else {
        return;
    };
    let mut out = format!(
        "{{\"id\":{id},\"node\":{},\"part\":",
        serde_json::Value::from(ctx.bridge.node_id.as_str())
    )
    .into_bytes();
    out.extend_from_slice(&part);
    out.push(b'}');
    let _ = broker
        .raw_publish(&answers_for(from), Bytes::from(out))
        .await;
}

pub(super) fn on_answer(ctx: &Ctx, body: Bytes) {
    #[derive(serde::Deserialize)]
    struct Answer {
        id: u64,
        node: String,
        part: serde_json::Value,
    }
    let Ok(a) = serde_json::from_slice::<Answer>(&body) else {
        return;
    };
    let done = {
        let mut queries = ctx.queries.borrow_mut();
        let Some(q) = queries.get_mut(&a.id) else {
            return;
        };
        if !q.want.contains(&a.node) || q.parts.iter().any(|(n, _)| *n == a.node) {
            return;
        }
        q.parts.push((a.node, Bytes::from(a.part.to_string())));
        q.parts.len() == q.want.len()
    };
    if done {
        finish_query(ctx, a.id);
    }
}

pub(super) fn finish_query(ctx: &Ctx, id: u64) {
    let Some(q) = ctx.queries.borrow_mut().remove(&id) else {
        return;
    };
    let missing = q
        .want
        .iter()
        .filter(|n| !q.parts.iter().any(|(p, _)| p == *n))
        .cloned()
        .collect();
    let rep = QueryReply {
        token: q.token,
        parts: q.parts,
        missing,
    };
    ctx.deliver(q.shard as usize, ToShard::QueryReply(Box::new(rep)), false);
}
