//! HTTP on the WebSocket port: the upgrade (`GET /ws`, `GET /echo` when enabled),
//! `GET /health`, `GET /metrics`, `POST /v1/publish`. Anything else gets a proper error
//! response, never a hang. Requests are bounded (head size, header count, body size) and must
//! arrive within `timeouts.handshake_ms`; keep-alive is supported, pipelined requests are
//! answered in order.

use std::{rc::Rc, sync::Arc};

use serde::Deserialize;

mod routes;

use routes::Access;
pub(crate) use routes::Handler;

use super::{
    HttpWaiter, State,
    auth::{AuthState, Refusal},
    conn::Phase,
    conn::Step,
    msg::MeshMsg,
};
use crate::{
    config::EndpointAccess,
    frame::{Frame, OutFrame},
    protocol::{self, ErrorCode},
    publish::ReplyTo,
    stats::CloseReason,
    ws::http::{
        self as h, HttpLimits, Method, Request, check_upgrade, upgrade_error_response,
        write_response, write_upgrade_response,
    },
};

/// What answering one request led to.
pub(super) enum Answer {
    /// A response is queued; keep reading requests if `keep_alive`.
    Responded { keep_alive: bool },
    /// The connection is now a WebSocket.
    Upgraded,
    /// Waiting for other shards.
    Await(futures_channel::oneshot::Receiver<Vec<u8>>),
}

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

pub(super) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

impl State {
    /// Handles complete requests in the connection's buffer.
    pub(crate) fn http_input(&mut self, key: u32) -> Step {
        let limits = HttpLimits {
            header_bytes_max: self.shared.cfg.limits.http_header_bytes_max,
            headers_max: self.shared.cfg.limits.http_headers_max,
        };
        let body_max = self.shared.cfg.limits.message_bytes_max;
        loop {
            let conn = &mut self.conns[key as usize];
            if conn.phase != Phase::Http {
                // After a final response: input is read and dropped until EOF.
                drop(conn.take_bytes());
                return Step::Wait;
            }
            let mut rbuf = conn.take_bytes();
            let req = match h::parse_request(&rbuf, &limits) {
                Ok(Some(req)) => req,
                Ok(None) => {
                    self.conns[key as usize].keep_bytes(rbuf);
                    return Step::Wait;
                }
                Err(e) => {
                    self.respond_error(key, e.status(), e.code(), e.reason(), false);
                    return Step::Wait;
                }
            };
            if req.chunked {
                self.respond_error(
                    key,
                    411,
                    "length_required",
                    "send a Content-Length body",
                    false,
                );
                return Step::Wait;
            }
            let body_len = req.content_length.unwrap_or(0);
            if body_len > body_max {
                self.respond_error(
                    key,
                    413,
                    "message_too_large",
                    "request body too large",
                    false,
                );
                return Step::Wait;
            }
            let total = req.head_len + body_len;
            if rbuf.len() < total {
                // Wait for the body; the buffer is bounded by head + body limits.
                self.conns[key as usize].keep_bytes(rbuf);
                return Step::Wait;
            }
            self.stats.c.http_requests += 1;
            let answer = self.route(key, &req, &rbuf[req.head_len..total]);
            rbuf.drain(..total);
            let Some(conn) = self.conns.get_mut(key as usize) else {
                return Step::Exit;
            };
            let more = !rbuf.is_empty();
            conn.keep_bytes(if more { rbuf } else { Vec::new() });
            match answer {
                Answer::Responded { keep_alive: true } => {
                    conn.deadline_ms = self.now_ms + self.shared.cfg.timeouts.handshake_ms;
                    if self.should_pause(key) {
                        // Pipelined requests wait while the responses are not read.
                        return Step::Pause;
                    }
                    if !more {
                        return Step::Wait;
                    }
                }
                Answer::Responded { keep_alive: false } => {
                    self.finish_http(key);
                    return Step::Wait;
                }
                Answer::Upgraded => {
                    if !more {
                        return Step::Wait;
                    }
                    // Frames sent right behind the upgrade request.
                    return self.ws_input(key, true).0;
                }
                Answer::Await(rx) => {
                    conn.phase = Phase::HttpBusy;
                    return Step::Await(rx);
                }
            }
        }
    }

    /// The answer to an `Await`ed request arrived (or did not: `None`).
    pub(crate) fn http_reply(&mut self, key: u32, reply: Option<Vec<u8>>) -> Step {
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return Step::Exit;
        };
        if conn.phase != Phase::HttpBusy {
            return Step::Wait;
        }
        conn.phase = Phase::Http;
        let keep_alive = conn.keep_alive;
        match reply {
            Some(response) => self.enqueue(key, raw(response)),
            None => {
                return self.respond_error(
                    key,
                    503,
                    "unavailable",
                    "a shard did not answer",
                    false,
                );
            }
        }
        if !keep_alive {
            self.finish_http(key);
            return Step::Wait;
        }
        let conn = &mut self.conns[key as usize];
        conn.deadline_ms = self.now_ms + self.shared.cfg.timeouts.handshake_ms;
        if self.should_pause(key) {
            Step::Pause
        } else if self.conns[key as usize].has_bytes() {
            self.http_input(key)
        } else {
            Step::Wait
        }
    }

    fn route(&mut self, key: u32, req: &Request<'_>, body: &[u8]) -> Answer {
        let keep_alive = req.keep_alive;
        self.conns[key as usize].keep_alive = keep_alive;
        let Some(route) = routes::find(req.path, self.shared.cfg.server.echo) else {
            self.respond_error(key, 404, "not_found", "no such endpoint", keep_alive);
            return Answer::Responded { keep_alive };
        };
        if !route.allows(req.method) {
            let mut out = Vec::with_capacity(256);
            let body = br#"{"error":"method_not_allowed","message":"method not allowed"}"#;
            let allow = [("Allow", route.allow_header())];
            write_response(&mut out, 405, "application/json", body, keep_alive, &allow);
            self.enqueue(key, raw(out));
            return Answer::Responded { keep_alive };
        }
        let head = req.method == Method::Head;
        let access = match route.access {
            Access::Upgrade => None,
            Access::HealthMetrics => Some(self.shared.cfg.auth.health_metrics),
            Access::Admin => Some(EndpointAccess::Admin),
        };
        let mut admin = None;
        if let Some(access) = access {
            match self.http_access(key, req, access) {
                Ok(ident) => admin = ident,
                Err(refusal) => {
                    self.respond_refusal(key, refusal, keep_alive);
                    return Answer::Responded { keep_alive };
                }
            }
        }
        match route.handler {
            Handler::Ws => self.upgrade(key, req, false),
            Handler::Echo => self.upgrade(key, req, true),
            Handler::Health => {
                let body = self.health_json();
                let json = "application/json";
                self.respond(key, 200, json, body.as_bytes(), keep_alive, head);
                Answer::Responded { keep_alive }
            }
            Handler::Ready => {
                let (status, body) = self.readiness();
                let json = "application/json";
                self.respond(key, status, json, body.as_bytes(), keep_alive, head);
                Answer::Responded { keep_alive }
            }
            Handler::Metrics => self.metrics_request(keep_alive, head),
            Handler::Publish => self.http_publish(key, body, keep_alive, admin.as_ref()),
            admin_handler => self.admin_http(key, admin_handler, req, body),
        }
    }

    /// RFC 6455 §4.2: validate the opening handshake, apply connection limits, answer 101.
    fn upgrade(&mut self, key: u32, req: &Request<'_>, echo: bool) -> Answer {
        if let Err(e) = check_upgrade(req) {
            let mut out = Vec::with_capacity(256);
            upgrade_error_response(&mut out, e);
            self.enqueue(key, raw(out));
            self.conns[key as usize].close_reason = Some(CloseReason::Rejected);
            return Answer::Responded { keep_alive: false };
        }
        let limits = &self.shared.cfg.limits;
        let bucket = self.conns[key as usize].ip_bucket() as usize;
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
            self.conns[key as usize].close_reason = Some(CloseReason::Rejected);
            self.respond_error(key, status, code, message, false);
            return Answer::Responded { keep_alive: false };
        }
        let ident = match self.admit(key, req) {
            Ok(ident) => ident,
            Err(refusal) => {
                self.conns[key as usize].close_reason = Some(CloseReason::Rejected);
                self.respond_refusal(key, refusal, false);
                return Answer::Responded { keep_alive: false };
            }
        };
        let ws_key = req.ws_key.expect("check_upgrade requires the key");
        let mut out = Vec::with_capacity(256);
        write_upgrade_response(&mut out, ws_key);
        self.enqueue(key, raw(out));
        let now = self.now_ms;
        let ping_ms = self.shared.cfg.timeouts.ping_interval_s * 1000;
        let conn = &mut self.conns[key as usize];
        conn.phase = Phase::Ws;
        conn.echo = echo;
        // The first ping comes at a random point of the first interval, so connections opened
        // together are not pinged in one pass ever after (thousands of writes at once).
        conn.last_ping_ms = now.saturating_sub(fastrand::u64(0..ping_ms));
        conn.handshake_slot = false;
        self.handshakes -= 1;
        let id = format!("{}-{}", self.shard, conn.no);
        if echo {
            return Answer::Upgraded;
        }
        let who = (
            ident.as_ref().map(|i| i.user.clone()),
            ident.as_ref().and_then(|i| i.exp_s),
        );
        self.set_identity(key, ident);
        let ping_s = self.shared.cfg.timeouts.ping_interval_s;
        let shard = self.shard;
        let auth_required = self.conns[key as usize].auth == AuthState::Pending;
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

    fn health_json(&self) -> String {
        let connections = self
            .shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed);
        // Cluster mode: the node serves its clients without the broker too, so the broker's
        // state is reported, not folded into `status`.
        let cluster = match &self.shared.bridge {
            Some(b) => format!(
                ",\"node\":\"{}\",\"broker\":\"{}\"",
                b.node_id,
                if b.is_up() { "up" } else { "down" }
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
    fn readiness(&self) -> (u16, String) {
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
    fn metrics_request(&mut self, keep_alive: bool, head: bool) -> Answer {
        let (tx, rx) = futures_channel::oneshot::channel();
        let peers = self.shared.shards - 1;
        let token = self.http_waiters.insert(HttpWaiter {
            tx,
            keep_alive,
            stats_pending: peers,
            head,
            gather: None,
        });
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
        let Some(waiter) = self.http_waiters.get_mut(token as usize) else {
            return;
        };
        waiter.stats_pending = waiter.stats_pending.saturating_sub(1);
        if waiter.stats_pending == 0 {
            self.complete_metrics(token);
        }
    }

    fn complete_metrics(&mut self, token: u32) {
        let Some(waiter) = self.http_waiters.try_remove(token as usize) else {
            return;
        };
        let body = self.shared.hub.render();
        let mut out = Vec::with_capacity(body.len() + 256);
        write_response(
            &mut out,
            200,
            "text/plain; version=0.0.4",
            body.as_bytes(),
            waiter.keep_alive,
            &[],
        );
        if waiter.head {
            out.truncate(out.len() - body.len());
        }
        let _ = waiter.tx.send(out);
    }

    /// `POST /v1/publish {"topic": "...", "data": <any JSON>}` -> `{"seq": N}`.
    fn http_publish(
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
        let anon = self.shared.cfg.auth.allow_anonymous
            && self.shared.auth.anonymous_pubs.allows_topic(&topic);
        if !anon && !admin.is_some_and(|a| a.pubs.allows_topic(&topic)) {
            self.stats
                .security(crate::stats::SecEvent::ForbiddenPublish);
            return fail(
                self,
                ErrorCode::Forbidden,
                "no permission to publish to this topic",
            );
        }
        let (token, rx) = self.http_waiter(keep_alive, None);
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

    /// A waiter for the answer to an HTTP request from other shards: the owner's answer to
    /// a publish (`http_published`), or the parts of an admin request (`gather`).
    pub(super) fn http_waiter(
        &mut self,
        keep_alive: bool,
        gather: Option<Box<super::admin::Gather>>,
    ) -> (usize, futures_channel::oneshot::Receiver<Vec<u8>>) {
        let (tx, rx) = futures_channel::oneshot::channel();
        let token = self.http_waiters.insert(HttpWaiter {
            tx,
            keep_alive,
            stats_pending: 0,
            head: false,
            gather,
        });
        (token, rx)
    }

    /// The owner's answer to an HTTP publish.
    pub(crate) fn http_published(
        &mut self,
        token: u32,
        result: Result<crate::protocol::Published, ErrorCode>,
    ) {
        let Some(waiter) = self.http_waiters.try_remove(token as usize) else {
            return;
        };
        let mut out = Vec::with_capacity(160);
        match result {
            Ok(done) => {
                let mut body = Vec::with_capacity(64);
                protocol::publish_result(&mut body, done);
                let body = String::from_utf8(body).expect("ASCII JSON");
                write_response(
                    &mut out,
                    200,
                    "application/json",
                    body.as_bytes(),
                    waiter.keep_alive,
                    &[],
                );
            }
            Err(code) => {
                let message = match code {
                    ErrorCode::Unavailable => {
                        "the cluster broker did not confirm the publish: retry with the same idem"
                    }
                    ErrorCode::Capacity => super::publish::CAPACITY_MESSAGE,
                    _ => "publish refused by the topic's shard",
                };
                let body = error_body(code.as_str(), message);
                write_response(
                    &mut out,
                    code.http_status(),
                    "application/json",
                    &body,
                    waiter.keep_alive,
                    &[],
                );
            }
        }
        let _ = waiter.tx.send(out);
    }

    fn respond(
        &mut self,
        key: u32,
        status: u16,
        ctype: &str,
        body: &[u8],
        keep_alive: bool,
        head: bool,
    ) {
        let mut out = Vec::with_capacity(body.len() + 160);
        write_response(&mut out, status, ctype, body, keep_alive, &[]);
        if head {
            out.truncate(out.len() - body.len());
        }
        self.enqueue(key, raw(out));
    }

    fn respond_refusal(&mut self, key: u32, r: Refusal, keep_alive: bool) {
        let header = r.header.as_ref().map(|(n, v)| (*n, v.as_str()));
        let headers: &[(&str, &str)] = match &header {
            Some(h) => std::slice::from_ref(h),
            None => &[],
        };
        self.respond_error_with(key, r.status, r.code, &r.message, keep_alive, headers);
    }

    /// Queues a JSON error response; without keep-alive the connection then closes.
    pub(super) fn respond_error(
        &mut self,
        key: u32,
        status: u16,
        code: &str,
        message: &str,
        keep_alive: bool,
    ) -> Step {
        self.respond_error_with(key, status, code, message, keep_alive, &[])
    }

    fn respond_error_with(
        &mut self,
        key: u32,
        status: u16,
        code: &str,
        message: &str,
        keep_alive: bool,
        headers: &[(&str, &str)],
    ) -> Step {
        let body = error_body(code, message);
        let mut out = Vec::with_capacity(body.len() + 200);
        write_response(
            &mut out,
            status,
            "application/json",
            &body,
            keep_alive,
            headers,
        );
        self.enqueue(key, raw(out));
        if !keep_alive {
            self.conns[key as usize]
                .close_reason
                .get_or_insert(CloseReason::Rejected);
            self.finish_http(key);
        }
        Step::Wait
    }

    /// Final response queued: shut the write side once it is written, drop input until EOF.
    fn finish_http(&mut self, key: u32) {
        self.last_frame_queued(key, Phase::HttpClosing, CloseReason::HttpDone);
    }
}

pub(super) fn error_body(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + message.len());
    body.extend_from_slice(b"{\"error\":");
    protocol::push_json_str(&mut body, code);
    body.extend_from_slice(b",\"message\":");
    protocol::push_json_str(&mut body, message);
    body.push(b'}');
    body
}

/// Raw bytes for the out-queue (HTTP responses are not WebSocket frames).
pub(super) fn raw(bytes: Vec<u8>) -> OutFrame {
    Rc::new(Arc::new(Frame::control(bytes)))
}
