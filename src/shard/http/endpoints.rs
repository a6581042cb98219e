//! The endpoints other than the admin API: the WebSocket upgrade, `/health`, `/ready`,
//! `/metrics` (every shard flushes its counters first) and `POST /v1/publish` (answered by the
//! topic's owner), and the waiters of requests answered by other shards.

use serde::Deserialize;

use super::{Answer, error_body, present, raw};
use crate::{
    dialect::{Dialect, Format},
    protocol::{self, ErrorCode},
    publish::ReplyTo,
    shard::{State, auth::AuthState, conn::Phase, msg::MeshMsg},
    stats::CloseReason,
    ws::{
        deflate,
        http::{Request, check_upgrade, upgrade_error_response, write_upgrade_response},
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    data: bool,
    #[serde(borrow, default)]
    idem: Option<std::borrow::Cow<'a, str>>,
}

impl State {
    /// RFC 6455 §4.2: validate the opening handshake, apply connection limits, answer 101.
    /// `dialect` and `format`: what the connection speaks (v1 on `/ws` and `/echo`).
    pub(in crate::shard) fn upgrade(
        &mut self,
        key: u32,
        req: &Request<'_>,
        echo: bool,
        dialect: Dialect,
        format: Format,
    ) -> Answer {
        // RFC 7692: permessage-deflate if the client offers terms it can be held to; a
        // malformed Sec-WebSocket-Extensions header fails the handshake like any bad header.
        let deflate_enabled = self.cfg.deflate.enabled;
        let checked = check_upgrade(req)
            .and_then(|()| deflate::negotiate(req, deflate_enabled).map_err(Into::into));
        let agreed = match checked {
            Ok(agreed) => agreed,
            Err(e) => {
                let mut out = Vec::with_capacity(256);
                upgrade_error_response(&mut out, e);
                self.enqueue(key, raw(out));
                self.conns[key].close_reason = Some(CloseReason::Rejected);
                return Answer::Responded { keep_alive: false };
            }
        };
        // Behind a trusted proxy the client's address, not the proxy's, is counted and limited
        // from here on (`crate::shard::proxy`).
        self.take_request_ip(key, req);
        let limits = &self.cfg.limits;
        let bucket = self.conns[key].ip_bucket() as usize;
        let open = self
            .shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed);
        let per_ip = self.shared.per_ip[bucket].load(std::sync::atomic::Ordering::Relaxed) as usize;
        let refusal = if open > limits.connections_max {
            Some((503, "overloaded", "server connection limit reached"))
        } else if per_ip > limits.connections_per_ip_max {
            Some((
                429,
                "rate_limited",
                "too many connections from this address",
            ))
        } else if self.stopping {
            Some((503, "overloaded", "server shutting down"))
        } else {
            None
        };
        if let Some((status, code, message)) = refusal {
            self.stats.c.limit_rejects += 1;
            self.conns[key].close_reason = Some(CloseReason::Rejected);
            self.respond_error(key, status, code, message, false);
            return Answer::Responded { keep_alive: false };
        }
        let ident = match self.admit(key, req) {
            Ok(ident) => ident,
            Err(refusal) => {
                self.conns[key].close_reason = Some(CloseReason::Rejected);
                self.respond_refusal(key, refusal, false);
                return Answer::Responded { keep_alive: false };
            }
        };
        let ws_key = req.ws_key.expect("check_upgrade requires the key");
        let mut out = Vec::with_capacity(256);
        write_upgrade_response(&mut out, ws_key, agreed);
        self.enqueue(key, raw(out));
        let now = self.now_ms;
        let ping_ms = self.cfg.timeouts.ping_interval_s * 1000;
        let conn = &mut self.conns[key];
        conn.phase = Phase::Ws;
        conn.echo = echo;
        conn.dialect = dialect;
        conn.out.set_format(format);
        if let Some(agreed) = agreed {
            // Every frame this connection is sent from now on is the form for its window;
            // its decoder takes RSV1 as "compressed".
            conn.out.set_window(agreed.window_bits().get());
            conn.decoder.set_deflate(true);
        }
        // The first ping comes at a random point of the first interval, so connections opened
        // together are not pinged in one pass ever after (thousands of writes at once).
        conn.last_ping_ms = now.saturating_sub(fastrand::u64(0..ping_ms));
        let id = format!("{}-{}", self.shard, conn.no);
        self.conns.end_handshake(key);
        if echo {
            return Answer::Upgraded;
        }
        let who = (
            ident.as_ref().map(|i| i.user.clone()),
            ident.as_ref().and_then(|i| i.exp_s),
        );
        self.set_identity(key, ident);
        if dialect != Dialect::V1 {
            // The dialects have no welcome: Centrifugo's client speaks first (`connect`),
            // Binance's connection just streams.
            return Answer::Upgraded;
        }
        let ping_s = self.cfg.timeouts.ping_interval_s;
        let shard = self.shard;
        let auth_required = self.conns[key].auth == AuthState::Pending;
        self.reply_with(key, |out| {
            let who = protocol::WelcomeUser {
                user: who.0.as_deref(),
                exp: who.1,
                auth_required,
            };
            protocol::welcome(out, &id, shard, ping_s, who)
        });
        Answer::Upgraded
    }

    pub(super) fn health_json(&self) -> String {
        let connections = self
            .shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed);
        // Cluster mode: the node serves its clients without the broker too, so the broker's
        // state is reported, not folded into `status`.
        let cluster = match &self.shared.bridge {
            Some(b) => format!(
                ",\"node\":\"{}\",\"broker\":\"{}\"{}",
                b.node_id,
                if b.is_up() { "up" } else { "down" },
                match (b.live_in_shard, b.is_live_up()) {
                    (false, _) => "",
                    (true, true) => ",\"live\":\"up\"",
                    (true, false) => ",\"live\":\"down\"",
                }
            ),
            None => String::new(),
        };
        format!(
            "{{\"status\":\"{}\",\"version\":\"{}\",\"shard\":{},\"shards\":{},\"uptime_s\":{},\
             \"connections\":{}{cluster}}}",
            if self.stopping { "stopping" } else { "ok" },
            env!("CARGO_PKG_VERSION"),
            self.shard,
            self.shared.shards,
            self.shared.started.elapsed().as_secs(),
            connections,
        )
    }

    /// `/ready`: 200 once every shard listens and (cluster mode) the broker is connected; 503
    /// with the reasons otherwise. `/health` is liveness: it stays 200 through both.
    pub(super) fn readiness(&self) -> (u16, String) {
        let mut reasons: Vec<String> = Vec::new();
        if self.stopping {
            reasons.push("shutting down".into());
        }
        let listening = self
            .shared
            .listening
            .load(std::sync::atomic::Ordering::Relaxed);
        if listening < self.shared.shards {
            reasons.push(format!(
                "{listening} of {} shards listening",
                self.shared.shards
            ));
        }
        if let Some(bridge) = &self.shared.bridge {
            if !bridge.is_up() {
                reasons.push("cluster broker not connected".into());
            }
            if !bridge.is_live_up() {
                reasons.push("live connection to NATS (shard 0) not up".into());
            }
        }
        let mut body = Vec::with_capacity(96);
        if reasons.is_empty() {
            body.extend_from_slice(b"{\"status\":\"ready\"}");
            return (200, String::from_utf8(body).expect("ASCII"));
        }
        body.extend_from_slice(b"{\"status\":\"not_ready\",\"reasons\":[");
        for (i, r) in reasons.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            protocol::push_json_str(&mut body, r);
        }
        body.extend_from_slice(b"]}");
        (503, String::from_utf8(body).expect("JSON is UTF-8"))
    }

    /// `/metrics`: every shard flushes its counters into the registry first (exact totals),
    /// then this shard renders.
    pub(super) fn metrics_request(&mut self, keep_alive: bool, head: bool) -> Answer {
        let peers = self.shared.shards - 1;
        let (token, rx) = self.http_waiters.add_metrics(keep_alive, head, peers);
        self.flush_stats();
        for peer in (0..self.shared.shards).filter(|p| *p != self.shard) {
            self.mesh.send(
                peer,
                MeshMsg::FlushStats {
                    reply_to: self.shard as u8,
                    token: token as u32,
                },
            );
        }
        if peers == 0 {
            self.complete_metrics(token as u32);
        }
        Answer::Await(rx)
    }

    /// A peer flushed its statistics for `/metrics` request `token`.
    pub(crate) fn stats_flushed(&mut self, token: u32) {
        if self.http_waiters.stats_flushed(token as usize) {
            self.complete_metrics(token);
        }
    }

    pub(super) fn complete_metrics(&mut self, token: u32) {
        let Some(waiter) = self.http_waiters.take(token as usize) else {
            return;
        };
        let body = self.shared.hub.render();
        waiter.respond(200, "text/plain; version=0.0.4", body.as_bytes());
    }

    /// `POST /v1/publish {"topic": "...", "data": <any JSON>}` -> `{"seq": N}`.
    pub(super) fn http_publish(
        &mut self,
        key: u32,
        body: &[u8],
        keep_alive: bool,
        admin: Option<&crate::auth::Identity>,
    ) -> Answer {
        let mut buf = body.to_vec();
        let data = protocol::scan_top_level(&buf).data.map(|r| buf[r].to_vec());
        let parsed: Result<PublishBody<'_>, _> =
            simd_json::serde::from_slice_with_buffers(&mut buf, &mut self.json);
        let fail = |this: &mut State, code: ErrorCode, message: &str| {
            this.respond_error(key, code.http_status(), code.as_str(), message, keep_alive);
            Answer::Responded { keep_alive }
        };
        let (topic, data, idem) = match (parsed, data) {
            (Ok(p), Some(data)) if p.data => (p.topic, data, p.idem),
            (Ok(_), _) => return fail(self, ErrorCode::BadRequest, "\"data\" is required"),
            (Err(e), _) => {
                let msg = format!("body must be {{\"topic\":\"...\",\"data\":...}}: {e}");
                return fail(self, ErrorCode::BadRequest, &msg);
            }
        };
        if let Err((code, msg)) = self.check_publish(&topic, data.len()) {
            return fail(self, code, &msg);
        }
        if let Err(msg) = protocol::check_idem(idem.as_deref()) {
            return fail(self, ErrorCode::BadRequest, msg);
        }
        // The admin role opens the endpoint; the topic still needs a `pubs` right.
        let anon = self.cfg.auth.allow_anonymous && self.auth.anonymous_pubs.allows_topic(&topic);
        if !anon && !admin.is_some_and(|a| a.pubs.allows_topic(&topic)) {
            self.stats
                .security(crate::stats::SecEvent::ForbiddenPublish);
            return fail(
                self,
                ErrorCode::Forbidden,
                "no permission to publish to this topic",
            );
        }
        let (token, rx) = self.http_waiters.add(keep_alive, None);
        self.ingest_publish(
            &topic,
            data,
            idem.map(|k| k.as_ref().into()),
            ReplyTo::Http {
                token: token as u32,
            },
        );
        Answer::Await(rx)
    }

    /// The owner's answer to an HTTP publish.
    pub(crate) fn http_published(
        &mut self,
        token: u32,
        result: Result<crate::protocol::Published, ErrorCode>,
    ) {
        let Some(waiter) = self.http_waiters.take(token as usize) else {
            return;
        };
        match result {
            Ok(done) => {
                let mut body = Vec::with_capacity(64);
                protocol::publish_result(&mut body, done);
                waiter.respond(200, "application/json", &body);
            }
            Err(code) => {
                let message = match code {
                    ErrorCode::Unavailable => {
                        "the cluster broker did not confirm the publish: retry with the same idem"
                    }
                    ErrorCode::Capacity => crate::shard::publish::CAPACITY_MESSAGE,
                    _ => "publish refused by the topic's shard",
                };
                let body = error_body(code.as_str(), message);
                waiter.respond(code.http_status(), "application/json", &body);
            }
        }
    }
}
