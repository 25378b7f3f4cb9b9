//! Every finding of the fuzz harness, as a named test.
//!
//! - `fuzz/regressions/<target>/*`: inputs that once made a target report a finding and must now
//!   pass (mostly library leniencies the invariants learned to allow; each test says which).
//! - `fuzz/regressions/open/<target>/*`: inputs that hit a bug that is reported and not fixed.
//!   Their tests are `#[ignore]`d with the bug's description (and the bug is in `KNOWN_BUGS`);
//!   when it is fixed: move the file up to `regressions/<target>/`, drop the `#[ignore]` and the
//!   `KNOWN_BUGS` entry.

use std::path::Path;

use syncgate_fuzz::corpus::{files, read_input};
use syncgate_fuzz::root;
use syncgate_fuzz::runner;
use syncgate_fuzz::targets::NAMES;

/// Runs one regression input through its target; panics with the finding, if any.
fn check(target: &str, rel: &str) {
    let path = root().join("regressions").join(rel);
    let input = read_input(&path).unwrap_or_else(|e| panic!("{e}"));
    let failures = runner::replay(target, vec![input]).expect("replay");
    if let Some((_, m)) = failures.first() {
        panic!("{rel}: {m}");
    }
}

macro_rules! regression {
    ($name:ident, $target:literal, $file:literal, $why:literal) => {
        #[doc = $why]
        #[test]
        fn $name() {
            check($target, concat!($target, "/", $file));
        }
    };
}

/// For a bug found and not fixed yet: its input goes under `regressions/open/<target>/`, its
/// entry into `KNOWN_BUGS`. (None is open now.)
#[allow(unused_macros)]
macro_rules! open_bug {
    ($name:ident, $target:literal, $file:literal, $bug:literal) => {
        #[doc = $bug]
        #[test]
        #[ignore = $bug]
        fn $name() {
            check($target, concat!("open/", $target, "/", $file));
        }
    };
}

// ---- fixed or allowed: must pass ---------------------------------------------------------------

regression!(
    external_invalid_utf8_in_an_unknown_field,
    "external",
    "invalid-utf8-in-unknown-field.json",
    "serde_json skips unknown fields without checking their UTF-8; the event built is still valid."
);
regression!(
    external_array_form_with_a_bom_event,
    "external",
    "array-form-bom-event.json",
    "serde-derived structs accept an array of their fields: `[\"\\u{feff}\"]` is the event \"\\u{feff}\"."
);
regression!(
    external_array_form_with_data,
    "external",
    "array-form-event-data.json",
    "`[\"e\", data]` is accepted as `{\"event\":\"e\",\"data\":data}` (serde's sequence form of structs)."
);
regression!(
    jwks_lone_surrogate_in_an_unknown_field,
    "jwks",
    "lone-surrogate-in-unknown-field.json",
    "A lone surrogate in a skipped member does not make the document invalid for serde_json."
);
regression!(
    jwks_invalid_utf8_in_an_unknown_field,
    "jwks",
    "invalid-utf8-in-unknown-field.json",
    "Invalid UTF-8 in a skipped member passes serde_json; no key is built from it."
);
regression!(
    jwks_array_form_128_deep,
    "jwks",
    "array-form-128-deep.json",
    "A 128-deep array is read as `JwkSet { keys: [[…]] }` (sequence form) and yields no key."
);
regression!(
    http_json_ignored_any_with_invalid_utf8,
    "http_json",
    "ignored-any-invalid-utf8.json",
    "IgnoredAny (and unknown fields) skip strings without checking their UTF-8."
);
regression!(
    http_json_integer_beyond_u64_rounded_by_serde,
    "http_json",
    "int-beyond-u64-rounded-by-serde.json",
    "serde_json (without `float_roundtrip`) reads 18446744073794775809 one f64 step off."
);
regression!(
    http_json_subnormal_rounded_by_serde,
    "http_json",
    "subnormal-rounded-by-serde.json",
    "serde_json reads 623344295312894438158357E-333 (a subnormal) a few subnormal steps off."
);
regression!(
    http_json_just_beyond_f64_max,
    "http_json",
    "just-beyond-f64-max.json",
    "1.79769313486231589e308 rounds past f64::MAX; serde_json's approximate parse reads f64::MAX."
);
regression!(
    http_json_309_digit_integer_refused,
    "http_json",
    "309-digit-int.json",
    "An integer beyond f64 is refused by serde_json (`number out of range`)."
);
regression!(
    http_json_near_f64_max_refused,
    "http_json",
    "near-f64-max.json",
    "1.797693134862315715e308 rounds to f64::MAX, but serde_json's approximate parse overflows."
);
regression!(
    jwt_claim_nested_5000_deep,
    "jwt",
    "claim-deep-5000.txt",
    "An unknown claim nested 5000 deep is skipped iteratively by serde_json; the token is valid."
);
regression!(
    jwt_header_member_nested_deep,
    "jwt",
    "header-member-nested-deep.txt",
    "A header member nested ~3400 deep is skipped by serde; the token (HS256, right HMAC) is valid."
);
regression!(
    frame_huge_negative_exponent_refused,
    "frame",
    "huge-negative-exponent-refused.json",
    "simd-json refuses 1e-100000000000 (it is 0): a harmless refusal of valid JSON."
);
regression!(
    frame_exponent_overflow_refused,
    "frame",
    "exponent-overflow-refused.json",
    "1e99999999999 is beyond f64: refused."
);

// ---- open bugs: ignored until fixed ------------------------------------------------------------

regression!(
    frame_lone_high_surrogate_in_data,
    "frame",
    "lone-high-surrogate-in-data.json",
    "Fixed by the frame pre-scan: a lone high surrogate escape in `data` is refused (simd-json decoded it as U+0000, simd-lite/simd-json#481)."
);
regression!(
    frame_lone_high_surrogate_in_echoed_id,
    "frame",
    "lone-high-surrogate-in-echoed-id.json",
    "Fixed by the frame pre-scan: a lone surrogate in `id` is refused and not echoed as U+0000."
);
regression!(
    frame_exponent_beyond_32_bits,
    "frame",
    "exponent-beyond-32-bits.json",
    "Fixed by the frame pre-scan: exponents of ten or more digits are refused (simd-json cast them to 32 bits: 1e4294967297 was 10.0)."
);
regression!(
    frame_exponent_beyond_32_bits_fuzzed,
    "frame",
    "exponent-beyond-32-bits-fuzzed.json",
    "Fixed by the frame pre-scan: 3e12884901799 is refused, not delivered as 3e-89."
);
regression!(
    frame_nul_after_a_number,
    "frame",
    "nul-after-number.json",
    "Fixed by the frame pre-scan: a NUL outside a string is refused (simd-json read `1<NUL>2` as 1)."
);
regression!(
    frame_junk_after_a_long_number,
    "frame",
    "junk-after-long-number.json",
    "Fixed by the frame pre-scan: a 19+ digit number followed by `.` is not valid JSON and is refused."
);
regression!(
    jwt_numeric_sub_float,
    "jwt",
    "numeric-sub-float.txt",
    "Fixed: `\"sub\":1.5` is refused (a numeric sub must be a 64-bit integer)."
);
regression!(
    jwt_numeric_sub_other_spelling,
    "jwt",
    "numeric-sub-other-spelling.txt",
    "Fixed: `\"sub\":15e-1` is refused, not the same user as 1.5."
);
regression!(
    jwt_numeric_sub_negative_zero,
    "jwt",
    "numeric-sub-negative-zero.txt",
    "Fixed: `\"sub\":-0` (a float to serde_json) is refused, not user \"-0.0\"."
);

regression!(
    frame_junk_after_a_long_number_escaped_quote,
    "frame",
    "junk-after-long-number-escaped-quote.json",
    "Fixed by the frame pre-scan: junk after a long number is refused."
);

regression!(
    frame_junk_after_a_long_number_backslash,
    "frame",
    "junk-after-long-number-backslash.json",
    "Fixed by the frame pre-scan: a backslash outside a string is refused."
);

/// A frame of `n` members `"k":1` (all the same key) or `"k0":1, "k1":1, …` (all distinct).
fn members(n: usize, same_key: bool) -> Vec<u8> {
    let mut f = String::from("{\"type\":\"ping\"");
    for i in 0..n {
        if same_key {
            f.push_str(",\"k\":1");
        } else {
            f.push_str(&format!(",\"k{i}\":1"));
        }
    }
    f.push('}');
    f.into_bytes()
}

fn decode_time(frame: &[u8]) -> std::time::Duration {
    let mut buf = Vec::new();
    let t = std::time::Instant::now();
    for _ in 0..3 {
        let r = syncgate::protocol::decode(frame, &mut buf, 128);
        assert!(r.is_ok());
    }
    t.elapsed()
}

/// Fixed (found by the harness's slowest-input report): simd-json's object map is quadratic in
/// the number of members with the same key: in release builds a 1 MiB frame of 170 000 `"k":1`
/// members took ~650 ms to decode (a tokio worker blocked that long per frame), against ~50 ms
/// for distinct keys. Frames are now decoded from simd-json's tape (no map is built).
/// Measured here as a ratio, so the test does not depend on the machine's speed.
#[test]
fn frame_duplicate_keys_decode_in_linear_time() {
    let n = 40_000;
    let dup = decode_time(&members(n, true));
    let distinct = decode_time(&members(n, false));
    let ratio = dup.as_secs_f64() / distinct.as_secs_f64();
    assert!(ratio < 4.0, "{n} duplicate keys: {dup:?}, {n} distinct keys: {distinct:?} (x{ratio:.1})");
}

/// Fixed (found by the harness, a stack overflow on the 2 MiB stack in a debug build): at the
/// old `MAX_DEPTH_LIMIT` of 1024, `serde_json::Value` needed ~2046 KiB of stack for 1024 levels
/// of `{"a":` unoptimised (583 KiB in release). The limit is now 512: this runs in every build.
#[test]
fn debug_value_at_max_depth_fits_a_worker_stack() {
    let max = syncgate::util::json::MAX_DEPTH_LIMIT;
    let doc = "{\"a\":".repeat(max) + "1" + &"}".repeat(max);
    std::thread::Builder::new()
        .stack_size(runner::STACK)
        .spawn(move || {
            let v: serde_json::Value =
                syncgate::api::parse_json(doc.as_bytes(), max).map_err(|e| e.to_string()).unwrap();
            drop(v);
            let keys = format!("{{\"keys\":[{doc}]}}");
            let _ = syncgate::auth::jwks_usable_keys(keys.as_bytes(), max);
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Each regression file has a named test above, and every target directory is a target.
#[test]
fn every_regression_file_has_a_test() {
    let this = std::fs::read_to_string(root().join("tests/regressions.rs")).unwrap();
    let dir = root().join("regressions");
    // `open/` exists only while some bug is open (git keeps no empty folder).
    for sub in [dir.clone(), dir.join("open")].into_iter().filter(|d| d.is_dir()) {
        for entry in std::fs::read_dir(&sub).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "open" {
                continue;
            }
            assert!(NAMES.contains(&name.as_str()), "{}: not a target", entry.path().display());
            for f in files(&entry.path()) {
                let file = f.file_name().unwrap().to_string_lossy().into_owned();
                assert!(this.contains(&format!("\"{file}\"")), "{} has no test", f.display());
            }
        }
    }
}

/// All the must-pass files in one go (also catches a file added without its own test).
#[test]
fn all_fixed_regressions_pass() {
    for target in NAMES {
        let dir = root().join("regressions").join(target);
        let inputs: Vec<(String, Vec<u8>)> =
            files(&dir).iter().map(|p| (display(p), read_input(p).unwrap_or_else(|e| panic!("{e}")))).collect();
        let failures = runner::replay(target, inputs.iter().map(|(_, i)| i.clone()).collect()).unwrap();
        for (i, m) in &failures {
            eprintln!("{}: {m}", inputs[*i].0);
        }
        assert!(failures.is_empty(), "{target}: {} regression(s) fail", failures.len());
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
