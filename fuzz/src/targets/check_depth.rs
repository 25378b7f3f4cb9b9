//! `util::json::check_depth`, the iterative pre-scan in front of every recursive JSON parser.
//! Invariants: no panic; on valid JSON it accepts exactly when the true nesting depth (from the
//! reference parser) is within the limit, for limits around that depth and the usual settings;
//! acceptance is monotonic in the limit; whatever it lets through at the default and the
//! highest setting is parsed by serde_json and simd-json on a 2 MiB stack without overflowing.

use syncgate::util::json::{check_depth, MAX_DEPTH_LIMIT};

use super::{fail, mix, DEPTH};
use crate::corpus::Corpus;
use crate::gen;
use crate::refjson;
use crate::rng::Rng;
use crate::runner::{preview, Target};

const DICT: &[&[u8]] = &[b"\"[\"", b"\"\\\\\"", b"\"\\\"[\"", b"\\", b"[", b"]", b"{\"a\":", b"}"];

pub struct CheckDepth;

fn structured(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    match rng.below(4) {
        0 => {
            let n = gen::depth(rng);
            gen::nest(rng, &mut v, n, |rng, out| gen::value(rng, out, 2));
        }
        1 => {
            // Brackets hidden in strings, escapes before quotes.
            v.push(b'[');
            for i in 0..rng.small(20) {
                if i > 0 {
                    v.push(b',');
                }
                let s: &[u8] =
                    rng.one(&[&b"\"[[[\""[..], b"\"\\\\\"", b"\"\\\"[\"", b"\"]]}\"", b"[\"\\\\\\\"\"]", b"{}"]);
                v.extend_from_slice(s);
            }
            v.push(b']');
        }
        _ => gen::value(rng, &mut v, 8),
    }
    v
}

impl Target for CheckDepth {
    fn name(&self) -> &'static str {
        "check_depth"
    }

    fn generate(&mut self, rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
        mix(rng, corpus, DICT, structured)
    }

    fn execute(&mut self, input: &[u8]) -> Result<(), String> {
        let parsed = refjson::parse(input, false);
        let mut limits = vec![0, 1, 2, 3, DEPTH - 1, DEPTH, DEPTH + 1, MAX_DEPTH_LIMIT, usize::MAX];
        if let Ok(p) = &parsed {
            let d = p.info.depth;
            limits.extend([d.saturating_sub(1), d, d + 1]);
        }
        limits.sort_unstable();
        let mut accepted_below = false;
        for &max in &limits {
            let r = super::timed("check_depth", input.len(), || check_depth(input, max))?;
            if let Err(e) = r {
                if e.limit != max {
                    return fail("TooDeep names another limit", format!("{} vs {max}", e.limit));
                }
                if accepted_below {
                    return fail("check_depth is not monotonic in the limit", max);
                }
            } else {
                accepted_below = true;
            }
            if let Ok(p) = &parsed {
                if r.is_ok() != (p.info.depth <= max) {
                    return fail(
                        "check_depth disagrees with the true depth",
                        format!("depth {} limit {max}: {:?} for {}", p.info.depth, r, preview(input, 200)),
                    );
                }
            }
        }
        // What passes the pre-scan must be safe for the recursive parsers behind it.
        for max in [DEPTH, MAX_DEPTH_LIMIT] {
            if check_depth(input, max).is_ok() {
                drop(syncgate::util::json::from_slice::<serde_json::Value>(input, max));
                drop(syncgate::util::json::from_slice::<Box<serde_json::value::RawValue>>(input, max));
                let _ = syncgate::protocol::decode(input, &mut Vec::new(), max);
            }
        }
        Ok(())
    }
}
