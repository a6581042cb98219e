//! A map from subscription patterns to values, matched against concrete topics without scanning
//! every pattern.
//!
//! # Layout
//!
//! - Exact (wildcard-free) patterns live in one hash map keyed by the whole pattern string. A
//!   topic whose subscribers all used exact patterns (the common case for market data, where
//!   clients subscribe to `md.venue.SYMBOL.channel`) costs one hash of the topic and one probe.
//! - Wildcard patterns live in a segment trie. Each node has literal children in a hash map
//!   (boxed, and absent in leaves, which are most nodes), at most one `*` child, a `here` slot for a pattern ending at the node, and a `rest` slot for
//!   the pattern `<path to node>.>` (or `>` alone at the root). The trie is only walked when it
//!   holds at least one pattern.
//!
//! # Invariants
//!
//! - Every pattern is stored in exactly one place: the exact map if [`is_wildcard`] says no,
//!   otherwise exactly one `here`/`rest` slot of the trie, at the path given by its segments.
//! - No trie node other than the root is empty (no value, no children): [`PatternTrie::remove`]
//!   prunes nodes on the way back up, and maps that become sparse are shrunk, so memory is
//!   returned after unsubscribes. After removing everything the trie owns no heap memory.
//! - `len` counts stored patterns in O(1).
//!
//! # Matching cost
//!
//! [`PatternTrie::for_each_match`] costs one SipHash probe of the whole topic in the exact map,
//! plus, only if wildcard patterns exist, a walk that at each depth `d` does one literal-child
//! probe (hash of one segment) per node reached at depth `d - 1`, follows the `*` child, and
//! reports the `rest` slot. The nodes reached at each depth are at most `2^d` (literal and `*`
//! branch), bounded in practice by the number of distinct wildcard shapes, and never by the
//! number of patterns or subscribers; each matching pattern is visited exactly once, because
//! every pattern has a unique path and the walk takes each branch at most once per node.
//!
//! Measured on the shared 2-core dev box (release build with thin LTO, std SipHash, through
//! [`LocalIndex::for_each_subscriber`](super::index::LocalIndex::for_each_subscriber), in a
//! throwaway harness that compiles these files; `tests::timing_for_each_match` is an
//! `#[ignore]`d trie-only variant for the perf team to run under `--release`):
//! - 6,000 exact patterns `md.<venue>.SYM<n>-USDT.<channel>`, 3 subscribers each: about 30 ns
//!   per published topic, subscriber callbacks included.
//! - The same plus 9 wildcard patterns sharing the `md.<venue>` prefix (`md.<venue>.*.trades`,
//!   `md.<venue>.>`, `md.*.SYM7-USDT.*`): about 127 ns. The difference is almost entirely the
//!   SipHash of one segment per literal probe along the walk (5 probes for such a topic).
//! - benches/pubsub.rs (`cargo bench --bench pubsub`, shared 2-core VM, 2026-11-21), medians against 100,000
//!   patterns: 100,000 exact ones, 13 ns for a hit and 10 ns for a miss; 99,000 exact plus 1,000
//!   wildcards (`md.*.SYM<k>.trades`, `md.binance.SYM<k>.>`, `md.*.SYM<k>.*`, `md.venue<k>.>`),
//!   77 ns for a topic matching only its exact pattern and 92 ns (23 ns per match) for one
//!   matching four patterns.
//!
//! SipHash (std `RandomState`) is kept on purpose: pattern and topic strings come from clients,
//! so a keyed hash guards the maps against collision flooding. A faster hasher would mainly
//! speed up the wildcard walk; none is a direct dependency, so it was not measured.
//!
//! # Input contract
//!
//! Patterns passed to [`PatternTrie::entry`] must be valid (see
//! [`validate_pattern`](super::topic::validate_pattern)); this is `debug_assert`ed. `get`,
//! `get_mut`, `remove` and `for_each_match` accept any string and never panic: they only walk
//! existing nodes. Matching results are specified for valid topics only (see
//! [`validate_topic`](super::topic::validate_topic)); for a valid topic they agree with
//! [`matches`](super::topic::matches).

use std::collections::HashMap;
use std::hash::Hash;

/// Map from valid patterns to values of `V`.
#[derive(Debug)]
pub struct PatternTrie<V> {
    /// Wildcard-free patterns, keyed by the whole pattern (which equals the only topic they match).
    exact: HashMap<Box<str>, V>,
    /// Root of the wildcard-pattern trie. It corresponds to zero consumed segments, so its `here`
    /// slot is never used (a valid pattern has at least one segment).
    root: Node<V>,
    /// Number of values stored in the trie (`here` and `rest` slots).
    wildcard_len: usize,
}

#[derive(Debug)]
struct Node<V> {
    /// Children for literal segments; `None` instead of an empty map, because most nodes are
    /// leaves and an inline empty `HashMap` would cost 48 bytes in each of them. Never
    /// `Some(empty)`.
    #[expect(
        clippy::box_collection,
        reason = "an 8-byte pointer instead of a 48-byte inline map in every leaf; measured 275 -> \
                  182 bytes per unique wildcard pattern"
    )]
    literals: Option<Box<HashMap<Box<str>, Node<V>>>>,
    /// Child for a `*` segment.
    star: Option<Box<Node<V>>>,
    /// Value of the pattern whose last segment leads to this node.
    here: Option<V>,
    /// Value of the pattern `<path to this node>.>`.
    rest: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            literals: None,
            star: None,
            here: None,
            rest: None,
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.here.is_none() && self.rest.is_none() && self.star.is_none() && self.literals.is_none()
    }

    fn literal(&self, seg: &str) -> Option<&Node<V>> {
        self.literals.as_ref()?.get(seg)
    }

    fn literal_mut(&mut self, seg: &str) -> Option<&mut Node<V>> {
        self.literals.as_mut()?.get_mut(seg)
    }

    fn literal_or_insert(&mut self, seg: &str) -> &mut Node<V> {
        let map = self.literals.get_or_insert_with(Box::default);
        // Probing first avoids allocating the owned key when the child exists.
        if !map.contains_key(seg) {
            map.insert(seg.into(), Node::default());
        }
        map.get_mut(seg).expect("literal child was just ensured")
    }

    fn remove_literal(&mut self, seg: &str) {
        if let Some(map) = self.literals.as_mut() {
            map.remove(seg);
            if map.is_empty() {
                self.literals = None;
            } else {
                shrink_if_sparse(map);
            }
        }
    }

    fn literal_children(&self) -> impl Iterator<Item = (&str, &Node<V>)> {
        self.literals
            .iter()
            .flat_map(|m| m.iter())
            .map(|(k, v)| (&**k, v))
    }
}

impl<V> Default for PatternTrie<V> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            root: Node::default(),
            wildcard_len: 0,
        }
    }
}

/// Whether `pattern` is stored in the wildcard trie: some segment is exactly `*`, or the last
/// segment is exactly `>`. For a valid pattern this is `PatternKind::Wildcard`.
pub fn is_wildcard(pattern: &str) -> bool {
    let mut segs = pattern.split('.').peekable();
    while let Some(seg) = segs.next() {
        if seg == "*" || (seg == ">" && segs.peek().is_none()) {
            return true;
        }
    }
    false
}

/// Splits off the first segment: `("a", Some("b.c"))` for `"a.b.c"`, `("a", None)` for `"a"`.
#[inline]
fn split_first(s: &str) -> (&str, Option<&str>) {
    match s.split_once('.') {
        Some((seg, rest)) => (seg, Some(rest)),
        None => (s, None),
    }
}

/// Gives memory back once a map is mostly empty. Shrinking to twice the length only when the
/// length drops below a quarter of the capacity keeps the rehash cost amortised O(1) per
/// removal, and an empty map frees its table entirely.
fn shrink_if_sparse<K: Eq + Hash, T>(map: &mut HashMap<K, T>) {
    if map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

impl<V: Default> PatternTrie<V> {
    /// The value for `pattern`, inserted as `V::default()` if absent.
    ///
    /// `pattern` must be valid (`debug_assert`ed). An existing exact pattern costs two hash
    /// probes and no allocation; a new one allocates its key.
    pub fn entry(&mut self, pattern: &str) -> &mut V {
        debug_assert!(
            super::topic::validate_pattern(pattern).is_ok(),
            "PatternTrie::entry with invalid pattern {pattern:?}"
        );
        if !is_wildcard(pattern) {
            // `HashMap::entry` needs an owned key, which would allocate on every hit; probing
            // first keeps re-subscribing to a popular pattern allocation-free.
            if !self.exact.contains_key(pattern) {
                self.exact.insert(pattern.into(), V::default());
            }
            return self
                .exact
                .get_mut(pattern)
                .expect("exact pattern was just ensured");
        }
        let mut node = &mut self.root;
        let mut rest = pattern;
        loop {
            let (seg, next) = split_first(rest);
            if seg == ">" && next.is_none() {
                if node.rest.is_none() {
                    self.wildcard_len += 1;
                }
                return node.rest.get_or_insert_with(V::default);
            }
            node = if seg == "*" {
                node.star.get_or_insert_with(Box::default)
            } else {
                node.literal_or_insert(seg)
            };
            match next {
                Some(n) => rest = n,
                None => {
                    if node.here.is_none() {
                        self.wildcard_len += 1;
                    }
                    return node.here.get_or_insert_with(V::default);
                }
            }
        }
    }

    pub fn get(&self, pattern: &str) -> Option<&V> {
        if !is_wildcard(pattern) {
            return self.exact.get(pattern);
        }
        let mut node = &self.root;
        let mut rest = pattern;
        loop {
            let (seg, next) = split_first(rest);
            if seg == ">" && next.is_none() {
                return node.rest.as_ref();
            }
            node = if seg == "*" {
                node.star.as_deref()?
            } else {
                node.literal(seg)?
            };
            match next {
                Some(n) => rest = n,
                None => return node.here.as_ref(),
            }
        }
    }

    pub fn get_mut(&mut self, pattern: &str) -> Option<&mut V> {
        if !is_wildcard(pattern) {
            return self.exact.get_mut(pattern);
        }
        let mut node = &mut self.root;
        let mut rest = pattern;
        loop {
            let (seg, next) = split_first(rest);
            if seg == ">" && next.is_none() {
                return node.rest.as_mut();
            }
            node = if seg == "*" {
                node.star.as_deref_mut()?
            } else {
                node.literal_mut(seg)?
            };
            match next {
                Some(n) => rest = n,
                None => return node.here.as_mut(),
            }
        }
    }

    /// Removes `pattern`, pruning nodes left empty.
    pub fn remove(&mut self, pattern: &str) -> Option<V> {
        if !is_wildcard(pattern) {
            let removed = self.exact.remove(pattern);
            if removed.is_some() {
                shrink_if_sparse(&mut self.exact);
            }
            return removed;
        }
        let removed = remove_in(&mut self.root, pattern);
        if removed.is_some() {
            self.wildcard_len -= 1;
        }
        removed
    }

    /// Calls `f` once for the value of every stored pattern matching the concrete `topic`.
    ///
    /// The order is unspecified. See the module docs for the cost.
    ///
    /// Measured against 100,000 patterns: 13 ns for an exact hit with no wildcards stored,
    /// 77 ns (1 match) to 92 ns (4 matches) with 1,000 wildcard patterns among them, medians
    /// (benches/pubsub.rs, `cargo bench --bench pubsub`, shared 2-core VM, 2026-11-21).
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&V)) {
        if let Some(v) = self.exact.get(topic) {
            f(v);
        }
        if self.wildcard_len != 0 {
            walk(&self.root, topic, &mut f);
        }
    }

    /// Calls `f` once for every stored pattern and its value, in unspecified order.
    ///
    /// Wildcard patterns are rebuilt from the trie path into one reused buffer, so this allocates
    /// at most once. Meant for rare whole-table work (resynchronising interest with other shards,
    /// diagnostics), not for the publish path.
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        for (pattern, v) in &self.exact {
            f(pattern, v);
        }
        if self.wildcard_len != 0 {
            let mut buf = String::with_capacity(super::topic::TOPIC_BYTES_MAX);
            visit(&self.root, 0, &mut buf, &mut f);
        }
    }

    /// Number of stored patterns, O(1).
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Trie nodes below the root (for tests that check pruning).
    #[cfg(test)]
    pub(crate) fn node_count(&self) -> usize {
        fn count<V>(node: &Node<V>) -> usize {
            node.literal_children()
                .map(|(_, c)| 1 + count(c))
                .sum::<usize>()
                + node.star.as_deref().map_or(0, |c| 1 + count(c))
        }
        count(&self.root)
    }

    /// Heap capacity held by the maps (for tests that check memory is returned).
    #[cfg(test)]
    pub(crate) fn map_capacity(&self) -> usize {
        fn cap<V>(node: &Node<V>) -> usize {
            node.literals.as_ref().map_or(0, |m| m.capacity())
                + node.literal_children().map(|(_, c)| cap(c)).sum::<usize>()
                + node.star.as_deref().map_or(0, cap)
        }
        self.exact.capacity() + cap(&self.root)
    }
}

/// Removes the pattern `pattern` (the part below `node`) from the subtree at `node`, pruning
/// children left empty. Recursion depth is the pattern's segment count (at most 16 when valid).
fn remove_in<V>(node: &mut Node<V>, pattern: &str) -> Option<V> {
    let (seg, next) = split_first(pattern);
    if seg == ">" && next.is_none() {
        return node.rest.take();
    }
    let is_star = seg == "*";
    let child = if is_star {
        node.star.as_deref_mut()?
    } else {
        node.literal_mut(seg)?
    };
    let removed = match next {
        None => child.here.take(),
        Some(n) => remove_in(child, n),
    }?;
    if child.is_empty() {
        if is_star {
            node.star = None;
        } else {
            node.remove_literal(seg);
        }
    }
    Some(removed)
}

/// Reports every pattern below `node` matching `topic` (the unconsumed, non-empty part of the
/// topic). Recursion depth is bounded by the trie depth, whatever the topic.
fn walk<V, F: FnMut(&V)>(node: &Node<V>, topic: &str, f: &mut F) {
    // `>` swallows the one or more segments still in `topic`.
    if let Some(v) = &node.rest {
        f(v);
    }
    let (seg, next) = split_first(topic);
    // A node without literal children answers without hashing, so wildcard-only levels stay
    // cheap.
    let literal = node.literal(seg);
    for child in [literal, node.star.as_deref()].into_iter().flatten() {
        match next {
            None => {
                if let Some(v) = &child.here {
                    f(v);
                }
            }
            Some(n) => walk(child, n, f),
        }
    }
}

/// Depth-first enumeration for [`PatternTrie::for_each`]; `buf` holds the path to `node`,
/// which is `depth` segments long.
fn visit<V, F: FnMut(&str, &V)>(node: &Node<V>, depth: usize, buf: &mut String, f: &mut F) {
    let push = |buf: &mut String, seg: &str| {
        if depth > 0 {
            buf.push('.');
        }
        buf.push_str(seg);
    };
    let len = buf.len();
    if let Some(v) = &node.here {
        f(buf, v);
    }
    if let Some(v) = &node.rest {
        push(buf, ">");
        f(buf, v);
        buf.truncate(len);
    }
    for (seg, child) in node.literal_children() {
        push(buf, seg);
        visit(child, depth + 1, buf, f);
        buf.truncate(len);
    }
    if let Some(child) = node.star.as_deref() {
        push(buf, "*");
        visit(child, depth + 1, buf, f);
        buf.truncate(len);
    }
}

#[cfg(test)]
mod tests;
