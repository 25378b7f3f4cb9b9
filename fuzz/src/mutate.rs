//! Byte-level mutations of corpus entries: flips, interesting bytes, token insertion, deletion,
//! duplication, splicing with another entry, truncation, extra nesting, hostile number/string
//! substitution.

use crate::corpus::Corpus;
use crate::gen;
use crate::rng::Rng;

/// Inputs grow no larger than this by mutation (the 1 MiB corpus entries are used as they are).
pub const MAX_LEN: usize = 2 << 20;

const INTERESTING: &[u8] = b"\x00\xff\x7f\x80\x1f \"\\[]{},:-.eE0119";

fn span(rng: &mut Rng, len: usize) -> (usize, usize) {
    let a = rng.below(len + 1);
    let n = rng.small(len - a);
    (a, a + n)
}

/// Positions of JSON-number-looking runs and string literals (a rough scan, good enough to aim
/// substitutions).
fn find_token(rng: &mut Rng, data: &[u8], string: bool) -> Option<(usize, usize)> {
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| {
            if string {
                data[i] == b'"' && (i == 0 || data[i - 1] != b'\\')
            } else {
                (data[i].is_ascii_digit() || data[i] == b'-') && (i == 0 || !data[i - 1].is_ascii_alphanumeric())
            }
        })
        .take(64)
        .collect();
    let &s = rng.pick(if starts.is_empty() { return None } else { &starts });
    let mut e = s + 1;
    if string {
        while e < data.len() && data[e] != b'"' {
            e += if data[e] == b'\\' { 2 } else { 1 };
        }
        Some((s, (e + 1).min(data.len())))
    } else {
        while e < data.len() && matches!(data[e], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
            e += 1;
        }
        Some((s, e))
    }
}

/// Applies 1-8 random mutations to `data`; `dict` adds target-specific tokens.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &Corpus, dict: &[&[u8]]) {
    let rounds = 1 << rng.below(4);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(15) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.one(INTERESTING);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            3 | 4 => {
                let i = rng.below(len + 1);
                let tok: &[u8] =
                    if !dict.is_empty() && rng.chance(1, 2) { rng.one(dict) } else { rng.one(gen::TOKENS) };
                data.splice(i..i, tok.iter().copied());
            }
            5 if len > 0 => {
                let (a, b) = span(rng, len);
                data.drain(a..b);
            }
            6 if len > 0 => {
                // Repeat a span (in one allocation, never past MAX_LEN).
                let (a, b) = span(rng, len);
                let chunk = data[a..b].to_vec();
                let room = MAX_LEN.saturating_sub(len) / chunk.len().max(1);
                let times = if rng.chance(1, 10) { rng.range(2, 1000) } else { 1 }.min(room);
                let at = rng.below(len + 1);
                let mut out = Vec::with_capacity(len + chunk.len() * times);
                out.extend_from_slice(&data[..at]);
                for _ in 0..times {
                    out.extend_from_slice(&chunk);
                }
                out.extend_from_slice(&data[at..]);
                *data = out;
            }
            7 => {
                // Splice: our head with another entry's tail.
                if let Some(other) = corpus.pick_small(rng) {
                    let cut = rng.below(len + 1);
                    let from = rng.below(other.len() + 1);
                    data.truncate(cut);
                    data.extend_from_slice(&other[from..]);
                }
            }
            8 if len > 0 => data.truncate(rng.below(len)),
            9 => {
                // Wrap a span in extra nesting.
                let (a, b) = span(rng, len);
                let (open, close): (&[u8], &[u8]) = if rng.chance(1, 2) { (b"[", b"]") } else { (b"{\"a\":", b"}") };
                let n = gen::depth(rng).min(100_000).min(MAX_LEN.saturating_sub(len) / (open.len() + 1));
                let mut out = Vec::with_capacity(len + n * (open.len() + 1));
                out.extend_from_slice(&data[..a]);
                for _ in 0..n {
                    out.extend_from_slice(open);
                }
                out.extend_from_slice(&data[a..b]);
                if !rng.chance(1, 10) {
                    for _ in 0..n {
                        out.extend_from_slice(close);
                    }
                }
                out.extend_from_slice(&data[b..]);
                *data = out;
            }
            10 | 11 => {
                if let Some((a, b)) = find_token(rng, data, false) {
                    let mut n = Vec::new();
                    gen::number(rng, &mut n);
                    data.splice(a..b, n);
                }
            }
            12 | 13 => {
                if let Some((a, b)) = find_token(rng, data, true) {
                    let mut s = Vec::new();
                    if rng.chance(1, 2) {
                        gen::string(rng, &mut s);
                    } else {
                        gen::value(rng, &mut s, 3);
                    }
                    data.splice(a..b, s);
                }
            }
            _ => {
                let i = rng.below(len + 1);
                let mut v = Vec::new();
                gen::value(rng, &mut v, 2);
                data.splice(i..i, v);
            }
        }
        if data.len() > MAX_LEN {
            data.truncate(MAX_LEN);
        }
    }
}
