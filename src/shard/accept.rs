//! The accept loop of a shard's SO_REUSEPORT listener, and the limits checked at accept.

use std::{
    hash::{Hash, Hasher},
    net::{IpAddr, SocketAddr},
    os::fd::OwnedFd,
    rc::Rc,
    sync::atomic::Ordering,
    time::Duration,
};

use monoio::net::TcpListener;
use rustix::{io::Errno, net::SocketFlags};

use super::{Shard, conn::Conn};
use crate::limits::ACCEPTS_PER_WAKE;

/// `tls`: the connections of this listener speak TLS (see `super::tls`).
///
/// Accepts in batches: once the listener is readable, `accept4` until the backlog is empty
/// (or `ACCEPTS_PER_WAKE` were taken, then the shard's other tasks run first). A burst of
/// handshakes costs one wake of this task per batch, not an operation and a wake per
/// connection.
pub async fn accept_loop(shard: Rc<Shard>, listener: Rc<TcpListener>, tls: bool) {
    let mut errors_logged = 0u32;
    // Connections are capped below the descriptor limit (`Shared::accept_cap`), so the process
    // keeps descriptors for itself; should it run out anyway (a broker reconnect storm, a
    // descriptor leak), one is kept in reserve to accept a waiting connection and answer 503
    // rather than leave it unanswered in the backlog (a health check would hang).
    let mut spare = open_spare();
    let fd = crate::sys::fd_of(&*listener);
    loop {
        let mut taken = 0;
        let outcome = loop {
            if taken == ACCEPTS_PER_WAKE {
                break Ok(true);
            }
            match rustix::net::acceptfrom_with(fd, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
                Ok((sock, peer)) => {
                    taken += 1;
                    let peer = peer
                        .and_then(|p| SocketAddr::try_from(p).ok())
                        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                    shard.on_accept(sock, peer, tls);
                }
                Err(Errno::AGAIN) => break Ok(false),
                // A connection reset while it waited in the backlog; the next may be fine.
                Err(Errno::INTR | Errno::CONNABORTED) => {}
                Err(e) => break Err(e),
            }
        };
        let e = match outcome {
            Ok(true) => {
                super::YieldNow(false).await;
                continue;
            }
            Ok(false) => {
                // A failed poll shows up as an error of the next accept.
                let _ = listener.readable(false).await;
                continue;
            }
            Err(e) => std::io::Error::from(e),
        };
        {
            let st = shard.st.borrow();
            if st.stopping || st.drain.is_some() {
                // The listener was shut down on purpose.
                return;
            }
        }
        let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
        let mut answered = false;
        if out_of_fds && spare.take().is_some() {
            if let Ok(sock) = rustix::net::accept(fd) {
                refuse(&sock);
                answered = true;
            }
        }
        // Another thread may have taken the freed descriptor: retried on every error.
        if spare.is_none() {
            spare = open_spare();
        }
        if answered {
            let mut st = shard.st.borrow_mut();
            st.stats.c.accepted += 1;
            st.stats.c.fd_rejects += 1;
            st.stats.c.limit_rejects += 1;
            st.stats.closed(crate::stats::CloseReason::Rejected);
            continue;
        }
        // EMFILE/ENFILE/ENOBUFS: the connection stays in the backlog; back off instead of
        // spinning on it.
        if errors_logged < 10 || errors_logged.is_power_of_two() {
            tracing::warn!(shard = shard.id, error = %e, "accept failed");
        }
        errors_logged = errors_logged.saturating_add(1);
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The reserve descriptor (see `accept_loop`).
fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Answers a connection the process has no room for `503 overloaded` (one nonblocking
/// write, no wait) before it is closed.
fn refuse(sock: &impl std::os::fd::AsFd) {
    const RESPONSE: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
        Content-Length: 65\r\nConnection: close\r\n\r\n\
        {\"error\":\"overloaded\",\"message\":\"server out of file descriptors\"}";
    let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
    let _ = rustix::net::send(sock, RESPONSE, flags);
}

impl super::State {
    /// Sets on the shard's listeners the socket options every accepted connection takes from
    /// its listener (Linux copies them into the new socket; `tests::accepted_sockets_inherit_
    /// the_listeners_options` checks it on the running kernel), so accepting costs no
    /// `setsockopt` per connection: TCP_NODELAY (tickcast coalesces frames itself, Nagle would
    /// only delay them) and `server.tcp_notsent_lowat_bytes` (0: the kernel's default). At start
    /// and after a reload; listeners handed over by `--takeover` get them too.
    pub(super) fn set_listener_options(&self) {
        let lowat = self.cfg.server.tcp_notsent_lowat_bytes;
        for listener in &self.listeners {
            let fd = crate::sys::fd_of(&**listener);
            let nodelay = rustix::net::sockopt::set_tcp_nodelay(fd, true).map_err(Into::into);
            let lowat = crate::sys::set_tcp_notsent_lowat(fd, lowat);
            if let Err(e) = nodelay.and(lowat) {
                tracing::warn!(shard = self.shard, error = %e, "listener socket options not set");
            }
        }
    }
}

/// The bucket of a peer address in the per-IP connection counters.
pub(super) fn ip_bucket(ip: IpAddr) -> u32 {
    let mut h = std::hash::DefaultHasher::new();
    ip.hash(&mut h);
    (h.finish() % crate::limits::HASHED_COUNTER_BUCKETS as u64) as u32
}

impl Shard {
    fn on_accept(self: &Rc<Self>, sock: OwnedFd, peer: SocketAddr, tls: bool) {
        let mut st = self.st.borrow_mut();
        st.stats.c.accepted += 1;
        if st.stopping {
            st.stats.closed(crate::stats::CloseReason::Shutdown);
            return;
        }
        // Counted first, checked after: two shards cannot both take the last slot.
        let open = self.shared.connections.fetch_add(1, Ordering::Relaxed);
        if open >= self.shared.accept_cap {
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
            refuse(&sock);
            st.stats.c.fd_rejects += 1;
            st.stats.c.limit_rejects += 1;
            st.stats.closed(crate::stats::CloseReason::Rejected);
            return;
        }
        if st.conns.handshakes() >= st.cfg.limits.handshakes_per_shard_max {
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
            // No response: under a handshake flood, answering costs what it defends.
            st.stats.c.limit_rejects += 1;
            st.stats.closed(crate::stats::CloseReason::Rejected);
            return;
        }
        // The TLS state first: a connection it cannot be created for is not accepted.
        let tls = match tls {
            false => None,
            true => match self.new_tls_session() {
                Some(session) => Some(session),
                None => {
                    self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                    st.stats.c.tls_handshake_failures += 1;
                    st.stats.closed(crate::stats::CloseReason::Rejected);
                    return;
                }
            },
        };
        // TCP_NODELAY and TCP_NOTSENT_LOWAT come with the socket from its listener
        // (`State::set_listener_options`): no system call of its own.
        let ip = peer.ip().to_canonical();
        let now = st.clock();
        let deadline = now + st.cfg.timeouts.handshake_ms;
        let mut conn = Conn::new(sock, ip, now, deadline);
        conn.tls = tls;
        conn.prelude = st.prelude_for(ip);
        // Numbered, in the readiness set, and holding a handshake slot until its upgrade or
        // removal. From here on it is read when its socket is readable (`conn::poll`).
        if let Err(e) = st.conns.insert(conn) {
            // The kernel refused the readiness registration (fs.epoll.max_user_watches,
            // memory): the connection is closed unanswered, like one over the limits.
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
            st.stats.c.limit_rejects += 1;
            st.stats.closed(crate::stats::CloseReason::Rejected);
            if st.stats.c.limit_rejects.is_power_of_two() {
                tracing::warn!(shard = self.id, error = %e, "connection refused: epoll_ctl failed");
            }
            return;
        }
        self.shared.per_ip[ip_bucket(ip) as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    /// What `State::set_listener_options` relies on: a connection accepted from a listener
    /// with TCP_NODELAY and TCP_NOTSENT_LOWAT set has them too (Linux copies the listener's
    /// TCP state into the new socket).
    #[test]
    fn accepted_sockets_inherit_the_listeners_options() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        rustix::net::sockopt::set_tcp_nodelay(&listener, true).unwrap();
        crate::sys::set_tcp_notsent_lowat(listener.as_fd(), 131_072).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(rustix::net::sockopt::tcp_nodelay(&accepted).unwrap());
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `accepted` is open for the call; `value` and `len` live on this stack frame
        // and `len` is `value`'s exact size, as getsockopt(2) requires.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&accepted),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(value, 131_072);
    }

    /// The canned 503 is one well-formed response whose body is exactly its length.
    #[test]
    fn the_refusal_is_a_complete_response() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        super::refuse(&a);
        drop(a);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &b, &mut got).unwrap();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut res = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = res.parse(&got).unwrap() else {
            panic!("incomplete");
        };
        assert_eq!(res.code, Some(503));
        let len = res
            .headers
            .iter()
            .find(|h| h.name == "Content-Length")
            .unwrap();
        let len: usize = std::str::from_utf8(len.value).unwrap().parse().unwrap();
        assert_eq!(got.len() - n, len);
        let body: serde_json::Value = serde_json::from_slice(&got[n..]).unwrap();
        assert_eq!(body["error"], "overloaded");
    }
}
