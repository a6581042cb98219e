//! Rate limits as GCRA (the generic cell rate algorithm): a token bucket kept as one number,
//! the *theoretical arrival time* (TAT) of the next conforming event. A per-connection limit is
//! one `u64` in the connection; the per-IP connect limit is one `AtomicU64` per hashed bucket,
//! shared by all shards without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// `rate` events per second with bursts of `burst` events. `rate == 0` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Microseconds between events at the sustained rate (0 = unlimited).
    interval_us: u64,
    /// How far ahead of `now` the TAT may run: `interval × (burst - 1)`.
    tolerance_us: u64,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate {
        interval_us: 0,
        tolerance_us: 0,
    };

    pub fn new(per_s: u32, burst: u32) -> Rate {
        if per_s == 0 {
            return Rate::UNLIMITED;
        }
        let interval_us = (1_000_000 / per_s as u64).max(1);
        Rate {
            interval_us,
            tolerance_us: interval_us * (burst.max(1) as u64 - 1),
        }
    }

    pub fn is_unlimited(self) -> bool {
        self.interval_us == 0
    }

    /// One event at `now_us`: the new TAT if it conforms, `None` if it is over the limit.
    #[inline]
    pub fn check(self, tat_us: u64, now_us: u64) -> Option<u64> {
        if self.is_unlimited() {
            return Some(tat_us);
        }
        let tat = tat_us.max(now_us);
        if tat - now_us > self.tolerance_us {
            return None;
        }
        Some(tat + self.interval_us)
    }

    /// Microseconds until the next event would conform (for `Retry-After`).
    pub fn wait_us(self, tat_us: u64, now_us: u64) -> u64 {
        tat_us.saturating_sub(now_us + self.tolerance_us)
    }

    /// [`Rate::check`] on a shared TAT; true if the event conforms.
    pub fn check_shared(self, tat: &AtomicU64, now_us: u64) -> bool {
        if self.is_unlimited() {
            return true;
        }
        let mut cur = tat.load(Ordering::Relaxed);
        loop {
            let Some(next) = self.check(cur, now_us) else {
                return false;
            };
            match tat.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let r = Rate::new(20, 40);
        let mut tat = 0;
        let now = 1_000_000;
        for i in 0..40 {
            tat = r
                .check(tat, now)
                .unwrap_or_else(|| panic!("event {i} of the burst"));
        }
        assert_eq!(r.check(tat, now), None, "41st event in the same instant");
        // 50 ms later exactly one more conforms.
        let later = now + 50_000;
        tat = r.check(tat, later).expect("one token refilled");
        assert_eq!(r.check(tat, later), None);
        assert!(r.wait_us(tat, later) > 0);
    }

    #[test]
    fn idle_time_refills_at_most_the_burst() {
        let r = Rate::new(10, 3);
        let mut tat = 0;
        let now = 10_000_000_000;
        for _ in 0..3 {
            tat = r.check(tat, now).unwrap();
        }
        assert_eq!(r.check(tat, now), None);
    }

    #[test]
    fn unlimited_always_conforms() {
        let r = Rate::new(0, 0);
        assert!(r.is_unlimited());
        assert_eq!(r.check(5, 0), Some(5));
        assert!(r.check_shared(&AtomicU64::new(0), 0));
    }

    #[test]
    fn shared_counter_enforces_the_same_limit() {
        let r = Rate::new(1, 5);
        let tat = AtomicU64::new(0);
        let ok = (0..10).filter(|_| r.check_shared(&tat, 1_000_000)).count();
        assert_eq!(ok, 5);
    }
}
