//! The Redis bus that joins instances into a cluster: its URL (unset: the in-process bus), key
//! prefix, publish batching and presence TTL.

use std::time::Duration;

use super::reader::Reader;
use super::{mask_url, ms};

/// `redis://[user:password@]host:port[/db]`: the Redis bus (unset: the in-process bus).
pub const REDIS_URL: &str = "REDIS_URL";
/// Prefix of every Redis channel and key.
pub const REDIS_PREFIX: &str = "SYNCGATE_REDIS_PREFIX";
/// How long the batcher collects publishes before one pipelined flush, microseconds.
pub const REDIS_FLUSH_US: &str = "SYNCGATE_REDIS_FLUSH_US";
/// Members of a crashed instance leave within this.
pub const PRESENCE_TTL_MS: &str = "SYNCGATE_PRESENCE_TTL_MS";

/// The cluster bus.
#[derive(Clone)]
pub struct RedisConfig {
    /// `REDIS_URL`: the Redis bus; `None` is the in-process bus.
    pub url: Option<String>,
    /// Prefix of every Redis channel and key.
    pub prefix: String,
    /// How long publishes are collected before one pipelined flush (zero: at once).
    pub flush: Duration,
    /// Presence entries of an instance expire after this unless refreshed.
    pub presence_ttl: Duration,
}

impl RedisConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let url = r.raw(REDIS_URL).map(str::to_string);
        if let Some(u) = &url {
            if !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("redis-sentinel://")) {
                r.error(format!("{REDIS_URL} must be a redis:// URL"));
            }
        }
        let prefix = r.raw(REDIS_PREFIX).unwrap_or("syncgate:").to_string();
        if prefix.len() > 64 || prefix.contains(char::is_whitespace) {
            r.error(format!("{REDIS_PREFIX} must be at most 64 characters without spaces"));
        }
        let flush = Duration::from_micros(r.ranged(REDIS_FLUSH_US, 200, 0, 100_000));
        let presence_ttl = Duration::from_millis(r.ranged(PRESENCE_TTL_MS, 15_000, 200, 3_600_000));
        RedisConfig { url, prefix, flush, presence_ttl }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.extend([
            (REDIS_URL, self.url.as_deref().map(mask_url).unwrap_or_else(|| "(unset: in-process bus)".into())),
            (REDIS_PREFIX, self.prefix.clone()),
            (REDIS_FLUSH_US, self.flush.as_micros().to_string()),
            (PRESENCE_TTL_MS, ms(self.presence_ttl)),
        ]);
    }
}
