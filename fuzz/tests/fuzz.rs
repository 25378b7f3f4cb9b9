//! Every target for a bounded time: its corpus once, then generated inputs until the budget is
//! spent (default 5 s per target, so ~35 s on one core and ~18 s with the default two test
//! threads). Any finding fails the test; findings matching `KNOWN_BUGS` are listed only.
//!
//! `SYNCGATE_FUZZ_TEST_SECS` changes the per-target budget, `SYNCGATE_FUZZ_SEED` fixes the seed
//! (otherwise it changes with every run and is printed, so a failure can be replayed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use syncgate_fuzz::corpus::Corpus;
use syncgate_fuzz::runner::{self, preview, Options};
use syncgate_fuzz::targets::NAMES;
use syncgate_fuzz::{root, KNOWN_BUGS};

fn seed() -> u64 {
    std::env::var("SYNCGATE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        syncgate_fuzz::rng::fnv1a(&t.as_nanos().to_le_bytes()) >> 1
    })
}

fn budget() -> Duration {
    let secs = std::env::var("SYNCGATE_FUZZ_TEST_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(5.0);
    Duration::from_secs_f64(secs)
}

fn fuzz(name: &str) {
    let opts = Options {
        seed: seed(),
        duration: budget(),
        max_execs: None,
        findings_dir: Some(root().join("findings")),
        corpus_dir: root().join("corpus"),
        verbose: true,
        shrink_for: Duration::from_secs(2),
        progress: None,
    };
    let corpus = Corpus::load(&opts.corpus_dir.join(name)).expect("corpus");
    let r = runner::run(name, &opts, KNOWN_BUGS).expect("run");
    eprintln!(
        "[{name}] seed {}: {} corpus + {} generated executions in {:.1} s, {} finding(s), {} known-bug hit(s)",
        r.seed,
        r.corpus_execs,
        r.execs,
        r.elapsed.as_secs_f64(),
        r.findings.len(),
        r.known_hits
    );
    for k in &r.known {
        eprintln!("[{name}]   known: {} ({})", k.known.unwrap_or(""), preview(&k.input, 120));
    }
    assert_eq!(r.corpus_execs as usize, corpus.entries.len(), "every corpus file runs");
    assert!(corpus.entries.len() >= 20, "{name}: the corpus has {} entries", corpus.entries.len());
    if !r.findings.is_empty() {
        let list: Vec<String> = r
            .findings
            .iter()
            .map(|f| {
                format!(
                    "{}\n    input: {}\n    saved: {}",
                    f.message,
                    preview(&f.input, 300),
                    f.saved.as_ref().map_or("-".into(), |p| p.display().to_string())
                )
            })
            .collect();
        panic!(
            "[{name}] {} finding(s) with seed {} (replay: SYNCGATE_FUZZ_SEED={} cargo test -p syncgate-fuzz --test fuzz {name}):\n  {}",
            r.findings.len(),
            r.seed,
            r.seed,
            list.join("\n  ")
        );
    }
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    for name in NAMES {
        assert!(root().join("corpus").join(name).is_dir(), "fuzz/corpus/{name}");
    }
    let this = std::fs::read_to_string(root().join("tests/fuzz.rs")).unwrap();
    for name in NAMES {
        assert!(this.contains(&format!("fn fuzz_{name}()")), "a test for {name}");
    }
}

#[test]
fn fuzz_frame() {
    fuzz("frame");
}

#[test]
fn fuzz_proxy() {
    fuzz("proxy");
}

#[test]
fn fuzz_wire() {
    fuzz("wire");
}

#[test]
fn fuzz_external() {
    fuzz("external");
}

#[test]
fn fuzz_jwks() {
    fuzz("jwks");
}

#[test]
fn fuzz_jwt() {
    fuzz("jwt");
}

#[test]
fn fuzz_http_json() {
    fuzz("http_json");
}

#[test]
fn fuzz_check_depth() {
    fuzz("check_depth");
}
