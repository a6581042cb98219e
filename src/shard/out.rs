//! A connection's outbound queue: shared frame handles (8 bytes each), written with one
//! vectored `sendmsg` per flush so every frame queued since the last flush leaves together.
//!
//! Writes are direct nonblocking syscalls, not io_uring ops: the kernel TCP path dominates a
//! small write (~1-4 µs here; perf/README.md, "The floor") and one io_uring submit per send gains
//! nothing, while a direct write needs no owned buffer, no per-connection task and no
//! completion bookkeeping. A connection whose socket buffer is full is written again when the
//! shard's readiness set reports the socket writable (`super::conn`).

use std::{collections::VecDeque, io::IoSlice, os::fd::BorrowedFd};

use rustix::{
    io::Errno,
    net::{SendAncillaryBuffer, SendFlags},
};

use crate::{
    frame::{LANES, OutFrame, POLICY_CONFLATE, POLICY_DISCONNECT, POLICY_DROP_OLDEST},
    limits::{CONFLATE_SCAN_MAX, IOVECS_PER_WRITE, OUTQ_KEEP_ENTRIES},
    stats::ShardStats,
};

/// Per-lane bounds of a connection's queue (from `[limits]`, prepared once per shard).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    pub lane_max: [u32; LANES],
    pub conflate_after: u32,
}

/// What [`OutQueue::offer`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Queued in place of an older unsent frame of the same topic (`conflate`).
    Conflated,
    /// Queued after dropping this many older unsent frames of its lane and policy
    /// (`drop_oldest`, or `conflate` with no frame of the topic to replace).
    Dropped(u32),
    /// Not queued: its lane is full of frames that must not be dropped (`disconnect` policy);
    /// the droppable frame itself gives way. Counts as one dropped frame.
    Discarded(u32),
    /// The lane is full and the policy is `disconnect` (or nothing could make room).
    Slow,
}

/// Outcome of a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued is written.
    Done,
    /// The socket buffer is full: wait for POLLOUT.
    Blocked,
    /// The connection is broken.
    Failed(Errno),
}

/// Frames in lane order: every frame is behind all frames of its own or a higher lane and ahead
/// of all frames of lower lanes, except the head while it is partly written. Within a lane the
/// order is arrival order, so a topic's frames keep their `seq` order.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<OutFrame>,
    /// Bytes of `frames[0]` already written.
    head_sent: u32,
    /// Bytes queued and not yet written.
    bytes: u32,
    /// Bytes of the frames queued per lane (whole frames, the partly written head included).
    lane_bytes: [u32; LANES],
    /// The connection's permessage-deflate window (0: not negotiated): which of each frame's
    /// forms it is sent ([`crate::frame::Frame::wire`]). Every count above is of those bytes.
    window: u8,
    /// The format data frames are sent in (`crate::dialect::Format` as `u8`; 0: v1).
    format: u8,
}

impl OutQueue {
    /// Sends frames compressed for a `window`-bit permessage-deflate window from now on (set
    /// once, at the upgrade, when only HTTP responses may be queued: they never compress, so
    /// the counts stay right).
    pub fn set_window(&mut self, window: u8) {
        debug_assert!(self.frames.iter().all(|f| f.class().deflate == 0));
        self.window = window;
    }

    /// Sends data frames in `format` from now on (a dialect's; Binance's `SET_PROPERTY`
    /// switches between raw and combined at any time). A partly written head keeps the bytes
    /// it started with: it becomes a control frame of exactly those bytes, still partly
    /// written, so nothing is queued ahead of it (`first_movable`); the counts are redone in
    /// the new format.
    pub fn set_format(&mut self, format: crate::dialect::Format) {
        let format = format as u8;
        if format == self.format {
            return;
        }
        if self.head_sent > 0 {
            if let Some(head) = self.frames.front() {
                let bytes = self.wire(head).to_vec();
                let frame =
                    crate::frame::Frame::control(bytes).with_class(crate::frame::FrameClass {
                        deflate: 0,
                        ..head.class()
                    });
                self.frames[0] = std::rc::Rc::new(std::sync::Arc::new(frame));
            }
        }
        self.format = format;
        self.bytes = 0;
        self.lane_bytes = [0; LANES];
        for i in 0..self.frames.len() {
            let len = self.wire(&self.frames[i]).len() as u32;
            self.bytes += len;
            self.lane_bytes[self.frames[i].lane() as usize] += len;
        }
        // Bytes queued and not yet written: the head's written part is not.
        self.bytes -= self.head_sent;
    }

    /// The format data frames are sent in (`crate::dialect::Format` as `u8`).
    pub fn format(&self) -> u8 {
        self.format
    }

    /// The bytes of `frame` this connection is sent.
    #[inline]
    fn wire<'a>(&self, frame: &'a OutFrame) -> &'a [u8] {
        frame.wire_as(self.format, self.window)
    }

    #[inline]
    pub fn len_of(&self, frame: &OutFrame) -> u32 {
        self.wire(frame).len() as u32
    }

    /// Queues one shared frame handle.
    ///
    /// Measured: 1.1 ns per subscriber to push one `OutFrame` clone into each of 10,000 queues
    /// with spare capacity, 6.3 ns into queues with none (the first push allocates the deque);
    /// medians (benches/fanout.rs, `cargo bench --bench fanout`, shared 2-core VM, 2026-11-21).
    #[inline]
    pub fn push(&mut self, frame: OutFrame) {
        let len = self.len_of(&frame);
        let lane = frame.lane() as usize;
        self.bytes += len;
        self.lane_bytes[lane] += len;
        match self.frames.back() {
            Some(back) if back.lane() > frame.lane() => self.insert_by_lane(frame),
            _ => self.frames.push_back(frame),
        }
    }

    /// Appends at the very end whatever its lane (a close frame: the last frame).
    pub fn push_last(&mut self, frame: OutFrame) {
        let len = self.len_of(&frame);
        self.bytes += len;
        self.lane_bytes[frame.lane() as usize] += len;
        self.frames.push_back(frame);
    }

    /// Queues `frame` within its lane's bound, applying the frame's slow-consumer policy when
    /// the lane is full (or, for `conflate`, past `conflate_after`).
    #[inline]
    pub fn offer(&mut self, frame: OutFrame, b: &Bounds) -> Offer {
        let lane = frame.lane() as usize;
        let len = self.len_of(&frame);
        let policy = frame.class().policy;
        if self.lane_bytes[lane] + len <= b.lane_max[lane] {
            if policy == POLICY_CONFLATE
                && self.lane_bytes[lane] > b.conflate_after
                && self.replace_same_topic(&frame)
            {
                return Offer::Conflated;
            }
            self.push(frame);
            return Offer::Queued;
        }
        match policy {
            POLICY_DISCONNECT => Offer::Slow,
            POLICY_CONFLATE if self.replace_same_topic(&frame) => Offer::Conflated,
            POLICY_CONFLATE | POLICY_DROP_OLDEST => {
                let dropped = self.drop_oldest(lane, policy, len, b.lane_max[lane]);
                if self.lane_bytes[lane] + len > b.lane_max[lane] {
                    return Offer::Discarded(dropped + 1);
                }
                self.push(frame);
                Offer::Dropped(dropped)
            }
            _ => Offer::Slow,
        }
    }

    /// First index a new frame may take (the head stays while it is partly written).
    fn first_movable(&self) -> usize {
        usize::from(self.head_sent > 0)
    }

    /// Inserts `frame` behind the last frame of its own or a higher lane.
    fn insert_by_lane(&mut self, frame: OutFrame) {
        let min = self.first_movable();
        let mut i = self.frames.len();
        while i > min && self.frames[i - 1].lane() > frame.lane() {
            i -= 1;
        }
        self.frames.insert(i, frame);
    }

    /// Replaces the newest unsent frame of `frame`'s topic and lane with `frame` (searching at
    /// most `CONFLATE_SCAN_MAX` frames from the back). False if there is none.
    fn replace_same_topic(&mut self, frame: &OutFrame) -> bool {
        let min = self.first_movable();
        let topic = frame.topic();
        let lane = frame.lane();
        let mut i = self.frames.len();
        let stop = i.saturating_sub(CONFLATE_SCAN_MAX).max(min);
        while i > stop {
            i -= 1;
            let old = &self.frames[i];
            if old.lane() == lane && old.topic() == topic && old.is_data() {
                let (old_len, new_len) = (self.len_of(old), self.len_of(frame));
                self.bytes = self.bytes - old_len + new_len;
                let lb = &mut self.lane_bytes[lane as usize];
                *lb = *lb - old_len + new_len;
                self.frames[i] = frame.clone();
                return true;
            }
        }
        false
    }

    /// Drops the oldest unsent frames of `lane` with `policy` (never a frame whose policy
    /// forbids dropping it) until `len` more bytes fit under `max`; returns how many.
    fn drop_oldest(&mut self, lane: usize, policy: u8, len: u32, max: u32) -> u32 {
        let mut i = self.first_movable();
        let mut dropped = 0;
        while self.lane_bytes[lane] + len > max && i < self.frames.len() {
            let f = &self.frames[i];
            if f.lane() as usize == lane && f.class().policy == policy && f.is_data() {
                let f = self.frames.remove(i).expect("index in range");
                let len = self.len_of(&f);
                self.bytes -= len;
                self.lane_bytes[lane] -= len;
                dropped += 1;
            } else {
                i += 1;
            }
        }
        dropped
    }

    #[inline]
    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }

    /// Bytes of the frames queued in `lane` (the partly written head included).
    #[inline]
    pub fn lane_bytes(&self, lane: u8) -> usize {
        self.lane_bytes[lane as usize] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// No frame is partly written: a new frame (a close) may be written next.
    pub fn at_frame_boundary(&self) -> bool {
        self.head_sent == 0
    }

    /// Drops everything queued and releases the memory.
    pub fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.head_sent = 0;
        self.bytes = 0;
        self.lane_bytes = [0; LANES];
    }

    /// Writes as much as the socket takes, `IOVECS_PER_WRITE` frames per `sendmsg`.
    /// `now_ns` (CLOCK_MONOTONIC, read once per round by the caller) times the deliveries.
    pub fn flush(&mut self, sock: BorrowedFd<'_>, now_ns: u64, stats: &mut ShardStats) -> Flush {
        loop {
            if self.frames.is_empty() {
                self.shrink_if_empty();
                return Flush::Done;
            }
            let mut iov = [IoSlice::new(&[]); IOVECS_PER_WRITE];
            let (n, total) = self.gather(&mut iov);
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            match rustix::net::sendmsg(sock, &iov[..n], &mut SendAncillaryBuffer::default(), flags)
            {
                Ok(written) => {
                    stats.c.writes += 1;
                    stats.c.bytes_out += written as u64;
                    self.advance(written, now_ns, stats);
                    if written < total {
                        return Flush::Blocked;
                    }
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Flush::Blocked,
                Err(e) => return Flush::Failed(e),
            }
        }
    }

    /// The unwritten bytes of the first `IOVECS_PER_WRITE` frames; returns (slices, bytes).
    fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>; IOVECS_PER_WRITE]) -> (usize, usize) {
        let mut n = 0;
        let mut total = 0;
        for (slot, frame) in iov.iter_mut().zip(self.frames.iter()) {
            let bytes = if n == 0 {
                &self.wire(frame)[self.head_sent as usize..]
            } else {
                self.wire(frame)
            };
            *slot = IoSlice::new(bytes);
            total += bytes.len();
            n += 1;
        }
        (n, total)
    }

    /// TLS: offers the next frames (up to `IOVECS_PER_WRITE`) to `sink`, the record layer,
    /// which returns how many bytes it took (encrypted into the shard's write buffer). The
    /// frames taken leave the queue and count as delivered, but their bytes stay in
    /// [`Self::bytes`] (the slow-consumer bound) until [`Self::release`]: their ciphertext
    /// may not be on the socket yet.
    pub fn feed(
        &mut self,
        now_ns: u64,
        stats: &mut ShardStats,
        sink: impl FnOnce(&[IoSlice<'_>]) -> usize,
    ) -> usize {
        let mut iov = [IoSlice::new(&[]); IOVECS_PER_WRITE];
        let (n, total) = self.gather(&mut iov);
        let taken = sink(&iov[..n]).min(total);
        self.pop_written(taken, now_ns, stats);
        taken
    }

    /// TLS: `n` bytes taken by [`Self::feed`] are now written to the socket.
    pub fn release(&mut self, n: usize) {
        // Saturating: `clear` (a killed connection) may already have zeroed the count.
        self.bytes = self.bytes.saturating_sub(n as u32);
    }

    /// Releases the deque's allocation once it is empty and larger than what is kept.
    pub fn shrink_if_empty(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > OUTQ_KEEP_ENTRIES {
            self.frames = VecDeque::new();
        }
    }

    fn advance(&mut self, written: usize, now_ns: u64, stats: &mut ShardStats) {
        self.bytes -= written as u32;
        self.pop_written(written, now_ns, stats);
    }

    /// Drops the frames (and the part of the head frame) `written` bytes cover, counting the
    /// data frames completed as deliveries.
    fn pop_written(&mut self, mut written: usize, now_ns: u64, stats: &mut ShardStats) {
        while written > 0 {
            let head = self
                .frames
                .front()
                .expect("written bytes belong to queued frames");
            let len = self.wire(head).len();
            let left = len - self.head_sent as usize;
            if written < left {
                self.head_sent += written as u32;
                return;
            }
            written -= left;
            self.head_sent = 0;
            self.lane_bytes[head.lane() as usize] -= len as u32;
            if head.is_data() {
                stats.c.deliveries += 1;
                stats
                    .latency
                    .record(now_ns.saturating_sub(head.published_ns()));
            }
            self.frames.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{rc::Rc, sync::Arc};

    use proptest::prelude::*;

    use super::*;
    use crate::frame::{FrameClass, encode_data_frame};

    const TOPICS: [&str; 3] = ["a", "b", "c"];

    /// Topic `t` of lane `lane` (1..=3) with `policy`.
    fn frame(lane: u8, policy: u8, t: usize, seq: u64, pad: usize) -> OutFrame {
        let topic = format!("{}{lane}{policy}", TOPICS[t]);
        let data = format!("\"{}\"", "x".repeat(pad));
        let class = FrameClass {
            lane,
            policy,
            ..FrameClass::DATA
        };
        Rc::new(Arc::new(
            encode_data_frame(&topic, seq, 0, data.as_bytes(), 1).with_class(class),
        ))
    }

    /// The bytes queued, in write order.
    fn queued_bytes(q: &OutQueue) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, f) in q.frames.iter().enumerate() {
            let skip = if i == 0 { q.head_sent as usize } else { 0 };
            out.extend_from_slice(&q.wire(f)[skip..]);
        }
        out
    }

    /// Binance's `SET_PROPERTY` while a frame is half written: the rest of that frame still
    /// goes out first, in the form it started in, and a reply queued after the switch (the
    /// control lane, which goes ahead of waiting data) comes behind it, never inside it.
    #[test]
    fn a_format_switch_keeps_a_partly_written_frame_whole_and_first() {
        let mut stats = ShardStats::new(0);
        let mut q = OutQueue::default();
        q.set_format(crate::dialect::Format::BinanceRaw);
        let data = frame(3, 0, 0, 1, 40);
        let raw = q.wire(&data).to_vec();
        q.push(data.clone());
        q.push(frame(3, 0, 1, 2, 10));
        q.pop_written(5, 1, &mut stats);
        q.set_format(crate::dialect::Format::BinanceCombined);
        let reply = Rc::new(Arc::new(crate::frame::text_frame(
            b"{\"result\":null,\"id\":1}",
        )));
        q.push(reply.clone());
        let bytes = queued_bytes(&q);
        assert_eq!(
            &bytes[..raw.len() - 5],
            &raw[5..],
            "the head's rest, as it started"
        );
        let after = &bytes[raw.len() - 5..];
        assert_eq!(
            &after[..reply.bytes().len()],
            reply.bytes(),
            "then the reply"
        );
        let next = &after[reply.bytes().len()..];
        assert!(
            next.windows(10).any(|w| w == b"{\"stream\":"),
            "then the next data frame, now combined"
        );
        assert_eq!(q.bytes as usize, bytes.len());
        check(&q);
    }

    fn bounds() -> Bounds {
        Bounds {
            lane_max: [4096, 2048, 2048, 4096],
            conflate_after: 1024,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Offer {
            lane: u8,
            policy: u8,
            t: usize,
            pad: usize,
        },
        Control,
        Write(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1u8..=3, 0u8..=2, 0usize..3, 0usize..300)
                .prop_map(|(lane, policy, t, pad)| Op::Offer { lane, policy, t, pad }),
            1 => Just(Op::Control),
            2 => (1usize..600).prop_map(Op::Write),
        ]
    }

    /// Checks the queue's invariants; returns the frames in order.
    fn check(q: &OutQueue) {
        let movable = q.first_movable();
        for w in q.frames.range(movable..).collect::<Vec<_>>().windows(2) {
            assert!(w[0].lane() <= w[1].lane(), "lane order broken");
        }
        let mut lane_bytes = [0u32; LANES];
        let mut total = 0u32;
        for f in &q.frames {
            lane_bytes[f.lane() as usize] += q.len_of(f);
            total += q.len_of(f);
        }
        assert_eq!(lane_bytes, q.lane_bytes, "per-lane bytes");
        assert_eq!(total - q.head_sent, q.bytes, "queued bytes");
    }

    proptest! {
        /// Lane order, byte accounting, per-topic seq order, no loss where the policy is
        /// `disconnect`, and conflation keeps the newest frame of each topic.
        #[test]
        fn lanes_and_policies(ops in prop::collection::vec(op(), 1..200)) {
            let mut q = OutQueue::default();
            let mut stats = ShardStats::new(0);
            let b = bounds();
            let mut seq: std::collections::HashMap<String, u64> = Default::default();
            // Frames that must arrive: queued with `disconnect` (and not refused).
            let mut must: Vec<(String, u64)> = Vec::new();
            // Newest frame offered per conflate/drop topic (it must arrive: it is never the
            // one dropped).
            let mut newest: std::collections::HashMap<String, u64> = Default::default();
            let mut written: Vec<(String, u64)> = Vec::new();
            let mut disconnected = false;
            // Dropping (lane full of distinct topics) may take a topic's newest frame.
            let mut any_drop = false;
            for op in ops {
                match op {
                    Op::Offer { lane, policy, t, pad } => {
                        let f = frame(lane, policy, t, 0, pad);
                        let topic = f.topic().to_string();
                        let s = seq.entry(topic.clone()).or_default();
                        *s += 1;
                        let f = frame(lane, policy, t, *s, pad);
                        match q.offer(f, &b) {
                            Offer::Slow => {
                                prop_assert_eq!(policy, POLICY_DISCONNECT, "only disconnect frames refuse");
                                disconnected = true;
                                break;
                            }
                            _ if policy == POLICY_DISCONNECT => must.push((topic, *s)),
                            Offer::Dropped(n) | Offer::Discarded(n) if n > 0 => any_drop = true,
                            _ => { newest.insert(topic, *s); }
                        }
                    }
                    Op::Control => {
                        let f: OutFrame = Rc::new(Arc::new(crate::frame::Frame::control(vec![0x81, 0])));
                        q.push(f);
                    }
                    Op::Write(n) => {
                        let n = n.min(q.bytes());
                        // Record the frames completed by this write.
                        let mut left = n + q.head_sent as usize;
                        for f in &q.frames {
                            if left < f.len() { break; }
                            left -= f.len();
                            if f.is_data() { written.push((f.topic().to_string(), f.seq())); }
                        }
                        q.pop_written(n, 1, &mut stats);
                        q.bytes -= n as u32;
                    }
                }
                check(&q);
            }
            if disconnected {
                return Ok(());
            }
            for f in &q.frames {
                if f.is_data() { written.push((f.topic().to_string(), f.seq())); }
            }
            // Per topic, strictly increasing seq.
            let mut last: std::collections::HashMap<&str, u64> = Default::default();
            for (t, s) in &written {
                let l = last.entry(t.as_str()).or_default();
                prop_assert!(*s > *l, "topic {} went from seq {} to {}", t, l, s);
                *l = *s;
            }
            for m in &must {
                prop_assert!(written.contains(m), "lost {:?}", m);
            }
            if !any_drop {
                for (t, s) in &newest {
                    prop_assert!(written.contains(&(t.clone(), *s)), "newest of {} lost", t);
                }
            }
        }
    }

    #[test]
    fn an_alert_overtakes_queued_data_but_not_a_partly_written_frame() {
        let mut q = OutQueue::default();
        let mut stats = ShardStats::new(0);
        for seq in 1..=3 {
            q.push(frame(LANE_DATA_T, POLICY_DISCONNECT, 0, seq, 10));
        }
        q.pop_written(5, 1, &mut stats);
        q.bytes -= 5;
        let alert = frame(1, POLICY_DISCONNECT, 1, 1, 1);
        q.push(alert);
        let lanes: Vec<u8> = q.frames.iter().map(|f| f.lane()).collect();
        assert_eq!(
            lanes,
            [3, 1, 3, 3],
            "behind the partly written head, ahead of the rest"
        );
        check(&q);
    }

    const LANE_DATA_T: u8 = crate::frame::LANE_DATA;
}
