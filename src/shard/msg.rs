//! What travels between shards (and from the cluster bridge to a shard) over the mesh: one
//! enum, two words each, big payloads boxed. The mesh (`crate::mesh`) is only the transport.

use super::{
    admin::{AdminPart, AdminQuery},
    recovery::Position,
};
use crate::{
    cluster::{Fetched, QueryLocal, QueryReply, Received, ToShard},
    frame::SharedFrame,
    mesh::Droppable,
    publish::{PublishOutcome, ReplyTo},
};

/// Everything that travels between shards. Kept to two words: big payloads are boxed.
#[derive(Debug)]
pub enum MeshMsg {
    /// A data frame for the destination's local subscribers (the hot path).
    Deliver(SharedFrame),
    /// A publish for the topic's owner to sequence and encode.
    Publish(Box<PublishMsg>),
    /// The owner's answer to a publish, back to where it entered.
    Published(Box<PublishOutcome>),
    /// The sender's local interest in a pattern changed.
    Interest(Box<InterestMsg>),
    /// The sender has applied every `Interest` up to `seq` from the destination.
    InterestAck {
        from: u8,
        seq: u64,
    },
    /// Write your statistics into the registry, then acknowledge to `reply_to`.
    FlushStats {
        reply_to: u8,
        token: u32,
    },
    StatsFlushed {
        token: u32,
    },
    /// Stop accepting, close every connection with 1001, exit within the grace period.
    Shutdown,
    /// Stop accepting, close the WebSocket clients with 1012 spread over `timeouts.drain_s`,
    /// then shut down (SIGUSR2: the old half of a zero-downtime restart).
    Drain,
    /// A reloaded configuration (SIGHUP): apply it, then report (`shard::reload`).
    Reload(Box<super::reload::Reload>),
    /// To a topic's owner: the topic's position and what a subscriber missed.
    Position(Box<PositionReq>),
    /// The owner's answer, back to the subscriber's shard.
    PositionReply(Box<PositionRep>),
    /// A user message's data frame (topic `user.<id>.…`): for the destination's local
    /// subscribers of the topic and every local connection of user `<id>`, once each.
    DeliverUser(SharedFrame),
    /// An admin API question for the destination (`src/shard/admin.rs`).
    Admin(Box<AdminReq>),
    /// The destination's part of the answer, back to the asking shard.
    AdminReply(Box<AdminRep>),
    /// Cluster (from the bridge, to the topic's owner): a message the broker sequenced.
    Remote(Box<Received>),
    /// Cluster (from the bridge, to the topic's owner): the broker's history of a topic.
    Fetched(Box<Fetched>),
    /// Cluster (from the bridge): the broker has this shard's interest up to `seq`.
    BrokerInterestAck {
        seq: u64,
    },
    /// Cluster (from the bridge): the broker connection is back; owners repair their topics.
    BrokerUp,
    /// Cluster (from the bridge, to shard 0): this node's part of another node's admin query.
    QueryLocal(Box<QueryLocal>),
    /// Cluster (from the bridge): the other nodes' parts of this shard's admin query.
    QueryReply(Box<QueryReply>),
}

const _: () = assert!(std::mem::size_of::<MeshMsg>() <= 16);

impl Droppable for MeshMsg {
    /// Frames and publishes on their way; broker traffic (repaired from the broker's history
    /// when dropped). Everything else is control.
    fn droppable(&self) -> bool {
        matches!(
            self,
            MeshMsg::Deliver(_)
                | MeshMsg::DeliverUser(_)
                | MeshMsg::Publish(_)
                | MeshMsg::Remote(_)
        )
    }
}

/// A bridge message that found its ring full, back in the bridge's terms (see `From` below).
pub(super) fn to_bridge_msg(m: MeshMsg) -> ToShard {
    match m {
        MeshMsg::Remote(r) => ToShard::Remote(r),
        MeshMsg::Fetched(f) => ToShard::Fetched(f),
        MeshMsg::BrokerInterestAck { seq } => ToShard::InterestAck { seq },
        MeshMsg::BrokerUp => ToShard::Up,
        MeshMsg::QueryLocal(q) => ToShard::QueryLocal(q),
        MeshMsg::QueryReply(r) => ToShard::QueryReply(r),
        MeshMsg::Published(p) => ToShard::Published(p),
        other => unreachable!("{other:?} never comes from the bridge"),
    }
}

/// What the cluster bridge hands a shard travels as the corresponding mesh message.
impl From<ToShard> for MeshMsg {
    fn from(m: ToShard) -> MeshMsg {
        match m {
            ToShard::Remote(r) => MeshMsg::Remote(r),
            ToShard::Fetched(f) => MeshMsg::Fetched(f),
            ToShard::InterestAck { seq } => MeshMsg::BrokerInterestAck { seq },
            ToShard::Up => MeshMsg::BrokerUp,
            ToShard::QueryLocal(q) => MeshMsg::QueryLocal(q),
            ToShard::QueryReply(r) => MeshMsg::QueryReply(r),
            ToShard::Published(p) => MeshMsg::Published(p),
        }
    }
}

#[derive(Debug)]
pub struct AdminReq {
    pub from: u8,
    /// The HTTP waiter on the asking shard.
    pub token: u32,
    pub query: AdminQuery,
}

#[derive(Debug)]
pub struct AdminRep {
    pub token: u32,
    pub part: AdminPart,
}

#[derive(Debug)]
pub struct PositionReq {
    pub topic: Box<str>,
    /// The client's `since`: (seq, epoch).
    pub since: Option<(u64, u64)>,
    pub from: u8,
    /// The pending subscribe on the sender.
    pub token: u32,
    pub conn_epoch: u32,
}

#[derive(Debug)]
pub struct PositionRep {
    pub pos: Position,
    pub token: u32,
    pub conn_epoch: u32,
}

#[derive(Debug)]
pub struct PublishMsg {
    /// Validated concrete topic.
    pub topic: Box<str>,
    /// One JSON value, verbatim.
    pub data: Vec<u8>,
    pub origin: u8,
    pub reply: ReplyTo,
    /// Deduplication key (`idem`), if the publisher gave one.
    pub idem: Option<Box<str>>,
    /// A user message (`POST /v1/send`): delivered to the user's connections too.
    pub to_user: bool,
}

#[derive(Debug)]
pub struct InterestMsg {
    pub from: u8,
    pub pattern: Box<str>,
    pub add: bool,
    /// Per-sender sequence; acknowledged with `InterestAck`.
    pub seq: u64,
}
