//! Counters shared by every instance: the durable-event quota (events and bytes per user and
//! minute, counted atomically in Redis by `durable_quota.lua`), plain per-minute counters (one
//! `INCR` + `PEXPIRE` on one key per clock minute), and the signed publishes' nonces, each
//! remembered cluster-wide with `SET key 1 NX PX ttl`.

use fred::prelude::*;

use super::RedisBus;

const DURABLE_QUOTA_LUA: &str = include_str!("durable_quota.lua");

impl RedisBus {
    /// Takes one durable event of `bytes` from `user`'s budget for the current minute:
    /// `Some(false)` when it would exceed a limit (nothing counted), `None` when Redis is
    /// unreachable (the caller counts on this instance alone).
    pub(super) async fn take_quota(&self, user: &str, bytes: u64, events_max: u64, bytes_max: u64) -> Option<bool> {
        let minute = crate::util::now_millis() / 60_000;
        let key = format!("{}dq:{{{user}}}:{minute}", self.settings.prefix);
        let args = vec![events_max.to_string(), bytes_max.to_string(), bytes.to_string()];
        match self.client.eval::<i64, _, _, _>(DURABLE_QUOTA_LUA, vec![key], args).await {
            Ok(n) => Some(n == 1),
            // Redis down: the caller counts on this instance alone.
            Err(_) => None,
        }
    }

    /// Adds one to the counter `name` of the current clock minute (key
    /// `{prefix}count:{name}:{minute}`, expiring after two minutes) and returns its value; `None`
    /// when Redis is unreachable (the caller counts on this instance alone).
    pub(super) async fn incr_minute(&self, name: &str) -> Option<u64> {
        let minute = crate::util::now_millis() / 60_000;
        let key = format!("{}count:{name}:{minute}", self.settings.prefix);
        let pipeline = self.client.pipeline();
        let _: Result<(), _> = pipeline.incr::<(), _>(key.as_str()).await;
        let _: Result<(), _> = pipeline.pexpire::<(), _>(key.as_str(), 120_000, None).await;
        match pipeline.all::<Vec<Value>>().await {
            Ok(replies) => replies.first().and_then(Value::as_i64).map(|n| n.max(0) as u64),
            Err(_) => None,
        }
    }

    /// `SET <prefix>nonce:<key> 1 NX PX ttl`: `Some(true)` when set now, `Some(false)` when it
    /// already existed, `None` when Redis is unreachable (the caller remembers it in memory).
    pub(super) async fn set_nonce(&self, key: &str, ttl_ms: u64) -> Option<bool> {
        let key = format!("{}nonce:{key}", self.settings.prefix);
        let expire = Some(Expiration::PX(ttl_ms.clamp(1, i64::MAX as u64) as i64));
        match self.client.set::<Option<String>, _, _>(key, 1, expire, Some(SetOptions::NX), false).await {
            Ok(reply) => Some(reply.is_some()),
            Err(_) => None,
        }
    }

    /// Deletes a nonce set by [`RedisBus::set_nonce`] (in the background; a failure leaves it
    /// to expire).
    pub(super) fn unset_nonce(&self, key: &str) {
        let key = format!("{}nonce:{key}", self.settings.prefix);
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.del::<i64, _>(key).await;
        });
    }
}
