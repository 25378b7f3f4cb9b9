//! Durable-stream benches: the per-event costs around a group commit.
//!
//! - `encode_event_with_seq` / `event_seq`: the durable event frame, and the cheap `seq` probe the
//!   replay filter and the Redis receive path use.
//! - `sequencer_*`: per-event cost of in-order delivery (events in order; adjacent pairs swapped).
//! - `store_append_*`: one group commit into SQLite (a file in a temp dir, WAL); with
//!   `SYNCGATE_BENCH_PG=postgres://…` (an empty database) also PostgreSQL.
//!
//! Run: `cargo bench --bench durable`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use syncgate::protocol::{self, Stamp};
use syncgate::registry::sequencer::Sequencer;
use syncgate::store::events::{NewEvent, Turn};
use syncgate::store::Store;
use tokio_tungstenite::tungstenite::Message;

const DATA: &[u8] = br#"{"text":"hello there, this is a typical chat message","attachments":[],"n":42}"#;

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable");
    g.throughput(Throughput::Elements(1));
    let stamp = Stamp { seq: 123_456, msg_id: Some("0190f3a2-7c4e-7b1a-9d2e-5f6a7b8c9d0e") };
    g.bench_function("encode_event_with_seq", |b| {
        b.iter(|| {
            black_box(protocol::durable_event(
                "dm:alice:bob",
                "message:created",
                black_box(DATA),
                Some(("alice", "phone-1")),
                1_700_000_000_000,
                stamp,
                None,
            ))
        })
    });
    let frame = protocol::durable_event("dm:alice:bob", "m", DATA, Some(("alice", "p")), 1, stamp, None);
    g.bench_function("event_seq", |b| b.iter(|| black_box(protocol::event_seq(black_box(frame.as_bytes())))));

    const N: u64 = 1000;
    g.throughput(Throughput::Elements(N));
    let msg = Message::Text(frame.clone());
    g.bench_function("sequencer_in_order_1000", |b| {
        b.iter_batched(
            Sequencer::default,
            |q| {
                let mut n = 0u64;
                for s in 1..=N {
                    q.offer("user:bob", "dm:alice:bob", s, msg.clone(), 0, 0, |_, _| n += 1);
                }
                assert_eq!(n, N);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sequencer_swapped_pairs_1000", |b| {
        b.iter_batched(
            Sequencer::default,
            |q| {
                let mut n = 0u64;
                for pair in 0..N / 2 {
                    for s in [pair * 2 + 2, pair * 2 + 1] {
                        q.offer("user:bob", "dm:alice:bob", s, msg.clone(), 0, 0, |_, _| n += 1);
                    }
                }
                black_box(n);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn batch(i: u64, n: usize, channels: usize) -> Vec<(String, String)> {
    (0..n).map(|k| (format!("dm:a{}:b", k % channels), format!("m-{i}-{k}"))).collect()
}

fn store_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut targets: Vec<(&str, std::collections::HashMap<String, String>)> = Vec::new();
    let dir = std::env::temp_dir().join(format!("syncgate-bench-{}", std::process::id()));
    targets.push(("sqlite", [("SYNCGATE_DATA_DIR".to_string(), dir.display().to_string())].into()));
    if let Ok(url) = std::env::var("SYNCGATE_BENCH_PG") {
        targets.push(("postgres", [("DATABASE_URL".to_string(), url)].into()));
    }
    let mut g = c.benchmark_group("durable");
    for (name, vars) in targets {
        let config = syncgate::config::Config::from_map(&vars).unwrap();
        let store: Store = rt.block_on(Store::open(&config)).unwrap();
        // As the gateway's writer does: statistics refreshed each time the events double.
        let mut stored = 0u64;
        let mut next_analyze = 1_000u64;
        for size in [1usize, 100] {
            g.throughput(Throughput::Elements(size as u64));
            let mut i = 0u64;
            g.bench_function(format!("store_append_{name}_batch_{size}"), |b| {
                b.iter(|| {
                    i += 1;
                    let rows = batch(i, size, 50);
                    let events: Vec<NewEvent<'_>> = rows
                        .iter()
                        .map(|(c, m)| NewEvent {
                            channel: c,
                            event: "m",
                            data: "{\"text\":\"hello\"}",
                            from: Some(("a", "phone")),
                            msg_id: Some(m),
                            ts: 1_700_000_000_000,
                            sig: None,
                        })
                        .collect();
                    black_box(rt.block_on(store.append(&events, Turn::default())).unwrap());
                    stored += size as u64;
                    if stored >= next_analyze {
                        next_analyze *= 2;
                        rt.block_on(store.analyze_streams()).unwrap();
                    }
                })
            });
        }
    }
    g.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, frames, store_append);
criterion_main!(benches);
