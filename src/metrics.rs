//! The one registry of metric series ([`Metrics`]) and its Prometheus text for `GET /metrics`.
//!
//! Every series is declared once, in [`Metrics::series`] and the group listings below it: its
//! Prometheus name, help text, type (from what holds it: [`Counter`], [`Gauge`], [`Family`],
//! [`Histogram`], or a figure computed at scrape time) and label (from the label enum of a
//! [`Family`]). `/metrics` is the rendering of that listing, in its order.
//!
//! One `Metrics` per process, shared as an `Arc`: the session, the registry's connection handles,
//! the Redis bus and the durable service update it; they hold no counters of their own.
//!
//! Updates are one relaxed atomic add on a cache-line-padded slot picked by the calling thread:
//! no lock, no allocation, and threads do not contend on one cache line. Scrapes sum the slots.
//! Labels are enums ([`FrameIn`], [`FrameOut`], [`ConnectResult`], [`CloseCode`],
//! [`AuthFailure`]): a call site names a label value, never a position.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub(crate) const SLOTS: usize = 16;

#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A counter sharded by thread.
pub struct Counter([Padded; SLOTS]);

impl Default for Counter {
    fn default() -> Self {
        Counter(std::array::from_fn(|_| Padded::default()))
    }
}

pub(crate) fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|s| *s)
}

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0[slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }
}

/// A value that goes up and down. One plain atomic: it moves once per connection or per queued
/// durable publish, not per frame, and must be exact at any moment (no sharding).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }

    #[inline]
    pub fn dec(&self) {
        self.sub(1)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket histogram (cumulative buckets rendered at scrape time).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<Counter>,
    sum_micros: Counter,
    count: Counter,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum_micros: Counter::default(),
            count: Counter::default(),
        }
    }

    /// Records `v` (in the unit of the bounds; the sum is kept in millionths of it).
    #[inline]
    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.buckets[i].inc();
        self.sum_micros.add((v * 1e6) as u64);
        self.count.inc();
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.buckets[i].get();
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.buckets[self.bounds.len()].get();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.get() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count.get());
    }
}

/// The values of one label: an enum whose variants are its values, in exposition order.
pub trait Label: Copy + 'static {
    /// The label's name (`type`, `result`, …).
    const NAME: &'static str;
    /// Every value, in exposition order (`ALL[v.index()] == v`).
    const ALL: &'static [Self];
    /// The value as exposed.
    fn value(self) -> &'static str;
    fn index(self) -> usize;
}

/// Declares a label enum: each variant with the value it is exposed as.
macro_rules! label {
    ($(#[$doc:meta])* $name:ident, $label:literal { $($(#[$vdoc:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// How many values the label has.
            pub const COUNT: usize = [$($value),*].len();
        }

        impl Label for $name {
            const NAME: &'static str = $label;
            const ALL: &'static [Self] = &[$($name::$variant),*];
            fn value(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)*
                }
            }
            #[inline]
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label! {
    /// Connect outcomes (`syncgate_connects_total{result}`).
    ConnectResult, "result" {
        Ok = "ok",
        Unauthorized = "unauthorized",
        RateLimited = "rate_limited",
        OverCap = "over_cap",
        Origin = "origin",
        Shed = "shed",
        BadRequest = "bad_request",
    }
}

label! {
    /// Close codes counted (`syncgate_disconnects_total{code}`); see [`CloseCode::from_code`].
    CloseCode, "code" {
        Normal = "1000",
        GoingAway = "1001",
        Protocol = "1002",
        /// No close frame: the peer vanished.
        Abnormal = "1006",
        InvalidPayload = "1007",
        Policy = "1008",
        TooLarge = "1009",
        Internal = "1011",
        TryAgainLater = "1013",
        Unauthorized = "4001",
        Forbidden = "4003",
        HeartbeatTimeout = "4008",
        TooManyConnections = "4009",
        /// Any code not listed above.
        Other = "other",
    }
}

impl CloseCode {
    /// The label of a WebSocket close code; codes not listed are [`CloseCode::Other`].
    pub fn from_code(code: u16) -> CloseCode {
        match code {
            1000 => CloseCode::Normal,
            1001 => CloseCode::GoingAway,
            1002 => CloseCode::Protocol,
            1006 => CloseCode::Abnormal,
            1007 => CloseCode::InvalidPayload,
            1008 => CloseCode::Policy,
            1009 => CloseCode::TooLarge,
            1011 => CloseCode::Internal,
            1013 => CloseCode::TryAgainLater,
            4001 => CloseCode::Unauthorized,
            4003 => CloseCode::Forbidden,
            4008 => CloseCode::HeartbeatTimeout,
            4009 => CloseCode::TooManyConnections,
            _ => CloseCode::Other,
        }
    }
}

label! {
    /// Inbound frame kinds (`syncgate_frames_in_total{type}`).
    FrameIn, "type" {
        Auth = "auth",
        Subscribe = "subscribe",
        Unsubscribe = "unsubscribe",
        Publish = "publish",
        Typing = "typing",
        Presence = "presence",
        Ping = "ping",
        Binary = "binary",
        /// A text frame that did not decode.
        Invalid = "invalid",
        /// Close, ping and pong frames.
        Control = "control",
        Ack = "ack",
    }
}

label! {
    /// Outbound frame kinds (`syncgate_frames_out_total{type}`).
    FrameOut, "type" {
        Text = "text",
        Binary = "binary",
        Ping = "ping",
        Other = "other",
    }
}

label! {
    /// Authentication failure reasons (`syncgate_auth_failures_total{reason}`).
    AuthFailure, "reason" {
        Expired = "expired",
        Invalid = "invalid",
        /// No auth frame within `SYNCGATE_AUTH_TIMEOUT_MS`.
        Timeout = "timeout",
        /// The device was revoked, is another user's, or the token generation is old.
        Device = "device",
        /// Key login refused: a malformed answer, a bad signature, an unknown device or key.
        Key = "key",
    }
}

/// Counters with one label: one [`Counter`] per label value (`N` is `L::COUNT`).
pub struct Family<L: Label, const N: usize> {
    counters: [Counter; N],
    label: std::marker::PhantomData<L>,
}

impl<L: Label, const N: usize> Default for Family<L, N> {
    fn default() -> Self {
        const { assert!(N == L::ALL.len(), "a Family holds one counter per label value") };
        Family { counters: std::array::from_fn(|_| Counter::default()), label: std::marker::PhantomData }
    }
}

impl<L: Label, const N: usize> Family<L, N> {
    #[inline]
    pub fn inc(&self, value: L) {
        self.counters[value.index()].inc()
    }

    pub fn get(&self, value: L) -> u64 {
        self.counters[value.index()].get()
    }
}

/// A [`Family`] seen by the renderer, whatever its label.
trait Rows {
    fn label(&self) -> &'static str;
    fn rows(&self) -> Vec<(&'static str, u64)>;
}

impl<L: Label, const N: usize> Rows for Family<L, N> {
    fn label(&self) -> &'static str {
        L::NAME
    }

    fn rows(&self) -> Vec<(&'static str, u64)> {
        L::ALL.iter().map(|v| (v.value(), self.get(*v))).collect()
    }
}

/// Seconds: 10 µs … 1 s.
static LATENCY_BOUNDS: [f64; 10] = [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 1.0];
/// Messages per Redis batch.
static BATCH_BOUNDS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 4096.0];
/// Durable commit latency (seconds).
static COMMIT_BOUNDS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

/// Every series syncgate keeps. One per process, shared as an `Arc` (cloning it is shallow).
pub struct Metrics {
    /// Open WebSocket connections (held by `registry::OpenGuard`).
    pub connections: Gauge,
    pub connects: Family<ConnectResult, { ConnectResult::COUNT }>,
    pub disconnects: Family<CloseCode, { CloseCode::COUNT }>,
    pub frames_in: Family<FrameIn, { FrameIn::COUNT }>,
    pub frames_out: Family<FrameOut, { FrameOut::COUNT }>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Publish → every recipient's queue (seconds).
    pub fanout_seconds: Histogram,
    /// Connections closed with 1013: queue overflow or stalled writes.
    pub slow_consumer_closes: Counter,
    /// Connections closed because the socket accepted no byte for `SYNCGATE_WRITE_TIMEOUT_MS`.
    pub write_timeouts: Counter,
    /// HTTP connections cut for not finishing a request (or its body) in time.
    pub handshake_timeouts: Counter,
    /// Connections closed for a missing or malformed PROXY protocol header.
    pub proxy_header_rejected: Counter,
    /// Messages dropped by the per-connection rate limit.
    pub rate_limited: Counter,
    pub auth_failures: Family<AuthFailure, { AuthFailure::COUNT }>,
    /// Authorization hook: requests sent, their latency, decisions answered from the cache, and
    /// requests that timed out, failed or were answered with garbage.
    pub authz_requests: Counter,
    pub authz_seconds: Histogram,
    pub authz_cache_hits: Counter,
    pub authz_failures: Counter,
    /// The Redis bus (exposed only when the gateway runs it).
    pub bus: BusSeries,
    /// Durable streams.
    pub durable: DurableSeries,
    /// Webhooks (exposed only when they run).
    pub webhooks: WebhookSeries,
    started: std::time::Instant,
}

/// The Redis bus's series.
pub struct BusSeries {
    pub messages: Counter,
    pub publish_commands: Counter,
    pub dropped: Counter,
    pub received: Counter,
    pub reconnects: Counter,
    /// External publishes and control messages dropped as malformed or nested too deep.
    pub rejected: Counter,
    /// Messages per PUBLISH batch.
    pub batch_messages: Histogram,
}

/// The webhooks' series.
pub struct WebhookSeries {
    /// Events queued.
    pub events: Counter,
    /// Events accepted by the receiver.
    pub delivered: Counter,
    /// Events dropped because the queue was full.
    pub dropped: Counter,
    /// Events given up after `SYNCGATE_WEBHOOK_RETRY_SECS` of failed attempts.
    pub expired: Counter,
    /// Failed delivery attempts.
    pub failures: Counter,
    /// Events waiting.
    pub queue: Gauge,
    /// Delivery attempt latency.
    pub seconds: Histogram,
}

/// The durable streams' series.
pub struct DurableSeries {
    pub events: Counter,
    pub duplicates: Counter,
    pub failed: Counter,
    pub refused: Counter,
    pub batches: Counter,
    /// Publishes refused by the per-user quota.
    pub rate_limited: Counter,
    pub replays: Counter,
    pub replayed_events: Counter,
    pub retention_deleted: Counter,
    pub retention_runs: Counter,
    /// Publishes waiting for a commit.
    pub queue: Gauge,
    pub commit_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: Gauge::default(),
            connects: Family::default(),
            disconnects: Family::default(),
            frames_in: Family::default(),
            frames_out: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            fanout_seconds: Histogram::new(&LATENCY_BOUNDS),
            slow_consumer_closes: Counter::default(),
            write_timeouts: Counter::default(),
            handshake_timeouts: Counter::default(),
            proxy_header_rejected: Counter::default(),
            rate_limited: Counter::default(),
            auth_failures: Family::default(),
            authz_requests: Counter::default(),
            authz_seconds: Histogram::new(&COMMIT_BOUNDS),
            authz_cache_hits: Counter::default(),
            authz_failures: Counter::default(),
            bus: BusSeries::default(),
            durable: DurableSeries::default(),
            webhooks: WebhookSeries::default(),
            started: std::time::Instant::now(),
        }
    }
}

impl Default for BusSeries {
    fn default() -> Self {
        BusSeries {
            messages: Counter::default(),
            publish_commands: Counter::default(),
            dropped: Counter::default(),
            received: Counter::default(),
            reconnects: Counter::default(),
            rejected: Counter::default(),
            batch_messages: Histogram::new(&BATCH_BOUNDS),
        }
    }
}

impl Default for WebhookSeries {
    fn default() -> Self {
        WebhookSeries {
            events: Counter::default(),
            delivered: Counter::default(),
            dropped: Counter::default(),
            expired: Counter::default(),
            failures: Counter::default(),
            queue: Gauge::default(),
            seconds: Histogram::new(&COMMIT_BOUNDS),
        }
    }
}

impl WebhookSeries {
    fn series(&self) -> Vec<Series<'_>> {
        vec![
            counter("syncgate_webhook_events_total", "Webhook events queued.", &self.events),
            counter("syncgate_webhook_delivered_total", "Webhook events the receiver accepted.", &self.delivered),
            counter(
                "syncgate_webhook_dropped_total",
                "Webhook events dropped because SYNCGATE_WEBHOOK_QUEUE was full.",
                &self.dropped,
            ),
            counter(
                "syncgate_webhook_expired_total",
                "Webhook events given up after SYNCGATE_WEBHOOK_RETRY_SECS of failed attempts.",
                &self.expired,
            ),
            counter("syncgate_webhook_failures_total", "Failed webhook delivery attempts.", &self.failures),
            gauge("syncgate_webhook_queue", "Webhook events waiting for delivery.", &self.queue),
            histogram(
                "syncgate_webhook_request_seconds",
                "Webhook delivery attempt latency, in seconds.",
                &self.seconds,
            ),
        ]
    }
}

impl Default for DurableSeries {
    fn default() -> Self {
        DurableSeries {
            events: Counter::default(),
            duplicates: Counter::default(),
            failed: Counter::default(),
            refused: Counter::default(),
            batches: Counter::default(),
            rate_limited: Counter::default(),
            replays: Counter::default(),
            replayed_events: Counter::default(),
            retention_deleted: Counter::default(),
            retention_runs: Counter::default(),
            queue: Gauge::default(),
            commit_seconds: Histogram::new(&COMMIT_BOUNDS),
        }
    }
}

/// Figures only the scraper knows (state of higher layers), read once per scrape.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    /// Frames handed to recipients' queues (the registry's count).
    pub deliveries: u64,
    /// What `/ready` answers.
    pub ready: bool,
    /// `Some(up)` with the Redis bus, whose series are then exposed; `None` with the in-process bus.
    pub redis_up: Option<bool>,
    /// Webhooks run: their series are exposed.
    pub webhooks: bool,
}

/// A sample computed at scrape time.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(u64),
    Float(f64),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::Int(n) => n.fmt(f),
            Num::Float(x) => x.fmt(f),
        }
    }
}

/// A series' Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        }
    }
}

/// Where a declared series reads its value.
enum Source<'a> {
    Counter(&'a Counter),
    Gauge(&'a Gauge),
    Family(&'a dyn Rows),
    Histogram(&'a Histogram),
    /// Computed at scrape time; `None`: not available (not exposed this scrape).
    Computed(Type, Option<Num>),
}

/// One declared series.
struct Series<'a> {
    name: &'static str,
    help: &'static str,
    source: Source<'a>,
}

impl Series<'_> {
    fn kind(&self) -> Type {
        match self.source {
            Source::Counter(_) | Source::Family(_) => Type::Counter,
            Source::Gauge(_) => Type::Gauge,
            Source::Histogram(_) => Type::Histogram,
            Source::Computed(t, _) => t,
        }
    }

    /// Appends the `# HELP`/`# TYPE` block and the samples (nothing when a computed value is
    /// not available).
    fn render(&self, out: &mut String) {
        if let Source::Computed(_, None) = self.source {
            return;
        }
        let (name, help, kind) = (self.name, self.help, self.kind().as_str());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        match &self.source {
            Source::Counter(c) => {
                let _ = writeln!(out, "{name} {}", c.get());
            }
            Source::Gauge(g) => {
                let _ = writeln!(out, "{name} {}", g.get());
            }
            Source::Family(f) => {
                let label = f.label();
                for (value, n) in f.rows() {
                    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
                }
            }
            Source::Histogram(h) => h.render(out, name),
            Source::Computed(_, Some(v)) => {
                let _ = writeln!(out, "{name} {v}");
            }
            Source::Computed(_, None) => {}
        }
    }
}

fn counter<'a>(name: &'static str, help: &'static str, c: &'a Counter) -> Series<'a> {
    Series { name, help, source: Source::Counter(c) }
}

fn gauge<'a>(name: &'static str, help: &'static str, g: &'a Gauge) -> Series<'a> {
    Series { name, help, source: Source::Gauge(g) }
}

fn family<'a, L: Label, const N: usize>(name: &'static str, help: &'static str, f: &'a Family<L, N>) -> Series<'a> {
    Series { name, help, source: Source::Family(f) }
}

fn histogram<'a>(name: &'static str, help: &'static str, h: &'a Histogram) -> Series<'a> {
    Series { name, help, source: Source::Histogram(h) }
}

fn computed(name: &'static str, help: &'static str, kind: Type, v: Option<Num>) -> Series<'static> {
    Series { name, help, source: Source::Computed(kind, v) }
}

impl Metrics {
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The whole `/metrics` page.
    pub fn render(&self, live: &Live) -> String {
        let mut out = String::with_capacity(8192);
        for s in self.series(live, &Process::read()) {
            s.render(&mut out);
        }
        out
    }

    /// Every series, in exposition order: the gateway's, the Redis bus's (with the Redis bus
    /// only), the durable streams', the process's.
    fn series<'a>(&'a self, live: &Live, process: &Process) -> Vec<Series<'a>> {
        let mut all = self.gateway_series(live);
        if let Some(up) = live.redis_up {
            all.extend(self.bus.series(up));
        }
        all.extend(self.durable.series());
        if live.webhooks {
            all.extend(self.webhooks.series());
        }
        all.extend(process.series());
        all
    }

    fn gateway_series(&self, live: &Live) -> Vec<Series<'_>> {
        vec![
            gauge("syncgate_connections", "Open WebSocket connections.", &self.connections),
            family("syncgate_connects_total", "Connection attempts by result.", &self.connects),
            family(
                "syncgate_disconnects_total",
                "Closed connections by close code (1006: the peer vanished).",
                &self.disconnects,
            ),
            family("syncgate_frames_in_total", "Frames received by type.", &self.frames_in),
            family("syncgate_frames_out_total", "Frames written by type.", &self.frames_out),
            counter("syncgate_bytes_in_total", "Payload bytes received.", &self.bytes_in),
            counter("syncgate_bytes_out_total", "Payload bytes written.", &self.bytes_out),
            computed(
                "syncgate_deliveries_total",
                "Frames handed to recipients' queues.",
                Type::Counter,
                Some(Num::Int(live.deliveries)),
            ),
            histogram(
                "syncgate_fanout_seconds",
                "Publish to every recipient enqueued, in seconds.",
                &self.fanout_seconds,
            ),
            counter(
                "syncgate_slow_consumer_disconnects_total",
                "Connections closed with 1013 (outbound queue overflow or stalled writes).",
                &self.slow_consumer_closes,
            ),
            counter(
                "syncgate_write_timeouts_total",
                "Connections closed because the socket accepted no byte for SYNCGATE_WRITE_TIMEOUT_MS while frames waited.",
                &self.write_timeouts,
            ),
            counter(
                "syncgate_handshake_timeouts_total",
                "HTTP connections cut for not finishing a request or upgrade within SYNCGATE_HANDSHAKE_TIMEOUT_MS.",
                &self.handshake_timeouts,
            ),
            counter(
                "syncgate_proxy_header_rejected_total",
                "Connections closed for a missing, malformed or late PROXY protocol header (SYNCGATE_PROXY_PROTOCOL).",
                &self.proxy_header_rejected,
            ),
            counter(
                "syncgate_rate_limited_messages_total",
                "Messages dropped by the per-connection rate limit.",
                &self.rate_limited,
            ),
            family("syncgate_auth_failures_total", "Authentication failures by reason.", &self.auth_failures),
            counter("syncgate_authz_requests_total", "Requests sent to the authorization hook.", &self.authz_requests),
            histogram(
                "syncgate_authz_request_seconds",
                "Authorization hook request latency, in seconds.",
                &self.authz_seconds,
            ),
            counter(
                "syncgate_authz_cache_hits_total",
                "Authorization decisions answered from the cache.",
                &self.authz_cache_hits,
            ),
            counter(
                "syncgate_authz_failures_total",
                "Authorization hook requests that timed out, failed or got an unusable answer.",
                &self.authz_failures,
            ),
            computed("syncgate_ready", "1 while /ready answers 200.", Type::Gauge, Some(Num::Int(u64::from(live.ready)))),
            computed("syncgate_uptime_seconds", "Seconds since start.", Type::Gauge, Some(Num::Int(self.uptime_secs()))),
        ]
    }
}

impl BusSeries {
    fn series(&self, up: bool) -> Vec<Series<'_>> {
        vec![
            computed(
                "syncgate_redis_up",
                "1 while both Redis connections are up.",
                Type::Gauge,
                Some(Num::Int(u64::from(up))),
            ),
            counter("syncgate_bus_messages_total", "Messages sent to Redis.", &self.messages),
            counter(
                "syncgate_bus_publish_commands_total",
                "PUBLISH commands (several messages per command when batched).",
                &self.publish_commands,
            ),
            counter(
                "syncgate_bus_dropped_total",
                "Messages not carried between instances (queue full or Redis down).",
                &self.dropped,
            ),
            counter(
                "syncgate_bus_received_total",
                "Messages received from other instances or external publishers.",
                &self.received,
            ),
            counter("syncgate_redis_reconnects_total", "Redis reconnections.", &self.reconnects),
            counter(
                "syncgate_bus_rejected_total",
                "External publishes and control messages dropped as malformed or nested deeper than SYNCGATE_MAX_JSON_DEPTH.",
                &self.rejected,
            ),
            histogram("syncgate_bus_batch_messages", "Messages per Redis PUBLISH batch.", &self.batch_messages),
        ]
    }
}

impl DurableSeries {
    fn series(&self) -> Vec<Series<'_>> {
        vec![
            counter("syncgate_durable_events_total", "Durable events committed.", &self.events),
            counter(
                "syncgate_durable_duplicates_total",
                "Durable publishes answered from an earlier msg_id.",
                &self.duplicates,
            ),
            counter(
                "syncgate_durable_failed_total",
                "Durable publishes that could not be stored (publisher got unavailable).",
                &self.failed,
            ),
            counter(
                "syncgate_durable_refused_total",
                "Durable publishes the database refused alone (publisher got bad_request; the rest of the batch was stored).",
                &self.refused,
            ),
            counter("syncgate_durable_batches_total", "Group commits.", &self.batches),
            counter(
                "syncgate_durable_rate_limited_total",
                "Durable publishes refused by the per-user quota (publisher got rate_limited).",
                &self.rate_limited,
            ),
            counter("syncgate_replays_total", "Subscribes with since.", &self.replays),
            counter("syncgate_replayed_events_total", "Events sent by replays.", &self.replayed_events),
            counter("syncgate_retention_deleted_total", "Events deleted by retention.", &self.retention_deleted),
            counter("syncgate_retention_runs_total", "Retention passes.", &self.retention_runs),
            gauge("syncgate_durable_queue", "Durable publishes waiting for a commit.", &self.queue),
            histogram("syncgate_durable_commit_seconds", "One group commit, in seconds.", &self.commit_seconds),
        ]
    }
}

/// Process figures from `/proc/self` (Linux), read once per scrape; `None` where unreadable.
struct Process {
    rss_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<u64>,
}

impl Process {
    fn read() -> Process {
        let rss_kib = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        let cpu_seconds = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        });
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).ok();
        Process { rss_bytes: rss_kib.map(|k| k * 1024), cpu_seconds, open_fds }
    }

    fn series(&self) -> Vec<Series<'static>> {
        vec![
            computed(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Type::Gauge,
                self.rss_bytes.map(Num::Int),
            ),
            computed(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                Type::Counter,
                self.cpu_seconds.map(Num::Float),
            ),
            computed("process_open_fds", "Number of open file descriptors.", Type::Gauge, self.open_fds.map(Num::Int)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_sum_across_threads() {
        let c = std::sync::Arc::new(Counter::default());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(c.get(), 4000);
        let h = Histogram::new(&LATENCY_BOUNDS);
        h.observe(0.00002);
        h.observe(5.0);
        let mut out = String::new();
        h.render(&mut out, "x");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2"));
        assert!(out.contains("x_count 2"));
    }

    const WITH_REDIS: Live = Live { deliveries: 0, ready: true, redis_up: Some(true), webhooks: false };

    /// A page without its sample values: comment lines whole, sample lines up to the value.
    fn shape(page: &str) -> Vec<&str> {
        page.lines().map(|l| if l.starts_with('#') { l } else { l.rsplit_once(' ').map_or(l, |(s, _)| s) }).collect()
    }

    #[test]
    fn exposition_keeps_every_series() {
        // The page as it was before the registry (see tests/fixtures/README.md).
        let before = include_str!("../tests/fixtures/metrics.txt");
        let now = Metrics::default().render(&WITH_REDIS);
        let (before, now) = (shape(before), shape(&now));
        for (i, (b, n)) in before.iter().zip(&now).enumerate() {
            assert_eq!(b, n, "line {}", i + 1);
        }
        assert_eq!(before.len(), now.len());
    }

    #[test]
    fn every_declared_series_appears_once_with_its_type() {
        let m = Metrics::default();
        let every = Live { webhooks: true, ..WITH_REDIS };
        let page = m.render(&every);
        let series = m.series(&every, &Process::read());
        let mut names: Vec<&str> = series.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), series.len(), "a name is declared twice");
        for s in &series {
            let (name, kind) = (s.name, s.kind().as_str());
            assert!(name.starts_with("syncgate_") || name.starts_with("process_"), "{name}");
            assert!(!s.help.is_empty() && !s.help.contains('\n'), "{name}: help");
            assert_eq!(page.matches(&format!("# TYPE {name} ")).count(), 1, "{name}: TYPE lines");
            assert_eq!(page.matches(&format!("# HELP {name} ")).count(), 1, "{name}: HELP lines");
            assert!(page.contains(&format!("# TYPE {name} {kind}\n")), "{name}: type {kind}");
            let samples = page.lines().filter(|l| !l.starts_with('#') && l.starts_with(name)).count();
            assert!(samples >= 1, "{name}: no sample");
        }
        // Every TYPE line belongs to a declared series.
        assert_eq!(page.matches("# TYPE ").count(), series.len());
    }

    #[test]
    fn bus_series_only_with_the_redis_bus() {
        let page = Metrics::default().render(&Live { redis_up: None, ..WITH_REDIS });
        assert!(!page.contains("syncgate_bus_") && !page.contains("syncgate_redis_"), "{page}");
        assert!(page.contains("syncgate_durable_events_total 0\n"));
    }

    #[test]
    fn labels_count_where_they_are_named() {
        let m = Metrics::default();
        m.frames_in.inc(FrameIn::Ack);
        m.frames_out.inc(FrameOut::Ping);
        m.connects.inc(ConnectResult::Shed);
        m.disconnects.inc(CloseCode::from_code(4009));
        m.disconnects.inc(CloseCode::from_code(3999));
        m.auth_failures.inc(AuthFailure::Device);
        let page = m.render(&WITH_REDIS);
        for line in [
            "syncgate_frames_in_total{type=\"ack\"} 1",
            "syncgate_frames_out_total{type=\"ping\"} 1",
            "syncgate_connects_total{result=\"shed\"} 1",
            "syncgate_disconnects_total{code=\"4009\"} 1",
            "syncgate_disconnects_total{code=\"other\"} 1",
            "syncgate_auth_failures_total{reason=\"device\"} 1",
        ] {
            assert!(page.contains(&format!("{line}\n")), "{line}");
        }
        assert_eq!(page.matches("} 1\n").count(), 6);
        // Every listed close code maps to its own label.
        for c in CloseCode::ALL.iter().filter(|c| **c != CloseCode::Other) {
            let code: u16 = c.value().parse().expect("a close code");
            assert_eq!(CloseCode::from_code(code), *c);
        }
    }
}
