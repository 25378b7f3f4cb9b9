//! Runs one target: the corpus once, then generated inputs until the time (or execution) budget
//! is spent, each in `catch_unwind`, on a thread with a 2 MiB stack like tokio's workers.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::corpus::Corpus;
use crate::rng::{fnv1a, Rng};

/// Stack of the thread a target runs on: tokio's default worker stack.
pub const STACK: usize = 2 << 20;

/// One decoder under test.
pub trait Target {
    fn name(&self) -> &'static str;
    /// A new input: structured generation or a mutation of a corpus entry.
    fn generate(&mut self, rng: &mut Rng, corpus: &Corpus) -> Vec<u8>;
    /// Runs the decoder on `input` and checks its invariants; `Err` is a finding, formatted
    /// `"what went wrong | details"` (the part before ` | ` identifies the finding).
    fn execute(&mut self, input: &[u8]) -> Result<(), String>;
}

/// A bug that is known, reported and not fixed yet: findings that match are listed, not failed.
pub struct KnownBug {
    pub target: &'static str,
    /// A substring of the finding's message.
    pub needle: &'static str,
    pub what: &'static str,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub target: &'static str,
    pub message: String,
    pub input: Vec<u8>,
    pub saved: Option<PathBuf>,
    /// Set when the finding matches a [`KnownBug`].
    pub known: Option<&'static str>,
}

impl Finding {
    /// What identifies the finding: the panic location or the violated invariant.
    pub fn key(&self) -> String {
        key_of(&self.message)
    }
}

fn key_of(message: &str) -> String {
    let first = message.split(" | ").next().unwrap_or(message);
    first.lines().next().unwrap_or(first).chars().take(200).collect()
}

#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub seed: u64,
    pub corpus_execs: u64,
    /// Generated inputs executed (corpus excluded).
    pub execs: u64,
    pub elapsed: Duration,
    /// New findings (not known bugs), one per key, inputs shrunk.
    pub findings: Vec<Finding>,
    /// Findings that match a known bug, one per key.
    pub known: Vec<Finding>,
    /// How many executions hit a known bug.
    pub known_hits: u64,
    pub slowest: Duration,
    pub slowest_len: usize,
    /// Where the slowest input was written (with a findings directory).
    pub slowest_saved: Option<PathBuf>,
}

impl Report {
    pub fn total_execs(&self) -> u64 {
        self.execs + self.corpus_execs
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub duration: Duration,
    pub max_execs: Option<u64>,
    /// Where findings are written (`None`: not written).
    pub findings_dir: Option<PathBuf>,
    pub corpus_dir: PathBuf,
    /// Print findings as they happen.
    pub verbose: bool,
    /// Time spent shrinking each new finding.
    pub shrink_for: Duration,
    /// Print a progress line this often.
    pub progress: Option<Duration>,
}

thread_local! {
    static IN_EXEC: Cell<bool> = const { Cell::new(false) };
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Routes panics raised while executing an input into the finding (quietly); any other panic
/// goes to the previous hook.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_EXEC.with(Cell::get) {
                let text = format!("panic: {info}");
                PANIC.with(|p| *p.borrow_mut() = Some(text));
            } else {
                prev(info);
            }
        }));
    });
}

/// Executes one input: `Err` for a panic or a violated invariant.
pub fn execute(target: &mut dyn Target, input: &[u8]) -> Result<(), String> {
    install_panic_hook();
    let _current = crate::crash::executing(input);
    IN_EXEC.with(|f| f.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(|| target.execute(input)));
    IN_EXEC.with(|f| f.set(false));
    match r {
        Ok(r) => r,
        Err(_) => Err(PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panic: (no message)".into())),
    }
}

/// Deletes chunks of a failing input while it still fails the same way.
fn shrink(target: &mut dyn Target, input: &[u8], key: &str, budget: Duration) -> (Vec<u8>, String) {
    let deadline = Instant::now() + budget;
    let mut best = input.to_vec();
    let mut message = String::new();
    let mut chunk = best.len().next_power_of_two() / 2;
    while chunk >= 1 && Instant::now() < deadline {
        let mut i = 0;
        while i < best.len() && Instant::now() < deadline {
            let end = (i + chunk).min(best.len());
            let mut candidate = best[..i].to_vec();
            candidate.extend_from_slice(&best[end..]);
            match execute(target, &candidate) {
                Err(m) if key_of(&m) == key => {
                    best = candidate;
                    message = m;
                }
                _ => i += chunk,
            }
        }
        chunk /= 2;
    }
    (best, message)
}

/// A printable preview of an input.
pub fn preview(input: &[u8], max: usize) -> String {
    let shown: String = input[..input.len().min(max)].escape_ascii().to_string();
    if input.len() > max {
        format!("{shown}… ({} bytes)", input.len())
    } else {
        shown
    }
}

fn save(dir: &Path, target: &str, input: &[u8], message: &str, seed: u64) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("{target}-{:016x}", fnv1a(input)));
    std::fs::write(&path, input).ok()?;
    let note = format!("target: {target}\nseed: {seed}\n{message}\n");
    std::fs::write(path.with_extension("txt"), note).ok()?;
    Some(path)
}

fn known_bug(target: &str, message: &str, known: &[KnownBug]) -> Option<&'static str> {
    known.iter().find(|k| k.target == target && message.contains(k.needle)).map(|k| k.what)
}

/// Runs `target` under `opts` on the current thread.
pub fn run_here(target: &mut dyn Target, opts: &Options, known: &[KnownBug]) -> Result<Report, String> {
    crate::crash::install();
    let name = target.name();
    if let Some(dir) = &opts.findings_dir {
        let _ = std::fs::create_dir_all(dir);
        crate::crash::set_dump_path(&dir.join(format!("{name}-crash")));
    }
    let corpus = Corpus::load(&opts.corpus_dir.join(name))?;
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut report = Report {
        target: name,
        seed: opts.seed,
        corpus_execs: 0,
        execs: 0,
        elapsed: Duration::ZERO,
        findings: Vec::new(),
        known: Vec::new(),
        known_hits: 0,
        slowest: Duration::ZERO,
        slowest_len: 0,
        slowest_saved: None,
    };
    let mut slowest_input: Vec<u8> = Vec::new();
    let mut rng = Rng::new(opts.seed ^ fnv1a(name.as_bytes()));
    let mut i = 0usize;
    let mut next_progress = opts.progress.map(|p| start + p);
    loop {
        if let Some(at) = next_progress {
            if Instant::now() >= at {
                eprintln!(
                    "[{name}] {} execs in {:.0} s, {} findings, {} known-bug hits",
                    report.execs + report.corpus_execs,
                    start.elapsed().as_secs_f64(),
                    report.findings.len(),
                    report.known_hits
                );
                next_progress = opts.progress.map(|p| at + p);
            }
        }
        let from_corpus = i < corpus.entries.len();
        if !from_corpus
            && (Instant::now() >= deadline
                || opts.max_execs.is_some_and(|m| report.execs >= m)
                || report.findings.len() >= 20)
        {
            break;
        }
        let generated;
        let input: &[u8] = if from_corpus {
            &corpus.entries[i].data
        } else {
            let t = Instant::now();
            generated = target.generate(&mut rng, &corpus);
            if opts.verbose && t.elapsed() > Duration::from_secs(1) {
                eprintln!("[{name}] (harness) generating one input took {:.1} s", t.elapsed().as_secs_f64());
            }
            &generated
        };
        i += 1;
        let t = Instant::now();
        let r = execute(target, input);
        let took = t.elapsed();
        if took > report.slowest {
            report.slowest = took;
            report.slowest_len = input.len();
            slowest_input.clear();
            slowest_input.extend_from_slice(input);
        }
        if from_corpus {
            report.corpus_execs += 1;
        } else {
            report.execs += 1;
        }
        let Err(message) = r else { continue };
        if let Some(what) = known_bug(name, &message, known) {
            report.known_hits += 1;
            let key = key_of(&message);
            if !report.known.iter().any(|f| f.key() == key) {
                report.known.push(Finding {
                    target: name,
                    message,
                    input: input.to_vec(),
                    saved: None,
                    known: Some(what),
                });
            }
            continue;
        }
        let key = key_of(&message);
        if report.findings.iter().any(|f| f.key() == key) {
            continue;
        }
        let origin =
            if from_corpus { format!("corpus file {}", corpus.entries[i - 1].name) } else { "generated".into() };
        let (input, message) = match shrink(target, input, &key, opts.shrink_for) {
            (small, m) if !m.is_empty() => (small, m),
            _ => (input.to_vec(), message),
        };
        let saved = opts.findings_dir.as_deref().and_then(|d| save(d, name, &input, &message, opts.seed));
        if opts.verbose {
            eprintln!(
                "FINDING [{name}] ({origin}, seed {}): {message}\n  input: {}\n  saved: {}",
                opts.seed,
                preview(&input, 400),
                saved.as_ref().map_or("(not written)".into(), |p| p.display().to_string())
            );
        }
        report.findings.push(Finding { target: name, message, input, saved, known: None });
    }
    report.elapsed = start.elapsed();
    if let Some(dir) = &opts.findings_dir {
        let path = dir.join(format!("{name}-slowest"));
        if std::fs::write(&path, &slowest_input).is_ok() {
            report.slowest_saved = Some(path);
        }
    }
    Ok(report)
}

/// Runs the named target on a fresh thread with a [`STACK`]-byte stack.
pub fn run(name: &str, opts: &Options, known: &'static [KnownBug]) -> Result<Report, String> {
    let name = name.to_string();
    let opts = opts.clone();
    std::thread::Builder::new()
        .name(format!("fuzz-{name}"))
        .stack_size(STACK)
        .spawn(move || {
            let mut target = crate::targets::make(&name).ok_or_else(|| format!("unknown target {name:?}"))?;
            run_here(target.as_mut(), &opts, known)
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the fuzz thread panicked outside an execution".to_string())?
}

/// Runs the given inputs once each (regressions, replays) on a [`STACK`]-byte thread; returns
/// the failures as (index, message).
pub fn replay(name: &str, inputs: Vec<Vec<u8>>) -> Result<Vec<(usize, String)>, String> {
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("replay-{name}"))
        .stack_size(STACK)
        .spawn(move || {
            crate::crash::install();
            let mut target = crate::targets::make(&name).ok_or_else(|| format!("unknown target {name:?}"))?;
            let mut failures = Vec::new();
            for (i, input) in inputs.iter().enumerate() {
                if let Err(m) = execute(target.as_mut(), input) {
                    failures.push((i, m));
                }
            }
            Ok(failures)
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the replay thread panicked outside an execution".to_string())?
}
