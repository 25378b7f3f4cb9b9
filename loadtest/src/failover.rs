//! `loadtest failover`: pairs of users publishing on their durable `dm:<a>:<b>` channel through a
//! balancer while a shell command disrupts the cluster behind it (`scripts/cluster.sh kill 2`,
//! `scripts/cluster.sh roll`). Every client that loses its connection reconnects through the
//! balancer, subscribes again with `since` = the highest seq below which it has seen everything,
//! and re-sends its unacknowledged publishes with the same `msg_id`.
//!
//! Measured: reconnect time (connection lost → `subscribed` on the new connection), the closes'
//! timestamps and codes grouped into bursts (a drain's spread), and per channel every seq seen:
//! lost = a seq up to the channel's latest that a client never saw (event or own ack), duplicated =
//! the same seq twice on one connection (split into a repeat after `subscribed` and a replay of a
//! live event that arrived between `welcome` and `subscribed`), out of order = a seq not above the
//! previous one after `subscribed`. At the end every client unsubscribes and subscribes again
//! without `since` to learn its channel's latest seq from the server, so an event stored but never
//! delivered (nor acknowledged) counts as lost too. Exit 0 only when nothing is lost, duplicated, out of order or
//! left unconnected.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

pub const USAGE: &str = "\
usage: loadtest failover --disrupt CMD [flags]

Pairs of users publish on durable dm channels through --url (a balancer) while CMD runs
(sh -c, from the current directory), e.g. \"scripts/cluster.sh kill 2\" or \"scripts/cluster.sh roll\".

  --url URL          the balancer [ws://127.0.0.1:18080/ws]
  --jwt-secret S     HS256 secret [$SYNCGATE_JWT_SECRET]
  --pairs N          user pairs, two clients each [1500]
  --rate R           durable publishes per second over all clients [300]
  --open-rate R      connections opened per second at the start [1000]
  --warmup T         traffic before CMD starts [3s]
  --after T          traffic after CMD has returned [5s]
  --drain T          longest wait, once publishing stops, for acks, reconnects and events [15s]
  --burst-gap T      closes further apart than this start a new burst [1s]
  --timeout T        one connect attempt's timeout [10s]
  --json FILE        write the report as JSON
  --quiet            no progress lines
";

/// The command line of `loadtest failover`.
#[derive(Debug, Clone, Serialize)]
pub struct Opts {
    pub url: String,
    #[serde(skip)]
    pub secret: String,
    pub pairs: usize,
    pub rate: f64,
    pub open_rate: f64,
    pub warmup_s: f64,
    pub after_s: f64,
    pub drain_s: f64,
    pub burst_gap_s: f64,
    pub timeout_s: f64,
    pub disrupt: String,
    pub json: Option<String>,
    pub quiet: bool,
}

fn secs(flag: &str, v: &str) -> Result<f64, String> {
    let (digits, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    match digits.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n * scale),
        _ => Err(format!("{flag}: {v:?} is not a duration")),
    }
}

fn positive(flag: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("{flag}: {v:?} is not a positive number")),
    }
}

/// Parses the flags after `failover`.
pub fn parse(argv: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        url: "ws://127.0.0.1:18080/ws".into(),
        secret: std::env::var("SYNCGATE_JWT_SECRET").unwrap_or_default(),
        pairs: 1500,
        rate: 300.0,
        open_rate: 1000.0,
        warmup_s: 3.0,
        after_s: 5.0,
        drain_s: 15.0,
        burst_gap_s: 1.0,
        timeout_s: 10.0,
        disrupt: String::new(),
        json: None,
        quiet: false,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().map(String::as_str).ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => o.url = val()?.to_string(),
            "--jwt-secret" => o.secret = val()?.to_string(),
            "--pairs" => {
                o.pairs = val()?.parse().map_err(|_| "--pairs: not a number".to_string())?;
            }
            "--rate" => o.rate = positive(flag, val()?)?,
            "--open-rate" => o.open_rate = positive(flag, val()?)?,
            "--warmup" => o.warmup_s = secs(flag, val()?)?,
            "--after" => o.after_s = secs(flag, val()?)?,
            "--drain" => o.drain_s = secs(flag, val()?)?,
            "--burst-gap" => o.burst_gap_s = secs(flag, val()?)?,
            "--timeout" => o.timeout_s = secs(flag, val()?)?,
            "--disrupt" => o.disrupt = val()?.to_string(),
            "--json" => o.json = Some(val()?.to_string()),
            "--quiet" => o.quiet = true,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if !o.url.starts_with("ws://") {
        return Err(format!("--url {:?}: only ws:// URLs are supported", o.url));
    }
    if o.pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    if o.secret.is_empty() {
        return Err("--jwt-secret (or SYNCGATE_JWT_SECRET) is required to mint tokens".into());
    }
    if o.disrupt.is_empty() {
        return Err("--disrupt CMD is required".into());
    }
    Ok(o)
}

/// Publishing on, or stopped (acks and reconnects still awaited), or the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Traffic,
    Quiet,
    /// Every connected client asks for its channel's latest seq (unsubscribe, subscribe without
    /// `since`: nothing replayed), so an event stored but never delivered counts as lost.
    Verify,
    End,
}

/// One client's record, shared with the driver.
#[derive(Default)]
struct State {
    /// Every seq this client saw on its channel: events and the acks of its own publishes.
    seen: BTreeSet<u64>,
    /// Highest seq below which (inclusive) every seq was seen: the `since` of a resubscribe.
    contiguous: u64,
    connected: bool,
    /// Publishes sent and not yet acknowledged: msg_id → request id.
    pending: BTreeMap<String, u64>,
    published: u64,
    acked: u64,
    ack_duplicates: u64,
    disconnects: u64,
    failed_attempts: u64,
    /// Connection lost → `subscribed` again, ms.
    reconnect_ms: Vec<f64>,
    /// (ms since the run's start, close code or `dropped`).
    closes: Vec<(f64, String)>,
    dup_after_subscribed: u64,
    dup_pre_subscribe: u64,
    out_of_order: u64,
    unrecovered: u64,
    /// Frames other than welcome, subscribed, event and ack, by type.
    other_frames: BTreeMap<String, u64>,
    /// Same msg_id stored at two different seqs.
    msg_id_twice: u64,
    msg_seq: HashMap<String, u64>,
    errors: BTreeMap<String, u64>,
    /// The channel's latest seq from the verification `subscribed`.
    latest: Option<u64>,
}

impl State {
    fn saw(&mut self, seq: u64) {
        self.seen.insert(seq);
        while self.seen.contains(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
    }
    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_insert(0) += 1;
    }
}

struct Client {
    user: String,
    channel: String,
    device: String,
    state: Mutex<State>,
}

fn lock(c: &Client) -> std::sync::MutexGuard<'_, State> {
    c.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The report of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub opts: Opts,
    pub clients: usize,
    pub channels: usize,
    pub disrupt_started_ms: f64,
    pub disrupt_took_ms: f64,
    pub disrupt_ok: bool,
    pub published: u64,
    pub acked: u64,
    pub ack_duplicates: u64,
    pub events_expected: u64,
    pub clients_disconnected: usize,
    pub disconnects: u64,
    pub reconnects: usize,
    pub failed_attempts: u64,
    pub not_connected_at_end: usize,
    pub reconnect_ms: Percentiles,
    pub lost: u64,
    pub duplicated: u64,
    pub dup_after_subscribed: u64,
    pub dup_pre_subscribe_replayed: u64,
    pub out_of_order: u64,
    pub msg_id_twice: u64,
    pub unrecovered: u64,
    pub unacked_at_end: u64,
    /// Clients that could not ask for their channel's latest seq at the end.
    pub not_verified: usize,
    /// Up to 10 publishes never acknowledged: `msg_id (disconnects of its client)`.
    pub unacked_examples: Vec<String>,
    /// Up to 10 lost events: `channel seq N missed by USER (disconnects of its client)`.
    pub lost_examples: Vec<String>,
    /// Frames other than welcome/subscribed/event/ack seen by clients that never lost their
    /// connection, and by those that did.
    pub other_frames_undisturbed: BTreeMap<String, u64>,
    pub other_frames_disturbed: BTreeMap<String, u64>,
    pub close_codes: BTreeMap<String, u64>,
    pub close_bursts: Vec<Burst>,
    pub errors: BTreeMap<String, u64>,
    pub ok: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Percentiles { count: v.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: v[v.len() - 1] }
}

/// Closes no further apart than `--burst-gap`: one drain (or one crash).
#[derive(Debug, Serialize)]
pub struct Burst {
    pub closes: usize,
    pub first_ms: f64,
    pub spread_ms: f64,
    /// Most closes within any 100 ms window of the burst.
    pub max_per_100ms: usize,
    pub codes: BTreeMap<String, u64>,
}

fn bursts(mut closes: Vec<(f64, String)>, gap_ms: f64) -> Vec<Burst> {
    closes.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<Vec<(f64, String)>> = Vec::new();
    for c in closes {
        match out.last_mut() {
            Some(g) if g.last().is_some_and(|l| c.0 - l.0 <= gap_ms) => g.push(c),
            _ => out.push(vec![c]),
        }
    }
    out.into_iter()
        .map(|g| {
            let first = g[0].0;
            let last = g[g.len() - 1].0;
            let mut max = 0;
            let mut j = 0;
            for i in 0..g.len() {
                while g[i].0 - g[j].0 > 100.0 {
                    j += 1;
                }
                max = max.max(i - j + 1);
            }
            let mut codes = BTreeMap::new();
            for (_, code) in &g {
                *codes.entry(code.clone()).or_insert(0) += 1;
            }
            Burst { closes: g.len(), first_ms: first, spread_ms: last - first, max_per_100ms: max, codes }
        })
        .collect()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connect attempt: the upgrade, `welcome`, then `subscribe` with `since`.
async fn connect(o: &Opts, c: &Client, token: &str) -> Result<Ws, String> {
    let url = format!("{}?token={token}&device_id={}", o.url, c.device);
    let timeout = Duration::from_secs_f64(o.timeout_s);
    let (ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => format!("http {}", r.status().as_u16()),
            _ => "connect failed".to_string(),
        })?;
    Ok(ws)
}

fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

fn publish_frame(channel: &str, msg_id: &str, id: u64) -> String {
    format!(
        "{{\"type\":\"publish\",\"channel\":\"{channel}\",\"event\":\"m\",\"data\":{{\"n\":{id}}},\"msg_id\":\"{msg_id}\",\"id\":{id}}}"
    )
}

/// One client for the whole run: connects, reconnects after every loss, publishes while the phase
/// is `Traffic` (one publish every `interval`, from a random phase).
async fn client(o: Arc<Opts>, c: Arc<Client>, t0: Instant, interval: Duration, mut phase_rx: watch::Receiver<Phase>) {
    let token = crate::worker::token(&o.secret, &c.user);
    // When the connection was lost (None on the first connect).
    let mut lost_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    let mut next_id: u64 = 0;
    let mut next_pub = tokio::time::Instant::now() + interval.mul_f64(jitter(&c.device));
    'outer: loop {
        if *phase_rx.borrow() == Phase::End {
            break;
        }
        let mut ws = match connect(&o, &c, &token).await {
            Ok(ws) => ws,
            Err(e) => {
                {
                    let mut st = lock(&c);
                    st.failed_attempts += 1;
                    st.error(e);
                }
                tokio::time::sleep(backoff.mul_f64(0.5 + jitter(&format!("{}{next_id}", c.device)))).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let since = lock(&c).contiguous;
        let sub = format!("{{\"type\":\"subscribe\",\"channel\":\"{}\",\"since\":{since}}}", c.channel);
        if ws.send(Message::text(sub)).await.is_err() {
            lock(&c).error("send failed".into());
            continue;
        }
        let mut subscribed = false;
        // Seqs delivered on this connection before and after `subscribed`.
        let mut before: HashSet<u64> = HashSet::new();
        let mut after: HashSet<u64> = HashSet::new();
        let mut last_after: u64 = since;
        let mut retry: Vec<u64> = Vec::new();
        // The verification's unsubscribe and subscribe were sent on this connection.
        let mut verifying = false;
        let close: String = loop {
            let phase = *phase_rx.borrow();
            let send_at = if subscribed && phase == Phase::Traffic {
                next_pub
            } else if subscribed && !retry.is_empty() {
                tokio::time::Instant::now() + Duration::from_millis(200)
            } else {
                tokio::time::Instant::now() + Duration::from_secs(86_400)
            };
            tokio::select! {
                changed = phase_rx.changed() => {
                    let now = *phase_rx.borrow();
                    if changed.is_err() || now == Phase::End {
                        let _ = ws.close(None).await;
                        break 'outer;
                    }
                    if now == Phase::Verify && subscribed && !verifying {
                        verifying = true;
                        let un = format!("{{\"type\":\"unsubscribe\",\"channel\":\"{}\"}}", c.channel);
                        let sub = format!("{{\"type\":\"subscribe\",\"channel\":\"{}\"}}", c.channel);
                        if ws.send(Message::text(un)).await.is_err() || ws.send(Message::text(sub)).await.is_err() {
                            break "send failed".into();
                        }
                    }
                }
                _ = tokio::time::sleep_until(send_at) => {
                    // Publishes answered `unavailable`: again, same msg_id.
                    let again: Vec<(String, u64)> = {
                        let st = lock(&c);
                        retry.drain(..).filter_map(|id| st.pending.iter().find(|(_, i)| **i == id).map(|(m, i)| (m.clone(), *i))).collect()
                    };
                    for (m, id) in again {
                        if ws.send(Message::text(publish_frame(&c.channel, &m, id))).await.is_err() {
                            break;
                        }
                    }
                    if phase != Phase::Traffic {
                        continue;
                    }
                    next_pub += interval;
                    next_id += 1;
                    let msg_id = format!("{}-{next_id}", c.device);
                    lock(&c).pending.insert(msg_id.clone(), next_id);
                    lock(&c).published += 1;
                    if ws.send(Message::text(publish_frame(&c.channel, &msg_id, next_id))).await.is_err() {
                        break "send failed".into();
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                            lock(&c).error("unparsable frame".into());
                            continue;
                        };
                        let kind = v["type"].as_str().unwrap_or("");
                        // Publishes to send again once `subscribed` arrived (sent below, unlocked).
                        let resend: Vec<(String, u64)> = {
                        let mut st = lock(&c);
                        match kind {
                            "welcome" => Vec::new(),
                            "subscribed" if verifying => {
                                st.latest = v["seq"].as_u64();
                                Vec::new()
                            }
                            "unsubscribed" | "join" | "leave" if verifying => Vec::new(),
                            "subscribed" => {
                                subscribed = true;
                                st.connected = true;
                                if v["recovered"] == Value::Bool(false) {
                                    st.unrecovered += 1;
                                }
                                if let Some(at) = lost_at.take() {
                                    st.reconnect_ms.push(at.elapsed().as_secs_f64() * 1000.0);
                                }
                                // Re-send what was never acknowledged, with the same msg_id.
                                st.pending.iter().map(|(m, id)| (m.clone(), *id)).collect()
                            }
                            "event" if v["channel"] == c.channel.as_str() => {
                                let Some(seq) = v["seq"].as_u64() else {
                                    st.error("event without seq".into());
                                    continue;
                                };
                                if subscribed {
                                    if after.contains(&seq) || seq <= since {
                                        st.dup_after_subscribed += 1;
                                    } else if before.contains(&seq) {
                                        st.dup_pre_subscribe += 1;
                                    }
                                    if seq <= last_after {
                                        st.out_of_order += 1;
                                    }
                                    last_after = last_after.max(seq);
                                    after.insert(seq);
                                } else if !before.insert(seq) {
                                    st.dup_pre_subscribe += 1;
                                }
                                if let Some(m) = v["msg_id"].as_str() {
                                    if let Some(prev) = st.msg_seq.insert(m.to_string(), seq) {
                                        if prev != seq {
                                            st.msg_id_twice += 1;
                                        }
                                    }
                                }
                                st.saw(seq);
                                Vec::new()
                            }
                            "ack" if v["seq"].is_u64() => {
                                let seq = v["seq"].as_u64().unwrap_or(0);
                                let m = v["msg_id"].as_str().unwrap_or("").to_string();
                                if st.pending.remove(&m).is_some() {
                                    st.acked += 1;
                                }
                                if v["duplicate"] == Value::Bool(true) {
                                    st.ack_duplicates += 1;
                                }
                                if let Some(prev) = st.msg_seq.insert(m, seq) {
                                    if prev != seq {
                                        st.msg_id_twice += 1;
                                    }
                                }
                                st.saw(seq);
                                Vec::new()
                            }
                            "error" => {
                                let code = v["code"].as_str().unwrap_or("?").to_string();
                                if let Some(id) = v["id"].as_u64() {
                                    retry.push(id);
                                }
                                st.error(format!("error {code}"));
                                Vec::new()
                            }
                            other => {
                                *st.other_frames.entry(other.to_string()).or_insert(0) += 1;
                                Vec::new()
                            }
                        }
                        };
                        for (m, id) in resend {
                            if ws.send(Message::text(publish_frame(&c.channel, &m, id))).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        break f.map(|f| u16::from(f.code).to_string()).unwrap_or_else(|| "1005".into());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break "dropped".into(),
                }
            }
        };
        let now = Instant::now();
        lost_at = Some(now);
        let mut st = lock(&c);
        st.connected = false;
        st.disconnects += 1;
        st.closes.push((now.duration_since(t0).as_secs_f64() * 1000.0, close));
    }
    lock(&c).connected = false;
}

/// A stable number in [0, 1) from `s` (spreads the clients' publish phases and retry delays).
fn jitter(s: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs the scenario.
pub async fn run(o: Opts) -> Result<Report, String> {
    let o = Arc::new(o);
    let tag = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros()
    );
    let mut clients = Vec::with_capacity(o.pairs * 2);
    for i in 0..o.pairs {
        let a = format!("fa{tag}x{i}");
        let b = format!("fb{tag}x{i}");
        let channel = format!("dm:{a}:{b}");
        for user in [a, b] {
            clients.push(Arc::new(Client {
                device: format!("d{user}"),
                user,
                channel: channel.clone(),
                state: Mutex::new(State::default()),
            }));
        }
    }
    let n = clients.len();
    // Each client publishes every `interval`: `--rate` over all of them.
    let interval = Duration::from_secs_f64(n as f64 / o.rate);
    let (phase_tx, phase_rx) = watch::channel(Phase::Traffic);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let gap = Duration::from_secs_f64(1.0 / o.open_rate);
    for c in &clients {
        tasks.push(tokio::spawn(client(o.clone(), c.clone(), t0, interval, phase_rx.clone())));
        tokio::time::sleep(gap).await;
    }
    let connected = |cs: &[Arc<Client>]| cs.iter().filter(|c| lock(c).connected).count();
    let open_deadline = Instant::now() + Duration::from_secs_f64(o.timeout_s * 3.0);
    while connected(&clients) < n && Instant::now() < open_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !o.quiet {
        eprintln!("failover: {}/{n} connected after {:.1} s", connected(&clients), t0.elapsed().as_secs_f64());
    }
    if connected(&clients) < n {
        let _ = phase_tx.send(Phase::End);
        return Err(format!("only {}/{n} clients connected", connected(&clients)));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup_s)).await;

    let disrupt_started_ms = ms_since(t0);
    if !o.quiet {
        eprintln!("failover: running {:?} at {:.0} ms", o.disrupt, disrupt_started_ms);
    }
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&o.disrupt)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("--disrupt: {e}"))?;
    let disrupt_took_ms = ms_since(t0) - disrupt_started_ms;
    if !o.quiet || !out.status.success() {
        eprint!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("failover: command ended ({}) after {:.0} ms", out.status, disrupt_took_ms);
    }
    tokio::time::sleep(Duration::from_secs_f64(o.after_s)).await;
    let _ = phase_tx.send(Phase::Quiet);

    // Wait for every client connected, every publish acked and every channel complete.
    let settled = |cs: &[Arc<Client>]| {
        cs.chunks(2).all(|pair| {
            let s: Vec<_> = pair.iter().map(|c| lock(c)).collect();
            let top = s.iter().filter_map(|st| st.seen.last().copied()).max().unwrap_or(0);
            s.iter().all(|st| st.connected && st.pending.is_empty() && st.contiguous == top)
        })
    };
    let drain_deadline = Instant::now() + Duration::from_secs_f64(o.drain_s);
    while !settled(&clients) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = phase_tx.send(Phase::Verify);
    let verify_deadline = Instant::now() + Duration::from_secs(10);
    while clients.iter().any(|c| lock(c).latest.is_none()) && Instant::now() < verify_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = phase_tx.send(Phase::End);
    for t in tasks {
        let _ = t.await;
    }

    let mut r = Report {
        opts: (*o).clone(),
        clients: n,
        channels: o.pairs,
        disrupt_started_ms,
        disrupt_took_ms,
        disrupt_ok: out.status.success(),
        published: 0,
        acked: 0,
        ack_duplicates: 0,
        events_expected: 0,
        clients_disconnected: 0,
        disconnects: 0,
        reconnects: 0,
        failed_attempts: 0,
        not_connected_at_end: 0,
        reconnect_ms: Percentiles::default(),
        lost: 0,
        duplicated: 0,
        dup_after_subscribed: 0,
        dup_pre_subscribe_replayed: 0,
        out_of_order: 0,
        msg_id_twice: 0,
        unrecovered: 0,
        unacked_at_end: 0,
        not_verified: 0,
        unacked_examples: Vec::new(),
        lost_examples: Vec::new(),
        other_frames_undisturbed: BTreeMap::new(),
        other_frames_disturbed: BTreeMap::new(),
        close_codes: BTreeMap::new(),
        close_bursts: Vec::new(),
        errors: BTreeMap::new(),
        ok: false,
    };
    let mut reconnect = Vec::new();
    let mut closes = Vec::new();
    let mut not_connected = 0;
    for pair in clients.chunks(2) {
        let s: Vec<_> = pair.iter().map(|c| lock(c)).collect();
        // The channel's latest: what the server says, or more if a client saw more.
        let top = s.iter().filter_map(|st| st.seen.last().copied().max(st.latest)).max().unwrap_or(0);
        r.events_expected += top;
        r.not_verified += s.iter().filter(|st| st.latest.is_none()).count();
        for (st, c) in s.iter().zip(pair) {
            for q in (1..=top).filter(|q| !st.seen.contains(q)) {
                r.lost += 1;
                if r.lost_examples.len() < 10 {
                    r.lost_examples
                        .push(format!("{} seq {q} missed by {} ({} disconnects)", c.channel, c.user, st.disconnects));
                }
            }
            r.published += st.published;
            r.acked += st.acked;
            r.ack_duplicates += st.ack_duplicates;
            r.disconnects += st.disconnects;
            r.failed_attempts += st.failed_attempts;
            r.dup_after_subscribed += st.dup_after_subscribed;
            r.dup_pre_subscribe_replayed += st.dup_pre_subscribe;
            r.out_of_order += st.out_of_order;
            r.msg_id_twice += st.msg_id_twice;
            r.unrecovered += st.unrecovered;
            r.unacked_at_end += st.pending.len() as u64;
            for m in st.pending.keys() {
                if r.unacked_examples.len() < 10 {
                    r.unacked_examples.push(format!("{m} ({} disconnects)", st.disconnects));
                }
            }
            reconnect.extend(st.reconnect_ms.iter().copied());
            closes.extend(st.closes.iter().cloned());
            // The final disconnect at the end of the run is ours, not counted: `closes` only holds
            // losses (the run ends with `break 'outer` before recording).
            if st.disconnects > 0 {
                r.clients_disconnected += 1;
            }
            let frames =
                if st.disconnects > 0 { &mut r.other_frames_disturbed } else { &mut r.other_frames_undisturbed };
            for (k, v) in &st.other_frames {
                *frames.entry(k.clone()).or_insert(0) += v;
            }
            for (k, v) in &st.errors {
                *r.errors.entry(k.clone()).or_insert(0) += v;
            }
        }
        not_connected += s.iter().filter(|st| st.reconnect_ms.len() < st.disconnects as usize).count();
    }
    r.reconnects = reconnect.len();
    r.not_connected_at_end = not_connected;
    r.reconnect_ms = percentiles(reconnect);
    for (_, code) in &closes {
        *r.close_codes.entry(code.clone()).or_insert(0) += 1;
    }
    r.close_bursts = bursts(closes, o.burst_gap_s * 1000.0);
    r.duplicated = r.dup_after_subscribed + r.dup_pre_subscribe_replayed + r.msg_id_twice;
    r.ok = r.disrupt_ok
        && r.lost == 0
        && r.duplicated == 0
        && r.out_of_order == 0
        && r.not_connected_at_end == 0
        && r.unacked_at_end == 0
        && r.not_verified == 0
        && r.unrecovered == 0;
    Ok(r)
}

/// The human summary.
pub fn print_summary(r: &Report) {
    println!(
        "failover: {} clients on {} durable dm channels through {}; {:?} ({} in {:.0} ms)",
        r.clients,
        r.channels,
        r.opts.url,
        r.opts.disrupt,
        if r.disrupt_ok { "ok" } else { "FAILED" },
        r.disrupt_took_ms
    );
    println!(
        "  published {} acked {} (duplicate acks {}), unacked at end {}; events per channel summed {} (clients not verified {})",
        r.published, r.acked, r.ack_duplicates, r.unacked_at_end, r.events_expected, r.not_verified
    );
    println!(
        "  disconnected clients {} (disconnects {}), reconnected {}, failed attempts {}, not connected at end {}",
        r.clients_disconnected, r.disconnects, r.reconnects, r.failed_attempts, r.not_connected_at_end
    );
    let p = &r.reconnect_ms;
    println!(
        "  reconnect ms (lost -> subscribed): n {} p50 {:.0} p90 {:.0} p99 {:.0} max {:.0}",
        p.count, p.p50, p.p90, p.p99, p.max
    );
    println!(
        "  lost {} duplicated {} (after subscribed {}, pre-subscribe live replayed {}, msg_id twice {}), out of order {}, unrecovered {}",
        r.lost,
        r.duplicated,
        r.dup_after_subscribed,
        r.dup_pre_subscribe_replayed,
        r.msg_id_twice,
        r.out_of_order,
        r.unrecovered
    );
    println!("  close codes {:?}", r.close_codes);
    for b in &r.close_bursts {
        println!(
            "  close burst at {:.0} ms: {} closes over {:.0} ms, at most {} per 100 ms, {:?}",
            b.first_ms, b.closes, b.spread_ms, b.max_per_100ms, b.codes
        );
    }
    println!(
        "  other frames: undisturbed clients {:?}, disturbed {:?}",
        r.other_frames_undisturbed, r.other_frames_disturbed
    );
    if !r.lost_examples.is_empty() {
        println!("  lost: {:?}", r.lost_examples);
    }
    if !r.unacked_examples.is_empty() {
        println!("  never acknowledged: {:?}", r.unacked_examples);
    }
    if !r.errors.is_empty() {
        println!("  errors {:?}", r.errors);
    }
    println!("  verdict: {}", if r.ok { "ok" } else { "FAILED" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_split_on_gaps_and_count_windows() {
        let closes =
            [0.0, 50.0, 90.0, 400.0, 2000.0, 2010.0].iter().map(|t| (*t, "1001".to_string())).collect::<Vec<_>>();
        let b = bursts(closes, 1000.0);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].closes, b[0].spread_ms, b[0].max_per_100ms), (4, 400.0, 3));
        assert_eq!((b[1].closes, b[1].first_ms, b[1].spread_ms), (2, 2000.0, 10.0));
    }

    #[test]
    fn parses_flags() {
        let a = |s: &str| parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>());
        let o = a("--jwt-secret s --disrupt true --pairs 10 --warmup 500ms").unwrap();
        assert_eq!((o.pairs, o.warmup_s), (10, 0.5));
        assert!(a("--jwt-secret s").is_err());
        assert!(a("--jwt-secret s --disrupt true --pairs 0").is_err());
        assert!(a("--jwt-secret s --disrupt true --url http://x").is_err());
    }

    #[test]
    fn contiguous_follows_gaps() {
        let mut s = State::default();
        for q in [1, 2, 4] {
            s.saw(q);
        }
        assert_eq!(s.contiguous, 2);
        s.saw(3);
        assert_eq!(s.contiguous, 4);
    }
}
