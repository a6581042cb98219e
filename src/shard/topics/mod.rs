//! The topics this shard owns: per topic its `seq` and `epoch`, its class (lane, policy,
//! history), its retained history, its recent `idem` keys and, in cluster mode, its view of the
//! broker's stream.
//!
//! **Lifetime.** A topic's state exists only while something needs it: a subscriber anywhere
//! whose pattern matches it, retained history (within its class's `history_size` and
//! `history_ttl_s`), `idem` keys still remembered (`cluster.idem_window_s`), or (cluster mode) a
//! broker fetch under way. Subscribing never creates it: a topic nothing was published to has
//! no state and no epoch (its position is `seq` 0, epoch 0). So the table grows with what
//! publishers do, never with what subscribers ask, and forgets what nobody needs: once idle,
//! a topic is dropped by the sweep (a bounded slice of the table per timer tick) or, when the
//! table is full, by the publish that needs its slot. A forgotten topic published to again
//! starts a new epoch at `seq` 1, which is what an epoch is for. In cluster mode a subscribe
//! asks the owner for the broker's position, which creates the state (`live`, `seq` 0 for a
//! topic nothing was published to yet): the sweep keeps that baseline while the topic has
//! subscribers (dropped, the next subscribe would fetch it again), and a full table reclaims it
//! like any idle topic.

use indexmap::IndexMap;

mod history;

pub(crate) use history::History;

use super::{idem::IdemWindow, interest::Interest, remote::RemoteWait};
use crate::{
    config::{Config, Delivery, Lane, SlowPolicy},
    frame::{
        DELIVERY_BATCHED, DELIVERY_IMMEDIATE, DELIVERY_THROTTLED, FrameClass, LANE_ALERT,
        LANE_DATA, LANE_PRIVATE, POLICY_CONFLATE, POLICY_DISCONNECT, POLICY_DROP_OLDEST,
    },
    limits::{TOPIC_RECLAIM_SCAN_MAX, TOPIC_SWEEP_PER_TICK},
};

/// Owner-side state of one topic.
#[derive(Debug)]
pub(crate) struct TopicState {
    pub(crate) seq: u64,
    /// Shards with a subscriber matching this topic, valid while `mask_gen == interest_gen`.
    pub(crate) mask: u64,
    pub(crate) mask_gen: u64,
    /// Random, drawn when this shard created the state; `seq` counts within it. 0 (cluster
    /// mode): not known yet, the broker's messages bring it.
    pub(crate) epoch: u64,
    /// New exact-topic subscribers first get the last message (`topics[].cache`).
    pub(crate) cache: bool,
    pub(crate) history: Option<Box<History>>,
    /// Lane and slow-consumer policy of this topic's frames (its class).
    pub(crate) frame_class: FrameClass,
    /// Recent `idem` keys (allocated on the first keyed publish).
    pub(crate) idem: Option<Box<IdemWindow>>,
    /// Cluster: `seq` is continuous with the broker's stream (set from a fetch; lost when no
    /// subscription of this node matches the topic any more).
    pub(crate) live: bool,
    /// Cluster: the history holds what the broker held when last fetched, without a hole.
    pub(crate) history_full: bool,
    /// Cluster: a history fetch under way, what waits for it.
    pub(crate) remote: Option<Box<RemoteWait>>,
}

impl TopicState {
    /// Whether nothing needs this state any more (see the module doc). `has_subscribers`
    /// is asked last: it may walk the interest trie. `keep_baseline`: a cluster topic nothing
    /// was published to yet, whose position the broker gave (`live`), still counts as needed
    /// while it has subscribers (the timer's sweep); without it (a full table reclaiming a
    /// slot) such a topic is idle.
    pub(crate) fn is_idle(
        &mut self,
        now_ns: u64,
        keep_baseline: bool,
        has_subscribers: impl FnOnce(&mut TopicState) -> bool,
    ) -> bool {
        if self.remote.is_some() {
            return false;
        }
        if let Some(h) = self.history.as_mut() {
            if h.retained_now(now_ns) > 0 {
                return false;
            }
        }
        if let Some(w) = self.idem.as_mut() {
            if !w.expire(now_ns) {
                return false;
            }
        }
        // Nothing published yet: nothing to lose, except in cluster mode the broker's
        // position, which only a fetch gives back. The sweep dropped such a baseline between
        // two subscribes, so each subscribe to a quiet topic fetched it again (97,245 fetches
        // for 100,000 subscribes on 6 nodes instead of one per topic and node).
        if self.seq == 0 && !(keep_baseline && self.live) {
            return true;
        }
        !has_subscribers(self)
    }

    /// The shards with a subscriber matching `topic`, recomputed only when interest changed.
    pub(crate) fn shard_mask(&mut self, interest: &Interest, topic: &str) -> u64 {
        if self.mask_gen != interest.generation() {
            self.mask = interest.mask_of(topic);
            self.mask_gen = interest.generation();
        }
        self.mask
    }
}

impl super::State {
    /// The owner's state of `topic`, created if needed (see [`Topics::ensure`]); a refusal is
    /// counted in `tickcast_topic_limit_rejects_total`.
    pub(crate) fn ensure_topic(&mut self, topic: &str) -> Result<&mut TopicState, Full> {
        let super::State {
            topics,
            interest,
            cfg,
            stats,
            ..
        } = self;
        let now_ns = crate::frame::monotonic_ns();
        let idle = |name: &str, st: &mut TopicState| {
            st.is_idle(now_ns, false, |st| st.shard_mask(interest, name) != 0)
        };
        let found = topics.ensure(topic, cfg, idle);
        if found.is_err() {
            stats.c.topic_limit_rejects += 1;
        }
        found
    }

    /// Timer: drops idle topics from a slice of the table (`TOPIC_SWEEP_PER_TICK`).
    pub(crate) fn sweep_topics(&mut self) {
        let super::State {
            topics, interest, ..
        } = self;
        let now_ns = crate::frame::monotonic_ns();
        topics.sweep(TOPIC_SWEEP_PER_TICK, |name, st| {
            st.is_idle(now_ns, true, |st| st.shard_mask(interest, name) != 0)
        });
    }
}

/// The table is full of topics that are needed (`limits.topics_per_shard_max`).
#[derive(Debug)]
pub(crate) struct Full;

/// The topic table of one shard.
#[derive(Debug)]
pub(crate) struct Topics {
    map: IndexMap<Box<str>, TopicState>,
    /// `limits.topics_per_shard_max`.
    max: usize,
    /// Where the next sweep (or reclaim scan) looks.
    cursor: usize,
    /// Topics dropped so far because nothing needed them any more.
    dropped: u64,
    /// Cluster mode: epochs come from the broker.
    cluster: bool,
}

impl Topics {
    pub(crate) fn new(cfg: &Config) -> Topics {
        Topics {
            map: IndexMap::new(),
            max: cfg.limits.topics_per_shard_max,
            cursor: 0,
            dropped: 0,
            cluster: cfg.cluster.engine != crate::config::Engine::Memory,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// A reloaded configuration (`reload.rs`): the table's bound, and each topic's class
    /// again (lane, slow-consumer policy, compression, cache, history bounds). A history that
    /// shrinks keeps its newest frames; one that grows keeps what it has and fills from the
    /// next publish; a class without history drops it. Frames already queued keep the class
    /// they were published with.
    pub(crate) fn configure(&mut self, cfg: &Config) {
        self.max = cfg.limits.topics_per_shard_max;
        for (name, state) in self.map.iter_mut() {
            let ClassOf { frame_class, class } = class_of(name, cfg);
            state.frame_class = frame_class;
            state.cache = class.is_some_and(|c| c.cache);
            match class.filter(|c| c.history_size > 0) {
                None => {
                    state.history = None;
                    state.history_full = false;
                }
                Some(c) => match &mut state.history {
                    Some(h) => {
                        // Cluster mode: a larger history may hold more than the broker gave
                        // the smaller one: fetch again before answering from it.
                        if c.history_size > h.capacity() {
                            state.history_full = false;
                        }
                        h.resize(c.history_size, c.history_ttl_s);
                    }
                    None => {
                        state.history =
                            Some(Box::new(History::new(c.history_size, c.history_ttl_s)));
                        // Cluster mode: nothing was kept, the broker's history is not ours.
                        state.history_full = false;
                    }
                },
            }
        }
    }

    /// Topics dropped so far because nothing needed them (`tickcast_topics_dropped_total`).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn get(&self, topic: &str) -> Option<&TopicState> {
        self.map.get(topic)
    }

    pub(crate) fn get_mut(&mut self, topic: &str) -> Option<&mut TopicState> {
        self.map.get_mut(topic)
    }

    pub(crate) fn contains(&self, topic: &str) -> bool {
        self.map.contains_key(topic)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Box<str>, &TopicState)> {
        self.map.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&Box<str>, &mut TopicState)> {
        self.map.iter_mut()
    }

    /// The state of `topic`, created (class, epoch, history) if there is none. At
    /// `limits.topics_per_shard_max`, up to `TOPIC_RECLAIM_SCAN_MAX` topics are examined and an
    /// idle one gives its slot; `Full` if none does. `idle` is [`TopicState::is_idle`] with the
    /// shard's interest.
    pub(crate) fn ensure(
        &mut self,
        topic: &str,
        cfg: &Config,
        idle: impl FnMut(&str, &mut TopicState) -> bool,
    ) -> Result<&mut TopicState, Full> {
        if let Some(i) = self.map.get_index_of(topic) {
            return Ok(&mut self.map[i]);
        }
        if self.map.len() >= self.max && self.sweep(TOPIC_RECLAIM_SCAN_MAX, idle) == 0 {
            return Err(Full);
        }
        let state = new_state(topic, cfg, self.cluster);
        let (i, _) = self.map.insert_full(topic.into(), state);
        Ok(&mut self.map[i])
    }

    /// Examines up to `budget` topics from where the last sweep stopped and drops the idle
    /// ones. Returns how many were dropped.
    pub(crate) fn sweep(
        &mut self,
        budget: usize,
        mut idle: impl FnMut(&str, &mut TopicState) -> bool,
    ) -> usize {
        let mut dropped = 0;
        for _ in 0..budget.min(self.map.len()) {
            if self.cursor >= self.map.len() {
                self.cursor = 0;
            }
            let (name, state) = self
                .map
                .get_index_mut(self.cursor)
                .expect("cursor within the table");
            if idle(name, state) {
                // The last entry moves into this slot: it is examined next.
                self.map.swap_remove_index(self.cursor);
                dropped += 1;
            } else {
                self.cursor += 1;
            }
        }
        self.dropped += dropped as u64;
        dropped
    }
}

/// What a topic's class (`[[topics]]`, first match wins) gives it.
struct ClassOf<'a> {
    frame_class: FrameClass,
    class: Option<&'a crate::config::TopicClass>,
}

fn class_of<'a>(topic: &str, cfg: &'a Config) -> ClassOf<'a> {
    let found = cfg
        .topics
        .iter()
        .enumerate()
        .find(|(_, c)| crate::pubsub::topic::matches(&c.pattern, topic));
    let deflate = match found {
        _ if !cfg.deflate.enabled => 0,
        Some((_, c)) => c.deflate_level.unwrap_or(cfg.deflate.level),
        None => cfg.deflate.level,
    };
    let frame_class = found.map_or(
        FrameClass {
            deflate,
            ..FrameClass::DATA
        },
        |(_, c)| FrameClass {
            delivery: match c.delivery {
                Delivery::Immediate => DELIVERY_IMMEDIATE,
                Delivery::Batched => DELIVERY_BATCHED,
                Delivery::Throttled => DELIVERY_THROTTLED,
            },
            pace_us: match c.delivery {
                Delivery::Immediate => 0,
                Delivery::Batched => (c.batch_window_ms * 1000).min(u32::MAX as u64) as u32,
                Delivery::Throttled => 1_000_000 / c.throttle_per_s.max(1),
            },
            lane: match c.lane {
                Lane::Alert => LANE_ALERT,
                Lane::Private => LANE_PRIVATE,
                Lane::Data => LANE_DATA,
            },
            policy: match c.slow_policy {
                SlowPolicy::Disconnect => POLICY_DISCONNECT,
                SlowPolicy::Conflate => POLICY_CONFLATE,
                SlowPolicy::DropOldest => POLICY_DROP_OLDEST,
            },
            deflate,
        },
    );
    ClassOf {
        frame_class,
        class: found.map(|(_, c)| c),
    }
}

/// A topic's state as first created: its class from `[[topics]]` (first match wins).
fn new_state(topic: &str, cfg: &Config, cluster: bool) -> TopicState {
    let ClassOf { frame_class, class } = class_of(topic, cfg);
    TopicState {
        seq: 0,
        mask: 0,
        mask_gen: u64::MAX,
        // Never 0: 0 stands for "no epoch yet". In cluster mode the broker's messages bring
        // the topic's epoch.
        epoch: if cluster { 0 } else { fastrand::u64(1..) },
        cache: class.is_some_and(|c| c.cache),
        history: class
            .filter(|c| c.history_size > 0)
            .map(|c| Box::new(History::new(c.history_size, c.history_ttl_s))),
        frame_class,
        idem: None,
        live: false,
        history_full: false,
        remote: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: usize) -> Config {
        let mut cfg = Config::default();
        cfg.limits.topics_per_shard_max = max;
        cfg
    }

    #[test]
    fn a_full_table_gives_an_idle_slot_or_refuses() {
        let cfg = cfg(3);
        let mut t = Topics::new(&cfg);
        for name in ["a", "b", "c"] {
            t.ensure(name, &cfg, |_, _| false).unwrap().seq = 1;
        }
        // Nothing idle: refused, nothing dropped.
        assert!(t.ensure("d", &cfg, |_, _| false).is_err());
        assert_eq!(t.len(), 3);
        // "b" is idle: it gives its slot.
        assert!(t.ensure("d", &cfg, |n, _| n == "b").is_ok());
        assert_eq!(t.len(), 3);
        assert!(t.contains("d") && !t.contains("b"));
        assert_eq!(t.dropped(), 1);
        // Existing topics are found whatever the fill.
        assert_eq!(t.ensure("a", &cfg, |_, _| false).unwrap().seq, 1);
    }

    #[test]
    fn the_sweep_visits_every_topic_in_turn() {
        let cfg = cfg(100);
        let mut t = Topics::new(&cfg);
        for i in 0..10 {
            t.ensure(&format!("t{i}"), &cfg, |_, _| false).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..5 {
            t.sweep(2, |n, _| {
                seen.push(n.to_string());
                false
            });
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 10, "{seen:?}");
        // Dropping everything in one sweep leaves an empty table.
        assert_eq!(t.sweep(100, |_, _| true), 10);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn idle_means_nothing_needs_it() {
        let cfg = cfg(10);
        let mut t = Topics::new(&cfg);
        let s = t.ensure("x", &cfg, |_, _| false).unwrap();
        assert!(s.is_idle(0, true, |_| true), "nothing published yet");
        // Cluster: the broker's position of a quiet topic is kept by the sweep while it has
        // subscribers, and given up when a full table needs the slot.
        s.live = true;
        assert!(
            !s.is_idle(0, true, |_| true),
            "a cluster baseline with subscribers"
        );
        assert!(
            s.is_idle(0, true, |_| false),
            "a cluster baseline without subscribers"
        );
        assert!(s.is_idle(0, false, |_| true), "reclaimed by a full table");
        s.live = false;
        s.seq = 3;
        assert!(!s.is_idle(0, false, |_| true), "subscribers");
        assert!(s.is_idle(0, false, |_| false));
        s.idem = Some(Box::new(IdemWindow::new(1_000)));
        s.idem.as_mut().unwrap().insert("k".into(), 3, 8, 10);
        assert!(
            !s.is_idle(500, false, |_| false),
            "an idem key within its window"
        );
        assert!(s.is_idle(2_000, false, |_| false), "the key expired");
    }
}
