//! Publish deduplication: a publish may carry an `idem` key; the topic's owner remembers the
//! last `limits.idem_keys_per_topic` keys of each topic with the `seq` they got, each for
//! `cluster.idem_window_s`, so a publisher that retries after a lost ack gets the original
//! `seq` back (`"duplicate": true`) instead of publishing twice. The window is per topic,
//! bounded by count and by age: a retry must come before that many other keyed publishes to
//! the same topic, and within the time window (the same one the cluster brokers apply).

use std::collections::{HashMap, VecDeque};

#[derive(Debug)]
pub(crate) struct IdemWindow {
    /// Keys in arrival order, with when they were remembered (monotonic ns).
    order: VecDeque<(Box<str>, u64)>,
    seqs: HashMap<Box<str>, u64>,
    ttl_ns: u64,
}

impl IdemWindow {
    pub(crate) fn new(ttl_ns: u64) -> IdemWindow {
        IdemWindow {
            order: VecDeque::new(),
            seqs: HashMap::new(),
            ttl_ns,
        }
    }

    /// The `seq` an earlier publish with `key` got, if it is still remembered.
    pub(crate) fn get(&mut self, key: &str, now_ns: u64) -> Option<u64> {
        self.expire(now_ns);
        self.seqs.get(key).copied()
    }

    /// Remembers `key` -> `seq`, forgetting the oldest key beyond `max`.
    pub(crate) fn insert(&mut self, key: Box<str>, seq: u64, max: usize, now_ns: u64) {
        // `while`: a reload may have lowered `max` below what is held.
        while self.order.len() >= max.max(1) {
            let Some((old, _)) = self.order.pop_front() else {
                break;
            };
            self.seqs.remove(&old);
        }
        self.seqs.insert(key.clone(), seq);
        self.order.push_back((key, now_ns));
    }

    /// Forgets the keys older than the window; true if none is left.
    pub(crate) fn expire(&mut self, now_ns: u64) -> bool {
        while let Some((key, at)) = self.order.front() {
            if at.saturating_add(self.ttl_ns) > now_ns {
                break;
            }
            self.seqs.remove(key);
            self.order.pop_front();
        }
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_keys_only() {
        let mut w = IdemWindow::new(u64::MAX);
        for i in 0..5u64 {
            w.insert(format!("k{i}").into(), i + 1, 3, 0);
        }
        assert_eq!(w.get("k0", 0), None);
        assert_eq!(w.get("k1", 0), None);
        assert_eq!(w.get("k2", 0), Some(3));
        assert_eq!(w.get("k4", 0), Some(5));
        assert_eq!(w.order.len(), 3);
        assert_eq!(w.seqs.len(), 3);
    }

    #[test]
    fn keys_expire_after_the_window() {
        let mut w = IdemWindow::new(100);
        w.insert("a".into(), 1, 10, 0);
        w.insert("b".into(), 2, 10, 50);
        assert_eq!(w.get("a", 99), Some(1));
        assert_eq!(w.get("a", 100), None, "a is 100 ns old");
        assert_eq!(w.get("b", 100), Some(2));
        assert!(!w.expire(149));
        assert!(w.expire(150), "nothing left");
    }
}
