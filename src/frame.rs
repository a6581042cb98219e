//! A message serialized once: the JSON envelope and its WebSocket header built into one
//! immutable buffer, shared by every subscriber on every shard.
//!
//! Ownership: the owning shard of a topic builds the [`Frame`] and sends one `Arc` per
//! interested shard; each shard wraps it once in an `Rc` ([`OutFrame`]) so handing it to N local
//! subscribers costs N non-atomic increments, not N contended atomic ones.
//!
//! Measured per subscriber when pushing one frame to 10,000 queues with spare capacity: 1.1 ns
//! for the `Rc` clone into an `OutQueue`, 6.0-6.4 ns for an `Arc` clone (uncontended, one
//! thread), 7.8 ns for a private copy of a 184 B frame and 90 ns for a 1,108 B one; medians
//! (benches/fanout.rs, `cargo bench --bench fanout`, shared 2-core VM, 2026-11-21).

use std::{
    cell::RefCell,
    rc::Rc,
    sync::{Arc, OnceLock},
};

use crate::ws::{
    deflate::{Deflater, Level, WindowBits},
    frame::{HEADER_BYTES_MAX, OP_TEXT, encode_header},
};

/// Immutable wire bytes of one server frame.
#[derive(Debug)]
pub struct Frame {
    bytes: Box<[u8]>,
    /// Its permessage-deflate forms (RFC 7692), each built once, by the first shard that
    /// queues the frame for a connection that negotiated it (see [`Frame::wire`]).
    deflated: Deflated,
    /// The frame in the other wire formats (the dialects: `crate::dialect`), each encoded
    /// once, by the first shard that queues the frame for a connection of that format, and
    /// shared from then on like the plain bytes. Allocated on first need: a frame no dialect
    /// connection gets costs 8 bytes here.
    forms: OnceLock<Box<[Encoded; FORMS_OTHER]>>,
    /// CLOCK_MONOTONIC ns at publish (for the publish-to-write histogram); 0 for control.
    published_ns: u64,
    /// Where the published `data` starts in `bytes` (data frames); it ends one byte before
    /// the end (the envelope's closing brace).
    data_start: u32,
    /// Where the topic sits in `bytes` (data frames), so a receiving shard routes the frame
    /// without a separate copy of the topic.
    topic_start: u16,
    topic_len: u16,
    /// The topic's sequence number (data frames; 0 for control).
    seq: u64,
    /// How subscribers' queues treat this frame (from the topic's class).
    class: FrameClass,
}

/// Outbound lanes, highest priority first; a frame is queued ahead of every frame of a lower
/// lane that is not yet being written.
pub const LANE_CONTROL: u8 = 0;
pub const LANE_ALERT: u8 = 1;
pub const LANE_PRIVATE: u8 = 2;
pub const LANE_DATA: u8 = 3;
pub const LANES: usize = 4;

/// Slow-consumer policies (`config::SlowPolicy`) as stored in frames.
pub const POLICY_DISCONNECT: u8 = 0;
pub const POLICY_CONFLATE: u8 = 1;
pub const POLICY_DROP_OLDEST: u8 = 2;

/// The topic class of a frame, resolved once by the topic's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameClass {
    /// `delivery = "batched"`: the window; `"throttled"`: the interval between frames per
    /// subscriber and topic (µs). Carried by the frame, not looked up by class, so a reload
    /// that changes `[[topics]]` while frames are in flight never paces one by another class.
    pub pace_us: u32,
    /// [`DELIVERY_IMMEDIATE`], [`DELIVERY_BATCHED`] or [`DELIVERY_THROTTLED`].
    pub delivery: u8,
    pub lane: u8,
    pub policy: u8,
    /// Compression level for connections that negotiated permessage-deflate (`[deflate]`
    /// level, or the class's `deflate_level`); 0: always sent plain.
    pub deflate: u8,
}

pub const DELIVERY_IMMEDIATE: u8 = 0;
pub const DELIVERY_BATCHED: u8 = 1;
pub const DELIVERY_THROTTLED: u8 = 2;

impl FrameClass {
    /// Replies, pings, HTTP responses: the control lane, never dropped.
    pub const CONTROL: FrameClass = FrameClass {
        pace_us: 0,
        delivery: DELIVERY_IMMEDIATE,
        lane: LANE_CONTROL,
        policy: POLICY_DISCONNECT,
        deflate: 0,
    };
    /// A data frame of a topic no class matches.
    pub const DATA: FrameClass = FrameClass {
        pace_us: 0,
        delivery: DELIVERY_IMMEDIATE,
        lane: LANE_DATA,
        policy: POLICY_DISCONNECT,
        deflate: 0,
    };
}

/// A frame crossing shards.
pub type SharedFrame = Arc<Frame>;
/// A frame queued on one shard (one `Rc` per frame per shard).
pub type OutFrame = Rc<SharedFrame>;

impl Frame {
    /// A control or reply frame (not a publish).
    pub fn control(bytes: Vec<u8>) -> Frame {
        Frame {
            bytes: bytes.into_boxed_slice(),
            deflated: Deflated::default(),
            forms: OnceLock::new(),
            published_ns: 0,
            data_start: 0,
            topic_start: 0,
            topic_len: 0,
            seq: 0,
            class: FrameClass::CONTROL,
        }
    }

    /// Sets the frame's topic class (lane, slow-consumer policy).
    pub fn with_class(mut self, class: FrameClass) -> Frame {
        self.class = class;
        self
    }

    pub fn class(&self) -> FrameClass {
        self.class
    }

    #[inline]
    pub fn lane(&self) -> u8 {
        self.class.lane
    }

    /// The topic's sequence number of a data frame (0 for control frames).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The topic of a data frame ("" for control frames).
    pub fn topic(&self) -> &str {
        let range = self.topic_start as usize..(self.topic_start + self.topic_len) as usize;
        // Built from a `&str` by `encode_data_frame`, so always valid; never panics.
        std::str::from_utf8(&self.bytes[range]).unwrap_or("")
    }

    /// The plain wire bytes (header and payload).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Length of the plain frame.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether this is a published data frame (counts as a delivery when written).
    pub fn is_data(&self) -> bool {
        self.published_ns != 0
    }

    pub fn published_ns(&self) -> u64 {
        self.published_ns
    }

    /// The bytes to write to a connection whose permessage-deflate window is `window` bits
    /// (0: deflate not negotiated): the plain frame, or its compressed form (RSV1 set; see
    /// `deflated_wire`: compress once).
    #[inline]
    pub fn wire(&self, window: u8) -> &[u8] {
        if window == 0 || self.class.deflate == 0 {
            return &self.bytes;
        }
        deflated_wire(&self.bytes, &self.deflated, self.class.deflate, window)
    }

    /// The bytes to write to a connection that is sent `format` (a [`crate::dialect::Format`]
    /// as `u8`) with permessage-deflate window `window` (0: none). Control frames (replies,
    /// built for one connection in its own format) and protocol v1 connections get
    /// [`Frame::wire`]; a data frame is encoded in another format once, on first use, like its
    /// compressed forms.
    #[inline]
    pub fn wire_as(&self, format: u8, window: u8) -> &[u8] {
        if format == 0 || !self.is_data() {
            return self.wire(window);
        }
        self.form_wire(format, window)
    }

    fn form_wire(&self, format: u8, window: u8) -> &[u8] {
        let Some(i) = (format as usize)
            .checked_sub(1)
            .filter(|i| *i < FORMS_OTHER)
        else {
            return self.wire(window);
        };
        let forms = self.forms.get_or_init(Default::default);
        let form = &forms[i];
        let bytes = form.bytes.get_or_init(|| {
            FORM_COUNTS.with(|c| {
                let mut n = c.get();
                n[format as usize] += 1;
                c.set(n);
            });
            crate::dialect::encode_form(format, self.topic(), self.seq, self.data())
                .into_boxed_slice()
        });
        if window == 0 || self.class.deflate == 0 {
            return bytes;
        }
        deflated_wire(bytes, &form.deflated, self.class.deflate, window)
    }

    /// The published `data` of a data frame, as published (empty for control frames).
    pub fn data(&self) -> &[u8] {
        if !self.is_data() {
            return &[];
        }
        &self.bytes[self.data_start as usize..self.bytes.len() - 1]
    }
}

/// The compressed form of plain frame `bytes` (its forms in `deflated`) for a `window`-bit
/// window at `level`, built on first use; `bytes` itself when it goes plain.
///
/// Compress once: the compressed form is built on first use, by whichever shard first queues
/// the frame for a deflate connection, and shared from then on by every such connection on
/// every shard, like the plain bytes. A frame whose class does not compress it, that is shorter
/// than `deflate.min_bytes` or that compression would not shorten is sent plain (RFC 7692 §6:
/// compression is chosen per message). A second shard asking while the first compresses waits
/// for it (`OnceLock`) instead of compressing again.
fn deflated_wire<'a>(bytes: &'a [u8], deflated: &'a Deflated, level: u8, window: u8) -> &'a [u8] {
    let payload_len = bytes.len() - header_len(bytes);
    // Without context takeover a compressed message refers back no further than its own
    // start: the 15-bit form of a payload that fits the client's window is valid for it too.
    let (cell, bits) = if window >= 15 || payload_len <= 1 << window {
        (&deflated.full, 15)
    } else {
        let small = deflated.small.get_or_init(Default::default);
        let bits = window.max(9);
        (&small[(bits - 9) as usize], bits)
    };
    match cell.get_or_init(|| compress(bytes, level, bits)) {
        Some(bytes) => bytes,
        None => bytes,
    }
}

/// Formats other than protocol v1 (`crate::dialect::Format`).
const FORMS_OTHER: usize = crate::dialect::FORMATS - 1;

/// A data frame in one other format, with its compressed forms.
#[derive(Debug, Default)]
struct Encoded {
    bytes: OnceLock<Box<[u8]>>,
    deflated: Deflated,
}

thread_local! {
    /// Frames encoded in each format on this thread, by `Format as usize` (index 0, v1, is
    /// counted by the owner shard in `tickcast_serializations_total` itself).
    static FORM_COUNTS: std::cell::Cell<[u64; crate::dialect::FORMATS]> =
        const { std::cell::Cell::new([0; crate::dialect::FORMATS]) };
}

/// Data frames encoded in each dialect format on this thread so far, by format
/// (`tickcast_serializations_total{format}`; index 0 is always 0).
pub fn form_encodings() -> [u64; crate::dialect::FORMATS] {
    FORM_COUNTS.with(|c| c.get())
}

/// Length of the header of `frame`, a server frame (unmasked: RFC 6455 §5.2).
fn header_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7F) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// This thread's compression state: compressors by level and the counts. Shards compress on
/// their own threads (thread-per-core), so a thread-local is a per-shard compressor without
/// passing one down every path that queues a frame.
struct ThreadDeflate {
    /// Index `level - 1`, created on first use of the level (a class may set its own).
    by_level: [Option<Deflater>; Level::MAX.get() as usize],
    min_bytes: usize,
    compressions: u64,
}

thread_local! {
    static DEFLATE: RefCell<ThreadDeflate> = const {
        RefCell::new(ThreadDeflate {
            by_level: [const { None }; Level::MAX.get() as usize],
            min_bytes: 0,
            compressions: 0,
        })
    };
}

/// Sets `deflate.min_bytes` for frames compressed on this thread (each shard at its start).
pub fn set_deflate_min_bytes(min_bytes: usize) {
    DEFLATE.with_borrow_mut(|d| d.min_bytes = min_bytes);
}

/// Frames compressed on this thread so far (`tickcast_compressions_total`).
pub fn compressions() -> u64 {
    DEFLATE.with_borrow(|d| d.compressions)
}

/// The compressed form of server frame `frame` for a `window`-bit window at `level`, or
/// `None` when it goes plain: a payload under `deflate.min_bytes`, or one that would not
/// shrink.
fn compress(frame: &[u8], level: u8, window: u8) -> Option<Box<[u8]>> {
    let (Some(level), Some(window)) = (Level::new(level), WindowBits::new(window)) else {
        return None;
    };
    let opcode = frame[0] & 0x0F;
    let payload = &frame[header_len(frame)..];
    DEFLATE.with_borrow_mut(|d| {
        if payload.len() < d.min_bytes {
            return None;
        }
        d.compressions += 1;
        let deflater =
            d.by_level[level.get() as usize - 1].get_or_insert_with(|| Deflater::new(level));
        let mut out = Vec::new();
        deflater.encode_frame(&mut out, opcode, payload, window);
        (out.len() < frame.len()).then(|| out.into_boxed_slice())
    })
}

/// The permessage-deflate forms of a frame: `None` once decided that it goes plain.
#[derive(Debug, Default)]
struct Deflated {
    /// For a 15-bit window, and for any window the payload fits in (almost every frame).
    full: Form,
    /// For windows of 9..=14 bits shorter than the payload (clients that asked
    /// `server_max_window_bits` and get long frames): allocated only when first needed.
    small: OnceLock<Box<[Form; 6]>>,
}

/// One compressed form, built once: `None` when the frame goes plain.
type Form = OnceLock<Option<Box<[u8]>>>;

/// Builds the data frame of one publish:
/// `{"topic":"<topic>","seq":<seq>,"ts":<ts_us>,"data":<data>}` as one unmasked text frame.
///
/// `topic` must be valid (its charset needs no JSON escaping) and `data` one valid JSON value;
/// both are checked by the caller at ingest. One exact-size allocation.
///
/// Measured: 29 ns with 100 B of `data` and 40 ns with 1 KiB, allocation included, medians
/// (benches/protocol.rs, `cargo bench --bench protocol`, shared 2-core VM, 2026-11-21).
pub fn encode_data_frame(
    topic: &str,
    seq: u64,
    ts_us: u64,
    data: &[u8],
    published_ns: u64,
) -> Frame {
    let mut seq_buf = itoa::Buffer::new();
    let mut ts_buf = itoa::Buffer::new();
    let seq_s = seq_buf.format(seq).as_bytes();
    let ts_s = ts_buf.format(ts_us).as_bytes();
    let parts: [&[u8]; 9] = [
        b"{\"topic\":\"",
        topic.as_bytes(),
        b"\",\"seq\":",
        seq_s,
        b",\"ts\":",
        ts_s,
        b",\"data\":",
        data,
        b"}",
    ];
    let out = text_frame_of(&parts);
    let header_len = header_len(&out);
    let payload_len = out.len() - header_len;
    // Topics are at most TOPIC_BYTES_MAX (256) bytes after a header of at most 10: u16 fits.
    let topic_start = (header_len + parts[0].len()) as u16;
    // A publish time of 0 would read as "control frame"; the monotonic clock is never 0 here.
    Frame {
        bytes: out.into_boxed_slice(),
        deflated: Deflated::default(),
        forms: OnceLock::new(),
        published_ns: published_ns.max(1),
        data_start: (header_len + payload_len - 1 - data.len()) as u32,
        topic_start,
        topic_len: topic.len() as u16,
        seq,
        class: FrameClass::DATA,
    }
}

/// One unmasked text frame whose payload is `parts` concatenated; one exact-size allocation.
pub(crate) fn text_frame_of(parts: &[&[u8]]) -> Vec<u8> {
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    let mut header = [0u8; HEADER_BYTES_MAX];
    let header_len = encode_header(&mut header, OP_TEXT, payload_len);
    let mut out = Vec::with_capacity(header_len + payload_len);
    out.extend_from_slice(&header[..header_len]);
    for part in parts {
        out.extend_from_slice(part);
    }
    debug_assert_eq!(out.len(), out.capacity());
    out
}

/// Builds a text frame carrying `json` (a reply or event built for one connection).
pub fn text_frame(json: &[u8]) -> Frame {
    let mut out = Vec::with_capacity(json.len() + HEADER_BYTES_MAX);
    crate::ws::frame::encode_frame(&mut out, OP_TEXT, json);
    Frame::control(out)
}

/// A control-lane event about `topic` (a cluster `gap`): routed to the topic's subscribers
/// like its data frames, but never dropped and not a delivery.
pub fn topic_event(topic: &str, json: &[u8]) -> Frame {
    let mut f = text_frame(json);
    let needle = format!("\"topic\":\"{topic}\"");
    if let Some(at) = f
        .bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
    {
        f.topic_start = (at + "\"topic\":\"".len()) as u16;
        f.topic_len = topic.len() as u16;
    }
    f
}

/// Nanoseconds on CLOCK_MONOTONIC (vDSO, no syscall); comparable across processes.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Microseconds since the Unix epoch (the `ts` field of data frames and pongs).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
