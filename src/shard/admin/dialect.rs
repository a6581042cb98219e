//! Centrifugo's `history`, `presence` and `presence_stats` commands: asked of the shards like
//! the admin API's `/v1/history` and `/v1/presence` (the same parts), answered on the client's
//! own connection in Centrifugo's shapes. This node's clients only in cluster mode (the admin
//! API asks the other nodes too).

use super::render::{collect_parts, conn_id};
use super::*;
use crate::{
    dialect::centrifugo::{self as cf, error},
    protocol::epoch_str,
    shard::State,
};

/// A Centrifugo command waiting for the shards' parts.
#[derive(Debug)]
pub(crate) struct CfAsk {
    conn: u32,
    conn_epoch: u32,
    id: u32,
    what: CfWhat,
}

#[derive(Debug)]
enum CfWhat {
    /// `since_epoch`: the epoch of the client's `since` (0: none, or not known).
    History {
        since_epoch: u64,
    },
    Presence,
    PresenceStats,
}

/// Clients listed in one `presence` answer at most (the answer is queued like any reply).
const PRESENCE_CLIENTS_MAX: usize = 1000;

/// `history`, `presence` and `presence_stats` commands of one connection waiting for the
/// shards at once; more are answered 111 (too many requests, temporary: the SDKs retry). With
/// each answer bounded (`limits.control_queue_bytes_max`), a client that sends them and never
/// reads holds at most this many answers, and makes the shards work for no more.
pub(crate) const CF_GATHERS_PER_CONN: u8 = 4;

impl State {
    /// `history` of `topic` (whose class keeps history): `limit` publications (0: none, only
    /// the position; below 0: all that are kept) after `since` (offset, epoch), the newest
    /// first when `reverse`.
    pub(crate) fn centrifugo_history(
        &mut self,
        key: u32,
        id: u32,
        topic: &str,
        limit: i64,
        since: Option<(u64, u64)>,
        reverse: bool,
    ) {
        let owner = crate::pubsub::topic::owner_shard(topic, self.shared.shards);
        let query = AdminQuery::History {
            topic: topic.into(),
            since: since.map_or(0, |(offset, _)| offset),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            bytes_max: self
                .body_budget()
                .min(self.cfg.limits.control_queue_bytes_max),
            reverse,
        };
        let since_epoch = since.map_or(0, |(_, e)| e);
        self.centrifugo_gather(key, id, CfWhat::History { since_epoch }, query, 1 << owner);
    }

    /// `presence` (`stats`: `presence_stats`) of `topic`.
    pub(crate) fn centrifugo_presence(&mut self, key: u32, id: u32, topic: &str, stats: bool) {
        let all = self.all_shards();
        if stats {
            let query = AdminQuery::Presence(topic.into());
            return self.centrifugo_gather(key, id, CfWhat::PresenceStats, query, all);
        }
        let query = AdminQuery::Connections(Box::new(ConnFilter {
            user: None,
            topic: Some(topic.into()),
            exact: true,
            after: None,
            limit: PRESENCE_CLIENTS_MAX,
        }));
        self.centrifugo_gather(key, id, CfWhat::Presence, query, all);
    }

    fn centrifugo_gather(&mut self, key: u32, id: u32, what: CfWhat, query: AdminQuery, to: u64) {
        let conn_epoch = self.conns[key].epoch();
        let waiting = self.admin.cf_gathers.entry((key, conn_epoch)).or_insert(0);
        if *waiting >= CF_GATHERS_PER_CONN {
            let msg = "too many requests: wait for the answers to the earlier ones";
            return self.reply_with(key, |out| cf::error(out, id, error::TOO_MANY_REQUESTS, msg));
        }
        *waiting += 1;
        let ask = CfAsk {
            conn: key,
            conn_epoch,
            id,
            what,
        };
        let gather = Gather::new(
            Kind::Centrifugo(Box::new(ask)),
            crate::shard::cluster_api::ClusterStep::None,
        );
        // No reply task awaits it: the answer goes to the connection (`centrifugo_answer`).
        let (token, _) = self.http_waiters.add(false, Some(Box::new(gather)));
        self.admin_send(token, query, to);
    }

    /// Every part is in (`render.rs`): the reply, if the connection is still there.
    pub(super) fn centrifugo_answer(&mut self, ask: CfAsk, parts: Vec<AdminPart>) {
        let waiting = (ask.conn, ask.conn_epoch);
        if let Some(n) = self.admin.cf_gathers.get_mut(&waiting) {
            *n -= 1;
            if *n == 0 {
                self.admin.cf_gathers.remove(&waiting);
            }
        }
        if self
            .conns
            .get(ask.conn)
            .is_none_or(|c| c.epoch() != ask.conn_epoch)
        {
            return;
        }
        let (key, id) = (ask.conn, ask.id);
        let mut out = Vec::with_capacity(256);
        match ask.what {
            CfWhat::History { since_epoch } => {
                let part = parts.into_iter().find_map(|p| match p {
                    AdminPart::History(h) => Some(h),
                    _ => None,
                });
                let (seq, epoch, frames) = match part.flatten() {
                    Some(h) => (h.seq, h.epoch, h.frames),
                    None => (0, 0, Vec::new()),
                };
                if since_epoch != 0 && epoch != 0 && since_epoch != epoch {
                    let msg = "unrecoverable position";
                    cf::error(&mut out, id, error::UNRECOVERABLE_POSITION, msg);
                } else {
                    let pubs: Vec<(u64, &[u8])> =
                        frames.iter().map(|f| (f.seq(), f.data())).collect();
                    cf::history_result(&mut out, id, &pubs, &epoch_str(epoch), seq);
                }
            }
            CfWhat::Presence => {
                let mut conns = collect_parts(parts, |p| match p {
                    AdminPart::Connections(v) => Some(v),
                    _ => None,
                });
                conns.sort_unstable_by_key(|c| (c.shard, c.no));
                conns.truncate(PRESENCE_CLIENTS_MAX);
                let ids: Vec<(String, &str)> = conns
                    .iter()
                    .map(|c| (conn_id(c.shard, c.no), c.user.as_deref().unwrap_or("")))
                    .collect();
                cf::presence_result(&mut out, id, ids.iter().map(|(c, u)| (c.as_str(), *u)));
            }
            CfWhat::PresenceStats => {
                let (users, anonymous) = merge_users(parts);
                let clients = users.iter().map(|(_, n)| *n).sum::<usize>() + anonymous;
                // Anonymous clients are one user, "" (as Centrifugo counts them).
                let n_users = users.len() + usize::from(anonymous > 0);
                cf::presence_stats_result(&mut out, id, clients as u64, n_users as u64);
            }
        }
        self.reply(key, &out);
    }
}
