//! `permessage-deflate` (RFC 7692), built for "compress once": every server message is
//! compressed at most once per window size and the same bytes go to every subscriber that
//! negotiated the extension.
//!
//! What makes a compressed frame shareable is that it stands alone: the server always uses
//! `server_no_context_takeover` (§7.1.1.1), so no message refers to an earlier one and no
//! connection holds a compression context. Likewise the server always asks for
//! `client_no_context_takeover` (§7.1.1.2), so each client message inflates alone and a shard
//! needs one [`Inflater`] for all its connections instead of a 32 KiB window per connection.
//!
//! - [`negotiate()`]: the `Sec-WebSocket-Extensions` offer and the response line (§5, §7.1).
//! - [`Deflater`]: one complete compressed server frame, RSV1 set (§6, §7.2.1).
//! - [`Inflater`]: one complete compressed client message, bounded (§7.2.2).
//! - [`check_text`]: UTF-8 validation of an inflated text message (the frame decoder leaves
//!   compressed text to the caller, see [`crate::ws::frame::Decoded::compressed`]).
//!
//! The frame decoder ([`crate::ws::frame::Decoder::set_deflate`]) applies the RSV1 rules of
//! §6 and bounds the compressed bytes; the inflater bounds the inflated ones.

use crate::ws::{frame::Violation, utf8};

mod compress;
mod inflate;
mod negotiation;

pub use compress::{Deflater, Level};
pub use inflate::{InflateError, Inflater, RATIO_FLOOR_BYTES, RATIO_MAX_DEFAULT};
pub use negotiation::{Agreed, Malformed, negotiate, negotiate_values, write_response_header};

/// The LZ77 window a compressed message may use, as the base-2 logarithm of its size.
///
/// RFC 7692 §7.1.2.1 allows 8 to 15 in an offer; this server compresses with 9 to 15 only,
/// because neither zlib nor libdeflate can produce raw DEFLATE with a 256-byte window (zlib
/// rejects `windowBits` -8 for raw streams; libdeflate always uses 32 KiB), so an offer asking
/// for 8 is declined (see [`negotiate()`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowBits(u8);

impl WindowBits {
    /// The smallest window this server can compress with (512 bytes).
    pub const MIN: WindowBits = WindowBits(9);
    /// 32 KiB, the DEFLATE maximum and what a client expects when it did not offer
    /// `server_max_window_bits` (§7.1.2.1).
    pub const MAX: WindowBits = WindowBits(15);

    /// `Some` for 9..=15.
    pub const fn new(bits: u8) -> Option<WindowBits> {
        if bits >= Self::MIN.0 && bits <= Self::MAX.0 {
            Some(WindowBits(bits))
        } else {
            None
        }
    }

    /// The base-2 logarithm of the window size.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// Validates an inflated text message as UTF-8 (RFC 6455 §8.1; the frame decoder does not
/// look inside compressed payloads, RFC 7692 §6.2 has the receiver decompress first).
///
/// The message is complete, so a character cut at the end is invalid too; maps to close 1007.
pub fn check_text(inflated: &[u8]) -> Result<(), Violation> {
    utf8::Progress::new()
        .finish(inflated)
        .map_err(|_| Violation::InvalidUtf8)
}

#[cfg(test)]
mod tests;
