//! Durable streams: channels in `SYNCGATE_DURABLE_NAMESPACES` (default `dm`) keep every event
//! with a per-channel `seq`.
//!
//! - Publishes go through a bounded queue to one writer per instance that group-commits whatever
//!   is queued (up to `SYNCGATE_DURABLE_BATCH_MAX`) in one transaction ([`Store::append`]); only
//!   after the commit is an event delivered and acknowledged, so an acked event is on disk.
//! - `dm:<a>:<b>` events reach every connection of `a` and `b` (their user channels) except the
//!   sender's, subscribed to the dm channel or not: implicit membership, exactly once.
//! - Read positions (`ack` frames) are coalesced in memory and written in batches.
//! - Retention: a background job deletes events older than `SYNCGATE_HISTORY_TTL_SECS` and beyond
//!   `SYNCGATE_HISTORY_MAX` per channel, every `SYNCGATE_RETENTION_INTERVAL_SECS`.
//! - Client publishes are limited per user ([`quota`]); the server API is not.
//!
//! ## Files
//! - `mod.rs`: the [`Durable`] service, its start-up ([`Durable::start`]), the publish types
//!   ([`Publish`], [`Reply`], [`Outcome`], [`DurableError`]) and its `/metrics` series.
//! - `writer.rs`: the write queue ([`Durable::submit`]) and the group-commit writer: batching,
//!   one transaction per batch, one-by-one retry when the database refuses a batch, delivery
//!   and replies, the sequencer's ticks.
//! - `positions.rs`: read positions: [`Durable::ack`], [`Durable::position`], the coalescing
//!   flusher.
//! - `retention.rs`: the retention job and one pass of it ([`Durable::retain`]).
//! - `replay.rs`: opening a stream on subscribe ([`Durable::open_stream`]) and replay pages
//!   ([`Durable::page`]).
//! - `quota.rs`: the per-user budget of client publishes.

mod positions;
pub mod quota;
mod replay;
mod retention;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::bus::Bus;
use crate::config::Config;
use crate::metrics::{Counter, Histogram};
use crate::protocol::RequestId;
use crate::registry::{ConnHandle, Registry};
use crate::store::events::Appended;
use crate::store::Store;

use positions::PositionKey;
pub use replay::{stored_frame, Replay};

impl Publish {
    /// What it holds in the queue, for the byte bound.
    fn size(&self) -> u64 {
        (self.channel.len() + self.event.len() + self.data.len() + self.msg_id.as_deref().map_or(0, str::len) + 64)
            as u64
    }
}

/// Commit latency buckets (seconds).
static COMMIT_BOUNDS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

/// What became of one durable publish.
pub enum Outcome {
    Stored(Appended),
    /// The database refused this event itself (see [`Store::is_refusal`]): `bad_request`.
    Refused(String),
    /// Not stored for a reason that may pass (the database unreachable…): `unavailable`.
    Failed(String),
}

/// Who learns the outcome of a durable publish.
pub enum Reply {
    /// A WebSocket publisher: an `ack` (or `error`) frame is queued on its connection.
    Conn { conn: Arc<ConnHandle>, id: RequestId },
    /// The HTTP server API: the outcome.
    Http(oneshot::Sender<Outcome>),
}

/// One durable publish on its way to the writer.
pub struct Publish {
    pub channel: String,
    pub event: String,
    /// JSON text.
    pub data: Vec<u8>,
    /// (user, device); `None` for the server.
    pub from: Option<(Arc<str>, Arc<str>)>,
    pub msg_id: Option<Box<str>>,
    /// The publishing connection, excluded from delivery (0: none).
    pub origin: u64,
    pub ts: u64,
    pub reply: Reply,
}

#[derive(Default)]
struct DurableMetrics {
    events: Counter,
    duplicates: Counter,
    failed: Counter,
    refused: Counter,
    batches: Counter,
    replays: Counter,
    replayed_events: Counter,
    retention_deleted: Counter,
    retention_runs: Counter,
}

/// The durable-stream service; one per process, shared through `AppState`.
pub struct Durable {
    store: Store,
    namespaces: Vec<String>,
    pub replay_max: u64,
    tx: mpsc::Sender<Publish>,
    /// Read positions not yet written: (user, device, channel) → seq.
    positions: Mutex<HashMap<PositionKey, u64>>,
    /// Wakes the position flusher.
    positions_queued: tokio::sync::Notify,
    /// Channels this instance appended to since the last retention run, with their last seq.
    touched: Mutex<HashMap<String, u64>>,
    metrics: DurableMetrics,
    commit_seconds: Histogram,
    queued: std::sync::atomic::AtomicU64,
    /// Bytes of the publishes in the queue, bounded by `SYNCGATE_DURABLE_QUEUE_BYTES`.
    queued_bytes: std::sync::atomic::AtomicU64,
    max_queued_bytes: u64,
    /// Committed events at which the next early ANALYZE runs (0: no more).
    next_analyze: std::sync::atomic::AtomicU64,
    /// Per-user budget of client publishes.
    pub quota: quota::Quota,
}

/// Why a durable operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("the durable write queue is full")]
    Busy,
    #[error("not stored: {0}")]
    NotStored(String),
    #[error("the database refused the event: {0}")]
    Refused(String),
}

impl Durable {
    /// Starts the writer, the position flusher and the retention job.
    pub fn start(
        config: &Config,
        store: Store,
        bus: Arc<dyn Bus>,
        registry: Arc<Registry>,
    ) -> (Arc<Durable>, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(config.durable.queue);
        let durable = Arc::new(Durable {
            store,
            namespaces: config.durable.namespaces.clone(),
            replay_max: config.durable.replay_max,
            tx,
            positions: Mutex::new(HashMap::new()),
            positions_queued: tokio::sync::Notify::new(),
            touched: Mutex::new(HashMap::new()),
            metrics: DurableMetrics::default(),
            commit_seconds: Histogram::new(&COMMIT_BOUNDS),
            queued: std::sync::atomic::AtomicU64::new(0),
            queued_bytes: std::sync::atomic::AtomicU64::new(0),
            max_queued_bytes: config.durable.queue_bytes,
            next_analyze: std::sync::atomic::AtomicU64::new(1_000),
            quota: quota::Quota::new(config.durable.events_per_min, config.durable.bytes_per_min, bus.clone()),
        });
        let tasks = vec![
            tokio::spawn(durable.clone().writer(rx, bus, registry.clone(), config.durable.batch_max)),
            tokio::spawn(writer::sequencer_ticks(registry)),
            tokio::spawn(durable.clone().position_flusher()),
            tokio::spawn(durable.clone().retention(
                config.durable.retention_interval,
                config.durable.history_ttl_secs,
                config.durable.history_max,
            )),
        ];
        (durable, tasks)
    }

    /// True when `channel` (canonical name) is in a durable namespace.
    pub fn is_durable(&self, channel: &str) -> bool {
        let ns = channel.split_once(':').map_or("", |(ns, _)| ns);
        self.namespaces.iter().any(|n| n == ns)
    }

    /// Appends the durable series to `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let m = &self.metrics;
        let rows: [(&str, &str, u64); 10] = [
            ("syncgate_durable_events_total", "Durable events committed.", m.events.get()),
            (
                "syncgate_durable_duplicates_total",
                "Durable publishes answered from an earlier msg_id.",
                m.duplicates.get(),
            ),
            (
                "syncgate_durable_failed_total",
                "Durable publishes that could not be stored (publisher got unavailable).",
                m.failed.get(),
            ),
            (
                "syncgate_durable_refused_total",
                "Durable publishes the database refused alone (publisher got bad_request; the rest of the batch was stored).",
                m.refused.get(),
            ),
            ("syncgate_durable_batches_total", "Group commits.", m.batches.get()),
            (
                "syncgate_durable_rate_limited_total",
                "Durable publishes refused by the per-user quota (publisher got rate_limited).",
                self.quota.refused.get(),
            ),
            ("syncgate_replays_total", "Subscribes with since.", m.replays.get()),
            ("syncgate_replayed_events_total", "Events sent by replays.", m.replayed_events.get()),
            ("syncgate_retention_deleted_total", "Events deleted by retention.", m.retention_deleted.get()),
            ("syncgate_retention_runs_total", "Retention passes.", m.retention_runs.get()),
        ];
        for (name, help, v) in rows {
            crate::metrics::single(out, name, help, "counter", v);
        }
        let queued = self.queued.load(std::sync::atomic::Ordering::Relaxed);
        crate::metrics::single(
            out,
            "syncgate_durable_queue",
            "Durable publishes waiting for a commit.",
            "gauge",
            queued,
        );
        self.commit_seconds.render(out, "syncgate_durable_commit_seconds", "One group commit, in seconds.");
    }
}
