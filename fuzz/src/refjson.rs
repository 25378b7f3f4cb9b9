//! A strict reference JSON parser (RFC 8259), iterative so that it never recurses whatever the
//! nesting: it judges every decoder's output and is the oracle for `check_depth`. It records
//! what the gateway's parsers are known to treat differently (lone surrogates, duplicate keys,
//! integers beyond 64 bits, numbers beyond `f64`).

/// A parsed value. Numbers keep their text; strings are decoded (a lone surrogate becomes
/// U+FFFD and is flagged in [`Info`]). Objects keep their members in order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

/// What the parse saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// Deepest array/object nesting (the outermost container is 1; a scalar is 0).
    pub depth: usize,
    /// A `\uD800`-`\uDFFF` escape not part of a surrogate pair.
    pub lone_surrogate: bool,
    /// An object with the same key twice.
    pub dup_keys: bool,
    /// An integer literal outside `i64::MIN..=u64::MAX`.
    pub big_int: bool,
    /// A number whose value is infinite as an `f64`, or within a few units in the last place of
    /// `f64::MAX` (serde_json's approximate parsing may round those past it and refuse them).
    pub float_overflow: bool,
    /// A number whose exponent is 2^31 or more in magnitude.
    pub huge_exponent: bool,
    /// Invalid UTF-8 inside a string (decoded as U+FFFD). serde_json lets it through in values
    /// it skips (unknown fields, `IgnoredAny`); anything it decodes is checked.
    pub invalid_utf8: bool,
}

impl Info {
    /// Nothing any parser could read differently: no lone surrogate, no invalid UTF-8, no
    /// duplicate key, no number beyond 64-bit integers or `f64`.
    pub fn plain(&self) -> bool {
        !self.lone_surrogate && !self.invalid_utf8 && !self.dup_keys && !self.big_int && !self.float_overflow
    }
}

/// The result of a parse: the tree only when it was asked for and the nesting is at most
/// [`TREE_DEPTH`] (so that dropping and comparing it recurses a bounded amount).
pub struct Parsed {
    pub info: Info,
    pub tree: Option<J>,
}

/// Trees are built up to this depth (above the gateway's `MAX_DEPTH_LIMIT`).
pub const TREE_DEPTH: usize = 1100;

enum Open {
    Arr(Vec<J>),
    Obj(Vec<(String, J)>, String),
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
    info: Info,
    build: bool,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let Some(h) = self.b.get(self.i..self.i + 4) else { return self.err("truncated \\u escape") };
        let mut n = 0u32;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return self.err("bad hex digit in \\u escape"),
            };
            n = n * 16 + u32::from(d);
        }
        self.i += 4;
        Ok(n)
    }

    /// At the opening quote; returns the decoded string.
    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while self.i < self.b.len() && !matches!(self.b[self.i], b'"' | b'\\' | 0..=0x1f) {
                self.i += 1;
            }
            let run = &self.b[start..self.i];
            if !run.is_ascii() {
                match std::str::from_utf8(run) {
                    Ok(s) if self.build => out.push_str(s),
                    Ok(_) => {}
                    Err(_) => {
                        self.info.invalid_utf8 = true;
                        if self.build {
                            out.push_str(&String::from_utf8_lossy(run));
                        }
                    }
                }
            } else if self.build {
                // ASCII: valid UTF-8.
                out.push_str(std::str::from_utf8(run).unwrap_or_default());
            }
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(e) = self.peek() else { return self.err("truncated escape") };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi) {
                                let pair = self.b.get(self.i..self.i + 2) == Some(b"\\u");
                                let save = self.i;
                                let lo = if pair {
                                    self.i += 2;
                                    Some(self.hex4()?)
                                } else {
                                    None
                                };
                                match lo {
                                    Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                            .unwrap_or('\u{fffd}')
                                    }
                                    _ => {
                                        // Lone high surrogate; the next escape is read on its own.
                                        self.i = save;
                                        self.info.lone_surrogate = true;
                                        '\u{fffd}'
                                    }
                                }
                            } else if (0xDC00..0xE000).contains(&hi) {
                                self.info.lone_surrogate = true;
                                '\u{fffd}'
                            } else {
                                char::from_u32(hi).unwrap_or('\u{fffd}')
                            }
                        }
                        _ => return self.err("bad escape"),
                    };
                    if self.build {
                        out.push(c);
                    }
                }
                Some(_) => return self.err("control character in string"),
            }
        }
    }

    fn number(&mut self) -> Result<String, String> {
        let start = self.i;
        let b = self.b;
        let digits = |i: &mut usize| {
            let s = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            *i - s
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut self.i);
            }
            _ => return self.err("bad number"),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            if digits(&mut self.i) == 0 {
                return self.err("bad fraction");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            integer = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            let from = self.i;
            if digits(&mut self.i) == 0 {
                return self.err("bad exponent");
            }
            let exp = std::str::from_utf8(&b[from..self.i]).unwrap_or("0").trim_start_matches('0');
            if exp.len() > 10 || exp.parse::<u64>().is_ok_and(|e| e >= 1 << 31) {
                self.info.huge_exponent = true;
            }
        }
        let text = std::str::from_utf8(&b[start..self.i]).map_err(|e| e.to_string())?;
        if integer && text.parse::<i64>().is_err() && text.parse::<u64>().is_err() {
            self.info.big_int = true;
        }
        if text.parse::<f64>().map_or(true, |f| f.abs() >= 1.797_693_134_862_315e308) {
            self.info.float_overflow = true;
        }
        Ok(text.to_string())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), String> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("bad literal")
        }
    }

    fn key(&mut self) -> Result<String, String> {
        self.ws();
        if self.peek() != Some(b'"') {
            return self.err("expected a key");
        }
        let k = self.string()?;
        self.ws();
        if self.peek() != Some(b':') {
            return self.err("expected ':'");
        }
        self.i += 1;
        Ok(k)
    }

    fn run(&mut self) -> Result<J, String> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            // A value is expected here.
            self.ws();
            let mut v = match self.peek() {
                None => return self.err("expected a value"),
                Some(b'{') => {
                    self.i += 1;
                    self.info.depth = self.info.depth.max(stack.len() + 1);
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        J::Obj(Vec::new())
                    } else {
                        let k = self.key()?;
                        stack.push(Open::Obj(Vec::new(), k));
                        continue;
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    self.info.depth = self.info.depth.max(stack.len() + 1);
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        J::Arr(Vec::new())
                    } else {
                        stack.push(Open::Arr(Vec::new()));
                        continue;
                    }
                }
                Some(b'"') => J::Str(self.string()?),
                Some(b't') => {
                    self.literal(b"true")?;
                    J::Bool(true)
                }
                Some(b'f') => {
                    self.literal(b"false")?;
                    J::Bool(false)
                }
                Some(b'n') => {
                    self.literal(b"null")?;
                    J::Null
                }
                Some(b'-' | b'0'..=b'9') => J::Num(self.number()?),
                Some(_) => return self.err("unexpected byte"),
            };
            if !self.build {
                v = J::Null;
            }
            // Attach `v` to its container, closing containers as they end.
            loop {
                self.ws();
                match stack.last_mut() {
                    None => {
                        if self.i != self.b.len() {
                            return self.err("trailing bytes");
                        }
                        return Ok(v);
                    }
                    Some(Open::Arr(items)) => {
                        if self.build {
                            items.push(v);
                        }
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                break;
                            }
                            Some(b']') => {
                                self.i += 1;
                                let Some(Open::Arr(items)) = stack.pop() else { unreachable!() };
                                v = J::Arr(items);
                            }
                            _ => return self.err("expected ',' or ']'"),
                        }
                    }
                    Some(Open::Obj(members, key)) => {
                        let k = std::mem::take(key);
                        if self.build {
                            members.push((k, v));
                        }
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                *key = self.key()?;
                                break;
                            }
                            Some(b'}') => {
                                self.i += 1;
                                let Some(Open::Obj(members, _)) = stack.pop() else { unreachable!() };
                                let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
                                keys.sort_unstable();
                                if keys.windows(2).any(|w| w[0] == w[1]) {
                                    self.info.dup_keys = true;
                                }
                                v = J::Obj(members);
                            }
                            _ => return self.err("expected ',' or '}'"),
                        }
                    }
                }
                if !self.build {
                    v = J::Null;
                }
            }
        }
    }
}

/// Parses `bytes` by the RFC 8259 grammar (bytes outside strings must be the grammar's ASCII;
/// invalid UTF-8 inside strings is flagged in [`Info`], not refused). With `tree`, the value is
/// built when it nests at most [`TREE_DEPTH`] deep. Duplicate keys are only detected when the
/// tree is built.
pub fn parse(bytes: &[u8], tree: bool) -> Result<Parsed, String> {
    // Depth first (cheap, no tree), so that a deep document never builds a deep tree.
    let mut p = P { b: bytes, i: 0, info: Info::default(), build: false };
    p.run()?;
    let info = p.info;
    if !tree || info.depth > TREE_DEPTH {
        return Ok(Parsed { info, tree: None });
    }
    let mut p = P { b: bytes, i: 0, info: Info::default(), build: true };
    let v = p.run()?;
    Ok(Parsed { info: p.info, tree: Some(v) })
}

/// True when both numbers denote the same value: integers exactly, otherwise as the nearest
/// `f64` (Rust's parser is correctly rounded). `-0` equals `0`.
pub fn same_number(a: &str, b: &str) -> bool {
    let int = |s: &str| !s.contains(['.', 'e', 'E']);
    if int(a) && int(b) {
        if let (Ok(x), Ok(y)) = (a.parse::<i128>(), b.parse::<i128>()) {
            return x == y;
        }
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Like [`same_number`], but two non-integers (or integers beyond 64 bits) may differ by a few
/// units in the last place: serde_json without its `float_roundtrip` feature rounds some
/// decimal strings to a neighbouring `f64` (subnormals included).
pub fn close_number(a: &str, b: &str) -> bool {
    if same_number(a, b) {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() => {
            // One unit in the last place, which for subnormals is the smallest subnormal.
            let ulp = (f64::EPSILON * x.abs().max(y.abs())).max(f64::from_bits(1));
            (x - y).abs() <= 4.0 * ulp
        }
        _ => false,
    }
}

/// Semantic equality: numbers by value, object members in any order (compared after sorting by
/// key, so duplicate keys must come in the same relative order).
pub fn same(a: &J, b: &J) -> bool {
    same_with(a, b, same_number)
}

/// [`same`] with [`close_number`] for numbers.
pub fn close(a: &J, b: &J) -> bool {
    same_with(a, b, close_number)
}

fn same_with(a: &J, b: &J, num: fn(&str, &str) -> bool) -> bool {
    match (a, b) {
        (J::Num(x), J::Num(y)) => num(x, y),
        (J::Arr(x), J::Arr(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_with(p, q, num)),
        (J::Obj(x), J::Obj(y)) => {
            if x.len() != y.len() {
                return false;
            }
            let sorted = |m: &[(String, J)]| {
                let mut v: Vec<usize> = (0..m.len()).collect();
                v.sort_by(|&i, &j| m[i].0.cmp(&m[j].0));
                v
            };
            let (sx, sy) = (sorted(x), sorted(y));
            sx.iter().zip(&sy).all(|(&i, &j)| x[i].0 == y[j].0 && same_with(&x[i].1, &y[j].1, num))
        }
        _ => a == b,
    }
}

/// simd-json validates only the start of a scalar: it reads a number or literal and skips the
/// rest of the run up to the next whitespace or structural character (after a NUL byte, or after
/// a number of 19 or more digits). This returns the input with every scalar run cut back to its
/// longest valid prefix, when that changed anything.
pub fn cut_scalar_junk(input: &[u8]) -> Option<Vec<u8>> {
    let boundary = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' | b'[' | b']' | b'{' | b'}' | b'"');
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c == b'"' {
            let start = i;
            i += 1;
            while i < input.len() && input[i] != b'"' {
                i += if input[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(input.len());
            out.extend_from_slice(&input[start..i]);
            continue;
        }
        if boundary(c) {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        while i < input.len() && !boundary(input[i]) {
            // Outside strings too, simd-json's first stage treats a quote after an odd run of
            // backslashes as escaped, so `1\"` is one scalar run (but `1\}` ends at the brace).
            if input[i] == b'\\' {
                let from = i;
                while i < input.len() && input[i] == b'\\' {
                    i += 1;
                }
                if (i - from) % 2 == 1 && input.get(i) == Some(&b'"') {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        i = i.min(input.len());
        let run = &input[start..i];
        let keep = valid_scalar_prefix(run);
        if keep > 0 && keep < run.len() {
            changed = true;
            out.extend_from_slice(&run[..keep]);
        } else {
            out.extend_from_slice(run);
        }
    }
    changed.then_some(out)
}

/// Length of the longest prefix of `run` that is a JSON number or literal (0 if none).
fn valid_scalar_prefix(run: &[u8]) -> usize {
    for lit in [&b"true"[..], b"false", b"null"] {
        if run.starts_with(lit) {
            return lit.len();
        }
    }
    let mut p = P { b: run, i: 0, info: Info::default(), build: false };
    match run.first() {
        Some(b'-' | b'0'..=b'9') => p.number().map(|_| p.i).unwrap_or(0),
        _ => 0,
    }
}

impl J {
    /// The member `key` of an object (the first one when duplicated).
    pub fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Info {
        parse(s.as_bytes(), true).unwrap_or_else(|e| panic!("{s}: {e}")).info
    }

    #[test]
    fn grammar() {
        for s in ["1", "-0", "0.5e-3", "\"\"", "[]", "{}", " [1, {\"a\": [null, true, false]}] ", "\"\\u00e9\\/\""] {
            ok(s);
        }
        for s in
            ["", "01", "1.", ".5", "-", "[1,]", "{\"a\"}", "{\"a\":1,}", "\"\u{1}\"", "\"\\x\"", "[1", "1 2", "tru"]
        {
            assert!(parse(s.as_bytes(), true).is_err(), "{s}");
        }
        assert!(parse(b"\"\xff\"", true).unwrap().info.invalid_utf8);
        assert!(parse(b"[1]\xff", true).is_err());
    }

    #[test]
    fn flags_and_depth() {
        assert_eq!(ok("[[{\"a\":[]}]]").depth, 4);
        assert_eq!(ok("1").depth, 0);
        assert!(ok("\"\\ud800\"").lone_surrogate);
        assert!(ok("\"\\udc00\\ud800\"").lone_surrogate);
        assert!(!ok("\"\\ud83d\\ude00\"").lone_surrogate);
        assert!(ok("{\"a\":1,\"\\u0061\":2}").dup_keys);
        assert!(ok("18446744073709551616").big_int);
        assert!(!ok("18446744073709551615").big_int);
        assert!(ok("1e400").float_overflow);
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let p = parse(deep.as_bytes(), true).unwrap();
        assert_eq!(p.info.depth, 100_000);
        assert!(p.tree.is_none());
    }

    #[test]
    fn equality() {
        let a = parse(br#"{"a":1,"b":[1.0,"x"]}"#, true).unwrap().tree.unwrap();
        let b = parse(br#"{"b":[1e0,"x"],"a":1}"#, true).unwrap().tree.unwrap();
        assert!(same(&a, &b));
        assert!(same_number("-0", "0"));
        assert_eq!(cut_scalar_junk(b"[1\x002,true\x00x]").as_deref(), Some(&b"[1,true]"[..]));
        assert_eq!(cut_scalar_junk(b"[\"1\x002\",1]"), None);
        assert_eq!(
            cut_scalar_junk(b"{\"a\":1000000080908203125\\\"}").as_deref(),
            Some(&b"{\"a\":1000000080908203125}"[..])
        );
        assert_eq!(
            cut_scalar_junk(b"{\"a\":8446744073709551615\\}").as_deref(),
            Some(&b"{\"a\":8446744073709551615}"[..])
        );
        assert_eq!(
            cut_scalar_junk(b"{\"a\":1.2345678901234567890.}").as_deref(),
            Some(&b"{\"a\":1.2345678901234567890}"[..])
        );
        assert!(!same_number("1", "2"));
    }
}
