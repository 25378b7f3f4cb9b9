//! Small helpers shared by several modules.

pub mod json;

/// This process's id among the instances of a cluster: in connection ids (`{instance}-{conn}`),
/// logs, `/api/status`, and every Redis record and key the instance writes. One type, written
/// one way (16 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(pub u64);

impl InstanceId {
    /// A random id from the system CSPRNG (never 0).
    pub fn random() -> InstanceId {
        let mut raw = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        InstanceId(u64::from_be_bytes(raw) | 1)
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What an `Authorization` header holds, read the one way every endpoint reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Bearer <credentials>` (another scheme, no credentials, not ASCII).
    Malformed,
    Token(&'a str),
}

/// Reads `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235 §2.1) and
/// spaces around the token are ignored.
pub fn bearer(headers: &http::HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Bearer::Missing;
    };
    let Ok(value) = value.to_str() else {
        return Bearer::Malformed;
    };
    match value.trim_start().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Bearer::Token(token.trim())
        }
        _ => Bearer::Malformed,
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// `n` random bytes from the system CSPRNG, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // SystemRandom only fails when the OS has no entropy source; fall back to time-based bytes
    // would be unsafe, so an all-zero id is returned and the caller's uniqueness check catches it.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf);
    hex(&buf)
}

/// Decodes `%XX` and `+` in a query component.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded `key=value` pairs of a query string.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Some((percent_decode(k)?, percent_decode(v)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        let v: Vec<_> = query_pairs("token=a%2Eb&channel=room%3A1&channel=x&bad=%zz&e").collect();
        assert_eq!(
            v,
            vec![
                ("token".into(), "a.b".into()),
                ("channel".into(), "room:1".into()),
                ("channel".into(), "x".into()),
                ("e".into(), "".into())
            ]
        );
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}

#[cfg(test)]
mod bearer_tests {
    use super::*;

    #[test]
    fn one_parser_any_case() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::AUTHORIZATION, http::HeaderValue::from_str(v).unwrap());
            m
        };
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr  abc "] {
            assert_eq!(bearer(&h(v)), Bearer::Token("abc"), "{v}");
        }
        for v in ["Basic abc", "Bearer", "Bearer   ", "abc", "Bearerabc"] {
            assert_eq!(bearer(&h(v)), Bearer::Malformed, "{v}");
        }
        assert_eq!(bearer(&http::HeaderMap::new()), Bearer::Missing);
    }
}
