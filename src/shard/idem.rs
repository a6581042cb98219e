//! Publish deduplication: a publish may carry an `idem` key; the topic's owner remembers the
//! last `limits.idem_keys_per_topic` keys of each topic with the `seq` they got, so a publisher
//! that retries after a lost ack gets the original `seq` back (`"duplicate": true`) instead of
//! publishing twice. The window is per topic and bounded by count: a retry must come before
//! that many other keyed publishes to the same topic.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
pub(crate) struct IdemWindow {
    order: VecDeque<Box<str>>,
    seqs: HashMap<Box<str>, u64>,
}

impl IdemWindow {
    /// The `seq` an earlier publish with `key` got, if it is still remembered.
    pub(crate) fn get(&self, key: &str) -> Option<u64> {
        self.seqs.get(key).copied()
    }

    /// Remembers `key` -> `seq`, forgetting the oldest key beyond `max`.
    pub(crate) fn insert(&mut self, key: Box<str>, seq: u64, max: usize) {
        if self.order.len() >= max {
            if let Some(old) = self.order.pop_front() {
                self.seqs.remove(&old);
            }
        }
        self.seqs.insert(key.clone(), seq);
        self.order.push_back(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_keys_only() {
        let mut w = IdemWindow::default();
        for i in 0..5u64 {
            w.insert(format!("k{i}").into(), i + 1, 3);
        }
        assert_eq!(w.get("k0"), None);
        assert_eq!(w.get("k1"), None);
        assert_eq!(w.get("k2"), Some(3));
        assert_eq!(w.get("k4"), Some(5));
        assert_eq!(w.order.len(), 3);
        assert_eq!(w.seqs.len(), 3);
    }
}
