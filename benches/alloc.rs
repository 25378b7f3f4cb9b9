//! Allocation counts on the hot path (issue 18): a counting global allocator around mimalloc.
//!
//! 1. Fan-out: one event frame, encoded once like the publish path (`protocol::event`), handed to
//!    N subscribers of one channel by `Registry::fan_out`; the queues are drained the way each
//!    connection's writer does (`ConnHandle::take` into its own spare `VecDeque`, kept across
//!    rounds). After warm-up (two rounds: see `check_fan_out`), one more delivery must allocate
//!    no more for N = 10 000 than for N = 10 (plus [`SLACK`]): nothing is allocated per recipient.
//! 2. `protocol::decode` of a typical publish frame after warm-up: only the owned fields of the
//!    result may allocate (see [`DECODE_MAX_ALLOCS`]), not simd-json's buffers or tape.
//!
//! The checks run first and exit non-zero when they fail; then criterion times the two.
//!
//! Run: `cargo bench --bench alloc -- --warm-up-time 1 --measurement-time 3`

use std::alloc::{GlobalAlloc, Layout};
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mimalloc::MiMalloc;
use syncgate::protocol;
use syncgate::registry::{ConnHandle, Membership, Registry};

#[path = "support/mod.rs"]
mod support;
use tokio_tungstenite::tungstenite::Message;

/// Counts every `alloc`, `alloc_zeroed` and `realloc` (frees are not counted).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to mimalloc.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` (the bench is single-threaded while it counts).
fn count<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCS.load(Ordering::SeqCst);
    let r = f();
    (ALLOCS.load(Ordering::SeqCst) - before, r)
}

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
/// Allowed excess of allocations(N = 10 000) over allocations(N = 10) for one delivery.
const SLACK: u64 = 2;

const PUBLISH: &[u8] = br#"{"type":"publish","id":17,"channel":"room:lobby","event":"message:created","data":{"text":"hello there, this is a typical chat message","attachments":[],"n":42}}"#;
/// Allocations allowed for decoding [`PUBLISH`] into an owned `Frame`: the request id (its JSON
/// text, then boxed: 2), `channel`, `event` and `data` (1 each). simd-json's buffers and tape,
/// and the caller's scratch, are reused: 0.
const DECODE_MAX_ALLOCS: u64 = 5;

/// N connections subscribed to `room:lobby`, each with the spare queue its writer keeps.
struct Fan {
    registry: Arc<Registry>,
    conns: Vec<Arc<ConnHandle>>,
    spares: Vec<VecDeque<Message>>,
    _members: Vec<Membership>,
}

impl Fan {
    fn new(n: usize) -> Fan {
        let (registry, conns, members) = support::lobby(n);
        let spares = (0..n).map(|_| VecDeque::new()).collect();
        let mut fan = Fan { registry, conns, spares, _members: members };
        fan.drain();
        fan
    }

    /// Encodes the event once and hands it to every member, as `Publisher::live` does.
    fn deliver(&self) -> usize {
        let frame = protocol::event("room:lobby", "message:created", br#"{"text":"hello"}"#, "alice", "phone-1", 1);
        self.registry.fan_out("room:lobby", &Message::Text(frame), 0)
    }

    /// What each connection's writer does: swap the queue into its spare, write, keep the spare.
    fn drain(&mut self) {
        for (c, spare) in self.conns.iter().zip(&mut self.spares) {
            c.take(spare);
            spare.drain(..).for_each(drop);
            c.written();
        }
    }
}

fn check_fan_out() {
    let mut per_n = Vec::new();
    for n in SIZES {
        let mut fan = Fan::new(n);
        // Warm-up takes two rounds, not one: the first delivery gives each queue a buffer, then
        // the writer's `take` swaps it into its spare and the queue gets the spare's (still
        // empty) buffer, which the second delivery fills. From then on the two buffers trade
        // places and nothing is allocated per recipient. (Members that joined while fewer than
        // 1000 were in the channel already had both buffers from the join frames.)
        let (first, _) = count(|| fan.deliver());
        fan.drain();
        let (second, _) = count(|| fan.deliver());
        fan.drain();
        let (steady, delivered) = count(|| fan.deliver());
        fan.drain();
        assert_eq!(delivered, n);
        println!("fan_out N={n:>5}: allocations per delivery: 1st {first}, 2nd {second}, then {steady}");
        per_n.push((n, steady));
    }
    let small = per_n[0].1;
    let large = per_n[per_n.len() - 1].1;
    if large > small + SLACK {
        eprintln!("FAIL: fan_out allocates per recipient: {large} (N=10000) > {small} (N=10) + {SLACK}");
        std::process::exit(1);
    }
    println!("fan_out: OK ({large} allocations at N=10000 vs {small} at N=10, slack {SLACK})");
}

fn check_decode() {
    let mut scratch = Vec::new();
    for _ in 0..3 {
        black_box(protocol::decode(PUBLISH, &mut scratch, 128).unwrap());
    }
    let (n, frame) = count(|| protocol::decode(black_box(PUBLISH), &mut scratch, 128).unwrap());
    drop(frame);
    println!("decode publish ({} bytes): {n} allocations per frame after warm-up", PUBLISH.len());
    if n > DECODE_MAX_ALLOCS {
        eprintln!("FAIL: decode allocates {n} times per frame (at most {DECODE_MAX_ALLOCS} allowed)");
        std::process::exit(1);
    }
}

fn alloc_checks(c: &mut Criterion) {
    check_fan_out();
    check_decode();

    let mut g = c.benchmark_group("alloc");
    g.throughput(Throughput::Elements(1));
    let mut scratch = Vec::new();
    g.bench_function("decode_publish", |b| {
        b.iter(|| black_box(protocol::decode(black_box(PUBLISH), &mut scratch, 128).unwrap()))
    });
    const N: usize = 10_000;
    let mut fan = Fan::new(N);
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(30);
    g.bench_function("fan_out_10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let n = fan.deliver();
                total += start.elapsed();
                assert_eq!(n, N);
                // The writers drain (not timed).
                fan.drain();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, alloc_checks);
criterion_main!(benches);
