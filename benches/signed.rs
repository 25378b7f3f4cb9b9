//! Signed frames: what a signed publish costs on top of an ordinary one — building the signed
//! text and verifying the Ed25519 signature (ring), the in-process nonce memory, and decoding a
//! signed publish frame (the exact `data` span and the signature fields); and key login's
//! server-side cost per connect (the signed challenge, the check of the answer).
//!
//! Run: `cargo bench --bench signed`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ring::signature::{Ed25519KeyPair, KeyPair};
use syncgate::auth::signed::{b64_encode, signed_text, DeviceKey, NonceCache};

const DATA: &[u8] = br#"{"text":"hello there, this is a typical chat message","attachments":[],"n":42}"#;
const CHANNEL: &str = "dm:alice:bob";
const NONCE: &str = "k3v9Qd2Zr8mT1xY4bN6pWa";
const SIG_TS: u64 = 1_700_000_000_000;

fn signed(c: &mut Criterion) {
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
    let key = DeviceKey::parse(&b64_encode(pair.public_key().as_ref())).unwrap();
    let sig = b64_encode(pair.sign(&signed_text(CHANNEL, "message:created", NONCE, SIG_TS, DATA)).as_ref());
    let mut g = c.benchmark_group("signed");
    g.throughput(Throughput::Elements(1));
    // The whole per-publish check: the signed text, base64 of the signature, Ed25519 verification.
    g.bench_function("verify_publish", |b| {
        b.iter(|| {
            let text = signed_text(black_box(CHANNEL), "message:created", NONCE, SIG_TS, black_box(DATA));
            assert!(key.verifies(&text, black_box(&sig)));
        })
    });
    // A fresh nonce into the in-process memory (two keyed hashes, one shard lock, one insert),
    // then given back (so the memory stays at its working size instead of filling up).
    let nonces = NonceCache::default();
    for i in 0..100_000u64 {
        nonces.take("bob", "laptop", &format!("warm-{i}"), u64::MAX, 0);
    }
    g.bench_function("nonce_take_release", |b| {
        b.iter(|| {
            black_box(nonces.take("alice", "phone", black_box(NONCE), u64::MAX, 0));
            nonces.release("alice", "phone", NONCE);
        })
    });
    let frame = format!(
        r#"{{"type":"publish","id":17,"channel":"{CHANNEL}","event":"message:created","data":{},"nonce":"{NONCE}","sig_ts":{SIG_TS},"sig":"{sig}","msg_id":"m-1"}}"#,
        std::str::from_utf8(DATA).unwrap()
    );
    let mut scratch = Vec::new();
    g.bench_function("decode_signed_publish", |b| {
        b.iter(|| black_box(syncgate::protocol::decode(black_box(frame.as_bytes()), &mut scratch, 128).unwrap()))
    });
    g.finish();
}

/// Key login's server side per connect: a fresh challenge (32 random bytes, the signed text, one
/// Ed25519 signature, the frame) and the check of the device's answer (one verification).
fn key_login(c: &mut Criterion) {
    use syncgate::auth::key_login::{device_auth_text, verify_answer, Answer, Challenge};
    use syncgate::auth::server_key::ServerKey;
    let dir = std::env::temp_dir().join(format!("bench-sk-{}", std::process::id()));
    let server = ServerKey::load(None, &dir).unwrap();
    let device = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
    let pk = b64_encode(device.public_key().as_ref());
    let challenge = Challenge::new(&server, SIG_TS).unwrap();
    let cn = "cn-0123456789abcdef";
    let sig = b64_encode(device.sign(device_auth_text(&challenge.nonce, cn, "phone", &pk).as_bytes()).as_ref());
    let answer =
        Answer { kind: "auth".into(), device_id: "phone".into(), public_key: pk, client_nonce: cn.into(), sig };
    let mut g = c.benchmark_group("key_login");
    g.throughput(Throughput::Elements(1));
    g.bench_function("challenge", |b| b.iter(|| black_box(Challenge::new(&server, black_box(SIG_TS)).unwrap())));
    g.bench_function("verify_answer", |b| {
        b.iter(|| verify_answer(black_box(&challenge.nonce), black_box(&answer)).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, signed, key_login);
criterion_main!(benches);
