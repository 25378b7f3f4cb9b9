//! `loadtest churn`: short-lived connections in rounds, and whether the server gives everything
//! back. Each connection connects (token in the URL), subscribes to a channel of its own,
//! publishes one message and waits for its ack, then leaves in one of three ways, taken
//! round-robin: a clean close (close frame, the server's close frame, then its FIN), an abrupt
//! reset (`SO_LINGER` 0, then drop: an RST) or a drop mid-handshake (a partial HTTP upgrade
//! request, then close). Connects are paced open loop at `--rate`/s for `--round` seconds; then
//! the driver waits (at most `--settle`) for the server's open fds to return to the baseline
//! counted before the first round, and samples its RSS and fds.
//!
//! Holds when every round's fds are back at the baseline and no round after the first has RSS
//! more than `max_rss_growth_pct` (10 %) above round 1's.
//!
//! Line protocol (on top of [`crate::worker`]'s): parent → `ROUND <first index> <count>`,
//! `END`; worker → `READY {}`, `C {RoundReport}` per round, `R` at the end. Worker `w` of `K`
//! takes the round's connections `j` with `j % K == w`, the `j`-th due `j / rate` after its start.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::hist::{new_hist, summarize, Recorded, Summary};
use crate::run::{self, Line};
use crate::sampler;
use crate::slo::{self, Check, SloFile, Thresholds};
use crate::worker::{bind_address_no_port, emit, host_port, token, wall_us, OpenReport, Ws};

/// How a connection leaves, by global connection index `% 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Close frame, wait for the server's close frame and its FIN.
    Clean,
    /// Welcome, subscribe, publish, then `SO_LINGER` 0 and drop: the server reads an RST.
    Reset,
    /// TCP connect, part of the HTTP upgrade request, then close.
    HandshakeDrop,
}

pub const LEAVES: [Leave; 3] = [Leave::Clean, Leave::Reset, Leave::HandshakeDrop];

impl Leave {
    pub fn of(g: u64) -> Leave {
        LEAVES[(g % 3) as usize]
    }
    pub fn name(self) -> &'static str {
        match self {
            Leave::Clean => "clean_close",
            Leave::Reset => "abrupt_reset",
            Leave::HandshakeDrop => "handshake_drop",
        }
    }
}

/// Distinct users the connections take turns at (`lt-churn-{g % USERS}`): far below the
/// per-user connection cap even when the server stalls.
const USERS: u64 = 5000;
/// Connections one worker keeps in flight at most (20 000 open files per process here); a
/// connect due beyond it is not attempted and counts as the error `client: in-flight cap`.
const MAX_IN_FLIGHT: u64 = 16_000;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct KindCount {
    pub attempted: u64,
    /// Left exactly as intended (every step answered).
    pub ok: u64,
}

/// One round as one worker (or, merged, all of them) saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoundReport {
    /// By leave kind (`clean_close`, `abrupt_reset`, `handshake_drop`).
    pub kinds: BTreeMap<String, KindCount>,
    /// `kind: step: cause` → count; every attempted connection is either ok or here.
    pub errors: BTreeMap<String, u64>,
    /// Scheduled connect → `welcome` (clean and reset connections).
    pub connect_latency: Recorded,
    /// Wall-clock µs: the round's scheduled start and the last connection finished.
    pub first_us: u64,
    pub last_us: u64,
}

impl RoundReport {
    fn merge(&mut self, o: &RoundReport) {
        for (k, c) in &o.kinds {
            let e = self.kinds.entry(k.clone()).or_default();
            e.attempted += c.attempted;
            e.ok += c.ok;
        }
        for (k, n) in &o.errors {
            *self.errors.entry(k.clone()).or_insert(0) += n;
        }
        self.first_us = if self.first_us == 0 { o.first_us } else { self.first_us.min(o.first_us) };
        self.last_us = self.last_us.max(o.last_us);
    }
    pub fn attempted(&self) -> u64 {
        self.kinds.values().map(|c| c.attempted).sum()
    }
    pub fn ok(&self) -> u64 {
        self.kinds.values().map(|c| c.ok).sum()
    }
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Worker side.

/// What every connection of a worker shares.
struct Ctx {
    url: String,
    addr: SocketAddr,
    host_header: String,
    path: String,
    tokens: Vec<String>,
    /// Worker index: the third octet of its loopback source addresses.
    index: usize,
    timeout: Duration,
}

/// Per round: counters the connection tasks add to.
struct RoundState {
    attempted: [AtomicU64; 3],
    ok: [AtomicU64; 3],
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<hdrhistogram::Histogram<u64>>,
    last_us: AtomicU64,
}

impl RoundState {
    fn error(&self, key: String) {
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_insert(0) += 1;
    }
}

/// Source address of connection `g` when the target is loopback: 127.3.<worker>.<1..=250>, so
/// ephemeral ports and TIME_WAIT are spread over 250 addresses per worker.
fn source(index: usize, g: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 3, (index % 256) as u8, (g % 250 + 1) as u8)
}

async fn tcp(ctx: &Ctx, g: u64) -> Result<tokio::net::TcpStream, String> {
    let sock = match ctx.addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {}", e.kind()))?;
    if let IpAddr::V4(dst) = ctx.addr.ip() {
        if dst.is_loopback() {
            bind_address_no_port(&sock);
            sock.bind(SocketAddr::new(IpAddr::V4(source(ctx.index, g)), 0))
                .map_err(|e| format!("bind: {}", e.kind()))?;
        }
    }
    let stream = sock.connect(ctx.addr).await.map_err(|e| format!("io: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// `SO_LINGER` {on, 0}: closing the socket sends an RST and skips TIME_WAIT.
fn linger_zero(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket fd and a correctly sized linger value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Reads frames until a text frame satisfies `want`; an `error` frame or a close fails.
async fn expect_text(ws: &mut Ws, want: &str) -> Result<(), String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.contains(want) {
                    return Ok(());
                }
                if t.contains("\"type\":\"error\"") {
                    let code = t.split("\"code\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
                    return Err(format!("error {code}"));
                }
            }
            Some(Ok(Message::Close(f))) => {
                return Err(format!("close {}", f.map(|f| u16::from(f.code)).unwrap_or(1005)));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("ws: {e}")),
            None => return Err("eof".into()),
        }
    }
}

/// One connection's life; `step` names where it is, for the error key.
async fn life(
    ctx: &Ctx,
    g: u64,
    kind: Leave,
    scheduled_us: u64,
    st: &RoundState,
    step: &mut &'static str,
) -> Result<(), String> {
    let tok = &ctx.tokens[(g % USERS) as usize];
    *step = "connect";
    let mut stream = tcp(ctx, g).await?;
    if kind == Leave::HandshakeDrop {
        // The request line and some headers, never the blank line that ends them.
        *step = "partial request";
        let partial = format!(
            "GET {}?token={tok}&device_id=d0 HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
            ctx.path, ctx.host_header
        );
        stream.write_all(partial.as_bytes()).await.map_err(|e| format!("io: {}", e.kind()))?;
        drop(stream);
        return Ok(());
    }
    *step = "handshake";
    let url = format!("{}?token={tok}&device_id=d0", ctx.url);
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => format!("http {}", r.status().as_u16()),
            other => format!("{other}"),
        })?;
    *step = "welcome";
    expect_text(&mut ws, "\"type\":\"welcome\"").await?;
    let done = wall_us();
    let _ = st.latency.lock().unwrap_or_else(|e| e.into_inner()).record(done.saturating_sub(scheduled_us).max(1));

    *step = "subscribe";
    subscribe_and_publish(&mut ws, g, step).await?;
    match kind {
        Leave::Reset => {
            linger_zero(ws.get_ref());
            drop(ws);
            Ok(())
        }
        _ => close_cleanly(ws, step).await,
    }
}

/// Subscribes to the connection's own channel and publishes one event into it, each answered.
async fn subscribe_and_publish(ws: &mut Ws, g: u64, step: &mut &'static str) -> Result<(), String> {
    let channel = format!("lt:churn:{g}");
    ws.send(Message::text(format!("{{\"type\":\"subscribe\",\"channel\":\"{channel}\"}}")))
        .await
        .map_err(|e| format!("ws: {e}"))?;
    expect_text(ws, "\"type\":\"subscribed\"").await?;
    *step = "publish";
    ws.send(Message::text(format!(
        "{{\"type\":\"publish\",\"channel\":\"{channel}\",\"event\":\"churn\",\"data\":{{\"g\":{g}}},\"id\":1}}"
    )))
    .await
    .map_err(|e| format!("ws: {e}"))?;
    expect_text(ws, "\"type\":\"ack\"").await
}

/// A clean close: our close frame, the server's close frame, then the server's FIN.
async fn close_cleanly(mut ws: Ws, step: &mut &'static str) -> Result<(), String> {
    *step = "close";
    ws.close(None).await.map_err(|e| format!("ws: {e}"))?;
    let mut closed = false;
    let end = loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) => closed = true,
            Some(Ok(_)) => {}
            Some(Err(e)) => break format!("ws: {e}"),
            None => break "eof".to_string(),
        }
    };
    if !closed {
        return Err(format!("no close frame ({end})"));
    }
    // Then the server's FIN: it closes the TCP connection first (RFC 6455 §7.1.1).
    *step = "server fin";
    let mut buf = [0u8; 256];
    loop {
        match ws.get_mut().read(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("io: {}", e.kind())),
        }
    }
    Ok(())
}

async fn connection(ctx: Arc<Ctx>, st: Arc<RoundState>, g: u64, scheduled_us: u64, in_flight: Arc<AtomicU64>) {
    let kind = Leave::of(g);
    let mut step = "connect";
    let res = tokio::time::timeout(ctx.timeout, life(&ctx, g, kind, scheduled_us, &st, &mut step)).await;
    match res {
        Ok(Ok(())) => {
            st.ok[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(cause)) => st.error(format!("{}: {step}: {cause}", kind.name())),
        Err(_) => st.error(format!("{}: {step}: timeout", kind.name())),
    }
    st.last_us.fetch_max(wall_us(), Ordering::Relaxed);
    in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// Runs this worker's share of one round: connections `first + j` for `j` in `0..n` with
/// `j % count == index`, paced open loop from the round's start.
async fn round(ctx: &Arc<Ctx>, rate: f64, first: u64, n: u64, count: usize, in_flight: &Arc<AtomicU64>) -> RoundReport {
    let st = Arc::new(RoundState {
        attempted: Default::default(),
        ok: Default::default(),
        errors: Mutex::new(BTreeMap::new()),
        latency: Mutex::new(new_hist()),
        last_us: AtomicU64::new(0),
    });
    let t0 = Instant::now() + Duration::from_millis(20);
    let wall0 = wall_us() + 20_000;
    let mut tasks = tokio::task::JoinSet::new();
    for j in (ctx.index as u64..n).step_by(count) {
        let offset = Duration::from_secs_f64(j as f64 / rate);
        tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + offset)).await;
        let g = first + j;
        let kind = Leave::of(g);
        st.attempted[kind as usize].fetch_add(1, Ordering::Relaxed);
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            st.error(format!("{}: client: in-flight cap", kind.name()));
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(connection(ctx.clone(), st.clone(), g, wall0 + offset.as_micros() as u64, in_flight.clone()));
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut kinds = BTreeMap::new();
    for k in LEAVES {
        kinds.insert(
            k.name().to_string(),
            KindCount {
                attempted: st.attempted[k as usize].load(Ordering::Relaxed),
                ok: st.ok[k as usize].load(Ordering::Relaxed),
            },
        );
    }
    let errors = st.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let connect_latency = Recorded::from_hist(&st.latency.lock().unwrap_or_else(|e| e.into_inner()));
    RoundReport {
        kinds,
        errors,
        connect_latency,
        first_us: wall0,
        last_us: st.last_us.load(Ordering::Relaxed).max(wall0),
    }
}

/// `loadtest __worker` for churn.
pub async fn worker(args: Args, index: usize, count: usize) -> Result<(), String> {
    let url = args.urls[0].clone();
    let (host, port) = host_port(&url).ok_or("bad url")?;
    let ip: IpAddr = match host.as_str() {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse().map_err(|_| "only IP or localhost hosts are supported".to_string())?,
    };
    let path = url.strip_prefix("ws://").and_then(|r| r.find('/').map(|i| r[i..].to_string())).unwrap_or("/".into());
    let ctx = Arc::new(Ctx {
        host_header: format!("{host}:{port}"),
        addr: SocketAddr::new(ip, port),
        path,
        url,
        tokens: (0..USERS).map(|u| token(&args.jwt_secret, &format!("lt-churn-{u}"))).collect(),
        index,
        timeout: args.timeout(),
    });
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let in_flight = Arc::new(AtomicU64::new(0));
    emit(&stdout, format!("READY {}", serde_json::to_string(&OpenReport::default()).unwrap_or_default())).await;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line == "END" {
            break;
        }
        let mut f = line.strip_prefix("ROUND ").unwrap_or("").split_whitespace().map(|v| v.parse::<u64>());
        let (Some(Ok(first)), Some(Ok(n))) = (f.next(), f.next()) else {
            continue;
        };
        let report = round(&ctx, args.rate, first, n, count, &in_flight).await;
        emit(&stdout, format!("C {}", serde_json::to_string(&report).unwrap_or_default())).await;
    }
    emit(&stdout, "R {}".to_string()).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parent side.

#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    /// 1-based.
    pub round: usize,
    pub duration_s: f64,
    pub attempted: u64,
    pub ok: u64,
    pub kinds: BTreeMap<String, KindCount>,
    pub errors: BTreeMap<String, u64>,
    /// Round start → last connection finished.
    pub span_s: f64,
    /// Connections finished (ok or not) / `span_s`: below `--rate` when the round overran.
    pub achieved_per_s: f64,
    pub connect_latency: Summary,
    /// After the settle wait.
    pub rss_kib: u64,
    /// Open fds that are not files (sockets, pipes, epoll and event fds): compared with the
    /// baseline.
    pub fds: u64,
    pub socket_fds: u64,
    /// Open files (the database's, mostly): shown, not compared.
    pub file_fds: u64,
    pub total_fds: u64,
    /// How long `fds` took to return to the baseline (or the whole `--settle`).
    pub settle_ms: u64,
    /// RSS vs round 1's, in % (0 for round 1).
    pub rss_growth_pct: f64,
    /// `fds` − `baseline_fds`.
    pub fds_over_baseline: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    pub scenario: &'static str,
    pub args: Args,
    pub procs: usize,
    pub note: &'static str,
    pub server_pid: u32,
    /// Before the first round: non-file fds (compared), files, all.
    pub baseline_fds: u64,
    pub baseline_file_fds: u64,
    pub baseline_total_fds: u64,
    pub baseline_rss_kib: u64,
    /// Round 1's RSS: the reference for the growth check.
    pub reference_rss_kib: u64,
    pub rounds: Vec<RoundResult>,
    pub attempted: u64,
    pub ok: u64,
    pub kinds: BTreeMap<String, KindCount>,
    pub errors: BTreeMap<String, u64>,
    pub error_rate: f64,
    pub achieved_per_s: f64,
    pub connect_latency: Summary,
    /// Highest RSS after a round past the first, % above round 1's.
    pub max_rss_growth_pct: f64,
    /// Most non-file fds above the baseline after any round (0: always back).
    pub max_fds_over_baseline: i64,
    pub slo: Vec<Check>,
    /// The verdict on memory and fds: `max_rss_growth_pct` and `fds_return_to_baseline` held.
    pub holds: bool,
    /// Every configured check held (also errors, latency, throughput): the exit code.
    pub slo_ok: bool,
}

/// The churn thresholds: the SLO file's `[default]` + `[churn]`, with the issue's rule as the
/// default (`max_rss_growth_pct = 10`, `fds_return_to_baseline = true`). Loss and duplicates
/// mean nothing here.
pub fn thresholds(file: Option<&SloFile>) -> Thresholds {
    let mut t = file.map(|f| f.for_scenario("churn")).unwrap_or_default();
    t.max_rss_growth_pct = t.max_rss_growth_pct.or(Some(10.0));
    t.fds_return_to_baseline = t.fds_return_to_baseline.or(Some(true));
    t.max_loss_rate = None;
    t.max_duplicates = None;
    t.max_memory_per_conn_kib = None;
    t
}

fn fds(pid: u32) -> Result<sampler::Fds, String> {
    sampler::fds(pid).ok_or_else(|| format!("cannot read /proc/{pid}/fd (has the server exited?)"))
}

fn rss(pid: u32) -> Result<u64, String> {
    sampler::rss_kib(pid).ok_or_else(|| format!("cannot read /proc/{pid}/status (has the server exited?)"))
}

/// The server's open fds once they have not changed for 1 s (at most 10 s): the baseline.
async fn stable_fds(pid: u32) -> Result<sampler::Fds, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = fds(pid)?;
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = fds(pid)?;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    Ok(last)
}

/// Waits until the server's non-file fds are back at `baseline`, at most `max`; returns the
/// fds and how long it took.
async fn settle(pid: u32, baseline: u64, max: Duration) -> Result<(sampler::Fds, Duration), String> {
    let start = Instant::now();
    loop {
        let n = fds(pid)?;
        if n.non_file() <= baseline || start.elapsed() >= max {
            return Ok((n, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs `loadtest churn`; the report's `slo_ok` (= `holds`) decides the exit code.
pub async fn run(mut args: Args) -> Result<ChurnReport, String> {
    let file = run::load_slo(&args)?;
    let t = thresholds(file.as_ref());
    let mut gateway = None;
    if args.spawn {
        let child = run::spawn_gateway(&mut args).await?;
        args.server_pid = child.id();
        gateway = Some(child);
    }
    let pid = args.server_pid.ok_or("churn needs --spawn or --server-pid")?;
    let result = drive(&args, pid, &t).await;
    if let Some(mut g) = gateway {
        let _ = g.start_kill();
        let _ = g.wait().await;
    }
    let (baseline, baseline_rss, rounds, total_lat) = result?;

    let mut total = RoundReport::default();
    for r in &rounds {
        total.merge(&RoundReport { kinds: r.kinds.clone(), errors: r.errors.clone(), ..Default::default() });
    }
    let attempted = total.attempted();
    let errors = total.error_count();
    let reference = rounds.first().map(|r| r.rss_kib).unwrap_or(0);
    let max_growth = rounds.iter().skip(1).map(|r| r.rss_growth_pct).fold(f64::MIN, f64::max);
    let max_over = rounds.iter().map(|r| r.fds_over_baseline).max().unwrap_or(0);
    let busy_s: f64 = rounds.iter().map(|r| r.span_s).sum();
    let achieved = if busy_s > 0.0 { attempted as f64 / busy_s } else { 0.0 };
    let connect_latency = summarize(&total_lat);
    let mut m = run::measured_from(&connect_latency);
    m.error_rate = if attempted > 0 { errors as f64 / attempted as f64 } else { 0.0 };
    m.throughput = achieved;
    m.rss_growth_pct = Some(max_growth);
    m.fds_over_baseline = Some(max_over);
    let checks = slo::evaluate(&t, &m);
    let holds =
        checks.iter().filter(|c| matches!(c.name, "max_rss_growth_pct" | "fds_return_to_baseline")).all(|c| c.ok);
    let slo_ok = checks.iter().all(|c| c.ok);
    Ok(ChurnReport {
        scenario: "churn",
        procs: args.procs,
        note: "load generator and gateway share this machine's cores",
        server_pid: pid,
        baseline_fds: baseline.non_file(),
        baseline_file_fds: baseline.files,
        baseline_total_fds: baseline.total,
        baseline_rss_kib: baseline_rss,
        reference_rss_kib: reference,
        attempted,
        ok: total.ok(),
        kinds: total.kinds,
        errors: total.errors,
        error_rate: m.error_rate,
        achieved_per_s: achieved,
        connect_latency,
        max_rss_growth_pct: max_growth,
        max_fds_over_baseline: max_over,
        rounds,
        slo: checks,
        holds,
        slo_ok,
        args,
    })
}

type Driven = (sampler::Fds, u64, Vec<RoundResult>, hdrhistogram::Histogram<u64>);

/// Workers, baseline, rounds; the gateway (if spawned) is stopped by the caller either way.
async fn drive(args: &Args, pid: u32, t: &Thresholds) -> Result<Driven, String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut workers = run::spawn_workers(args, tx).await?;
    let mut ready = 0;
    while ready < args.procs {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some((_, Line::Ready(_)))) => ready += 1,
            Ok(Some(_)) => {}
            Ok(None) => return Err("a worker exited before it was ready".into()),
            Err(_) => return Err("workers did not start within 30 s".into()),
        }
    }
    let baseline = stable_fds(pid).await?;
    let baseline_fds = baseline.non_file();
    let baseline_rss = rss(pid)?;
    let lens = args.rounds();
    println!(
        "churn: {} connects/s for {} s in {} rounds of {} s (clean close, abrupt reset, handshake drop in turn); \
         server pid {pid} before: {baseline_fds} fds + {} files, rss {:.1} MiB",
        args.rate,
        args.duration_s,
        lens.len(),
        args.round_s,
        baseline.files,
        mib(baseline_rss)
    );
    let mut rounds: Vec<RoundResult> = Vec::new();
    let mut total_lat = new_hist();
    let mut first = 0u64;
    for (i, secs) in lens.iter().enumerate() {
        let n = (args.rate * secs).round().max(1.0) as u64;
        let (merged, lat) = churn_round(args, &mut workers, &mut rx, i, *secs, first, n).await?;
        first += n;
        let (fds_now, waited) = settle(pid, baseline_fds, args.settle()).await?;
        let rss_now = rss(pid)?;
        let _ = total_lat.add(&lat);
        let reference = rounds.first().map(|r| r.rss_kib).unwrap_or(rss_now);
        let span_s = (merged.last_us.saturating_sub(merged.first_us) as f64 / 1e6).max(1e-3);
        let r = RoundResult {
            round: i + 1,
            duration_s: *secs,
            attempted: merged.attempted(),
            ok: merged.ok(),
            span_s,
            achieved_per_s: merged.attempted() as f64 / span_s,
            connect_latency: summarize(&lat),
            kinds: merged.kinds.clone(),
            errors: merged.errors.clone(),
            rss_kib: rss_now,
            fds: fds_now.non_file(),
            socket_fds: fds_now.sockets,
            file_fds: fds_now.files,
            total_fds: fds_now.total,
            settle_ms: waited.as_millis() as u64,
            rss_growth_pct: if reference > 0 {
                (rss_now as f64 - reference as f64) / reference as f64 * 100.0
            } else {
                0.0
            },
            fds_over_baseline: fds_now.non_file() as i64 - baseline_fds as i64,
        };
        print_round(&r, lens.len(), baseline_fds, t);
        rounds.push(r);
    }
    run::stop_workers(&mut workers, &mut rx, args.procs, Duration::from_secs(10)).await;
    Ok((baseline, baseline_rss, rounds, total_lat))
}

/// Round `i` (`secs` long): connections `first..first + n` split over the workers; waits for
/// every worker's report and merges them with their connect latencies.
async fn churn_round(
    args: &Args,
    workers: &mut [run::Worker],
    rx: &mut run::Lines,
    i: usize,
    secs: f64,
    first: u64,
    n: u64,
) -> Result<(RoundReport, hdrhistogram::Histogram<u64>), String> {
    for w in workers.iter_mut() {
        w.stdin.write_all(format!("ROUND {first} {n}\n").as_bytes()).await.map_err(|e| format!("worker stdin: {e}"))?;
        w.stdin.flush().await.map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs + args.timeout_s + 30.0);
    let mut merged = RoundReport::default();
    let mut lat = new_hist();
    let mut got = 0;
    while got < args.procs {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((_, Line::Round(r)))) => {
                merged.merge(&r);
                r.connect_latency.merge_into(&mut lat);
                got += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("a worker exited during a round".into()),
            Err(_) => return Err(format!("workers did not finish round {} in time", i + 1)),
        }
    }
    Ok((merged, lat))
}

fn kinds_line(kinds: &BTreeMap<String, KindCount>) -> String {
    LEAVES
        .iter()
        .map(|k| {
            let c = kinds.get(k.name()).copied().unwrap_or_default();
            format!("{} {}/{}", k.name(), c.ok, c.attempted)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_round(r: &RoundResult, of: usize, baseline_fds: u64, t: &Thresholds) {
    let l = &r.connect_latency;
    let rss_mark = match t.max_rss_growth_pct {
        Some(limit) if r.round > 1 && r.rss_growth_pct > limit => " BROKEN",
        _ => "",
    };
    let fd_mark = if t.fds_return_to_baseline == Some(true) && r.fds_over_baseline > 0 { " BROKEN" } else { "" };
    println!(
        "round {:>3}/{of} | connects {:>7} ok {:>7} errors {:>5} | {:>6.0}/s | connect p50 {:.2} p99 {:.2} ms | rss {:>7.1} MiB ({:+.1} %){rss_mark} | fds {} (baseline {baseline_fds}, {} ms){fd_mark} + {} files",
        r.round,
        r.attempted,
        r.ok,
        r.attempted - r.ok,
        r.achieved_per_s,
        run::ms(l.p50_us),
        run::ms(l.p99_us),
        mib(r.rss_kib),
        r.rss_growth_pct,
        r.fds,
        r.settle_ms,
        r.file_fds,
    );
    if !r.errors.is_empty() {
        println!("  errors: {:?}", r.errors);
    }
}

/// The summary printed at the end.
pub fn print_summary(r: &ChurnReport) {
    let c = &r.connect_latency;
    println!("== loadtest churn ({} worker process{}; {}) ==", r.procs, if r.procs == 1 { "" } else { "es" }, r.note);
    println!(
        "connects      {} attempted, {} ok, {} errors ({:.4} %) | {} /s target, {:.0}/s achieved | {} rounds of {} s",
        r.attempted,
        r.ok,
        r.attempted - r.ok,
        r.error_rate * 100.0,
        r.args.rate,
        r.achieved_per_s,
        r.rounds.len(),
        r.args.round_s
    );
    println!("by leave      {}", kinds_line(&r.kinds));
    if !r.errors.is_empty() {
        println!("errors        {:?}", r.errors);
    }
    println!(
        "connect       p50 {:.2} p90 {:.2} p99 {:.2} p999 {:.2} max {:.2} ms (scheduled → welcome, {} connects)",
        run::ms(c.p50_us),
        run::ms(c.p90_us),
        run::ms(c.p99_us),
        run::ms(c.p999_us),
        run::ms(c.max_us),
        c.count
    );
    let later = || r.rounds.iter().skip(1).map(|x| x.rss_kib);
    let (rss_min, rss_max) = (later().min().unwrap_or(0), later().max().unwrap_or(0));
    let fds_max = r.rounds.iter().map(|x| x.fds).max().unwrap_or(0);
    let fds_min = r.rounds.iter().map(|x| x.fds).min().unwrap_or(0);
    let files_max = r.rounds.iter().map(|x| x.file_fds).max().unwrap_or(0);
    let files_min = r.rounds.iter().map(|x| x.file_fds).min().unwrap_or(0);
    println!(
        "server        pid {}: rss {:.1} MiB before, {:.1} after round 1, {:.1}..{:.1} after the later rounds (at most {:+.1} % vs round 1), {:.1} at the end",
        r.server_pid,
        mib(r.baseline_rss_kib),
        mib(r.reference_rss_kib),
        mib(rss_min),
        mib(rss_max),
        r.max_rss_growth_pct,
        mib(r.rounds.last().map(|x| x.rss_kib).unwrap_or(0)),
    );
    println!(
        "              fds (sockets, pipes, epoll, eventfds) {} before, {fds_min}..{fds_max} after the rounds | open files (not compared) {} before, {files_min}..{files_max} after",
        r.baseline_fds, r.baseline_file_fds
    );
    for c in &r.slo {
        if !c.ok {
            println!("SLO BROKEN    {} limit {} actual {:.3}", c.name, c.limit, c.actual);
        }
    }
    println!(
        "verdict       {} (RSS within {} % of round 1's after every later round, fds back to the baseline after every round)",
        if r.holds { "HOLDS" } else { "DOES NOT HOLD" },
        r.slo.iter().find(|c| c.name == "max_rss_growth_pct").map(|c| c.limit).unwrap_or(10.0)
    );
    println!("SLO           {}", if r.slo_ok { "met" } else { "BROKEN" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_rotate_and_sources_spread() {
        let kinds: Vec<_> = (0..6).map(Leave::of).collect();
        assert_eq!(kinds, [LEAVES, LEAVES].concat());
        assert_eq!(source(2, 0), Ipv4Addr::new(127, 3, 2, 1));
        assert_eq!(source(2, 249), Ipv4Addr::new(127, 3, 2, 250));
        assert_eq!(source(2, 250), Ipv4Addr::new(127, 3, 2, 1));
    }

    #[test]
    fn default_thresholds_are_the_issue_rule() {
        let t = thresholds(None);
        assert_eq!(t.max_rss_growth_pct, Some(10.0));
        assert_eq!(t.fds_return_to_baseline, Some(true));
        let f = SloFile::parse("[default]\nmax_loss_rate = 0.0\n[churn]\nmax_rss_growth_pct = 5\n").unwrap();
        let t = thresholds(Some(&f));
        assert_eq!(t.max_rss_growth_pct, Some(5.0));
        assert_eq!(t.max_loss_rate, None);
    }

    #[test]
    fn reports_merge() {
        let mut a = RoundReport::default();
        let mut b = RoundReport::default();
        b.kinds.insert("clean_close".into(), KindCount { attempted: 3, ok: 2 });
        b.errors.insert("clean_close: welcome: eof".into(), 1);
        b.first_us = 10;
        b.last_us = 20;
        a.merge(&b);
        a.merge(&b);
        assert_eq!((a.attempted(), a.ok(), a.error_count()), (6, 4, 2));
        assert_eq!((a.first_us, a.last_us), (10, 20));
    }
}
