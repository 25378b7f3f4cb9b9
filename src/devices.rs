//! Device bookkeeping off the hot path: sightings go through a bounded queue to one writer that
//! upserts them in batches (one transaction each); revoked devices are checked in memory.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::store::devices::Seen;
use crate::store::Store;

const QUEUE: usize = 65_536;
const BATCH: usize = 512;

pub struct Devices {
    tx: mpsc::Sender<Seen>,
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
        let (tx, mut rx) = mpsc::channel::<Seen>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                if let Err(e) = store.touch_devices(&batch).await {
                    tracing::warn!(error = %e, n = batch.len(), "device sightings not stored");
                }
                batch.clear();
            }
        });
        Ok(Arc::new(Devices { tx }))
    }

    /// Queues a sighting (dropped with a warning if the writer is far behind).
    pub fn seen(&self, user_id: &str, device_id: &str, name: Option<&str>, online: bool) {
        let s = Seen {
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
            name: name.map(str::to_string),
            online,
            at: crate::auth::now_millis() as i64,
        };
        if self.tx.try_send(s).is_err() {
            tracing::warn!("device writer queue full; a sighting was dropped");
        }
    }
}
