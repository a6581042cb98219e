//! The connections part of a shard: its slab of [`Conn`]s and the bookkeeping that follows
//! them. Fields are private; the invariants live here:
//!
//! - A connection enters only through [`Conns::insert`] (numbered, given its epoch, holding a
//!   handshake slot) and leaves only through [`Conns::remove`] (called by `remove_conn`, the
//!   one exit). The handshake count changes only there and in [`Conns::end_handshake`]: it is
//!   the number of connections that hold a slot.
//! - A connection is put on the dirty list once until it is written: [`Writes::mark_dirty`]
//!   lists it only if its `dirty` flag was clear, and writing it clears the flag. The flusher
//!   takes the list ([`Conns::take_dirty`]) and skips keys whose connection is gone or was
//!   written meanwhile (a key already given to a new connection that is dirty itself is
//!   flushed: harmless, that connection had bytes to write).
//! - A drain task is asked for at most once per blocked socket ([`Writes::blocked`]).
//! - A paused reader's waker is kept only while its connection is paused
//!   ([`Conns::wait_unpaused`]); [`Conns::unpause`] moves it to the wakers `Shard::finish`
//!   wakes once the section ends ([`Conns::take_unpaused`]).
//!
//! What the part knows nothing of (subscriptions, users, recovery, pacing, statistics, the
//! process-wide counts) is released by `State::remove_conn`, which borrows the other parts.

use std::{collections::HashMap, ops, rc::Rc, task::Waker};

use monoio::net::TcpStream;
use slab::Slab;

use super::{Conn, Phase};

/// Every connection of the shard, by slab key (`u32` everywhere in the shard).
#[derive(Debug)]
pub struct Conns {
    slots: Slots,
    /// Connections holding a handshake slot (`limits.handshakes_per_shard_max`).
    handshakes: usize,
    /// The last connection number given (`Conn::no`: the `conn` id is `<shard>-<no>`).
    last_no: u64,
    /// Fan-out round stamp: a connection matched twice in one round gets the frame once.
    round: u64,
    writes: Writes,
    /// Reader tasks of paused connections, by connection (`conn::write`).
    pause_wakers: HashMap<u32, Waker>,
    /// Reader tasks unpaused in the current section, woken when it ends (`Shard::finish`).
    unpaused: Vec<Waker>,
}

/// The connections alone, by key: lookups only (they enter and leave through [`Conns`]).
#[derive(Debug)]
pub struct Slots(Slab<Conn>);

/// What queuing frames leaves for `Shard::finish`: the connections the flusher is to write and
/// the blocked sockets that need a drain task. Borrowed next to one connection with
/// [`Conns::get_mut_and_writes`], so a loop that queues frames looks each connection up once.
#[derive(Debug, Default)]
pub struct Writes {
    /// Connections with frames queued since the flusher last ran.
    dirty: Vec<u32>,
    /// Connections that found their socket full and need a drain task: (key, epoch, socket).
    need_drain: Vec<(u32, u32, Rc<TcpStream>)>,
}

impl Writes {
    /// `conn` (slab key `key`) has frames to write: listed for the flusher, once until it runs.
    #[inline]
    pub fn mark_dirty(&mut self, key: u32, conn: &mut Conn) {
        if !std::mem::replace(&mut conn.dirty, true) {
            self.dirty.push(key);
        }
    }

    /// `conn` (slab key `key`) found its socket full: it waits for POLLOUT in a drain task,
    /// started by `Shard::finish` unless one already runs.
    pub fn blocked(&mut self, key: u32, conn: &mut Conn) {
        conn.write_blocked = true;
        if !conn.drain_task {
            conn.drain_task = true;
            self.need_drain.push((key, conn.epoch, conn.stream.clone()));
        }
    }
}

impl Conns {
    /// Room for `capacity` connections (a shard's share of `limits.connections_max`), reserved
    /// once: the pages are only touched (and only count in RSS) as connections arrive. The slab
    /// moves only if SO_REUSEPORT gives this shard more than its share.
    pub fn with_capacity(capacity: usize) -> Conns {
        Conns {
            slots: Slots(Slab::with_capacity(capacity)),
            handshakes: 0,
            last_no: 0,
            round: 0,
            writes: Writes::default(),
            pause_wakers: HashMap::new(),
            unpaused: Vec::new(),
        }
    }

    /// A newly accepted connection: numbered, given a fresh epoch, holding a handshake slot
    /// until its upgrade or removal. Returns its key.
    pub fn insert(&mut self, mut conn: Conn) -> u32 {
        self.last_no += 1;
        conn.no = self.last_no;
        // The epoch is the number's low half: a slab key's next holder gets another one unless
        // 2^32 connections came and went in between while a reference to the first was kept.
        conn.epoch = self.last_no as u32;
        conn.handshake_slot = true;
        self.handshakes += 1;
        self.slots.0.insert(conn) as u32
    }

    /// Takes `key` out (`remove_conn`, the one exit), giving back its handshake slot.
    pub fn remove(&mut self, key: u32) -> Option<Conn> {
        let conn = self.slots.0.try_remove(key as usize)?;
        if conn.handshake_slot {
            self.handshakes -= 1;
        }
        // `remove_conn` unpauses first (waking the reader); a waker left here would outlive
        // the key.
        self.pause_wakers.remove(&key);
        Some(conn)
    }

    /// `key` upgraded: its handshake slot is free for another connection.
    pub fn end_handshake(&mut self, key: u32) {
        if let Some(conn) = self.slots.0.get_mut(key as usize) {
            if std::mem::replace(&mut conn.handshake_slot, false) {
                self.handshakes -= 1;
            }
        }
    }

    /// Connections holding a handshake slot.
    pub fn handshakes(&self) -> usize {
        self.handshakes
    }

    #[inline]
    pub fn get(&self, key: u32) -> Option<&Conn> {
        self.slots.0.get(key as usize)
    }

    #[inline]
    pub fn get_mut(&mut self, key: u32) -> Option<&mut Conn> {
        self.slots.0.get_mut(key as usize)
    }

    /// The connections and the write lists apart, for a loop that queues frames for many
    /// connections (the fan-out): its closure holds one pointer to each, as it would to two
    /// separate fields, and looks each connection up once.
    #[inline]
    pub fn split(&mut self) -> (&mut Slots, &mut Writes) {
        (&mut self.slots, &mut self.writes)
    }

    /// Connection `key` and the write lists, borrowed together: queue frames on the
    /// connection, then [`Writes::mark_dirty`] it, with one lookup.
    #[inline]
    pub fn get_mut_and_writes(&mut self, key: u32) -> Option<(&mut Conn, &mut Writes)> {
        let conn = self.slots.0.get_mut(key as usize)?;
        Some((conn, &mut self.writes))
    }

    /// Lists `key` for the flusher (see [`Writes::mark_dirty`]); nothing if it is gone.
    pub fn mark_dirty(&mut self, key: u32) {
        if let Some((conn, writes)) = self.get_mut_and_writes(key) {
            writes.mark_dirty(key, conn);
        }
    }

    pub fn len(&self) -> usize {
        self.slots.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.0.is_empty()
    }

    /// Every connection with its key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Conn)> {
        self.slots.0.iter().map(|(k, c)| (k as u32, c))
    }

    /// Starts a fan-out round (see `Conn::takes_round`) and returns its stamp.
    #[inline]
    pub fn new_round(&mut self) -> u64 {
        self.round += 1;
        self.round
    }

    /// The stamp of the current fan-out round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Some connection waits for the flusher.
    pub fn has_dirty(&self) -> bool {
        !self.writes.dirty.is_empty()
    }

    /// The dirty list, for the flusher to write each connection on it; hand the emptied list
    /// back with [`Conns::reuse_dirty`] to keep its allocation.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.writes.dirty)
    }

    /// The emptied list from [`Conns::take_dirty`] becomes the dirty list again, unless
    /// connections were listed meanwhile.
    pub fn reuse_dirty(&mut self, emptied: Vec<u32>) {
        debug_assert!(emptied.is_empty());
        if self.writes.dirty.is_empty() {
            self.writes.dirty = emptied;
        }
    }

    /// The drain tasks to start (`Shard::finish`): (key, epoch, socket).
    pub fn take_drains(&mut self) -> Vec<(u32, u32, Rc<TcpStream>)> {
        std::mem::take(&mut self.writes.need_drain)
    }

    /// The reader task of `key` is to keep waiting (paused, alive): `waker` is kept to wake it
    /// when it is unpaused. False if it may go on.
    pub fn wait_unpaused(&mut self, key: u32, waker: &Waker) -> bool {
        let paused = self
            .slots
            .0
            .get(key as usize)
            .is_some_and(|c| c.paused && c.phase != Phase::Dead);
        if paused {
            self.pause_wakers.insert(key, waker.clone());
        }
        paused
    }

    /// `key` reads again: its reader task, if it waits, is woken once the current section
    /// ends.
    pub fn unpause(&mut self, key: u32) {
        if let Some(conn) = self.slots.0.get_mut(key as usize) {
            conn.paused = false;
        }
        if let Some(waker) = self.pause_wakers.remove(&key) {
            self.unpaused.push(waker);
        }
    }

    /// The reader tasks to wake now that the section ends (`Shard::finish`).
    pub fn take_unpaused(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.unpaused)
    }
}

/// `conns[key]`: the connection `key`, which must be live (panics otherwise, like the slab).
impl ops::Index<u32> for Conns {
    type Output = Conn;

    #[inline]
    fn index(&self, key: u32) -> &Conn {
        &self.slots[key]
    }
}

impl ops::IndexMut<u32> for Conns {
    #[inline]
    fn index_mut(&mut self, key: u32) -> &mut Conn {
        &mut self.slots[key]
    }
}

/// `slots[key]`: as `conns[key]`.
impl ops::Index<u32> for Slots {
    type Output = Conn;

    #[inline]
    fn index(&self, key: u32) -> &Conn {
        &self.0[key as usize]
    }
}

impl ops::IndexMut<u32> for Slots {
    #[inline]
    fn index_mut(&mut self, key: u32) -> &mut Conn {
        &mut self.0[key as usize]
    }
}
