//! A stable-toolchain fuzz harness for syncgate's decoders of untrusted bytes.
//!
//! No coverage feedback (cargo-fuzz needs nightly): a seeded corpus of hostile inputs, a byte
//! mutator, structured generators for JSON-ish values, tokens and batches, and per-target
//! invariants checked against a strict iterative reference parser. Deterministic per seed; each
//! input runs in `catch_unwind` on a 2 MiB stack (tokio's worker size), and a fatal signal (stack
//! overflow, abort) writes the input out before the process dies. See `fuzz/README.md`.

pub mod corpus;
pub mod crash;
pub mod gen;
pub mod mutate;
pub mod refjson;
pub mod rng;
pub mod runner;
pub mod targets;

use std::path::PathBuf;

use runner::KnownBug;

/// Bugs found by this harness that are reported and not fixed yet. Findings that match are
/// counted and listed, not failed; each has an `#[ignore]`d regression test in
/// `tests/regressions.rs`. Remove the entry when the bug is fixed.
pub const KNOWN_BUGS: &[KnownBug] = &[];

/// `fuzz/` (the corpus, regressions and findings live under it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
