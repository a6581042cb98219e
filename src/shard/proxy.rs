//! The client's address behind proxies, on the shard (the parsing is `crate::ws::proxy`).
//!
//! A connection starts with its TCP peer's address ([`Conn::ip`]), counted in the per-IP
//! connection counter at accept. Two things may replace it, and only when the one saying it
//! is in `server.trusted_proxies`:
//!
//! 1. **A PROXY protocol header** at the very start of the connection (`server.proxy_protocol`),
//!    read before anything else, before TLS too ([`State::prelude`]). The header is optional:
//!    a trusted connection without one is read as usual. A header from anyone else is refused.
//! 2. **The forwarded header** of each HTTP request from a trusted address (after 1, that is the
//!    header's source: a chain of proxies works). A plain request (a health check, a scrape)
//!    uses it for that request only ([`State::request_ip`], e.g. the loopback rule of
//!    `auth.health_metrics`), so the next request on a proxy's keep-alive connection is again
//!    judged by the proxy's address. An upgrade makes it the connection's address for good
//!    ([`State::take_request_ip`]).
//!
//! **Per-IP accounting.** The per-IP counters (`Shared::per_ip`, `connect_tat`) are kept by the
//! address the connection has when they are used. When the address changes, the connection's
//! count moves with it in the same step ([`State::set_client_ip`]), so the one decrement in
//! `remove_conn`, by the connection's address at that time, always undoes the one increment
//! made at accept, however many moves came between. Until its header or upgrade request is
//! read, a connection through a proxy counts under the proxy's address; the limits themselves
//! are checked at the upgrade, by then under the client's. The connect rate is charged only at
//! the upgrade, to the client's address.
//!
//! [`Conn::ip`]: super::conn::Conn::ip

use std::{net::IpAddr, sync::atomic::Ordering};

use super::{State, conn::Phase};
use crate::{
    config::ForwardedHeader,
    stats::{CloseReason, ProxyEvent},
    ws::{
        http::Request,
        proxy::{
            forwarded::{self, Field, Walk},
            header::{self, HeaderError, Preamble},
        },
    },
};

/// Why a PROXY header from a peer that may not send one is refused.
const UNTRUSTED: &str = "PROXY protocol header not accepted from this address";

/// What the first bytes of a connection may hold (`Conn::prelude`), decided at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prelude {
    /// The first bytes were looked at: nothing more to do.
    Done,
    /// A PROXY header here is refused: the peer is not trusted, or `server.proxy_protocol` is
    /// off. (Looked for so the refusal is clear and counted, not an HTTP parse error or a TLS
    /// alert.)
    Refuse,
    /// A PROXY header here is read: a trusted peer, `server.proxy_protocol` on.
    Read,
}

/// What [`State::prelude`] leaves for the read.
pub(super) enum PreludeStep {
    /// Go on: the bytes after any header are in the scratch buffer (perhaps none).
    Continue,
    /// Too few bytes to tell: they are kept; read on.
    More,
    /// The header was refused; the connection is answered and closing (or dead).
    Refused,
}

impl State {
    /// What a connection from `peer` may begin with.
    pub(super) fn prelude_for(&self, peer: IpAddr) -> Prelude {
        if self.cfg.server.proxy_protocol && self.trusted.contains(peer) {
            Prelude::Read
        } else {
            Prelude::Refuse
        }
    }

    /// The first bytes of connection `key` (kept ones, then the scratch buffer's): a PROXY
    /// header is taken off and, if the connection may send one, its address becomes the
    /// connection's. Bounded by the header's maximum size and the handshake deadline.
    pub(super) fn prelude(&mut self, key: u32) -> PreludeStep {
        let conn = &mut self.conns[key];
        if conn.has_bytes() {
            let kept = conn.take_bytes();
            self.scratch.splice(..0, kept);
        }
        let conn = &mut self.conns[key];
        let mode = conn.prelude;
        match header::parse(&self.scratch) {
            Ok(Preamble::Incomplete) => {
                conn.keep_bytes(self.scratch.clone());
                self.scratch.clear();
                if self.settle_partial(key, false) {
                    PreludeStep::More
                } else {
                    PreludeStep::Refused
                }
            }
            Ok(Preamble::Absent) => {
                conn.prelude = Prelude::Done;
                self.settle_partial(key, false);
                PreludeStep::Continue
            }
            Ok(Preamble::Header { len, source }) if mode == Prelude::Read => {
                conn.prelude = Prelude::Done;
                self.scratch.drain(..len);
                self.settle_partial(key, false);
                match source {
                    Some(ip) => {
                        self.set_client_ip(key, ip);
                        self.stats.proxy(ProxyEvent::Header);
                    }
                    None => self.stats.proxy(ProxyEvent::HeaderLocal),
                }
                PreludeStep::Continue
            }
            Ok(Preamble::Header { .. }) => self.refuse(key, ProxyEvent::HeaderUntrusted, UNTRUSTED),
            Err(_) if mode == Prelude::Refuse => {
                self.refuse(key, ProxyEvent::HeaderUntrusted, UNTRUSTED)
            }
            Err(e @ HeaderError::TooLarge) => {
                self.refuse(key, ProxyEvent::HeaderTooLarge, e.reason())
            }
            Err(HeaderError::Malformed(why)) => self.refuse(key, ProxyEvent::HeaderInvalid, why),
        }
    }

    /// A PROXY header refused for `why`: HTTP 400 on the plain listener (the proxy passes it
    /// on to whoever is debugging), the connection closed on the TLS listener (plain text is
    /// no answer there). Logged at WARN, rate-limited: the usual cause is a load balancer
    /// sending headers that tickcast was not configured to take.
    fn refuse(&mut self, key: u32, event: ProxyEvent, why: &'static str) -> PreludeStep {
        self.stats.proxy(event);
        let count = self.stats.c.proxy[event as usize];
        if count.is_power_of_two() {
            tracing::warn!(
                shard = self.shard,
                peer = %self.conns[key].ip(),
                reason = why,
                count,
                "PROXY protocol header refused (see server.trusted_proxies, server.proxy_protocol)"
            );
        }
        self.scratch.clear();
        let conn = &mut self.conns[key];
        conn.prelude = Prelude::Done;
        if conn.tls.is_some() {
            self.kill(key, CloseReason::Rejected);
        } else {
            self.respond_error(key, 400, "bad_request", why, false);
        }
        PreludeStep::Refused
    }

    /// The address of the client that sent `req` on connection `key`: the connection's, or,
    /// when that is a trusted proxy's, what its forwarded header says.
    pub(super) fn request_ip(&self, key: u32, req: &Request<'_>) -> (IpAddr, Walk) {
        let sender = self.conns[key].ip();
        if !self.trusted.contains(sender) {
            return (sender, Walk::Absent);
        }
        let (field, lines) = match self.cfg.server.forwarded_header {
            ForwardedHeader::XForwardedFor => (Field::XForwardedFor, req.x_forwarded_for),
            ForwardedHeader::Forwarded => (Field::Forwarded, req.forwarded),
        };
        let walk = forwarded::client(lines.iter(), field, sender, &self.trusted);
        match walk {
            Walk::Absent => (sender, walk),
            Walk::Client(ip) | Walk::Invalid(ip) => (ip, walk),
        }
    }

    /// An upgrade request: its client's address ([`State::request_ip`]) becomes the
    /// connection's for the rest of its life, before the limits are checked.
    pub(super) fn take_request_ip(&mut self, key: u32, req: &Request<'_>) {
        let (ip, walk) = self.request_ip(key, req);
        match walk {
            Walk::Absent => return,
            Walk::Client(_) => self.stats.proxy(ProxyEvent::Forwarded),
            Walk::Invalid(_) => self.stats.proxy(ProxyEvent::ForwardedInvalid),
        }
        self.set_client_ip(key, ip);
    }

    /// Gives connection `key` the address `ip`; its share of the per-IP connection count
    /// moves with it (see the module doc).
    fn set_client_ip(&mut self, key: u32, ip: IpAddr) {
        let conn = &mut self.conns[key];
        let old = conn.ip_bucket() as usize;
        conn.set_ip(ip);
        let new = conn.ip_bucket() as usize;
        if old != new {
            let per_ip = &self.shared.per_ip;
            per_ip[old].fetch_sub(1, Ordering::Relaxed);
            per_ip[new].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The handshake deadline passed for `key` (`timer.rs`): counted if it was waiting for the
    /// rest of a PROXY header.
    pub(super) fn handshake_expired(&mut self, key: u32) {
        let conn = &self.conns[key];
        if conn.phase == Phase::Http && conn.prelude == Prelude::Read && conn.has_bytes() {
            self.stats.proxy(ProxyEvent::HeaderTimeout);
        }
    }
}
