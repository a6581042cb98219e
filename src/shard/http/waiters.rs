//! The HTTP waiters part of a shard: requests answered by other shards. `/metrics` waits for
//! every shard to flush its statistics, `POST /v1/publish` and the admin `send` for the topic
//! owner's answer, admin API requests for one part per shard ([`Gather`]). A reply task for
//! the request's connection (`conn/poll.rs`) awaits the response on a oneshot channel, bounded by
//! `timeouts.handshake_ms`: a waiter answered after that finds no one listening, and nothing
//! else happens.
//!
//! A query from another node (`cluster_api.rs`) gathers its parts in a waiter too: it has no
//! reply task and no deadline, and leaves through [`Waiters::take`] when its last part is in,
//! answered over the cluster bridge's channel instead. Every shard answers every query it is
//! sent (mesh control messages are never dropped), so no waiter is left behind; nothing
//! expires one that would be.
//!
//! Fields are private: a waiter is added with [`Waiters::add`] or [`Waiters::add_metrics`],
//! and leaves answered ([`Waiters::take`], [`Waiter::respond`]).

use futures_channel::oneshot;
use slab::Slab;

use crate::{shard::admin::Gather, ws::http::write_response};

/// The shard's HTTP requests waiting for other shards, by token (the slab key, sent along
/// with what is asked and back with the answer).
#[derive(Default)]
pub(crate) struct Waiters {
    slab: Slab<Waiter>,
}

/// An HTTP request waiting for other shards.
pub(crate) struct Waiter {
    tx: oneshot::Sender<Vec<u8>>,
    keep_alive: bool,
    /// `/metrics`: shards yet to flush their statistics.
    stats_pending: usize,
    /// A HEAD request: answer with headers only.
    head: bool,
    /// An admin API request collecting one part per shard (`admin/`).
    gather: Option<Box<Gather>>,
}

impl Waiters {
    /// A request waiting for the owner's answer to a publish (`gather: None`), or for the
    /// parts of an admin request. Returns its token and what its reply task awaits.
    pub(crate) fn add(
        &mut self,
        keep_alive: bool,
        gather: Option<Box<Gather>>,
    ) -> (usize, oneshot::Receiver<Vec<u8>>) {
        self.insert(keep_alive, false, 0, gather)
    }

    /// A `/metrics` request waiting for `peers` shards to flush their statistics.
    pub(crate) fn add_metrics(
        &mut self,
        keep_alive: bool,
        head: bool,
        peers: usize,
    ) -> (usize, oneshot::Receiver<Vec<u8>>) {
        self.insert(keep_alive, head, peers, None)
    }

    fn insert(
        &mut self,
        keep_alive: bool,
        head: bool,
        stats_pending: usize,
        gather: Option<Box<Gather>>,
    ) -> (usize, oneshot::Receiver<Vec<u8>>) {
        let (tx, rx) = oneshot::channel();
        let token = self.slab.insert(Waiter {
            tx,
            keep_alive,
            stats_pending,
            head,
            gather,
        });
        (token, rx)
    }

    /// The parts gathered so far for admin request `token`.
    pub(crate) fn gather_mut(&mut self, token: usize) -> Option<&mut Gather> {
        self.slab
            .get_mut(token)
            .and_then(|w| w.gather.as_deref_mut())
    }

    /// One more shard flushed its statistics for `/metrics` request `token`: true when none
    /// is left to (false if the request is gone).
    pub(crate) fn stats_flushed(&mut self, token: usize) -> bool {
        // A token may have been reused by a request of another kind: only a `/metrics` waiter
        // still counting may complete.
        let Some(waiter) = self.slab.get_mut(token) else {
            return false;
        };
        if waiter.gather.is_some() || waiter.stats_pending == 0 {
            return false;
        }
        waiter.stats_pending = waiter.stats_pending.saturating_sub(1);
        waiter.stats_pending == 0
    }

    /// Takes request `token` out to answer it; `None` if it was answered already.
    pub(crate) fn take(&mut self, token: usize) -> Option<Waiter> {
        self.slab.try_remove(token)
    }
}

impl Waiter {
    /// Sends the response (headers only for a HEAD request) to the request's reply task.
    pub(crate) fn respond(self, status: u16, content_type: &str, body: &[u8]) {
        let mut out = Vec::with_capacity(body.len() + 256);
        write_response(&mut out, status, content_type, body, self.keep_alive, &[]);
        if self.head {
            out.truncate(out.len() - body.len());
        }
        let _ = self.tx.send(out);
    }
}
