//! The group-commit writer: publishes wait in a bounded queue; one task per instance takes
//! whatever is queued as one batch, writes it in one transaction (two batches in flight on
//! PostgreSQL), and only after the commit delivers each event and answers its publisher.
//!
//! When the database refuses a batch because of one bad event, the batch is written again one
//! event at a time so that only the bad one fails. Delivery goes through the registry's
//! sequencer, which this module also ticks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::{Durable, DurableError, Outcome, Publish, Reply};
use crate::bus::Bus;
use crate::error::{FrameError, PublishError};
use crate::protocol::{self, Stamp};
use crate::registry::Registry;
use crate::store::events::{Appended, NewEvent, Turn};
use crate::store::{Store, StoreError};

/// Batches written at once on PostgreSQL (each on its own connection; results handled in order).
/// SQLite has one writer at a time, so a second batch would only wait for the lock: 1 there.
const PIPELINE: usize = 2;

/// One batch after its transaction(s): an outcome per publish, in batch order.
struct Committed {
    batch: Vec<Publish>,
    outcomes: Vec<Outcome>,
    seconds: f64,
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
            sig: p.sig.as_deref(),
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

impl Durable {
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
                self.metrics.durable.queue.inc();
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
        let p = Publish { channel, event, data, from: None, msg_id, origin: 0, ts, reply: Reply::Http(tx), sig: None };
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
    pub(super) async fn writer(
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
                    self.metrics.durable.queue.sub(batch.len() as u64);
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
        self.metrics.durable.commit_seconds.observe(c.seconds);
        self.metrics.durable.batches.inc();
        let Committed { batch, outcomes, .. } = c;
        let mut stored = false;
        let (mut failed, mut n_failed) = (None::<String>, 0u64);
        // For count retention: each channel's last seq (batches are handled in seq order).
        let mut touched = self.touched.lock().ok();
        for (p, outcome) in batch.into_iter().zip(outcomes) {
            match &outcome {
                Outcome::Stored(a) if a.duplicate => self.metrics.durable.duplicates.inc(),
                Outcome::Stored(a) => {
                    stored = true;
                    self.metrics.durable.events.inc();
                    deliver(bus, registry, &p, a.seq);
                    if let Some(w) = &self.webhooks {
                        w.stored(&p.channel, a.seq, p.from.as_ref().map(|(u, _)| &**u));
                    }
                    if let Some(t) = touched.as_mut() {
                        t.insert(p.channel.clone(), a.seq);
                    }
                }
                Outcome::Refused(e) => {
                    tracing::warn!(error = %e, channel = %p.channel, "durable event refused by the database; its publisher gets `bad_request`");
                    self.metrics.durable.refused.inc();
                }
                Outcome::Failed(e) => {
                    failed.get_or_insert_with(|| e.clone());
                    self.metrics.durable.failed.inc();
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
        let events = self.metrics.durable.events.get();
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
        p.sig.as_deref(),
    );
    crate::channel::for_each_route(&p.channel, |route| {
        registry.fan_out_durable(route, &p.channel, seq, Message::Text(frame.clone()), p.origin);
        bus.publish_remote(route, Message::Text(frame.clone()), p.origin);
    });
}

/// Most events read from the store to fill one sequencer gap.
const REPAIR_MAX: u64 = 1000;

/// Releases sequencer gaps every few milliseconds while any stream waits; sleeps otherwise (an
/// idle gateway does not wake up for it). A gap after events already delivered is first filled
/// from the store: an event another instance committed whose live path was lost (it died before
/// relaying it, or Redis dropped it) still reaches the connections here, in order. Forgets idle
/// streams now and then.
pub(super) async fn sequencer_ticks(registry: Arc<Registry>, store: Store) {
    let mut last_evict = Instant::now();
    loop {
        if !registry.sequencer_waiting() {
            // Woken by the first event that has to wait; the evict pass runs at most this late.
            let _ = tokio::time::timeout(Duration::from_secs(10), registry.sequencer_wait()).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        registry.sequencer_tick(|route, channel, first, last| {
            let (registry, store) = (registry.clone(), store.clone());
            let (route, channel) = (route.to_string(), channel.to_string());
            tokio::spawn(async move {
                let want = (last + 1 - first).min(REPAIR_MAX);
                match store.events(&channel, first - 1, Some(last + 1), want, false).await {
                    Ok(events) => {
                        for e in &events {
                            let frame = Message::Text(super::stored_frame(&channel, e));
                            registry.fan_out_durable(&route, &channel, e.seq, frame, 0);
                        }
                        if !events.is_empty() {
                            tracing::debug!(%channel, first, last, found = events.len(), "sequencer gap filled from the store");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, %channel, "sequencer gap not readable from the store"),
                }
            });
        });
        if last_evict.elapsed() >= Duration::from_secs(10) {
            registry.sequencer_evict_idle();
            last_evict = Instant::now();
        }
    }
}

fn respond(p: Publish, outcome: Outcome) {
    match p.reply {
        Reply::Conn { conn, id } => {
            // Refusals are answered through the one error mapping (error.rs), like every
            // other publish error.
            let frame = match outcome {
                Outcome::Stored(a) => {
                    Message::Text(protocol::durable_ack(&id, &p.channel, a.seq, p.msg_id.as_deref(), a.duplicate))
                }
                Outcome::Refused(_) => FrameError::from(PublishError::Refused).frame(&id),
                Outcome::Failed(_) => FrameError::from(PublishError::NotStored).frame(&id),
            };
            conn.push(frame);
        }
        Reply::Http(tx) => {
            let _ = tx.send(outcome);
        }
    }
}
