//! Webhooks: where syncgate tells the application about presence transitions and messages
//! stored for recipients with no connection, and how hard it tries.

use std::time::Duration;

use super::reader::Reader;

/// The receiver's URL (`http://` or `https://`); unset: no webhooks.
pub const WEBHOOK_URL: &str = "SYNCGATE_WEBHOOK_URL";
/// The HMAC-SHA256 key of `X-Syncgate-Signature` (a secret; required with the URL).
pub const WEBHOOK_SECRET: &str = "SYNCGATE_WEBHOOK_SECRET";
/// How long a batch is retried (exponential backoff) before it is given up, in seconds.
pub const WEBHOOK_RETRY_SECS: &str = "SYNCGATE_WEBHOOK_RETRY_SECS";
/// Events waiting for delivery; when full, new events are dropped (counted).
pub const WEBHOOK_QUEUE: &str = "SYNCGATE_WEBHOOK_QUEUE";
/// One delivery attempt that takes longer fails (and is retried).
pub const WEBHOOK_TIMEOUT_MS: &str = "SYNCGATE_WEBHOOK_TIMEOUT_MS";
/// Events per POST at most.
pub const WEBHOOK_BATCH: &str = "SYNCGATE_WEBHOOK_BATCH";

/// Webhooks.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The receiver (`None`: no webhooks, nothing is tracked).
    pub url: Option<String>,
    /// The signing key (masked in `describe`).
    pub secret: Option<String>,
    /// Total retry time of one batch.
    pub retry: Duration,
    /// Queue capacity, in events.
    pub queue: usize,
    /// Per-attempt deadline.
    pub timeout: Duration,
    /// Events per POST at most.
    pub batch: usize,
}

impl WebhookConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let url = r.raw(WEBHOOK_URL).map(str::to_string);
        if let Some(u) = &url {
            let ok = u.parse::<http::Uri>().is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                r.error(format!("{WEBHOOK_URL}: {u:?} is not an http:// or https:// URL"));
            }
        }
        let secret = r.raw(WEBHOOK_SECRET).map(str::to_string);
        match (&url, &secret) {
            (Some(_), None) => r.error(format!("{WEBHOOK_SECRET} is required with {WEBHOOK_URL}")),
            (None, Some(_)) => r.error(format!("{WEBHOOK_SECRET} is set but {WEBHOOK_URL} is not")),
            _ => {}
        }
        let retry = Duration::from_secs(r.ranged(WEBHOOK_RETRY_SECS, 300, 0, 86_400));
        let queue = r.ranged(WEBHOOK_QUEUE, 10_000, 1, 1_000_000) as usize;
        let timeout = Duration::from_millis(r.ranged(WEBHOOK_TIMEOUT_MS, 5000, 1, 60_000));
        let batch = r.ranged(WEBHOOK_BATCH, 100, 1, 10_000) as usize;
        WebhookConfig { url, secret, retry, queue, timeout, batch }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.extend([
            (WEBHOOK_URL, self.url.as_deref().map(super::mask_url).unwrap_or_else(|| "(unset)".into())),
            (WEBHOOK_SECRET, if self.secret.is_some() { "***".into() } else { "(unset)".into() }),
            (WEBHOOK_RETRY_SECS, self.retry.as_secs().to_string()),
            (WEBHOOK_QUEUE, self.queue.to_string()),
            (WEBHOOK_TIMEOUT_MS, self.timeout.as_millis().to_string()),
            (WEBHOOK_BATCH, self.batch.to_string()),
        ]);
    }
}
