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
