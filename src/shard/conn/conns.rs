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
//! - Every connection's socket is in the shard's readiness set ([`Conns::insert`] adds it
//!   under its key and epoch; closing the socket when the connection is dropped takes it out),
//!   so a readiness event names the connection it is for, or one already gone (another epoch).
//! - A connection is listed to be looked at again ([`Conns::again`]) with its epoch: a reader
//!   that used its read budget, a paused one that may read again ([`Conns::unpause`]), one that
//!   was killed. The list is taken by `State::run_again` (`poll.rs`).
//!
//! What the part knows nothing of (subscriptions, users, recovery, pacing, statistics, the
//! process-wide counts) is released by `State::remove_conn`, which borrows the other parts.

use std::{io, ops, os::fd::OwnedFd};

use futures_channel::oneshot::Receiver;
use rustix::event::epoll;
use slab::Slab;

use super::Conn;

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
    /// The readiness set (an epoll instance, edge-triggered): every connection's socket,
    /// registered once at [`Conns::insert`] with its key and epoch as the event's data
    /// (`poll.rs`).
    ready: OwnedFd,
    /// Connections to look at again once the current section ends: (key, epoch).
    again: Vec<(u32, u32)>,
    /// Connections whose HTTP request waits for other shards: (key, epoch, the answer), each
    /// given a task by `Shard::finish` that exists only while it waits.
    awaits: Vec<(u32, u32, Receiver<Vec<u8>>)>,
}

/// The connections alone, by key: lookups only (they enter and leave through [`Conns`]).
#[derive(Debug)]
pub struct Slots(Slab<Conn>);

/// What queuing frames leaves for `Shard::finish`: the connections the flusher is to write.
/// Borrowed next to one connection with [`Conns::get_mut_and_writes`], so a loop that queues
/// frames looks each connection up once.
#[derive(Debug, Default)]
pub struct Writes {
    /// Connections with frames queued since the flusher last ran.
    dirty: Vec<u32>,
}

impl Writes {
    /// `conn` (slab key `key`) has frames to write: listed for the flusher, once until it runs.
    #[inline]
    pub fn mark_dirty(&mut self, key: u32, conn: &mut Conn) {
        if !std::mem::replace(&mut conn.dirty, true) {
            self.dirty.push(key);
        }
    }

    /// `conn` found its socket full: it is written again when the readiness set says the
    /// socket takes more (`State::on_writable`), not by the flusher.
    pub fn blocked(&mut self, conn: &mut Conn) {
        conn.write_blocked = true;
    }
}

impl Conns {
    /// Room for `capacity` connections (a shard's share of `limits.connections_max`), reserved
    /// once: the pages are only touched (and only count in RSS) as connections arrive. The slab
    /// moves only if SO_REUSEPORT gives this shard more than its share. Fails only if the
    /// readiness set cannot be created.
    pub fn with_capacity(capacity: usize) -> io::Result<Conns> {
        Ok(Conns {
            slots: Slots(Slab::with_capacity(capacity)),
            handshakes: 0,
            last_no: 0,
            round: 0,
            writes: Writes::default(),
            ready: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            again: Vec::new(),
            awaits: Vec::new(),
        })
    }

    /// A newly accepted connection: numbered, given a fresh epoch, its socket added to the
    /// readiness set, holding a handshake slot until its upgrade or removal. Returns its key;
    /// fails (and the connection is dropped, its socket closed) only if the kernel refuses
    /// the registration (`max_user_watches`, memory).
    pub fn insert(&mut self, mut conn: Conn) -> io::Result<u32> {
        let key = self.slots.0.vacant_key() as u32;
        let no = self.last_no + 1;
        // `Conn::epoch`, known before the connection is in.
        let epoch = no as u32;
        epoll::add(
            &self.ready,
            &conn.fd,
            epoll::EventData::new_u64(super::poll::event_data(key, epoch)),
            super::poll::INTEREST,
        )?;
        self.last_no = no;
        conn.no = no;
        conn.handshake_slot = true;
        self.handshakes += 1;
        let inserted = self.slots.0.insert(conn) as u32;
        debug_assert_eq!(inserted, key);
        Ok(inserted)
    }

    /// Takes `key` out (`remove_conn`, the one exit), giving back its handshake slot. Its
    /// socket leaves the readiness set when the returned connection is dropped (closed).
    pub fn remove(&mut self, key: u32) -> Option<Conn> {
        let conn = self.slots.0.try_remove(key as usize)?;
        if conn.handshake_slot {
            self.handshakes -= 1;
        }
        Some(conn)
    }

    /// `key` if it is still the connection of `epoch`.
    #[inline]
    pub fn get_live(&self, key: u32, epoch: u32) -> Option<&Conn> {
        self.slots
            .0
            .get(key as usize)
            .filter(|c| c.epoch() == epoch)
    }

    /// The readiness set, for `poll.rs` to wait on and read.
    pub fn readiness(&self) -> &OwnedFd {
        &self.ready
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

    /// `key` is to be looked at again once the current section ends (`State::run_again`):
    /// read on, resumed, or removed if it died.
    pub fn again(&mut self, key: u32) {
        if let Some(conn) = self.slots.0.get(key as usize) {
            self.again.push((key, conn.epoch()));
        }
    }

    /// Some connection is to be looked at again.
    pub fn has_again(&self) -> bool {
        !self.again.is_empty()
    }

    /// The connections to look at again; hand the emptied list back with
    /// [`Conns::reuse_again`].
    pub fn take_again(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.again)
    }

    /// The emptied list from [`Conns::take_again`] becomes the list again, unless connections
    /// were listed meanwhile.
    pub fn reuse_again(&mut self, emptied: Vec<(u32, u32)>) {
        debug_assert!(emptied.is_empty());
        if self.again.is_empty() {
            self.again = emptied;
        }
    }

    /// `key`'s HTTP request waits for other shards: `answer` brings their reply.
    pub fn await_answer(&mut self, key: u32, answer: Receiver<Vec<u8>>) {
        if let Some(conn) = self.slots.0.get(key as usize) {
            self.awaits.push((key, conn.epoch(), answer));
        }
    }

    /// The waits to give a task (`Shard::finish`).
    pub fn take_awaits(&mut self) -> Vec<(u32, u32, Receiver<Vec<u8>>)> {
        std::mem::take(&mut self.awaits)
    }

    /// `key` reads again if it was paused: it handles what it kept, then reads, once the
    /// current section ends.
    pub fn unpause(&mut self, key: u32) {
        if let Some(conn) = self.slots.0.get_mut(key as usize) {
            if std::mem::replace(&mut conn.paused, false) {
                conn.resume = true;
                self.again.push((key, conn.epoch()));
            }
        }
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
