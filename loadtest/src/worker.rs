//! A worker process: opens its share of the plan's connections at a paced rate, then runs traffic
//! steps on the parent's command, recording delivery latency from each message's *intended* send
//! time (open-loop: a slow server shows up as latency, not as a lower send rate).
//!
//! Line protocol with the parent: worker → `READY`, `P {progress}`, `S {step}`, `R {final}`;
//! parent → `GO <rate>` (one traffic step), `END`. With an idle memory checkpoint
//! ([`Args::checkpoint_at`]) the worker stops opening there: worker → `HALF <open>`, parent
//! (after sampling the server) → `CONTINUE`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::args::{Args, Scenario};
use crate::hist::{new_hist, summarize, Recorded, Sharded};
use crate::plan::{self, ConnSpec, Role};

pub fn wall_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Progress counters, cumulative.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub open: u64,
    pub sent: u64,
    pub received: u64,
    pub interval: Recorded,
}

/// One traffic step as one worker saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepReport {
    pub sent: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub latency: Recorded,
    pub closes: BTreeMap<String, u64>,
    /// `--durable`: acks received and publish → ack latency.
    #[serde(default)]
    pub acks: u64,
    #[serde(default)]
    pub ack_latency: Recorded,
}

/// What opening connections looked like.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpenReport {
    pub attempted: u64,
    pub opened: u64,
    pub failures: BTreeMap<String, u64>,
    pub connect_latency: Recorded,
    /// Wall-clock µs of the first scheduled connect and the last completed one.
    pub first_us: u64,
    pub last_us: u64,
}

/// Phase broadcast to every connection task.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Wait,
    /// Send at `rate` per sender from `t0` until `until`; record until `drain_until`.
    Traffic {
        step: u32,
        rate: f64,
        t0: Instant,
        wall0: u64,
        until: Instant,
    },
    End,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    unique: AtomicU64,
    dups: AtomicU64,
    errors: AtomicU64,
    received: AtomicU64,
    open: AtomicU64,
    acked: AtomicU64,
}

struct Shared {
    counters: Counters,
    latency: Sharded,
    /// `--durable`: publish → ack (commit) latency.
    acks: Sharded,
    closes: Mutex<BTreeMap<String, u64>>,
}

/// Parses `"key":<digits>` after `from` in `s`.
fn field(s: &[u8], key: &[u8]) -> Option<u64> {
    let pos = s.windows(key.len()).position(|w| w == key)? + key.len();
    let mut n: u64 = 0;
    let mut any = false;
    for &b in &s[pos..] {
        if b.is_ascii_digit() {
            n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(n)
}

/// The (sender, seq, intended send µs) stamp of a loadtest event frame.
pub fn parse_stamp(text: &[u8]) -> Option<(u32, u64, u64)> {
    let data = text.windows(8).position(|w| w == b"\"data\":{")?;
    let d = &text[data..];
    Some((field(d, b"\"s\":")? as u32, field(d, b"\"q\":")?, field(d, b"\"t\":")?))
}

pub(crate) fn token(secret: &str, user: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = serde_json::json!({"sub": user, "iat": now, "exp": now + 86_400, "channels": [plan::CLAIM]});
    sign(secret, &claims)
}

/// A token bound to `device` (`did`): what registering a device key needs.
pub(crate) fn device_token(secret: &str, user: &str, device: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims =
        serde_json::json!({"sub": user, "iat": now, "exp": now + 86_400, "channels": [plan::CLAIM], "did": device});
    sign(secret, &claims)
}

fn sign(secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

pub(crate) fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("ws://")?;
    let hostport = rest.split('/').next()?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (hostport, 80),
    };
    Some((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// `IP_BIND_ADDRESS_NO_PORT`: bind only the source address and let `connect` pick the port per
/// destination. Without it, every `bind(ip:0)` scans the ephemeral range (seconds of kernel time
/// at 10k+ sockets) and ports cannot be shared between destinations.
pub(crate) fn bind_address_no_port(sock: &tokio::net::TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd and a correctly sized int option value.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// The loopback source address of connection `idx`: at most 8 192 connections per address
/// (counting every worker), starting from the worker's own. One address for a whole run of
/// 19 000 connections made each `connect` search a nearly full ephemeral port range (28 000
/// ports, with the previous run's `TIME_WAIT`s in it): a tenth of the connects took 3 s.
fn spread(source: Option<Ipv4Addr>, idx: usize) -> Option<Ipv4Addr> {
    let base = source?.octets()[3] as usize;
    Some(Ipv4Addr::new(127, 0, 0, ((base - 1 + 4 * (idx / 8192)) % 250 + 1) as u8))
}

/// Opens one connection, binding to `source` when the target is loopback, and waits for
/// `welcome` plus one reply per connect-time channel. With `keys`: key login instead of the
/// token (the challenge is answered first).
pub(crate) async fn open(
    spec: &ConnSpec,
    token: &str,
    source: Option<Ipv4Addr>,
    keys: Option<&crate::keys::DeviceKeys>,
) -> Result<Ws, String> {
    let (host, port) = host_port(&spec.url).ok_or("bad url")?;
    let ip: IpAddr = match host.as_str() {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse().map_err(|_| "only IP or localhost hosts are supported".to_string())?,
    };
    let sock = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(|e| format!("io: {}", e.kind()))?;
    if let (Some(src), IpAddr::V4(dst)) = (source, ip) {
        if dst.is_loopback() {
            bind_address_no_port(&sock);
            sock.bind(SocketAddr::new(IpAddr::V4(src), 0)).map_err(|e| format!("bind: {}", e.kind()))?;
        }
    }
    let stream = sock.connect(SocketAddr::new(ip, port)).await.map_err(|e| format!("io: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let mut url = match keys {
        Some(_) => format!("{}?auth=key&device_id={}", spec.url, spec.device),
        None => format!("{}?token={}&device_id={}", spec.url, token, spec.device),
    };
    for c in &spec.channels {
        url.push_str("&channel=");
        url.push_str(c);
    }
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                format!("http {}", r.status().as_u16())
            }
            other => format!("handshake: {other}"),
        })?;
    if let Some(keys) = keys {
        let challenge = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                return Err(format!("close {}", f.map(|f| u16::from(f.code)).unwrap_or(1005)));
            }
            other => return Err(format!("expected a challenge, got {other:?}")),
        };
        let answer = keys.answer(&spec.user, &spec.device, &challenge)?;
        ws.send(Message::text(answer)).await.map_err(|e| format!("ws: {e}"))?;
    }
    let mut expect = 1 + spec.channels.len();
    while expect > 0 {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.contains("\"type\":\"error\"") {
                    return Err("subscribe refused".into());
                }
                expect -= 1;
            }
            Some(Ok(Message::Close(f))) => {
                return Err(format!("close {}", f.map(|f| u16::from(f.code)).unwrap_or(1005)));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("ws: {e}")),
            None => return Err("eof".into()),
        }
    }
    Ok(ws)
}

/// Per-receiver sequence tracking: exact duplicate detection for in-order streams.
#[derive(Default)]
struct Seqs(HashMap<u32, u64>);

impl Seqs {
    /// Returns true for a first delivery, false for a duplicate.
    fn see(&mut self, sender: u32, seq: u64) -> bool {
        let next = self.0.entry(sender).or_insert(0);
        if seq < *next {
            false
        } else {
            *next = seq + 1;
            true
        }
    }
}

struct Local {
    lat: Vec<u64>,
    ack_lat: Vec<u64>,
    unique: u64,
    dups: u64,
    errors: u64,
    last_flush: Instant,
}

impl Local {
    /// One text frame: a stamped delivery (unique or duplicate), a durable ack (its latency
    /// from the oldest unacked publish) or an error.
    fn on_text(&mut self, t: &str, seqs: &mut Seqs, unacked: &mut std::collections::VecDeque<u64>) {
        let b = t.as_bytes();
        if let Some((sender, q, sent_us)) = parse_stamp(b) {
            if seqs.see(sender, q) {
                self.unique += 1;
                self.lat.push(wall_us().saturating_sub(sent_us));
            } else {
                self.dups += 1;
            }
        } else if b.starts_with(b"{\"type\":\"ack\"") {
            match unacked.pop_front() {
                // An ack without a seq: the channel is not durable on this gateway.
                Some(sent_us) if t.contains("\"seq\":") => self.ack_lat.push(wall_us().saturating_sub(sent_us)),
                _ => self.errors += 1,
            }
        } else if t.contains("\"type\":\"error\"") {
            // A refused durable publish is never acked.
            if t.contains("\"unavailable\"") {
                unacked.pop_front();
            }
            self.errors += 1;
        }
    }

    fn flush(&mut self, shared: &Shared, key: usize) {
        if !self.lat.is_empty() {
            shared.latency.record(key, &self.lat);
            self.lat.clear();
        }
        if !self.ack_lat.is_empty() {
            shared.acks.record(key, &self.ack_lat);
            shared.counters.acked.fetch_add(self.ack_lat.len() as u64, Ordering::Relaxed);
            self.ack_lat.clear();
        }
        let c = &shared.counters;
        c.unique.fetch_add(self.unique, Ordering::Relaxed);
        c.received.fetch_add(self.unique + self.dups, Ordering::Relaxed);
        c.dups.fetch_add(self.dups, Ordering::Relaxed);
        c.errors.fetch_add(self.errors, Ordering::Relaxed);
        self.unique = 0;
        self.dups = 0;
        self.errors = 0;
        self.last_flush = Instant::now();
    }
}

/// When a publisher sends its first message of a traffic step: (0, its intended instant, its
/// per-sender rate). `None` outside traffic and for receivers.
fn first_send(args: &Args, phase: Phase, role: &Role) -> Option<(u64, Instant, f64)> {
    match (phase, role) {
        (Phase::Traffic { rate, t0, .. }, Role::Publish { sender, senders, .. }) => {
            let r = plan::per_sender_rate(args, rate);
            Some((0, t0 + plan::send_offset(0, *sender, *senders, r), r))
        }
        _ => None,
    }
}

/// A publish carrying its sender, sequence number and intended send time (µs) in `data`, padded
/// to `--payload`; with `--durable` a `msg_id` too, unique to this run (the gateway answers a
/// `msg_id` it already stored for the device as a duplicate and delivers nothing: a second run
/// against the same gateway would otherwise measure no deliveries at all).
fn publish_text(args: &Args, channel: &str, sender: u32, seq: u64, intended: u64, pad: &str) -> String {
    let msg_id =
        if args.durable { format!(",\"msg_id\":\"{}-{sender}-{seq}\"", args.key_run_tag) } else { String::new() };
    format!(
        "{{\"type\":\"publish\",\"channel\":\"{channel}\",\"event\":\"lt\",\"data\":{{\"s\":{sender},\"q\":{seq},\"t\":{intended},\"p\":\"{pad}\"}}{msg_id}}}"
    )
}

/// Counts one ended connection under `why`.
fn count_close(shared: &Shared, why: String) {
    shared.closes.lock().unwrap_or_else(|e| e.into_inner()).entry(why).and_modify(|n| *n += 1).or_insert(1);
}

async fn connection(
    spec: ConnSpec,
    mut ws: Ws,
    args: Arc<Args>,
    shared: Arc<Shared>,
    mut phase_rx: watch::Receiver<Phase>,
) {
    let mut seqs = Seqs::default();
    let mut local = Local {
        lat: Vec::with_capacity(32),
        ack_lat: Vec::new(),
        unique: 0,
        dups: 0,
        errors: 0,
        last_flush: Instant::now(),
    };
    let mut seq: u64 = 0;
    // `--durable`: intended send times of the publishes not yet acked (acks come in order).
    let mut unacked: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let pad = "x".repeat(args.payload.saturating_sub(40));
    let mut phase = *phase_rx.borrow();
    // (k-th message of this step, its intended instant, per-sender rate)
    let mut next_send: Option<(u64, Instant, f64)> = None;
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    loop {
        let send_at = match (phase, next_send) {
            (Phase::Traffic { until, .. }, Some((_, at, _))) if at < until => tokio::time::Instant::from_std(at),
            _ => far(),
        };
        tokio::select! {
            changed = phase_rx.changed() => {
                local.flush(&shared, spec.idx);
                if changed.is_err() { break; }
                phase = *phase_rx.borrow();
                if phase == Phase::End {
                    break;
                }
                next_send = first_send(&args, phase, &spec.role);
            }
            _ = tokio::time::sleep_until(send_at) => {
                let (Some((k, at, r)), Phase::Traffic { t0, wall0, .. }, Role::Publish { channel, sender, senders }) = (next_send, phase, &spec.role) else { continue };
                let intended = wall0 + at.duration_since(t0).as_micros() as u64;
                let text = publish_text(&args, channel, *sender, seq, intended, &pad);
                if args.durable {
                    unacked.push_back(intended);
                }
                seq += 1;
                if ws.send(Message::text(text)).await.is_err() {
                    count_close(&shared, "send failed".into());
                    break;
                }
                shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                next_send = Some((k + 1, t0 + plan::send_offset(k + 1, *sender, *senders, r), r));
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    local.on_text(t.as_str(), &mut seqs, &mut unacked);
                    if local.lat.len() >= 32 || local.last_flush.elapsed() > Duration::from_millis(250) {
                        local.flush(&shared, spec.idx);
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    let code = f.map(|f| u16::from(f.code)).unwrap_or(1005);
                    count_close(&shared, format!("close {code}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    count_close(&shared, "dropped".into());
                    break;
                }
            }
        }
    }
    local.flush(&shared, spec.idx);
    shared.counters.open.fetch_sub(1, Ordering::Relaxed);
    // Wait for the end so that the connection count stays honest in reports.
    let _ = ws.close(None).await;
}

pub(crate) async fn emit(out: &Mutex<std::io::Stdout>, line: String) {
    use std::io::Write;
    let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// Entry point of `loadtest __worker`: `index`/`count` of the worker processes.
pub async fn run(args: Args, index: usize, count: usize) -> Result<(), String> {
    if args.scenario == Scenario::Churn {
        return crate::churn::worker(args, index, count).await;
    }
    let args = Arc::new(args);
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let specs: Vec<ConnSpec> = plan::build(&args).into_iter().filter(|c| c.idx % count == index).collect();
    let source = Some(Ipv4Addr::new(127, 0, 0, (index % 250 + 1) as u8));
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        latency: Sharded::new(64),
        acks: Sharded::new(64),
        closes: Mutex::new(BTreeMap::new()),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Wait);
    let progress_task = spawn_progress(shared.clone(), stdout.clone());
    let keys = match args.key_login {
        true => Some(Arc::new(crate::keys::setup(&specs, &args.jwt_secret, source, args.timeout()).await?)),
        false => None,
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // Up to the idle memory checkpoint, a pause while the parent samples the server, the rest.
    let (first, rest): (Vec<ConnSpec>, Vec<ConnSpec>) =
        specs.into_iter().partition(|c| args.checkpoint_at().is_none_or(|k| c.idx < k));
    let (mut open_report, mut conns) = open_all(&args, first, 0, source, &shared, &phase_rx, keys.clone()).await;
    if let Some(k) = args.checkpoint_at() {
        emit(&stdout, format!("HALF {}", shared.counters.open.load(Ordering::Relaxed))).await;
        let paused = Instant::now();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "CONTINUE" {
                break;
            }
        }
        let (more, tasks) = open_all(&args, rest, k, source, &shared, &phase_rx, keys).await;
        // The connect rate leaves out the pause.
        let pause_us = paused.elapsed().as_micros() as u64;
        open_report.attempted += more.attempted;
        open_report.opened = more.opened;
        open_report.failures.extend(more.failures);
        let mut hist = new_hist();
        open_report.connect_latency.merge_into(&mut hist);
        more.connect_latency.merge_into(&mut hist);
        open_report.connect_latency = Recorded::from_hist(&hist);
        open_report.first_us += pause_us;
        open_report.last_us = open_report.last_us.max(more.last_us);
        conns.extend(tasks);
    }
    emit(&stdout, format!("READY {}", serde_json::to_string(&open_report).unwrap_or_default())).await;

    let mut step = 0u32;
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line == "END" {
            break;
        }
        let Some(rate) = line.strip_prefix("GO ").and_then(|r| r.parse::<f64>().ok()) else {
            continue;
        };
        step += 1;
        let report = traffic_step(&args, &shared, &phase_tx, step, rate).await;
        emit(&stdout, format!("S {}", serde_json::to_string(&report).unwrap_or_default())).await;
    }
    let _ = phase_tx.send(Phase::End);
    progress_task.abort();
    for c in conns {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    let total = summarize(&shared.latency.total());
    emit(&stdout, format!("R {}", serde_json::to_string(&total).unwrap_or_default())).await;

    Ok(())
}

/// Emits a `P` progress line every second (open connections, sent, received, interval latency).
fn spawn_progress(shared: Arc<Shared>, stdout: Arc<Mutex<std::io::Stdout>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let c = &shared.counters;
            let p = Progress {
                open: c.open.load(Ordering::Relaxed),
                sent: c.sent.load(Ordering::Relaxed),
                received: c.received.load(Ordering::Relaxed),
                interval: Recorded::from_hist(&shared.latency.take_interval()),
            };
            emit(&stdout, format!("P {}", serde_json::to_string(&p).unwrap_or_default())).await;
        }
    })
}

/// Open phase: connection i (global index) starts at open_start + i / rate, so the total rate
/// over all workers is the requested one; connect latency counts from that scheduled time.
/// Returns the report and the tasks of the connections that opened.
async fn open_all(
    args: &Arc<Args>,
    specs: Vec<ConnSpec>,
    first_idx: usize,
    source: Option<Ipv4Addr>,
    shared: &Arc<Shared>,
    phase_rx: &watch::Receiver<Phase>,
    keys: Option<Arc<crate::keys::DeviceKeys>>,
) -> (OpenReport, Vec<tokio::task::JoinHandle<()>>) {
    let open_rate = if args.scenario == Scenario::Connect { args.rate } else { args.open_rate };
    let open_start = Instant::now() + Duration::from_millis(100);
    let open_wall = wall_us() + 100_000;
    let connect_hist = Arc::new(Mutex::new(new_hist()));
    let failures = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let last_us = Arc::new(AtomicU64::new(0));
    let mut openers = Vec::with_capacity(specs.len());
    let tokens: HashMap<String, String> =
        specs.iter().map(|s| (s.user.clone(), token(&args.jwt_secret, &s.user))).collect();
    for spec in specs {
        let slot = spec.idx.saturating_sub(first_idx) as f64;
        let at = open_start + Duration::from_secs_f64(slot / open_rate);
        let scheduled_wall = open_wall + (slot / open_rate * 1e6) as u64;
        let token = tokens.get(&spec.user).cloned().unwrap_or_default();
        let (args, shared, rx) = (args.clone(), shared.clone(), phase_rx.clone());
        let (hist, failures, last_us) = (connect_hist.clone(), failures.clone(), last_us.clone());
        let keys = keys.clone();
        openers.push(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let res =
                tokio::time::timeout(args.timeout(), open(&spec, &token, spread(source, spec.idx), keys.as_deref()))
                    .await;
            let done = wall_us();
            match res {
                Ok(Ok(ws)) => {
                    let _ = hist
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(done.saturating_sub(scheduled_wall).max(1));
                    last_us.fetch_max(done, Ordering::Relaxed);
                    shared.counters.open.fetch_add(1, Ordering::Relaxed);
                    Some(tokio::spawn(connection(spec, ws, args, shared, rx)))
                }
                Ok(Err(cause)) => {
                    *failures.lock().unwrap_or_else(|e| e.into_inner()).entry(cause).or_insert(0) += 1;
                    None
                }
                Err(_) => {
                    *failures.lock().unwrap_or_else(|e| e.into_inner()).entry("timeout".into()).or_insert(0) += 1;
                    None
                }
            }
        }));
    }
    let attempted = openers.len() as u64;
    let mut conns = Vec::new();
    for o in openers {
        if let Ok(Some(task)) = o.await {
            conns.push(task);
        }
    }
    let open_report = OpenReport {
        attempted,
        opened: shared.counters.open.load(Ordering::Relaxed),
        failures: failures.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        connect_latency: Recorded::from_hist(&connect_hist.lock().unwrap_or_else(|e| e.into_inner())),
        first_us: open_wall,
        last_us: last_us.load(Ordering::Relaxed),
    };
    (open_report, conns)
}

/// Traffic step `step` at `rate`: every connection sends for `--duration`, then `--drain` for
/// what is in flight; the report is the difference of the counters across the step.
async fn traffic_step(
    args: &Args,
    shared: &Shared,
    phase_tx: &watch::Sender<Phase>,
    step: u32,
    rate: f64,
) -> StepReport {
    let before = snapshot(shared);
    let _ = shared.latency.take_interval();
    let t0 = Instant::now() + Duration::from_millis(50);
    let wall0 = wall_us() + 50_000;
    let until = t0 + args.duration();
    let _ = phase_tx.send(Phase::Traffic { step, rate, t0, wall0, until });
    tokio::time::sleep_until(tokio::time::Instant::from_std(until + args.drain())).await;
    let _ = phase_tx.send(Phase::Wait);
    // Let every task flush its local buffers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = snapshot(shared);
    StepReport {
        sent: after.0 - before.0,
        unique: after.1 - before.1,
        duplicates: after.2 - before.2,
        errors: after.3 - before.3,
        latency: Recorded::from_hist(&step_hist(shared, &before.4)),
        acks: after.5 - before.5,
        ack_latency: Recorded::from_hist(&{
            let mut h = shared.acks.total();
            let _ = h.subtract(&before.6);
            h
        }),
        closes: shared.closes.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    }
}

type Snap = (u64, u64, u64, u64, hdrhistogram::Histogram<u64>, u64, hdrhistogram::Histogram<u64>);

fn snapshot(shared: &Shared) -> Snap {
    let c = &shared.counters;
    (
        c.sent.load(Ordering::Relaxed),
        c.unique.load(Ordering::Relaxed),
        c.dups.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        shared.latency.total(),
        c.acked.load(Ordering::Relaxed),
        shared.acks.total(),
    )
}

/// The latencies recorded since `before` (cumulative minus the earlier snapshot).
fn step_hist(shared: &Shared, before: &hdrhistogram::Histogram<u64>) -> hdrhistogram::Histogram<u64> {
    let mut now = shared.latency.total();
    let _ = now.subtract(before);
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        let frame = br#"{"type":"event","channel":"lt:bcast","event":"lt","data":{"s":12,"q":345,"t":1700000000123456,"p":"xx"},"from":{"user_id":"u","device_id":"d"},"ts":1}"#;
        assert_eq!(parse_stamp(frame), Some((12, 345, 1_700_000_000_123_456)));
        assert_eq!(parse_stamp(br#"{"type":"join"}"#), None);
        assert_eq!(parse_stamp(br#"{"data":{"s":1,"q":2}}"#), None);
    }

    #[test]
    fn duplicates_are_detected() {
        let mut s = Seqs::default();
        assert!(s.see(1, 0));
        assert!(s.see(1, 1));
        assert!(!s.see(1, 1));
        assert!(s.see(2, 0));
        assert!(s.see(1, 5));
        assert!(!s.see(1, 3));
    }

    #[test]
    fn urls() {
        assert_eq!(host_port("ws://127.0.0.1:8080/ws"), Some(("127.0.0.1".into(), 8080)));
        assert_eq!(host_port("ws://localhost/ws"), Some(("localhost".into(), 80)));
        assert_eq!(host_port("ws://[::1]:9/ws"), Some(("::1".into(), 9)));
    }
}
