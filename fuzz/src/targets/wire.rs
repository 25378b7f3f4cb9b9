//! `bus::wire::decode`: batches read from Redis (another instance's, or anyone who can PUBLISH
//! on the channel). Invariants: no panic; the result equals an independent reference reading;
//! whatever decodes re-encodes with `wire::push` to the very same bytes.

use bytes::{Bytes, BytesMut};
use syncgate::bus::wire::{self, Kind};

use super::{fail, mix};
use crate::corpus::Corpus;
use crate::rng::Rng;
use crate::runner::{preview, Target};

const HEADER: usize = 8 + 8 + 1 + 4;

const DICT: &[&[u8]] = &[
    b"SG1",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x01",
    b"\x7f\xff\xff\xff",
    b"\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x01",
    b"\x02",
];

pub struct Wire;

type Rec = (u64, u64, u8, Vec<u8>);

/// An independent reading of the format.
fn reference(b: &[u8]) -> Option<Vec<Rec>> {
    let mut rest = b.strip_prefix(b"SG1")?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < HEADER {
            return None;
        }
        let (h, tail) = rest.split_at(HEADER);
        let be64 = |s: &[u8]| s.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
        let len = h[17..21].iter().fold(0usize, |a, &x| (a << 8) | usize::from(x));
        if h[16] > 1 || tail.len() < len {
            return None;
        }
        out.push((be64(&h[0..8]), be64(&h[8..16]), h[16], tail[..len].to_vec()));
        rest = &tail[len..];
    }
    Some(out)
}

fn structured(rng: &mut Rng) -> Vec<u8> {
    let mut batch = BytesMut::new();
    let ids = [0, 1, 7, u64::MAX, u64::MAX - 1, 1 << 63];
    for _ in 0..rng.small(6).max(1) {
        let mut id = || if rng.chance(1, 2) { rng.one(&ids) } else { rng.next_u64() };
        let (instance, origin) = (id(), id());
        let kind = if rng.chance(1, 2) { Kind::Text } else { Kind::Binary };
        let frame: Vec<u8> = match rng.below(4) {
            0 => Vec::new(),
            1 => b"{\"type\":\"event\",\"channel\":\"a:b\",\"event\":\"e\",\"data\":1}".to_vec(),
            2 => (0..rng.small(300)).map(|_| rng.byte()).collect(),
            _ => vec![b'x'; rng.range(1, 70_000)],
        };
        wire::push(&mut batch, instance, origin, kind, &frame);
    }
    let mut b = batch.to_vec();
    if b.len() > 3 && rng.chance(1, 2) {
        // Damage the framing: lengths, kinds, truncation, extra bytes.
        let records: Vec<usize> = {
            let mut starts = Vec::new();
            let mut i = 3;
            while i + HEADER <= b.len() {
                starts.push(i);
                let len = u32::from_be_bytes([b[i + 17], b[i + 18], b[i + 19], b[i + 20]]) as usize;
                i += HEADER + len;
            }
            starts
        };
        let at = rng.one(&records);
        match rng.below(6) {
            0 => {
                let len = u32::from_be_bytes([b[at + 17], b[at + 18], b[at + 19], b[at + 20]]);
                let new = rng.one(&[u32::MAX, u32::MAX - 1, len.wrapping_add(1), len.wrapping_sub(1), 1 << 31]);
                b[at + 17..at + 21].copy_from_slice(&new.to_be_bytes());
            }
            1 => b[at + 16] = rng.one(&[2, 3, 0x80, 0xff]),
            2 => b.truncate(rng.below(b.len())),
            3 => b.extend((0..rng.range(1, HEADER + 2)).map(|_| rng.byte())),
            4 => b[rng.below(3)] ^= 1 << rng.below(8),
            _ => b.truncate(at + rng.below(HEADER)),
        }
    }
    b
}

impl Target for Wire {
    fn name(&self) -> &'static str {
        "wire"
    }

    fn generate(&mut self, rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
        if rng.chance(1, 10) {
            let mut v = b"SG1".to_vec();
            v.extend((0..rng.small(100)).map(|_| rng.byte()));
            return v;
        }
        mix(rng, corpus, DICT, structured)
    }

    fn execute(&mut self, input: &[u8]) -> Result<(), String> {
        let payload = Bytes::copy_from_slice(input);
        let got = super::timed("wire::decode", input.len(), || wire::decode(&payload))?;
        let want = reference(input);
        let got_plain: Option<Vec<Rec>> = got.as_ref().map(|recs| {
            recs.iter()
                .map(|r| (r.instance, r.origin, if r.kind == Kind::Text { 0 } else { 1 }, r.frame.to_vec()))
                .collect()
        });
        if got_plain != want {
            return fail(
                "wire::decode disagrees with the reference reading",
                format!("{:?} vs {:?} for {}", got_plain.map(|v| v.len()), want.map(|v| v.len()), preview(input, 200)),
            );
        }
        if let Some(recs) = got {
            let mut again = BytesMut::new();
            for r in &recs {
                wire::push(&mut again, r.instance, r.origin, r.kind, &r.frame);
            }
            let again: &[u8] = if recs.is_empty() { wire::MAGIC } else { &again };
            if again != input {
                return fail("decode then push does not give the same bytes", preview(input, 200));
            }
        }
        Ok(())
    }
}
