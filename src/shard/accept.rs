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
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => shard.on_accept(stream, peer, tls),
            Err(e) => {
                if shard.st.borrow().stopping {
                    return;
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
