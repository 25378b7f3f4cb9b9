//! Read positions: the `seq` up to which each device has read each durable channel. `ack`
//! frames only raise an in-memory entry; a flusher writes the pending entries in one batch at
//! most every [`POSITION_FLUSH`], and keeps them for the next flush if the write fails.

use std::sync::Arc;
use std::time::Duration;

use super::Durable;
use crate::store::StoreError;

/// How often coalesced read positions are written.
const POSITION_FLUSH: Duration = Duration::from_millis(100);

/// (user, device, channel) of a read position.
pub(super) type PositionKey = (Arc<str>, Arc<str>, String);

impl Durable {
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

    pub(super) async fn position_flusher(self: Arc<Self>) {
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
}
