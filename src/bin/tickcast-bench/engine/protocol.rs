//! What a connection's incoming bytes mean: the handshake response, then server frames (pings
//! answered, a close ends the connection), protocol v1 replies (welcome, the subscribe ack,
//! errors) and data frames, counted and timed into the round's stats.

use super::{Conn, Inflate, State};
use crate::{
    plan::Dialect,
    stats::{ConnectStats, RoundStats, record},
    wire::{self, Binance, Centrifugo, Opcode, Parse},
};

/// A handshake response head larger than this is refused.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;

/// What the frame handler needs from the thread, split from the connection table for borrowck.
pub(super) struct Ctx<'a> {
    pub(super) round: &'a mut RoundStats,
    pub(super) connect: &'a mut ConnectStats,
    pub(super) window: (u64, u64),
    pub(super) last_window_rx_ns: &'a mut u64,
    pub(super) rng: &'a mut fastrand::Rng,
    /// The handshake offered permessage-deflate (`--deflate`): the answer must agree to it.
    pub(super) deflate_offered: bool,
    /// The thread's inflater for `server_no_context_takeover` connections.
    pub(super) inflater: &'a mut flate2::Decompress,
    /// Scratch for an inflated message.
    pub(super) inflated: &'a mut Vec<u8>,
    /// Standalone compressed messages already inflated on this thread.
    pub(super) inflate_cache: &'a mut wire::InflateCache,
}

/// Handles the bytes read for one connection; returns how many were consumed (the rest is a
/// partial frame), or the kind of failure that ends the connection.
pub(super) fn process(
    conn: &mut Conn,
    buf: &[u8],
    now: u64,
    ctx: &mut Ctx,
) -> Result<usize, String> {
    let mut at = 0;
    if conn.state == State::AwaitResponse {
        let Some(head) = wire::response_head_len(buf) else {
            if buf.len() > RESPONSE_HEAD_BYTES_MAX {
                return Err("handshake_oversized".into());
            }
            return Ok(0);
        };
        match wire::check_response(&buf[..head], &conn.key) {
            Ok(()) => {}
            Err(wire::HandshakeError::Status(s)) => return Err(format!("handshake_status_{s}")),
            Err(wire::HandshakeError::Accept) => return Err("handshake_accept".into()),
        }
        // RFC 7692 §5/§7.1: a client fails the connection on an extension it did not offer
        // or an answer it cannot read; the bench also fails it when deflate was asked for and
        // not agreed, so a `--deflate` run never measures plain connections unnoticed.
        match wire::parse_extensions(&buf[..head]) {
            Err(e) => {
                eprintln!("tickcast-bench: Sec-WebSocket-Extensions answer refused: {e}");
                return Err("deflate_bad_answer".into());
            }
            Ok(None) if ctx.deflate_offered => return Err("deflate_not_agreed".into()),
            Ok(Some(_)) if !ctx.deflate_offered => return Err("deflate_not_offered".into()),
            Ok(None) => {}
            Ok(Some(a)) => {
                ctx.connect.deflate_agreed += 1;
                conn.inflate = Some(if a.server_no_context_takeover {
                    Inflate::Shared
                } else {
                    ctx.connect.deflate_context_takeover += 1;
                    Inflate::Own(Box::new(wire::new_inflater()))
                });
            }
        }
        // The caller queues the subscribe and moves on; frames may already follow the head.
        conn.state = State::AwaitAck;
        at = head;
    }
    loop {
        let frame = match wire::parse_frame(&buf[at..]) {
            Ok(Parse::Frame(f)) => f,
            Ok(Parse::Incomplete { .. }) => return Ok(at),
            Err(e) => return Err(format!("protocol: {e}")),
        };
        let payload = &buf[at + frame.payload_start..at + frame.payload_end];
        at += frame.len();
        if frame.rsv1 {
            // RFC 7692 §6: RSV1 marks a compressed message, only with the extension agreed,
            // only on the first frame of a data message.
            let Some(inflate) = conn.inflate.as_mut() else {
                return Err("protocol: RSV1 without permessage-deflate".into());
            };
            if !matches!(frame.opcode, Opcode::Text | Opcode::Binary) {
                return Err("protocol: RSV1 on a control frame".into());
            }
            if !frame.fin || frame.opcode == Opcode::Binary {
                // Fragmented compressed messages are not read (no server here sends them).
                ctx.round.odd_frames += 1;
                continue;
            }
            let mut inflated = std::mem::take(ctx.inflated);
            let r = match inflate {
                Inflate::Shared => match ctx.inflate_cache.get(payload) {
                    Some(hit) => {
                        inflated.clear();
                        inflated.extend_from_slice(hit);
                        Ok(())
                    }
                    None => {
                        let r = wire::inflate_message(ctx.inflater, payload, &mut inflated, false);
                        if r.is_ok() {
                            ctx.inflate_cache.put(payload, &inflated);
                            ctx.round.inflations += 1;
                        }
                        r
                    }
                },
                Inflate::Own(d) => {
                    ctx.round.inflations += 1;
                    wire::inflate_message(d, payload, &mut inflated, true)
                }
            }
            .map_err(|e| format!("protocol: {e}"));
            if r.is_ok() {
                ctx.round.compressed_frames += 1;
            }
            let r = r.and_then(|()| on_text(conn, &inflated, now, ctx));
            *ctx.inflated = inflated;
            r?;
            continue;
        }
        match frame.opcode {
            Opcode::Text if frame.fin => on_text(conn, payload, now, ctx)?,
            Opcode::Ping => {
                ctx.round.pings_answered += 1;
                let mask = ctx.rng.u32(..).to_ne_bytes();
                wire::put_masked_frame(&mut conn.out, Opcode::Pong, mask, |o| {
                    o.extend_from_slice(payload)
                });
            }
            Opcode::Pong => {}
            Opcode::Close => return Err(format!("closed_{}", wire::close_code(payload))),
            _ => ctx.round.odd_frames += 1,
        }
    }
}

fn on_text(conn: &mut Conn, payload: &[u8], now: u64, ctx: &mut Ctx) -> Result<(), String> {
    match conn.dialect {
        Dialect::V1 => {}
        Dialect::Centrifugo => return on_centrifugo(conn, payload, now, ctx),
        Dialect::Binance => return on_binance(conn, payload, now, ctx),
    }
    if !wire::is_op(payload) {
        if conn.stalled {
            // Frames right behind the subscribe ack, in the last read a stalled one does.
            return Ok(());
        }
        let Some(d) = wire::parse_data(payload) else {
            ctx.round.odd_frames += 1;
            return Ok(());
        };
        let topic = d.topic_idx.unwrap_or(u32::MAX);
        count_data(
            conn,
            ctx,
            now,
            payload.len(),
            d.sent_ns,
            Some((topic, d.seq)),
        );
        return Ok(());
    }
    match wire::op_name(payload) {
        b"welcome" => {
            conn.welcomed = true;
            let shard = wire::number_after(payload, b"\"shard\":")
                .map_or_else(|| "?".to_owned(), |s| s.to_string());
            *ctx.connect.shards.entry(shard).or_insert(0) += 1;
        }
        b"ack"
            if conn.state == State::AwaitAck
                && wire::number_after(payload, b"\"id\":") == Some(1) =>
        {
            conn.state = State::Ready;
        }
        b"error" => {
            let code = wire::string_after(payload, b"\"code\":").map_or_else(
                || "?".to_owned(),
                |c| String::from_utf8_lossy(c).into_owned(),
            );
            if conn.state == State::AwaitAck {
                return Err(format!("server_error_{code}"));
            }
            *ctx.round.server_errors.entry(code).or_insert(0) += 1;
        }
        _ => {}
    }
    Ok(())
}

/// Counts one data message of `len` payload bytes sent at `sent_ns`: received, in the window
/// or not, its latency; with `seq` (topic index, seq), gaps and dups per (connection, topic).
#[inline]
fn count_data(
    conn: &mut Conn,
    ctx: &mut Ctx,
    now: u64,
    len: usize,
    sent_ns: Option<u64>,
    seq: Option<(u32, u64)>,
) {
    let r = &mut *ctx.round;
    r.received_total += 1;
    r.payload_bytes += len as u64;
    match sent_ns {
        Some(t) if (ctx.window.0..ctx.window.1).contains(&t) => {
            r.received_window += 1;
            r.received_by_dialect[conn.dialect as usize] += 1;
            record(&mut r.latency, now.saturating_sub(t));
            *ctx.last_window_rx_ns = now;
        }
        Some(_) => r.received_outside += 1,
        None => r.received_untimed += 1,
    }
    let Some((topic, seq)) = seq else {
        r.received_no_seq += 1;
        return;
    };
    match conn.last_seq.iter_mut().find(|(t, _)| *t == topic) {
        Some((_, last)) => {
            if seq > *last + 1 {
                r.gaps += seq - *last - 1;
            } else if seq <= *last {
                r.dups += 1;
            }
            *last = seq;
        }
        None => conn.last_seq.push((topic, seq)),
    }
}

/// A text message of a Centrifugo subscriber: one or more `\n`-separated messages (pings,
/// replies, pushes).
fn on_centrifugo(conn: &mut Conn, payload: &[u8], now: u64, ctx: &mut Ctx) -> Result<(), String> {
    for msg in payload.split(|b| *b == b'\n') {
        match wire::parse_centrifugo(msg) {
            Centrifugo::Ping => {
                // Answered with `{}` (the connect reply says `pong: true`), or the server
                // closes the connection with 3012 after `centrifugo.pong_timeout_s`.
                ctx.round.pings_answered += 1;
                let mask = ctx.rng.u32(..).to_ne_bytes();
                wire::put_masked_frame(&mut conn.out, Opcode::Text, mask, |o| {
                    o.extend_from_slice(b"{}")
                });
            }
            Centrifugo::Pub {
                offset,
                topic_idx,
                sent_ns,
            } => {
                if !conn.stalled {
                    let topic = topic_idx.unwrap_or(u32::MAX);
                    count_data(conn, ctx, now, msg.len(), sent_ns, Some((topic, offset)));
                }
            }
            Centrifugo::Reply { id, error: None } => {
                if conn.state == State::AwaitAck && conn.pending > 0 {
                    if id == 1 {
                        conn.welcomed = true;
                        let shard = wire::centrifugo_shard(msg)
                            .map_or_else(|| "?".to_owned(), |s| s.to_string());
                        *ctx.connect.shards.entry(shard).or_insert(0) += 1;
                    }
                    conn.pending -= 1;
                    if conn.pending == 0 {
                        conn.state = State::Ready;
                    }
                }
            }
            Centrifugo::Reply {
                error: Some(code), ..
            } => {
                if conn.state == State::AwaitAck {
                    return Err(format!("server_error_centrifugo_{code}"));
                }
                *ctx.round
                    .server_errors
                    .entry(format!("centrifugo_{code}"))
                    .or_insert(0) += 1;
            }
            Centrifugo::OtherPush { kind, code } => {
                let code = code.map_or_else(|| "?".to_owned(), |c| c.to_string());
                let kind = String::from_utf8_lossy(kind);
                *ctx.round
                    .server_errors
                    .entry(format!("centrifugo_{kind}_{code}"))
                    .or_insert(0) += 1;
            }
            Centrifugo::Unknown if msg.trim_ascii().is_empty() => {}
            Centrifugo::Unknown => ctx.round.odd_frames += 1,
        }
    }
    Ok(())
}

/// A text message of a Binance combined-streams subscriber: data (no seq: counted, no gap
/// check), or the reply to its `SUBSCRIBE`.
fn on_binance(conn: &mut Conn, payload: &[u8], now: u64, ctx: &mut Ctx) -> Result<(), String> {
    match wire::parse_binance(payload) {
        Binance::Data { sent_ns, .. } => {
            if !conn.stalled {
                count_data(conn, ctx, now, payload.len(), sent_ns, None);
            }
        }
        Binance::Result { id } => {
            if conn.state == State::AwaitAck && id == Some(1) {
                conn.state = State::Ready;
            }
        }
        Binance::Error { code } => {
            let code = code.map_or_else(|| "?".to_owned(), |c| c.to_string());
            if conn.state == State::AwaitAck {
                return Err(format!("server_error_binance_{code}"));
            }
            *ctx.round
                .server_errors
                .entry(format!("binance_{code}"))
                .or_insert(0) += 1;
        }
        Binance::Unknown => ctx.round.odd_frames += 1,
    }
    Ok(())
}
