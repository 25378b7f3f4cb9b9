//! The seed corpus: `corpus/<target>/*` files, used as they are, except `*.gen` files, which
//! describe large inputs that are built at run time (a 1 MiB string, 400 000 brackets):
//!
//! ```text
//! # a comment
//! lit "JSON string literal"     the UTF-8 bytes of the decoded string
//! hex 53 47 31                  raw bytes
//! repeat 400000 "["             a literal, repeated
//! repeat-hex 3 ff               raw bytes, repeated
//! ```

use std::path::{Path, PathBuf};

use crate::rng::Rng;

pub struct Entry {
    pub name: String,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct Corpus {
    pub entries: Vec<Entry>,
    /// Indices of entries of at most 4 KiB (mutated far more often than the big ones).
    small: Vec<usize>,
}

fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    s.split_whitespace().map(|h| u8::from_str_radix(h, 16).map_err(|e| format!("bad hex {h:?}: {e}"))).collect()
}

/// Expands a `.gen` description.
pub fn expand(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (op, rest) = line.split_once(' ').ok_or_else(|| format!("line {}: no argument", n + 1))?;
        let lit = |s: &str| serde_json::from_str::<String>(s).map_err(|e| format!("line {}: {e}", n + 1));
        match op {
            "lit" => out.extend_from_slice(lit(rest)?.as_bytes()),
            "hex" => out.extend(hex_bytes(rest)?),
            "repeat" | "repeat-hex" => {
                let (count, what) = rest.split_once(' ').ok_or_else(|| format!("line {}: repeat N X", n + 1))?;
                let count: usize = count.parse().map_err(|e| format!("line {}: {e}", n + 1))?;
                let unit = if op == "repeat" { lit(what)?.into_bytes() } else { hex_bytes(what)? };
                for _ in 0..count {
                    out.extend_from_slice(&unit);
                }
            }
            other => return Err(format!("line {}: unknown op {other:?}", n + 1)),
        }
    }
    Ok(out)
}

/// Reads one corpus or regression file (expanding `.gen`).
pub fn read_input(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gen") {
        let text = String::from_utf8(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        expand(&text).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        Ok(bytes)
    }
}

/// The files of a directory, sorted by name (missing directory: none).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

impl Corpus {
    pub fn load(dir: &Path) -> Result<Corpus, String> {
        let mut c = Corpus::default();
        for path in files(dir) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') || name.ends_with(".md") {
                continue;
            }
            c.push(name, read_input(&path)?);
        }
        Ok(c)
    }

    pub fn push(&mut self, name: String, data: Vec<u8>) {
        if data.len() <= 4096 {
            self.small.push(self.entries.len());
        }
        self.entries.push(Entry { name, data });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An entry to mutate: a small one 99 % of the time.
    pub fn pick_small(&self, rng: &mut Rng) -> Option<&[u8]> {
        if self.entries.is_empty() {
            return None;
        }
        let i = if !self.small.is_empty() && !rng.chance(1, 100) {
            rng.one(&self.small)
        } else {
            rng.below(self.entries.len())
        };
        Some(&self.entries[i].data)
    }
}
