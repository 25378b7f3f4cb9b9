//! Structured generators: JSON-ish values seeded with hostile tokens (huge numbers, lone
//! surrogates, NUL and control characters, invalid UTF-8, duplicate keys, deep nesting). Most of
//! what they produce is valid JSON, so that inputs get past the parser to the code behind it.

use crate::rng::Rng;

/// Number literals: edge cases of `i64`/`u64`/`f64` and a few that are not JSON at all.
pub const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "0.0",
    "1",
    "-1",
    "7",
    "1e999999",
    "-1e999999",
    "1e-999999",
    "1E+2",
    "1e308",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "4.9e-324",
    "5e-324",
    "2.4703282292062327e-324",
    "2.2250738585072011e-308",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "0.1",
    "0.30000000000000004",
    "1e22",
    "1e23",
    "8.98846567431158e307",
    "1.00000000000000011102230246251565404236316680908203125",
    "1e1000000000000000000000",
    "-1e-1000000000000000000000",
    "01",
    "1.",
    "-",
    ".5",
    "+1",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e",
    "0x10",
];

/// String literals (with their quotes), some of them not valid JSON.
pub const STRINGS: &[&[u8]] = &[
    b"\"\"",
    b"\"a\"",
    b"\"\\ud800\"",
    b"\"\\udc00\"",
    b"\"\\uDBFF\"",
    b"\"\\ud800\\udc00\"",
    b"\"\\udbff\\udfff\"",
    b"\"\\ud800\\u0041\"",
    b"\"\\ud800\\ud800\"",
    b"\"a\\ud800b\"",
    b"\"\\ud800\\n\"",
    b"\"\\ud83d\\ude00\"",
    b"\"\\u0000\"",
    b"\"\\u001f\"",
    b"\"\\\"\"",
    b"\"\\\\\"",
    b"\"\\/\"",
    b"\"\xc3\xa9\"",
    b"\"\xe2\x80\xa8\xe2\x80\xa9\"",
    b"\"\xf4\x8f\xbf\xbf\"",
    b"\"\xef\xbb\xbf\"",
    b"\"a\x00b\"",
    b"\"\t\"",
    b"\"\x1b[31m\"",
    b"\"\x7f\"",
    b"\"\xff\"",
    b"\"\xc0\x80\"",
    b"\"\xed\xa0\x80\"",
    b"\"\xf4\x90\x80\x80\"",
    b"\"\xe2\x82\"",
    b"\"\\x41\"",
    b"\"\\u12\"",
    b"\"unterminated",
];

/// Byte tokens the mutator inserts.
pub const TOKENS: &[&[u8]] = &[
    b"\\ud800",
    b"\\udc00",
    b"\\u0000",
    b"\\",
    b"\\\"",
    b"1e999999",
    b"-0",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\x00",
    b"\xff",
    b"\xfe",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\xf4\x90\x80\x80",
    b"\x7f",
    b"\x1b",
    b"\r\n",
    b"\"a\":1,\"a\":2",
    b"\"a\":1,",
    b"[",
    b"{",
    b"]",
    b"}",
    b"[[[[[[[[[[[[[[[[",
    b"]]]]]]]]]]]]]]]]",
    b"{\"a\":",
    b"\"",
    b",",
    b":",
    b"null",
    b"true",
    b"false",
    b"{}",
    b"[]",
    b"\"\"",
    b" ",
];

/// Keys the gateway's decoders look at.
pub const KEYS: &[&str] = &[
    "type",
    "id",
    "channel",
    "event",
    "data",
    "token",
    "since",
    "seq",
    "msg_id",
    "state",
    "op",
    "user_id",
    "device_id",
    "keys",
    "kty",
    "kid",
    "alg",
    "use",
    "n",
    "e",
    "crv",
    "x",
    "y",
    "email",
    "password",
    "username",
    "refresh_token",
    "current_password",
    "new_password",
    "otp",
    "sub",
    "exp",
    "channels",
    "did",
    "a",
];

/// A valid JSON number with random digits (long mantissas, big exponents).
pub fn random_number(rng: &mut Rng, out: &mut Vec<u8>) {
    if rng.chance(1, 3) {
        out.push(b'-');
    }
    let digits = 1 + rng.small(40);
    out.push(b'1' + rng.below(9) as u8);
    for _ in 1..digits {
        out.push(b'0' + rng.below(10) as u8);
    }
    if rng.chance(1, 2) {
        out.push(b'.');
        for _ in 0..1 + rng.small(30) {
            out.push(b'0' + rng.below(10) as u8);
        }
    }
    if rng.chance(1, 2) {
        out.push(rng.one(b"eE"));
        match rng.below(3) {
            0 => out.push(b'-'),
            1 => out.push(b'+'),
            _ => {}
        }
        let e = match rng.below(5) {
            0 => rng.below(30),
            1 => 280 + rng.below(60),
            2 => rng.below(1_000_000),
            3 => {
                // Around the integer widths a parser might keep the exponent in.
                let base: u64 = rng.one(&[1 << 15, 1 << 16, 1 << 31, 1 << 32, 1 << 33, 3 << 32, 1 << 63]);
                (base as usize).wrapping_add(rng.below(600)).wrapping_sub(300)
            }
            _ => rng.below(400),
        };
        out.extend_from_slice(e.to_string().as_bytes());
    }
}

pub fn number(rng: &mut Rng, out: &mut Vec<u8>) {
    if rng.chance(1, 2) {
        out.extend_from_slice(rng.pick(NUMBERS).as_bytes());
    } else {
        random_number(rng, out);
    }
}

/// Characters for random strings: ASCII, escapes, multi-byte UTF-8, surrogate escapes.
fn string_piece(rng: &mut Rng, out: &mut Vec<u8>) {
    match rng.below(20) {
        0..=9 => out.push(b'a' + rng.below(26) as u8),
        10 => out.extend_from_slice(rng.one(&[&b"\\n"[..], b"\\t", b"\\\"", b"\\\\", b"\\/", b"\\b", b"\\f", b"\\r"])),
        11 => out.extend_from_slice(format!("\\u{:04x}", rng.below(0x10000)).as_bytes()),
        12 => out.extend_from_slice(format!("\\u{:04X}", 0xD800 + rng.below(0x800)).as_bytes()),
        13 => out.extend_from_slice(
            format!("\\u{:04x}\\u{:04x}", 0xD800 + rng.below(0x400), 0xDC00 + rng.below(0x400)).as_bytes(),
        ),
        14 => {
            out.extend_from_slice(rng.pick(&["é", "€", "😀", "\u{2028}", "\u{feff}", "\u{10ffff}", "日本"]).as_bytes())
        }
        15 => out.extend_from_slice(rng.one(&[&b":"[..], b"*", b"@", b".", b"-", b"_", b"="])),
        16 => out.push(b'0' + rng.below(10) as u8),
        17 => out.extend_from_slice(rng.one(&[&b"["[..], b"]", b"{", b"}", b","])),
        18 => out.push(rng.below(0x20) as u8),
        _ => out.push(0x80 + rng.below(0x80) as u8),
    }
}

/// A JSON string literal, mostly valid.
pub fn string(rng: &mut Rng, out: &mut Vec<u8>) {
    match rng.below(6) {
        0 => out.extend_from_slice(rng.one(STRINGS)),
        1 => {
            out.push(b'"');
            out.extend_from_slice(rng.pick(KEYS).as_bytes());
            out.push(b'"');
        }
        _ => {
            out.push(b'"');
            let n = if rng.chance(1, 200) { rng.range(1000, 70_000) } else { rng.small(40) };
            if rng.chance(1, 4) {
                for _ in 0..n {
                    string_piece(rng, out);
                }
            } else {
                for _ in 0..n {
                    out.push(b'a' + rng.below(26) as u8);
                }
            }
            out.push(b'"');
        }
    }
}

fn ws(rng: &mut Rng, out: &mut Vec<u8>) {
    if rng.chance(1, 8) {
        for _ in 0..rng.range(1, 3) {
            out.push(rng.one(b" \t\r\n"));
        }
    }
}

/// `n` levels of arrays or objects around `inner`.
pub fn nest(rng: &mut Rng, out: &mut Vec<u8>, n: usize, inner: impl FnOnce(&mut Rng, &mut Vec<u8>)) {
    let objects = rng.chance(1, 3);
    let mixed = rng.chance(1, 4);
    let mut closers = Vec::with_capacity(n);
    for i in 0..n {
        if objects || (mixed && i % 2 == 1) {
            out.extend_from_slice(b"{\"a\":");
            closers.push(b'}');
        } else {
            out.push(b'[');
            closers.push(b']');
        }
    }
    inner(rng, out);
    while let Some(c) = closers.pop() {
        out.push(c);
    }
}

/// A nesting depth around the interesting limits (1, 127/128/129, 1024/1025) or huge.
pub fn depth(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0 => rng.range(1, 4),
        1 => rng.range(120, 135),
        2 => rng.range(250, 260),
        3 if rng.chance(1, 2) => rng.range(505, 520),
        3 => rng.range(1020, 1030),
        4 => rng.range(2000, 20_000),
        5 if rng.chance(1, 20) => 400_000,
        _ => rng.range(5, 100),
    }
}

/// A JSON-ish value with at most `budget` levels of ordinary nesting (deep runs aside).
pub fn value(rng: &mut Rng, out: &mut Vec<u8>, budget: usize) {
    ws(rng, out);
    match rng.below(24) {
        0 => out.extend_from_slice(b"null"),
        1 => out.extend_from_slice(b"true"),
        2 => out.extend_from_slice(b"false"),
        3..=6 => number(rng, out),
        7..=11 => string(rng, out),
        12..=15 if budget > 0 => {
            out.push(b'[');
            for i in 0..rng.small(12) {
                if i > 0 {
                    out.push(b',');
                }
                value(rng, out, budget - 1);
            }
            ws(rng, out);
            out.push(b']');
        }
        16..=19 if budget > 0 => object(rng, out, budget - 1),
        20 if rng.chance(1, 4) => {
            let n = depth(rng);
            nest(rng, out, n, |rng, out| value(rng, out, 0));
        }
        21 if rng.chance(1, 3) => out.extend_from_slice(rng.one(TOKENS)),
        _ => number(rng, out),
    }
    ws(rng, out);
}

/// An object with keys from [`KEYS`] or random, sometimes repeated.
pub fn object(rng: &mut Rng, out: &mut Vec<u8>, budget: usize) {
    out.push(b'{');
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..rng.small(10) {
        if i > 0 {
            out.push(b',');
        }
        ws(rng, out);
        let key = if !keys.is_empty() && rng.chance(1, 8) {
            rng.pick(&keys).clone()
        } else if rng.chance(2, 3) {
            format!("\"{}\"", rng.pick(KEYS)).into_bytes()
        } else {
            let mut k = Vec::new();
            string(rng, &mut k);
            k
        };
        out.extend_from_slice(&key);
        keys.push(key);
        ws(rng, out);
        out.push(b':');
        value(rng, out, budget);
    }
    out.push(b'}');
}

/// A JSON string literal holding `s` (escaped as the gateway's encoder would not: raw UTF-8).
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
