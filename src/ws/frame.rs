//! CONTRACT STUB: implemented on the ws branch.
//!
//! Server frames (never masked, RFC 6455 §5.1) and the incremental client frame decoder.

/// Opcodes (RFC 6455 §5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Longest server frame header: 2 bytes + 8-byte extended length.
pub const HEADER_BYTES_MAX: usize = 10;

/// Length of the header of an unmasked FIN frame carrying `payload_len` bytes.
pub fn header_len(payload_len: usize) -> usize {
    let _ = payload_len;
    todo!()
}

/// Writes the header of an unmasked FIN frame with `opcode` and `payload_len` into `out`,
/// returns the number of bytes written (2, 4 or 10).
pub fn encode_header(out: &mut [u8; HEADER_BYTES_MAX], opcode: u8, payload_len: usize) -> usize {
    let _ = (out, opcode, payload_len);
    todo!()
}

/// Appends a whole unmasked FIN frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let _ = (out, opcode, payload);
    todo!()
}

/// Appends a close frame with `code` and `reason` (reason truncated to fit 125 bytes at a char
/// boundary).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let _ = (out, code, reason);
    todo!()
}

/// A protocol violation found in client bytes; each maps to one close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// 1002: unmasked frame, reserved bits, unknown opcode, fragmented or oversized control
    /// frame, bad continuation, bad close payload, 64-bit length with MSB set.
    Protocol(&'static str),
    /// 1007: text message (or close reason) not valid UTF-8.
    InvalidUtf8,
    /// 1009: message larger than the limit.
    TooLarge,
}

impl Violation {
    pub fn close_code(&self) -> u16 {
        todo!()
    }
    /// A constant human-readable reason for the close frame.
    pub fn reason(&self) -> &'static str {
        todo!()
    }
}

/// A complete client message. Data payloads are unmasked in place and handed out mutably so
/// the caller can parse them in place (simd-json).
#[derive(Debug)]
pub enum Message<'a> {
    /// A complete text message, already validated as UTF-8.
    Text(&'a mut [u8]),
    Binary(&'a mut [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// Close frame; `None` when it had no payload. Code and reason already validated.
    Close(Option<(u16, &'a str)>),
}

/// Result of one [`Decoder::decode`] call.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// Bytes at the front of the input the caller may now drop.
    pub consumed: usize,
    /// A complete message, if one finished.
    pub message: Option<Message<'a>>,
}

/// Incremental decoder for client frames. Small when idle (no buffer held).
#[derive(Debug, Default)]
pub struct Decoder {}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes at most one message from the front of `buf`.
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        message_bytes_max: usize,
    ) -> Result<Decoded<'a>, Violation> {
        let _ = (buf, message_bytes_max);
        todo!()
    }

    /// Bytes the decoder itself holds for a fragmented message in flight.
    pub fn buffered_bytes(&self) -> usize {
        todo!()
    }
}
