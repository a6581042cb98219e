//! A configuration reload on this shard (SIGHUP, `systemctl reload`; docs/CONFIG.md
//! "Reloading").
//!
//! The signal thread loads and checks the new file (`topology::Reloader::reload`), then sends
//! every shard the same [`Reload`]: the new configuration and the verifier built from it, both
//! immutable and shared. A shard applies it in one section, between two others, so no request
//! sees half of each: it swaps [`State::cfg`] and [`State::auth`], rebuilds what it prepared
//! from them once (rates, queue bounds, the topic classes of the topics it owns, the inflater,
//! presence), then takes from its connections what the new configuration no longer allows:
//! - a connection whose API key is gone (or renamed), whose JWT signing key is gone, whose
//!   JWT lacks an `exp` now required, or that is anonymous where anonymous access was turned
//!   off is closed with 4003;
//! - a subscription the connection's rights no longer allow is removed, and the client told:
//!   protocol v1 an `error` `forbidden` naming the pattern, Centrifugo an `unsubscribe` push
//!   (code 2000); a Binance client, whose protocol cannot tell it, is closed with 4003.
//!
//! Nothing else is touched: queued frames, positions, other subscriptions and the connections
//! themselves stay. Limits apply to what happens next (a lowered `subscriptions_per_conn_max`
//! refuses the next subscribe, it does not cut existing ones).

use std::sync::Arc;

use super::{State, auth::AuthState};
use crate::{
    auth::{Auth, Recheck},
    config::Config,
    dialect::Dialect,
    protocol::{self, ErrorCode},
    stats::CloseReason,
    ws::close as cc,
};

/// A new configuration for every shard (`MeshMsg::Reload`).
pub struct Reload {
    pub cfg: Arc<Config>,
    pub auth: Arc<Auth>,
    /// Where the shard reports what it did, once applied.
    pub done: std::sync::mpsc::Sender<Applied>,
}

impl std::fmt::Debug for Reload {
    // The verifier holds secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reload")
    }
}

/// What a reload did on one shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub shard: usize,
    /// Connections closed with 4003 (credential revoked, anonymous access withdrawn).
    pub closed: usize,
    /// Subscriptions removed because the connection may no longer subscribe to them.
    pub withdrawn: usize,
    /// API-key connections whose rights changed and stay open.
    pub rights_changed: usize,
}

impl State {
    /// Applies a reloaded configuration (see the module doc) and reports what it did.
    pub(crate) fn reload(&mut self, r: Reload) {
        let old = std::mem::replace(&mut self.cfg, r.cfg.clone());
        self.auth = r.auth.clone();
        self.prepare_settings();
        // `server.tcp_notsent_lowat_bytes` for the connections accepted from now on.
        self.set_listener_options();
        self.presence_reclassed(&old);
        let mut applied = self.recheck_connections();
        applied.shard = self.shard;
        // The signal thread may have stopped waiting (it waits a bounded time).
        let _ = r.done.send(applied);
    }

    /// What the shard derives from its configuration once instead of per use (also at start,
    /// `Shard::new`).
    pub(super) fn prepare_settings(&mut self) {
        let cfg = self.cfg.clone();
        crate::frame::set_deflate_min_bytes(cfg.deflate.min_bytes);
        // Validated at load: every template is valid.
        let streams = cfg.binance.streams.iter();
        if let Ok(map) = crate::dialect::binance::StreamMap::new(
            streams.map(|t| (t.stream.as_str(), t.topic.as_str())),
        ) {
            crate::dialect::binance::set_streams(map);
        }
        let l = &cfg.limits;
        self.bounds = super::out::Bounds {
            // Server-initiated control frames (pings, broadcasts) meet their bound at four
            // times the pause point of replies (`conn::write`).
            lane_max: [
                (l.control_queue_bytes_max * 4).min(u32::MAX as usize) as u32,
                l.alert_queue_bytes_max as u32,
                l.private_queue_bytes_max as u32,
                l.write_queue_bytes_max as u32,
            ],
            conflate_after: l.conflate_after_bytes as u32,
        };
        self.msg_rate = crate::auth::Rate::new(l.client_messages_per_s, l.client_messages_burst);
        // Validated at load.
        self.trusted =
            crate::ws::proxy::Trusted::parse(&cfg.server.trusted_proxies).unwrap_or_default();
        self.binance_rate =
            crate::auth::Rate::new(cfg.binance.messages_per_s, cfg.binance.messages_burst);
        self.admin.configure(&cfg);
        self.topics.configure(&cfg);
        // Built with `deflate.inflate_ratio_max`: the next compressed message makes a new one.
        self.inflater = None;
    }

    /// Each WebSocket connection against the new rules: its credential, then its
    /// subscriptions.
    fn recheck_connections(&mut self) -> Applied {
        let mut applied = Applied::default();
        // `/echo` connections neither authenticate nor subscribe.
        let keys: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == super::conn::Phase::Ws && !c.echo)
            .map(|(k, _)| k)
            .collect();
        let anonymous_ok = self.cfg.auth.allow_anonymous;
        let auth_deadline = self.now_ms + self.cfg.auth.auth_timeout_ms;
        for key in keys {
            let conn = &mut self.conns[key];
            let revoked = match conn.ident.as_deref() {
                Some(ident) => match self.auth.recheck(ident) {
                    Recheck::Same => None,
                    Recheck::Changed(now) => {
                        applied.rights_changed += 1;
                        conn.ident = Some(Box::new(now));
                        None
                    }
                    Recheck::Revoked(why) => Some(why),
                },
                // Anonymous access turned on: one waiting to authenticate need not.
                None if conn.auth == AuthState::Pending && anonymous_ok => {
                    conn.auth = AuthState::Ok;
                    None
                }
                // Turned off: a Centrifugo client before its `connect` must now bring a token
                // (a `connect` without one is refused) within `auth.auth_timeout_ms`.
                None if conn.dialect == Dialect::CentrifugoNew && !anonymous_ok => {
                    if conn.auth == AuthState::Ok {
                        conn.auth = AuthState::Pending;
                        conn.deadline_ms = auth_deadline;
                    }
                    None
                }
                None if conn.auth == AuthState::Ok && !anonymous_ok => {
                    Some("anonymous access withdrawn")
                }
                None => None,
            };
            if let Some(why) = revoked {
                self.close_code(key, cc::FORBIDDEN, why, CloseReason::Revoked);
                applied.closed += 1;
                continue;
            }
            let dropped = self.withdraw_forbidden(key);
            if dropped.is_empty() {
                continue;
            }
            applied.withdrawn += dropped.len();
            if self.tell_withdrawn(key, &dropped) {
                applied.closed += 1;
            }
        }
        applied
    }

    /// Tells a client which of its subscriptions a reload took away, in its protocol; whether
    /// that closed the connection.
    fn tell_withdrawn(&mut self, key: u32, dropped: &[Box<str>]) -> bool {
        const WHY: &str = "permission withdrawn by a configuration reload: unsubscribed";
        match self.conns[key].dialect {
            Dialect::Binance => {
                // Binance's protocol has no message for it: a silent stop would look like a
                // quiet market, so the client is closed and, reconnecting, told per stream.
                let topic = &dropped[0];
                let name = crate::dialect::binance::with_streams(|m| m.stream_of(topic));
                let text = format!(
                    "no permission to subscribe to `{}`",
                    name.as_deref().unwrap_or(topic)
                );
                self.close_code(key, cc::FORBIDDEN, &text, CloseReason::Revoked);
                return true;
            }
            Dialect::Centrifugo | Dialect::CentrifugoNew => self.centrifugo_withdrawn(key, dropped),
            Dialect::V1 => {
                for pattern in dropped {
                    self.reply_with(key, |out| {
                        protocol::error(out, None, ErrorCode::Forbidden, WHY, Some(pattern))
                    });
                }
            }
        }
        false
    }
}
