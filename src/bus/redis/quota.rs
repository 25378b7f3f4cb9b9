//! The durable-event quota shared by every instance: events and bytes per user and minute,
//! counted atomically in Redis (`durable_quota.lua`).

use fred::prelude::*;

use super::RedisBus;

const DURABLE_QUOTA_LUA: &str = include_str!("durable_quota.lua");

impl RedisBus {
    /// Takes one durable event of `bytes` from `user`'s budget for the current minute:
    /// `Some(false)` when it would exceed a limit (nothing counted), `None` when Redis is
    /// unreachable (the caller counts on this instance alone).
    pub(super) async fn take_quota(&self, user: &str, bytes: u64, events_max: u64, bytes_max: u64) -> Option<bool> {
        let minute = crate::util::now_millis() / 60_000;
        let key = format!("{}dq:{user}:{minute}", self.settings.prefix);
        let args = vec![key, events_max.to_string(), bytes_max.to_string(), bytes.to_string()];
        match self.client.eval::<i64, _, _, _>(DURABLE_QUOTA_LUA, Vec::<String>::new(), args).await {
            Ok(n) => Some(n == 1),
            // Redis down: the caller counts on this instance alone.
            Err(_) => None,
        }
    }
}
