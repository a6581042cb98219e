//! The accept loop of a shard's SO_REUSEPORT listener, and the limits checked at accept.

use std::{
    hash::{Hash, Hasher},
    net::{IpAddr, SocketAddr},
    rc::Rc,
    sync::atomic::Ordering,
    time::Duration,
};

use monoio::net::{TcpListener, TcpStream};

use super::{IP_BUCKETS, Shard, conn::Conn};

/// `tls`: the connections of this listener speak TLS (see `super::tls`).
pub async fn accept_loop(shard: Rc<Shard>, listener: Rc<TcpListener>, tls: bool) {
    let mut errors_logged = 0u32;
    // Out of descriptors, a connection would wait in the backlog with no answer (a health
    // check hangs): one descriptor is kept in reserve to accept it and answer 503.
    let mut spare = open_spare();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => shard.on_accept(stream, peer, tls),
            Err(e) => {
                if shard.st.borrow().stopping {
                    return;
                }
                let out_of_fds =
                    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                if out_of_fds && spare.take().is_some() {
                    let answered = refuse_one(&listener);
                    spare = open_spare();
                    if answered {
                        let mut st = shard.st.borrow_mut();
                        st.stats.c.accepted += 1;
                        st.stats.c.limit_rejects += 1;
                        st.stats.c.fd_rejects += 1;
                        st.stats.closed(crate::stats::CloseReason::Rejected);
                    }
                }
                // EMFILE/ENFILE/ENOBUFS: the connection stays in the backlog; back off
                // instead of spinning on it.
                if errors_logged < 10 || errors_logged.is_power_of_two() {
                    tracing::warn!(shard = shard.id, error = %e, "accept failed");
                }
                errors_logged = errors_logged.saturating_add(1);
                if !out_of_fds || spare.is_none() {
                    monoio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// The reserve descriptor (see `accept_loop`).
fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Accepts one connection from the backlog with the descriptor the spare just freed, answers
/// it 503 and closes it. Returns whether there was one.
fn refuse_one(listener: &TcpListener) -> bool {
    let flags = rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC;
    let Ok(sock) = rustix::net::accept_with(crate::sys::fd_of(listener), flags) else {
        return false;
    };
    let body = br#"{"error":"overloaded","message":"server out of file descriptors"}"#;
    let mut out = Vec::with_capacity(256);
    crate::ws::http::write_response(&mut out, 503, "application/json", body, false, &[]);
    let send = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
    let _ = rustix::net::send(&sock, &out, send);
    // Dropping `sock` closes it (FIN after the response).
    true
}

/// The bucket of a peer address in the per-IP connection counters.
pub(super) fn ip_bucket(ip: IpAddr) -> u32 {
    let mut h = std::hash::DefaultHasher::new();
    ip.hash(&mut h);
    (h.finish() % IP_BUCKETS as u64) as u32
}

impl Shard {
    fn on_accept(self: &Rc<Self>, stream: TcpStream, peer: SocketAddr, tls: bool) {
        let mut st = self.st.borrow_mut();
        st.stats.c.accepted += 1;
        if st.stopping {
            st.stats.closed(crate::stats::CloseReason::Shutdown);
            return;
        }
        if st.handshakes >= self.shared.cfg.limits.handshakes_per_shard_max {
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
                    st.stats.c.tls_handshake_failures += 1;
                    st.stats.closed(crate::stats::CloseReason::Rejected);
                    return;
                }
            },
        };
        // Latency first: tickcast coalesces frames itself, Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let lowat = self.shared.cfg.server.tcp_notsent_lowat_bytes;
        if lowat > 0 {
            let _ = crate::sys::set_tcp_notsent_lowat(crate::sys::fd_of(&stream), lowat);
        }
        let ip = peer.ip().to_canonical();
        let bucket = ip_bucket(ip);
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        self.shared.per_ip[bucket as usize].fetch_add(1, Ordering::Relaxed);
        let now = st.clock();
        let deadline = now + self.shared.cfg.timeouts.handshake_ms;
        let epoch = st.new_epoch();
        st.next_conn_no += 1;
        let no = st.next_conn_no;
        let stream = Rc::new(stream);
        let mut conn = Conn::new(stream.clone(), epoch, ip, no, now, deadline);
        conn.tls = tls;
        let key = st.conns.insert(conn) as u32;
        st.handshakes += 1;
        drop(st);
        monoio::spawn(super::conn::conn_task(self.clone(), key, stream));
    }
}
