//! JWT verification (`auth::Verifier::verify`, HS256 secret): tokens arrive in the upgrade
//! request and in `auth` frames. Inputs are token strings: random bytes, mutated real tokens,
//! and tokens built from hostile headers and claims, correctly signed so that the claims are
//! actually parsed (alg none, deep nesting, huge numbers for `exp`, lone surrogates, duplicate
//! keys, non-canonical base64).
//!
//! Invariants: no panic; a token is accepted only when its header says HS256, its signature is
//! the secret's HMAC, it is not expired and its subject is a valid user id, and the claims
//! returned are the token's; a plainly valid token is never refused.

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::hmac;
use syncgate::auth::Verifier;
use syncgate::config::Config;
use syncgate::util::now_secs;

use super::{fail, stir, write_object};
use crate::corpus::Corpus;
use crate::gen;
use crate::refjson::{self, J};
use crate::rng::Rng;
use crate::runner::{preview, Target};

/// The HS256 secret the harness's verifier uses (and the corpus tokens are signed with).
pub const SECRET: &str = "syncgate-fuzz-secret-0123456789abcdef";

/// Longest token the verifier looks at.
const MAX_TOKEN: usize = 16 * 1024;

const DICT: &[&[u8]] =
    &[b".", b"..", b"=", b"==", b"+", b"/", b"-", b"_", b"eyJ", b"e30", b"eyJhbGciOiJub25lIn0", b"\xc3\xa9"];

pub struct Jwt {
    verifier: Verifier,
    rt: tokio::runtime::Runtime,
    key: hmac::Key,
}

impl Jwt {
    pub fn new() -> Jwt {
        let dir = std::env::temp_dir().join("syncgate-fuzz");
        let vars: HashMap<String, String> = [
            (syncgate::config::JWT_SECRET.to_string(), SECRET.to_string()),
            (syncgate::config::DATA_DIR.to_string(), dir.display().to_string()),
        ]
        .into_iter()
        .collect();
        let config = Config::from_map(&vars).expect("fuzz config");
        let verifier = Verifier::new(&config).expect("fuzz verifier");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        Jwt { verifier, rt, key: hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes()) }
    }
}

impl Default for Jwt {
    fn default() -> Self {
        Jwt::new()
    }
}

/// `base64url(header).base64url(payload).base64url(HMAC-SHA256)` with the harness secret.
pub fn sign_token(header: &[u8], payload: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let sig = hmac::sign(&key, msg.as_bytes());
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn num(rng: &mut Rng, good: u64) -> Vec<u8> {
    let now = now_secs();
    let v = match rng.below(12) {
        0..=5 => good.to_string(),
        6 => now.saturating_sub(rng.below(100_000) as u64).to_string(),
        7 => (rng.one(&[
            "0",
            "-1",
            "1",
            "1e30",
            "18446744073709551615",
            "18446744073709551616",
            "4102444800.5",
            "1e999",
        ]))
        .to_string(),
        8 => {
            (rng.one(&["\"4102444800\"", "null", "[]", "true", "{}", "-0", "4.1e9", "9223372036854775807"])).to_string()
        }
        9 => {
            let mut v = Vec::new();
            gen::number(rng, &mut v);
            String::from_utf8_lossy(&v).into_owned()
        }
        _ => (now + rng.below(1 << 30) as u64).to_string(),
    };
    v.into_bytes()
}

fn user(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=5 => gen::quote(rng.one(&["alice", "bob", "user_1", "a.b-c@d=e", "x"])).into_bytes(),
        6 => gen::quote(&"u".repeat(rng.range(120, 130))).into_bytes(),
        7 => (rng.one(&[
            "12345",
            "-1",
            "1.5",
            "18446744073709551616",
            "1e400",
            "null",
            "\"\"",
            "\"a:b\"",
            "\"\\ud800\"",
        ]))
        .as_bytes()
        .to_vec(),
        _ => {
            let mut v = Vec::new();
            gen::value(rng, &mut v, 2);
            v
        }
    }
}

/// A header and a payload, as JSON text.
fn parts(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let mut h = Vec::new();
    let alg: &[u8] = if rng.chance(7, 10) {
        b"\"HS256\""
    } else {
        rng.one(&[
            &b"\"none\""[..],
            b"\"None\"",
            b"\"NONE\"",
            b"\"HS384\"",
            b"\"HS512\"",
            b"\"RS256\"",
            b"\"ES256\"",
            b"\"EdDSA\"",
            b"\"\"",
            b"\"HS256 \"",
            b"null",
            b"256",
        ])
    };
    h.push((super::key("alg"), alg.to_vec()));
    if rng.chance(2, 3) {
        h.push((super::key("typ"), super::str_value(rng, &["JWT", "jwt", "at+jwt"])));
    }
    if rng.chance(1, 6) {
        let k = rng.one(&["kid", "jku", "x5u", "cty", "crit", "b64", "jwk", "x5c"]);
        let mut v = Vec::new();
        gen::value(rng, &mut v, 3);
        h.push((super::key(k), v));
    }
    if rng.chance(1, 20) {
        h.push((super::key("alg"), b"\"none\"".to_vec()));
    }
    stir(rng, &mut h);
    let header = write_object(rng, &h);

    let far = now_secs() + 86_400 * 365;
    let mut c = Vec::new();
    if rng.chance(9, 10) {
        c.push((super::key(if rng.chance(9, 10) { "sub" } else { "user_id" }), user(rng)));
    }
    if rng.chance(19, 20) {
        c.push((super::key("exp"), num(rng, far)));
    }
    if rng.chance(1, 2) {
        c.push((super::key("iat"), num(rng, now_secs())));
    }
    if rng.chance(1, 3) {
        let v = match rng.below(4) {
            0 => b"[\"room:*\",\"dm:*\"]".to_vec(),
            1 => format!("[{}]", vec!["\"a:*\""; rng.range(0, 3000)].join(",")).into_bytes(),
            _ => {
                let mut v = Vec::new();
                gen::value(rng, &mut v, 3);
                v
            }
        };
        c.push((super::key("channels"), v));
    }
    if rng.chance(1, 3) {
        c.push((super::key("did"), super::str_value(rng, &["phone-1", ""])));
    }
    if rng.chance(1, 8) {
        let k = rng.one(&["nbf", "aud", "iss", "jti", "x"]);
        let mut v = Vec::new();
        if rng.chance(1, 3) {
            let n = gen::depth(rng).min(12_000);
            gen::nest(rng, &mut v, n, |_, out| out.push(b'1'));
        } else {
            gen::value(rng, &mut v, 4);
        }
        c.push((super::key(k), v));
    }
    stir(rng, &mut c);
    let payload = write_object(rng, &c);
    (header, payload)
}

fn encode(rng: &mut Rng, bytes: &[u8]) -> String {
    match rng.below(20) {
        0 => URL_SAFE.encode(bytes),
        1 => STANDARD.encode(bytes),
        _ => URL_SAFE_NO_PAD.encode(bytes),
    }
}

fn structured(rng: &mut Rng) -> String {
    let (header, payload) = parts(rng);
    let msg = format!("{}.{}", encode(rng, &header), encode(rng, &payload));
    let good = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes()), msg.as_bytes());
    let sig = match rng.below(20) {
        0 => String::new(),
        1 => URL_SAFE_NO_PAD.encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"wrong"), msg.as_bytes()).as_ref()),
        2 => "AAAA".into(),
        _ => encode(rng, good.as_ref()),
    };
    match rng.below(30) {
        0 => format!("{msg}.{sig}.{sig}"),
        1 => msg,
        2 => format!(" {msg}.{sig}"),
        _ => format!("{msg}.{sig}"),
    }
}

/// Decodes `header.payload.signature` segments of a token (strict base64url, no padding).
fn segments(token: &str) -> Option<[Vec<u8>; 3]> {
    let mut it = token.split('.');
    let (h, p, s) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some([URL_SAFE_NO_PAD.decode(h).ok()?, URL_SAFE_NO_PAD.decode(p).ok()?, URL_SAFE_NO_PAD.decode(s).ok()?])
}

/// A structure-aware mutation of a corpus token: its header or payload JSON is mutated, then
/// the token is re-signed (so that the mutated claims get parsed).
fn remix(rng: &mut Rng, corpus: &Corpus) -> Option<String> {
    let base = corpus.pick_small(rng)?;
    let [mut h, mut p, _] = segments(std::str::from_utf8(base).ok()?)?;
    let target = if rng.chance(1, 4) { &mut h } else { &mut p };
    crate::mutate::mutate(rng, target, corpus, &[b"\"exp\":", b"\"sub\":", b"\"alg\":\"none\""]);
    Some(sign_token(&h, &p))
}

/// True when the token is plainly valid: HS256 header with nothing else but `typ`, the right
/// signature, unexpired integer `exp`, string `sub` that is a valid user id, and only the claims
/// syncgate reads, well typed.
fn plainly_valid(token: &str, key: &hmac::Key) -> bool {
    if token.len() > MAX_TOKEN {
        return false;
    }
    let Some([h, p, s]) = segments(token) else { return false };
    let msg_len = token.rfind('.').unwrap_or(0);
    if hmac::verify(key, &token.as_bytes()[..msg_len], &s).is_err() {
        return false;
    }
    let strict = |b: &[u8]| {
        refjson::parse(b, true).ok().filter(|p| {
            let i = &p.info;
            i.plain() && i.depth <= 100
        })
    };
    let (Some(hp), Some(pp)) = (strict(&h), strict(&p)) else { return false };
    let (Some(J::Obj(hm)), Some(J::Obj(pm))) = (&hp.tree, &pp.tree) else { return false };
    let header_ok = hm.iter().all(|(k, v)| match k.as_str() {
        "alg" => v == &J::Str("HS256".into()),
        "typ" => matches!(v, J::Str(_)),
        _ => false,
    }) && hm.iter().any(|(k, _)| k == "alg");
    let u64_at_least = |v: &J, min: u64| matches!(v, J::Num(n) if n.parse::<u64>().is_ok_and(|n| n >= min));
    let claims_ok = pm.iter().all(|(k, v)| match k.as_str() {
        "sub" => v.as_str().is_some_and(syncgate::channel::valid_user_id),
        "exp" => u64_at_least(v, now_secs() + 5),
        "iat" => u64_at_least(v, 0),
        "did" => matches!(v, J::Str(_)),
        "channels" => matches!(v, J::Arr(a) if a.iter().all(|c| matches!(c, J::Str(_)))),
        _ => false,
    }) && pm.iter().any(|(k, _)| k == "sub")
        && pm.iter().any(|(k, _)| k == "exp");
    header_ok && claims_ok
}

impl Target for Jwt {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn generate(&mut self, rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
        match rng.below(10) {
            0..=3 => {
                let mut t = structured(rng).into_bytes();
                if rng.chance(1, 4) {
                    crate::mutate::mutate(rng, &mut t, corpus, DICT);
                }
                t
            }
            4..=5 => remix(rng, corpus).map(String::into_bytes).unwrap_or_default(),
            6 => (0..rng.small(200)).map(|_| rng.byte()).collect(),
            _ => {
                let mut t = corpus.pick_small(rng).unwrap_or_default().to_vec();
                crate::mutate::mutate(rng, &mut t, corpus, DICT);
                t
            }
        }
    }

    fn execute(&mut self, input: &[u8]) -> Result<(), String> {
        let token = String::from_utf8_lossy(input);
        let now = now_secs();
        let r = super::timed("verify", input.len(), || self.rt.block_on(self.verifier.verify(&token)))?;
        match r {
            Ok(claims) => {
                let Some([h, p, s]) = segments(&token) else {
                    return fail("accepted a token that is not three base64url segments", preview(input, 200));
                };
                // serde reads `alg` however deep the other members nest (it skips them iteratively).
                #[derive(serde::Deserialize)]
                struct Alg {
                    alg: String,
                }
                let alg = refjson::parse(&h, false).ok().and_then(|_| serde_json::from_slice::<Alg>(&h).ok());
                if alg.as_ref().map(|a| a.alg.as_str()) != Some("HS256") {
                    return fail("accepted a token whose header is not HS256", preview(&h, 200));
                }
                let msg_len = token.rfind('.').unwrap_or(0);
                if hmac::verify(&self.key, &token.as_bytes()[..msg_len], &s).is_err() {
                    return fail("accepted a token with a wrong signature", preview(input, 200));
                }
                if claims.exp < now {
                    return fail("accepted an expired token", claims.exp);
                }
                if !syncgate::channel::valid_user_id(&claims.user_id) {
                    return fail("accepted an invalid user id", &claims.user_id);
                }
                // (A payload nesting deeper than the reference tree is not compared.)
                let payload = refjson::parse(&p, true).ok().and_then(|p| p.tree);
                let exp_ok =
                    |t: &J| matches!(t.get("exp"), Some(J::Num(n)) if refjson::same_number(n, &claims.exp.to_string()));
                if payload.as_ref().is_some_and(|t| !exp_ok(t)) {
                    return fail(
                        "the returned exp is not the token's",
                        format!("{} vs {}", claims.exp, preview(&p, 200)),
                    );
                }
                // A numeric subject becomes the user id through `serde_json::Number`'s text. Only a
                // 64-bit integer has one spelling; other numbers go through `f64` and its text, so
                // `1.5`, `1.50` and `15e-1` are all user "1.5", and `-0` is "-0.0" (big numbers
                // print as `1e+22`, and `+` is not allowed in a user id).
                let subject = payload.as_ref().and_then(|t| match t.get("sub") {
                    None | Some(J::Null) => t.get("user_id"),
                    s => s,
                });
                if let Some(J::Num(n)) = subject {
                    match n.parse::<i128>() {
                        Ok(v) if i64::try_from(v).is_ok() || u64::try_from(v).is_ok() => {
                            if claims.user_id != v.to_string() {
                                return fail(
                                    "a numeric sub became another user id",
                                    format!("{n} -> {}", claims.user_id),
                                );
                            }
                        }
                        _ => {
                            return fail(
                                "accepted a numeric sub that is not a 64-bit integer",
                                format!("{n} -> user id {}", claims.user_id),
                            )
                        }
                    }
                }
            }
            Err(e) => {
                if plainly_valid(&token, &self.key) {
                    return fail("refused a plainly valid token", format!("{e}: {}", preview(input, 300)));
                }
            }
        }
        Ok(())
    }
}
