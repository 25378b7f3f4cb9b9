//! The authorization hook: asks the application's backend whether a user may subscribe or
//! publish on a channel the token does not grant (`SYNCGATE_AUTHZ_URL`). Decisions are cached
//! per (user, channel, action), identical lookups in flight share one request, the number of
//! requests in flight is bounded, and a hook that times out, fails or answers garbage never
//! allows.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{FutureExt, Shared};
use http_body_util::{BodyExt, Full, Limited};

use crate::channel::Action;
use crate::config::AuthzConfig;
use crate::metrics::Metrics;

/// Decisions kept (per instance). When full, expired ones are dropped; if none has expired, the
/// new decision is not cached (the next lookup asks again).
pub const MAX_CACHED: usize = 100_000;
/// The longest decision lifetime a hook may ask for.
pub const MAX_TTL_SECS: u64 = 3600;
/// The largest answer read from the hook.
const MAX_ANSWER_BYTES: usize = 4096;

/// What the hook decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Timed out, failed or answered garbage: the client gets `unavailable`.
    Unavailable,
}

/// Cached decisions: allow or deny, and until when.
struct Cache {
    decisions: HashMap<Key, (bool, Instant)>,
    /// When the expired decisions were last dropped (at most once a second when full).
    purged: Instant,
}

/// (user, channel, action).
type Key = (Arc<str>, String, Action);
type Lookup = Shared<Pin<Box<dyn std::future::Future<Output = Decision> + Send>>>;

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// The hook; cheap to share behind an `Arc`. Both maps sit behind std mutexes held only for a
/// lookup or an insert, never across an await. A lookup in flight is a task of its own, shared by
/// every waiter for the same (user, channel, action); it caches its decision, then leaves the
/// in-flight map (so each entry lives at most the timeout).
pub struct Hook {
    inner: Arc<Inner>,
}

struct Inner {
    url: http::Uri,
    token: Option<String>,
    default_ttl: Duration,
    timeout: Duration,
    client: HttpsClient,
    permits: tokio::sync::Semaphore,
    cache: Mutex<Cache>,
    in_flight: Mutex<HashMap<Key, Lookup>>,
    metrics: Arc<Metrics>,
    /// When a failure was last logged (ms since the epoch): at most one warning a second, so a
    /// dead hook cannot flood the log (every failure is counted in the metrics).
    last_warned: std::sync::atomic::AtomicU64,
}

impl Hook {
    /// `None` without `SYNCGATE_AUTHZ_URL` (the config reader has checked the URL).
    pub fn new(config: &AuthzConfig, metrics: Arc<Metrics>) -> Option<Hook> {
        let url: http::Uri = config.url.as_deref()?.parse().ok()?;
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Some(Hook {
            inner: Arc::new(Inner {
                url,
                token: config.token.clone(),
                default_ttl: config.cache,
                timeout: config.timeout,
                client,
                permits: tokio::sync::Semaphore::new(config.concurrency),
                cache: Mutex::new(Cache { decisions: HashMap::new(), purged: Instant::now() }),
                in_flight: Mutex::new(HashMap::new()),
                metrics,
                last_warned: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// A cached, unexpired decision (counted as a cache hit).
    pub fn cached(&self, user: &str, channel: &str, action: Action) -> Option<bool> {
        let key: Key = (Arc::from(user), channel.to_string(), action);
        let cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (allow, until) = cache.decisions.get(&key)?;
        (*until > Instant::now()).then(|| {
            self.inner.metrics.authz_cache_hits.inc();
            *allow
        })
    }

    /// The decision for `user` on `channel`: from the cache, from a lookup already in flight, or
    /// from a new request. `device` is informational.
    pub async fn decide(&self, user: Arc<str>, device: Arc<str>, channel: String, action: Action) -> Decision {
        if let Some(allow) = self.cached(&user, &channel, action) {
            return if allow { Decision::Allow } else { Decision::Deny };
        }
        let key: Key = (user, channel, action);
        let lookup = {
            let mut in_flight = self.inner.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match in_flight.get(&key) {
                Some(l) => l.clone(),
                None => {
                    // A task of its own: the request finishes (and frees its slot) within the
                    // timeout even when every waiter has gone, and removes its entry itself.
                    let inner = self.inner.clone();
                    let k = key.clone();
                    let task = tokio::spawn(async move {
                        let decision = inner.ask(k.clone(), device).await;
                        inner.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
                        decision
                    });
                    let fut: Pin<Box<dyn std::future::Future<Output = Decision> + Send>> =
                        Box::pin(async move { task.await.unwrap_or(Decision::Unavailable) });
                    let l = fut.shared();
                    in_flight.insert(key, l.clone());
                    l
                }
            }
        };
        lookup.await
    }
}

/// The hook's answer: `{"allow":bool,"ttl_secs":N?}`.
#[derive(serde::Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

impl Inner {
    /// True at most once a second (see `last_warned`).
    fn may_warn(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = crate::util::now_millis();
        let last = self.last_warned.load(Ordering::Relaxed);
        now >= last + 1000 && self.last_warned.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    async fn ask(&self, key: Key, device: Arc<str>) -> Decision {
        let started = Instant::now();
        let answer = tokio::time::timeout(self.timeout, self.request(&key, &device)).await;
        self.metrics.authz_seconds.observe(started.elapsed().as_secs_f64());
        let answer = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(why)) => {
                self.metrics.authz_failures.inc();
                if self.may_warn() {
                    tracing::warn!(url = %self.url, channel = %key.1, why, "authorization hook failed");
                }
                return Decision::Unavailable;
            }
            Err(_) => {
                self.metrics.authz_failures.inc();
                if self.may_warn() {
                    tracing::warn!(url = %self.url, channel = %key.1, "authorization hook timed out");
                }
                return Decision::Unavailable;
            }
        };
        let ttl = answer.ttl_secs.map_or(self.default_ttl, |s| Duration::from_secs(s.min(MAX_TTL_SECS)));
        if !ttl.is_zero() {
            self.remember(key, answer.allow, ttl);
        }
        if answer.allow {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }

    async fn request(&self, key: &Key, device: &str) -> Result<Answer, &'static str> {
        let _permit = self.permits.acquire().await.map_err(|_| "closed")?;
        self.metrics.authz_requests.inc();
        let body = serde_json::json!({
            "action": key.2.as_str(),
            "user_id": &*key.0,
            "device_id": device,
            "channel": key.1,
        });
        let mut req = http::Request::post(self.url.clone()).header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).map_err(|_| "bad request")?;
        let resp = self.client.request(req).await.map_err(|_| "request failed")?;
        if resp.status() != http::StatusCode::OK {
            return Err("status is not 200");
        }
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| "answer unreadable or too large")?
            .to_bytes();
        serde_json::from_slice::<Answer>(&bytes).map_err(|_| "answer is not {\"allow\":bool,\"ttl_secs\":N?}")
    }

    fn remember(&self, key: Key, allow: bool, ttl: Duration) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.decisions.len() >= MAX_CACHED && !cache.decisions.contains_key(&key) {
            if now.duration_since(cache.purged) >= Duration::from_secs(1) {
                cache.decisions.retain(|_, (_, until)| *until > now);
                cache.purged = now;
            }
            if cache.decisions.len() >= MAX_CACHED {
                return;
            }
        }
        cache.decisions.insert(key, (allow, now + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> Hook {
        let mut config = crate::config::Config::default().authz;
        config.url = Some("http://127.0.0.1:1/authz".into());
        Hook::new(&config, Arc::new(Metrics::default())).expect("a hook")
    }

    fn key(i: usize) -> Key {
        (Arc::from("u"), format!("doc:{i}"), Action::Subscribe)
    }

    #[test]
    fn the_cache_is_bounded_and_expires() {
        let h = hook();
        for i in 0..MAX_CACHED + 10 {
            h.inner.remember(key(i), true, Duration::from_secs(60));
        }
        let len = h.inner.cache.lock().unwrap().decisions.len();
        assert_eq!(len, MAX_CACHED, "full: new decisions are not cached");
        assert_eq!(h.cached("u", "doc:1", Action::Subscribe), Some(true));
        assert_eq!(h.cached("u", "doc:1", Action::Publish), None);
        assert_eq!(h.cached("u", &format!("doc:{}", MAX_CACHED + 5), Action::Subscribe), None);
        // Expired decisions are not answered, and make room once a purge may run.
        let h = hook();
        for i in 0..MAX_CACHED {
            h.inner.remember(key(i), false, Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(h.cached("u", "doc:1", Action::Subscribe), None);
        h.inner.cache.lock().unwrap().purged = Instant::now() - Duration::from_secs(2);
        h.inner.remember(key(MAX_CACHED), true, Duration::from_secs(60));
        assert_eq!(h.inner.cache.lock().unwrap().decisions.len(), 1);
    }
}
