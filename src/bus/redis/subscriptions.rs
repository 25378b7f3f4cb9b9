//! Redis subscriptions: one SUBSCRIBE per channel with local members, reference-counted, and
//! every needed channel subscribed again after a reconnect.
//!
//! The counts sit behind one async lock (`RedisBus::subs`) held across the SUBSCRIBE/UNSUBSCRIBE
//! round trip, so a subscribe racing an unsubscribe of the same channel can never leave the
//! instance without the subscription it counts (or with one it does not).

use std::sync::Arc;

use fred::prelude::*;

use super::RedisBus;

impl RedisBus {
    /// One more local interest in `key`; the first one subscribes (confirmed before returning).
    pub(super) async fn subscribe_key(&self, key: String) {
        let mut subs = self.subs.lock().await;
        let n = subs.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            if let Err(e) = self.subscriber.subscribe(key.as_str()).await {
                // Kept in `subs`: the reconnect handler subscribes it when Redis is back.
                tracing::warn!(channel = %key, error = %e, "Redis SUBSCRIBE failed");
            }
        }
    }

    /// One local interest in `key` fewer; the last one unsubscribes.
    pub(super) async fn unsubscribe_key(&self, key: String) {
        let mut subs = self.subs.lock().await;
        let Some(n) = subs.get_mut(&key) else { return };
        *n -= 1;
        if *n == 0 {
            subs.remove(&key);
            if let Err(e) = self.subscriber.unsubscribe(key.as_str()).await {
                tracing::debug!(channel = %key, error = %e, "Redis UNSUBSCRIBE failed");
            }
        }
    }

    /// Background task: after each reconnect of the subscriber connection, subscribes every
    /// channel that still has local interest.
    pub(super) async fn resubscribe_on_reconnect(self: Arc<Self>) {
        let mut rx = self.subscriber.reconnect_rx();
        while rx.recv().await.is_ok() {
            self.metrics.bus.reconnects.inc();
            let subs = self.subs.lock().await;
            let keys: Vec<String> = subs.keys().cloned().collect();
            if !keys.is_empty() {
                if let Err(e) = self.subscriber.subscribe(keys).await {
                    tracing::warn!(error = %e, "Redis resubscribe failed");
                }
            }
            drop(subs);
            tracing::info!("Redis reconnected; channels resubscribed");
        }
    }
}
