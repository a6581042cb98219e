//! Everything that arrives on a connection: bytes read into the shard's scratch buffer when
//! the readiness set reports it readable (`poll.rs`), HTTP requests (`super::super::http`), WebSocket frames decoded and
//! their messages handled (protocol v1 ops, the echo route, control frames).
//!
//! Reading pauses while replies to the client's own requests are waiting to be read
//! (`write.rs`): readiness is then ignored until the connection is unpaused, and the bytes
//! already read but not handled wait in the connection's [`Partial`].

use std::{mem, rc::Rc, sync::Arc};

use rustix::{io::Errno, net::RecvFlags};

use super::{
    super::{
        State,
        proxy::{Prelude, PreludeStep},
        tls::TlsRead,
    },
    Phase,
};
use crate::dialect::Dialect;
use crate::{
    frame::{Frame, FrameClass},
    limits::READS_PER_WAKE_MAX,
    protocol::{self, ErrorCode, Op},
    stats::CloseReason,
    ws::deflate::{self, InflateError, Inflater},
    ws::frame::{
        Decoder, HEADER_BYTES_MAX, Message, OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT, encode_close,
        encode_frame,
    },
};

/// What a connection's reading does next (`State::run_step`).
pub enum Step {
    /// Wait for the socket to become readable.
    Wait,
    /// The read budget is spent and the socket may hold more: let the shard's other tasks
    /// run first, then read again.
    Yield,
    /// Wait for other shards to answer an HTTP request (`poll::reply_task`).
    Await(futures_channel::oneshot::Receiver<Vec<u8>>),
    /// Replies to the client's own requests are backlogged: wait until they drain, then
    /// handle what was read and not yet handled.
    Pause,
    /// Remove the connection.
    Exit,
}

impl State {
    /// Reads what the socket has (up to `READS_PER_WAKE_MAX` reads) and handles it.
    pub(super) fn read_conn(&mut self, key: u32) -> Step {
        let Some(conn) = self.conns.get(key) else {
            return Step::Exit;
        };
        if conn.phase == Phase::Dead {
            return Step::Exit;
        }
        let now = self.clock();
        for _ in 0..READS_PER_WAKE_MAX {
            // Every read lands in the shard's one scratch buffer; a connection keeps (in its
            // `Partial`) only the bytes it actually received and must keep (a partial frame,
            // an HTTP request being assembled). A slow handshake costs its few bytes, not 64 KiB.
            self.scratch.clear();
            let State { conns, scratch, .. } = self;
            let res = rustix::net::recv(
                &conns[key].fd,
                rustix::buffer::spare_capacity(scratch),
                RecvFlags::DONTWAIT,
            );
            match res {
                Ok((0, _)) => return self.at_eof(key),
                Ok(_) => {
                    let conn = &mut self.conns[key];
                    conn.last_rx_ms = now;
                    if conn.drop_input {
                        // The connection was failed (RFC 6455 §7.1.7): its input is read and
                        // dropped until EOF or the close deadline.
                        continue;
                    }
                    // A PROXY header first, before TLS (`super::super::proxy`).
                    if conn.prelude != Prelude::Done {
                        match self.prelude(key) {
                            PreludeStep::Continue if !self.scratch.is_empty() => {}
                            PreludeStep::Refused if self.conns[key].phase == Phase::Dead => {
                                return Step::Exit;
                            }
                            _ => continue,
                        }
                    }
                    let conn = &self.conns[key];
                    // TLS: the scratch buffer's ciphertext is replaced by its plaintext; the
                    // client's close_notify ends the input like EOF.
                    let mut eof = false;
                    if conn.tls.is_some() {
                        match self.tls_read(key) {
                            TlsRead::Data { eof: closed } => eof = closed,
                            TlsRead::Nothing => continue,
                            TlsRead::Eof => return self.at_eof(key),
                            TlsRead::Failed => return Step::Exit,
                        }
                    }
                    let step = self.handle_input(key);
                    match step {
                        Step::Wait => {}
                        other => return other,
                    }
                    if self.conns.get(key).is_none_or(|c| c.phase == Phase::Dead) {
                        return Step::Exit;
                    }
                    if eof {
                        return self.at_eof(key);
                    }
                }
                Err(Errno::AGAIN) => return Step::Wait,
                Err(Errno::INTR) => {}
                Err(_) => {
                    self.kill(key, CloseReason::IoError);
                    return Step::Exit;
                }
            }
        }
        Step::Yield
    }

    /// The client's input ended (EOF, or TLS close_notify): the connection is removed, with
    /// the reason its phase gives.
    fn at_eof(&mut self, key: u32) -> Step {
        let conn = &mut self.conns[key];
        let reason = if conn.phase == Phase::Closing {
            CloseReason::ClientClose
        } else if conn.in_http() {
            CloseReason::HttpDone
        } else {
            CloseReason::ClientGone
        };
        conn.close_reason.get_or_insert(reason);
        Step::Exit
    }

    /// Handles the bytes of one read (in the scratch buffer), after those kept from earlier
    /// reads, then settles what is kept (budget, deadline).
    fn handle_input(&mut self, key: u32) -> Step {
        let State { conns, scratch, .. } = self;
        let conn = &mut conns[key];
        let (step, restarted) = if conn.in_http() {
            let mut bytes = conn.take_bytes();
            bytes.extend_from_slice(scratch);
            conn.keep_bytes(bytes);
            (self.http_input(key), false)
        } else if conn.has_bytes() {
            let mut bytes = conn.take_bytes();
            bytes.extend_from_slice(scratch);
            conn.keep_bytes(bytes);
            self.ws_input(key, true)
        } else {
            self.ws_input(key, false)
        };
        if !self.settle_partial(key, restarted) {
            return Step::Wait;
        }
        step
    }

    /// Reading resumed after a pause: handle what was read and kept (the caller then reads
    /// on).
    pub(super) fn resume_input(&mut self, key: u32) -> Step {
        let Some(conn) = self.conns.get(key) else {
            return Step::Exit;
        };
        if conn.phase == Phase::Dead {
            return Step::Exit;
        }
        if !conn.has_bytes() {
            return Step::Wait;
        }
        let step = if conn.in_http() {
            self.http_input(key)
        } else {
            self.ws_input(key, true).0
        };
        // Whatever is still kept started arriving long ago but waited on the server: its
        // deadline starts now.
        self.settle_partial(key, true);
        step
    }

    /// Decodes WebSocket frames from the bytes just read (`own`: kept in the connection's
    /// `Partial`, else in the scratch buffer) and handles each complete message. Keeps a
    /// partial frame, and, when reading pauses, the frames not yet handled. Returns the next
    /// step and whether what is kept now is a message started in this call (the deadline of
    /// `timeouts.message_ms` restarts).
    pub(crate) fn ws_input(&mut self, key: u32, own: bool) -> (Step, bool) {
        let conn = &mut self.conns[key];
        let mut buf = if own {
            conn.take_bytes()
        } else {
            mem::take(&mut self.scratch)
        };
        let mut decoder = mem::take(&mut conn.decoder);
        let limit = if conn.echo {
            self.cfg.limits.echo_message_bytes_max
        } else {
            self.cfg.limits.message_bytes_max
        };
        let mut pos = 0;
        let mut step = Step::Wait;
        let mut completed = false;
        while pos < buf.len() {
            let decoded = match decoder.decode(&mut buf[pos..], limit) {
                Ok(d) => d,
                Err(violation) => {
                    self.violation(key, violation);
                    // The stream cannot be parsed past this point: drop the rest.
                    self.conns[key].drop_input = true;
                    decoder = Decoder::new();
                    pos = buf.len();
                    break;
                }
            };
            let consumed = decoded.consumed;
            if let Some(msg) = decoded.message {
                completed = true;
                step = if decoded.compressed {
                    self.on_compressed(key, msg, limit)
                } else {
                    self.on_message(key, msg)
                };
            }
            pos += consumed;
            if consumed == 0 || !matches!(step, Step::Wait) {
                break;
            }
            if self.conns[key].phase == Phase::Dead {
                break;
            }
            if self.should_pause(key) {
                step = Step::Pause;
                break;
            }
        }
        // A fragmented message that completed at the very end of the input leaves the
        // decoder's reassembly buffer allocated until it is called once more.
        if decoder.buffered_bytes() > 0 && !decoder.in_fragmented_message() {
            let _ = decoder.decode(&mut [], limit);
        }
        let restarted = completed && !decoder.in_fragmented_message();
        let Some(conn) = self.conns.get_mut(key) else {
            return (Step::Exit, false);
        };
        conn.decoder = decoder;
        let dead = conn.phase == Phase::Dead;
        if own {
            buf.drain(..pos);
            conn.keep_bytes(if buf.is_empty() || dead {
                Vec::new()
            } else {
                buf
            });
        } else {
            if pos < buf.len() && !dead {
                let mut kept = conn.take_bytes();
                kept.extend_from_slice(&buf[pos..]);
                conn.keep_bytes(kept);
            }
            self.scratch = buf;
        }
        (step, restarted)
    }

    fn on_message(&mut self, key: u32, msg: Message<'_>) -> Step {
        self.stats.c.messages_in += 1;
        // Every message that costs work counts against the connection's rate; pongs and
        // closes do not.
        let costs = matches!(
            msg,
            Message::Text(_) | Message::Binary(_) | Message::Ping(_)
        );
        if costs && !self.rate_admits(key, !matches!(msg, Message::Ping(_))) {
            return Step::Wait;
        }
        self.handle_message(key, msg)
    }

    /// Whether the connection's message rate admits one more message that costs work
    /// (`reply`: an error is sent when it does not). The `/echo` conformance route and a
    /// connection that is closing are not rated.
    fn rate_admits(&mut self, key: u32, reply: bool) -> bool {
        let conn = &self.conns[key];
        // Only protocol v1 has a message to say so (Centrifugo's clients are closed with 3013
        // after the strikes, Binance's at once).
        let reply = reply && conn.dialect == Dialect::V1;
        conn.echo || conn.phase == Phase::Closing || self.rate_ok(key, reply)
    }

    /// A message the rate admitted.
    fn handle_message(&mut self, key: u32, msg: Message<'_>) -> Step {
        let conn = &mut self.conns[key];
        if conn.phase == Phase::Closing {
            // RFC 6455 §7.1.1: after both close frames, the server closes the TCP connection.
            return match msg {
                Message::Close(_) => Step::Exit,
                _ => Step::Wait,
            };
        }
        let conn = &self.conns[key];
        match msg {
            Message::Text(text) if conn.echo => self.echo(key, OP_TEXT, text),
            Message::Binary(data) if conn.echo => self.echo(key, OP_BINARY, data),
            Message::Text(text) => match conn.dialect {
                Dialect::V1 => self.on_op(key, text),
                Dialect::Binance => self.binance_message(key, text),
                Dialect::CentrifugoNew | Dialect::Centrifugo => self.centrifugo_message(key, text),
            },
            Message::Binary(_) if conn.dialect == Dialect::Binance => self.reply_with(key, |out| {
                crate::dialect::binance::error(out, None, 3, "Invalid JSON: binary message")
            }),
            Message::Binary(_) if conn.dialect.is_centrifugo() => self.centrifugo_binary(key),
            Message::Binary(_) => self.reply_with(key, |out| {
                protocol::error(
                    out,
                    None,
                    ErrorCode::BadRequest,
                    "binary messages are not supported",
                    None,
                )
            }),
            // §5.5.2: a pong carries the ping's application data.
            Message::Ping(payload) => self.echo(key, OP_PONG, payload),
            Message::Pong(_) => {}
            Message::Close(close) => {
                // §5.5.1: echo the status code; an empty close gets an empty close.
                let mut frame = Vec::with_capacity(16);
                match close {
                    Some((code, _)) => encode_close(&mut frame, code, ""),
                    None => encode_frame(&mut frame, OP_CLOSE, b""),
                }
                self.close_with(key, frame, CloseReason::ClientClose);
                return Step::Wait;
            }
        }
        Step::Wait
    }

    /// A message the client compressed (permessage-deflate, RSV1 on its first frame): inflated
    /// whole into the shard's inflater, within `limit` and `deflate.inflate_ratio_max`, then
    /// handled like any other. The client keeps no compression context between messages
    /// (`client_no_context_takeover`, always asked), so nothing is kept per connection.
    fn on_compressed(&mut self, key: u32, msg: Message<'_>, limit: usize) -> Step {
        let (payload, text) = match msg {
            Message::Text(payload) => (payload, true),
            Message::Binary(payload) => (payload, false),
            // The decoder flags data messages only (RSV1 on a control frame fails it).
            other => return self.on_message(key, other),
        };
        self.stats.c.messages_in += 1;
        // The rate is checked before inflating: a client over it costs no inflate.
        if !self.rate_admits(key, true) {
            return Step::Wait;
        }
        let mut inflater = self.inflater.take().unwrap_or_else(|| {
            Box::new(Inflater::with_ratio_max(
                self.cfg.deflate.inflate_ratio_max as usize,
            ))
        });
        let step = match inflater.inflate(payload, limit) {
            Ok(plain) => {
                self.stats.c.inflations += 1;
                if !text {
                    self.handle_message(key, Message::Binary(plain))
                } else if let Err(v) = deflate::check_text(plain) {
                    self.violation(key, v);
                    Step::Wait
                } else {
                    self.handle_message(key, Message::Text(plain))
                }
            }
            Err(e) => {
                let reason = match e {
                    InflateError::Invalid => CloseReason::ProtocolError,
                    InflateError::TooBig | InflateError::Ratio => CloseReason::TooLarge,
                };
                self.close_code(key, e.close_code(), e.reason(), reason);
                Step::Wait
            }
        };
        self.inflater = Some(inflater);
        step
    }

    /// A frame answering the client's own message with its payload (echo route, pong).
    /// On a connection that negotiated permessage-deflate, an echoed data message goes
    /// compressed like a published frame (`deflate.level`, `deflate.min_bytes`).
    fn echo(&mut self, key: u32, opcode: u8, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + HEADER_BYTES_MAX);
        encode_frame(&mut frame, opcode, payload);
        let mut frame = Frame::control(frame);
        let d = &self.cfg.deflate;
        if opcode != OP_PONG && d.enabled {
            frame = frame.with_class(FrameClass {
                deflate: d.level,
                ..FrameClass::CONTROL
            });
        }
        self.push_reply(key, Rc::new(Arc::new(frame)));
    }

    /// A client op (protocol v1).
    fn on_op(&mut self, key: u32, text: &mut [u8]) {
        let req = match protocol::parse(text, &mut self.json) {
            Ok(req) => req,
            Err(bad) => {
                let id = bad.id;
                return self.reply_with(key, |out| {
                    protocol::error(
                        out,
                        id.as_deref(),
                        ErrorCode::BadRequest,
                        &bad.message,
                        None,
                    )
                });
            }
        };
        let id = req.id;
        let gated = matches!(req.op, Op::Subscribe { .. } | Op::Publish { .. });
        if gated && !self.auth_gate(key, id.as_deref()) {
            return;
        }
        match req.op {
            Op::Auth { token } => self.auth_op(key, id, &token),
            Op::Subscribe {
                topics,
                since,
                filter,
            } => self.subscribe(key, id, &topics, &since, filter.as_deref()),
            Op::Unsubscribe { topics } => self.unsubscribe(key, id, &topics),
            Op::Publish { topic, idem } => {
                let data = req.data.expect("parse checks data for publish");
                self.publish_op(key, id, &topic, data, idem.map(|k| k.as_ref().into()))
            }
            Op::Ping => {
                let ts = crate::frame::unix_us();
                self.reply_with(key, |out| protocol::pong(out, id.as_deref(), ts))
            }
        }
    }
}
