//! The Redis bus (fred): instances share nothing but Redis.
//!
//! This file holds the [`RedisBus`] handle, its settings, [`RedisBus::start`] and the [`Bus`] and
//! [`ClusterHooks`] impls, which delegate to one file per concern:
//!
//! - [`subscriptions`]: SUBSCRIBE/UNSUBSCRIBE reference-counted per channel and serialised through
//!   one async lock, so the instance holds exactly one Redis subscription per channel it has local
//!   members for; the SUBSCRIBE is confirmed before `subscribed`/`welcome` go out. On reconnect
//!   every needed channel is subscribed again (fred's one subscriber connection: no duplicates).
//! - [`batcher`]: publishes go to a bounded queue; a batcher coalesces what arrives within
//!   `SYNCGATE_REDIS_FLUSH_US` into one PUBLISH per channel (several frames per payload, see
//!   [`super::wire`]) sent as one pipeline. Full queue or Redis down: dropped and counted, never
//!   buffered without bound; local members were already served.
//! - [`receiver`]: incoming messages — batches from other instances, external JSON publishes
//!   ([`external_event`]) and control messages (which it also encodes).
//! - [`presence`]: cluster-wide presence and per-user caps live in Redis hashes with per-instance
//!   records; each instance heartbeats into a sorted set, and any instance reaps one that stopped
//!   (Lua, atomic), sending `leave` for its members, within `SYNCGATE_PRESENCE_TTL_MS`. The
//!   heartbeat also writes the instance's open connections into the `conns` hash.
//! - [`quota`]: the durable-event quota counted per user and minute across the cluster, plain
//!   per-minute counters (the pairing-claim limit) and the signed publishes' nonces (`SET NX PX`).
//! - [`status`]: the `/api/status` cluster view. The bus counts into `metrics::BusSeries`.
//!
//! Every Lua script sits next to these files as a `.lua` file, loaded with `include_str!`.

mod batcher;
mod connect;
mod presence;
mod quota;
mod receiver;
mod status;
mod subscriptions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{BoxFuture, Bus, ClusterHooks, Control};
use crate::protocol::{Encoded, RequestId};
use crate::registry::Registry;
use batcher::Outgoing;
use presence::PresenceOp;
pub use receiver::{external_event, ExternalError};

/// Why the Redis bus could not start (it starts even while Redis is down: only a bad
/// `REDIS_URL` stops it).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("REDIS_URL: {0}")]
    Url(fred::error::Error),
    /// `SYNCGATE_REDIS_CA_FILE` is not a usable PEM CA.
    #[error("SYNCGATE_REDIS_CA_FILE: {0}")]
    Tls(String),
}
use receiver::CONTROL;

/// Configuration of the Redis bus.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// `url`, parsed (one node, Sentinel or Cluster; TLS).
    pub target: crate::config::RedisTarget,
    /// A private CA for TLS.
    pub ca_file: Option<std::path::PathBuf>,
    pub prefix: String,
    pub flush: Duration,
    pub presence_ttl: Duration,
    /// `SYNCGATE_MAX_JSON_DEPTH`: external publishes and control messages nested deeper are dropped.
    pub max_json_depth: usize,
}

/// Capacity of the outgoing-publish queue and of the presence-op queue (full: dropped, counted).
const OUT_QUEUE: usize = 65_536;

impl RedisSettings {
    /// Settings for `url` with the defaults of the configuration (200 µs flush, 15 s presence
    /// TTL, depth 128); `Err` names what is wrong with the URL.
    pub fn for_url(url: &str, prefix: &str) -> Result<RedisSettings, String> {
        Ok(RedisSettings {
            url: url.to_string(),
            target: crate::config::RedisTarget::parse(url)?,
            ca_file: None,
            prefix: prefix.to_string(),
            flush: Duration::from_micros(200),
            presence_ttl: Duration::from_secs(15),
            max_json_depth: 128,
        })
    }
}

pub struct RedisBus {
    settings: RedisSettings,
    /// This instance's id: the origin stamped on every record.
    pub instance: crate::util::InstanceId,
    registry: Arc<Registry>,
    client: Client,
    subscriber: SubscriberClient,
    /// Local interests per Redis channel key; the async lock orders SUBSCRIBE/UNSUBSCRIBE.
    subs: tokio::sync::Mutex<HashMap<String, usize>>,
    out: mpsc::Sender<Outgoing>,
    presence_ops: mpsc::Sender<PresenceOp>,
    /// A Redis Cluster: channel traffic on sharded pub/sub.
    cluster: bool,
    /// The process's registry: the bus counts into `metrics.bus` and publishes
    /// `metrics.connections` with each heartbeat.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The background tasks (receiver, resubscriber, batcher, presence worker, heartbeat),
    /// aborted by [`Bus::stop`] so a stopped server stops heartbeating.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The presence worker and the heartbeat: stopped first when the instance leaves.
    presence_tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl RedisBus {
    /// Connects (without requiring Redis to be up: the gateway serves local traffic meanwhile and
    /// `/ready` says 503) and starts the background tasks.
    pub async fn start(settings: RedisSettings, registry: Arc<Registry>) -> Result<Arc<RedisBus>, BusError> {
        Self::start_as(settings, registry, crate::util::InstanceId::random(), Arc::default()).await
    }

    /// [`RedisBus::start`] as instance `instance` (the gateway passes its own id, so connection
    /// ids, `/api/status` and the Redis records name an instance the same way).
    pub async fn start_as(
        settings: RedisSettings,
        registry: Arc<Registry>,
        instance: crate::util::InstanceId,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Arc<RedisBus>, BusError> {
        let config = connect::fred_config(&settings.target, settings.ca_file.as_deref())?;
        let cluster = settings.target.kind == crate::config::RedisKind::Cluster;
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|p| {
                p.broadcast_channel_capacity = 65_536;
                p.default_command_timeout = Duration::from_secs(2);
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 1;
            })
            // Unlimited attempts, 50 ms doubling to at most 2 s between attempts.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2000, 2));
        let client = builder.build().map_err(BusError::Url)?;
        let subscriber = builder.build_subscriber_client().map_err(BusError::Url)?;
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let (pres_tx, pres_rx) = mpsc::channel(OUT_QUEUE);
        let bus = Arc::new(RedisBus {
            settings,
            instance,
            registry,
            client,
            subscriber,
            subs: tokio::sync::Mutex::new(HashMap::new()),
            out: out_tx,
            presence_ops: pres_tx,
            cluster,
            metrics,
            tasks: std::sync::Mutex::new(Vec::new()),
            presence_tasks: std::sync::Mutex::new(Vec::new()),
        });
        // The connection tasks run detached for the process's life (reconnecting per policy).
        drop(bus.client.connect());
        drop(bus.subscriber.connect());
        let up = tokio::time::timeout(Duration::from_secs(3), async {
            let _ = bus.client.wait_for_connect().await;
            let _ = bus.subscriber.wait_for_connect().await;
        })
        .await;
        if up.is_err() || !bus.healthy() {
            tracing::warn!(url = %crate::config::mask_url(&bus.settings.url), "Redis not reachable at start; serving local traffic and retrying");
        }
        // Receive before subscribing anything.
        let tasks = vec![
            tokio::spawn(bus.clone().receive(bus.subscriber.message_rx())),
            tokio::spawn(bus.clone().resubscribe_on_reconnect()),
            tokio::spawn(bus.clone().batcher(out_rx)),
        ];
        *bus.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        *bus.presence_tasks.lock().unwrap_or_else(|e| e.into_inner()) =
            vec![tokio::spawn(bus.clone().presence_worker(pres_rx)), tokio::spawn(bus.clone().heartbeat())];
        bus.subscribe_key(bus.key(CONTROL)).await;
        Ok(bus)
    }

    /// The Redis key (or channel) for `channel`: the configured prefix in front.
    fn key(&self, channel: &str) -> String {
        format!("{}{}", self.settings.prefix, channel)
    }

    /// Queues `op` for the presence worker; a full queue drops it (counted).
    fn queue_presence_op(&self, op: PresenceOp) {
        if self.presence_ops.try_send(op).is_err() {
            self.metrics.bus.dropped.inc();
        }
    }
}

impl Bus for RedisBus {
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.subscribe_key(self.key(channel)))
    }

    fn unsubscribe(&self, channel: &str) {
        ClusterHooks::member_left(self, channel)
    }

    fn publish(&self, channel: &str, frame: Message, origin: u64) -> usize {
        let n = self.registry.fan_out(channel, &frame, origin);
        self.publish_remote(channel, frame, origin);
        n
    }

    fn publish_remote(&self, channel: &str, frame: Message, origin: u64) {
        self.enqueue(channel, frame, origin)
    }

    fn control(&self, ctl: Control) {
        self.broadcast_control(ctl)
    }

    fn presence<'a>(&'a self, channel: &'a str, id: &'a RequestId) -> BoxFuture<'a, Encoded> {
        Box::pin(self.cluster_presence(channel, id))
    }

    fn channels<'a>(&'a self, prefix: &'a str, cursor: &'a str, limit: usize) -> BoxFuture<'a, super::ChannelPage> {
        Box::pin(self.cluster_channels(prefix, cursor, limit))
    }

    fn user_connected<'a>(&'a self, user: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(self.cluster_user_connected(user))
    }

    fn acquire_user<'a>(&'a self, user: &'a str, max: u32) -> BoxFuture<'a, bool> {
        Box::pin(self.acquire_user_slot(user, max))
    }

    fn take_durable_quota<'a>(
        &'a self,
        user: &'a str,
        bytes: u64,
        events_max: u64,
        bytes_max: u64,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(self.take_quota(user, bytes, events_max, bytes_max))
    }

    fn count_this_minute<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(self.incr_minute(name))
    }

    fn take_nonce<'a>(&'a self, key: &'a str, ttl_ms: u64) -> BoxFuture<'a, Option<bool>> {
        Box::pin(self.set_nonce(key, ttl_ms))
    }

    fn release_nonce(&self, key: &str) {
        self.unset_nonce(key)
    }

    fn status<'a>(&'a self, top: usize) -> BoxFuture<'a, serde_json::Value> {
        Box::pin(self.cluster_status(top))
    }

    fn leave<'a>(&'a self) -> BoxFuture<'a, ()> {
        Box::pin(self.leave_cluster())
    }

    fn stop(&self) {
        for task in self.presence_tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
        // The connections' own tasks end with them.
        let (client, subscriber) = (self.client.clone(), self.subscriber.clone());
        tokio::spawn(async move {
            let _ = subscriber.quit().await;
            let _ = client.quit().await;
        });
    }

    fn healthy(&self) -> bool {
        self.client.is_connected() && self.subscriber.is_connected()
    }

    fn state(&self) -> &'static str {
        if self.healthy() {
            "up"
        } else {
            "down"
        }
    }
}

impl ClusterHooks for RedisBus {
    fn presence_changed(
        &self,
        channel: &str,
        user: &Arc<str>,
        device: &Arc<str>,
        joined: bool,
        origin: u64,
        announce: bool,
    ) {
        self.queue_presence_op(PresenceOp::Changed {
            channel: Arc::from(channel),
            user: user.clone(),
            device: device.clone(),
            joined,
            origin,
            announce,
        });
    }

    fn member_left(&self, channel: &str) {
        // Queued to the worker (in order with presence updates); the subscription lock keeps
        // SUBSCRIBE/UNSUBSCRIBE consistent with the reference counts.
        self.queue_presence_op(PresenceOp::Unsubscribe(self.key(channel)));
    }

    fn user_released(&self, user: &Arc<str>) {
        self.queue_presence_op(PresenceOp::UserReleased(user.clone()));
    }
}
