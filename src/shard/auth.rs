//! The shard's side of security (docs/SECURITY.md): admission at the upgrade (Origin, connect
//! rate, token, per-user limit), the `auth` op (first authentication and refresh), permission
//! checks on subscribe and publish, the per-connection message rate, token expiry, and access
//! to the HTTP admin and observability endpoints.
//!
//! Tokens are verified once per connection or refresh; permissions once per subscribe or
//! publish. Nothing here runs per delivered message.

use std::{
    hash::{Hash, Hasher},
    sync::atomic::Ordering,
};

use super::State;
use crate::{
    auth::{Identity, Method, Rate},
    config::EndpointAccess,
    protocol::{self, ErrorCode},
    stats::{CloseReason, SecEvent},
    ws::{close as cc, http::Request},
};

/// Where a connection stands with authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthState {
    /// Authenticated, or anonymous where anonymous access is allowed.
    Ok,
    /// No token yet and `auth.allow_anonymous` is off: only `auth` and `ping` until
    /// `deadline_ms`, then close 4001.
    Pending,
    /// The token expired: it was told; a fresh token must arrive by `deadline_ms`.
    Expired,
}

/// An HTTP refusal before the upgrade or of an admin request.
pub(crate) struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub header: Option<(&'static str, String)>,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    fn unauthorized(message: impl Into<String>) -> Refusal {
        Refusal {
            header: Some(("WWW-Authenticate", "Bearer".into())),
            ..Refusal::new(401, "unauthorized", message)
        }
    }
}

/// The token of a request: `Authorization: Bearer <token>`, else the `token` query parameter.
pub(crate) fn request_token(req: &Request<'_>) -> Option<String> {
    if let Some(h) = req.authorization {
        if let Some((scheme, token)) = h.trim().split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                return Some(token.trim().to_string());
            }
        }
    }
    req.query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
        .map(percent_decode)
}

/// `%XX` and `+` decoding of a query value; a broken escape is kept as is (the token then
/// fails verification, with a clear error).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `origin` is allowed by `allowed` (exact, case-insensitive, or `scheme://*.domain`).
pub(crate) fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|a| {
            if a.eq_ignore_ascii_case(origin) {
                return true;
            }
            let Some((scheme, rest)) = a.split_once("://*.") else {
                return false;
            };
            let Some(host) = origin
                .get(..scheme.len() + 3)
                .filter(|p| p.eq_ignore_ascii_case(&format!("{scheme}://")))
                .map(|_| &origin[scheme.len() + 3..])
            else {
                return false;
            };
            let suffix = format!(".{rest}");
            host.len() > suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(&suffix)
                && !host[..host.len() - suffix.len()].contains(['/', '@'])
        })
}

/// What a token presented on an open connection led to ([`State::take_token`]).
pub(crate) enum TokenOutcome {
    /// The connection is now `user`'s (until `exp`, Unix s); it lost `dropped`.
    Taken {
        user: Box<str>,
        exp: Option<u64>,
        dropped: Vec<Box<str>>,
    },
    Invalid(crate::auth::AuthError),
    /// A refresh for another user or kind of credential.
    UserChanged,
    /// `limits.connections_per_user_max`.
    TooManyForUser,
}

fn user_bucket(user: &str) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % crate::limits::HASHED_COUNTER_BUCKETS as u64) as usize
}

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl State {
    /// Admission of a WebSocket upgrade, after the connection limits: `Origin`, the connect
    /// rate of the client's address, the token if one is presented, the user's connection
    /// limit. `Ok(None)`: no token (anonymous, or `Pending` if anonymous is not allowed).
    pub(crate) fn admit(
        &mut self,
        key: u32,
        req: &Request<'_>,
    ) -> Result<Option<Box<Identity>>, Refusal> {
        let cfg = &self.cfg;
        if let Some(origin) = req.origin {
            if !origin_allowed(&cfg.auth.allowed_origins, origin) {
                self.stats.security(SecEvent::OriginRejected);
                return Err(Refusal::new(403, "forbidden", "origin not allowed"));
            }
        }
        let rate = Rate::new(
            cfg.limits.connect_rate_per_ip_per_s,
            cfg.limits.connect_burst_per_ip,
        );
        if !rate.is_unlimited() {
            let tat = &self.shared.connect_tat[self.conns[key].ip_bucket() as usize];
            let now_us = self.shared.started.elapsed().as_micros() as u64;
            if !rate.check_shared(tat, now_us) {
                self.stats.security(SecEvent::RateLimitedConnect);
                let wait_s = rate
                    .wait_us(tat.load(Ordering::Relaxed), now_us)
                    .div_ceil(1_000_000)
                    .max(1);
                return Err(Refusal {
                    header: Some(("Retry-After", wait_s.to_string())),
                    ..Refusal::new(
                        429,
                        "rate_limited",
                        "too many connection attempts from this address",
                    )
                });
            }
        }
        let Some(token) = request_token(req) else {
            return Ok(None);
        };
        let ident = match self.auth.verify(&token) {
            Ok(ident) => ident,
            Err(e) => {
                self.stats.auth_failed(&e);
                return Err(Refusal::unauthorized(e.to_string()));
            }
        };
        if !self.claim_user(&ident) {
            return Err(Refusal::new(
                429,
                "rate_limited",
                "too many connections for this user",
            ));
        }
        self.count_auth(key, &ident);
        Ok(Some(Box::new(ident)))
    }

    /// Counts an accepted credential. API keys (services and bots, few connections each) are
    /// also logged (with the client's address) and counted by name; JWT users are not (a fan-out may hold 100k of them).
    fn count_auth(&mut self, key: u32, ident: &Identity) {
        match ident.method {
            Method::Jwt => self.stats.security(SecEvent::AuthJwt),
            Method::ApiKey => {
                self.stats.security(SecEvent::AuthApiKey);
                metrics::counter!("tickcast_api_key_auth_total", "key" => ident.user.to_string())
                    .increment(1);
                tracing::info!(
                    shard = self.shard,
                    key = &*ident.user,
                    ip = %self.conns[key].ip(),
                    "API key authenticated"
                );
            }
        }
    }

    /// Counts one more connection of `ident`'s user; false if over
    /// `limits.connections_per_user_max`.
    fn claim_user(&mut self, ident: &Identity) -> bool {
        let max = self.cfg.limits.connections_per_user_max as u32;
        let slot = &self.shared.per_user[user_bucket(&ident.user)];
        let ok = slot
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !ok {
            self.stats.security(SecEvent::UserLimit);
        }
        ok
    }

    /// The connection of `ident` is gone.
    pub(crate) fn release_user(&self, ident: &Identity) {
        self.shared.per_user[user_bucket(&ident.user)].fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets who an upgraded connection is; without an identity it is anonymous, or must
    /// authenticate within `auth.auth_timeout_ms` if anonymous access is off.
    pub(crate) fn set_identity(&mut self, key: u32, ident: Option<Box<Identity>>) {
        let a = &self.cfg.auth;
        let deadline = self.now_ms + a.auth_timeout_ms;
        let conn = &mut self.conns[key];
        if ident.is_none() && !a.allow_anonymous {
            conn.auth = AuthState::Pending;
            conn.deadline_ms = deadline;
        }
        conn.ident = ident;
        // Admin: per-user index of connections (`super::admin`).
        self.user_indexed(key);
    }

    /// The message rate of connection `key`: true if this message may be processed. Over the
    /// rate it is refused (`rate_limited` for data messages, silently for pings); after
    /// `limits.client_rate_limited_close_after` refusals in a row the connection is closed
    /// with 4029.
    pub(crate) fn rate_ok(&mut self, key: u32, reply: bool) -> bool {
        let conn = &mut self.conns[key];
        let binance = conn.dialect == crate::dialect::Dialect::Binance;
        let rate = match conn.ident.as_ref().and_then(|i| i.rate) {
            _ if binance => self.binance_rate,
            Some(rate) => rate,
            None => self.msg_rate,
        };
        let now_us = self.now_ms * 1000;
        if let Some(tat) = rate.check(conn.rate_tat_us, now_us) {
            conn.rate_tat_us = tat;
            conn.rate_strikes = 0;
            return true;
        }
        conn.rate_strikes = conn.rate_strikes.saturating_add(1);
        let strikes = conn.rate_strikes as u32;
        self.stats.security(SecEvent::RateLimitedMessage);
        let limits = &self.cfg.limits;
        let centrifugo = self.conns[key].dialect.is_centrifugo();
        if binance {
            // Binance disconnects a client over its message rate at once.
            self.close_code(
                key,
                cc::POLICY,
                "too many requests",
                CloseReason::RateLimited,
            );
        } else if centrifugo || strikes >= limits.client_rate_limited_close_after {
            // A Centrifugo client at once (3013, the SDKs reconnect with backoff): its
            // protocol has no error for a message, and a command left unanswered makes the
            // SDK reconnect anyway, after its timeout.
            self.close_code(
                key,
                cc::RATE_LIMITED,
                "rate limit exceeded",
                CloseReason::RateLimited,
            );
        } else if reply {
            let msg = "over this connection's message rate: message dropped";
            self.reply_with(key, |out| {
                protocol::error(out, None, ErrorCode::RateLimited, msg, None)
            });
        }
        false
    }

    /// Whether `key` may run an op other than `auth`/`ping`/`unsubscribe` now; replies
    /// `unauthorized` if not.
    pub(crate) fn auth_gate(&mut self, key: u32, id: Option<&[u8]>) -> bool {
        let msg = match self.conns[key].auth {
            AuthState::Ok => return true,
            AuthState::Pending => "authenticate first: send {\"op\":\"auth\",\"token\":...}",
            AuthState::Expired => "token expired: send a fresh token with the auth op",
        };
        self.reply_with(key, |out| {
            protocol::error(out, id, ErrorCode::Unauthorized, msg, None)
        });
        false
    }

    /// May `key` subscribe to `pattern`? Anonymous rights apply to everyone when anonymous
    /// access is on; a token adds its own.
    pub(crate) fn may_subscribe(&self, key: u32, pattern: &str) -> bool {
        let auth = &self.auth;
        let anon = self.cfg.auth.allow_anonymous && auth.anonymous_subs.allows_pattern(pattern);
        anon || self.conns[key]
            .ident
            .as_ref()
            .is_some_and(|i| i.subs.allows_pattern(pattern))
    }

    /// May `key` publish to `topic`?
    pub(crate) fn may_publish(&self, key: u32, topic: &str) -> bool {
        let auth = &self.auth;
        let anon = self.cfg.auth.allow_anonymous && auth.anonymous_pubs.allows_topic(topic);
        anon || self.conns[key]
            .ident
            .as_ref()
            .is_some_and(|i| i.pubs.allows_topic(topic))
    }

    /// Unsubscribes `key` from what it may no longer subscribe to (after a token refresh or a
    /// reload); returns those patterns. A Centrifugo client's join and leave pushes
    /// (`presence.<channel>`) go with the channel's right.
    pub(crate) fn withdraw_forbidden(&mut self, key: u32) -> Vec<Box<str>> {
        let subs = std::mem::take(&mut self.conns[key].subs);
        let centrifugo = self.conns[key].dialect.is_centrifugo();
        let (kept, dropped): (Vec<_>, Vec<_>) = subs.into_iter().partition(|p| {
            let channel = p
                .strip_prefix(crate::dialect::centrifugo::PRESENCE_PREFIX)
                .filter(|_| centrifugo);
            self.may_subscribe(key, channel.unwrap_or(p))
        });
        self.conns[key].subs = kept;
        for pattern in &dropped {
            self.unsubscribe_pattern(pattern, key);
            self.cancel_pending(key, pattern, true);
        }
        dropped
    }

    /// The `auth` op: authenticates an anonymous connection or refreshes a token. A refresh
    /// must be for the same user; subscriptions the new token no longer allows are dropped
    /// and listed in the ack. An invalid token closes the connection (1008).
    pub(crate) fn auth_op(&mut self, key: u32, id: Option<Box<[u8]>>, token: &str) {
        let id = id.as_deref();
        match self.take_token(key, token) {
            TokenOutcome::Taken { user, exp, dropped } => {
                self.reply_with(key, |out| protocol::ack_auth(out, id, &user, exp, &dropped));
            }
            TokenOutcome::Invalid(e) => {
                let msg = e.to_string();
                self.reply_with(key, |out| {
                    protocol::error(out, id, ErrorCode::Unauthorized, &msg, None)
                });
                self.close_code(key, cc::POLICY, "invalid token", CloseReason::AuthFailed);
            }
            TokenOutcome::UserChanged => {
                self.reply_with(key, |out| {
                    let msg = "a refresh must be for the same user";
                    protocol::error(out, id, ErrorCode::Forbidden, msg, None)
                });
                self.close_code(key, cc::POLICY, "user changed", CloseReason::AuthFailed);
            }
            TokenOutcome::TooManyForUser => {
                let msg = "too many connections for this user";
                self.reply_with(key, |out| {
                    protocol::error(out, id, ErrorCode::RateLimited, msg, None)
                });
                self.close_code(key, cc::RATE_LIMITED, msg, CloseReason::RateLimited);
            }
        }
    }

    /// A token presented on an open connection (the `auth` op, Centrifugo's `connect` and
    /// `refresh`): verified, and on success the connection's identity (a refresh must be for
    /// the same user and kind of credential); patterns it may no longer subscribe to are
    /// unsubscribed and returned.
    pub(crate) fn take_token(&mut self, key: u32, token: &str) -> TokenOutcome {
        let ident = match self.auth.verify(token) {
            Ok(ident) => ident,
            Err(e) => {
                self.stats.auth_failed(&e);
                return TokenOutcome::Invalid(e);
            }
        };
        match &self.conns[key].ident {
            // The same user *and* the same kind of credential: a JWT whose `sub` happens to
            // equal an API key's name must not take over that key's connection.
            Some(old) if old.user != ident.user || old.method != ident.method => {
                return TokenOutcome::UserChanged;
            }
            Some(_) => self.stats.security(SecEvent::Refreshed),
            None => {
                if !self.claim_user(&ident) {
                    return TokenOutcome::TooManyForUser;
                }
                self.count_auth(key, &ident);
            }
        }
        let user = ident.user.clone();
        let exp = ident.exp_s;
        let conn = &mut self.conns[key];
        let newly = conn.ident.is_none();
        conn.ident = Some(Box::new(ident));
        conn.auth = AuthState::Ok;
        // Admin: per-user index, `join` for presence topics already subscribed
        // (`super::admin`).
        if newly {
            self.user_indexed(key);
        }
        let dropped = self.withdraw_forbidden(key);
        TokenOutcome::Taken { user, exp, dropped }
    }

    /// Timer: tokens that expired, and connections past their authentication deadline.
    pub(crate) fn scan_auth(&mut self, now_ms: u64) {
        let now_s = unix_s();
        let a = &self.cfg.auth;
        let leeway = a.jwt_leeway_s;
        let grace_ms = a.refresh_grace_s * 1000;
        let mut expired = Vec::new();
        let mut overdue = Vec::new();
        for (key, conn) in self.conns.iter() {
            if conn.phase != super::conn::Phase::Ws {
                continue;
            }
            match conn.auth {
                AuthState::Ok => {
                    let exp = conn.ident.as_ref().and_then(|i| i.exp_s);
                    if exp.is_some_and(|exp| now_s > exp.saturating_add(leeway)) {
                        expired.push(key);
                    }
                }
                AuthState::Pending | AuthState::Expired if now_ms >= conn.deadline_ms => {
                    overdue.push((key, conn.auth));
                }
                _ => {}
            }
        }
        for key in expired {
            self.stats.security(SecEvent::TokenExpired);
            let conn = &mut self.conns[key];
            conn.auth = AuthState::Expired;
            conn.deadline_ms = now_ms + grace_ms;
            // Protocol v1 is told (the dialects' clients refresh on their own schedule and
            // are closed with their protocol's code when the grace ends).
            if conn.dialect == crate::dialect::Dialect::V1 {
                self.reply_with(key, |out| {
                    protocol::error(out, None, ErrorCode::Unauthorized, "token expired", None)
                });
            }
            if grace_ms == 0 {
                overdue.push((key, AuthState::Expired));
            }
        }
        for (key, state) in overdue {
            let text = if state == AuthState::Pending {
                "authentication required"
            } else {
                "token expired"
            };
            self.close_code(key, cc::UNAUTHORIZED, text, CloseReason::Unauthorized);
        }
    }

    /// Access to an HTTP endpoint guarded by `access` (admin API: always `Admin`). The
    /// admin identity when a token was required.
    pub(crate) fn http_access(
        &mut self,
        key: u32,
        req: &Request<'_>,
        access: EndpointAccess,
    ) -> Result<Option<Identity>, Refusal> {
        match access {
            EndpointAccess::Open => return Ok(None),
            EndpointAccess::Loopback if self.request_ip(key, req).0.is_loopback() => {
                return Ok(None);
            }
            _ => {}
        }
        let Some(token) = request_token(req) else {
            self.stats.security(SecEvent::ForbiddenHttp);
            return Err(Refusal::unauthorized("an admin token is required"));
        };
        match self.auth.verify(&token) {
            Ok(ident) if ident.admin => Ok(Some(ident)),
            Ok(_) => {
                self.stats.security(SecEvent::ForbiddenHttp);
                Err(Refusal::new(
                    403,
                    "forbidden",
                    "the token lacks the admin role",
                ))
            }
            Err(e) => {
                self.stats.auth_failed(&e);
                Err(Refusal::unauthorized(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Eb%2e"), "a.b.");
        assert_eq!(percent_decode("x+y"), "x y");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn origins() {
        let allowed = vec![
            "https://app.example.com".to_string(),
            "https://*.trade.io".to_string(),
        ];
        assert!(origin_allowed(&allowed, "https://app.example.com"));
        assert!(origin_allowed(&allowed, "HTTPS://APP.example.com"));
        assert!(origin_allowed(&allowed, "https://eu.trade.io"));
        assert!(!origin_allowed(&allowed, "https://trade.io"));
        assert!(!origin_allowed(&allowed, "https://eviltrade.io"));
        assert!(!origin_allowed(&allowed, "http://eu.trade.io"));
        assert!(!origin_allowed(
            &allowed,
            "https://app.example.com.evil.net"
        ));
        assert!(!origin_allowed(&allowed, "null"));
        assert!(origin_allowed(&[], "https://anything"));
    }
}
