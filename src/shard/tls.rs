//! TLS connections on the shard runtime: no proxy thread, no extra task. A connection accepted
//! on the TLS listener carries a boxed rustls `ServerConnection` in its [`Conn`]; the plain path
//! pays one `Option` check on read and one on write.
//!
//! Read: the bytes `read_conn` received into the shard's scratch buffer go through rustls
//! (`read_tls`, `process_new_packets`); the plaintext replaces them in the scratch buffer and
//! continues exactly as plain bytes do (HTTP request, upgrade, WebSocket frames). Handshake
//! records rustls wants to send mark the connection dirty, so the flusher writes them in the
//! same scheduler round.
//!
//! Write: the connection's queued frames are encrypted through rustls' writer (up to
//! `IOVECS_PER_WRITE` frames per call, so records span small frames) and the ciphertext is
//! written with nonblocking `sendmsg`. A full socket returns `Flush::Blocked` and the usual drain
//! task waits for POLLOUT. Frames handed to rustls keep counting against
//! `limits.write_queue_bytes_max` until their ciphertext is written; rustls holds at most one
//! batch (its buffer limit is 64 KiB), fed only once its previous output is on the socket.
//!
//! Encode-once ends here: every TLS subscriber encrypts its own copy of each frame.
//!
//! The handshake runs in the connection's `Http` phase, so `timeouts.handshake_ms` bounds the
//! TLS handshake and the HTTP upgrade together (a stalled ClientHello is a slowloris like any
//! other). A connection whose handshake never completed counts as a TLS handshake failure when
//! it is removed.

use std::{
    io::{self, IoSlice, Read, Write},
    mem,
    os::fd::AsFd,
    os::fd::BorrowedFd,
};

use rustix::{
    io::Errno,
    net::{SendAncillaryBuffer, SendFlags},
};
use rustls::ServerConnection;

use super::{
    Shard, State,
    conn::Conn,
    out::{Flush, OutQueue},
};
use crate::{limits::READ_CHUNK_BYTES, stats::CloseReason, stats::ShardStats};

/// One TLS connection's state (boxed in [`Conn::tls`]).
#[derive(Debug)]
pub struct TlsConn {
    session: ServerConnection,
    /// Plaintext bytes handed to rustls whose ciphertext is not all written yet; they still
    /// count in the out-queue's bytes (the slow-consumer bound).
    held: usize,
    /// The handshake completed (counted once).
    pub established: bool,
    close_notify_sent: bool,
}

/// What decrypting one read gave.
pub(super) enum TlsRead {
    /// Plaintext is in the scratch buffer.
    Data,
    /// Nothing for the application (handshake records, a partial record).
    Nothing,
    /// The TLS stream is broken; the connection has been killed.
    Failed,
}

impl Shard {
    /// The TLS state of a newly accepted connection, with the current certificate (read once
    /// per connection).
    pub(super) fn new_tls_session(&self) -> Option<Box<TlsConn>> {
        let state = self.shared.tls.as_ref()?;
        match ServerConnection::new(state.current()) {
            Ok(session) => Some(Box::new(TlsConn {
                session,
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
    /// Decrypts the ciphertext `read_conn` just put in the scratch buffer; on `Data` the
    /// plaintext has replaced it there.
    pub(super) fn tls_read(&mut self, key: u32) -> TlsRead {
        let State {
            conns,
            scratch,
            tls_plain,
            stats,
            ..
        } = self;
        let (conn, writes) = conns.get_mut_and_writes(key).expect("a live connection");
        let tls = conn.tls.as_mut().expect("caller checked: a TLS connection");
        tls_plain.clear();
        // Both buffers take turns as the scratch buffer: each keeps a full read's capacity.
        tls_plain.reserve(READ_CHUNK_BYTES);
        let mut cipher = &scratch[..];
        let mut result = Ok(());
        while !cipher.is_empty() {
            match tls.session.read_tls(&mut cipher) {
                // close_notify received: nothing more is read from this stream.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    result = Err(e.to_string());
                    break;
                }
            }
            if let Err(e) = tls.session.process_new_packets() {
                result = Err(e.to_string());
                break;
            }
            // Plaintext is taken after every record batch, so rustls' 16 KiB received-plaintext
            // buffer never fills. WouldBlock = no more for now; Ok = the peer's close_notify.
            match tls.session.reader().read_to_end(tls_plain) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    result = Err(e.to_string());
                    break;
                }
            }
        }
        if !tls.established && !tls.session.is_handshaking() {
            tls.established = true;
            stats.c.tls_handshakes += 1;
        }
        if let Err(e) = result {
            let established = tls.established;
            // The alert rustls queued for the error gets one nonblocking write, then the
            // connection ends (its next read step removes it; a failed handshake is counted then).
            let _ = tls.session.write_tls(&mut SockWriter(conn.fd.as_fd()));
            tracing::debug!(shard = self.shard, conn = key, error = %e, "TLS error");
            let reason = if established {
                CloseReason::IoError
            } else {
                CloseReason::Rejected
            };
            self.kill(key, reason);
            return TlsRead::Failed;
        }
        // Handshake records, alerts, session tickets: written by the flusher this round.
        if tls.session.wants_write() {
            writes.mark_dirty(key, conn);
        }
        mem::swap(scratch, tls_plain);
        if scratch.is_empty() {
            TlsRead::Nothing
        } else {
            TlsRead::Data
        }
    }
}

impl Conn {
    /// Writes what the connection has queued: directly (plain) or through rustls (TLS).
    /// `closing`: the write side is shut after this flush (TLS: close_notify goes out last).
    #[inline]
    pub(super) fn flush_out(
        &mut self,
        closing: bool,
        now_ns: u64,
        stats: &mut ShardStats,
    ) -> Flush {
        match &mut self.tls {
            None => self.out.flush(self.fd.as_fd(), now_ns, stats),
            Some(tls) => tls.flush(&mut self.out, self.fd.as_fd(), closing, now_ns, stats),
        }
    }

    /// A slow consumer's close frame, tried once without waiting (see `slow_consumer`): true if
    /// it left completely (for TLS: with close_notify after it).
    pub(super) fn send_final(&mut self, frame: &[u8], stats: &mut ShardStats) -> bool {
        let sock = self.fd.as_fd();
        match &mut self.tls {
            None => {
                let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
                rustix::net::send(sock, frame, flags) == Ok(frame.len())
            }
            Some(tls) => tls.send_final(sock, frame, stats),
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
    ) -> Flush {
        loop {
            // What rustls holds goes first: handshake records, then earlier frames' ciphertext.
            if let Err(blocked_or_failed) = self.write_pending(sock, stats) {
                return blocked_or_failed;
            }
            // Everything rustls held is on the socket: its plaintext leaves the queue bound.
            out.release(mem::take(&mut self.held));
            if self.session.is_handshaking() {
                // Application data waits for the handshake (the read path marks the
                // connection dirty again when it completes).
                return Flush::Done;
            }
            if out.is_empty() {
                out.shrink_if_empty();
                if closing && !self.close_notify_sent {
                    self.close_notify_sent = true;
                    self.session.send_close_notify();
                    continue;
                }
                return Flush::Done;
            }
            let session = &mut self.session;
            let fed = out.feed(now_ns, stats, |iov| {
                session.writer().write_vectored(iov).unwrap_or(0)
            });
            if fed == 0 {
                // rustls refused plaintext with its buffer empty: the session is unusable.
                return Flush::Failed(Errno::PROTO);
            }
            self.held += fed;
        }
    }

    /// Writes rustls' pending records; `Err(Blocked | Failed)` when they cannot all go now.
    fn write_pending(&mut self, sock: BorrowedFd<'_>, stats: &mut ShardStats) -> Result<(), Flush> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut SockWriter(sock)) {
                Ok(n) => {
                    stats.c.writes += 1;
                    stats.c.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Flush::Blocked),
                Err(e) => {
                    let errno = e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error);
                    return Err(Flush::Failed(errno));
                }
            }
        }
        Ok(())
    }

    fn send_final(&mut self, sock: BorrowedFd<'_>, frame: &[u8], stats: &mut ShardStats) -> bool {
        if self.session.is_handshaking() {
            return false;
        }
        let taken = self.session.writer().write(frame).unwrap_or(0);
        if taken != frame.len() {
            return false;
        }
        self.close_notify_sent = true;
        self.session.send_close_notify();
        self.write_pending(sock, stats).is_ok()
    }
}

/// `io::Write` over a nonblocking socket for rustls' `write_tls` (vectored: one `sendmsg` for
/// up to 64 records).
struct SockWriter<'a>(BorrowedFd<'a>);

impl io::Write for SockWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        rustix::net::sendmsg(self.0, bufs, &mut SendAncillaryBuffer::default(), flags)
            .map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
