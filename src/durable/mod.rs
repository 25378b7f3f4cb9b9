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

pub mod quota;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::bus::Bus;
use crate::config::Config;
use crate::metrics::{Counter, Histogram};
use crate::protocol::{self, ErrorCode, RequestId, Stamp, StreamState};
use crate::registry::{ConnHandle, Registry};
use crate::store::events::{Appended, NewEvent, StoredEvent, Turn};
use crate::store::{Store, StoreError};

impl Publish {
    /// What it holds in the queue, for the byte bound.
    fn size(&self) -> u64 {
        (self.channel.len() + self.event.len() + self.data.len() + self.msg_id.as_deref().map_or(0, str::len) + 64)
            as u64
    }
}

/// Commit latency buckets (seconds).
static COMMIT_BOUNDS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];
/// How often coalesced read positions are written.
const POSITION_FLUSH: Duration = Duration::from_millis(100);

/// Batches written at once on PostgreSQL (each on its own connection; results handled in order).
/// SQLite has one writer at a time, so a second batch would only wait for the lock: 1 there.
const PIPELINE: usize = 2;

/// One batch after its transaction(s): an outcome per publish, in batch order.
struct Committed {
    batch: Vec<Publish>,
    outcomes: Vec<Outcome>,
    seconds: f64,
}

/// What became of one durable publish.
pub enum Outcome {
    Stored(Appended),
    /// The database refused this event itself (see [`Store::is_refusal`]): `bad_request`.
    Refused(String),
    /// Not stored for a reason that may pass (the database unreachable…): `unavailable`.
    Failed(String),
}

/// Writes one batch in one transaction, in its turn. When the database refuses the batch
/// because of its data (one bad event), the events are written again one by one, each in its
/// own transaction and in batch order (so a channel's events keep their order): the refused
/// one alone fails, every other one is stored. A transient error fails the whole batch.
async fn commit(store: Store, batch: Vec<Publish>, turn: Turn) -> Committed {
    let started = Instant::now();
    let rows: Vec<NewEvent<'_>> = batch
        .iter()
        .map(|p| NewEvent {
            channel: &p.channel,
            event: &p.event,
            data: std::str::from_utf8(&p.data).unwrap_or("null"),
            from: p.from.as_ref().map(|(u, d)| (&**u, &**d)),
            msg_id: p.msg_id.as_deref(),
            ts: p.ts as i64,
        })
        .collect();
    let outcome = |store: &Store, e: StoreError| match store.is_refusal(&e) {
        true => Outcome::Refused(e.to_string()),
        false => Outcome::Failed(e.to_string()),
    };
    let outcomes = match store.append(&rows, turn).await {
        Ok(appended) => appended.into_iter().map(Outcome::Stored).collect(),
        Err(e) if store.is_refusal(&e) && rows.len() > 1 => {
            tracing::warn!(error = %e, n = rows.len(), "durable batch refused; writing its events one by one");
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                // Numbered by the heads' row locks like any batch; a batch after this one that
                // committed meanwhile is ordered by the sequencer on delivery.
                out.push(match store.append(std::slice::from_ref(row), Turn::default()).await {
                    Ok(mut a) => Outcome::Stored(a.pop().unwrap_or_default()),
                    Err(e) => outcome(&store, e),
                });
            }
            out
        }
        Err(e) => {
            let text = e.to_string();
            let refused = store.is_refusal(&e);
            rows.iter()
                .map(|_| match refused {
                    true => Outcome::Refused(text.clone()),
                    false => Outcome::Failed(text.clone()),
                })
                .collect()
        }
    };
    drop(rows);
    Committed { batch, outcomes, seconds: started.elapsed().as_secs_f64() }
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

/// (user, device, channel) of a read position.
type PositionKey = (Arc<str>, Arc<str>, String);

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

/// What a replay found: the events to send and the stream state for the reply.
pub struct Replay {
    /// The first page of the replay (empty unless `recovered`).
    pub frames: Vec<Message>,
    /// The `seq` the connection has seen up to once these frames are written: the last replayed
    /// one, or the head when nothing is replayed.
    pub last: u64,
    pub state: StreamState,
}

impl Durable {
    /// Starts the writer, the position flusher and the retention job.
    pub fn start(
        config: &Config,
        store: Store,
        bus: Arc<dyn Bus>,
        registry: Arc<Registry>,
    ) -> (Arc<Durable>, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(config.durable_queue);
        let durable = Arc::new(Durable {
            store,
            namespaces: config.durable_namespaces.clone(),
            replay_max: config.replay_max,
            tx,
            positions: Mutex::new(HashMap::new()),
            positions_queued: tokio::sync::Notify::new(),
            touched: Mutex::new(HashMap::new()),
            metrics: DurableMetrics::default(),
            commit_seconds: Histogram::new(&COMMIT_BOUNDS),
            queued: std::sync::atomic::AtomicU64::new(0),
            queued_bytes: std::sync::atomic::AtomicU64::new(0),
            max_queued_bytes: config.durable_queue_bytes,
            next_analyze: std::sync::atomic::AtomicU64::new(1_000),
            quota: quota::Quota::new(config.durable_events_per_min, config.durable_bytes_per_min, bus.clone()),
        });
        let tasks = vec![
            tokio::spawn(durable.clone().writer(rx, bus, registry.clone(), config.durable_batch_max)),
            tokio::spawn(sequencer_ticks(registry)),
            tokio::spawn(durable.clone().position_flusher()),
            tokio::spawn(durable.clone().retention(
                config.retention_interval,
                config.history_ttl_secs,
                config.history_max,
            )),
        ];
        (durable, tasks)
    }

    /// True when `channel` (canonical name) is in a durable namespace.
    pub fn is_durable(&self, channel: &str) -> bool {
        let ns = channel.split_once(':').map_or("", |(ns, _)| ns);
        self.namespaces.iter().any(|n| n == ns)
    }

    /// Queues a publish for the next group commit. Never waits: a full queue is
    /// [`DurableError::Busy`] (the client retries with the same `msg_id`).
    pub fn submit(&self, p: Publish) -> Result<(), Box<Publish>> {
        use std::sync::atomic::Ordering::Relaxed;
        let size = p.size();
        if self.queued_bytes.fetch_add(size, Relaxed) + size > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(size, Relaxed);
            return Err(Box::new(p));
        }
        match self.tx.try_send(p) {
            Ok(()) => {
                self.queued.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p)) => {
                self.queued_bytes.fetch_sub(size, Relaxed);
                Err(Box::new(p))
            }
        }
    }

    /// Publishes from the server API (`"from":{"user_id":"server"}`) and waits for the commit.
    pub async fn publish_from_server(
        &self,
        channel: String,
        event: String,
        data: Vec<u8>,
        msg_id: Option<Box<str>>,
        ts: u64,
    ) -> Result<Appended, DurableError> {
        let (tx, rx) = oneshot::channel();
        let p = Publish { channel, event, data, from: None, msg_id, origin: 0, ts, reply: Reply::Http(tx) };
        self.submit(p).map_err(|_| DurableError::Busy)?;
        match rx.await {
            Ok(Outcome::Stored(a)) => Ok(a),
            Ok(Outcome::Refused(e)) => Err(DurableError::Refused(e)),
            Ok(Outcome::Failed(e)) => Err(DurableError::NotStored(e)),
            Err(_) => Err(DurableError::NotStored("the writer stopped".into())),
        }
    }

    /// The writer: takes everything queued as one batch (one transaction). Up to
    /// [`PIPELINE`] batches are in flight on separate connections — the next one is written
    /// while the previous one commits — and their results are handled strictly in batch order:
    /// delivered and acknowledged in `seq` order (the heads' row locks order the commits of any
    /// channel two batches share).
    async fn writer(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Publish>,
        bus: Arc<dyn Bus>,
        registry: Arc<Registry>,
        batch_max: usize,
    ) {
        let mut inflight: std::collections::VecDeque<tokio::task::JoinHandle<Committed>> = Default::default();
        let mut open = true;
        let depth = match self.store.backend {
            crate::store::Backend::Postgres => PIPELINE,
            crate::store::Backend::Sqlite => 1,
        };
        // Fired by the newest batch once it holds its head locks.
        let mut last_turn: Option<oneshot::Receiver<()>> = None;
        while open || !inflight.is_empty() {
            let room = open && inflight.len() < depth;
            tokio::select! {
                biased;
                done = async { inflight.front_mut().expect("checked non-empty").await }, if !inflight.is_empty() => {
                    inflight.pop_front();
                    match done {
                        Ok(c) => self.finish(c, &*bus, &registry),
                        Err(e) => tracing::error!(error = %e, "durable commit task failed"),
                    }
                }
                batch = async {
                    let mut batch = Vec::with_capacity(batch_max.min(1024));
                    rx.recv_many(&mut batch, batch_max).await;
                    batch
                }, if room => {
                    if batch.is_empty() {
                        open = false;
                        continue;
                    }
                    self.queued.fetch_sub(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let bytes: u64 = batch.iter().map(Publish::size).sum();
                    self.queued_bytes.fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
                    let store = self.store.clone();
                    let (next, held) = oneshot::channel();
                    let turn = Turn { prev: last_turn.replace(held), next: Some(next) };
                    inflight.push_back(tokio::spawn(commit(store, batch, turn)));
                }
            }
        }
    }

    /// Delivers and acknowledges one committed batch (or reports its failure).
    fn finish(&self, c: Committed, bus: &dyn Bus, registry: &Registry) {
        self.commit_seconds.observe(c.seconds);
        self.metrics.batches.inc();
        let Committed { batch, outcomes, .. } = c;
        let mut stored = false;
        let (mut failed, mut n_failed) = (None::<String>, 0u64);
        // For count retention: each channel's last seq (batches are handled in seq order).
        let mut touched = self.touched.lock().ok();
        for (p, outcome) in batch.into_iter().zip(outcomes) {
            match &outcome {
                Outcome::Stored(a) if a.duplicate => self.metrics.duplicates.inc(),
                Outcome::Stored(a) => {
                    stored = true;
                    self.metrics.events.inc();
                    deliver(bus, registry, &p, a.seq);
                    if let Some(t) = touched.as_mut() {
                        t.insert(p.channel.clone(), a.seq);
                    }
                }
                Outcome::Refused(e) => {
                    tracing::warn!(error = %e, channel = %p.channel, "durable event refused by the database; its publisher gets `bad_request`");
                    self.metrics.refused.inc();
                }
                Outcome::Failed(e) => {
                    failed.get_or_insert_with(|| e.clone());
                    self.metrics.failed.inc();
                    n_failed += 1;
                }
            }
            respond(p, outcome);
        }
        drop(touched);
        if let Some(e) = failed {
            tracing::warn!(error = %e, n = n_failed, "durable events not stored; publishers get `unavailable`");
        }
        if stored {
            self.analyze_when_young();
        }
    }

    /// Refreshes the stream tables' statistics (see [`Store::analyze_streams`]) each time this
    /// process's committed events double, from 1 000 up to 16 M: a database created moments ago
    /// is then never planned with statistics more than a factor of two out of date, long before
    /// autovacuum would notice (after that autovacuum's own thresholds are close enough).
    fn analyze_when_young(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let events = self.metrics.events.get();
        let next = self.next_analyze.load(Relaxed);
        if next == 0 || events < next {
            return;
        }
        let after = if next >= 16_000_000 { 0 } else { next * 2 };
        if self.next_analyze.compare_exchange(next, after, Relaxed, Relaxed).is_err() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.analyze_streams().await {
                tracing::warn!(error = %e, "ANALYZE of the stream tables failed");
            }
        });
    }

    /// Records a device's read position (coalesced; written within [`POSITION_FLUSH`]).
    pub fn ack(&self, user: &Arc<str>, device: &Arc<str>, channel: &str, seq: u64) {
        // Stored as BIGINT.
        let seq = seq.min(i64::MAX as u64);
        if let Ok(mut p) = self.positions.lock() {
            let e = p.entry((user.clone(), device.clone(), channel.to_string())).or_insert(0);
            *e = (*e).max(seq);
        }
        self.positions_queued.notify_one();
    }

    /// A device's read position: the pending one if newer than the stored one.
    pub async fn position(&self, user: &Arc<str>, device: &Arc<str>, channel: &str) -> Result<u64, StoreError> {
        let pending = self
            .positions
            .lock()
            .ok()
            .and_then(|p| p.get(&(user.clone(), device.clone(), channel.to_string())).copied())
            .unwrap_or(0);
        Ok(self.store.position(user, Some(device), channel).await?.max(pending))
    }

    async fn position_flusher(self: Arc<Self>) {
        loop {
            // Sleeps until a position is acknowledged, then writes at most every POSITION_FLUSH.
            self.positions_queued.notified().await;
            tokio::time::sleep(POSITION_FLUSH).await;
            self.flush_positions().await;
        }
    }

    /// Writes the pending read positions now.
    pub async fn flush_positions(&self) {
        let pending: Vec<(String, String, String, u64)> = match self.positions.lock() {
            Ok(mut p) if !p.is_empty() => {
                std::mem::take(&mut *p).into_iter().map(|((u, d, c), s)| (u.to_string(), d.to_string(), c, s)).collect()
            }
            _ => return,
        };
        if let Err(e) = self.store.save_positions(&pending).await {
            tracing::warn!(error = %e, n = pending.len(), "read positions not stored; kept for the next flush");
            if let Ok(mut p) = self.positions.lock() {
                for (u, d, c, s) in pending {
                    let e = p.entry((Arc::from(u), Arc::from(d), c)).or_insert(0);
                    *e = (*e).max(s);
                }
            }
        }
    }

    /// The stream state of `channel` for this device, and — with `since` — the first page (at
    /// most `page` events) of the replay after it. Nothing is replayed and `recovered` is false
    /// when more than `SYNCGATE_REPLAY_MAX` events were missed, `since` is past the head, or
    /// retention already removed the start of the range. The rest of a replay is read with
    /// [`Durable::page`], one page at a time, as the connection's queue makes room.
    pub async fn open_stream(
        &self,
        channel: &str,
        user: &Arc<str>,
        device: &Arc<str>,
        since: Option<u64>,
        page: u64,
    ) -> Result<Replay, StoreError> {
        let head = self.store.head(channel).await?;
        // A position acknowledged beyond the head (a confused client) reads as the head.
        let read_seq = self.position(user, device, channel).await?.min(head);
        let unrecovered = |recovered| Replay {
            frames: Vec::new(),
            last: head,
            state: StreamState { seq: head, read_seq, recovered },
        };
        let Some(since) = since else {
            return Ok(unrecovered(None));
        };
        self.metrics.replays.inc();
        if since > head || head - since > self.replay_max {
            return Ok(unrecovered(Some(false)));
        }
        let want = page.min(head - since);
        let events = self.store.events(channel, since, Some(head + 1), want, false).await?;
        // Retention may have removed the start of the range: then the client must page history.
        let complete = events.first().is_none_or(|e| e.seq == since + 1) && events.len() as u64 == want;
        if !complete {
            return Ok(unrecovered(Some(false)));
        }
        self.metrics.replayed_events.add(events.len() as u64);
        let last = events.last().map_or(since, |e| e.seq);
        let frames = events.iter().map(|e| Message::Text(stored_frame(channel, e))).collect();
        Ok(Replay { frames, last, state: StreamState { seq: head, read_seq, recovered: Some(true) } })
    }

    /// Up to `limit` stored events of `channel` after `after`, oldest first, as frames, with the
    /// last one's `seq` (the next page starts after it).
    pub async fn page(&self, channel: &str, after: u64, limit: u64) -> Result<(Vec<Message>, Option<u64>), StoreError> {
        let events = self.store.events(channel, after, None, limit, false).await?;
        self.metrics.replayed_events.add(events.len() as u64);
        let last = events.last().map(|e| e.seq);
        Ok((events.iter().map(|e| Message::Text(stored_frame(channel, e))).collect(), last))
    }

    async fn retention(self: Arc<Self>, every: Duration, ttl_secs: u64, max: u64) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let deleted = self.retain(ttl_secs, max).await;
            if deleted > 0 {
                tracing::debug!(deleted, "retention");
            }
        }
    }

    /// One retention pass; returns how many events were deleted.
    pub async fn retain(&self, ttl_secs: u64, max: u64) -> u64 {
        self.metrics.retention_runs.inc();
        let mut deleted = 0;
        if ttl_secs > 0 {
            let cutoff = crate::util::now_millis().saturating_sub(ttl_secs.saturating_mul(1000)) as i64;
            match self.store.expire(cutoff).await {
                Ok(n) => deleted += n,
                Err(e) => tracing::warn!(error = %e, "retention (age) failed"),
            }
        }
        if max > 0 {
            let touched = self.touched.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
            for (channel, last) in touched {
                if last <= max {
                    continue;
                }
                match self.store.trim(&channel, last - max).await {
                    Ok(n) => deleted += n,
                    Err(e) => tracing::warn!(error = %e, %channel, "retention (count) failed"),
                }
            }
        }
        self.metrics.retention_deleted.add(deleted);
        deleted
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

/// The event frame of a stored event.
pub fn stored_frame(channel: &str, e: &StoredEvent) -> protocol::Encoded {
    let from = match (&e.user_id, &e.device_id) {
        (Some(u), Some(d)) => Some((u.as_str(), d.as_str())),
        _ => None,
    };
    protocol::durable_event(
        channel,
        &e.event,
        e.data.as_bytes(),
        from,
        e.ts.max(0) as u64,
        Stamp { seq: e.seq, msg_id: e.msg_id.as_deref() },
    )
}

/// Encodes the committed event once; delivers it here through the sequencer (in `seq` order
/// with events other instances committed) and sends it to the other instances, on every route
/// of the channel ([`crate::channel::for_each_route`]: a dm reaches both users' connections but
/// the sender's).
fn deliver(bus: &dyn Bus, registry: &Registry, p: &Publish, seq: u64) {
    let frame = protocol::durable_event(
        &p.channel,
        &p.event,
        &p.data,
        p.from.as_ref().map(|(u, d)| (&**u, &**d)),
        p.ts,
        Stamp { seq, msg_id: p.msg_id.as_deref() },
    );
    crate::channel::for_each_route(&p.channel, |route| {
        registry.fan_out_durable(route, &p.channel, seq, Message::Text(frame.clone()), p.origin);
        bus.publish_remote(route, Message::Text(frame.clone()), p.origin);
    });
}

/// Releases sequencer gaps every few milliseconds while any stream waits; sleeps otherwise (an
/// idle gateway does not wake up for it). Forgets idle streams now and then.
async fn sequencer_ticks(registry: Arc<Registry>) {
    let mut last_evict = Instant::now();
    loop {
        if !registry.sequencer_waiting() {
            // Woken by the first event that has to wait; the evict pass runs at most this late.
            let _ = tokio::time::timeout(Duration::from_secs(10), registry.sequencer_wait()).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        registry.sequencer_tick();
        if last_evict.elapsed() >= Duration::from_secs(10) {
            registry.sequencer_evict_idle();
            last_evict = Instant::now();
        }
    }
}

fn respond(p: Publish, outcome: Outcome) {
    match p.reply {
        Reply::Conn { conn, id } => {
            let frame = match outcome {
                Outcome::Stored(a) => protocol::durable_ack(&id, &p.channel, a.seq, p.msg_id.as_deref(), a.duplicate),
                Outcome::Refused(_) => protocol::error(ErrorCode::BadRequest, "the event cannot be stored", &id),
                Outcome::Failed(_) => {
                    protocol::error(ErrorCode::Unavailable, "not stored; retry with the same msg_id", &id)
                }
            };
            conn.push(Message::Text(frame));
        }
        Reply::Http(tx) => {
            let _ = tx.send(outcome);
        }
    }
}
