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
//! - `mod.rs`: the [`Durable`] service, its start-up ([`Durable::start`]) and the publish types
//!   ([`Publish`], [`Reply`], [`Outcome`], [`DurableError`]). Its series are
//!   `metrics::DurableSeries`, in the process's one registry.
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
use crate::metrics::Metrics;
use crate::protocol::RequestId;
use crate::registry::{ConnHandle, Registry};
use crate::store::events::Appended;
use crate::store::Store;

use positions::PositionKey;
pub use replay::{stored_frame, Replay};

impl Publish {
    /// What it holds in the queue, for the byte bound.
    fn size(&self) -> u64 {
        let sig = self.sig.as_deref().map_or(0, |s| s.nonce.len() + s.sig.len() + s.public_key.len() + 8);
        (self.channel.len()
            + self.event.len()
            + self.data.len()
            + self.msg_id.as_deref().map_or(0, str::len)
            + sig
            + 64) as u64
    }
}

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
    /// A signed event's verified signature (stored and delivered with it).
    pub sig: Option<Box<crate::protocol::Signature>>,
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
    /// The process's registry; the service counts into `metrics.durable`, whose `queue` gauge is
    /// the number of publishes waiting for a commit.
    metrics: Arc<Metrics>,
    /// Bytes of the publishes in the queue, bounded by `SYNCGATE_DURABLE_QUEUE_BYTES`.
    queued_bytes: std::sync::atomic::AtomicU64,
    max_queued_bytes: u64,
    /// Committed events at which the next early ANALYZE runs (0: no more).
    next_analyze: std::sync::atomic::AtomicU64,
    /// Told about every stored `dm` event (`message_undelivered`), when webhooks run.
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
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
        metrics: Arc<Metrics>,
        webhooks: Option<Arc<crate::webhooks::Webhooks>>,
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
            quota: quota::Quota::new(
                config.durable.events_per_min,
                config.durable.bytes_per_min,
                bus.clone(),
                metrics.clone(),
            ),
            metrics,
            queued_bytes: std::sync::atomic::AtomicU64::new(0),
            max_queued_bytes: config.durable.queue_bytes,
            next_analyze: std::sync::atomic::AtomicU64::new(1_000),
            webhooks,
        });
        let tasks = vec![
            tokio::spawn(durable.clone().writer(rx, bus, registry.clone(), config.durable.batch_max)),
            tokio::spawn(writer::sequencer_ticks(registry, durable.store.clone())),
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
}
