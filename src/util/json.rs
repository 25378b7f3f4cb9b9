//! Untrusted JSON is bounded before it is parsed: [`check_depth`] is an iterative pre-scan that
//! refuses nesting deeper than the configured limit, so no recursive parser (simd-json, serde_json)
//! or encoder ever sees input that could exhaust a worker thread's stack.

/// The highest `SYNCGATE_MAX_JSON_DEPTH` accepted: the recursive parsers and encoders stay far
/// from a 2 MiB worker stack at this depth, even unoptimised (see the test below; the fuzz
/// harness found 1024 levels of objects overflowing it in a debug build).
pub const MAX_DEPTH_LIMIT: usize = 512;

/// The input nests deeper than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    pub limit: usize,
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JSON nested deeper than {} levels", self.limit)
    }
}

impl std::error::Error for TooDeep {}

/// Refuses `bytes` when arrays/objects nest deeper than `max` (the outermost object is depth 1).
/// Brackets inside strings do not count. Malformed input is not judged here (the parser does
/// that); this only guarantees that whatever a parser sees is at most `max` deep. One pass, no
/// allocation, O(1) state.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut i = 0;
    let n = bytes.len();
    while i < n {
        match bytes[i] {
            b'"' => {
                // Skip the string: an escape consumes the next byte, whatever it is.
                i += 1;
                while i < n {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(TooDeep { limit: max });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Why [`check_frame`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    TooDeep(TooDeep),
    /// Something simd-json would misread instead of refusing (see [`check_frame`]).
    Malformed(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooDeep(d) => d.fmt(f),
            FrameError::Malformed(why) => write!(f, "malformed JSON: {why}"),
        }
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    let h = b.get(..4)?;
    let s = std::str::from_utf8(h).ok()?;
    u32::from_str_radix(s, 16).ok().filter(|_| h.iter().all(u8::is_ascii_hexdigit))
}

/// A number token (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`) whose exponent has at most
/// nine digits.
fn valid_number(t: &[u8]) -> Result<(), &'static str> {
    const BAD: &str = "a number is not valid JSON";
    let digits = |t: &[u8], i: usize| t[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut i = usize::from(t.first() == Some(&b'-'));
    match digits(t, i) {
        0 => return Err(BAD),
        n if n > 1 && t[i] == b'0' => return Err(BAD),
        n => i += n,
    }
    if t.get(i) == Some(&b'.') {
        match digits(t, i + 1) {
            0 => return Err(BAD),
            n => i += 1 + n,
        }
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        match digits(t, i) {
            0 => return Err(BAD),
            n if n > 9 => return Err("a number's exponent is out of range"),
            n => i += n,
        }
    }
    if i == t.len() {
        Ok(())
    } else {
        Err(BAD)
    }
}

/// [`check_depth`] for WebSocket frames (which simd-json parses), in the same single pass, plus
/// what simd-json 0.17 would misread instead of refusing (found by the fuzz harness): a lone
/// UTF-16 surrogate escape (`"\ud800"` decodes as U+0000), a number that is not valid JSON or
/// whose exponent has ten or more digits (`1e4294967297` decodes as 10.0; a trailing `.` after
/// 19 digits is skipped), and bytes outside strings that no JSON has there (`1<NUL>2` reads as 1,
/// a backslash, a string glued to a scalar). Strings are otherwise left to the parser.
pub fn check_frame(bytes: &[u8], max_depth: usize) -> Result<(), FrameError> {
    let bad = |why| Err(FrameError::Malformed(why));
    let mut depth = 0usize;
    let mut i = 0;
    let n = bytes.len();
    // Start of the scalar token (number or literal) being read, if any.
    let mut scalar: Option<usize> = None;
    while i < n {
        let b = bytes[i];
        if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'a'..=b'z' | b'A'..=b'Z') {
            scalar.get_or_insert(i);
            i += 1;
            continue;
        }
        if let Some(start) = scalar.take() {
            if matches!(bytes[start], b'-' | b'0'..=b'9') {
                if let Err(why) = valid_number(&bytes[start..i]) {
                    return bad(why);
                }
            }
            if b == b'"' {
                return bad("a string directly after a scalar");
            }
        }
        match b {
            b'"' => {
                i += 1;
                while i < n {
                    match bytes[i] {
                        b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                            match hex4(&bytes[i + 2..]) {
                                Some(0xD800..=0xDBFF) => {
                                    let low = bytes.get(i + 6..i + 8) == Some(b"\\u")
                                        && matches!(hex4(&bytes[(i + 8).min(n)..]), Some(0xDC00..=0xDFFF));
                                    if !low {
                                        return bad("a lone UTF-16 surrogate escape");
                                    }
                                    i += 12;
                                }
                                Some(0xDC00..=0xDFFF) => return bad("a lone UTF-16 surrogate escape"),
                                // Valid or not, the parser judges the rest of the escape.
                                _ => i += 2,
                            }
                        }
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(FrameError::TooDeep(TooDeep { limit: max_depth }));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' => {}
            _ => return bad("a byte that cannot appear outside a string"),
        }
        i += 1;
    }
    if let Some(start) = scalar {
        if matches!(bytes[start], b'-' | b'0'..=b'9') {
            if let Err(why) = valid_number(&bytes[start..]) {
                return bad(why);
            }
        }
    }
    Ok(())
}

/// `serde_json::from_slice` behind the depth pre-scan. serde_json's own limit (127 levels) is
/// lifted, as the pre-scan already bounds the depth to at most [`MAX_DEPTH_LIMIT`].
pub fn from_slice<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8], max_depth: usize) -> Result<T, JsonError> {
    check_depth(bytes, max_depth).map_err(JsonError::TooDeep)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v = T::deserialize(&mut de).map_err(JsonError::Invalid)?;
    de.end().map_err(JsonError::Invalid)?;
    Ok(v)
}

/// Why untrusted JSON was refused.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("{0}")]
    TooDeep(TooDeep),
    #[error("{0}")]
    Invalid(serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nest(depth: usize) -> String {
        let mut s = String::new();
        for i in 0..depth {
            s.push_str(if i % 2 == 0 { "[" } else { "{\"k\":" });
        }
        s.push('1');
        for i in (0..depth).rev() {
            s.push(if i % 2 == 0 { ']' } else { '}' });
        }
        s
    }

    #[test]
    fn counts_only_structure() {
        assert!(check_depth(nest(128).as_bytes(), 128).is_ok());
        assert_eq!(check_depth(nest(129).as_bytes(), 128), Err(TooDeep { limit: 128 }));
        assert!(check_depth(br#"{"a":"[[[[[[[[[[","b":"\"[[[["}"#, 2).is_ok());
        assert!(check_depth(br#"{"a":"\\"}"#, 1).is_ok());
        assert!(check_depth(br#"["\\\"[[[", [1]]"#, 2).is_ok());
        assert!(check_depth(br#"["\\\"[[[", [[1]]]"#, 2).is_err());
        // Unterminated strings and stray closers are left to the parser.
        assert!(check_depth(b"]]]]}}}[", 1).is_ok());
        assert!(check_depth(b"\"\\", 1).is_ok());
        let bomb = "[".repeat(400_000) + &"]".repeat(400_000);
        assert!(check_depth(bomb.as_bytes(), 128).is_err());
    }

    #[test]
    fn frames_simd_json_would_misread_are_refused() {
        let ok = |s: &str| check_frame(s.as_bytes(), 128);
        for good in [
            r#"{"type":"publish","id":-1.5e+3,"data":[0,-0,1.25,3E9,true,false,null,"\ud83d\ude00","\u0041"]}"#,
            " { \"a\" : 1 } ",
            "12",
            r#""x""#,
            "[1e123456789]",
        ] {
            assert_eq!(ok(good), Ok(()), "{good}");
        }
        for bad in [
            r#"{"data":"\ud800"}"#,
            r#"{"data":"\ud800\u0041"}"#,
            r#"{"data":"\udc00"}"#,
            r#"{"data":"\ud800"#,
            r#"{"data":1e4294967297}"#,
            r#"{"data":1e0000000001}"#,
            "{\"data\":1\u{0}2}",
            r#"{"data":1234567890123456789012.}"#,
            r#"{"data":12345678901234567890\"}"#,
            r#"{"data":01}"#,
            r#"{"data":1.}"#,
            r#"{"data":-}"#,
            r#"{"a":1"b"}"#,
            "[1]\u{7f}",
        ] {
            assert!(matches!(ok(bad), Err(FrameError::Malformed(_))), "{bad}");
        }
        assert!(matches!(ok(&nest(129)), Err(FrameError::TooDeep(_))));
        assert!(ok(&nest(128)).is_ok());
    }

    #[test]
    fn serde_at_the_limit() {
        let doc = nest(128);
        let v: serde_json::Value = from_slice(doc.as_bytes(), 128).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), doc);
        assert!(matches!(from_slice::<serde_json::Value>(nest(129).as_bytes(), 128), Err(JsonError::TooDeep(_))));
    }

    /// The deepest accepted input parses and re-encodes on a 2 MiB stack (tokio's worker size)
    /// in this unoptimised build, with every parser the gateway uses.
    #[test]
    fn deepest_allowed_fits_a_worker_stack() {
        let doc = nest(MAX_DEPTH_LIMIT);
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                use simd_json::prelude::*;
                let mut buf = doc.clone().into_bytes();
                let v = simd_json::to_borrowed_value(&mut buf).unwrap();
                let mut out = Vec::new();
                v.write(&mut out).unwrap();
                assert_eq!(out, doc.as_bytes());
                let s: serde_json::Value = from_slice(doc.as_bytes(), MAX_DEPTH_LIMIT).unwrap();
                drop(s);
                let raw: Box<serde_json::value::RawValue> = from_slice(doc.as_bytes(), MAX_DEPTH_LIMIT).unwrap();
                assert_eq!(raw.get(), doc);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
