//! Redis subscriptions: one SUBSCRIBE per channel with local members (SSUBSCRIBE, sharded
//! pub/sub, on a Redis Cluster: the shard owning the channel carries it alone; the control
//! channel stays classic, it reaches every instance), reference-counted, and every needed
//! channel subscribed again after a reconnect.
//!
//! The counts sit behind one async lock (`RedisBus::subs`) held across the SUBSCRIBE/UNSUBSCRIBE
//! round trip, so a subscribe racing an unsubscribe of the same channel can never leave the
//! instance without the subscription it counts (or with one it does not).

use std::sync::Arc;

use fred::prelude::*;

use super::RedisBus;

impl RedisBus {
    /// Whether `key` travels on sharded pub/sub: every channel on a Redis Cluster but the
    /// control channel.
    pub(super) fn sharded(&self, key: &str) -> bool {
        self.cluster && !key.ends_with(super::receiver::CONTROL)
    }

    /// One more local interest in `key`; the first one subscribes (confirmed before returning).
    pub(super) async fn subscribe_key(&self, key: String) {
        let mut subs = self.subs.lock().await;
        let n = subs.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            let done = match self.sharded(&key) {
                true => self.subscriber.ssubscribe(key.as_str()).await,
                false => self.subscriber.subscribe(key.as_str()).await,
            };
            if let Err(e) = done {
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
            let done = match self.sharded(&key) {
                true => self.subscriber.sunsubscribe(key.as_str()).await,
                false => self.subscriber.unsubscribe(key.as_str()).await,
            };
            if let Err(e) = done {
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
            let (sharded, classic): (Vec<String>, Vec<String>) = subs.keys().cloned().partition(|k| self.sharded(k));
            if !classic.is_empty() {
                if let Err(e) = self.subscriber.subscribe(classic).await {
                    tracing::warn!(error = %e, "Redis resubscribe failed");
                }
            }
            // One SSUBSCRIBE per channel: a command's channels must share a slot.
            for key in sharded {
                if let Err(e) = self.subscriber.ssubscribe(key.as_str()).await {
                    tracing::warn!(channel = %key, error = %e, "Redis resubscribe failed");
                }
            }
            drop(subs);
            tracing::info!("Redis reconnected; channels resubscribed");
        }
    }
}
