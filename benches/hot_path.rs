//! Hot-path benches: decode a publish frame (depth pre-scan + simd-json), refuse a nesting bomb, encode an event once, and fan it out to
//! 10 000 registry entries (one `Bytes` clone pushed into each bounded queue).
//!
//! Run: `cargo bench --bench hot_path`

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use syncgate::protocol;
use syncgate::registry::{ConnHandle, Membership};

#[path = "support/mod.rs"]
mod support;
use tokio_tungstenite::tungstenite::Message;

const PUBLISH: &[u8] = br#"{"type":"publish","id":17,"channel":"room:lobby","event":"message:created","data":{"text":"hello there, this is a typical chat message","attachments":[],"n":42}}"#;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let mut scratch = Vec::new();
    g.bench_function("decode_publish", |b| {
        b.iter(|| black_box(protocol::decode(black_box(PUBLISH), &mut scratch, 128).unwrap()))
    });
    // The nesting pre-scan alone (part of decode_publish above), and on the 800 kB nesting bomb
    // that it refuses before simd-json would recurse into it.
    g.bench_function("depth_check_publish", |b| {
        b.iter(|| black_box(syncgate::util::json::check_depth(black_box(PUBLISH), 128)))
    });
    // The frame pre-scan decode runs: depth plus what simd-json would misread (numbers, surrogates).
    g.bench_function("frame_check_publish", |b| {
        b.iter(|| black_box(syncgate::util::json::check_frame(black_box(PUBLISH), 128)))
    });
    let bomb = "[".repeat(400_000) + &"]".repeat(400_000);
    g.bench_function("decode_nesting_bomb_800k", |b| {
        b.iter(|| black_box(protocol::decode(black_box(bomb.as_bytes()), &mut scratch, 128).is_err()))
    });
    let data = br#"{"text":"hello there, this is a typical chat message","attachments":[],"n":42}"#;
    g.bench_function("encode_event", |b| {
        b.iter(|| {
            black_box(protocol::event(
                "room:lobby",
                "message:created",
                black_box(data),
                "alice",
                "phone-1",
                1_700_000_000_000,
            ))
        })
    });
    g.finish();
}

fn fan_out(c: &mut Criterion) {
    const N: usize = 10_000;
    let (registry, conns, _members) = support::lobby(N);
    let stats = Arc::new(syncgate::metrics::Metrics::default());
    let mut spare = VecDeque::new();
    for c in &conns {
        c.take(&mut spare);
        spare.clear();
    }

    let mut g = c.benchmark_group("fan_out");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(30);
    let data = br#"{"text":"hello"}"#;
    g.bench_function("encode_once_10k_recipients", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let frame = protocol::event("room:lobby", "msg", data, "alice", "d", 1);
                let n = registry.fan_out("room:lobby", &Message::Text(frame), 0);
                total += start.elapsed();
                assert_eq!(n, N);
                // Writers drain their queues (not timed): keeps the queues from overflowing.
                for c in &conns {
                    c.take(&mut spare);
                    spare.clear();
                }
            }
            total
        })
    });
    g.bench_function("subscribe_unsubscribe", |b| {
        let extra = Arc::new(ConnHandle::new(u64::MAX, "z".into(), "d".into(), 8, 1 << 20, stats.clone()));
        b.iter_batched(
            || Membership::new(registry.clone(), extra.clone()),
            |mut m| {
                m.join("room:other");
                m.leave("room:other");
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Metrics on the hot path: one sharded counter add and one histogram observation, single
/// threaded and with two threads hammering the same series (versus one shared atomic).
fn metrics(c: &mut Criterion) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use syncgate::metrics::{Counter, FrameOut, Histogram, Metrics};
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1));
    let m = Metrics::default();
    g.bench_function("counter_inc", |b| b.iter(|| m.frames_out.inc(black_box(FrameOut::Text))));
    g.bench_function("fanout_histogram_observe", |b| b.iter(|| m.fanout_seconds.observe(black_box(0.00042))));
    const N: u64 = 1_000_000;
    g.throughput(Throughput::Elements(2 * N));
    g.sample_size(10);
    let sharded = Arc::new(Counter::default());
    g.bench_function("two_threads_1m_incs_sharded", |b| {
        b.iter(|| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let c = sharded.clone();
                    std::thread::spawn(move || (0..N).for_each(|_| c.inc()))
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
        })
    });
    let shared = Arc::new(AtomicU64::new(0));
    g.bench_function("two_threads_1m_incs_one_shared_atomic", |b| {
        b.iter(|| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let c = shared.clone();
                    std::thread::spawn(move || {
                        (0..N).for_each(|_| {
                            c.fetch_add(1, Ordering::Relaxed);
                        })
                    })
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
        })
    });
    let _ = Histogram::new(&[1.0]);
    g.finish();
}

criterion_group!(benches, codec, fan_out, metrics);
criterion_main!(benches);
