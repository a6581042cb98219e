//! The incremental client frame decoder (RFC 6455 §5.2-§5.6).
//!
//! State kept between calls is a few words: how far into the frame at the front of the
//! caller's buffer the decoder has already unmasked (or copied) and validated, plus the
//! reassembly buffer of a fragmented message, which exists only while one is in flight.
//!
//! With `permessage-deflate` negotiated ([`Decoder::set_deflate`]), RSV1 on the first frame of
//! a data message marks the message compressed (RFC 7692 §6): the decoder hands the payload
//! over as it came, flagged [`Decoded::compressed`], and does not look for UTF-8 in it.

use super::{
    CONTROL_PAYLOAD_MAX, Decoded, Message, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
    OP_TEXT, RSV1, Violation,
};
use crate::ws::close;
use crate::ws::mask::unmask;
use crate::ws::utf8;

/// "Need more bytes": nothing consumed, nothing finished.
const NEED_MORE: Decoded<'static> = Decoded {
    consumed: 0,
    message: None,
    compressed: false,
};

/// The fragmented message being reassembled, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Fragmented {
    #[default]
    None,
    Text,
    Binary,
    /// The reassembled message was handed out by the previous call and still borrows the
    /// buffer; the next call releases it.
    Returned,
}

/// Incremental decoder for client frames. Small when idle (no buffer held).
///
/// Contract: the caller presents unconsumed bytes again at the start of `buf` on the next
/// call (possibly moved, but with the decoder's in-place changes preserved), followed by new
/// bytes. After a [`Violation`] the connection must be failed; the decoder stays panic-free
/// but its results are meaningless.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Reassembly buffer for a fragmented message; `None` unless one is in flight or was just
    /// returned (boxed: 8 bytes in every idle connection instead of a 24-byte `Vec`; the
    /// extra allocation exists only while a fragmented message does).
    #[allow(clippy::box_collection)]
    reassembly: Option<Box<Vec<u8>>>,
    /// Payload bytes of the data frame at the front of the caller's buffer already processed:
    /// unmasked in place (single-frame message) or copied into `reassembly` (fragment).
    front_done: usize,
    /// UTF-8 progress of the text message being received, relative to the front frame's
    /// payload (single-frame message) or to `reassembly` (fragmented message).
    utf8: utf8::Progress,
    fragmented: Fragmented,
    /// `permessage-deflate` was negotiated: RSV1 may mark a message compressed.
    deflate: bool,
    /// The fragmented message in flight is compressed (RSV1 on its first frame).
    compressed: bool,
}

// There is one decoder per connection and a process serves 19k+ connections at ~430 bytes of
// RSS per idle one (perf/README.md), so the idle decoder must stay a few words.
const _: () = assert!(std::mem::size_of::<Decoder>() <= 32);

/// The bytes of a fragmented message assembled so far (none without a buffer).
#[allow(clippy::box_collection)] // `Decoder::reassembly`'s type.
fn assembled(reassembly: &Option<Box<Vec<u8>>>) -> &[u8] {
    reassembly.as_deref().map_or(&[], |r| r.as_slice())
}

/// A fully received and validated client frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    /// RSV1 set (only possible on the first frame of a data message, with deflate).
    compressed: bool,
    /// Header bytes, masking key included.
    len: usize,
    payload_len: usize,
    mask: [u8; 4],
}

impl Header {
    fn frame_len(&self) -> usize {
        // `payload_len` is within the message limit; saturating only matters for a limit
        // near `usize::MAX`, where such a frame could never be buffered anyway.
        self.len.saturating_add(self.payload_len)
    }
}

impl Decoder {
    /// An idle decoder: no message in flight, no heap memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes at most one message from the front of `buf`.
    ///
    /// `consumed == 0` with no message: need more bytes. `consumed > 0` with no message: a
    /// non-final fragment was absorbed; call again with the rest. Single-frame data messages
    /// are unmasked in place and returned as a slice of `buf`; fragmented ones are returned
    /// from the decoder's reassembly buffer, which the next call frees.
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        message_bytes_max: usize,
    ) -> Result<Decoded<'a>, Violation> {
        if self.fragmented == Fragmented::Returned {
            // The previous call lent this buffer out; now that the borrow is over, free it so
            // an idle connection holds no heap memory.
            self.reassembly = None;
            self.fragmented = Fragmented::None;
        }
        let Some(header) = self.parse_header(buf, message_bytes_max)? else {
            return Ok(NEED_MORE);
        };
        if header.opcode >= OP_CLOSE {
            decode_control(buf, header)
        } else if header.fin && header.opcode != OP_CONTINUATION {
            self.decode_single(buf, header)
        } else {
            self.decode_fragment(buf, header, message_bytes_max)
        }
    }

    /// Tells the decoder whether `permessage-deflate` was negotiated for this connection
    /// (RFC 7692). When it was, RSV1 on the first frame of a data message marks the message
    /// compressed ([`Decoded::compressed`]); when it was not, RSV1 fails the connection as
    /// RFC 6455 §5.2 requires. Set it before the first frame.
    pub fn set_deflate(&mut self, negotiated: bool) {
        self.deflate = negotiated;
    }

    /// Whether `permessage-deflate` was negotiated ([`Decoder::set_deflate`]).
    pub fn deflate(&self) -> bool {
        self.deflate
    }

    /// Heap bytes the decoder holds for a fragmented message: in flight, or returned by the
    /// previous call (freed by the next one). Zero when idle.
    pub fn buffered_bytes(&self) -> usize {
        self.reassembly.as_ref().map_or(0, |r| r.capacity())
    }

    /// Whether a fragmented message has started and not yet finished.
    pub fn in_fragmented_message(&self) -> bool {
        matches!(self.fragmented, Fragmented::Text | Fragmented::Binary)
    }

    /// Parses and validates the frame header at the front of `buf`; `Ok(None)` if incomplete.
    /// Each check runs as soon as the bytes it needs are present.
    fn parse_header(
        &self,
        buf: &[u8],
        message_bytes_max: usize,
    ) -> Result<Option<Header>, Violation> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let compressed = if b0 & 0x70 != 0 {
            self.reserved_bits(b0)?
        } else {
            false
        };
        let opcode = b0 & 0x0F;
        let in_flight = self.in_fragmented_message();
        match opcode {
            // §5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail the
            // WebSocket Connection_."
            0x3..=0x7 | 0xB..=0xF => return Err(Violation::Protocol("unknown opcode")),
            // §5.5: "Control frames themselves MUST NOT be fragmented."
            OP_CLOSE | OP_PING | OP_PONG if !fin => {
                return Err(Violation::Protocol("fragmented control frame"));
            }
            // §5.4: a fragmented message is "a single frame with the FIN bit clear and an
            // opcode other than 0, followed by zero or more frames with the FIN bit clear and
            // the opcode set to 0, and terminated by a single frame with the FIN bit set and
            // an opcode of 0", and fragments of different messages MUST NOT interleave.
            OP_CONTINUATION if !in_flight => {
                return Err(Violation::Protocol(
                    "continuation without a started message",
                ));
            }
            OP_TEXT | OP_BINARY if in_flight => {
                return Err(Violation::Protocol(
                    "new message inside a fragmented message",
                ));
            }
            _ => {}
        }

        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        // §5.1: "The server MUST close the connection upon receiving a frame that is not
        // masked."
        if b1 & 0x80 == 0 {
            return Err(Violation::Protocol("unmasked client frame"));
        }
        let is_control = opcode >= OP_CLOSE;
        let len7 = b1 & 0x7F;
        // §5.5: "All control frames MUST have a payload length of 125 bytes or less".
        if is_control && usize::from(len7) > CONTROL_PAYLOAD_MAX {
            return Err(Violation::Protocol("control frame payload over 125 bytes"));
        }
        // §5.2: 126 announces a 16-bit length, 127 a 64-bit one "(the most significant bit
        // MUST be 0)". §5.2 also asks for the minimal encoding, but a longer one is harmless
        // and other servers accept it, so it is not treated as an error.
        let (payload_len, extended) = match len7 {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    let len = u64::from_be_bytes(be);
                    if len >> 63 != 0 {
                        return Err(Violation::Protocol("64-bit length with the MSB set"));
                    }
                    (len, 8)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 0),
        };
        if !is_control {
            // Reject as soon as the header announces too much, before any payload arrives.
            // Earlier fragments of the message are in `reassembly`, along with the part of
            // this frame already copied there (`front_done`, zero for a new frame).
            let before = assembled(&self.reassembly)
                .len()
                .saturating_sub(self.front_done);
            let room = message_bytes_max.saturating_sub(before);
            if payload_len > room as u64 {
                return Err(Violation::TooLarge);
            }
        }
        // §5.2: the 4-byte masking key follows the length.
        let len = 2 + extended + 4;
        let Some(key) = buf.get(2 + extended..len) else {
            return Ok(None);
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(key);
        Ok(Some(Header {
            fin,
            opcode,
            compressed,
            len,
            // Bounded by the message limit (a usize) or by 125, so the conversion is exact.
            payload_len: payload_len as usize,
            mask,
        }))
    }

    /// Some RSV bit is set: `Ok(true)` when it is RSV1 marking a compressed message.
    ///
    /// RFC 6455 §5.2: "RSV1, RSV2, RSV3: 1 bit each. MUST be 0 unless an extension is
    /// negotiated that defines meanings for non-zero values. If a nonzero value is received and
    /// none of the negotiated extensions defines the meaning of such a nonzero value, the
    /// receiving endpoint MUST _Fail the WebSocket Connection_." The only extension we
    /// negotiate is `permessage-deflate`, which gives RSV1 a meaning and RSV2, RSV3 none.
    #[cold]
    #[inline(never)]
    fn reserved_bits(&self, b0: u8) -> Result<bool, Violation> {
        if b0 & 0x70 != RSV1 || !self.deflate {
            return Err(Violation::Protocol("reserved bits set"));
        }
        // RFC 7692 §6: "An endpoint MUST NOT set the "Per-Message Compressed" bit of control
        // frames and non-first fragments of a data message. An endpoint receiving such a
        // frame MUST _Fail the WebSocket Connection_." (Unknown opcodes fail as such next.)
        match b0 & 0x0F {
            OP_CONTINUATION => Err(Violation::Protocol("RSV1 on a continuation frame")),
            OP_CLOSE | OP_PING | OP_PONG => Err(Violation::Protocol("RSV1 on a control frame")),
            _ => Ok(true),
        }
    }

    /// A TEXT or BINARY frame with FIN set: the whole message in one frame, decoded in place.
    fn decode_single<'a>(
        &mut self,
        buf: &'a mut [u8],
        header: Header,
    ) -> Result<Decoded<'a>, Violation> {
        let text = header.opcode == OP_TEXT;
        // A compressed text message is UTF-8 only once inflated: the caller checks it then.
        let validate = text && !header.compressed;
        let frame_len = header.frame_len();
        let available_end = buf.len().min(frame_len);
        let payload = &mut buf[header.len..available_end];
        // Unmask only what previous calls did not, then validate the new bytes: a frame that
        // trickles in costs linear time, and §8.1 invalid UTF-8 fails before the frame ends.
        let start = self.front_done.min(payload.len());
        unmask(&mut payload[start..], header.mask, start);
        self.front_done = payload.len();
        if validate {
            self.utf8
                .advance(payload)
                .map_err(|_| Violation::InvalidUtf8)?;
        }
        if available_end < frame_len {
            return Ok(NEED_MORE);
        }
        if validate {
            self.utf8
                .finish(payload)
                .map_err(|_| Violation::InvalidUtf8)?;
        }
        self.front_done = 0;
        self.utf8 = utf8::Progress::new();
        let message = if text {
            Message::Text(payload)
        } else {
            Message::Binary(payload)
        };
        Ok(Decoded {
            consumed: frame_len,
            message: Some(message),
            compressed: header.compressed,
        })
    }

    /// A fragment of a fragmented message (§5.4): its payload is appended to `reassembly` as
    /// it arrives, and the message is returned from there once the FIN fragment is complete.
    fn decode_fragment<'a>(
        &'a mut self,
        buf: &[u8],
        header: Header,
        message_bytes_max: usize,
    ) -> Result<Decoded<'a>, Violation> {
        let text = match header.opcode {
            OP_TEXT => true,
            OP_BINARY => false,
            _ => self.fragmented == Fragmented::Text,
        };
        // RSV1 is on the first fragment only (RFC 7692 §6); the rest inherit it.
        let compressed = match header.opcode {
            OP_CONTINUATION => self.compressed,
            _ => header.compressed,
        };
        let validate = text && !compressed;
        let frame_len = header.frame_len();
        let available_end = buf.len().min(frame_len);
        let payload = &buf[header.len..available_end];
        let start = self.front_done.min(payload.len());
        let fresh = &payload[start..];
        if !fresh.is_empty() {
            let reassembly = self.reassembly.get_or_insert_with(Box::default);
            reserve_bounded(reassembly, fresh.len(), message_bytes_max);
            let at = reassembly.len();
            reassembly.extend_from_slice(fresh);
            unmask(&mut reassembly[at..], header.mask, start);
        }
        self.front_done = payload.len();
        if validate {
            // §5.6: "a particular text frame might include a partial UTF-8 sequence; however,
            // the whole message MUST contain valid UTF-8." So a character cut at the end of
            // the bytes so far is accepted here and only rejected at FIN.
            self.utf8
                .advance(assembled(&self.reassembly))
                .map_err(|_| Violation::InvalidUtf8)?;
        }
        if available_end < frame_len {
            return Ok(NEED_MORE);
        }
        self.front_done = 0;
        if !header.fin {
            if header.opcode != OP_CONTINUATION {
                // The first fragment counts as started only once it is complete, so that a
                // partially received first fragment is not mistaken for a second message.
                self.fragmented = if text {
                    Fragmented::Text
                } else {
                    Fragmented::Binary
                };
                self.compressed = compressed;
            }
            return Ok(Decoded {
                consumed: frame_len,
                message: None,
                compressed: false,
            });
        }
        if validate {
            self.utf8
                .finish(assembled(&self.reassembly))
                .map_err(|_| Violation::InvalidUtf8)?;
        }
        self.utf8 = utf8::Progress::new();
        self.fragmented = Fragmented::Returned;
        self.compressed = false;
        // A message of empty fragments never allocated one.
        let payload: &mut [u8] = match self.reassembly.as_deref_mut() {
            Some(reassembly) => reassembly,
            None => &mut [],
        };
        let message = if text {
            Message::Text(payload)
        } else {
            Message::Binary(payload)
        };
        Ok(Decoded {
            consumed: frame_len,
            message: Some(message),
            compressed,
        })
    }
}

/// A control frame (§5.5): returned whole and at once, even between the fragments of a data
/// message ("Control frames [...] MAY be injected in the middle of a fragmented message",
/// §5.4), without touching the reassembly state.
fn decode_control(buf: &mut [u8], header: Header) -> Result<Decoded<'_>, Violation> {
    let frame_len = header.frame_len();
    // A control payload is at most 125 bytes, so waiting for all of it costs nothing.
    let Some(payload) = buf.get_mut(header.len..frame_len) else {
        return Ok(NEED_MORE);
    };
    unmask(payload, header.mask, 0);
    let message = match header.opcode {
        OP_PING => Message::Ping(payload),
        OP_PONG => Message::Pong(payload),
        _ => Message::Close(close::parse_close_payload(payload)?),
    };
    Ok(Decoded {
        consumed: frame_len,
        message: Some(message),
        compressed: false,
    })
}

/// Makes room for `additional` bytes, growing geometrically (so reassembling many small
/// fragments copies linearly) but never past `limit`, the message size limit that already
/// bounds the data: the limit, not the growth policy, decides what a client can make us hold.
fn reserve_bounded(buf: &mut Vec<u8>, additional: usize, limit: usize) {
    let needed = buf.len().saturating_add(additional);
    if needed <= buf.capacity() {
        return;
    }
    let target = buf
        .capacity()
        .saturating_mul(2)
        .max(256)
        .min(limit)
        .max(needed);
    buf.reserve_exact(target - buf.len());
}
