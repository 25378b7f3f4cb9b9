//! Retention: a background job that, every `SYNCGATE_RETENTION_INTERVAL_SECS`, deletes durable
//! events older than `SYNCGATE_HISTORY_TTL_SECS` and, in the channels this instance appended to
//! since the last pass, those beyond the newest `SYNCGATE_HISTORY_MAX`.

use std::sync::Arc;
use std::time::Duration;

use super::Durable;

impl Durable {
    pub(super) async fn retention(self: Arc<Self>, every: Duration, ttl_secs: u64, max: u64) {
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
        self.metrics.durable.retention_runs.inc();
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
        self.metrics.durable.retention_deleted.add(deleted);
        deleted
    }
}
