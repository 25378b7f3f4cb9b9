//! `syncgate-fuzz`: runs the fuzz targets for as long as asked. See `fuzz/README.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use syncgate_fuzz::corpus::read_input;
use syncgate_fuzz::rng::fnv1a;
use syncgate_fuzz::runner::{self, preview, Options};
use syncgate_fuzz::targets::{sign_token, NAMES};
use syncgate_fuzz::{root, KNOWN_BUGS};

const USAGE: &str = "\
usage:
  syncgate-fuzz <target|all|t1,t2,..> [--secs N] [--seed S] [--jobs J] [--max-execs N] [--slow-ms M]
      runs each target for N seconds (default 60) after replaying its corpus; `all` runs every
      target, J at a time (default 1), each in its own process; a decoder call slower than M ms
      (default 500, 0 = no limit) is a finding
  syncgate-fuzz list
  syncgate-fuzz replay <target> <file>...      runs saved inputs once
  syncgate-fuzz sign <header-json> <payload-json>
      prints an HS256 token signed with the harness secret (for the jwt corpus)";

struct Args {
    targets: Vec<String>,
    secs: f64,
    seed: Option<u64>,
    jobs: usize,
    max_execs: Option<u64>,
    slow_ms: u64,
    child_summary: Option<PathBuf>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let first = args.next().ok_or("no target")?;
    let targets: Vec<String> = if first == "all" {
        NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        first.split(',').map(str::to_string).collect()
    };
    for t in &targets {
        if !NAMES.contains(&t.as_str()) {
            return Err(format!("unknown target {t:?} (try `list`)"));
        }
    }
    let mut a = Args { targets, secs: 60.0, seed: None, jobs: 1, max_execs: None, slow_ms: 500, child_summary: None };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--secs" => a.secs = value()?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--seed" => a.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--jobs" => a.jobs = value()?.parse::<usize>().map_err(|e| format!("--jobs: {e}"))?.max(1),
            "--max-execs" => a.max_execs = Some(value()?.parse().map_err(|e| format!("--max-execs: {e}"))?),
            "--slow-ms" => a.slow_ms = value()?.parse().map_err(|e| format!("--slow-ms: {e}"))?,
            "--child-summary" => a.child_summary = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(a)
}

fn options(a: &Args, seed: u64) -> Options {
    Options {
        seed,
        duration: Duration::from_secs_f64(a.secs),
        max_execs: a.max_execs,
        findings_dir: Some(root().join("findings")),
        corpus_dir: root().join("corpus"),
        verbose: true,
        shrink_for: Duration::from_secs(10),
        progress: Some(Duration::from_secs(30)),
    }
}

/// Child mode: one target in this process; the summary goes to a file for the parent.
fn child(a: &Args, seed: u64, summary: &Path) -> ExitCode {
    let name = &a.targets[0];
    syncgate_fuzz::targets::SLOW_MS.store(a.slow_ms, std::sync::atomic::Ordering::Relaxed);
    let report = match runner::run(name, &options(a, seed), KNOWN_BUGS) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("[{name}] {e}");
            return ExitCode::from(2);
        }
    };
    for k in &report.known {
        eprintln!("[{name}] known bug hit: {} | input: {}", k.known.unwrap_or(""), preview(&k.input, 200));
    }
    let line = format!(
        "{} {} {} {} {} {} {}\n",
        report.execs,
        report.corpus_execs,
        report.findings.len(),
        report.known_hits,
        report.elapsed.as_secs_f64(),
        report.slowest.as_secs_f64(),
        report.slowest_len
    );
    let _ = std::fs::write(summary, line);
    if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What a child reports back (its findings themselves it printed and saved).
struct Summary {
    execs: u64,
    corpus_execs: u64,
    findings: u64,
    known_hits: u64,
    elapsed: f64,
    slowest: f64,
    slowest_len: usize,
}

struct Outcome {
    target: String,
    summary: Option<Summary>,
    crashed: Option<String>,
}

fn read_summary(path: &Path) -> Option<Summary> {
    let text = std::fs::read_to_string(path).ok()?;
    let f: Vec<&str> = text.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok());
    Some(Summary {
        execs: n(0)? as u64,
        corpus_execs: n(1)? as u64,
        findings: n(2)? as u64,
        known_hits: n(3)? as u64,
        elapsed: n(4)?,
        slowest: n(5)?,
        slowest_len: n(6)? as usize,
    })
}

/// A child that died: its dump file gets a content-addressed name.
fn collect_crash(target: &str) -> String {
    let dir = root().join("findings");
    let dump = dir.join(format!("{target}-crash"));
    match std::fs::read(&dump) {
        Ok(input) => {
            let named = dir.join(format!("{target}-{:016x}", fnv1a(&input)));
            let _ = std::fs::rename(&dump, &named);
            format!(
                "crashed on an input ({} bytes), saved to {}: {}",
                input.len(),
                named.display(),
                preview(&input, 300)
            )
        }
        Err(_) => "crashed outside an execution (no input dump)".into(),
    }
}

fn supervise(a: &Args, seed: u64) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "seed {seed} (reproduce with --seed {seed}); {} target(s), {} s each, {} at a time",
        a.targets.len(),
        a.secs,
        a.jobs
    );
    let tmp = std::env::temp_dir().join(format!("syncgate-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&tmp);
    let started = Instant::now();
    let mut queue: Vec<&String> = a.targets.iter().rev().collect();
    let mut running: Vec<(String, std::process::Child, PathBuf)> = Vec::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < a.jobs {
            let Some(t) = queue.pop() else { break };
            let summary = tmp.join(format!("{t}.summary"));
            let mut cmd = Command::new(&exe);
            cmd.arg(t).arg("--secs").arg(a.secs.to_string()).arg("--seed").arg(seed.to_string());
            cmd.arg("--child-summary").arg(&summary).arg("--slow-ms").arg(a.slow_ms.to_string());
            if let Some(m) = a.max_execs {
                cmd.arg("--max-execs").arg(m.to_string());
            }
            match cmd.spawn() {
                Ok(c) => running.push((t.clone(), c, summary)),
                Err(e) => {
                    eprintln!("cannot start {t}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut i = 0;
        while i < running.len() {
            match running[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (t, _, summary) = running.remove(i);
                    let report = read_summary(&summary);
                    let crashed = (report.is_none() || status.code().is_none()).then(|| {
                        let what = collect_crash(&t);
                        eprintln!("FINDING [{t}] {status}: {what}");
                        what
                    });
                    outcomes.push(Outcome { target: t, summary: report, crashed });
                }
                Ok(None) => i += 1,
                Err(e) => {
                    eprintln!("{e}");
                    i += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    outcomes.sort_by_key(|o| NAMES.iter().position(|n| *n == o.target));
    println!(
        "\n{:<12} {:>12} {:>7} {:>10} {:>9} {:>6} {:>16}",
        "target", "execs", "corpus", "execs/s", "findings", "known", "slowest"
    );
    let (mut total, mut bad) = (0u64, 0u64);
    for o in &outcomes {
        match (&o.summary, &o.crashed) {
            (Some(r), None) => {
                total += r.execs + r.corpus_execs;
                bad += r.findings;
                println!(
                    "{:<12} {:>12} {:>7} {:>10.0} {:>9} {:>6} {:>9.1} ms {:>5}",
                    o.target,
                    r.execs,
                    r.corpus_execs,
                    r.execs as f64 / r.elapsed.max(1e-9),
                    r.findings,
                    r.known_hits,
                    r.slowest * 1e3,
                    human(r.slowest_len)
                );
            }
            (_, crashed) => {
                bad += 1;
                println!("{:<12} CRASHED: {}", o.target, crashed.as_deref().unwrap_or("no summary"));
            }
        }
    }
    println!("total: {total} executions in {:.0} s, {bad} finding(s), seed {seed}", started.elapsed().as_secs_f64());
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn human(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1}M", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{}K", n >> 10)
    } else {
        format!("{n}B")
    }
}

fn replay(target: &str, files: &[String]) -> ExitCode {
    let mut inputs = Vec::new();
    for f in files {
        match read_input(Path::new(f)) {
            Ok(i) => inputs.push(i),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    match runner::replay(target, inputs) {
        Ok(failures) if failures.is_empty() => {
            println!("{} input(s): no finding", files.len());
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            for (i, m) in failures {
                println!("{}: {m}", files[i]);
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("list") => {
            for n in NAMES {
                println!("{n}");
            }
            return ExitCode::SUCCESS;
        }
        Some("replay") => {
            let rest: Vec<String> = args.skip(1).collect();
            if rest.len() < 2 {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
            return replay(&rest[0], &rest[1..]);
        }
        Some("sign") => {
            let rest: Vec<String> = args.skip(1).collect();
            if rest.len() != 2 {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
            println!("{}", sign_token(rest[0].as_bytes(), rest[1].as_bytes()));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let seed = a.seed.unwrap_or_else(|| {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        fnv1a(&t.as_nanos().to_le_bytes()) >> 1
    });
    match &a.child_summary {
        Some(path) => child(&a, seed, path),
        None => supervise(&a, seed),
    }
}
