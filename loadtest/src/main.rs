//! `loadtest <scenario> …` (see `--help`); `loadtest __worker I K` is a worker process.

use std::process::ExitCode;

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    if argv.first().map(String::as_str) == Some("__worker") {
        return worker(&runtime, &argv);
    }
    if matches!(argv.first().map(String::as_str), Some("accounts" | "auth" | "login")) {
        return accounts(&runtime, &argv[1..]);
    }
    if argv.first().map(String::as_str) == Some("failover") {
        return failover(&runtime, &argv[1..]);
    }
    if argv.is_empty() || argv.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", loadtest::args::USAGE);
        return ExitCode::SUCCESS;
    }
    let args = match loadtest::args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadtest: {e}\n\n{}", loadtest::args::USAGE);
            return ExitCode::from(2);
        }
    };
    if args.scenario == loadtest::args::Scenario::Churn {
        return churn(&runtime, args);
    }
    scenario(&runtime, args)
}

/// `loadtest __worker I K`: worker `I` of `K`, its `Args` in `LOADTEST_ARGS` (JSON).
fn worker(runtime: &tokio::runtime::Runtime, argv: &[String]) -> ExitCode {
    let parsed = (|| {
        let i: usize = argv.get(1)?.parse().ok()?;
        let k: usize = argv.get(2)?.parse().ok()?;
        let args: loadtest::args::Args = serde_json::from_str(&std::env::var("LOADTEST_ARGS").ok()?).ok()?;
        Some((args, i, k))
    })();
    let Some((args, i, k)) = parsed else {
        eprintln!("loadtest: bad worker invocation");
        return ExitCode::from(2);
    };
    match runtime.block_on(loadtest::worker::run(args, i, k)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest worker: {e}");
            ExitCode::from(2)
        }
    }
}

/// `loadtest failover …`: its own flags, driver and report; exit 1 when an event was lost or
/// duplicated or a client did not come back.
fn failover(runtime: &tokio::runtime::Runtime, argv: &[String]) -> ExitCode {
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", loadtest::failover::USAGE);
        return ExitCode::SUCCESS;
    }
    let opts = match loadtest::failover::parse(argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadtest: {e}\n\n{}", loadtest::failover::USAGE);
            return ExitCode::from(2);
        }
    };
    let json = opts.json.clone();
    match runtime.block_on(loadtest::failover::run(opts)) {
        Ok(report) => {
            loadtest::failover::print_summary(&report);
            if let Some(path) = json {
                if let Err(e) = write_json(std::path::Path::new(&path), &report) {
                    eprintln!("loadtest: {e}");
                    return ExitCode::from(2);
                }
            }
            slo_exit(report.ok)
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// `loadtest churn …`: its own driver and report.
fn churn(runtime: &tokio::runtime::Runtime, args: loadtest::args::Args) -> ExitCode {
    let json = args.json.clone();
    match runtime.block_on(loadtest::churn::run(args)) {
        Ok(report) => {
            loadtest::churn::print_summary(&report);
            if let Some(path) = json {
                if let Err(e) = write_json(&path, &report) {
                    eprintln!("loadtest: {e}");
                    return ExitCode::from(2);
                }
            }
            slo_exit(report.slo_ok)
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// The other scenarios (connect, idle, fanout, broadcast, cluster). A report that cannot be
/// serialised is reported and does not change the exit code; one that cannot be written does.
fn scenario(runtime: &tokio::runtime::Runtime, args: loadtest::args::Args) -> ExitCode {
    let json = args.json.clone();
    match runtime.block_on(loadtest::run::run(args)) {
        Ok(report) => {
            loadtest::run::print_summary(&report);
            if let Some(path) = json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => {
                        if let Err(e) = std::fs::write(&path, text) {
                            eprintln!("loadtest: cannot write {}: {e}", path.display());
                            return ExitCode::from(2);
                        }
                    }
                    Err(e) => eprintln!("loadtest: {e}"),
                }
            }
            slo_exit(report.slo_ok)
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

fn write_json(path: &std::path::Path, report: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `loadtest accounts …`: the goose storm; goose prints its own report, then the summary.
fn accounts(runtime: &tokio::runtime::Runtime, argv: &[String]) -> ExitCode {
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", loadtest::accounts::USAGE);
        return ExitCode::SUCCESS;
    }
    let max = match loadtest::accounts::split_args(argv) {
        Ok((opts, _)) => opts.max_p99_ms,
        Err(e) => {
            eprintln!("loadtest: {e}\n\n{}", loadtest::accounts::USAGE);
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(loadtest::accounts::run(argv)) {
        Ok(report) => {
            loadtest::accounts::print_summary(&report, max);
            slo_exit(report.slo_ok)
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// 0 when every SLO held, 1 when one broke (2 is for errors).
fn slo_exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
