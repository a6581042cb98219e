//! The accept loop of a shard's SO_REUSEPORT listener, and the limits checked at accept.

use std::{
    hash::{Hash, Hasher},
    net::{IpAddr, SocketAddr},
    rc::Rc,
    sync::atomic::Ordering,
    time::Duration,
};

use monoio::net::{TcpListener, TcpStream};

use super::{Shard, conn::Conn};

/// `tls`: the connections of this listener speak TLS (see `super::tls`).
pub async fn accept_loop(shard: Rc<Shard>, listener: Rc<TcpListener>, tls: bool) {
    let mut errors_logged = 0u32;
    // Connections are capped below the descriptor limit (`Shared::accept_cap`), so the process
    // keeps descriptors for itself; should it run out anyway (a broker reconnect storm, a
    // descriptor leak), one is kept in reserve to accept a waiting connection and answer 503
    // rather than leave it unanswered in the backlog (a health check would hang).
    let mut spare = open_spare();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => shard.on_accept(stream, peer, tls),
            Err(e) => {
                {
                    let st = shard.st.borrow();
                    if st.stopping || st.drain.is_some() {
                        // The listener was shut down on purpose.
                        return;
                    }
                }
                let out_of_fds =
                    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                let mut answered = false;
                if out_of_fds && spare.take().is_some() {
                    if let Ok(sock) = rustix::net::accept(crate::sys::fd_of(&*listener)) {
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
                // EMFILE/ENFILE/ENOBUFS: the connection stays in the backlog; back off
                // instead of spinning on it.
                if errors_logged < 10 || errors_logged.is_power_of_two() {
                    tracing::warn!(shard = shard.id, error = %e, "accept failed");
                }
                errors_logged = errors_logged.saturating_add(1);
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
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

/// The bucket of a peer address in the per-IP connection counters.
pub(super) fn ip_bucket(ip: IpAddr) -> u32 {
    let mut h = std::hash::DefaultHasher::new();
    ip.hash(&mut h);
    (h.finish() % crate::limits::HASHED_COUNTER_BUCKETS as u64) as u32
}

impl Shard {
    fn on_accept(self: &Rc<Self>, stream: TcpStream, peer: SocketAddr, tls: bool) {
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
            refuse(&crate::sys::fd_of(&stream));
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
        // Latency first: tickcast coalesces frames itself, Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let lowat = st.cfg.server.tcp_notsent_lowat_bytes;
        if lowat > 0 {
            let _ = crate::sys::set_tcp_notsent_lowat(crate::sys::fd_of(&stream), lowat);
        }
        let ip = peer.ip().to_canonical();
        let bucket = ip_bucket(ip);
        self.shared.per_ip[bucket as usize].fetch_add(1, Ordering::Relaxed);
        let now = st.clock();
        let deadline = now + st.cfg.timeouts.handshake_ms;
        let stream = Rc::new(stream);
        let mut conn = Conn::new(stream.clone(), ip, now, deadline);
        conn.tls = tls;
        // Numbered, and holding a handshake slot until its upgrade or removal.
        let key = st.conns.insert(conn);
        drop(st);
        monoio::spawn(super::conn::conn_task(self.clone(), key, stream));
    }
}

#[cfg(test)]
mod tests {
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
