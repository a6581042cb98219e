//! Tests for frame encoding and the client frame decoder.
//!
//! This file holds the helpers every topic shares (masked client frames, the caller side of the
//! decoder contract, chunked feeding); the tests are in `tests/`, one file a topic:
//! [`encode`], [`decode`] (happy paths), [`violations`], [`utf8_fail_fast`], [`limits`],
//! [`props`] (property tests), [`interop`] (tungstenite) and [`deflate`] (RSV1 with
//! `permessage-deflate`).

use super::*;

mod decode;
mod deflate;
mod encode;
mod interop;
mod limits;
mod props;
mod utf8_fail_fast;
mod violations;

/// How a test encodes a client frame's payload length.
#[derive(Debug, Clone, Copy)]
enum Len {
    Minimal,
    Bits16,
    Bits64,
}

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A masked client frame, as a browser would send it.
fn client_frame_with(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4], len: Len) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let n = payload.len();
    match len {
        Len::Minimal if n < 126 => out.push(0x80 | n as u8),
        Len::Minimal | Len::Bits16 if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_with(fin, opcode, payload, MASK, Len::Minimal)
}

/// A decoded message, copied out of the borrowed buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl From<Message<'_>> for Owned {
    fn from(message: Message<'_>) -> Self {
        match message {
            Message::Text(p) => Owned::Text(p.to_vec()),
            Message::Binary(p) => Owned::Binary(p.to_vec()),
            Message::Ping(p) => Owned::Ping(p.to_vec()),
            Message::Pong(p) => Owned::Pong(p.to_vec()),
            Message::Close(c) => Owned::Close(c.map(|(code, r)| (code, r.to_owned()))),
        }
    }
}

fn text(s: &str) -> Owned {
    Owned::Text(s.as_bytes().to_vec())
}

/// The caller side of the decoder contract, as the shard runtime does it: append each read to
/// a buffer, decode until the decoder needs more bytes, drop what it consumed.
struct Conn {
    decoder: Decoder,
    buf: Vec<u8>,
    max: usize,
    messages: Vec<Owned>,
}

impl Conn {
    fn new(max: usize) -> Self {
        Self {
            decoder: Decoder::new(),
            buf: Vec::new(),
            max,
            messages: Vec::new(),
        }
    }

    fn read(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        self.buf.extend_from_slice(bytes);
        loop {
            let len = self.buf.len();
            let decoded = self.decoder.decode(&mut self.buf, self.max)?;
            assert!(
                decoded.consumed <= len,
                "consumed past the end of the buffer"
            );
            let consumed = decoded.consumed;
            let need_more = consumed == 0 && decoded.message.is_none();
            if let Some(message) = decoded.message {
                self.messages.push(message.into());
            }
            assert!(
                self.decoder.buffered_bytes() <= self.max,
                "reassembly over the limit"
            );
            self.buf.drain(..consumed);
            if need_more {
                return Ok(());
            }
        }
    }
}

/// Feeds `stream` in chunks of the given sizes (cycled); returns the messages and the first
/// violation, if any.
fn feed_chunked(stream: &[u8], sizes: &[usize], max: usize) -> (Vec<Owned>, Option<Violation>) {
    let mut conn = Conn::new(max);
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(v) = conn.read(chunk) {
            return (conn.messages, Some(v));
        }
    }
    (conn.messages, None)
}

fn feed(stream: &[u8]) -> Result<Vec<Owned>, Violation> {
    match feed_chunked(stream, &[stream.len().max(1)], 1 << 20) {
        (messages, None) => Ok(messages),
        (_, Some(v)) => Err(v),
    }
}

fn violation(stream: &[u8]) -> Violation {
    feed(stream).expect_err("expected a violation")
}
