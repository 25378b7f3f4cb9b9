//! Durable streams: which namespaces are durable, group commits and their queue, per-user
//! publish quotas, replay and history paging, and retention.

use std::time::Duration;

use super::reader::Reader;

/// Namespaces whose channels are durable streams (unset: `dm`; `none` or empty: none).
pub const DURABLE_NAMESPACES: &str = "SYNCGATE_DURABLE_NAMESPACES";
/// Largest durable event (`data` plus `event`) a client may publish.
pub const DURABLE_MAX_EVENT_BYTES: &str = "SYNCGATE_DURABLE_MAX_EVENT_BYTES";
/// Durable events one user may publish per minute.
pub const DURABLE_EVENTS_PER_MIN: &str = "SYNCGATE_DURABLE_EVENTS_PER_MIN";
/// Bytes of durable events one user may publish per minute.
pub const DURABLE_BYTES_PER_MIN: &str = "SYNCGATE_DURABLE_BYTES_PER_MIN";
/// Most events one group commit writes.
pub const DURABLE_BATCH_MAX: &str = "SYNCGATE_DURABLE_BATCH_MAX";
/// Durable publishes waiting for a commit.
pub const DURABLE_QUEUE: &str = "SYNCGATE_DURABLE_QUEUE";
/// Bytes of durable publishes waiting for a commit.
pub const DURABLE_QUEUE_BYTES: &str = "SYNCGATE_DURABLE_QUEUE_BYTES";
/// Most events a `subscribe` with `since` replays.
pub const REPLAY_MAX: &str = "SYNCGATE_REPLAY_MAX";
/// Most bytes of events in one history page.
pub const HISTORY_PAGE_BYTES: &str = "SYNCGATE_HISTORY_PAGE_BYTES";
/// Durable events older than this are deleted (0: no age limit).
pub const HISTORY_TTL_SECS: &str = "SYNCGATE_HISTORY_TTL_SECS";
/// Durable events kept per channel (0: no count limit).
pub const HISTORY_MAX: &str = "SYNCGATE_HISTORY_MAX";
/// How often the retention job runs.
pub const RETENTION_INTERVAL_SECS: &str = "SYNCGATE_RETENTION_INTERVAL_SECS";

/// Durable streams.
#[derive(Clone)]
pub struct DurableConfig {
    /// Namespaces whose channels are durable streams (`dm` by default; `user` may be added).
    pub namespaces: Vec<String>,
    /// Largest durable event (`data` plus `event`) a client may publish; larger → `too_large`.
    pub max_event_bytes: usize,
    /// Durable events a user may publish per minute (all connections and instances).
    pub events_per_min: u64,
    /// Bytes (`data` plus `event`) of durable events a user may publish per minute.
    pub bytes_per_min: u64,
    /// Most events one group commit writes.
    pub batch_max: usize,
    /// Durable publishes waiting for a commit; beyond it publishes get `unavailable`.
    pub queue: usize,
    /// Payload bytes of the durable publishes waiting for a commit (the same policy).
    pub queue_bytes: u64,
    /// Most events a `subscribe` with `since` replays; beyond it the reply says `recovered:false`.
    pub replay_max: u64,
    /// Most bytes of events one history page holds (at least one event); then `has_more`.
    pub history_page_bytes: usize,
    /// Events older than this are deleted (0: no age limit).
    pub history_ttl_secs: u64,
    /// Events kept per channel (0: no count limit).
    pub history_max: u64,
    /// How often the retention job runs.
    pub retention_interval: Duration,
}

impl DurableConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let namespaces = namespaces(r);
        DurableConfig {
            namespaces,
            max_event_bytes: r.ranged(DURABLE_MAX_EVENT_BYTES, 262_144, 64, 64 << 20) as usize,
            events_per_min: r.ranged(DURABLE_EVENTS_PER_MIN, 600, 1, 1 << 40),
            bytes_per_min: r.ranged(DURABLE_BYTES_PER_MIN, 16 << 20, 1024, 1 << 50),
            batch_max: r.ranged(DURABLE_BATCH_MAX, 1000, 1, 100_000) as usize,
            queue: r.ranged(DURABLE_QUEUE, 65_536, 1, 1 << 24) as usize,
            queue_bytes: r.ranged(DURABLE_QUEUE_BYTES, 256 << 20, 1024, 1 << 40),
            replay_max: r.ranged(REPLAY_MAX, 1000, 1, 100_000),
            history_page_bytes: r.ranged(HISTORY_PAGE_BYTES, 4 << 20, 1024, 1 << 30) as usize,
            history_ttl_secs: r.ranged(HISTORY_TTL_SECS, 30 * 86_400, 0, 100 * 365 * 86_400),
            history_max: r.ranged(HISTORY_MAX, 10_000, 0, 1 << 40),
            retention_interval: Duration::from_secs(r.ranged(RETENTION_INTERVAL_SECS, 10, 1, 86_400)),
        }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.extend([
            (DURABLE_NAMESPACES, self.namespaces.join(",")),
            (DURABLE_MAX_EVENT_BYTES, self.max_event_bytes.to_string()),
            (DURABLE_EVENTS_PER_MIN, self.events_per_min.to_string()),
            (DURABLE_BYTES_PER_MIN, self.bytes_per_min.to_string()),
            (DURABLE_BATCH_MAX, self.batch_max.to_string()),
            (DURABLE_QUEUE, self.queue.to_string()),
            (DURABLE_QUEUE_BYTES, self.queue_bytes.to_string()),
            (REPLAY_MAX, self.replay_max.to_string()),
            (HISTORY_PAGE_BYTES, self.history_page_bytes.to_string()),
            (HISTORY_TTL_SECS, self.history_ttl_secs.to_string()),
            (HISTORY_MAX, self.history_max.to_string()),
            (RETENTION_INTERVAL_SECS, self.retention_interval.as_secs().to_string()),
        ]);
    }
}

/// Unset: `dm`. Set but empty (like `none` or `-`): no durable namespace at all.
fn namespaces(r: &mut Reader) -> Vec<String> {
    let namespaces = match r.raw(DURABLE_NAMESPACES) {
        None if r.is_set(DURABLE_NAMESPACES) => Vec::new(),
        None => vec!["dm".to_string()],
        Some("-" | "none") => Vec::new(),
        Some(_) => r.list(DURABLE_NAMESPACES),
    };
    for ns in &namespaces {
        if !crate::channel::valid_namespace(ns) {
            r.error(format!("{DURABLE_NAMESPACES}: {ns:?} is not a namespace"));
        }
    }
    namespaces
}
