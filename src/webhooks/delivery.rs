//! Delivery: one task takes up to `SYNCGATE_WEBHOOK_BATCH` queued events at a time, gives each
//! its id, and POSTs `{"time_ms":T,"events":[…]}` signed with `X-Syncgate-Signature:
//! sha256=<hex HMAC-SHA256 of the body>`. Any 2xx accepts the batch; anything else (a status,
//! a connection error, no answer within `SYNCGATE_WEBHOOK_TIMEOUT_MS`) is retried with the same
//! body after 100 ms, doubling up to 10 s between attempts (the last one when
//! `SYNCGATE_WEBHOOK_RETRY_SECS` have passed since the first); then the batch is given up
//! (counted). Batches go one at
//! a time, so the receiver sees events in the order they were reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

use super::Event;
use crate::config::WebhookConfig;
use crate::metrics::Metrics;

/// First pause between attempts; doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The largest answer body read (and ignored) from the receiver.
const MAX_ANSWER_BYTES: usize = 64 << 10;

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// The delivering side: receiver, key, limits, and the id counter.
pub(super) struct Sender {
    url: http::Uri,
    key: ring::hmac::Key,
    retry: Duration,
    timeout: Duration,
    client: HttpsClient,
    metrics: Arc<Metrics>,
    instance: crate::util::InstanceId,
    next_id: u64,
    /// When a failure was last logged: at most one warning a second.
    last_warned: Option<Instant>,
}

impl Sender {
    pub(super) fn new(
        url: http::Uri,
        secret: &[u8],
        config: &WebhookConfig,
        metrics: Arc<Metrics>,
        instance: crate::util::InstanceId,
    ) -> Sender {
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Sender {
            url,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            retry: config.retry,
            timeout: config.timeout,
            client,
            metrics,
            instance,
            next_id: 0,
            last_warned: None,
        }
    }

    /// The delivery loop: batch, sign, POST with retries; until the queue closes.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Event>, batch_max: usize) {
        let mut batch = Vec::with_capacity(batch_max.min(1024));
        loop {
            batch.clear();
            if rx.recv_many(&mut batch, batch_max).await == 0 {
                return;
            }
            self.metrics.webhooks.queue.sub(batch.len() as u64);
            let body = self.body(&batch);
            self.deliver(body, batch.len() as u64).await;
        }
    }

    /// The batch's JSON, each event with its new id.
    fn body(&mut self, batch: &[Event]) -> Bytes {
        let events: Vec<serde_json::Value> = batch
            .iter()
            .map(|e| {
                let id = format!("{}-{:x}", self.instance, self.next_id);
                self.next_id += 1;
                let mut v = serde_json::json!({"id": id, "name": e.name()});
                match e {
                    Event::ChannelOccupied { channel } | Event::ChannelVacated { channel } => {
                        v["channel"] = (**channel).into();
                    }
                    Event::MemberAdded { channel, user } | Event::MemberRemoved { channel, user } => {
                        v["channel"] = (**channel).into();
                        v["user_id"] = (**user).into();
                    }
                    Event::UserOnline { user } | Event::UserOffline { user } => v["user_id"] = (**user).into(),
                    Event::MessageUndelivered { channel, seq, user, from } => {
                        v["channel"] = (**channel).into();
                        v["seq"] = (*seq).into();
                        v["user_id"] = (**user).into();
                        v["from"] = (**from).into();
                    }
                }
                v
            })
            .collect();
        let body = serde_json::json!({"time_ms": crate::util::now_millis(), "events": events});
        Bytes::from(body.to_string())
    }

    /// POSTs `body` until a 2xx or until the retry time is spent.
    async fn deliver(&mut self, body: Bytes, n: u64) {
        let signature = format!("sha256={}", crate::util::hex(ring::hmac::sign(&self.key, &body).as_ref()));
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = Instant::now();
            let result = tokio::time::timeout(self.timeout, self.post(body.clone(), &signature)).await;
            self.metrics.webhooks.seconds.observe(attempt.elapsed().as_secs_f64());
            let why = match result {
                Ok(Ok(())) => {
                    self.metrics.webhooks.delivered.add(n);
                    return;
                }
                Ok(Err(why)) => why,
                Err(_) => "timed out".to_string(),
            };
            self.metrics.webhooks.failures.inc();
            let spent = started.elapsed();
            let give_up = spent >= self.retry;
            if self.last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                self.last_warned = Some(Instant::now());
                tracing::warn!(url = %self.url, events = n, why, give_up, "webhook delivery failed");
            }
            if give_up {
                self.metrics.webhooks.expired.add(n);
                return;
            }
            // The last attempt is made when the retry time is up.
            tokio::time::sleep(backoff.min(self.retry - spent)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One attempt: `Ok` on a 2xx (its body read, bounded, so the connection can be reused).
    async fn post(&self, body: Bytes, signature: &str) -> Result<(), String> {
        let req = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("syncgate/", env!("CARGO_PKG_VERSION")))
            .header("x-syncgate-signature", signature)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES).collect().await;
        match status.is_success() {
            true => Ok(()),
            false => Err(format!("status {status}")),
        }
    }
}
