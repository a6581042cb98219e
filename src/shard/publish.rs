//! Publishing: a publish enters on any shard (client op, `POST /v1/publish`, the demo feed, a
//! user message) and goes to its topic's owner shard (a hash of its name), which alone assigns
//! the topic's `seq` (`sequence`; in cluster mode the broker does) and encodes the frame once
//! (`fanout.rs`). The outcome goes back to whoever waits for it: an ack, an error, an HTTP
//! answer.

use super::{
    State,
    idem::IdemWindow,
    msg::{MeshMsg, PublishMsg},
};
use crate::{
    frame::{monotonic_ns, unix_us},
    mesh::SendOutcome,
    protocol::Published,
    protocol::{self, ErrorCode},
    publish::{PublishOutcome, ReplyTo},
    pubsub::topic::validate_topic,
    stats::SecEvent,
};

/// Why a publish got `capacity`: the topic table of its owner is full of topics that are
/// needed, a cross-shard queue is full, or (cluster mode) the queue of publishes waiting for
/// the broker is.
pub(crate) const CAPACITY_MESSAGE: &str =
    "publish refused: the server is at capacity (topic table or publish queue full); retry later";

impl State {
    /// A validated publish enters here (client op, HTTP, demo feed).
    pub fn ingest_publish(
        &mut self,
        topic: &str,
        data: Vec<u8>,
        idem: Option<Box<str>>,
        reply: ReplyTo,
    ) {
        self.ingest(topic, data, idem, reply, false)
    }

    /// A publish (`to_user`: a user message, `POST /v1/send`, whose topic is
    /// `user.<id>.…`) goes to its topic's owner.
    pub(crate) fn ingest(
        &mut self,
        topic: &str,
        data: Vec<u8>,
        idem: Option<Box<str>>,
        reply: ReplyTo,
        to_user: bool,
    ) {
        crate::fault::check(crate::fault::Site::Shard, topic);
        self.stats.c.publishes += 1;
        if self.shared.bridge.is_some() {
            return self.publish_to_broker(topic, data, idem, reply, to_user);
        }
        let owner = crate::pubsub::topic::owner_shard(topic, self.shared.shards);
        if owner == self.shard {
            self.sequence(topic, &data, idem, reply, self.shard, to_user);
            return;
        }
        let msg = PublishMsg {
            topic: topic.into(),
            data,
            origin: self.shard as u8,
            reply,
            idem,
            to_user,
        };
        match self.mesh.send(owner, MeshMsg::Publish(Box::new(msg))) {
            SendOutcome::Sent => {}
            SendOutcome::Spilled => self.stats.c.mesh_spills += 1,
            SendOutcome::Dropped(MeshMsg::Publish(msg)) => {
                self.stats.c.mesh_drops += 1;
                self.apply_publish_reply(msg.reply, Err(ErrorCode::Capacity));
            }
            SendOutcome::Dropped(_) => unreachable!("send gives back what it was given"),
        }
    }

    /// Owner side: next `seq`, encode once, hand the frame to every interested shard. The
    /// outcome goes back to `origin`, the shard the publish entered on.
    pub(super) fn sequence(
        &mut self,
        topic: &str,
        data: &[u8],
        idem: Option<Box<str>>,
        reply: ReplyTo,
        origin: usize,
        to_user: bool,
    ) {
        if self.ensure_topic(topic).is_err() {
            return self.publish_done(reply, Err(ErrorCode::Capacity), origin);
        }
        let idem_max = self.cfg.limits.idem_keys_per_topic;
        let idem_ttl_ns = self.cfg.cluster.idem_window_s * 1_000_000_000;
        let now_ns = monotonic_ns();
        let State { topics, stats, .. } = self;
        let state = topics.get_mut(topic).expect("ensured above");
        let topic_epoch = state.epoch;
        if let Some(key) = idem {
            let window = state
                .idem
                .get_or_insert_with(|| Box::new(IdemWindow::new(idem_ttl_ns)));
            if let Some(seq) = window.get(&key, now_ns) {
                let done = Published {
                    seq,
                    epoch: topic_epoch,
                    duplicate: true,
                };
                stats.c.duplicates += 1;
                return self.publish_done(reply, Ok(done), origin);
            }
            window.insert(key, state.seq + 1, idem_max, now_ns);
        }
        let seq = state.seq + 1;
        self.commit(topic, seq, unix_us(), data, to_user);
        let done = Published {
            seq,
            epoch: topic_epoch,
            duplicate: false,
        };
        self.publish_done(reply, Ok(done), origin);
    }

    /// The outcome of a publish reaches whoever waits for it (possibly on another shard).
    pub(crate) fn publish_done(
        &mut self,
        reply: ReplyTo,
        result: Result<Published, ErrorCode>,
        origin: usize,
    ) {
        if matches!(reply, ReplyTo::None) {
            return;
        }
        if origin == self.shard {
            return self.apply_publish_reply(reply, result);
        }
        // Control messages are never dropped by the mesh.
        let _ = self.mesh.send(
            origin,
            MeshMsg::Published(Box::new(PublishOutcome { reply, result })),
        );
    }

    pub(crate) fn apply_publish_reply(
        &mut self,
        reply: ReplyTo,
        result: Result<Published, ErrorCode>,
    ) {
        match reply {
            ReplyTo::None => {}
            ReplyTo::Http { token } => self.http_published(token, result),
            ReplyTo::Conn { conn, epoch, id } => {
                if self.conns.get(conn).is_none_or(|c| c.epoch() != epoch) {
                    return;
                }
                if self.conns[conn].dialect.is_centrifugo() {
                    let message = match result {
                        Ok(_) => "",
                        Err(ErrorCode::Capacity) => CAPACITY_MESSAGE,
                        Err(_) => "publish failed: retry",
                    };
                    return self.centrifugo_published(conn, id.as_deref(), result.is_ok(), message);
                }
                match result {
                    Ok(done) => {
                        if let Some(id) = id {
                            self.reply_with(conn, |out| protocol::ack_seq(out, Some(&id), done));
                        }
                    }
                    Err(code) => {
                        let message = match code {
                            ErrorCode::Capacity => CAPACITY_MESSAGE,
                            ErrorCode::Unavailable => {
                                "the cluster broker did not confirm the publish: retry with the \
                                 same idem"
                            }
                            _ => "publish failed",
                        };
                        self.reply_with(conn, |out| {
                            protocol::error(out, id.as_deref(), code, message, None)
                        });
                    }
                }
            }
        }
    }

    /// Why a publish to `topic` with `data_len` bytes of data is refused, if it is (the same
    /// rule for the `publish` op and `POST /v1/publish`).
    pub(crate) fn check_publish(
        &self,
        topic: &str,
        data_len: usize,
    ) -> Result<(), (ErrorCode, String)> {
        validate_topic(topic).map_err(|e| (ErrorCode::InvalidTopic, e.to_string()))?;
        let max = self.cfg.limits.publish_data_bytes_max;
        if data_len > max {
            let msg = format!("data is {data_len} bytes; the limit is {max}");
            return Err((ErrorCode::MessageTooLarge, msg));
        }
        Ok(())
    }

    /// The `publish` op.
    pub(crate) fn publish_op(
        &mut self,
        key: u32,
        id: Option<Box<[u8]>>,
        topic: &str,
        data: Vec<u8>,
        idem: Option<Box<str>>,
    ) {
        if let Err((code, msg)) = self.check_publish(topic, data.len()) {
            let topic = (code == ErrorCode::InvalidTopic).then_some(topic);
            return self.reply_with(key, |out| {
                protocol::error(out, id.as_deref(), code, &msg, topic)
            });
        }
        if !self.may_publish(key, topic) {
            self.stats.security(SecEvent::ForbiddenPublish);
            return self.reply_with(key, |out| {
                let msg = "no permission to publish to this topic";
                protocol::error(out, id.as_deref(), ErrorCode::Forbidden, msg, Some(topic))
            });
        }
        let epoch = self.conns[key].epoch();
        self.ingest_publish(
            topic,
            data,
            idem,
            ReplyTo::Conn {
                conn: key,
                epoch,
                id,
            },
        );
    }
}
