//! A connection's outbound queue: shared frame handles (8 bytes each), written with one
//! vectored `sendmsg` per flush so every frame queued since the last flush leaves together.
//!
//! Writes are direct nonblocking syscalls, not io_uring ops: the kernel TCP path dominates a
//! small write (~1-4 µs here, ../shared/PERF-NOTES.md) and one io_uring submit per send gains
//! nothing, while a direct write needs no owned buffer, no per-connection task and no
//! completion bookkeeping. Only a connection whose socket buffer is full waits, on io_uring's
//! POLLOUT, in a drain task (`super::conn`).

use std::{collections::VecDeque, io::IoSlice, os::fd::BorrowedFd};

use rustix::{
    io::Errno,
    net::{SendAncillaryBuffer, SendFlags},
};

use crate::{
    frame::OutFrame,
    limits::{IOVECS_PER_WRITE, OUTQ_KEEP_ENTRIES},
    stats::ShardStats,
};

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

#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<OutFrame>,
    /// Bytes of `frames[0]` already written.
    head_sent: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
}

impl OutQueue {
    /// Queues one shared frame handle.
    ///
    /// Measured: 1.1 ns per subscriber to push one `OutFrame` clone into each of 10,000 queues
    /// with spare capacity, 6.3 ns into queues with none (the first push allocates the deque);
    /// medians (benches/fanout.rs, `cargo bench --bench fanout`, shared 2-core VM, 2026-11-21).
    #[inline]
    pub fn push(&mut self, frame: OutFrame) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    #[inline]
    pub fn bytes(&self) -> usize {
        self.bytes
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
    }

    /// Writes as much as the socket takes, `IOVECS_PER_WRITE` frames per `sendmsg`.
    /// `now_ns` (CLOCK_MONOTONIC, read once per round by the caller) times the deliveries.
    pub fn flush(&mut self, sock: BorrowedFd<'_>, now_ns: u64, stats: &mut ShardStats) -> Flush {
        loop {
            if self.frames.is_empty() {
                if self.frames.capacity() > OUTQ_KEEP_ENTRIES {
                    self.frames = VecDeque::new();
                }
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
                &frame.bytes()[self.head_sent..]
            } else {
                frame.bytes()
            };
            *slot = IoSlice::new(bytes);
            total += bytes.len();
            n += 1;
        }
        (n, total)
    }

    /// TLS: offers the next frames (up to `IOVECS_PER_WRITE`) to `sink`, rustls' plaintext
    /// writer, which returns how many bytes it took (encrypted into its own buffer). The frames
    /// taken leave the queue and count as delivered, but their bytes stay in [`Self::bytes`]
    /// (the slow-consumer bound) until [`Self::release`]: rustls still holds them.
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
        self.bytes = self.bytes.saturating_sub(n);
    }

    /// Releases the deque's allocation once it is empty and larger than what is kept.
    pub fn shrink_if_empty(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > OUTQ_KEEP_ENTRIES {
            self.frames = VecDeque::new();
        }
    }

    fn advance(&mut self, written: usize, now_ns: u64, stats: &mut ShardStats) {
        self.bytes -= written;
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
            let left = head.len() - self.head_sent;
            if written < left {
                self.head_sent += written;
                return;
            }
            written -= left;
            self.head_sent = 0;
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
