//! The targets: one per decoder of untrusted bytes, with the invariants each must keep.

use std::fmt::Display;

use syncgate::util::json::{check_depth, MAX_DEPTH_LIMIT};

use crate::corpus::Corpus;
use crate::refjson::{self, J};
use crate::rng::Rng;
use crate::runner::{preview, Target};

mod check_depth;
mod external;
mod frame;
mod http_json;
mod jwks;
mod jwt;
mod proxy;
mod wire;

pub use jwt::{sign_token, SECRET};

/// `SYNCGATE_MAX_JSON_DEPTH`'s default.
pub const DEPTH: usize = 128;

/// Every target, in the order `all` runs them.
pub const NAMES: &[&str] = &["frame", "wire", "external", "jwks", "jwt", "http_json", "check_depth", "proxy"];

pub fn make(name: &str) -> Option<Box<dyn Target>> {
    Some(match name {
        "frame" => Box::new(frame::Frame::default()),
        "wire" => Box::new(wire::Wire),
        "external" => Box::new(external::External),
        "jwks" => Box::new(jwks::Jwks),
        "jwt" => Box::new(jwt::Jwt::new()),
        "http_json" => Box::new(http_json::HttpJson),
        "check_depth" => Box::new(check_depth::CheckDepth),
        "proxy" => Box::new(proxy::Proxy),
        _ => return None,
    })
}

/// The depths an input is decoded with: the default, plus the highest accepted setting when the
/// input nests between the two (so the deepest inputs a configuration can let through are run
/// on the 2 MiB stack too).
pub fn depths(input: &[u8]) -> Vec<usize> {
    if check_depth(input, DEPTH).is_err() && check_depth(input, MAX_DEPTH_LIMIT).is_ok() {
        vec![DEPTH, MAX_DEPTH_LIMIT]
    } else {
        vec![DEPTH]
    }
}

/// Executions of a decoder slower than this (milliseconds; 0: no limit) are findings. Set by
/// the command line (`--slow-ms`); the bounded test leaves it off (timings in debug builds and
/// on busy CI machines say little).
pub static SLOW_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs one decoder call, timing it against [`SLOW_MS`].
pub fn timed<T>(what: &str, len: usize, f: impl FnOnce() -> T) -> Result<T, String> {
    let limit = SLOW_MS.load(std::sync::atomic::Ordering::Relaxed);
    let t = std::time::Instant::now();
    let r = f();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if limit > 0 && ms > limit as f64 {
        return fail(&format!("slow {what}"), format!("{ms:.0} ms for {len} bytes"));
    }
    Ok(r)
}

/// A finding: `what` identifies it, `details` (shortened) says more.
pub fn fail<T>(what: &str, details: impl Display) -> Result<T, String> {
    let d = details.to_string();
    let d: String = if d.chars().count() > 600 { d.chars().take(600).chain(['…']).collect() } else { d };
    Err(format!("{what} | {d}"))
}

/// Parses an encoder's output with the reference parser. `strict`: lone surrogates are a
/// finding too (outputs built from Rust strings can never contain one).
pub fn output_json(bytes: &[u8], strict: bool, what: &str) -> Result<J, String> {
    let p = match refjson::parse(bytes, true) {
        Ok(p) => p,
        Err(e) => return fail(&format!("{what} is not valid JSON"), format!("{e}: {}", preview(bytes, 300))),
    };
    if p.info.invalid_utf8 {
        return fail(&format!("{what} has invalid UTF-8"), preview(bytes, 300));
    }
    if strict && p.info.lone_surrogate {
        return fail(&format!("{what} has a lone surrogate"), preview(bytes, 300));
    }
    p.tree.ok_or_else(|| format!("{what} nests too deep to compare | {}", p.info.depth))
}

/// Field `i` (named `name`) of a serde-derived struct read from `tree`: serde's derived
/// `Deserialize` accepts a struct as an object *or as an array of its fields in order*
/// (`["e", 1]` for `{"event":"e","data":1}`), and serde_json lets both through.
pub fn struct_field<'a>(tree: &'a J, name: &str, i: usize) -> Option<&'a J> {
    match tree {
        J::Arr(items) => items.get(i),
        _ => tree.get(name),
    }
}

/// serde_json's view as a reference tree (recursive; used below the configured depth only).
pub fn from_serde(v: &serde_json::Value) -> J {
    match v {
        serde_json::Value::Null => J::Null,
        serde_json::Value::Bool(b) => J::Bool(*b),
        serde_json::Value::Number(n) => J::Num(n.to_string()),
        serde_json::Value::String(s) => J::Str(s.clone()),
        serde_json::Value::Array(a) => J::Arr(a.iter().map(from_serde).collect()),
        serde_json::Value::Object(o) => J::Obj(o.iter().map(|(k, v)| (k.clone(), from_serde(v))).collect()),
    }
}

/// The usual input mix: a mutated corpus entry, a structured one, or a mutated structured one.
pub fn mix(rng: &mut Rng, corpus: &Corpus, dict: &[&[u8]], structured: impl FnOnce(&mut Rng) -> Vec<u8>) -> Vec<u8> {
    match rng.below(20) {
        0..=8 if !corpus.is_empty() => {
            let mut v = corpus.pick_small(rng).unwrap_or_default().to_vec();
            crate::mutate::mutate(rng, &mut v, corpus, dict);
            v
        }
        9..=16 => structured(rng),
        _ => {
            let mut v = structured(rng);
            crate::mutate::mutate(rng, &mut v, corpus, dict);
            v
        }
    }
}

/// Writes an object from (key, value) members, with random whitespace; `members` values are
/// raw JSON text.
pub fn write_object(rng: &mut Rng, members: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![b'{'];
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if rng.chance(1, 10) {
            out.push(b' ');
        }
        out.extend_from_slice(k);
        out.push(b':');
        out.extend_from_slice(v);
    }
    out.push(b'}');
    out
}

/// Shuffles, duplicates and drops members (each with some probability), and adds a random one.
pub fn stir(rng: &mut Rng, members: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    if rng.chance(1, 10) && !members.is_empty() {
        let i = rng.below(members.len());
        members.remove(i);
    }
    if rng.chance(1, 8) && !members.is_empty() {
        let k = members[rng.below(members.len())].0.clone();
        let mut v = Vec::new();
        crate::gen::value(rng, &mut v, 2);
        members.push((k, v));
    }
    if rng.chance(1, 6) {
        let mut k = Vec::new();
        crate::gen::string(rng, &mut k);
        let mut v = Vec::new();
        crate::gen::value(rng, &mut v, 3);
        members.push((k, v));
    }
    if rng.chance(1, 4) {
        for i in (1..members.len()).rev() {
            let j = rng.below(i + 1);
            members.swap(i, j);
        }
    }
}

/// `"key"` as a JSON literal.
pub fn key(k: &str) -> Vec<u8> {
    format!("\"{k}\"").into_bytes()
}

/// A JSON string literal: mostly a plausible value from `good`, sometimes hostile.
pub fn str_value(rng: &mut Rng, good: &[&str]) -> Vec<u8> {
    if rng.chance(3, 4) && !good.is_empty() {
        crate::gen::quote(rng.one(good)).into_bytes()
    } else if rng.chance(1, 2) {
        let mut v = Vec::new();
        crate::gen::string(rng, &mut v);
        v
    } else {
        let mut v = Vec::new();
        crate::gen::value(rng, &mut v, 2);
        v
    }
}

/// A string `n` bytes long.
pub fn long(n: usize) -> String {
    "x".repeat(n)
}
