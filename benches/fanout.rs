//! One fan-out of a frame to 10,000 in-memory queues: what a shard does per local subscriber
//! when a publish arrives, minus the per-connection checks (`src/shard/fanout.rs`,
//! `deliver_local`).
//!
//! Three ways to hand one encoded frame to 10k queues, timed per subscriber:
//! - `rc`: tickcast's way. The frame is encoded once ([`encode_data_frame`]) into an
//!   `Arc<Frame>`, wrapped once per shard in an `Rc` ([`OutFrame`]), and every
//!   [`OutQueue::push`] gets an `Rc` clone: one non-atomic increment and an 8-byte slot.
//! - `arc`: the same queue shape (bench-local `ArcQueue`, same fields and `push` as `OutQueue`)
//!   holding `Arc<Frame>` and one atomic increment per subscriber, i.e. no shard-local `Rc`.
//! - `copy`: a queue of owned byte buffers (`Vec<u8>`), one allocation and copy of the frame's
//!   bytes per subscriber, i.e. no shared encoded frame at all.
//!
//! Each variant in two queue states:
//! - `warm`: the queue already has spare capacity, as a busy connection's queue does (flushes
//!   keep up to `OUTQ_KEEP_ENTRIES` slots), so `push` does not allocate.
//! - `cold`: the queue has no capacity (as after [`OutQueue::clear`], or a connection's first
//!   frame after its queue was released), so the first `push` allocates the queue's buffer.
//!
//! Only the 10k pushes are timed. Between timed rounds the queues are emptied with
//! [`OutQueue::clear`] (and its equivalent for the comparison queues), untimed, so memory stays
//! bounded; the release of each handle (Rc/Arc decrement or `Vec` free) is therefore not in the
//! figure.
//!
//! Run with `cargo bench --bench fanout` (see benches/README.md).

use std::{
    collections::VecDeque,
    hint::black_box,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickcast::{
    frame::{Frame, OutFrame, SharedFrame, encode_data_frame},
    shard::out::OutQueue,
};

/// The allocator of the `tickcast` binary (src/main.rs), so allocating paths cost what they
/// cost in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const QUEUES: usize = 10_000;

/// Timed pushes per queue between two clears in the `warm` state: the queue is cleared, one
/// untimed push allocates its buffer (capacity 4 for 8-byte handles), then up to three more
/// timed pushes fit without growing it.
const WARM_PUSHES: u64 = 3;

/// The operations the fan-out needs of a queue.
trait Queue<H>: Default {
    fn push(&mut self, handle: H);
    fn clear(&mut self);
}

impl Queue<OutFrame> for OutQueue {
    #[inline]
    fn push(&mut self, handle: OutFrame) {
        OutQueue::push(self, handle)
    }
    fn clear(&mut self) {
        OutQueue::clear(self)
    }
}

/// `OutQueue` with `Arc<Frame>` handles instead of `Rc<Arc<Frame>>`.
#[derive(Default)]
struct ArcQueue {
    frames: VecDeque<SharedFrame>,
    /// Unused here; kept so the queue has `OutQueue`'s size and layout.
    #[allow(dead_code)]
    head_sent: usize,
    bytes: usize,
}

impl Queue<SharedFrame> for ArcQueue {
    #[inline]
    fn push(&mut self, handle: SharedFrame) {
        self.bytes += handle.len();
        self.frames.push_back(handle);
    }
    fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.head_sent = 0;
        self.bytes = 0;
    }
}

/// `OutQueue` with a private copy of the bytes per subscriber.
#[derive(Default)]
struct CopyQueue {
    frames: VecDeque<Vec<u8>>,
    /// Unused here; kept so the queue has `OutQueue`'s size and layout.
    #[allow(dead_code)]
    head_sent: usize,
    bytes: usize,
}

impl Queue<Vec<u8>> for CopyQueue {
    #[inline]
    fn push(&mut self, handle: Vec<u8>) {
        self.bytes += handle.len();
        self.frames.push_back(handle);
    }
    fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.head_sent = 0;
        self.bytes = 0;
    }
}

/// One fan-out: a handle made by `make` pushed to every queue. This loop is what is timed.
#[inline(never)]
fn fan_out<H, Q: Queue<H>>(queues: &mut [Q], make: &impl Fn() -> H) {
    for q in queues.iter_mut() {
        q.push(make());
    }
}

/// Times `iters` fan-outs to [`QUEUES`] queues. `warm`: every timed push lands in spare
/// capacity; otherwise every timed push is the first into an empty, released queue.
fn run<H, Q: Queue<H>>(iters: u64, warm: bool, make: impl Fn() -> H) -> Duration {
    let mut queues: Vec<Q> = (0..QUEUES).map(|_| Q::default()).collect();
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        // Untimed: empty every queue, then (warm) give each one its buffer back.
        queues.iter_mut().for_each(Q::clear);
        let rounds = if warm {
            fan_out(&mut queues, &make);
            WARM_PUSHES.min(iters - done)
        } else {
            1
        };
        for _ in 0..rounds {
            let start = Instant::now();
            fan_out(black_box(&mut queues), &make);
            total += start.elapsed();
        }
        done += rounds;
    }
    queues.iter_mut().for_each(Q::clear);
    total
}

fn frame(data_len: usize) -> Frame {
    let mut data = vec![b'7'; data_len];
    data[0] = b'1';
    encode_data_frame(
        "md.binance.BTCUSDT.trades",
        123_456,
        1_732_172_400_123_456,
        &data,
        1,
    )
}

fn bench_fanout(c: &mut Criterion) {
    for (name, data_len) in [("100B", 100), ("1KiB", 1024)] {
        let shared: SharedFrame = Arc::new(frame(data_len));
        let out: OutFrame = Rc::new(Arc::clone(&shared));
        let bytes = shared.bytes().to_vec();
        eprintln!("fanout_10k/{name}: frame of {} bytes", shared.len());

        let mut group = c.benchmark_group(format!("fanout_10k/{name}"));
        group.throughput(Throughput::Elements(QUEUES as u64));
        for (state, warm) in [("warm", true), ("cold", false)] {
            group.bench_function(format!("rc/{state}"), |b| {
                b.iter_custom(|iters| run::<OutFrame, OutQueue>(iters, warm, || Rc::clone(&out)))
            });
            group.bench_function(format!("arc/{state}"), |b| {
                b.iter_custom(|iters| {
                    run::<SharedFrame, ArcQueue>(iters, warm, || Arc::clone(&shared))
                })
            });
            group.bench_function(format!("copy/{state}"), |b| {
                b.iter_custom(|iters| run::<Vec<u8>, CopyQueue>(iters, warm, || bytes.clone()))
            });
        }
        group.finish();
        // Every handle pushed was released by the clears.
        assert_eq!(Rc::strong_count(&out), 1);
        assert_eq!(Arc::strong_count(&shared), 2);
    }
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
