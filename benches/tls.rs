//! The TLS record layer of an established connection (`src/tls/record.rs`): what a TLS
//! subscriber's write costs on top of a plain one (sealing its frames into the shard's write
//! buffer), and what reading a client's record costs (its key expanded, the record opened in
//! place). TLS 1.3 with AES-256-GCM, the suite rustls clients get; frames of 160 bytes, about
//! a market-data frame.
//!
//! - `seal/1x160`: one frame, one record (a write at a low rate: one frame per write).
//! - `seal/8x160`: eight frames in one record (a write at the 1k × 1 topic shape's ~8
//!   deliveries per write).
//! - `seal/64KiB`: a full write batch, four records.
//! - `open/160`: one 160-byte record from the client, as one read.
//!
//! Run with `cargo bench --bench tls` (see benches/README.md).

use std::{
    hint::black_box,
    io::{IoSlice, Write},
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tickcast::tls::{server_config_from_pem, session::Session};

/// The allocator of the `tickcast` binary (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FRAME_BYTES: usize = 160;

/// A server session whose handshake with a rustls client is done, and that client.
fn established() -> (Session, ClientConnection) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let server = server_config_from_pem(&ck.cert.pem(), &ck.signing_key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client =
        ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).expect("client");
    let mut session = Session::new(Arc::new(server)).expect("session");
    let mut tail = Vec::new();
    while session.is_handshaking() {
        while client.wants_write() {
            client.write_tls(&mut tail).unwrap();
        }
        let (mut early, mut send) = (Vec::new(), Vec::new());
        let read = session.read(&mut tail, &mut early, &mut send).unwrap();
        tail.drain(..read.consumed);
        let mut wire = &send[..];
        while !wire.is_empty() {
            client.read_tls(&mut wire).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    (session, client)
}

fn seal(c: &mut Criterion) {
    let (mut session, _client) = established();
    let records = session.records().expect("established");
    let frame = vec![b'x'; FRAME_BYTES];
    let batch = vec![b'y'; 64 * 1024];
    let mut out = Vec::with_capacity(80 * 1024);
    let mut g = c.benchmark_group("seal");
    for (name, frames) in [("1x160", 1), ("8x160", 8)] {
        let iov = vec![IoSlice::new(&frame); frames];
        g.throughput(Throughput::Elements(frames as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(records.seal(black_box(&iov), usize::MAX, &mut out).unwrap());
            })
        });
    }
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("64KiB", |b| {
        let iov = [IoSlice::new(&batch)];
        b.iter(|| {
            out.clear();
            black_box(records.seal(black_box(&iov), usize::MAX, &mut out).unwrap());
        })
    });
    g.finish();
}

fn open(c: &mut Criterion) {
    let (mut session, mut client) = established();
    let (mut early, mut send) = (Vec::new(), Vec::new());
    let mut g = c.benchmark_group("open");
    g.bench_function("160", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Records from the client, made untimed in chunks (each opens once).
                let n = left.min(10_000);
                let mut records = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    client.writer().write_all(&[b'z'; FRAME_BYTES]).unwrap();
                    let mut wire = Vec::new();
                    client.write_tls(&mut wire).unwrap();
                    records.push(wire);
                }
                let start = Instant::now();
                for wire in &mut records {
                    let read = session.read(wire, &mut early, &mut send).unwrap();
                    black_box(read.plain);
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, seal, open);
criterion_main!(benches);
