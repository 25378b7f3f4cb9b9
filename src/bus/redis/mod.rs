//! The Redis bus (fred): instances share nothing but Redis.
//!
//! - Subscriptions are reference-counted per channel and serialised through one async lock, so the
//!   instance holds exactly one Redis subscription per channel it has local members for; the
//!   SUBSCRIBE is confirmed before `subscribed`/`welcome` go out. On reconnect every needed
//!   channel is subscribed again (fred's one subscriber connection: no duplicates).
//! - Publishes go to a bounded queue; a batcher coalesces what arrives within
//!   `SYNCGATE_REDIS_FLUSH_US` into one PUBLISH per channel (several frames per payload, see
//!   [`super::wire`]) sent as one pipeline. Full queue or Redis down: dropped and counted, never
//!   buffered without bound; local members were already served.
//! - Cluster-wide presence and per-user caps live in Redis hashes with per-instance records; each
//!   instance heartbeats into a sorted set, and any instance reaps one that stopped (Lua, atomic),
//!   sending `leave` for its members, within `SYNCGATE_PRESENCE_TTL_MS`. The heartbeat also
//!   writes the instance's open connections into the `conns` hash that `/api/status` reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message as RedisMessage;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::wire::{self, Kind};
use super::{BoxFuture, Bus, ClusterHooks, Control};
use crate::error::CloseReason;
use crate::protocol::{self, Encoded, RequestId};
use crate::registry::Registry;

/// Configuration of the Redis bus.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
    pub flush: Duration,
    pub presence_ttl: Duration,
    /// `SYNCGATE_MAX_JSON_DEPTH`: external publishes and control messages nested deeper are dropped.
    pub max_json_depth: usize,
}

/// Bus counters (read by tests, benches and, later, metrics).
#[derive(Debug, Default)]
pub struct BusStats {
    pub messages: AtomicU64,
    pub publish_commands: AtomicU64,
    pub dropped: AtomicU64,
    pub received: AtomicU64,
    pub reconnects: AtomicU64,
    /// External publishes and control messages dropped as malformed or nested too deep.
    pub rejected: AtomicU64,
}

struct Outgoing {
    channel: Arc<str>,
    kind: Kind,
    frame: Bytes,
    origin: u64,
}

enum PresenceOp {
    Changed { channel: Arc<str>, user: Arc<str>, device: Arc<str>, joined: bool, origin: u64 },
    UserReleased(Arc<str>),
    Unsubscribe(String),
}

const OUT_QUEUE: usize = 65_536;
const MAX_BATCH: usize = 4096;
const CONTROL: &str = "!control";

const PRESENCE_LUA: &str = r#"
local p = ARGV[1]; local ud = ARGV[4] .. '\31' .. ARGV[5]; local d = tonumber(ARGV[6])
local mine_key = p .. 'inst:' .. ARGV[2] .. ':pres'; local f = ARGV[3] .. '\31' .. ud
if redis.call('HINCRBY', mine_key, f, d) <= 0 then redis.call('HDEL', mine_key, f) end
local pc = p .. 'pc:' .. ARGV[3]
local total = redis.call('HINCRBY', pc, ud, d)
if total <= 0 then redis.call('HDEL', pc, ud) end
return total
"#;

const ACQUIRE_LUA: &str = r#"
local p = ARGV[1]
local n = tonumber(redis.call('HGET', p .. 'uc', ARGV[3]) or '0')
if n >= tonumber(ARGV[4]) then return 0 end
redis.call('HINCRBY', p .. 'uc', ARGV[3], 1)
redis.call('HINCRBY', p .. 'inst:' .. ARGV[2] .. ':users', ARGV[3], 1)
return 1
"#;

const RELEASE_LUA: &str = r#"
local p = ARGV[1]
if redis.call('HINCRBY', p .. 'uc', ARGV[3], -1) <= 0 then redis.call('HDEL', p .. 'uc', ARGV[3]) end
local k = p .. 'inst:' .. ARGV[2] .. ':users'
if redis.call('HINCRBY', k, ARGV[3], -1) <= 0 then redis.call('HDEL', k, ARGV[3]) end
return 1
"#;

/// Durable quota: one hash per user and minute (`e` events, `b` bytes); counts only an event
/// that fits both limits. ARGV: key, events_max, bytes_max, bytes.
const DURABLE_QUOTA_LUA: &str = r#"
local k = ARGV[1]; local n = tonumber(ARGV[4])
local cur = redis.call('HMGET', k, 'e', 'b')
local e = tonumber(cur[1] or '0'); local b = tonumber(cur[2] or '0')
if e + 1 > tonumber(ARGV[2]) or b + n > tonumber(ARGV[3]) then return 0 end
redis.call('HINCRBY', k, 'e', 1)
redis.call('HINCRBY', k, 'b', n)
redis.call('EXPIRE', k, 120)
return 1
"#;

/// Removes a dead instance's contributions; returns the `channel\x1fuser\x1fdevice` that left.
const REAP_LUA: &str = r#"
local p = ARGV[1]; local inst = ARGV[2]
if redis.call('ZREM', p .. 'instances', inst) == 0 then return {} end
local leaves = {}
local pres = redis.call('HGETALL', p .. 'inst:' .. inst .. ':pres')
for i = 1, #pres, 2 do
  local field = pres[i]
  local sep = string.find(field, '\31', 1, true)
  local ch = string.sub(field, 1, sep - 1)
  local ud = string.sub(field, sep + 1)
  local left = redis.call('HINCRBY', p .. 'pc:' .. ch, ud, -tonumber(pres[i + 1]))
  if left <= 0 then redis.call('HDEL', p .. 'pc:' .. ch, ud); table.insert(leaves, field) end
end
local users = redis.call('HGETALL', p .. 'inst:' .. inst .. ':users')
for i = 1, #users, 2 do
  if redis.call('HINCRBY', p .. 'uc', users[i], -tonumber(users[i + 1])) <= 0 then
    redis.call('HDEL', p .. 'uc', users[i])
  end
end
redis.call('DEL', p .. 'inst:' .. inst .. ':pres', p .. 'inst:' .. inst .. ':users')
redis.call('HDEL', p .. 'conns', inst)
return leaves
"#;

pub struct RedisBus {
    settings: RedisSettings,
    /// This instance's id: the origin stamped on every record.
    pub instance: u64,
    registry: Arc<Registry>,
    client: Client,
    subscriber: SubscriberClient,
    /// Local interests per Redis channel key; the async lock orders SUBSCRIBE/UNSUBSCRIBE.
    subs: tokio::sync::Mutex<HashMap<String, usize>>,
    out: mpsc::Sender<Outgoing>,
    presence_ops: mpsc::Sender<PresenceOp>,
    pub stats: BusStats,
    /// Messages per PUBLISH batch.
    batch_sizes: crate::metrics::Histogram,
    /// The instance's open-connection gauge, published with each heartbeat (set once at start).
    open: std::sync::OnceLock<Arc<crate::registry::Stats>>,
}

fn now_ms() -> u64 {
    crate::util::now_millis()
}

impl RedisBus {
    /// Connects (without requiring Redis to be up: the gateway serves local traffic meanwhile and
    /// `/ready` says 503) and starts the background tasks.
    pub async fn start(settings: RedisSettings, registry: Arc<Registry>) -> Result<Arc<RedisBus>, String> {
        let config = Config::from_url(&settings.url).map_err(|e| format!("REDIS_URL: {e}"))?;
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
        let client = builder.build().map_err(|e| format!("REDIS_URL: {e}"))?;
        let subscriber = builder.build_subscriber_client().map_err(|e| format!("REDIS_URL: {e}"))?;
        let mut raw = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        let instance = u64::from_be_bytes(raw) | 1;
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
            stats: BusStats::default(),
            batch_sizes: crate::metrics::Histogram::new(&crate::metrics::BATCH_BOUNDS),
            open: std::sync::OnceLock::new(),
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
        tokio::spawn(bus.clone().receive(bus.subscriber.message_rx()));
        tokio::spawn(bus.clone().resubscribe_on_reconnect());
        tokio::spawn(bus.clone().batcher(out_rx));
        tokio::spawn(bus.clone().presence_worker(pres_rx));
        tokio::spawn(bus.clone().heartbeat());
        bus.subscribe_key(bus.key(CONTROL)).await;
        Ok(bus)
    }

    fn key(&self, channel: &str) -> String {
        format!("{}{}", self.settings.prefix, channel)
    }

    async fn subscribe_key(&self, key: String) {
        let mut subs = self.subs.lock().await;
        let n = subs.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            if let Err(e) = self.subscriber.subscribe(key.as_str()).await {
                // Kept in `subs`: the reconnect handler subscribes it when Redis is back.
                tracing::warn!(channel = %key, error = %e, "Redis SUBSCRIBE failed");
            }
        }
    }

    async fn unsubscribe_key(&self, key: String) {
        let mut subs = self.subs.lock().await;
        let Some(n) = subs.get_mut(&key) else { return };
        *n -= 1;
        if *n == 0 {
            subs.remove(&key);
            if let Err(e) = self.subscriber.unsubscribe(key.as_str()).await {
                tracing::debug!(channel = %key, error = %e, "Redis UNSUBSCRIBE failed");
            }
        }
    }

    async fn resubscribe_on_reconnect(self: Arc<Self>) {
        let mut rx = self.subscriber.reconnect_rx();
        while rx.recv().await.is_ok() {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            let subs = self.subs.lock().await;
            let keys: Vec<String> = subs.keys().cloned().collect();
            if !keys.is_empty() {
                if let Err(e) = self.subscriber.subscribe(keys).await {
                    tracing::warn!(error = %e, "Redis resubscribe failed");
                }
            }
            drop(subs);
            tracing::info!("Redis reconnected; channels resubscribed");
        }
    }

    /// Incoming messages: batches from other instances and external JSON publishes.
    async fn receive(self: Arc<Self>, mut rx: tokio::sync::broadcast::Receiver<RedisMessage>) {
        loop {
            let msg = match rx.recv().await {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(lost = n, "Redis receiver lagged");
                    continue;
                }
                Err(_) => return,
            };
            let Some(channel) = msg.channel.strip_prefix(self.settings.prefix.as_str()) else {
                continue;
            };
            let payload = match msg.value {
                Value::Bytes(b) => b,
                Value::String(s) => s.into_inner(),
                _ => continue,
            };
            if channel == CONTROL {
                self.apply_control(&payload);
                continue;
            }
            self.deliver(channel, &payload);
        }
    }

    fn deliver(&self, channel: &str, payload: &Bytes) {
        match wire::decode(payload) {
            Some(records) => {
                for r in records {
                    if r.instance == self.instance {
                        continue; // delivered locally when it was published
                    }
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    let msg = match r.kind {
                        Kind::Binary => Message::Binary(r.frame),
                        Kind::Text => match Utf8Bytes::try_from(r.frame) {
                            Ok(t) => Message::Text(t),
                            Err(_) => continue,
                        },
                    };
                    // Connection ids are per instance: nobody here is the origin. A durable
                    // event goes through the sequencer (in seq order with local commits).
                    let durable = match &msg {
                        Message::Text(t) => protocol::event_seq(t.as_bytes())
                            .and_then(|(c, seq)| std::str::from_utf8(c).ok().map(|c| (c.to_string(), seq))),
                        _ => None,
                    };
                    match durable {
                        Some((durable_channel, seq)) => {
                            self.registry.fan_out_durable(channel, &durable_channel, seq, msg, 0);
                        }
                        None => {
                            self.registry.fan_out(channel, &msg, 0);
                        }
                    }
                }
            }
            None => {
                // External publish: {"event":E,"data":ANY}.
                match external_event(channel, payload, self.settings.max_json_depth) {
                    Ok(frame) => {
                        self.stats.received.fetch_add(1, Ordering::Relaxed);
                        self.registry.fan_out(channel, &Message::Text(frame), 0);
                    }
                    Err(e) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%channel, error = %e, "dropped an external publish");
                    }
                }
            }
        }
    }

    fn apply_control(&self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Ctl {
            op: String,
            user_id: String,
            #[serde(default)]
            device_id: Option<String>,
            #[serde(default)]
            gen: Option<u64>,
        }
        match crate::util::json::from_slice::<Ctl>(payload, self.settings.max_json_depth) {
            Ok(c) if c.op == "disconnect" => {
                self.registry.close_user(&c.user_id, c.device_id.as_deref(), CloseReason::Forbidden);
            }
            Ok(Ctl { op, user_id, device_id: Some(device_id), .. }) if op == "revoke" => {
                self.registry.revoke_device(&user_id, &device_id);
            }
            Ok(Ctl { op, user_id, gen: Some(gen), .. }) if op == "gen" => {
                self.registry.set_token_gen(&user_id, gen);
            }
            _ => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("ignored a malformed control message");
            }
        }
    }

    async fn batcher(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>) {
        let mut batches: HashMap<Arc<str>, BytesMut> = HashMap::new();
        while let Some(first) = rx.recv().await {
            let mut n = 1;
            self.add(&mut batches, first);
            if !self.settings.flush.is_zero() {
                tokio::time::sleep(self.settings.flush).await;
            }
            while n < MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) => {
                        self.add(&mut batches, item);
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            self.batch_sizes.observe(n as f64);
            let pipeline = self.client.pipeline();
            let mut commands = 0u64;
            for (channel, payload) in batches.drain() {
                let _: Result<(), _> = pipeline.publish(self.key(&channel), payload.freeze()).await;
                commands += 1;
            }
            match pipeline.all::<Vec<Value>>().await {
                Ok(_) => {
                    self.stats.messages.fetch_add(n as u64, Ordering::Relaxed);
                    self.stats.publish_commands.fetch_add(commands, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
                    tracing::debug!(error = %e, messages = n, "Redis publish failed; remote instances miss these");
                }
            }
        }
    }

    fn add(&self, batches: &mut HashMap<Arc<str>, BytesMut>, item: Outgoing) {
        let b = batches.entry(item.channel).or_default();
        wire::push(b, self.instance, item.origin, item.kind, &item.frame);
    }

    async fn presence_worker(self: Arc<Self>, mut rx: mpsc::Receiver<PresenceOp>) {
        let inst = self.instance.to_string();
        let prefix = self.settings.prefix.clone();
        while let Some(op) = rx.recv().await {
            match op {
                PresenceOp::Changed { channel, user, device, joined, origin } => {
                    let delta = if joined { "1" } else { "-1" };
                    let args = vec![
                        prefix.clone(),
                        inst.clone(),
                        channel.to_string(),
                        user.to_string(),
                        device.to_string(),
                        delta.into(),
                    ];
                    match self.client.eval::<i64, _, _, _>(PRESENCE_LUA, Vec::<String>::new(), args).await {
                        Ok(total) => {
                            // User channels carry no join/leave; their presence is still kept.
                            let announce =
                                !channel.starts_with("user:") && if joined { total == 1 } else { total <= 0 };
                            if announce {
                                let kind = if joined { "join" } else { "leave" };
                                let frame = protocol::membership(kind, &channel, &user, &device);
                                self.publish(&channel, Message::Text(frame), origin);
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "presence update failed"),
                    }
                }
                PresenceOp::Unsubscribe(key) => self.unsubscribe_key(key).await,
                PresenceOp::UserReleased(user) => {
                    let args = vec![prefix.clone(), inst.clone(), user.to_string()];
                    if let Err(e) = self.client.eval::<i64, _, _, _>(RELEASE_LUA, Vec::<String>::new(), args).await {
                        tracing::debug!(error = %e, "user slot release failed");
                    }
                }
            }
        }
    }

    /// Publishes `stats.open_connections` with every heartbeat (the `connections` of this
    /// instance in `/api/status`). Only the first call counts.
    pub fn report_connections(&self, stats: Arc<crate::registry::Stats>) {
        let _ = self.open.set(stats);
    }

    /// Heartbeat into `instances` (with the open-connection count into `conns`) and reap
    /// instances that stopped heartbeating.
    async fn heartbeat(self: Arc<Self>) {
        let ttl = self.settings.presence_ttl;
        let every = (ttl / 5).max(Duration::from_millis(20));
        let key = self.key("instances");
        let conns_key = self.key("conns");
        let me = self.instance.to_string();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = now_ms();
            let _: Result<i64, _> =
                self.client.zadd(key.as_str(), None, None, false, false, (now as f64, me.as_str())).await;
            if let Some(stats) = self.open.get() {
                let n = stats.open_connections.load(Ordering::Relaxed);
                let _: Result<i64, _> = self.client.hset(conns_key.as_str(), (me.as_str(), n)).await;
            }
            let dead_before = now.saturating_sub(ttl.as_millis() as u64 / 2);
            let dead: Vec<String> =
                match self.client.zrangebyscore(key.as_str(), "-inf", dead_before as f64, false, None).await {
                    Ok(d) => d,
                    Err(_) => continue,
                };
            for inst in dead.into_iter().filter(|d| *d != me) {
                let args = vec![self.settings.prefix.clone(), inst.clone()];
                let leaves: Vec<String> = match self.client.eval(REAP_LUA, Vec::<String>::new(), args).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "reap failed");
                        continue;
                    }
                };
                tracing::info!(instance = %inst, leaves = leaves.len(), "reaped a stopped instance");
                for field in leaves {
                    let mut parts = field.split('\u{1f}');
                    if let (Some(ch), Some(u), Some(d)) = (parts.next(), parts.next(), parts.next()) {
                        let frame = protocol::membership("leave", ch, u, d);
                        self.publish(ch, Message::Text(frame), 0);
                    }
                }
            }
        }
    }
}

/// `{"event":E,"data":ANY}` from an external publisher → an `event` frame from the server.
/// Malformed, nested deeper than `max_depth`, or with a bad event name: an error naming why.
pub fn external_event(channel: &str, payload: &[u8], max_depth: usize) -> Result<Encoded, String> {
    #[derive(serde::Deserialize)]
    struct Ext<'a> {
        event: String,
        #[serde(borrow, default)]
        data: Option<&'a serde_json::value::RawValue>,
    }
    let ext: Ext = crate::util::json::from_slice(payload, max_depth).map_err(|e| e.to_string())?;
    if ext.event.is_empty() || ext.event.len() > crate::protocol::MAX_EVENT_LEN {
        return Err(format!("`event` must be 1-{} bytes", crate::protocol::MAX_EVENT_LEN));
    }
    let data = ext.data.map(|d| d.get().as_bytes()).unwrap_or(b"null");
    Ok(protocol::server_event(channel, &ext.event, data, now_ms()))
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
        let (kind, bytes) = match &frame {
            Message::Text(t) => (Kind::Text, Bytes::from(t.clone())),
            Message::Binary(b) => (Kind::Binary, b.clone()),
            _ => return,
        };
        let item = Outgoing { channel: Arc::from(channel), kind, frame: bytes, origin };
        if self.out.try_send(item).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn control(&self, ctl: Control) {
        // Applied here at once; the other instances get it through Redis.
        let payload = match &ctl {
            Control::Disconnect { user_id, device_id } => {
                self.registry.close_user(user_id, device_id.as_deref(), CloseReason::Forbidden);
                serde_json::json!({"op": "disconnect", "user_id": user_id, "device_id": device_id})
            }
            Control::RevokeDevice { user_id, device_id } => {
                self.registry.revoke_device(user_id, device_id);
                serde_json::json!({"op": "revoke", "user_id": user_id, "device_id": device_id})
            }
            Control::TokenGeneration { user_id, gen } => {
                self.registry.set_token_gen(user_id, *gen);
                serde_json::json!({"op": "gen", "user_id": user_id, "gen": gen})
            }
        }
        .to_string();
        let client = self.client.clone();
        let key = self.key(CONTROL);
        tokio::spawn(async move {
            if let Err(e) = client.publish::<i64, _, _>(key, payload).await {
                tracing::warn!(error = %e, "control message not sent");
            }
        });
    }

    fn presence<'a>(&'a self, channel: &'a str, id: &'a RequestId) -> BoxFuture<'a, Encoded> {
        Box::pin(async move {
            let key = self.key(&format!("pc:{channel}"));
            match self.client.hgetall::<HashMap<String, i64>, _>(key).await {
                Ok(map) => {
                    let mut members: Vec<(String, String)> = map
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .filter_map(|(k, _)| k.split_once('\u{1f}').map(|(u, d)| (u.to_string(), d.to_string())))
                        .collect();
                    members.sort_unstable();
                    protocol::presence(channel, members.iter().map(|(u, d)| (u.as_str(), d.as_str())), id)
                }
                // Redis down: what this instance knows.
                Err(_) => self.registry.presence(channel, id),
            }
        })
    }

    fn acquire_user<'a>(&'a self, user: &'a str, max: u32) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let args = vec![self.settings.prefix.clone(), self.instance.to_string(), user.to_string(), max.to_string()];
            match self.client.eval::<i64, _, _, _>(ACQUIRE_LUA, Vec::<String>::new(), args).await {
                Ok(n) => n == 1,
                // Redis down: the local cap still applies; do not lock users out.
                Err(_) => true,
            }
        })
    }

    fn take_durable_quota<'a>(
        &'a self,
        user: &'a str,
        bytes: u64,
        events_max: u64,
        bytes_max: u64,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move {
            let minute = now_ms() / 60_000;
            let key = format!("{}dq:{user}:{minute}", self.settings.prefix);
            let args = vec![key, events_max.to_string(), bytes_max.to_string(), bytes.to_string()];
            match self.client.eval::<i64, _, _, _>(DURABLE_QUOTA_LUA, Vec::<String>::new(), args).await {
                Ok(n) => Some(n == 1),
                // Redis down: the caller counts on this instance alone.
                Err(_) => None,
            }
        })
    }

    fn status<'a>(&'a self, top: usize) -> BoxFuture<'a, serde_json::Value> {
        Box::pin(async move {
            let now = now_ms();
            let alive_after = now.saturating_sub(self.settings.presence_ttl.as_millis() as u64 / 2) as f64;
            let alive: Vec<String> = self
                .client
                .zrangebyscore(self.key("instances"), alive_after, "+inf", false, None)
                .await
                .unwrap_or_default();
            let conns: HashMap<String, u64> = self.client.hgetall(self.key("conns")).await.unwrap_or_default();
            let mut users: Vec<(String, i64)> = self
                .client
                .hgetall::<HashMap<String, i64>, _>(self.key("uc"))
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
            users.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            users.truncate(top);
            let instances: Vec<serde_json::Value> = alive
                .iter()
                .map(|i| serde_json::json!({"instance": i, "connections": conns.get(i).copied().unwrap_or(0), "self": *i == self.instance.to_string()}))
                .collect();
            serde_json::json!({
                "bus": self.state(),
                "instances": instances,
                "top_users": users.into_iter().map(|(u, n)| serde_json::json!({"user_id": u, "connections": n})).collect::<Vec<_>>(),
            })
        })
    }

    fn healthy(&self) -> bool {
        self.client.is_connected() && self.subscriber.is_connected()
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP syncgate_redis_up 1 while both Redis connections are up.\n# TYPE syncgate_redis_up gauge\nsyncgate_redis_up {}\n\
             # HELP syncgate_bus_messages_total Messages sent to Redis.\n# TYPE syncgate_bus_messages_total counter\nsyncgate_bus_messages_total {}\n\
             # HELP syncgate_bus_publish_commands_total PUBLISH commands (several messages per command when batched).\n# TYPE syncgate_bus_publish_commands_total counter\nsyncgate_bus_publish_commands_total {}\n\
             # HELP syncgate_bus_dropped_total Messages not carried between instances (queue full or Redis down).\n# TYPE syncgate_bus_dropped_total counter\nsyncgate_bus_dropped_total {}\n\
             # HELP syncgate_bus_received_total Messages received from other instances or external publishers.\n# TYPE syncgate_bus_received_total counter\nsyncgate_bus_received_total {}\n\
             # HELP syncgate_redis_reconnects_total Redis reconnections.\n# TYPE syncgate_redis_reconnects_total counter\nsyncgate_redis_reconnects_total {}\n\
             # HELP syncgate_bus_rejected_total External publishes and control messages dropped as malformed or nested deeper than SYNCGATE_MAX_JSON_DEPTH.\n# TYPE syncgate_bus_rejected_total counter\nsyncgate_bus_rejected_total {}\n",
            u8::from(self.healthy()),
            load(&s.messages),
            load(&s.publish_commands),
            load(&s.dropped),
            load(&s.received),
            load(&s.reconnects),
            load(&s.rejected),
        );
        self.batch_sizes.render(out, "syncgate_bus_batch_messages", "Messages per Redis PUBLISH batch.");
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
    fn presence_changed(&self, channel: &str, user: &Arc<str>, device: &Arc<str>, joined: bool, origin: u64) {
        let op = PresenceOp::Changed {
            channel: Arc::from(channel),
            user: user.clone(),
            device: device.clone(),
            joined,
            origin,
        };
        if self.presence_ops.try_send(op).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn member_left(&self, channel: &str) {
        // Queued to the worker (in order with presence updates); the subscription lock keeps
        // SUBSCRIBE/UNSUBSCRIBE consistent with the reference counts.
        if self.presence_ops.try_send(PresenceOp::Unsubscribe(self.key(channel))).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn user_released(&self, user: &Arc<str>) {
        if self.presence_ops.try_send(PresenceOp::UserReleased(user.clone())).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
