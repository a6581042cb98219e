//! Inflation of one complete compressed client message (RFC 7692 §6.2, §7.2.2), one-shot and
//! bounded.
//!
//! The connection agreed to `client_no_context_takeover`, so each message inflates alone and
//! one [`Inflater`] serves a whole shard. §7.2.2's algorithm is "1. Append 4 octets of 0x00
//! 0x00 0xff 0xff to the tail end of the payload of the message. 2. Decompress the resulting
//! data using DEFLATE." A streaming inflater may stop there; libdeflate decodes whole streams
//! only, so the input also gets an empty final block (0x03 0x00: BFINAL 1, fixed Huffman, end
//! of block) that ends a stream the client left open. A message whose own data ends with a
//! final block (§7.2.3.4) stops there, and what follows is ignored, as zlib-based receivers
//! do.
//!
//! Two bounds apply to the output, so a small message cannot make the shard inflate (and hold)
//! much (a "zip bomb"):
//! - the message limit, the same one that bounds uncompressed messages: [`InflateError::TooBig`];
//! - [`RATIO_MAX_DEFAULT`] times the compressed size, but never less than
//!   [`RATIO_FLOOR_BYTES`]: [`InflateError::Ratio`].
//!
//! The output buffer is sized to the bound before decoding and libdeflate stops as soon as the
//! output would pass it, so neither memory nor work goes past the bound.
//!
//! libdeflate rather than zlib-rs (flate2): one call with a bounded output slice is exactly
//! its interface, and it inflates faster; measured in benches/ws.rs (`inflate` group).

use libdeflater::{DecompressionError, Decompressor};

use crate::ws::close;

/// Inflated bytes allowed per compressed byte, unless under [`RATIO_FLOOR_BYTES`].
///
/// JSON compresses 5 to 20 times in practice (the demo feed's frames about 1.5 to 8 times,
/// benches/ws.rs); a long array of near-identical entries reaches 50 to 100. DEFLATE's own
/// ceiling is about 1032 (a 258-byte match costs 2 bits at best), which a crafted message
/// reaches. 100 leaves real messages alone and cuts a crafted one's amplification tenfold.
pub const RATIO_MAX_DEFAULT: usize = 100;

/// Output always allowed, whatever the ratio: a short message of repeated characters (a
/// 60-byte message inflating to a few KiB) is legitimate and cheap, and below this size
/// the ratio bound would protect nothing worth the surprise.
pub const RATIO_FLOOR_BYTES: usize = 16 * 1024;

/// What [`Inflater::inflate`] appends to the payload: §7.2.2's 0x00 0x00 0xff 0xff, then an
/// empty final block so libdeflate sees a complete stream.
const TAIL: [u8; 6] = [0x00, 0x00, 0xFF, 0xFF, 0x03, 0x00];

/// A scratch buffer this large or smaller is kept between calls; a larger one (a huge
/// message on the echo route) is dropped at the next call that does not need it.
const SCRATCH_RETAIN_BYTES_MAX: usize = 256 * 1024;

/// Why a compressed message was refused; each maps to one close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// 1009: the message inflates past the message limit.
    TooBig,
    /// 1009: the message inflates past [`RATIO_MAX_DEFAULT`] (or the inflater's ratio) times
    /// its compressed size and past [`RATIO_FLOOR_BYTES`], though within the message limit.
    Ratio,
    /// 1007: the payload is not DEFLATE data. RFC 7692 names no code; RFC 6455 §7.4.1's 1007
    /// is for "data within a message that was not consistent with the type of the message",
    /// and it is what Node's ws sends for a failed inflate (1009 when too large, like here).
    Invalid,
}

impl InflateError {
    /// The close code to fail the connection with (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            InflateError::TooBig | InflateError::Ratio => close::TOO_LARGE,
            InflateError::Invalid => close::INVALID_PAYLOAD,
        }
    }

    /// A constant human-readable reason for the close frame.
    pub fn reason(&self) -> &'static str {
        match self {
            InflateError::TooBig => "message too large",
            InflateError::Ratio => "message compressed too well",
            InflateError::Invalid => "invalid compressed data",
        }
    }
}

/// Per-shard inflater of client messages: libdeflate's decompressor (about 10 KiB) and one
/// scratch buffer holding the input copy (payload plus tail) followed by the output.
pub struct Inflater {
    decompressor: Decompressor,
    scratch: Vec<u8>,
    ratio_max: usize,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("scratch", &self.scratch.len())
            .field("ratio_max", &self.ratio_max)
            .finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// An inflater with [`RATIO_MAX_DEFAULT`].
    pub fn new() -> Self {
        Self::with_ratio_max(RATIO_MAX_DEFAULT)
    }

    /// An inflater allowing `ratio_max` inflated bytes per compressed byte (above
    /// [`RATIO_FLOOR_BYTES`]).
    pub fn with_ratio_max(ratio_max: usize) -> Self {
        Self {
            decompressor: Decompressor::new(),
            scratch: Vec::new(),
            ratio_max,
        }
    }

    /// Inflates one complete message's payload (RSV1 was set on its first frame; fragments
    /// already joined) into at most `max_bytes`. The result borrows the inflater until the
    /// next call.
    pub fn inflate(
        &mut self,
        compressed: &[u8],
        max_bytes: usize,
    ) -> Result<&mut [u8], InflateError> {
        let input_len = compressed.len().saturating_add(TAIL.len());
        let ratio_bound = compressed
            .len()
            .saturating_mul(self.ratio_max)
            .max(RATIO_FLOOR_BYTES);
        let bound = max_bytes.min(ratio_bound);
        let needed = input_len.saturating_add(bound);
        if self.scratch.len() > SCRATCH_RETAIN_BYTES_MAX && needed <= SCRATCH_RETAIN_BYTES_MAX {
            self.scratch = Vec::new();
        }
        if self.scratch.len() < needed {
            // Zero-fills only the growth: the buffer keeps its length between calls.
            self.scratch.resize(needed, 0);
        }
        let (input, output) = self.scratch.split_at_mut(input_len);
        let (payload, tail) = input.split_at_mut(compressed.len());
        payload.copy_from_slice(compressed);
        tail.copy_from_slice(&TAIL);
        match self
            .decompressor
            .deflate_decompress(input, &mut output[..bound])
        {
            Ok(n) => Ok(&mut output[..n]),
            Err(DecompressionError::InsufficientSpace) if bound == max_bytes => {
                Err(InflateError::TooBig)
            }
            Err(DecompressionError::InsufficientSpace) => Err(InflateError::Ratio),
            Err(DecompressionError::BadData) => Err(InflateError::Invalid),
        }
    }

    /// Bytes of scratch memory held now (input copy and output area of the largest recent
    /// message).
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.capacity()
    }
}
