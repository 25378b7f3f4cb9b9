//! The connection writer's two ways of putting one shared event on N sockets, per recipient:
//! - `tungstenite_copy`: what writing a `Message` through tungstenite does — format the frame
//!   (header + a copy of the payload) into the connection's write buffer, then write the buffer;
//! - `vectored_shared`: what `ws::session::writer` does since issue 18 — the 2–10 byte header on
//!   the stack and the payload `Bytes` every recipient shares, as one vectored write; no copy.
//!
//! The sink discards what it is given, so the figures are the per-recipient CPU cost of the two
//! write paths without the kernel's copy (which both pay).
//!
//! Run: `cargo bench --bench write_path`

use std::hint::black_box;
use std::io::{IoSlice, Write};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use syncgate::protocol;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

const RECIPIENTS: usize = 1000;

fn write_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("write_path");
    g.throughput(Throughput::Elements(RECIPIENTS as u64));
    for size in [64usize, 1024, 16 * 1024] {
        // One event encoded once: the JSON text every recipient is sent.
        let data = format!("\"{}\"", "x".repeat(size.saturating_sub(90)));
        let payload: Bytes = protocol::event("room:bench", "msg", data.as_bytes(), "alice", "d1", 1).into();
        // One write buffer per connection, reused across writes (as tungstenite keeps it).
        let mut buffers: Vec<Vec<u8>> = (0..RECIPIENTS).map(|_| Vec::new()).collect();
        g.bench_with_input(BenchmarkId::new("tungstenite_copy", size), &payload, |b, payload| {
            b.iter(|| {
                for buf in buffers.iter_mut() {
                    let payload: &Bytes = black_box(payload);
                    buf.clear();
                    Frame::message(payload.clone(), OpCode::Data(Data::Text), true).format(buf).unwrap();
                    black_box(std::io::sink().write(buf).unwrap());
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("vectored_shared", size), &payload, |b, payload| {
            b.iter(|| {
                for _ in 0..RECIPIENTS {
                    // Opaque per recipient, so the header is not hoisted out of the loop.
                    let payload: &Bytes = black_box(payload);
                    let mut header = [0u8; 10];
                    let n = protocol::text_frame_header(payload.len(), &mut header);
                    let slices = [IoSlice::new(&header[..n]), IoSlice::new(payload)];
                    black_box(std::io::sink().write_vectored(&slices).unwrap());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, write_path);
criterion_main!(benches);
