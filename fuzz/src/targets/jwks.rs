//! `auth::jwks_usable_keys`: a JWKS document fetched from the configured URL (untrusted bytes
//! from the network). Invariants: no panic; a document is accepted only when it is valid JSON
//! within `max_depth` with a `keys` array, and never yields more keys than it lists; a valid
//! document is not refused.

use syncgate::auth::jwks_usable_keys;

use super::{depths, fail, key, mix, stir, str_value, struct_field, write_object};
use crate::corpus::Corpus;
use crate::gen;
use crate::refjson::{self, J};
use crate::rng::Rng;
use crate::runner::{preview, Target};

/// Real public key components (generated with openssl for this corpus).
pub const RSA_N: &str = "kJ-XxtoM3BrRyDlfHErckSlnAmm8EilqBxH2dyEpjq1UdjOKZOHnVh3T1q1Pc1eYtDLfwjGqzxOarYGCjX-k-9woz96sDaoYTD92iZhdTHdwPFOqcWaLgIqjhFfjRPmjo5ol6NiVhuIg8hLzoPrt6XeADaapmNmZrMIP2LbMBJQ5WY46zro22P30UWKwAh6iGs3126FeJSwKwe-BBjF3o_ACq2ElANkamlmmiQDZsntqarb2Wd5sIlkF1vbY57i3Rw9xxAX4SMP4xIa0i6L1xBMYDiE8t-X9S6qk-NMvJ6EYKIXSJQmsY799-yFlVW8ImupfvtN6Z6uVZH1iPSw2LQ";
const P256_X: &str = "yvihXbTtFEHJD8Cua9ooh-QYF0P90MLPMuKrjg6d6EE";
const P256_Y: &str = "Qna54EBx57cLtpO88b_gSMQaeKX_n1vnB1n6TQ5wCy0";
const P384_X: &str = "poCxLwuq4HGEQdde1YDQM_adScPB_Rh1lN7DAfLzTikh3c4K7libCwFRHiP3Rdky";
const P384_Y: &str = "3VujF0BlFh5tszZwxSGchiVyxpuG1fM7MfsTEiK6vEg5wpezjGkLUUXQDNyu8tmJ";
const ED_X: &str = "jBUxbM4y_RWBVU9Zj45oBkmIT47Na1XSTT4c9-fw3qo";

const DICT: &[&[u8]] = &[
    b"\"kty\":\"RSA\",",
    b"\"kty\":\"EC\",",
    b"\"kty\":\"OKP\",",
    b"\"crv\":\"P-256\",",
    b"\"alg\":\"HS256\",",
    b"\"use\":\"enc\",",
    b"\"e\":\"AQAB\",",
    b"\"keys\":[",
    b"=",
    b"+/",
];

pub struct Jwks;

/// A base64url-ish component: real, random, oddly sized, or not base64 at all.
fn component(rng: &mut Rng, real: &str) -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    match rng.below(8) {
        0..=3 => gen::quote(real).into_bytes(),
        4 => {
            let n = rng.one(&[0, 1, 2, 3, 4, 5, 43, 44, 64, 342, 343, 344, 683, 1366, 10_000]);
            let s: String = (0..n).map(|_| rng.one(B64) as char).collect();
            gen::quote(&s).into_bytes()
        }
        5 => {
            let mut s = real.to_string();
            if !s.is_empty() {
                let i = rng.below(s.len());
                s.replace_range(i..i + 1, rng.one(&["=", "+", "/", " ", "\u{e9}", "A", "=="]));
            }
            gen::quote(&s).into_bytes()
        }
        6 => gen::quote(&format!("{real}{real}")).into_bytes(),
        _ => str_value(rng, &["AQAB", "AAEAAQ", "", "AA"]),
    }
}

fn jwk(rng: &mut Rng) -> Vec<u8> {
    let mut m = Vec::new();
    let kind = rng.below(5);
    let kty = match kind {
        0 => "RSA",
        1 | 2 => "EC",
        3 => "OKP",
        _ => rng.one(&["oct", "", "rsa", "EC ", "RSA-PSS"]),
    };
    m.push((key("kty"), if rng.chance(9, 10) { gen::quote(kty).into_bytes() } else { str_value(rng, &[]) }));
    if rng.chance(2, 3) {
        m.push((key("kid"), str_value(rng, &["k1", "", "rsa-1"])));
    }
    if rng.chance(1, 2) {
        let algs = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256", "none", "ES512", "rs256"];
        m.push((key("alg"), str_value(rng, &algs)));
    }
    if rng.chance(1, 3) {
        m.push((key("use"), str_value(rng, &["sig", "enc", ""])));
    }
    match kind {
        0 => {
            m.push((key("n"), component(rng, RSA_N)));
            m.push((key("e"), component(rng, "AQAB")));
        }
        1 | 2 => {
            let (crv, x, y) = if kind == 1 { ("P-256", P256_X, P256_Y) } else { ("P-384", P384_X, P384_Y) };
            m.push((key("crv"), str_value(rng, &[crv, crv, "P-521", "secp256k1"])));
            m.push((key("x"), component(rng, x)));
            m.push((key("y"), component(rng, y)));
        }
        3 => {
            m.push((key("crv"), str_value(rng, &["Ed25519", "Ed25519", "X25519", "Ed448"])));
            m.push((key("x"), component(rng, ED_X)));
        }
        _ => {
            m.push((key("k"), component(rng, "c2VjcmV0")));
        }
    }
    stir(rng, &mut m);
    write_object(rng, &m)
}

fn structured(rng: &mut Rng) -> Vec<u8> {
    let mut keys = vec![b'['];
    for i in 0..rng.small(8) {
        if i > 0 {
            keys.push(b',');
        }
        if rng.chance(1, 10) {
            gen::value(rng, &mut keys, 2);
        } else {
            keys.extend(jwk(rng));
        }
    }
    keys.push(b']');
    let mut m = vec![(key("keys"), keys)];
    stir(rng, &mut m);
    write_object(rng, &m)
}

impl Target for Jwks {
    fn name(&self) -> &'static str {
        "jwks"
    }

    fn generate(&mut self, rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
        mix(rng, corpus, DICT, structured)
    }

    fn execute(&mut self, input: &[u8]) -> Result<(), String> {
        let parsed = refjson::parse(input, true);
        for depth in depths(input) {
            let r = super::timed("jwks_usable_keys", input.len(), || jwks_usable_keys(input, depth))?;
            let p = match (&parsed, &r) {
                (Err(e), Ok(_)) => {
                    return fail("accepted an invalid JWKS document", format!("{e}: {}", preview(input, 200)))
                }
                (Err(_), Err(_)) => continue,
                (Ok(p), _) => p,
            };
            let listed = match p.tree.as_ref().and_then(|t| struct_field(t, "keys", 0)) {
                Some(J::Arr(keys)) => Some(keys.len()),
                _ => None,
            };
            match r {
                Ok(n) => {
                    if p.info.depth > depth {
                        return fail("accepted nesting deeper than max_depth", p.info.depth);
                    }
                    if !p.info.dup_keys && listed.is_none_or(|l| n > l) {
                        return fail("more usable keys than listed", format!("{n} of {listed:?}"));
                    }
                }
                Err(e) => {
                    let object = matches!(p.tree, Some(J::Obj(_)));
                    if object
                        && listed.is_some()
                        && !p.info.dup_keys
                        && !p.info.lone_surrogate
                        && !p.info.invalid_utf8
                        && !p.info.float_overflow
                        && p.info.depth <= depth
                    {
                        return fail("refused a valid JWKS document", format!("{e}: {}", preview(input, 200)));
                    }
                }
            }
        }
        Ok(())
    }
}
