//! Live heap bytes and allocations per idle TLS server connection, after a handshake and a
//! little data both ways, for three ways to hold one: rustls' `ServerConnection` (tickcast
//! before 2026-12-06), rustls' `UnbufferedServerConnection`, and tickcast's `Session`
//! (rustls for the handshake, then `tickcast::tls::record`). The allocator is the system's,
//! wrapped to count: the figures are what each holds, before any allocator's size classes.
//!
//!     cargo run --release --manifest-path perf/tls-heap/Cargo.toml -- [CONNECTIONS] [12]
//!
//! `12` makes the client speak TLS 1.2 (default TLS 1.3); both use AES-256-GCM (ECDSA P-256
//! certificate). The server's session cache (256 sessions, bounded) is counted as it comes:
//! a few bytes per connection at 10,000.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{Read, Write},
    sync::{
        Arc,
        atomic::{AtomicIsize, Ordering::Relaxed},
    },
};

use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
    server::UnbufferedServerConnection, unbuffered::ConnectionState,
};
use tickcast::tls::{server_config_from_pem, session::Session};

struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Relaxed);
        LIVE_ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A request's worth from the client, an ack's from the server.
const UP: &[u8] = &[b'u'; 300];
const DOWN: &[u8] = &[b'd'; 300];

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(1000, |a| a.parse().expect("CONNECTIONS"));
    let tls12 = args.next().as_deref() == Some("12");
    let (server, client) = configs(tls12);
    println!(
        "{n} idle connections, TLS {}: live heap per connection (allocations)",
        if tls12 { "1.2" } else { "1.3" }
    );
    measure("rustls ServerConnection", n, || {
        let mut s = ServerConnection::new(server.clone()).unwrap();
        let mut c = new_client(&client);
        buffered_exchange(&mut s, &mut c);
        Box::new(s)
    });
    measure("rustls UnbufferedServerConnection", n, || {
        let mut s = UnbufferedServerConnection::new(server.clone()).unwrap();
        let mut c = new_client(&client);
        unbuffered_exchange(&mut s, &mut c);
        Box::new(s)
    });
    measure("tickcast Session", n, || {
        let mut s = Session::new(server.clone()).unwrap();
        let mut c = new_client(&client);
        session_exchange(&mut s, &mut c);
        Box::new(s)
    });
}

/// Makes `n` idle connections with `make` (their clients dropped) and prints what they hold.
fn measure<T>(name: &str, n: usize, mut make: impl FnMut() -> Box<T>) {
    let (bytes, allocs) = (LIVE_BYTES.load(Relaxed), LIVE_ALLOCS.load(Relaxed));
    let mut kept = Vec::with_capacity(n);
    for _ in 0..n {
        kept.push(make());
    }
    let per = |now: isize, before: isize| (now - before) as f64 / n as f64;
    // The `kept` vector's own slot (8 bytes per connection) is not the connection's.
    let vec_bytes = (kept.capacity() * std::mem::size_of::<Box<T>>()) as isize;
    println!(
        "{name:<36} {:>6.0} B ({:.1})",
        per(LIVE_BYTES.load(Relaxed) - vec_bytes, bytes),
        per(LIVE_ALLOCS.load(Relaxed) - 1, allocs)
    );
}

fn configs(tls12: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    // tickcast's own configuration (TLS 1.3 and 1.2, ALPN, secret extraction on).
    let server = server_config_from_pem(&ck.cert.pem(), &ck.signing_key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let version = if tls12 {
        &rustls::version::TLS12
    } else {
        &rustls::version::TLS13
    };
    let mut client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The client keeps no tickets: what stays allocated is the server's.
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

fn new_client(config: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap()
}

/// The client's pending records.
fn from_client(c: &mut ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    wire
}

/// Records to the client, and the plaintext it gets out of them.
fn to_client(c: &mut ClientConnection, mut wire: &[u8]) -> Vec<u8> {
    while !wire.is_empty() {
        c.read_tls(&mut wire).unwrap();
        c.process_new_packets().unwrap();
    }
    let mut plain = Vec::new();
    let _ = c.reader().read_to_end(&mut plain);
    plain
}

fn buffered_exchange(s: &mut ServerConnection, c: &mut ClientConnection) {
    c.writer().write_all(UP).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let wire = from_client(c);
        let mut wire = &wire[..];
        while !wire.is_empty() {
            s.read_tls(&mut wire).unwrap();
            s.process_new_packets().unwrap();
        }
        let _ = s.reader().read_to_end(&mut got);
        if !s.is_handshaking() && got.len() == UP.len() {
            s.writer().write_all(DOWN).unwrap();
        }
        let mut out = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut out).unwrap();
        }
        to_client(c, &out);
    }
    assert!(!s.is_handshaking() && got == UP);
}

fn unbuffered_exchange(s: &mut UnbufferedServerConnection, c: &mut ClientConnection) {
    c.writer().write_all(UP).unwrap();
    let (mut got, mut sent) = (Vec::new(), false);
    for _ in 0..4 {
        let mut input = from_client(c);
        let mut out = Vec::new();
        loop {
            let status = s.process_tls_records(&mut input);
            let discard = status.discard;
            let done = match status.state.unwrap() {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        got.extend_from_slice(rec.unwrap().payload);
                    }
                    false
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    let mut buf = vec![0; 16 * 1024];
                    let n = e.encode(&mut buf).unwrap();
                    out.extend_from_slice(&buf[..n]);
                    false
                }
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    false
                }
                ConnectionState::WriteTraffic(mut w) => {
                    if got.len() == UP.len() && !sent {
                        sent = true;
                        let mut buf = vec![0; DOWN.len() + 64];
                        let n = w.encrypt(DOWN, &mut buf).unwrap();
                        out.extend_from_slice(&buf[..n]);
                    }
                    true
                }
                _ => true,
            };
            input.drain(..discard);
            if done {
                break;
            }
        }
        to_client(c, &out);
    }
    assert!(sent);
}

fn session_exchange(s: &mut Session, c: &mut ClientConnection) {
    c.writer().write_all(UP).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let mut input = from_client(c);
        let (mut early, mut send) = (Vec::new(), Vec::new());
        let read = s.read(&mut input, &mut early, &mut send).unwrap();
        got.extend_from_slice(&early);
        got.extend_from_slice(&input[read.plain]);
        if let (Some(records), true) = (s.records(), got.len() == UP.len()) {
            records
                .seal(&[std::io::IoSlice::new(DOWN)], usize::MAX, &mut send)
                .unwrap();
            got.push(0);
        }
        to_client(c, &send);
    }
    assert!(!s.is_handshaking() && got.len() == UP.len() + 1);
}
