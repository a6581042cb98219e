//! The retained frames of one topic (`[[topics]] history_size`, `history_ttl_s`): the very
//! frames its owner encoded once and handed to subscribers (one `Arc` clone each), in `seq`
//! order without holes.

use std::collections::VecDeque;

use crate::frame::SharedFrame;

/// The retained frames of one topic.
#[derive(Debug)]
pub(crate) struct History {
    frames: VecDeque<SharedFrame>,
    max: usize,
    /// 0: no age bound.
    ttl_ns: u64,
}

impl History {
    pub(crate) fn new(max: usize, ttl_s: u64) -> History {
        History {
            frames: VecDeque::new(),
            max,
            ttl_ns: ttl_s * 1_000_000_000,
        }
    }

    /// Forgets every frame (the topic's sequence started over, or the history has a hole).
    pub(crate) fn clear(&mut self) {
        self.frames.clear();
    }

    /// New bounds (a reload): the newest frames that fit stay.
    pub(crate) fn resize(&mut self, max: usize, ttl_s: u64) {
        self.max = max;
        self.ttl_ns = ttl_s * 1_000_000_000;
        let excess = self.frames.len().saturating_sub(max);
        self.frames.drain(..excess);
    }

    pub(crate) fn capacity(&self) -> usize {
        self.max
    }

    /// `seq` of the oldest frame retained.
    pub(crate) fn first_seq(&self) -> Option<u64> {
        self.frames.front().map(|f| f.seq())
    }

    /// Puts `older` (oldest first, fetched from the broker) in front of the retained frames,
    /// keeping only the ones that continue them without a hole and fit.
    pub(crate) fn prepend(&mut self, older: Vec<SharedFrame>) {
        let mut next = self.first_seq();
        for f in older.into_iter().rev() {
            if self.frames.len() == self.max {
                break;
            }
            if next.is_some_and(|n| f.seq() + 1 != n) {
                if next.is_some_and(|n| f.seq() >= n) {
                    continue;
                }
                break;
            }
            next = Some(f.seq());
            self.frames.push_front(f);
        }
    }

    pub(crate) fn push(&mut self, frame: SharedFrame, now_ns: u64) {
        if self.frames.len() == self.max {
            self.frames.pop_front();
        }
        self.frames.push_back(frame);
        self.expire(now_ns);
    }

    fn expire(&mut self, now_ns: u64) {
        if self.ttl_ns == 0 {
            return;
        }
        while self
            .frames
            .front()
            .is_some_and(|f| f.published_ns() + self.ttl_ns < now_ns)
        {
            self.frames.pop_front();
        }
    }

    /// Frames with `seq > since`, oldest first, at most `bytes_max` bytes (the newest ones).
    pub(crate) fn after(&mut self, since: u64, now_ns: u64, bytes_max: usize) -> Vec<SharedFrame> {
        self.expire(now_ns);
        let Some(first) = self.frames.front().map(|f| f.seq()) else {
            return Vec::new();
        };
        let skip = since.saturating_sub(first - 1) as usize;
        let mut out: Vec<SharedFrame> = Vec::new();
        let mut bytes = 0;
        for f in self.frames.iter().skip(skip).rev() {
            bytes += f.len();
            if bytes > bytes_max {
                break;
            }
            out.push(f.clone());
        }
        out.reverse();
        out
    }

    /// Frames with `seq > since`, oldest first, at most `limit` of them and at most
    /// `bytes_max` bytes (`GET /v1/history`: the client pages on with the last `seq`).
    pub(crate) fn page(
        &mut self,
        since: u64,
        limit: usize,
        bytes_max: usize,
        reverse: bool,
        now_ns: u64,
    ) -> Vec<SharedFrame> {
        self.expire(now_ns);
        let mut bytes = 0;
        let mut fits = |f: &&SharedFrame| {
            bytes += f.len();
            bytes <= bytes_max
        };
        if reverse {
            // Newest first, from before `since` (0: from the newest), as Centrifugo pages
            // backwards.
            let before = self
                .frames
                .iter()
                .rev()
                .filter(|f| since == 0 || f.seq() < since);
            before.take(limit).take_while(&mut fits).cloned().collect()
        } else {
            let after = self.frames.iter().filter(|f| f.seq() > since);
            after.take(limit).take_while(&mut fits).cloned().collect()
        }
    }

    /// Frames retained now.
    pub(crate) fn retained(&self) -> usize {
        self.frames.len()
    }

    /// Frames retained once those past `history_ttl_s` at `now_ns` are gone.
    pub(crate) fn retained_now(&mut self, now_ns: u64) -> usize {
        self.expire(now_ns);
        self.frames.len()
    }

    pub(crate) fn last(&mut self, now_ns: u64) -> Option<SharedFrame> {
        self.expire(now_ns);
        self.frames.back().cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_data_frame;
    use std::sync::Arc;

    fn frame(seq: u64, ns: u64) -> SharedFrame {
        Arc::new(encode_data_frame("t", seq, 0, b"1", ns))
    }

    #[test]
    fn ring_keeps_the_last_frames_in_order() {
        let mut h = History::new(3, 0);
        for seq in 1..=5 {
            h.push(frame(seq, seq), seq);
        }
        let seqs = |v: Vec<SharedFrame>| v.iter().map(|f| f.seq()).collect::<Vec<_>>();
        assert_eq!(seqs(h.after(0, 5, usize::MAX)), [3, 4, 5]);
        assert_eq!(seqs(h.after(3, 5, usize::MAX)), [4, 5]);
        assert_eq!(seqs(h.after(5, 5, usize::MAX)), Vec::<u64>::new());
        // A byte budget keeps the newest frames.
        let one = frame(1, 1).len();
        assert_eq!(seqs(h.after(0, 5, 2 * one)), [4, 5]);
    }

    #[test]
    fn prepend_takes_only_what_continues_the_history_and_fits() {
        let seqs = |h: &History| h.frames.iter().map(|f| f.seq()).collect::<Vec<_>>();
        let mut h = History::new(5, 0);
        h.push(frame(10, 1), 1);
        h.push(frame(11, 1), 1);
        // 9 and 8 continue it; 11 is already there; the hole at 7 ends it (6 is not taken).
        h.prepend([6, 8, 9, 11].map(|s| frame(s, 1)).to_vec());
        assert_eq!(seqs(&h), [8, 9, 10, 11]);
        // Room for one more: the newest that continues it.
        h.prepend([5, 6, 7].map(|s| frame(s, 1)).to_vec());
        assert_eq!(seqs(&h), [7, 8, 9, 10, 11]);
        let mut empty = History::new(2, 0);
        empty.prepend([1, 2, 3].map(|s| frame(s, 1)).to_vec());
        assert_eq!(seqs(&empty), [2, 3]);
    }

    #[test]
    fn age_bound_expires_old_frames() {
        let mut h = History::new(10, 1);
        h.push(frame(1, 1), 1);
        h.push(frame(2, 2_000_000_000), 2_000_000_000);
        assert_eq!(h.len(), 1, "frame 1 is over a second old");
        assert!(h.last(10_000_000_000).is_none(), "everything expired");
    }
}
