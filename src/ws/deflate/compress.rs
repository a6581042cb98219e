//! Compression of one server message into one complete frame (RFC 7692 §6.1, §7.2.1).
//!
//! Each message is compressed alone (`server_no_context_takeover`), so the output depends only
//! on the payload, the window and the level: one call per published message and window gives
//! bytes that every subscriber with that window can be sent.
//!
//! Two engines, by window:
//! - 15 bits (what every client gets unless it offered `server_max_window_bits`): libdeflate,
//!   whose one-shot compressor suits whole messages and, level for level, is both faster and
//!   smaller than zlib-rs (measured below). Its output always ends with a block whose BFINAL bit is set; RFC 7692 §7.2.3.4
//!   allows exactly that ("Using a DEFLATE Block with BFINAL Set to 1") and gives as its
//!   example the final block followed by one 0x00 octet, `0xf3 0x48 0xcd 0xc9 0xc9 0x07 0x00
//!   0x00`, which is what this module sends: the 0x00 is the §7.2.1 empty stored block's
//!   header once its 4 octets 0x00 0x00 0xff 0xff are removed. A receiver either stops at the
//!   final block (zlib, Python, Node, Go: the rest is ignored) or, like Chromium and WebKit,
//!   restarts after it and reads the 0x00 plus its appended 0x00 0x00 0xff 0xff as an empty
//!   stored block; both read the message right.
//! - 9 to 14 bits: libdeflate has no window setting, so zlib-rs (through flate2) with a
//!   sync flush, the §7.2.1 algorithm as written.
//!
//! Measured (benches/ws.rs `deflate` group, medians, shared 2-core VM, load average 1 to 6,
//! 2026-12-04), time per message and compressed size:
//!
//! | message | libdeflate l1 | libdeflate l6 | libdeflate l9 | zlib-rs l1 | zlib-rs l6 | zlib-rs l9 |
//! |---|---|---|---|---|---|---|
//! | 137 B bbo update | 4.6 µs, 106 B | 5.9 µs, 104 B | 5.9 µs, 104 B | 3.9 µs, 118 B | 7.3 µs, 105 B | 8.2 µs, 104 B |
//! | 2 KiB order book | 8.2 µs, 387 B | 10.8 µs, 365 B | 13.8 µs, 363 B | 5.4 µs, 536 B | 12.1 µs, 385 B | 17.4 µs, 368 B |
//!
//! Most of the time on small messages is not compression: both engines clear their hash
//! tables on every call (libdeflate 128 KiB at level 1, 192 KiB at 2 to 9; zlib-rs 128 KiB),
//! about 4 µs here whatever the message size. A 137-byte message saves 33 bytes for it, a
//! 2 KiB one 1.7 KiB; whether a small frame is worth compressing at all (RFC 7692 §6.1 lets it
//! go uncompressed, RSV1 clear, to the same subscribers) is the caller's call.

use flate2::{Compress, Compression, FlushCompress};
use libdeflater::{CompressionLvl, Compressor};

use super::WindowBits;
use crate::ws::frame::{HEADER_BYTES_MAX, encode_header_compressed};

/// A compression level on zlib's scale, 1 (fastest) to 9 (smallest), applied to both
/// engines: libdeflate's levels 1 to 9 mean the same trade. libdeflate's 10 to 12 (optimal
/// parsing) are left out: they cost several times level 9 for a few percent on messages this
/// small. Level 0 (stored, no compression) is left out too: a message not worth compressing
/// is better sent plain, with RSV1 clear (RFC 7692 §6.1 lets any message go uncompressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(u8);

impl Level {
    /// Fastest.
    pub const MIN: Level = Level(1);
    /// Smallest output.
    pub const MAX: Level = Level(9);
    /// The default. Compression runs once per message but its output goes to every
    /// subscriber, so bytes weigh more than CPU: level 6 makes a 2 KiB book 6% smaller than
    /// level 1 for 30% more time, level 9 gains 0.5% more for another 30% (module doc).
    pub const DEFAULT: Level = Level(6);

    /// `Some` for 1..=9.
    pub const fn new(level: u8) -> Option<Level> {
        if level >= Self::MIN.0 && level <= Self::MAX.0 {
            Some(Level(level))
        } else {
            None
        }
    }

    /// The level number.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl Default for Level {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A scratch buffer this large or smaller is kept between calls; a larger one (a rare huge
/// message) is freed after use, so a shard's idle memory does not follow its largest message.
const SCRATCH_RETAIN_BYTES_MAX: usize = 256 * 1024;

/// The 4 octets a sync flush ends with and §7.2.1 removes: an empty stored block's LEN and
/// NLEN.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Per-shard compressor of server messages. Holds no per-connection state: every call is
/// independent of the previous ones.
pub struct Deflater {
    level: Level,
    /// Window 15.
    libdeflate: Compressor,
    /// Windows 9..=14 (index `bits - 9`), each created on first use.
    zlib: [Option<Compress>; 6],
    /// Compressed payload of the message being built (visible to the tests of the fallback).
    pub(super) scratch: Vec<u8>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor at `level`; allocates libdeflate's state (its size depends on the level),
    /// and a zlib-rs state per smaller window when first needed.
    pub fn new(level: Level) -> Self {
        let lvl = CompressionLvl::new(i32::from(level.0))
            .expect("libdeflate accepts levels 0 to 12, Level is 1 to 9");
        Self {
            level,
            libdeflate: Compressor::new(lvl),
            zlib: Default::default(),
            scratch: Vec::new(),
        }
    }

    /// The level this compressor uses.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Appends one complete server frame to `out`: FIN, RSV1 ("Per-Message Compressed",
    /// RFC 7692 §6), `opcode`, unmasked, carrying `payload` compressed with at most `window`.
    /// With `out` empty, its allocation is exact (frame length).
    ///
    /// `opcode` must be a data opcode (text or binary): §6.1 compresses data messages only,
    /// and RSV1 on a control frame fails the connection.
    pub fn encode_frame(
        &mut self,
        out: &mut Vec<u8>,
        opcode: u8,
        payload: &[u8],
        window: WindowBits,
    ) {
        debug_assert!(opcode < 0x8, "control frames are never compressed");
        let n = self.compress(payload, window);
        let mut header = [0u8; HEADER_BYTES_MAX];
        let header_len = encode_header_compressed(&mut header, opcode, n);
        out.reserve_exact(header_len + n);
        out.extend_from_slice(&header[..header_len]);
        out.extend_from_slice(&self.scratch[..n]);
        if self.scratch.capacity() > SCRATCH_RETAIN_BYTES_MAX {
            self.scratch = Vec::new();
        }
    }

    /// Compresses `payload` into `scratch[..n]` and returns `n`: the RFC 7692 §7.2.1 payload,
    /// i.e. raw DEFLATE without the final 0x00 0x00 0xff 0xff.
    fn compress(&mut self, payload: &[u8], window: WindowBits) -> usize {
        if payload.is_empty() {
            // The §7.2.1 algorithm on no data: an empty stored block, 0x00 0x00 0x00 0xff 0xff,
            // minus its last 4 octets. One byte, whatever the engine.
            self.scratch.clear();
            self.scratch.push(0x00);
            return 1;
        }
        if window == WindowBits::MAX {
            self.compress_libdeflate(payload)
        } else {
            self.compress_zlib(payload, window)
        }
    }

    fn compress_libdeflate(&mut self, payload: &[u8]) -> usize {
        // One byte past libdeflate's worst case for the trailing 0x00 (see the module doc).
        let bound = self.libdeflate.deflate_compress_bound(payload.len()) + 1;
        if self.scratch.len() < bound {
            // Zero-fills only the growth: the buffer keeps its length between calls.
            self.scratch.resize(bound, 0);
        }
        match self
            .libdeflate
            .deflate_compress(payload, &mut self.scratch[..bound - 1])
        {
            Ok(n) => {
                self.scratch[n] = 0x00;
                n + 1
            }
            // Cannot happen (the buffer is the documented bound), but a stored copy is always
            // a correct answer.
            Err(_) => self.stored(payload),
        }
    }

    fn compress_zlib(&mut self, payload: &[u8], window: WindowBits) -> usize {
        let level = Compression::new(u32::from(self.level.0));
        let bits = window.get();
        let slot = &mut self.zlib[usize::from(bits - WindowBits::MIN.get())];
        let compress =
            slot.get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        // No context takeover: each message starts from an empty window.
        compress.reset();
        self.scratch.clear();
        // zlib's deflateBound for a sync flush is about len + len/1000 + a few bytes per block;
        // this covers it, and the loop grows the buffer if not.
        self.scratch
            .reserve(payload.len() + payload.len() / 64 + 64);
        let mut input = payload;
        loop {
            let before = compress.total_in();
            let result = compress.compress_vec(input, &mut self.scratch, FlushCompress::Sync);
            let consumed = (compress.total_in() - before) as usize;
            input = &input[consumed.min(input.len())..];
            if result.is_err() {
                return self.stored(payload);
            }
            // zlib's contract for a flush: done once all input is taken and the output buffer
            // was not filled.
            if input.is_empty() && self.scratch.len() < self.scratch.capacity() {
                break;
            }
            self.scratch.reserve(self.scratch.capacity().max(64));
        }
        // §7.2.1: "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end."
        if !self.scratch.ends_with(&SYNC_TAIL) {
            return self.stored(payload);
        }
        self.scratch.len() - SYNC_TAIL.len()
    }

    /// The payload as stored (uncompressed) DEFLATE blocks (RFC 1951 §3.2.4), ending as
    /// §7.2.1 asks; a fallback that is correct for any window and never fails.
    pub(super) fn stored(&mut self, payload: &[u8]) -> usize {
        self.scratch.clear();
        for chunk in payload.chunks(0xFFFF) {
            // BFINAL 0, BTYPE 00, then LEN and NLEN, little-endian, at a byte boundary.
            let len = chunk.len() as u16;
            self.scratch.push(0x00);
            self.scratch.extend_from_slice(&len.to_le_bytes());
            self.scratch.extend_from_slice(&(!len).to_le_bytes());
            self.scratch.extend_from_slice(chunk);
        }
        // The empty stored block of §7.2.1 without its last 4 octets.
        self.scratch.push(0x00);
        self.scratch.len()
    }
}
