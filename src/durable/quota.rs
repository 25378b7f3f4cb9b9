//! Per-user budget of durable publishes: `SYNCGATE_DURABLE_EVENTS_PER_MIN` events and
//! `SYNCGATE_DURABLE_BYTES_PER_MIN` bytes (`data` plus `event`) per fixed clock minute, across
//! every connection of the user and every instance.
//!
//! - With the Redis bus the counters live in Redis (one hash per user and minute, checked and
//!   counted by one script: one round trip), so instances share the budget.
//! - With the in-process bus — or while Redis is unreachable — they live here, in a sharded map
//!   swept when the minute changes (so it holds at most the users who published this minute).
//! - Only an admitted publish is counted: a refused one does not use up the budget.
//! - The server API (`POST /api/publish`) does not go through it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::DashMap;

use crate::bus::Bus;
use crate::metrics::Metrics;

pub struct Quota {
    events_max: u64,
    bytes_max: u64,
    bus: Arc<dyn Bus>,
    /// user → (minute, events, bytes). A `DashMap`: its shard lock is held only for the update,
    /// never across an await.
    local: DashMap<Arc<str>, (u64, u64, u64)>,
    /// The minute of the last sweep of `local`.
    swept: AtomicU64,
    /// Counts refusals (`syncgate_durable_rate_limited_total`).
    metrics: Arc<Metrics>,
}

impl Quota {
    pub fn new(events_max: u64, bytes_max: u64, bus: Arc<dyn Bus>, metrics: Arc<Metrics>) -> Quota {
        Quota { events_max, bytes_max, bus, local: DashMap::with_shard_amount(32), swept: AtomicU64::new(0), metrics }
    }

    /// Takes one event of `bytes` from `user`'s budget; false (and counted in
    /// `syncgate_durable_rate_limited_total`) when it is used up for this minute.
    pub async fn check(&self, user: &Arc<str>, bytes: u64) -> bool {
        let ok = match self.bus.take_durable_quota(user, bytes, self.events_max, self.bytes_max).await {
            Some(ok) => ok,
            None => self.check_local(user, bytes, crate::util::now_millis() / 60_000),
        };
        if !ok {
            self.metrics.durable.rate_limited.inc();
        }
        ok
    }

    fn check_local(&self, user: &Arc<str>, bytes: u64, minute: u64) -> bool {
        if self.swept.swap(minute, Relaxed) != minute {
            self.local.retain(|_, (m, _, _)| *m == minute);
        }
        let mut e = self.local.entry(user.clone()).or_insert((minute, 0, 0));
        if e.0 != minute {
            *e = (minute, 0, 0);
        }
        if e.1 + 1 > self.events_max || e.2.saturating_add(bytes) > self.bytes_max {
            return false;
        }
        e.1 += 1;
        e.2 += bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(events: u64, bytes: u64) -> Quota {
        let registry = Arc::new(crate::registry::Registry::new());
        Quota::new(events, bytes, Arc::new(crate::bus::LocalBus::new(registry)), Arc::default())
    }

    #[test]
    fn events_bytes_and_minutes() {
        let q = quota(3, 100);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert!(q.check_local(&a, 10, 7));
        assert!(q.check_local(&a, 10, 7));
        assert!(q.check_local(&a, 10, 7));
        assert!(!q.check_local(&a, 10, 7));
        assert!(q.check_local(&b, 100, 7));
        // A refused publish is not counted: a smaller one still fits.
        assert!(!q.check_local(&b, 1, 7));
        let c: Arc<str> = Arc::from("c");
        assert!(!q.check_local(&c, 101, 7));
        assert!(q.check_local(&c, 100, 7));
        // A new minute: a fresh budget, and last minute's users are swept.
        assert!(q.check_local(&a, 10, 8));
        assert_eq!(q.local.len(), 1);
    }
}
