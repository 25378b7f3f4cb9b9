//! The parent process: optionally spawns the gateway, starts K worker processes, drives the
//! traffic steps, samples server memory/CPU, merges histograms, checks the SLO and reports.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::args::{Args, Scenario};
use crate::hist::{new_hist, summarize, Summary};
use crate::plan;
use crate::sampler::{self, Sample};
use crate::slo::{self, Check, Measured, SloFile, Thresholds};
use crate::worker::{OpenReport, Progress, StepReport};

#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerReport {
    pub pid: u32,
    pub rss_before_kib: u64,
    pub rss_after_open_kib: u64,
    pub memory_per_conn_bytes: Option<f64>,
    /// idle checkpoint (`--checkpoint`): connections open and server RSS at the mid-way sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_at_checkpoint_kib: Option<u64>,
    /// What each further connection costs: the RSS growth between the checkpoint and the end
    /// over the connections opened in between.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marginal_bytes_per_conn: Option<f64>,
    /// What does not grow with the count: the growth over the run minus the marginal cost of
    /// every connection (allocator retention, per-thread caches, buffers kept after the burst).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_kib: Option<f64>,
    pub cpu_seconds: f64,
    pub cpu_percent_of_one_core: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct StepResult {
    pub rate: f64,
    pub duration_s: f64,
    pub messages_sent: u64,
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    pub duplicates: u64,
    pub lost: u64,
    pub loss_rate: f64,
    pub errors: u64,
    pub deliveries_per_s: f64,
    pub latency: Summary,
    /// `--durable`: acks received and publish → ack (commit) latency.
    pub acks: u64,
    pub ack_latency: Option<Summary>,
    pub disconnects: BTreeMap<String, u64>,
    pub server: Option<ServerReport>,
    /// Redis bus: PUBLISH commands per message over all instances (from their `/metrics`).
    pub bus_commands_per_message: Option<f64>,
    pub slo: Vec<Check>,
    pub slo_ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub args: Args,
    pub procs: usize,
    pub note: &'static str,
    pub connections_attempted: u64,
    pub connections_opened: u64,
    pub connect_failures: BTreeMap<String, u64>,
    pub connect_latency: Summary,
    pub connects_per_s: f64,
    pub steps: Vec<StepResult>,
    /// Highest step rate that met the SLO (sweeps).
    pub capacity_rate: Option<f64>,
    pub slo_ok: bool,
}

pub(crate) enum Line {
    Ready(OpenReport),
    /// Idle memory checkpoint reached; the worker's open connections.
    Half(u64),
    Progress(Progress),
    Step(StepReport),
    /// churn: one round as one worker saw it.
    Round(Box<crate::churn::RoundReport>),
    Done,
}

pub(crate) struct Worker {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
}

fn parse_line(line: &str) -> Option<Line> {
    let (tag, body) = line.split_once(' ').unwrap_or((line, ""));
    match tag {
        "READY" => serde_json::from_str(body).ok().map(Line::Ready),
        "HALF" => body.trim().parse().ok().map(Line::Half),
        "P" => serde_json::from_str(body).ok().map(Line::Progress),
        "S" => serde_json::from_str(body).ok().map(Line::Step),
        "C" => serde_json::from_str(body).ok().map(|r| Line::Round(Box::new(r))),
        "R" => Some(Line::Done),
        _ => None,
    }
}

pub(crate) async fn spawn_workers(
    args: &Args,
    tx: mpsc::UnboundedSender<(usize, Line)>,
) -> Result<Vec<Worker>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let json = serde_json::to_string(args).map_err(|e| e.to_string())?;
    let mut workers = Vec::new();
    for i in 0..args.procs {
        let mut child = Command::new(&exe)
            .args(["__worker", &i.to_string(), &args.procs.to_string()])
            .env("LOADTEST_ARGS", &json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("no worker stdout")?;
        let stdin = child.stdin.take().ok_or("no worker stdin")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(parsed) = parse_line(&l) {
                    if tx.send((i, parsed)).is_err() {
                        break;
                    }
                }
            }
        });
        workers.push(Worker { child, stdin });
    }
    Ok(workers)
}

/// Prints the live progress line.
struct ProgressLine {
    quiet: bool,
    tty: bool,
    started: Instant,
    last_print: Instant,
    latest: Vec<Progress>,
    prev: (u64, u64, Instant),
    interval: hdrhistogram::Histogram<u64>,
    target_conns: u64,
}

impl ProgressLine {
    fn new(args: &Args, target_conns: u64) -> Self {
        ProgressLine {
            quiet: args.quiet,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_print: Instant::now(),
            latest: vec![Progress::default(); args.procs],
            prev: (0, 0, Instant::now()),
            interval: new_hist(),
            target_conns,
        }
    }

    fn update(&mut self, worker: usize, p: Progress) {
        p.interval.merge_into(&mut self.interval);
        self.latest[worker] = p;
        if self.quiet || self.last_print.elapsed() < Duration::from_millis(if self.tty { 900 } else { 4900 }) {
            return;
        }
        let open: u64 = self.latest.iter().map(|p| p.open).sum();
        let sent: u64 = self.latest.iter().map(|p| p.sent).sum();
        let recv: u64 = self.latest.iter().map(|p| p.received).sum();
        let dt = self.prev.2.elapsed().as_secs_f64().max(0.001);
        let (sr, rr) = ((sent - self.prev.0.min(sent)) as f64 / dt, (recv - self.prev.1.min(recv)) as f64 / dt);
        self.prev = (sent, recv, Instant::now());
        let p99 = if self.interval.is_empty() { 0.0 } else { self.interval.value_at_quantile(0.99) as f64 / 1000.0 };
        self.interval.reset();
        let bar_w = 20usize;
        let filled = ((open as f64 / self.target_conns.max(1) as f64) * bar_w as f64).round() as usize;
        let bar: String = "#".repeat(filled.min(bar_w)) + &"-".repeat(bar_w - filled.min(bar_w));
        let line = format!(
            "[{:>5.0}s] [{bar}] conns {open}/{} | sent {sr:.0}/s | delivered {rr:.0}/s | p99 {p99:.1} ms",
            self.started.elapsed().as_secs_f64(),
            self.target_conns
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line:<110}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.last_print = Instant::now();
    }

    fn end_line(&self) {
        if self.tty && !self.quiet {
            eprintln!();
        }
    }
}

async fn free_port() -> Result<u16, String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// `--spawn`: starts the gateway with the given env on a free loopback port.
pub(crate) async fn spawn_gateway(args: &mut Args) -> Result<Child, String> {
    let port = free_port().await?;
    let dir = std::env::temp_dir().join(format!("loadtest-gw-{}-{port}", std::process::id()));
    let mut cmd = Command::new(&args.gateway_bin);
    cmd.env("SYNCGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("SYNCGATE_JWT_SECRET", &args.jwt_secret)
        .env("SYNCGATE_DATA_DIR", &dir)
        // Load generators publish far above an end user's allowance.
        .env("SYNCGATE_MESSAGES_PER_MIN", "10000000")
        .env("SYNCGATE_DURABLE_EVENTS_PER_MIN", "1000000000")
        .env("SYNCGATE_DURABLE_BYTES_PER_MIN", "1000000000000")
        // `--durable`: the user channels the scenarios publish to become durable streams.
        .env("SYNCGATE_DURABLE_NAMESPACES", if args.durable { "dm,user" } else { "dm" })
        .env("RUST_LOG", "warn")
        // `--auth key`: key login carries no channel claims; the idle scenario's channels are public.
        .env("SYNCGATE_PUBLIC_NAMESPACES", if args.key_login { "lt" } else { "" })
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in &args.env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", args.gateway_bin))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            return Err("spawned gateway did not start listening within 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    args.urls = vec![format!("ws://127.0.0.1:{port}/ws")];
    Ok(child)
}

pub(crate) fn load_slo(args: &Args) -> Result<Option<SloFile>, String> {
    let path = match &args.slo {
        Some(p) => p.clone(),
        None => {
            let default = std::path::PathBuf::from("loadtest/slo.toml");
            if !default.exists() {
                return Ok(None);
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    SloFile::parse(&text).map(Some)
}

pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(crate) fn measured_from(lat: &Summary) -> Measured {
    Measured {
        p50_ms: ms(lat.p50_us),
        p90_ms: ms(lat.p90_us),
        p99_ms: ms(lat.p99_us),
        p999_ms: ms(lat.p999_us),
        max_ms: ms(lat.max_us),
        ..Default::default()
    }
}

/// Runs a whole scenario; returns the report (its `slo_ok` decides the exit code).
pub async fn run(mut args: Args) -> Result<Report, String> {
    if args.scenario == Scenario::Churn {
        return Err("churn has its own driver: crate::churn::run".into());
    }
    let slo = load_slo(&args)?;
    let thresholds = slo.as_ref().map(|f| f.for_scenario(args.scenario.name()));
    let mut gateway = None;
    if args.spawn {
        let child = spawn_gateway(&mut args).await?;
        args.server_pid = child.id();
        gateway = Some(child);
    }
    let pid = args.server_pid;
    let before = pid.and_then(sampler::sample);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut workers = spawn_workers(&args, tx).await?;
    let target = plan::build(&args).len() as u64;
    let mut progress = ProgressLine::new(&args, target);
    let open = open_phase(&args, &mut rx, &mut workers, &mut progress, target).await?;

    // Let the server settle before sampling memory after the open phase.
    if pid.is_some() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let samples = ServerSamples { pid, before, checkpoint: open.checkpoint, after_open: pid.and_then(sampler::sample) };

    let rates: Vec<f64> = match args.scenario {
        Scenario::Connect | Scenario::Idle => vec![0.0],
        _ if !args.sweep.is_empty() => args.sweep.clone(),
        _ => vec![args.rate],
    };
    let mut steps = Vec::new();
    let mut capacity = None;
    for rate in rates {
        let mut step = traffic_step(&args, &mut workers, &mut rx, &mut progress, rate, &samples, open.opened).await?;
        if let Some(t) = &thresholds {
            check_step(&mut step, t, &args, &open);
        }
        progress.end_line();
        print_step(&args, &step);
        let ok = step.slo_ok;
        if ok {
            capacity = Some(rate);
        }
        steps.push(step);
        if !ok && !args.sweep.is_empty() {
            eprintln!("sweep stopped: rate {rate} broke the SLO");
            break;
        }
    }
    stop_workers(&mut workers, &mut rx, args.procs, Duration::from_secs(20)).await;
    if let Some(mut g) = gateway {
        let _ = g.start_kill();
        let _ = g.wait().await;
    }
    let slo_ok = steps.iter().all(|s| s.slo_ok);
    Ok(Report {
        scenario: args.scenario.name(),
        procs: args.procs,
        note: "load generator and gateway share this machine's cores",
        connections_attempted: open.attempted,
        connections_opened: open.opened,
        connect_failures: open.failures,
        connect_latency: summarize(&open.connect_hist),
        connects_per_s: open.connects_per_s,
        steps,
        capacity_rate: if args.sweep.is_empty() { None } else { capacity },
        slo_ok,
        args,
    })
}

/// What the workers' lines arrive on: (worker index, line).
pub(crate) type Lines = mpsc::UnboundedReceiver<(usize, Line)>;

/// The open phase, merged over the workers.
struct OpenPhase {
    attempted: u64,
    opened: u64,
    failures: BTreeMap<String, u64>,
    connect_hist: hdrhistogram::Histogram<u64>,
    connects_per_s: f64,
    error_rate: f64,
    checkpoint: Option<(u64, Sample)>,
}

/// Waits until every worker has opened its connections (its READY line) and merges their reports.
async fn open_phase(
    args: &Args,
    rx: &mut Lines,
    workers: &mut [Worker],
    progress: &mut ProgressLine,
    target: u64,
) -> Result<OpenPhase, String> {
    let open_rate = if args.scenario == Scenario::Connect { args.rate } else { args.open_rate };
    let open_deadline = Instant::now() + Duration::from_secs_f64(target as f64 / open_rate + args.timeout_s + 30.0);
    let mut opens: Vec<Option<OpenReport>> = vec![None; args.procs];
    let mut halves: Vec<Option<u64>> = vec![None; args.procs];
    let mut checkpoint = None;
    while opens.iter().any(Option::is_none) {
        let left = open_deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((w, Line::Ready(r)))) => opens[w] = Some(r),
            Ok(Some((w, Line::Half(n)))) => {
                halves[w] = Some(n);
                if halves.iter().all(Option::is_some) {
                    // Every worker paused at the checkpoint: let the server settle, sample it.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let open_now: u64 = halves.iter().flatten().sum();
                    checkpoint = args.server_pid.and_then(sampler::sample).map(|s| (open_now, s));
                    for wk in workers.iter_mut() {
                        wk.stdin.write_all(b"CONTINUE\n").await.map_err(|e| format!("worker stdin: {e}"))?;
                        wk.stdin.flush().await.map_err(|e| e.to_string())?;
                    }
                }
            }
            Ok(Some((w, Line::Progress(p)))) => progress.update(w, p),
            Ok(Some(_)) => {}
            Ok(None) => return Err("a worker exited during the open phase".into()),
            Err(_) => return Err("workers did not finish opening connections in time".into()),
        }
    }
    let opens: Vec<OpenReport> = opens.into_iter().flatten().collect();
    let mut connect_hist = new_hist();
    let mut failures = BTreeMap::new();
    for o in &opens {
        o.connect_latency.merge_into(&mut connect_hist);
        for (k, v) in &o.failures {
            *failures.entry(k.clone()).or_insert(0) += v;
        }
    }
    let attempted: u64 = opens.iter().map(|o| o.attempted).sum();
    let opened: u64 = opens.iter().map(|o| o.opened).sum();
    let first = opens.iter().map(|o| o.first_us).min().unwrap_or(0);
    let last = opens.iter().map(|o| o.last_us).max().unwrap_or(0);
    let connects_per_s = if last > first { opened as f64 / ((last - first) as f64 / 1e6) } else { 0.0 };
    let error_rate = if attempted > 0 { (attempted - opened) as f64 / attempted as f64 } else { 0.0 };
    Ok(OpenPhase { attempted, opened, failures, connect_hist, connects_per_s, error_rate, checkpoint })
}

/// The sampled server (`--spawn` / `--server-pid`): before start and after the open phase.
struct ServerSamples {
    pid: Option<u32>,
    before: Option<Sample>,
    /// idle: connections open and the sample at the checkpoint.
    checkpoint: Option<(u64, Sample)>,
    after_open: Option<Sample>,
}

/// One traffic step at `rate`: tells every worker to go, waits for all their step reports and
/// merges them, with the server's CPU and the bus's commands over the step (SLO not checked).
async fn traffic_step(
    args: &Args,
    workers: &mut [Worker],
    rx: &mut Lines,
    progress: &mut ProgressLine,
    rate: f64,
    samples: &ServerSamples,
    opened: u64,
) -> Result<StepResult, String> {
    let pid = samples.pid;
    let bus0 = bus_counters(&metrics_urls(args)).await;
    let cpu0 = pid.and_then(sampler::sample);
    for w in workers.iter_mut() {
        w.stdin.write_all(format!("GO {rate}\n").as_bytes()).await.map_err(|e| format!("worker stdin: {e}"))?;
        w.stdin.flush().await.map_err(|e| e.to_string())?;
    }
    let mut reports: Vec<Option<StepReport>> = vec![None; args.procs];
    let step_deadline = Instant::now() + args.duration() + args.drain() + Duration::from_secs(60);
    while reports.iter().any(Option::is_none) {
        let left = step_deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((w, Line::Step(s)))) => reports[w] = Some(s),
            Ok(Some((w, Line::Progress(p)))) => progress.update(w, p),
            Ok(Some(_)) => {}
            Ok(None) => return Err("a worker exited during traffic".into()),
            Err(_) => return Err("workers did not finish the step in time".into()),
        }
    }
    let cpu1 = pid.and_then(sampler::sample);
    let bus1 = bus_counters(&metrics_urls(args)).await;
    let bus_commands_per_message = match (bus0, bus1) {
        (Some((m0, c0)), Some((m1, c1))) if m1 > m0 => Some((c1 - c0) as f64 / (m1 - m0) as f64),
        _ => None,
    };
    let server = pid.map(|pid| server_report(pid, samples, &cpu0, &cpu1, opened, args.duration_s));
    let reports: Vec<StepReport> = reports.into_iter().flatten().collect();
    Ok(step_result(args, rate, &reports, server, bus_commands_per_message))
}

/// The workers' step reports merged into one step.
fn step_result(
    args: &Args,
    rate: f64,
    reports: &[StepReport],
    server: Option<ServerReport>,
    bus_commands_per_message: Option<f64>,
) -> StepResult {
    let mut lat = new_hist();
    let mut ack_lat = new_hist();
    let mut disconnects = BTreeMap::new();
    for r in reports {
        r.latency.merge_into(&mut lat);
        r.ack_latency.merge_into(&mut ack_lat);
        for (k, v) in &r.closes {
            *disconnects.entry(k.clone()).or_insert(0) += v;
        }
    }
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    let unique: u64 = reports.iter().map(|r| r.unique).sum();
    let expected = sent * plan::recipients(args);
    let lost = expected.saturating_sub(unique);
    StepResult {
        rate,
        duration_s: args.duration_s,
        messages_sent: sent,
        deliveries_expected: expected,
        deliveries_received: unique,
        duplicates: reports.iter().map(|r| r.duplicates).sum(),
        lost,
        loss_rate: if expected > 0 { lost as f64 / expected as f64 } else { 0.0 },
        errors: reports.iter().map(|r| r.errors).sum(),
        deliveries_per_s: unique as f64 / args.duration_s,
        latency: summarize(&lat),
        acks: reports.iter().map(|r| r.acks).sum(),
        ack_latency: args.durable.then(|| summarize(&ack_lat)),
        disconnects,
        server,
        bus_commands_per_message,
        slo: Vec::new(),
        slo_ok: true,
    }
}

/// Checks a step against the SLO: connect latency and rate for connect/idle, delivery latency
/// and throughput for the others.
fn check_step(step: &mut StepResult, t: &Thresholds, args: &Args, open: &OpenPhase) {
    let (lat_src, throughput) = match args.scenario {
        Scenario::Connect | Scenario::Idle => (summarize(&open.connect_hist), open.connects_per_s),
        _ => (step.latency.clone(), step.deliveries_per_s),
    };
    let mut m = measured_from(&lat_src);
    m.error_rate = open.error_rate;
    m.loss_rate = step.loss_rate;
    m.duplicates = step.duplicates;
    m.throughput = throughput;
    m.memory_per_conn_kib = step.server.as_ref().and_then(|s| s.memory_per_conn_bytes).map(|b| b / 1024.0);
    step.slo = slo::evaluate(t, &m);
    step.slo_ok = step.slo.iter().all(|c| c.ok);
}

/// Tells every worker to end, waits (at most `within`) for their DONE lines, then at most 5 s
/// for each to exit before killing it.
pub(crate) async fn stop_workers(workers: &mut [Worker], rx: &mut Lines, procs: usize, within: Duration) {
    for w in workers.iter_mut() {
        let _ = w.stdin.write_all(b"END\n").await;
        let _ = w.stdin.flush().await;
    }
    let end_deadline = Instant::now() + within;
    let mut done = 0;
    while done < procs {
        let left = end_deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((_, Line::Done))) => done += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    for w in workers.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await;
        let _ = w.child.start_kill();
    }
}

/// Where the bus counters are read: `--metrics` addresses, else the `--url`s.
fn metrics_urls(args: &Args) -> Vec<String> {
    if args.metrics.is_empty() {
        return args.urls.clone();
    }
    args.metrics.iter().map(|a| format!("ws://{a}/")).collect()
}

/// Sums `syncgate_bus_messages_total` and `syncgate_bus_publish_commands_total` over the
/// gateways' `/metrics` (same host and port as their WebSocket URLs). `None` when no gateway
/// reports a Redis bus.
async fn bus_counters(urls: &[String]) -> Option<(u64, u64)> {
    use tokio::io::AsyncReadExt;
    let mut seen = std::collections::BTreeSet::new();
    let (mut msgs, mut cmds, mut any) = (0u64, 0u64, false);
    for url in urls {
        let Some(hostport) = url.strip_prefix("ws://").and_then(|r| r.split('/').next()) else {
            continue;
        };
        if !seen.insert(hostport.to_string()) {
            continue;
        }
        let fetch = async {
            let mut s = tokio::net::TcpStream::connect(hostport).await.ok()?;
            let req = format!("GET /metrics HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).await.ok()?;
            Some(out)
        };
        let Ok(Some(text)) = tokio::time::timeout(Duration::from_secs(2), fetch).await else {
            continue;
        };
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("syncgate_bus_messages_total ") {
                msgs += v.trim().parse::<u64>().unwrap_or(0);
                any = true;
            } else if let Some(v) = line.strip_prefix("syncgate_bus_publish_commands_total ") {
                cmds += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    any.then_some((msgs, cmds))
}

fn server_report(
    pid: u32,
    samples: &ServerSamples,
    cpu0: &Option<Sample>,
    cpu1: &Option<Sample>,
    opened: u64,
    secs: f64,
) -> ServerReport {
    let (before, after_open) = (&samples.before, &samples.after_open);
    let rss_before = before.as_ref().map(|s| s.rss_kib).unwrap_or(0);
    let rss_after = after_open.as_ref().map(|s| s.rss_kib).unwrap_or(0);
    // Two points (checkpoint, end) on the RSS-over-connections line: its slope is the marginal
    // cost, what is left of the total growth is fixed.
    let two_points = samples.checkpoint.as_ref().filter(|(n, _)| *n > 0 && opened > *n && rss_after > 0);
    let marginal = two_points.map(|(n, s)| (rss_after as f64 - s.rss_kib as f64) * 1024.0 / (opened - n) as f64);
    let fixed = marginal
        .filter(|_| before.is_some())
        .map(|m| (rss_after as f64 - rss_before as f64) - m * opened as f64 / 1024.0);
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => (b.cpu_seconds - a.cpu_seconds).max(0.0),
        _ => 0.0,
    };
    ServerReport {
        pid,
        rss_before_kib: rss_before,
        rss_after_open_kib: rss_after,
        memory_per_conn_bytes: (opened > 0 && rss_after > 0 && before.is_some())
            .then(|| (rss_after as f64 - rss_before as f64) * 1024.0 / opened as f64),
        checkpoint_connections: two_points.map(|(n, _)| *n),
        rss_at_checkpoint_kib: two_points.map(|(_, s)| s.rss_kib),
        marginal_bytes_per_conn: marginal,
        fixed_kib: fixed,
        cpu_seconds: cpu,
        cpu_percent_of_one_core: cpu / secs * 100.0,
    }
}

fn print_step(args: &Args, s: &StepResult) {
    let l = &s.latency;
    match args.scenario {
        Scenario::Connect | Scenario::Idle => {}
        _ => println!(
            "rate {:>9.1} msg/s | sent {:>9} | delivered {:>10}/{:<10} | lost {} | dup {} | errors {} | {:>10.0} deliveries/s | p50 {:.2} p90 {:.2} p99 {:.2} p999 {:.2} max {:.2} ms",
            s.rate, s.messages_sent, s.deliveries_received, s.deliveries_expected, s.lost, s.duplicates, s.errors,
            s.deliveries_per_s, ms(l.p50_us), ms(l.p90_us), ms(l.p99_us), ms(l.p999_us), ms(l.max_us)
        ),
    }
    if let Some(a) = &s.ack_latency {
        println!(
            "  durable acks {:>9} ({:.0}/s) | ack p50 {:.2} p90 {:.2} p99 {:.2} p999 {:.2} max {:.2} ms",
            s.acks,
            s.acks as f64 / s.duration_s,
            ms(a.p50_us),
            ms(a.p90_us),
            ms(a.p99_us),
            ms(a.p999_us),
            ms(a.max_us)
        );
        if s.acks < s.messages_sent {
            println!(
                "  {} publishes never acked (is the channel durable? SYNCGATE_DURABLE_NAMESPACES)",
                s.messages_sent - s.acks
            );
        }
    }
    if !s.disconnects.is_empty() {
        println!("  disconnects during the run: {:?}", s.disconnects);
    }
    if let Some(c) = s.bus_commands_per_message {
        println!("  Redis bus: {c:.4} PUBLISH commands per message");
    }
    if let Some(sv) = &s.server {
        println!(
            "  server pid {}: rss {} KiB before, {} KiB after opening{} | cpu {:.2} s ({:.1}% of one core)",
            sv.pid,
            sv.rss_before_kib,
            sv.rss_after_open_kib,
            sv.memory_per_conn_bytes.map(|b| format!(" ({:.2} KiB per connection)", b / 1024.0)).unwrap_or_default(),
            sv.cpu_seconds,
            sv.cpu_percent_of_one_core
        );
        if let (Some(n), Some(rss), Some(m), Some(f)) =
            (sv.checkpoint_connections, sv.rss_at_checkpoint_kib, sv.marginal_bytes_per_conn, sv.fixed_kib)
        {
            println!(
                "  memory: fixed {:.1} MiB + marginal {:.2} KiB per connection (rss {} KiB at {} connections, {} KiB at the end)",
                f / 1024.0,
                m / 1024.0,
                rss,
                n,
                sv.rss_after_open_kib
            );
        }
    }
    for c in &s.slo {
        if !c.ok {
            println!("  SLO BROKEN: {} limit {} actual {:.3}", c.name, c.limit, c.actual);
        }
    }
}

/// The summary table printed at the end.
pub fn print_summary(r: &Report) {
    let c = &r.connect_latency;
    println!(
        "== loadtest {} ({} worker process{}; {}) ==",
        r.scenario,
        r.procs,
        if r.procs == 1 { "" } else { "es" },
        r.note
    );
    println!("connections   {} opened / {} attempted", r.connections_opened, r.connections_attempted);
    if !r.connect_failures.is_empty() {
        println!("failures      {:?}", r.connect_failures);
    }
    println!(
        "connect       {:.0}/s | p50 {:.2} p90 {:.2} p99 {:.2} p999 {:.2} max {:.2} ms",
        r.connects_per_s,
        ms(c.p50_us),
        ms(c.p90_us),
        ms(c.p99_us),
        ms(c.p999_us),
        ms(c.max_us)
    );
    if let Some(cap) = r.capacity_rate {
        println!("capacity      {cap} msg/s (highest step within the SLO)");
    }
    println!("SLO           {}", if r.slo_ok { "met" } else { "BROKEN" });
}
