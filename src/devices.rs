//! Device bookkeeping off the hot path: sightings go through a bounded queue to one writer that
//! upserts them in batches (one transaction each); revoked devices, devices with a registered key
//! and token generations are checked in memory. A connection waits for its own "online" sighting to be committed before
//! `welcome`, so a device that has connected is already listed (and revocable).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::devices::Seen;
use crate::store::Store;

const QUEUE: usize = 65_536;
const BATCH: usize = 1024;
/// Beyond this many queued sightings a new connection does not wait for its own.
const WAIT_BACKLOG: usize = 64;

/// Most (user, device) pairs remembered as stored; past it the memory starts over.
const KNOWN: usize = 262_144;

pub struct Devices {
    tx: mpsc::Sender<(Seen, Option<oneshot::Sender<bool>>)>,
    /// Hashes of (user, device) pairs whose row is committed: their reconnects need not wait
    /// for the writer (about 16 bytes each, at most [`KNOWN`]).
    known: dashmap::DashSet<u64>,
    hasher: std::collections::hash_map::RandomState,
}

impl Devices {
    /// Loads the revoked devices into the registry's check and starts the writer.
    pub async fn start(
        store: Store,
        registry: &crate::registry::Registry,
    ) -> Result<Arc<Devices>, crate::store::StoreError> {
        for (u, d) in store.revoked_devices().await? {
            registry.mark_revoked(&u, &d);
        }
        for (u, d, pk) in store.keyed_devices().await? {
            registry.mark_keyed(&u, &d, &pk);
        }
        for (u, gen) in store.token_generations().await? {
            registry.set_token_gen(&u, gen);
        }
        let (tx, mut rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            let mut batch: Vec<(Seen, Option<oneshot::Sender<bool>>)> = Vec::with_capacity(BATCH);
            let mut seen = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                seen.extend(batch.iter().map(|(s, _)| s.clone()));
                let stored = match store.touch_devices(&seen).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, n = batch.len(), "device sightings not stored");
                        false
                    }
                };
                // Waiters are released either way: a failed write must not hold connections.
                for (_, done) in batch.drain(..) {
                    if let Some(done) = done {
                        let _ = done.send(stored);
                    }
                }
                seen.clear();
            }
        });
        Ok(Arc::new(Devices { tx, known: dashmap::DashSet::new(), hasher: Default::default() }))
    }

    fn sighting(user_id: &str, device_id: &str, name: Option<&str>, online: bool) -> Seen {
        Seen {
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
            name: name.map(str::to_string),
            online,
            at: crate::util::now_millis() as i64,
        }
    }

    /// Queues a sighting (dropped with a warning if the writer is far behind).
    pub fn seen(&self, user_id: &str, device_id: &str, name: Option<&str>, online: bool) {
        if self.tx.try_send((Self::sighting(user_id, device_id, name, online), None)).is_err() {
            tracing::warn!("device writer queue full; a sighting was dropped");
        }
    }

    /// Queues an "online" sighting and, for a device whose row this instance has not yet seen
    /// stored, resolves once the batch holding it is committed (at most `wait`). Reconnects of a
    /// known device do not wait (its row is already listed), nor does anyone while the writer
    /// has a backlog of more than [`WAIT_BACKLOG`] sightings (a connect storm).
    pub async fn online(&self, user_id: &str, device_id: &str, name: Option<&str>, wait: std::time::Duration) {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one((user_id, device_id));
        // During a connect storm (the writer has a backlog) nobody waits: each commit would
        // hold every new connection for the length of the backlog.
        let backlog = QUEUE - self.tx.capacity();
        if self.known.contains(&key) || backlog > WAIT_BACKLOG {
            self.seen(user_id, device_id, name, true);
            return;
        }
        let (done, committed) = oneshot::channel();
        if self.tx.try_send((Self::sighting(user_id, device_id, name, true), Some(done))).is_err() {
            tracing::warn!("device writer queue full; a sighting was dropped");
            return;
        }
        if let Ok(Ok(true)) = tokio::time::timeout(wait, committed).await {
            if self.known.len() >= KNOWN {
                self.known.clear();
            }
            self.known.insert(key);
        }
    }
}
