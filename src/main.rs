//! `syncgate` binary: `syncgate` serves; `syncgate token --user U …` mints a development token.

use std::process::ExitCode;

use mimalloc::MiMalloc;
use syncgate::config::{Config, LogFormat};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

extern "C" {
    /// mimalloc's: gives the calling thread's free pages back to the OS (linked with `mimalloc`).
    fn mi_collect(force: bool);
}

/// Runs on a tokio worker about to park (go idle): at most once per `every` per thread, its free
/// allocator pages go back to the OS. mimalloc purges a thread's freed pages only when that
/// thread allocates or frees again, so without this an idle gateway keeps the peak of the last
/// burst (handshake buffers of a connect storm) resident.
fn collect_on_park(every: std::time::Duration) -> impl Fn() + Send + Sync + 'static {
    move || {
        thread_local! {
            static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
        }
        let now = std::time::Instant::now();
        if LAST.get().is_none_or(|t| now.duration_since(t) >= every) {
            LAST.set(Some(now));
            // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
            unsafe { mi_collect(false) };
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (validated with the configuration; `info` when unset).
/// Text is coloured only on a terminal, never in a file or a pipe; JSON never.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = std::env::var(syncgate::config::RUST_LOG)
        .ok()
        .filter(|f| !f.trim().is_empty())
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.with_ansi(false).json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("syncgate: {e}");
            for line in &e.0 {
                eprintln!("  error: {line}");
            }
            return ExitCode::from(1);
        }
    };
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(config),
        Some("token") => match syncgate::cli::token(&config, &args[1..]) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("syncgate token: {e}\n{}", syncgate::cli::TOKEN_USAGE);
                ExitCode::from(2)
            }
        },
        Some("check-config") => syncgate::cli::check_config(&config),
        Some("migrate") => migrate(&config),
        Some("-h" | "--help" | "help") => {
            println!(
                "usage: syncgate [serve]\n       syncgate check-config\n       syncgate migrate\n       {}",
                syncgate::cli::TOKEN_USAGE
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("syncgate: unknown command {other:?} (try --help)");
            ExitCode::from(2)
        }
    }
}

/// `syncgate migrate`: applies pending migrations to the configured database and exits.
fn migrate(config: &Config) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return ExitCode::from(1);
    };
    rt.block_on(async {
        let store = match syncgate::store::Store::connect(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("syncgate migrate: {e}");
                return ExitCode::from(1);
            }
        };
        match store.migrate().await {
            Ok(n) => {
                println!("{n} migration(s) applied ({:?})", store.backend);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("syncgate migrate: {e}");
                ExitCode::from(1)
            }
        }
    })
}

fn serve(config: Config) -> ExitCode {
    init_tracing(config.listener.log_format);
    match syncgate::oslimits::raise_nofile() {
        Some((before, after, hard)) => {
            tracing::info!(soft_before = before, soft = after, hard, "open files limit")
        }
        None => tracing::warn!("cannot read the open files limit"),
    }
    for w in syncgate::oslimits::warnings(&config) {
        tracing::warn!("{w}");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(every) = config.listener.alloc_collect {
        builder.on_thread_park(collect_on_park(every));
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("syncgate: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let listener = match syncgate::server::bind(&config) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("syncgate: cannot listen on {} ({}): {e}", config.listener.listen, syncgate::config::LISTEN);
                return ExitCode::from(1);
            }
        };
        let shutdown = async {
            syncgate::shutdown::signal().await;
            // A second signal exits at once.
            tokio::spawn(async {
                syncgate::shutdown::signal().await;
                eprintln!("syncgate: second signal, exiting now");
                std::process::exit(130);
            });
        };
        match syncgate::server::run(listener, config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("syncgate: {e}");
                ExitCode::from(1)
            }
        }
    })
}
