//! `loadtest accounts`: a [goose](https://book.goose.rs) login storm against the account
//! endpoints, with a WebSocket probe that measures delivery latency before and during the storm.
//!
//! Each goose user registers one account (`POST /register`, once), then loops `POST /login` →
//! `POST /token/refresh`. Goose reports every request (count, rate, percentiles, failures by
//! status); this module adds a short summary (logins/s and p99 per endpoint) and the probe:
//! `--probe-users` accounts with two devices each on their user channel, every device publishing
//! `--probe-rate` msg/s to its sibling, latency taken from the send timestamp in each frame. The
//! probe runs alone for `--probe-baseline` seconds, then through the whole goose run; its p99 in
//! both phases is printed, and `--probe-max-p99-ms` turns the storm phase into a pass/fail check.
//!
//! Every other flag goes to goose unchanged (`--host`, `--users`, `--hatch-rate`, `--run-time`,
//! `--report-file`, …; `loadtest accounts --help` lists them).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use goose::config::GooseConfiguration;
use goose::metrics::{GooseMetrics, GooseRequestMetricTimingData};
use goose::prelude::*;
use gumdrop::Options;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::hist::{new_hist, summarize, Summary};

pub const USAGE: &str = "\
usage: loadtest accounts --host http://127.0.0.1:8080 --run-time 30s [goose flags] [probe flags]

A goose login storm: each goose user registers once, then loops POST /login, POST /token/refresh.
Run the gateway with the abuse limits raised for a capacity test, e.g.
SYNCGATE_AUTH_ATTEMPTS_PER_MIN=1000000 SYNCGATE_REGISTER_PER_HOUR=1000000 (a 429 counts as a failure).

goose flags (all of goose's; the main ones):
  --host URL             the gateway's HTTP base URL (required)
  --users N              concurrent goose users [number of CPUs]
  --hatch-rate R         users started per second [1]
  --run-time T           30s, 2m, … (required: runs are bounded)
  --report-file F        goose's own report (.html, .json, .md)
  -q                     quieter goose output

probe flags (WebSocket delivery latency before and during the storm):
  --probe-users N        probe accounts, two devices each [10]; 0 disables the probe
  --probe-rate R         msg/s each probe device publishes to its sibling [2]
  --probe-baseline SECS  probe alone before the storm [5]
  --probe-max-p99-ms MS  exit 1 when the probe's p99 during the storm is above MS
  --json FILE            write the summary as JSON
";

/// The flags this module reads itself; the rest goes to goose.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOpts {
    pub users: usize,
    pub rate: f64,
    pub baseline: Duration,
    pub max_p99_ms: Option<f64>,
    pub json: Option<PathBuf>,
}

impl Default for ProbeOpts {
    fn default() -> Self {
        ProbeOpts { users: 10, rate: 2.0, baseline: Duration::from_secs(5), max_p99_ms: None, json: None }
    }
}

/// Splits `argv` (after `accounts`) into the probe's flags and goose's.
pub fn split_args(argv: &[String]) -> Result<(ProbeOpts, Vec<String>), String> {
    let mut opts = ProbeOpts::default();
    let mut rest = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--probe-") || k == "--json" => (k, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if !(key.starts_with("--probe-") || key == "--json") {
            rest.push(a.clone());
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().cloned().ok_or_else(|| format!("{key} needs a value"))?,
        };
        let num = |v: &str| v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0);
        let bad = || format!("{key}: bad value {value:?}");
        match key {
            "--probe-users" => opts.users = value.parse().map_err(|_| bad())?,
            "--probe-rate" => opts.rate = num(&value).filter(|r| *r > 0.0 && *r <= 1000.0).ok_or_else(bad)?,
            "--probe-baseline" => opts.baseline = Duration::from_secs_f64(num(&value).ok_or_else(bad)?),
            "--probe-max-p99-ms" => opts.max_p99_ms = Some(num(&value).ok_or_else(bad)?),
            "--json" => opts.json = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {key}")),
        }
    }
    Ok((opts, rest))
}

/// One endpoint's figures from goose's metrics (goose records whole milliseconds).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Endpoint {
    pub path: String,
    pub ok: usize,
    pub failed: usize,
    pub per_sec: f64,
    /// Goose's percentiles (whole ms, rounded above 100 ms).
    pub goose_p50_ms: usize,
    pub goose_p99_ms: usize,
    pub goose_max_ms: usize,
    /// loadtest's own response times in µs (every request from the first, HDR precision).
    pub latency: Summary,
    /// Response counts by HTTP status (as strings for JSON).
    pub statuses: std::collections::BTreeMap<String, usize>,
}

/// The probe's figures for one phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProbePhase {
    pub sent: u64,
    pub delivered: Summary,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub goose_users: usize,
    pub seconds: usize,
    pub endpoints: Vec<Endpoint>,
    pub probe_connections: usize,
    pub probe_baseline: ProbePhase,
    pub probe_storm: ProbePhase,
    /// Probe messages sent but never delivered (any phase), counted after a drain.
    pub probe_lost: u64,
    pub probe_errors: u64,
    pub slo_ok: bool,
}

/// Value at quantile `q` of goose's (ms → count) map.
fn quantile(t: &GooseRequestMetricTimingData, q: f64) -> usize {
    let total: usize = t.times.values().sum();
    if total == 0 {
        return 0;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as usize;
    let mut seen = 0;
    for (&ms, &n) in &t.times {
        seen += n;
        if seen >= want {
            return ms;
        }
    }
    t.maximum_time
}

fn endpoints(metrics: &GooseMetrics) -> Vec<Endpoint> {
    let seconds = metrics.duration.max(1) as f64;
    let mut out: Vec<Endpoint> = metrics
        .requests
        .values()
        .map(|r| Endpoint {
            path: NAMES.iter().position(|n| *n == r.path).map_or_else(|| r.path.clone(), |i| PATHS[i].to_string()),
            ok: r.success_count,
            failed: r.fail_count,
            per_sec: r.success_count as f64 / seconds,
            goose_p50_ms: quantile(&r.raw_data, 0.50),
            goose_p99_ms: quantile(&r.raw_data, 0.99),
            goose_max_ms: r.raw_data.maximum_time,
            latency: NAMES
                .iter()
                .position(|n| *n == r.path)
                .and_then(|i| TIMES.get().and_then(|t| t[i].lock().ok().map(|h| summarize(&h))))
                .unwrap_or_default(),
            statuses: r.status_code_counts.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A run-unique tag for account names, so repeated runs against one database never collide.
fn nonce() -> String {
    format!("{:x}{:x}", std::process::id(), unix_us() % 0xffff_ffff)
}

// ---------------------------------------------------------------- goose scenario

const PASSWORD: &str = "loadtest-password-1";

struct Session {
    email: String,
    refresh_token: String,
}

static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Precise (µs) response times per endpoint, from the first request: goose rounds its own to
/// 10 ms above 100 ms and to whole seconds above 1 s.
static TIMES: std::sync::OnceLock<[Mutex<Histogram<u64>>; 3]> = std::sync::OnceLock::new();
const PATHS: [&str; 3] = ["/register", "/login", "/token/refresh"];
/// Goose's request names for them (the transaction names).
const NAMES: [&str; 3] = ["register", "login", "refresh"];

fn record(path_index: usize, started: std::time::Instant) {
    let times = TIMES.get_or_init(|| [Mutex::new(new_hist()), Mutex::new(new_hist()), Mutex::new(new_hist())]);
    if let Ok(mut h) = times[path_index].lock() {
        let _ = h.record((started.elapsed().as_micros() as u64).max(1));
    }
}

/// POSTs `body` to `PATHS[i]` through goose (which counts it) and records the precise time.
async fn post(
    user: &mut GooseUser,
    i: usize,
    body: Value,
) -> Result<goose::goose::GooseResponse, Box<TransactionError>> {
    let started = std::time::Instant::now();
    let resp = user.post_json(PATHS[i], &body).await;
    record(i, started);
    resp
}

/// A distinct loopback source address per goose user (127.2.x.y), so per-IP limits see many
/// clients as they would behind a real load balancer. Only when the target itself is loopback.
fn source_for(index: usize) -> IpAddr {
    let i = index % (250 * 250);
    IpAddr::V4(Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn loopback_target(user: &GooseUser) -> bool {
    match user.base_url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        _ => false,
    }
}

/// Reads `refresh_token` from a 2xx JSON answer, or marks the request failed.
async fn refresh_token_of(
    user: &mut GooseUser,
    mut resp: goose::goose::GooseResponse,
) -> Result<String, Box<TransactionError>> {
    let body = match resp.response {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
        _ => None,
    };
    match body.as_ref().and_then(|b| b["refresh_token"].as_str()) {
        Some(t) => Ok(t.to_string()),
        None => {
            user.set_failure("no refresh_token in the answer", &mut resp.request, None, None)?;
            Err(Box::new(TransactionError::RequestFailed { raw_request: resp.request }))
        }
    }
}

async fn register(user: &mut GooseUser) -> TransactionResult {
    if loopback_target(user) {
        let builder = reqwest::Client::builder()
            .local_address(source_for(user.weighted_users_index))
            .timeout(Duration::from_secs(60));
        user.set_client_builder(builder).await?;
    }
    let nonce = NONCE.get_or_init(nonce);
    let email = format!("goose-{nonce}-{}@loadtest.invalid", user.weighted_users_index);
    // One device per goose user, as an app that remembers its device id (every login without
    // one would create a device and soon reach SYNCGATE_MAX_DEVICES_PER_USER).
    let device = format!("goose-{}", user.weighted_users_index);
    let resp = post(user, 0, json!({"email": email, "password": PASSWORD, "device_id": device})).await?;
    let refresh_token = refresh_token_of(user, resp).await?;
    user.set_session_data(Session { email, refresh_token });
    Ok(())
}

async fn login(user: &mut GooseUser) -> TransactionResult {
    let Some(email) = user.get_session_data::<Session>().map(|s| s.email.clone()) else {
        return Ok(()); // registration failed; goose already counted it
    };
    let device = format!("goose-{}", user.weighted_users_index);
    let resp = post(user, 1, json!({"email": email, "password": PASSWORD, "device_id": device})).await?;
    let token = refresh_token_of(user, resp).await?;
    if let Some(s) = user.get_session_data_mut::<Session>() {
        s.refresh_token = token;
    }
    Ok(())
}

async fn refresh(user: &mut GooseUser) -> TransactionResult {
    let Some(current) = user.get_session_data::<Session>().map(|s| s.refresh_token.clone()) else {
        return Ok(());
    };
    let resp = post(user, 2, json!({"refresh_token": current})).await?;
    let token = refresh_token_of(user, resp).await?;
    if let Some(s) = user.get_session_data_mut::<Session>() {
        s.refresh_token = token;
    }
    Ok(())
}

fn scenario() -> Scenario {
    scenario!("accounts")
        .register_transaction(transaction!(register).set_on_start().set_name("register"))
        .register_transaction(transaction!(login).set_name("login"))
        .register_transaction(transaction!(refresh).set_name("refresh"))
}

// ---------------------------------------------------------------- WebSocket probe

const BASELINE: u8 = 0;
const STORM: u8 = 1;
const AFTER: u8 = 2;

struct Probe {
    phase: AtomicU8,
    stop: AtomicBool,
    sent: [AtomicU64; 3],
    hist: [Mutex<Histogram<u64>>; 3],
    received: AtomicU64,
    errors: AtomicU64,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Registers `email` and logs it in on a second device: tokens are bound to their device, so
/// the probe's two connections need one each.
async fn http_register(client: &reqwest::Client, host: &str, email: &str) -> Result<(String, String), String> {
    let mut tokens = Vec::new();
    for (path, device) in [("register", "probe-a"), ("login", "probe-b")] {
        let resp = client
            .post(format!("{host}/{path}"))
            .json(&json!({"email": email, "password": PASSWORD, "device_id": device}))
            .send()
            .await
            .map_err(|e| format!("probe {path}: {e}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| format!("probe {path}: {e}"))?;
        match body["access_token"].as_str() {
            Some(t) if status.is_success() => tokens.push(t.to_string()),
            _ => return Err(format!("probe {path}: HTTP {status}: {body} (raise SYNCGATE_REGISTER_PER_HOUR?)")),
        }
    }
    let b = tokens.pop().unwrap_or_default();
    let a = tokens.pop().unwrap_or_default();
    Ok((a, b))
}

async fn open(ws_base: &str, token: &str, device: &str) -> Result<Ws, String> {
    let url = format!("{ws_base}?token={token}&device_id={device}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| format!("probe connect: {e}"))?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("\"welcome\"") => Ok(ws),
        other => Err(format!("probe: no welcome ({other:?})")),
    }
}

/// One probe device: publishes to its user channel at `rate`, records its sibling's frames.
async fn device(probe: Arc<Probe>, ws: Ws, rate: f64, offset: Duration) {
    let (mut tx, mut rx) = ws.split();
    let reader = {
        let probe = probe.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = rx.next().await {
                let Message::Text(t) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                if v["type"] == "event" && v["event"] == "probe" {
                    let (Some(sent_us), Some(phase)) = (v["data"]["t"].as_u64(), v["data"]["p"].as_u64()) else {
                        continue;
                    };
                    let phase = (phase as usize).min(2);
                    let lat = unix_us().saturating_sub(sent_us).max(1);
                    if let Ok(mut h) = probe.hist[phase].lock() {
                        let _ = h.record(lat);
                    }
                    probe.received.fetch_add(1, Ordering::Relaxed);
                } else if v["type"] == "error" {
                    probe.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !probe.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let phase = probe.phase.load(Ordering::Relaxed);
        let frame = json!({"type":"publish","channel":"user","event":"probe","data":{"t":unix_us(),"p":phase}});
        if tx.send(Message::text(frame.to_string())).await.is_err() {
            probe.errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        probe.sent[phase as usize].fetch_add(1, Ordering::Relaxed);
    }
    // Let the last frames arrive, then close.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = tx.send(Message::Close(None)).await;
    reader.abort();
}

fn phase_of(probe: &Probe, i: usize) -> ProbePhase {
    let h = probe.hist[i].lock().map(|h| h.clone()).unwrap_or_else(|_| new_hist());
    ProbePhase { sent: probe.sent[i].load(Ordering::Relaxed), delivered: summarize(&h) }
}

// ---------------------------------------------------------------- run

/// Runs the storm (and the probe). `argv` is everything after `accounts`.
pub async fn run(argv: &[String]) -> Result<Report, String> {
    let (opts, goose_args) = split_args(argv)?;
    let config = GooseConfiguration::parse_args_default(&goose_args).map_err(|e| format!("goose: {e}"))?;
    if config.host.is_empty() {
        return Err("--host is required (the gateway's HTTP base URL, e.g. http://127.0.0.1:8080)".into());
    }
    if config.run_time.is_empty() {
        return Err("--run-time is required (e.g. 30s)".into());
    }
    let host = config.host.trim_end_matches('/').to_string();
    let ws_base = match host.split_once("://") {
        Some(("http", rest)) => format!("ws://{rest}/ws"),
        Some(("https", rest)) => format!("wss://{rest}/ws"),
        _ => return Err(format!("--host must be http://… or https://…, got {host}")),
    };
    let goose_users = config.users.unwrap_or(0);

    let probe = Arc::new(Probe {
        phase: AtomicU8::new(BASELINE),
        stop: AtomicBool::new(false),
        sent: Default::default(),
        hist: [Mutex::new(new_hist()), Mutex::new(new_hist()), Mutex::new(new_hist())],
        received: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    if opts.users > 0 {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
        let tag = nonce();
        let mut conns = Vec::new();
        for u in 0..opts.users {
            let (a, b) = http_register(&client, &host, &format!("probe-{tag}-{u}@loadtest.invalid")).await?;
            conns.push(open(&ws_base, &a, "probe-a").await?);
            conns.push(open(&ws_base, &b, "probe-b").await?);
        }
        let n = conns.len();
        for (i, ws) in conns.into_iter().enumerate() {
            // Spread the devices' send times evenly over one interval.
            let offset = Duration::from_secs_f64(i as f64 / n as f64 / opts.rate);
            tasks.push(tokio::spawn(device(probe.clone(), ws, opts.rate, offset)));
        }
        tokio::time::sleep(opts.baseline).await;
    }

    probe.phase.store(STORM, Ordering::Relaxed);
    let attack = GooseAttack::initialize_with_config(config).map_err(|e| format!("goose: {e}"))?;
    let metrics = attack.register_scenario(scenario()).execute().await.map_err(|e| format!("goose: {e}"))?;
    probe.phase.store(AFTER, Ordering::Relaxed);
    probe.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }

    let sent: u64 = probe.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    let storm = phase_of(&probe, STORM as usize);
    let slo_ok = match opts.max_p99_ms {
        Some(max) => storm.delivered.count > 0 && (storm.delivered.p99_us as f64) <= max * 1000.0,
        None => true,
    };
    let report = Report {
        goose_users,
        seconds: metrics.duration,
        endpoints: endpoints(&metrics),
        probe_connections: opts.users * 2,
        probe_baseline: phase_of(&probe, BASELINE as usize),
        probe_storm: storm,
        probe_lost: sent.saturating_sub(probe.received.load(Ordering::Relaxed)),
        probe_errors: probe.errors.load(Ordering::Relaxed),
        slo_ok,
    };
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn print_summary(r: &Report, max_p99_ms: Option<f64>) {
    println!("\naccounts storm: {} s measured (after all goose users started)", r.seconds);
    for e in &r.endpoints {
        println!(
            "  {:<16} ok {:>8} ({:>8.1}/s)  failed {:>6}  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  statuses {:?}",
            e.path,
            e.ok,
            e.per_sec,
            e.failed,
            ms(e.latency.p50_us),
            ms(e.latency.p99_us),
            ms(e.latency.max_us),
            e.statuses
        );
    }
    if r.probe_connections > 0 {
        for (name, p) in [("before the storm", &r.probe_baseline), ("during the storm", &r.probe_storm)] {
            let d = &p.delivered;
            println!(
                "  websocket probe {name}: {} sent, {} delivered, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                p.sent,
                d.count,
                ms(d.p50_us),
                ms(d.p99_us),
                ms(d.max_us)
            );
        }
        println!(
            "  websocket probe: {} connections, {} lost, {} errors",
            r.probe_connections, r.probe_lost, r.probe_errors
        );
    }
    if let Some(max) = max_p99_ms {
        println!("  SLO websocket p99 during the storm <= {max} ms: {}", if r.slo_ok { "ok" } else { "BROKEN" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn probe_flags_are_taken_and_the_rest_goes_to_goose() {
        let (opts, rest) = split_args(&s(&[
            "--host",
            "http://127.0.0.1:1",
            "--probe-users=3",
            "--probe-rate",
            "4",
            "--users",
            "8",
            "--probe-max-p99-ms",
            "50",
            "--json",
            "out.json",
        ]))
        .unwrap();
        assert_eq!(rest, s(&["--host", "http://127.0.0.1:1", "--users", "8"]));
        assert_eq!(opts.users, 3);
        assert_eq!(opts.rate, 4.0);
        assert_eq!(opts.max_p99_ms, Some(50.0));
        assert_eq!(opts.json, Some(PathBuf::from("out.json")));
        assert!(GooseConfiguration::parse_args_default(&rest).is_ok());
    }

    #[test]
    fn bad_probe_values_are_refused() {
        assert!(split_args(&s(&["--probe-rate", "0"])).is_err());
        assert!(split_args(&s(&["--probe-rate", "abc"])).is_err());
        assert!(split_args(&s(&["--probe-users"])).is_err());
        assert!(split_args(&s(&["--probe-nope", "1"])).is_err());
    }

    #[test]
    fn quantiles_of_goose_timings() {
        let t = GooseRequestMetricTimingData {
            times: (1..=100).map(|ms| (ms, 1)).collect(),
            minimum_time: 1,
            maximum_time: 100,
            total_time: 5050,
            counter: 100,
        };
        assert_eq!(quantile(&t, 0.5), 50);
        assert_eq!(quantile(&t, 0.99), 99);
    }

    #[test]
    fn source_addresses_are_distinct_loopback() {
        let a = source_for(0);
        let b = source_for(1);
        let c = source_for(250);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(a.is_loopback() && c.is_loopback());
    }
}
