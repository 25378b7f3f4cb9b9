//! Cross-instance throughput through a real Redis (127.0.0.1:6379): instance A publishes, instance
//! B fans out to its local subscribers. Reports deliveries/s and PUBLISH commands per message.
//!
//! Run: `cargo bench --bench redis_bus` (needs Redis; scripts/test.sh starts one).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use syncgate::bus::{Bus, RedisBus, RedisSettings};
use syncgate::registry::{ConnHandle, Membership, Registry};
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 100;
const BURST: usize = 1000;

fn settings(prefix: &str) -> RedisSettings {
    RedisSettings::for_url("redis://127.0.0.1:6379", prefix).expect("a valid URL")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let prefix = format!("sgbench:{}:", syncgate::util::random_hex(4));
    let (a, b_registry, subs, _members) = rt.block_on(async {
        let ra = Arc::new(Registry::new());
        let a = RedisBus::start(settings(&prefix), ra.clone()).await.expect("Redis");
        ra.set_hooks(a.clone());
        let rb = Arc::new(Registry::new());
        let b = RedisBus::start(settings(&prefix), rb.clone()).await.expect("Redis");
        rb.set_hooks(b.clone());
        let mut subs = Vec::new();
        let mut members = Vec::new();
        for i in 0..SUBSCRIBERS {
            let c = Arc::new(ConnHandle::new(
                i as u64 + 1,
                format!("u{i}").into(),
                "d".into(),
                1 << 20,
                usize::MAX,
                Arc::default(),
            ));
            let mut m = Membership::new(rb.clone(), c.clone());
            m.join("room:bench");
            b.subscribe("room:bench").await;
            subs.push(c);
            members.push(m);
        }
        (a, rb, subs, members)
    });
    let _ = b_registry;
    let frame = Message::text(
        r#"{"type":"event","channel":"room:bench","event":"e","data":{"text":"hello"},"from":{"user_id":"u","device_id":"d"},"ts":1}"#,
    );
    let mut g = c.benchmark_group("redis_bus");
    g.throughput(Throughput::Elements((BURST * SUBSCRIBERS) as u64));
    g.sample_size(10);
    g.bench_function("cross_instance_1000_msgs_to_100_subscribers", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for _ in 0..BURST {
                    a.publish("room:bench", frame.clone(), 0);
                }
                // Wait until the last subscriber has everything.
                let mut q = VecDeque::new();
                let mut got = 0;
                let last = &subs[SUBSCRIBERS - 1];
                while got < BURST {
                    last.take(&mut q);
                    got += q.len();
                    q.clear();
                    if got < BURST {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    assert!(start.elapsed() < Duration::from_secs(30), "deliveries stalled at {got}");
                }
                total += start.elapsed();
                for s in &subs {
                    s.take(&mut q);
                    q.clear();
                }
            }
            total
        })
    });
    g.finish();
    let cmds = a.metrics.bus.publish_commands.get();
    let msgs = a.metrics.bus.messages.get();
    println!(
        "redis_bus: {msgs} messages in {cmds} PUBLISH commands = {:.4} commands per message (dropped {})",
        cmds as f64 / msgs.max(1) as f64,
        a.metrics.bus.dropped.get()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
