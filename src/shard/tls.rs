//! TLS connections on the shard runtime: no proxy thread, no extra task. A connection accepted
//! on the TLS listener carries a [`TlsConn`] in its [`Conn`] (`crate::tls::session`: rustls
//! for the handshake, then tickcast's own record layer); the plain path pays one `Option` check
//! on read and one on write.
//!
//! **Memory.** Like a plain connection's, a TLS connection's buffers exist only while needed:
//! an idle established one holds this struct (72 bytes), its keys and sequence numbers (1,232
//! bytes, `crate::tls::record`) and rustls' 224-byte key schedule for TLS 1.3 key updates, no
//! buffer. Ciphertext is read into the shard's scratch buffer and
//! decrypted there in place; a record that arrived in part is kept ([`TlsConn::tail`]) until
//! the rest comes, as the plain path keeps a partial frame. Frames are encrypted into the
//! shard's write buffer (`State::tls_buf`) and written from there; what a full socket did
//! not take is kept ([`TlsConn::unsent`]) and written first when it has room again.
//!
//! Read: the plaintext replaces the ciphertext in the scratch buffer and continues exactly as
//! plain bytes do (HTTP request, upgrade, WebSocket frames). Handshake records to send mark the
//! connection dirty, so the flusher writes them in the same scheduler round.
//!
//! Write: the connection's queued frames are encrypted up to `TLS_BATCH_BYTES` at a time
//! (records span frames, so a write of many small frames is a few records) and written with
//! one nonblocking `send`. A full socket returns `Flush::Blocked`; the readiness set reports
//! when it takes more. Frames encrypted and not yet on the socket keep counting against
//! `limits.write_queue_bytes_max` (at most one batch: the next is encrypted only once the
//! previous one is written).
//!
//! Encode-once ends here: every TLS subscriber encrypts its own copy of each frame.
//!
//! The handshake runs in the connection's `Http` phase, so `timeouts.handshake_ms` bounds the
//! TLS handshake and the HTTP upgrade together (a stalled ClientHello is a slowloris like any
//! other). A connection whose handshake never completed counts as a TLS handshake failure when
//! it is removed.

use std::{
    io::IoSlice,
    mem,
    os::fd::{AsFd, BorrowedFd},
};

use rustix::{io::Errno, net::SendFlags};

use super::{
    Shard, State,
    conn::Conn,
    out::{Flush, OutQueue},
};
use crate::{
    stats::{CloseReason, ShardStats},
    tls::{
        record::{PLAIN_RECORD_BYTES_MAX, RECORD_OVERHEAD_BYTES_MAX},
        session::Session,
    },
};

/// Plaintext encrypted per write: four full records. Written at once with one `send`; what a
/// full socket does not take of it is what a blocked connection keeps.
const TLS_BATCH_BYTES: usize = 4 * PLAIN_RECORD_BYTES_MAX;
/// The shard's write buffer holds one batch's records (and a key update and close_notify).
const TLS_BUF_BYTES: usize = TLS_BATCH_BYTES + 6 * RECORD_OVERHEAD_BYTES_MAX;
const _: () = assert!(TLS_BATCH_BYTES <= u32::MAX as usize);

/// One TLS connection's state (boxed in [`Conn::tls`]).
pub struct TlsConn {
    session: Session,
    /// The start of a record still arriving, kept between reads; empty (unallocated) when the
    /// last read ended on a record boundary.
    tail: Vec<u8>,
    /// Ciphertext the socket has not taken yet (handshake flights, the rest of a batch, an
    /// alert): written before anything else. Empty (unallocated) while the socket keeps up.
    unsent: Vec<u8>,
    /// Plaintext bytes of the out-queue whose ciphertext is in `unsent`: they still count in
    /// the queue's bytes (the slow-consumer bound).
    held: u32,
    /// The handshake completed (counted once).
    pub established: bool,
    close_notify_sent: bool,
}

// One per TLS connection, boxed (an idle one: this and its session's records, see the module
// doc).
const _: () = assert!(mem::size_of::<TlsConn>() <= 72);

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("tail", &self.tail.len())
            .field("unsent", &self.unsent.len())
            .field("held", &self.held)
            .field("established", &self.established)
            .finish_non_exhaustive()
    }
}

/// What decrypting one read gave.
pub(super) enum TlsRead {
    /// Plaintext is in the scratch buffer; `eof`: the client then sent close_notify, handle
    /// the plaintext and end as on EOF.
    Data { eof: bool },
    /// Nothing for the application (handshake records, a partial record).
    Nothing,
    /// The client sent close_notify: as EOF.
    Eof,
    /// The TLS stream is broken; the connection has been killed.
    Failed,
}

impl Shard {
    /// The TLS state of a newly accepted connection, with the current certificate (read once
    /// per connection).
    pub(super) fn new_tls_session(&self) -> Option<Box<TlsConn>> {
        let state = self.shared.tls.as_ref()?;
        match Session::new(state.current()) {
            Ok(session) => Some(Box::new(TlsConn {
                session,
                tail: Vec::new(),
                unsent: Vec::new(),
                held: 0,
                established: false,
                close_notify_sent: false,
            })),
            Err(e) => {
                tracing::warn!(shard = self.id, error = %e, "TLS session setup failed");
                None
            }
        }
    }
}

impl State {
    /// Decrypts the ciphertext `read_conn` just put in the scratch buffer (after the record
    /// kept from the last read, if any); on `Data` the plaintext has replaced it there.
    pub(super) fn tls_read(&mut self, key: u32) -> TlsRead {
        let State {
            conns,
            scratch,
            tls_buf,
            stats,
            ..
        } = self;
        let (conn, writes) = conns.get_mut_and_writes(key).expect("a live connection");
        let tls = conn.tls.as_mut().expect("caller checked: a TLS connection");
        // A record split across reads: the two parts go together (the only copy of
        // ciphertext, and only then).
        let mut joined = mem::take(&mut tls.tail);
        if !joined.is_empty() {
            joined.extend_from_slice(scratch);
        }
        let input = if joined.is_empty() {
            &mut *scratch
        } else {
            &mut joined
        };
        // The application data rustls decrypts during the handshake (a request sent with the
        // client's Finished) lands here.
        tls_buf.clear();
        let result = tls.session.read(input, tls_buf, &mut tls.unsent);
        let read = match result {
            Ok(read) => read,
            Err(e) => {
                // The alert for the error, if any, gets one nonblocking write; the connection
                // ends (its next read step removes it; a failed handshake is counted then).
                let _ = send(conn.fd.as_fd(), &tls.unsent, stats);
                let reason = if tls.established {
                    CloseReason::IoError
                } else {
                    CloseReason::Rejected
                };
                tracing::debug!(shard = self.shard, conn = key, error = %e, "TLS error");
                self.kill(key, reason);
                return TlsRead::Failed;
            }
        };
        if read.consumed < input.len() {
            tls.tail = input[read.consumed..].to_vec();
        }
        if read.established {
            tls.established = true;
            stats.c.tls_handshakes += 1;
        }
        // Handshake flights (and, once established, the frames that waited for it): written
        // by the flusher this round.
        if !tls.unsent.is_empty() || read.established {
            writes.mark_dirty(key, conn);
        }
        // The plaintext goes to the front of the scratch buffer.
        if !tls_buf.is_empty() {
            tls_buf.extend_from_slice(&input[read.plain]);
            scratch.clear();
            scratch.extend_from_slice(tls_buf);
        } else if joined.is_empty() {
            scratch.copy_within(read.plain.clone(), 0);
            scratch.truncate(read.plain.len());
        } else {
            scratch.clear();
            scratch.extend_from_slice(&joined[read.plain]);
        }
        match (scratch.is_empty(), read.peer_closed) {
            (false, eof) => TlsRead::Data { eof },
            (true, true) => TlsRead::Eof,
            (true, false) => TlsRead::Nothing,
        }
    }
}

impl Conn {
    /// Writes what the connection has queued: directly (plain) or encrypted into `tls_buf`
    /// (TLS, the shard's write buffer). `closing`: the write side is shut after this flush
    /// (TLS: close_notify goes out last).
    #[inline]
    pub(super) fn flush_out(
        &mut self,
        closing: bool,
        now_ns: u64,
        stats: &mut ShardStats,
        tls_buf: &mut Vec<u8>,
    ) -> Flush {
        match &mut self.tls {
            None => self.out.flush(self.fd.as_fd(), now_ns, stats),
            Some(tls) => tls.flush(
                &mut self.out,
                self.fd.as_fd(),
                closing,
                now_ns,
                stats,
                tls_buf,
            ),
        }
    }

    /// A slow consumer's close frame, tried once without waiting (see `slow_consumer`): true if
    /// it left completely (for TLS: with close_notify after it).
    pub(super) fn send_final(
        &mut self,
        frame: &[u8],
        stats: &mut ShardStats,
        tls_buf: &mut Vec<u8>,
    ) -> bool {
        let sock = self.fd.as_fd();
        match &mut self.tls {
            None => {
                let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
                rustix::net::send(sock, frame, flags) == Ok(frame.len())
            }
            Some(tls) => tls.send_final(sock, frame, stats, tls_buf),
        }
    }
}

impl TlsConn {
    fn flush(
        &mut self,
        out: &mut OutQueue,
        sock: BorrowedFd<'_>,
        closing: bool,
        now_ns: u64,
        stats: &mut ShardStats,
        buf: &mut Vec<u8>,
    ) -> Flush {
        loop {
            // What the socket did not take last time goes first.
            if let Err(blocked_or_failed) = self.write_unsent(sock, stats) {
                return blocked_or_failed;
            }
            out.release(mem::take(&mut self.held) as usize);
            let Some(records) = self.session.records() else {
                // Application data waits for the handshake (the read path marks the
                // connection dirty again when it completes).
                return Flush::Done;
            };
            buf.clear();
            // One allocation for the shard's lifetime (a no-op once it has it).
            buf.reserve(TLS_BUF_BYTES);
            let mut fed = 0;
            if out.is_empty() {
                out.shrink_if_empty();
                if !closing || self.close_notify_sent {
                    return Flush::Done;
                }
                self.close_notify_sent = true;
                if records.close_notify(buf).is_err() {
                    return Flush::Done;
                }
            } else {
                let mut failed = false;
                fed = out.feed(now_ns, stats, |frames| {
                    records
                        .seal(frames, TLS_BATCH_BYTES, buf)
                        .unwrap_or_else(|_| {
                            failed = true;
                            0
                        })
                });
                if failed || fed == 0 {
                    // TLS 1.2 keys at their confidentiality limit: the connection must end.
                    return Flush::Failed(Errno::PROTO);
                }
            }
            match send(sock, buf, stats) {
                Ok(n) if n == buf.len() => out.release(fed),
                Ok(n) => {
                    self.keep_unsent(&buf[n..], fed);
                    return Flush::Blocked;
                }
                Err(Errno::AGAIN) => {
                    self.keep_unsent(buf, fed);
                    return Flush::Blocked;
                }
                Err(e) => return Flush::Failed(e),
            }
        }
    }

    /// Keeps what a full socket did not take, and the plaintext bytes it carries.
    fn keep_unsent(&mut self, rest: &[u8], fed: usize) {
        self.unsent = rest.to_vec();
        self.held = fed as u32;
    }

    /// Writes the kept ciphertext; `Err(Blocked | Failed)` when it cannot all go now.
    fn write_unsent(&mut self, sock: BorrowedFd<'_>, stats: &mut ShardStats) -> Result<(), Flush> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        match send(sock, &self.unsent, stats) {
            Ok(n) if n == self.unsent.len() => {
                self.unsent = Vec::new();
                Ok(())
            }
            Ok(n) => {
                self.unsent.drain(..n);
                Err(Flush::Blocked)
            }
            Err(Errno::AGAIN) => Err(Flush::Blocked),
            Err(e) => Err(Flush::Failed(e)),
        }
    }

    fn send_final(
        &mut self,
        sock: BorrowedFd<'_>,
        frame: &[u8],
        stats: &mut ShardStats,
        buf: &mut Vec<u8>,
    ) -> bool {
        if self.write_unsent(sock, stats).is_err() {
            return false;
        }
        let Some(records) = self.session.records() else {
            return false;
        };
        buf.clear();
        let sealed = records.seal(&[IoSlice::new(frame)], frame.len(), buf) == Ok(frame.len())
            && records.close_notify(buf).is_ok();
        self.close_notify_sent = true;
        sealed && send(sock, buf, stats) == Ok(buf.len())
    }
}

/// One nonblocking `send` of `bytes` (retried on EINTR), counted as a write.
fn send(sock: BorrowedFd<'_>, bytes: &[u8], stats: &mut ShardStats) -> Result<usize, Errno> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    loop {
        match rustix::net::send(sock, bytes, flags) {
            Ok(n) => {
                stats.c.writes += 1;
                stats.c.bytes_out += n as u64;
                return Ok(n);
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}
