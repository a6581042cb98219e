//! What other shards (and the cluster bridge) sent this shard, taken from the mesh in rounds
//! and handed to the part of the shard it is for.

use std::rc::Rc;

use super::{
    State,
    msg::{MeshMsg, PublishMsg},
};
use crate::{frame::OutFrame, publish::PublishOutcome, stats::Gauges, ws::close as cc};

impl State {
    /// Handles up to `budget` messages from other shards. Returns how many there were.
    pub(crate) fn drain_mesh(&mut self, budget: usize) -> usize {
        let mut inbox = std::mem::take(&mut self.inbox);
        let n = self.mesh.drain(budget, |msg| inbox.push(msg));
        for msg in inbox.drain(..) {
            self.on_mesh(msg);
        }
        self.inbox = inbox;
        n
    }

    fn on_mesh(&mut self, msg: MeshMsg) {
        match msg {
            MeshMsg::Deliver(frame) => {
                // One Rc per frame per shard; subscribers get clones of it.
                let frame: OutFrame = Rc::new(frame);
                self.deliver_local(frame.topic(), frame.clone());
            }
            MeshMsg::Publish(msg) => {
                let PublishMsg {
                    topic,
                    data,
                    origin,
                    reply,
                    idem,
                    to_user,
                } = *msg;
                self.sequence(&topic, &data, idem, reply, origin as usize, to_user);
            }
            MeshMsg::Published(reply) => {
                let PublishOutcome { reply, result } = *reply;
                self.apply_publish_reply(reply, result);
            }
            MeshMsg::Interest(msg) => {
                self.apply_interest(msg.from, &msg.pattern, msg.add);
                let ack = MeshMsg::InterestAck {
                    from: self.shard as u8,
                    seq: msg.seq,
                };
                let _ = self.mesh.send(msg.from as usize, ack);
                if self.live.is_some() {
                    self.live_interest(msg.from, &msg.pattern, msg.seq);
                }
            }
            MeshMsg::InterestAck { from, seq } => {
                self.interest.peer_acked(from, seq);
                self.release_pending_subs();
            }
            MeshMsg::Position(req) => self.on_position_req(*req),
            MeshMsg::PositionReply(rep) => {
                let rep = *rep;
                self.position_arrived(rep.token, rep.conn_epoch, rep.pos);
            }
            MeshMsg::FlushStats { reply_to, token } => {
                self.flush_stats();
                let _ = self
                    .mesh
                    .send(reply_to as usize, MeshMsg::StatsFlushed { token });
            }
            MeshMsg::StatsFlushed { token } => self.stats_flushed(token),
            MeshMsg::DeliverUser(frame) => self.deliver_user(Rc::new(frame)),
            MeshMsg::Admin(req) => self.admin_request_from_peer(*req),
            MeshMsg::AdminReply(rep) => self.admin_part(rep.token, rep.part),
            MeshMsg::Shutdown => self.begin_shutdown(cc::GOING_AWAY, "server shutting down"),
            MeshMsg::Drain => self.begin_drain(),
            MeshMsg::Reload(r) => self.reload(*r),
            MeshMsg::Remote(m) => self.on_remote(*m),
            MeshMsg::Fetched(f) => self.on_fetched(*f),
            MeshMsg::BrokerInterestAck { seq } => {
                self.interest.broker_acked(seq);
                self.release_pending_subs();
            }
            MeshMsg::BrokerUp => self.broker_up(),
            MeshMsg::QueryLocal(q) => self.query_local(*q),
            MeshMsg::QueryReply(r) => self.query_reply(*r),
        }
    }

    /// Writes this shard's counters and gauges into the registry.
    pub(crate) fn flush_stats(&mut self) {
        let gauges = Gauges {
            connections: self.conns.len() as u64,
            handshakes: self.conns.handshakes() as u64,
            partial_bytes: (self.shard == 0).then(|| {
                self.shared
                    .partial_bytes
                    .load(std::sync::atomic::Ordering::Relaxed) as u64
            }),
            subscriptions: self.index.subscription_count() as u64,
            patterns: self.index.pattern_count() as u64,
            topics: self.topics.len() as u64,
            filters: self.index.filter_count() as u64,
        };
        self.stats.c.topics_dropped = self.topics.dropped();
        self.stats.c.compressions = crate::frame::compressions();
        self.stats.c.formats = crate::frame::form_encodings();
        self.stats.flush(gauges, &self.shared.hub);
    }
}
