//! Inflation of one complete compressed client message (RFC 7692 §6.2, §7.2.2), one-shot and
//! bounded.
//!
//! The connection agreed to `client_no_context_takeover`, so each message inflates alone and
//! one [`Inflater`] serves a whole shard. §7.2.2's algorithm is "1. Append 4 octets of 0x00
//! 0x00 0xff 0xff to the tail end of the payload of the message. 2. Decompress the resulting
//! data using DEFLATE." The tail is fed after the payload (no copy of it), followed by an
//! empty final stored block (0x01 0x00 0x00 0xff 0xff: BFINAL 1, BTYPE 00, LEN 0, NLEN), so
//! a complete message always ends the DEFLATE stream and a truncated one does not: that is
//! how a message cut inside a block is told apart and refused as invalid. A message whose own
//! data ends with a final block (§7.2.3.4) stops there, and what follows is ignored, as
//! zlib-based receivers do.
//!
//! Two bounds apply to the output, so a small message cannot make the shard inflate (and hold)
//! much (a "zip bomb"):
//! - the message limit, the same one that bounds uncompressed messages: [`InflateError::TooBig`];
//! - [`RATIO_MAX_DEFAULT`] times the compressed size, but never less than
//!   [`RATIO_FLOOR_BYTES`]: [`InflateError::Ratio`].
//!
//! The output buffer is the bound plus one byte, and inflation stops when it is full, so
//! neither memory nor work goes past the bound; a full buffer means the message was larger.
//!
//! zlib-rs (flate2) rather than libdeflate: both take a bounded output slice, but on messages
//! of this size zlib-rs inflates faster (its decoding tables are smaller to build) and needs
//! no copy of the input, which libdeflate (whole streams in one contiguous buffer) would.
//! Measured (benches/ws.rs, `inflate` group, medians, shared 2-core VM, 2026-12-04): a
//! 137-byte frame 1.16 µs against 1.39 µs, a 2 KiB order book 2.72 µs against 3.51 µs.

use flate2::{Decompress, FlushDecompress, Status};

use crate::ws::close;

/// Inflated bytes allowed per compressed byte, unless under [`RATIO_FLOOR_BYTES`].
///
/// JSON compresses 5 to 20 times in practice (the demo feed's frames 1.3 times for a
/// 137-byte update to 5.6 times for a 2 KiB book, benches/ws.rs); a long array of
/// near-identical entries reaches 50 to 100. DEFLATE's own
/// ceiling is about 1032 (a 258-byte match costs 2 bits at best), which a crafted message
/// reaches. 100 leaves real messages alone and cuts a crafted one's amplification tenfold.
pub const RATIO_MAX_DEFAULT: usize = 100;

/// Output always allowed, whatever the ratio: a short message of repeated characters (a
/// 60-byte message inflating to a few KiB) is legitimate and cheap, and below this size
/// the ratio bound would protect nothing worth the surprise.
pub const RATIO_FLOOR_BYTES: usize = 16 * 1024;

/// What [`Inflater::inflate`] feeds after the payload: §7.2.2's 0x00 0x00 0xff 0xff, then an
/// empty final stored block that ends the stream.
const TAIL: [u8; 9] = [0x00, 0x00, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0xFF, 0xFF];

/// An output buffer this large or smaller is kept between calls; a larger one (a huge
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

/// Per-shard inflater of client messages: a raw-DEFLATE zlib-rs state (its 32 KiB window is
/// allocated on first use and kept) and one output buffer.
pub struct Inflater {
    decompress: Decompress,
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
            // Raw DEFLATE (no zlib header), 32 KiB window: reads any window a client used.
            decompress: Decompress::new(false),
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
        let ratio_bound = compressed
            .len()
            .saturating_mul(self.ratio_max)
            .max(RATIO_FLOOR_BYTES);
        let bound = max_bytes.min(ratio_bound);
        // One byte past the bound: filling it is how "larger than the bound" shows.
        let room = bound.saturating_add(1);
        if self.scratch.len() > SCRATCH_RETAIN_BYTES_MAX && room <= SCRATCH_RETAIN_BYTES_MAX {
            self.scratch = Vec::new();
        }
        if self.scratch.len() < room {
            // Zero-fills only the growth: the buffer keeps its length between calls.
            self.scratch.resize(room, 0);
        }
        let out = &mut self.scratch[..room];
        let d = &mut self.decompress;
        d.reset(false);
        let invalid = |_| InflateError::Invalid;
        // zlib returns once the input is used up, the output is full or the stream ends.
        let mut status = d
            .decompress(compressed, out, FlushDecompress::None)
            .map_err(invalid)?;
        let mut produced = d.total_out() as usize;
        if status != Status::StreamEnd && produced < room {
            let before = produced;
            status = d
                .decompress(&TAIL, &mut out[produced..], FlushDecompress::Sync)
                .map_err(invalid)?;
            produced = d.total_out() as usize;
            if produced != before {
                // The tail holds two empty stored blocks: anything decoded from it means the
                // message stopped inside a block and the tail was read as that block's data
                // (found by the `deflate` fuzz target: `01 09 00 f6 ff` inflated to the tail's
                // own bytes). A receiver following §7.2.2 sees an unfinished stream.
                return Err(InflateError::Invalid);
            }
        }
        if produced > bound {
            return Err(if bound == max_bytes {
                InflateError::TooBig
            } else {
                InflateError::Ratio
            });
        }
        if status != Status::StreamEnd {
            // The tail's final block was not reached: the message stops inside a block.
            return Err(InflateError::Invalid);
        }
        Ok(&mut self.scratch[..produced])
    }

    /// Bytes of output buffer held now (sized for the largest recent message's bound).
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.capacity()
    }
}
