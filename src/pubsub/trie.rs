//! CONTRACT STUB: implemented on the pubsub branch.

/// Map from valid patterns to values of `V`.
#[derive(Debug)]
pub struct PatternTrie<V> {
    _v: std::marker::PhantomData<V>,
}

impl<V> Default for PatternTrie<V> {
    fn default() -> Self {
        Self { _v: std::marker::PhantomData }
    }
}

impl<V: Default> PatternTrie<V> {
    /// The value for `pattern`, inserted as `V::default()` if absent.
    pub fn entry(&mut self, pattern: &str) -> &mut V {
        let _ = pattern;
        todo!()
    }
    pub fn get(&self, pattern: &str) -> Option<&V> {
        let _ = pattern;
        todo!()
    }
    pub fn get_mut(&mut self, pattern: &str) -> Option<&mut V> {
        let _ = pattern;
        todo!()
    }
    /// Removes `pattern`, pruning nodes left empty.
    pub fn remove(&mut self, pattern: &str) -> Option<V> {
        let _ = pattern;
        todo!()
    }
    /// Calls `f` once for the value of every stored pattern matching the concrete `topic`.
    pub fn for_each_match(&self, topic: &str, f: impl FnMut(&V)) {
        let _ = (topic, f);
        todo!()
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
