//! Counters and histograms for `GET /metrics` (Prometheus text format).
//!
//! Updates are one relaxed atomic add on a cache-line-padded slot picked by the calling thread:
//! no lock, no allocation, and threads do not contend on one cache line. Scrapes sum the slots.

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

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
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

/// Connect outcomes (`syncgate_connects_total{result}`).
#[derive(Debug, Clone, Copy)]
pub enum ConnectResult {
    Ok,
    Unauthorized,
    RateLimited,
    OverCap,
    Origin,
    Shed,
    BadRequest,
}

pub(crate) const CONNECT_RESULTS: [&str; 7] =
    ["ok", "unauthorized", "rate_limited", "over_cap", "origin", "shed", "bad_request"];

/// Inbound frame kinds (`syncgate_frames_in_total{type}`).
pub const FRAME_IN_TYPES: [&str; 11] = [
    "auth",
    "subscribe",
    "unsubscribe",
    "publish",
    "typing",
    "presence",
    "ping",
    "binary",
    "invalid",
    "control",
    "ack",
];
/// Outbound frame kinds (`syncgate_frames_out_total{type}`).
pub const FRAME_OUT_TYPES: [&str; 4] = ["text", "binary", "ping", "other"];
/// Close codes counted (`syncgate_disconnects_total{code}`); anything else is "other".
pub(crate) const CLOSE_CODES: [u16; 13] =
    [1000, 1001, 1002, 1006, 1007, 1008, 1009, 1011, 1013, 4001, 4003, 4008, 4009];
/// Auth failure reasons (`syncgate_auth_failures_total{reason}`).
pub(crate) const AUTH_REASONS: [&str; 4] = ["expired", "invalid", "timeout", "device"];

/// Seconds: 10 µs … 1 s.
static LATENCY_BOUNDS: [f64; 10] = [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 1.0];
/// Messages per Redis batch.
pub static BATCH_BOUNDS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 4096.0];

/// Every series syncgate keeps. One per process, shared through `AppState`.
pub struct Metrics {
    pub(crate) connects: [Counter; 7],
    pub frames_in: [Counter; 11],
    pub frames_out: [Counter; 4],
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub(crate) disconnects: [Counter; 14],
    pub(crate) auth_failures: [Counter; 4],
    pub rate_limited: Counter,
    /// Connections closed because the socket accepted no byte for `SYNCGATE_WRITE_TIMEOUT_MS`.
    pub write_timeouts: Counter,
    /// HTTP connections cut for not finishing a request (or its body) in time.
    pub handshake_timeouts: Counter,
    /// Connections closed for a missing or malformed PROXY protocol header.
    pub proxy_header_rejected: Counter,
    /// Publish → every recipient's queue (seconds).
    pub fanout_seconds: Histogram,
    started: std::time::Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connects: Default::default(),
            frames_in: Default::default(),
            frames_out: Default::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            disconnects: Default::default(),
            auth_failures: Default::default(),
            rate_limited: Counter::default(),
            write_timeouts: Counter::default(),
            handshake_timeouts: Counter::default(),
            proxy_header_rejected: Counter::default(),
            fanout_seconds: Histogram::new(&LATENCY_BOUNDS),
            started: std::time::Instant::now(),
        }
    }
}

impl Metrics {
    pub fn connect(&self, r: ConnectResult) {
        self.connects[r as usize].inc();
    }

    pub fn disconnect(&self, code: u16) {
        let i = CLOSE_CODES.iter().position(|c| *c == code).unwrap_or(CLOSE_CODES.len());
        self.disconnects[i].inc();
    }

    pub fn auth_failure(&self, reason: &str) {
        if let Some(i) = AUTH_REASONS.iter().position(|r| *r == reason) {
            self.auth_failures[i].inc();
        }
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

pub(crate) fn labeled(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    label: &str,
    rows: impl Iterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (l, v) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{l}\"}} {v}");
    }
}

/// One `# HELP`/`# TYPE` block with a single unlabelled sample.
pub(crate) fn single(out: &mut String, name: &str, help: &str, kind: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
}

/// Process figures from `/proc/self` (Linux): RSS bytes, CPU seconds, open fds.
pub(crate) fn process(out: &mut String) {
    let page_rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    let cpu = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
        let rest = s.get(s.rfind(')')? + 2..)?.to_string();
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
    });
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
    if let Some(kib) = page_rss {
        single(out, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", kib * 1024);
    }
    if let Some(c) = cpu {
        single(out, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", c);
    }
    if let Some(n) = fds {
        single(out, "process_open_fds", "Number of open file descriptors.", "gauge", n);
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
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2"));
        assert!(out.contains("x_count 2"));
    }
}
