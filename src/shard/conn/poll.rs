//! Readiness: how a shard learns that a connection has something to read, or room to write,
//! without a task per connection, and what a read step leads to.
//!
//! **Why not a task per connection.** monoio polls a socket with a one-shot operation that
//! needs a future to wait in: a task per connection (a ~210-byte task cell, its future, the
//! pending operation's slot, an `Rc` around the socket with its own shared state) held for as
//! long as the connection is idle, that is most of its life in a market-data fan-out. It has
//! no multishot poll and lets no one else at its ring. So the shard keeps one readiness set
//! of its own, an epoll instance with every connection's socket registered once,
//! edge-triggered, under its slab key and epoch, and waits on that one descriptor through
//! monoio like on any socket ([`readiness_task`]; a `POLL_ADD` on the io_uring driver, its
//! epoll on the legacy one). What a connection costs while idle is its slab entry and its
//! index entries; the kernel keeps its registration (an epoll item, kernel memory like the
//! socket's own).
//!
//! **Edge-triggered.** An event says that something changed; a connection is read until the
//! socket says `EAGAIN`, or it stops early and is looked at again ([`Conns::again`]):
//!
//! - used its read budget (`Step::Yield`): read on once the shard's other tasks ran
//!   ([`again_task`], behind everything already ready);
//! - paused for its replies to drain (`Step::Pause`) or waiting for other shards
//!   (`Step::Await`, [`reply_task`]): events are ignored meanwhile; once unpaused
//!   ([`Conns::unpause`]) or answered, it handles what it kept and reads what came meanwhile;
//! - killed (`State::kill`): removed on its next look, whatever its socket does.
//!
//! A blocked socket's queue (`write.rs`) is written again when an event says it is
//! writable: write-space events only come after a write found the socket full, so the
//! interest in them costs nothing while a connection keeps up.
//!
//! [`Conns::again`]: super::Conns::again
//! [`Conns::unpause`]: super::Conns::unpause

use std::{
    os::fd::{FromRawFd, IntoRawFd},
    rc::Rc,
    task::Poll,
};

use futures_channel::oneshot::Receiver;
use rustix::event::epoll;

use super::{super::Shard, super::State, Phase, Step};
use crate::limits::EVENTS_PER_WAIT;

/// What a connection's socket is registered for: readable (data, EOF, errors and hang-ups are
/// always reported), writable, edge-triggered.
pub(super) const INTEREST: epoll::EventFlags = epoll::EventFlags::IN
    .union(epoll::EventFlags::OUT)
    .union(epoll::EventFlags::RDHUP)
    .union(epoll::EventFlags::ET);

/// An event's data: the connection's slab key and epoch (a key's next holder has another).
#[inline]
pub(super) fn event_data(key: u32, epoch: u32) -> u64 {
    (u64::from(key) << 32) | u64::from(epoch)
}

/// The handle the shard's runtime waits on for the readiness set ([`readiness_task`]): a
/// duplicate of its descriptor in a monoio socket type, used only to wait for readability and
/// to close it. Made by `Shard::run`, which fails if it cannot be.
pub fn readiness_handle(st: &State) -> std::io::Result<monoio::net::TcpStream> {
    let dup = rustix::io::fcntl_dupfd_cloexec(st.conns.readiness(), 0)?;
    // SAFETY: `dup` is a descriptor this function owns (just duplicated) and hands over whole
    // to the std type, which closes it once when dropped. It is an epoll instance, not a TCP
    // socket: monoio only ever polls it for readability (`readable`, a `POLL_ADD` or its own
    // epoll, both valid on an epoll descriptor) and closes it; nothing here reads, writes or
    // asks socket options of it.
    let std = unsafe { std::net::TcpStream::from_raw_fd(dup.into_raw_fd()) };
    monoio::net::TcpStream::from_std(std)
}

/// Waits on the shard's readiness set and lets each connection it reports read (or write, if
/// its socket was full), at most `EVENTS_PER_WAIT` per section.
pub async fn readiness_task(shard: Rc<Shard>, handle: monoio::net::TcpStream) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS_PER_WAIT);
    loop {
        let full = {
            let mut st = shard.st.borrow_mut();
            events.clear();
            let n = match epoll::wait(
                st.conns.readiness(),
                rustix::buffer::spare_capacity(&mut events),
                Some(&rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                }),
            ) {
                Ok(n) => n,
                Err(e) => {
                    if e != rustix::io::Errno::INTR {
                        tracing::warn!(shard = shard.id, error = %e, "epoll_wait failed");
                    }
                    0
                }
            };
            st.on_events(&events);
            shard.finish(st);
            n == EVENTS_PER_WAIT
        };
        if full {
            // More may be ready: let the flusher and the other tasks run first.
            super::super::YieldNow(false).await;
        } else if handle.readable(false).await.is_err() {
            // A failed poll of an epoll descriptor: try again after the others ran.
            super::super::YieldNow(false).await;
        }
    }
}

/// Looks at the connections listed again ([`super::Conns::again`]) once the shard's other
/// ready tasks ran: a reader that used its budget cannot keep its shard.
pub async fn again_task(shard: Rc<Shard>) {
    loop {
        std::future::poll_fn(|cx| {
            if shard.st.borrow().conns.has_again() {
                Poll::Ready(())
            } else {
                shard.again_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        {
            let mut st = shard.st.borrow_mut();
            st.run_again();
            shard.finish(st);
        }
        super::super::YieldNow(false).await;
    }
}

/// Waits, for at most `timeouts.handshake_ms`, for other shards' answer to `key`'s HTTP
/// request, hands it over, and goes on reading. Exists only while an answer is awaited.
pub async fn reply_task(shard: Rc<Shard>, key: u32, epoch: u32, answer: Receiver<Vec<u8>>) {
    let wait = std::time::Duration::from_millis(shard.st.borrow().cfg.timeouts.handshake_ms);
    let reply = monoio::time::timeout(wait, answer).await;
    let mut st = shard.st.borrow_mut();
    if st.conns.get_live(key, epoch).is_some() {
        let step = st.http_reply(key, reply.ok().and_then(Result::ok));
        st.settle_partial(key, false);
        // Bytes that came meanwhile were reported and ignored: read them now.
        let step = match step {
            Step::Wait => st.read_conn(key),
            other => other,
        };
        st.run_step(key, step);
    }
    shard.finish(st);
}

impl State {
    /// The events of one wait on the readiness set.
    fn on_events(&mut self, events: &[epoll::Event]) {
        for event in events {
            let data = event.data.u64();
            let (key, epoch) = ((data >> 32) as u32, data as u32);
            let Some(conn) = self.conns.get_live(key, epoch) else {
                // Gone since (its socket closed after the event was queued).
                continue;
            };
            let flags = event.flags;
            use epoll::EventFlags as F;
            if conn.write_blocked && flags.intersects(F::OUT | F::ERR | F::HUP) {
                self.on_writable(key);
            }
            if flags.intersects(F::IN | F::RDHUP | F::ERR | F::HUP) {
                self.read_if_reading(key, epoch);
            }
        }
    }

    /// Reads `key` unless it waits for something else (its replies to drain, other shards'
    /// answer: it reads once that is over) or died (removed).
    fn read_if_reading(&mut self, key: u32, epoch: u32) {
        let Some(conn) = self.conns.get_live(key, epoch) else {
            return;
        };
        if conn.phase == Phase::Dead {
            return self.run_step(key, Step::Exit);
        }
        if conn.paused || conn.phase == Phase::HttpBusy {
            return;
        }
        let step = self.read_conn(key);
        self.run_step(key, step);
    }

    /// The connections listed again: each read on, resumed after a pause, or removed if it
    /// died.
    fn run_again(&mut self) {
        let mut again = self.conns.take_again();
        if !again.is_empty() {
            self.clock();
        }
        for (key, epoch) in again.drain(..) {
            let Some(conn) = self.conns.get_live(key, epoch) else {
                continue;
            };
            let reading = conn.phase != Phase::Dead && !conn.paused;
            if reading && std::mem::take(&mut self.conns[key].resume) {
                let step = match self.resume_input(key) {
                    Step::Wait => self.read_conn(key),
                    other => other,
                };
                self.run_step(key, step);
            } else {
                self.read_if_reading(key, epoch);
            }
        }
        self.conns.reuse_again(again);
    }

    /// What a read step of `key` leads to.
    pub(crate) fn run_step(&mut self, key: u32, step: Step) {
        match step {
            // Edge-triggered: the next change of the socket brings another event.
            Step::Wait => {}
            Step::Yield => self.conns.again(key),
            Step::Await(answer) => self.conns.await_answer(key, answer),
            // Unpausing lists it again (`Conns::unpause`).
            Step::Pause => {}
            Step::Exit => self.remove_conn(key),
        }
    }
}
