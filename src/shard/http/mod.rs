//! HTTP on the WebSocket port: requests read and routed through the one route table
//! (`routes.rs`: method, path, access, handler) to the upgrade and the plain endpoints
//! (`endpoints.rs`) or the admin API (`super::admin`). Anything else gets a proper error
//! response, never a hang. Requests are bounded (head size, header count, body size) and must
//! arrive within `timeouts.handshake_ms`; keep-alive is supported, pipelined requests are
//! answered in order (reading pauses while their responses are not read).

use std::{rc::Rc, sync::Arc};

use serde::Deserialize;

mod endpoints;
mod routes;
mod waiters;

use routes::Access;
pub(crate) use routes::Handler;
pub(crate) use waiters::Waiters;

use super::{State, auth::Refusal, conn::Phase, conn::Step};
use crate::{
    config::EndpointAccess,
    dialect::{Dialect, Format},
    frame::{Frame, OutFrame},
    protocol::{self},
    stats::CloseReason,
    ws::http::{self as h, HttpLimits, Method, Request, write_response},
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

pub(super) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

impl State {
    /// Handles complete requests in the connection's buffer.
    pub(crate) fn http_input(&mut self, key: u32) -> Step {
        let limits = HttpLimits {
            header_bytes_max: self.cfg.limits.http_header_bytes_max,
            headers_max: self.cfg.limits.http_headers_max,
        };
        let body_max = self.cfg.limits.message_bytes_max;
        loop {
            let conn = &mut self.conns[key];
            if conn.phase != Phase::Http {
                // After a final response: input is read and dropped until EOF.
                drop(conn.take_bytes());
                return Step::Wait;
            }
            let mut rbuf = conn.take_bytes();
            let req = match h::parse_request(&rbuf, &limits) {
                Ok(Some(req)) => req,
                Ok(None) => {
                    self.conns[key].keep_bytes(rbuf);
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
                self.conns[key].keep_bytes(rbuf);
                return Step::Wait;
            }
            self.stats.c.http_requests += 1;
            let answer = self.route(key, &req, &rbuf[req.head_len..total]);
            rbuf.drain(..total);
            let Some(conn) = self.conns.get_mut(key) else {
                return Step::Exit;
            };
            let more = !rbuf.is_empty();
            conn.keep_bytes(if more { rbuf } else { Vec::new() });
            match answer {
                Answer::Responded { keep_alive: true } => {
                    conn.deadline_ms = self.now_ms + self.cfg.timeouts.handshake_ms;
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
        let Some(conn) = self.conns.get_mut(key) else {
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
        let conn = &mut self.conns[key];
        conn.deadline_ms = self.now_ms + self.cfg.timeouts.handshake_ms;
        if self.should_pause(key) {
            Step::Pause
        } else if self.conns[key].has_bytes() {
            self.http_input(key)
        } else {
            Step::Wait
        }
    }

    fn route(&mut self, key: u32, req: &Request<'_>, body: &[u8]) -> Answer {
        let keep_alive = req.keep_alive;
        self.conns[key].keep_alive = keep_alive;
        if let Some(answer) = self.dialect_route(key, req) {
            return answer;
        }
        let Some(route) = routes::find(req.path, self.cfg.server.echo) else {
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
            Access::HealthMetrics => Some(self.cfg.auth.health_metrics),
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
            Handler::Ws => self.upgrade(key, req, false, Dialect::V1, Format::V1),
            Handler::Echo => self.upgrade(key, req, true, Dialect::V1, Format::V1),
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
            Handler::Dashboard => {
                let mut out = Vec::with_capacity(DASHBOARD.len() + 512);
                let html = "text/html; charset=utf-8";
                let body = DASHBOARD.as_bytes();
                write_response(&mut out, 200, html, body, keep_alive, DASHBOARD_HEADERS);
                self.enqueue(key, raw(out));
                Answer::Responded { keep_alive }
            }
            admin_handler => self.admin_http(key, admin_handler, req, body),
        }
    }

    /// The dialects' paths (`centrifugo.path`, under `binance.prefix`), configurable and so
    /// not in the route table.
    fn dialect_route(&mut self, key: u32, req: &Request<'_>) -> Option<Answer> {
        let cfg = &self.cfg;
        if cfg.centrifugo.enabled && req.path == cfg.centrifugo.path {
            if req.method != Method::Get {
                return Some(self.upgrade_method_not_allowed(key, req));
            }
            return Some(self.upgrade(key, req, false, Dialect::CentrifugoNew, Format::Centrifugo));
        }
        if cfg.binance.enabled {
            return self.binance_route(key, req);
        }
        None
    }

    /// A dialect's WebSocket path asked with a method other than GET: 405 with `Allow`.
    pub(super) fn upgrade_method_not_allowed(&mut self, key: u32, req: &Request<'_>) -> Answer {
        let keep_alive = req.keep_alive;
        let mut out = Vec::with_capacity(256);
        let body = br#"{"error":"method_not_allowed","message":"method not allowed"}"#;
        write_response(
            &mut out,
            405,
            "application/json",
            body,
            keep_alive,
            &[("Allow", "GET")],
        );
        self.enqueue(key, raw(out));
        Answer::Responded { keep_alive }
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
            self.conns[key]
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

/// `GET /dashboard`: one page, no external resource; its script polls the admin API.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The page runs only its own inline script and style, and talks only to this server; the
/// token in its URL is not sent on as a referrer.
const DASHBOARD_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    ),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
];

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
