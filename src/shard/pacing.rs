//! Delivery strategies other than `immediate` (docs/PROTOCOL.md "Delivery strategies").
//!
//! - `batched`: a frame is queued at once but its connection is written only when the class's
//!   window has passed (or sooner, if something else flushes it): several frames leave in one
//!   fuller write.
//! - `throttled`: per subscriber and topic at most `throttle_per_s` frames per second; a frame
//!   arriving sooner waits as the topic's *pending* frame, replaced by any newer one, and goes
//!   out when the interval has passed. Each frame carries its true `seq`: the subscriber sees
//!   the jump.
//!
//! One pacer task per shard runs every millisecond while anything waits (and sleeps
//! otherwise); connections and topics that use neither strategy never touch this code.

use std::{cmp::Reverse, collections::BinaryHeap, rc::Rc};

use super::{Shard, State, out::Offer};
use crate::frame::{DELIVERY_BATCHED, DELIVERY_THROTTLED, OutFrame};

/// How one frame is delivered (from its topic class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pacing {
    Immediate,
    Batched { window_us: u64 },
    Throttled { interval_us: u64 },
}

impl Pacing {
    pub(crate) fn of(frame: &OutFrame) -> Pacing {
        let class = frame.class();
        let pace_us = class.pace_us as u64;
        match class.delivery {
            DELIVERY_BATCHED => Pacing::Batched { window_us: pace_us },
            DELIVERY_THROTTLED => Pacing::Throttled {
                interval_us: pace_us,
            },
            _ => Pacing::Immediate,
        }
    }
}

/// One throttled topic of one connection.
#[derive(Debug)]
pub(crate) struct Slot {
    topic: Box<str>,
    /// Monotonic µs from which the next frame may go.
    next_us: u64,
    interval_us: u64,
    pending: Option<OutFrame>,
}

/// Monotonic microseconds (vDSO clock read; the shard's coarse ms clock would add up to a
/// millisecond to every window).
fn now_us() -> u64 {
    crate::frame::monotonic_ns() / 1000
}

/// Connections due for a write at a time (monotonic µs).
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    due: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Throttle slots per connection key.
    slots: std::collections::HashMap<u32, Vec<Slot>>,
    /// The heap went from empty to non-empty: `Shard::finish` wakes the pacer task.
    pub(crate) wake: bool,
}

impl Pacer {
    fn schedule(&mut self, at_us: u64, key: u32, epoch: u32) {
        if self.due.is_empty() {
            self.wake = true;
        }
        self.due.push(Reverse((at_us, key, epoch)));
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.due.is_empty()
    }
}

impl State {
    /// A batched frame was queued for `key`: write it when the window has passed.
    pub(crate) fn batch_later(&mut self, key: u32, window_us: u64) {
        let conn = &mut self.conns[key];
        if conn.is_dirty() || conn.paced {
            return;
        }
        conn.paced = true;
        let epoch = conn.epoch;
        let at = now_us() + window_us;
        self.pacer.schedule(at, key, epoch);
    }

    /// A throttled frame for `key`: sent now if the topic's interval has passed for this
    /// connection, else kept as the topic's pending frame (replacing an older one).
    pub(crate) fn throttle(&mut self, key: u32, frame: OutFrame, interval_us: u64) {
        let now = now_us();
        let epoch = self.conns[key].epoch;
        let slots = self.pacer.slots.entry(key).or_default();
        let topic = frame.topic();
        let i = match slots.iter().position(|s| &*s.topic == topic) {
            Some(i) => i,
            None => {
                slots.push(Slot {
                    topic: topic.into(),
                    next_us: 0,
                    interval_us,
                    pending: None,
                });
                slots.len() - 1
            }
        };
        let slot = &mut slots[i];
        // The newest frame's interval (a reload may have changed the class).
        slot.interval_us = interval_us;
        if now >= slot.next_us && slot.pending.is_none() {
            slot.next_us = now + interval_us;
            self.offer_now(key, frame, true);
            return;
        }
        if slot.pending.replace(frame).is_some() {
            self.stats.c.conflated += 1;
            self.conns[key].skipped += 1;
        } else {
            let at = slot.next_us.max(now);
            self.pacer.schedule(at, key, epoch);
        }
    }

    /// Queues `frame` for `key` through its lane's policy and (if `flush`) marks the
    /// connection for the next flush. False if the connection was closed as a slow consumer.
    pub(crate) fn offer_now(&mut self, key: u32, frame: OutFrame, flush: bool) -> bool {
        let bounds = self.bounds;
        let (conn, writes) = self
            .conns
            .get_mut_and_writes(key)
            .expect("a live connection");
        match conn.out.offer(frame, &bounds) {
            Offer::Queued => {}
            Offer::Conflated => {
                conn.skipped += 1;
                self.stats.c.conflated += 1;
            }
            Offer::Dropped(n) => {
                conn.skipped += n;
                self.stats.c.dropped_oldest += n as u64;
            }
            Offer::Discarded(n) => {
                conn.skipped += n;
                self.stats.c.dropped_oldest += n as u64;
                return true;
            }
            Offer::Slow => {
                self.slow_consumer(key);
                return false;
            }
        }
        if flush {
            writes.mark_dirty(key, conn);
        }
        true
    }

    /// Pacer tick: every connection whose time has come is written; due throttle slots send
    /// their pending frame.
    pub(crate) fn run_pacer(&mut self) {
        let now = now_us();
        while let Some(&Reverse((at, key, epoch))) = self.pacer.due.peek() {
            if at > now {
                break;
            }
            self.pacer.due.pop();
            let Some((conn, writes)) = self.conns.get_mut_and_writes(key) else {
                continue;
            };
            if conn.epoch != epoch {
                continue;
            }
            conn.paced = false;
            writes.mark_dirty(key, conn);
            self.release_throttled(key, now);
        }
    }

    fn release_throttled(&mut self, key: u32, now: u64) {
        let Some(slots) = self.pacer.slots.get_mut(&key) else {
            return;
        };
        let mut ready: Vec<OutFrame> = Vec::new();
        let mut next_due: Option<u64> = None;
        for s in slots.iter_mut() {
            if s.pending.is_none() {
                continue;
            }
            if now >= s.next_us {
                ready.extend(s.pending.take());
                s.next_us = now + s.interval_us;
            } else {
                next_due = Some(next_due.map_or(s.next_us, |d: u64| d.min(s.next_us)));
            }
        }
        let epoch = self.conns[key].epoch;
        if let Some(at) = next_due {
            self.pacer.schedule(at, key, epoch);
        }
        for frame in ready {
            self.offer_now(key, frame, true);
        }
    }

    /// `key` no longer subscribes to `pattern`: the throttle slots of topics no pattern it
    /// still has covers go, with their pending frames.
    pub(crate) fn forget_paced_pattern(&mut self, key: u32, pattern: &str) {
        let Some(slots) = self.pacer.slots.get_mut(&key) else {
            return;
        };
        let subs = &self.conns[key].subs;
        slots.retain(|s| {
            !crate::pubsub::topic::matches(pattern, &s.topic)
                || subs
                    .iter()
                    .any(|p| crate::pubsub::topic::matches(p, &s.topic))
        });
    }

    /// A connection is gone: its throttle slots go with it (heap entries die by epoch).
    pub(crate) fn forget_paced(&mut self, key: u32) {
        self.pacer.slots.remove(&key);
    }
}

/// The shard's pacer task: every millisecond while anything waits.
pub(crate) async fn pacer_task(shard: Rc<Shard>) {
    let tick = std::time::Duration::from_millis(1);
    loop {
        std::future::poll_fn(|cx| {
            if shard.st.borrow().pacer.is_idle() {
                shard.pacer_waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        monoio::time::sleep(tick).await;
        let mut st = shard.st.borrow_mut();
        st.run_pacer();
        shard.finish(st);
    }
}
