//! Cluster-wide presence and per-user connection caps in Redis, plus the heartbeat that lets any
//! instance reap one that stopped.
//!
//! Keys are hash-tagged so that every Lua script touches one Redis Cluster slot, and presence
//! spreads over the shards: a channel's keys carry `{channel}` (`pc:` user+device → connections,
//! `pm:` user → devices, `pi:` what each instance holds, `pn:` per instance), a user's carry
//! `{user}` (`uc:` connections, `ui:` per instance), an instance's carry `{instance}` (`ic:` the
//! channels and `iu:` the users it holds, for reaping). `instances`, `conns` and `tops` are small
//! cluster-wide keys.
//!
//! - Membership changes and slot releases come from the registry through [`super::ClusterHooks`]
//!   (sync) and are queued, in order, to one worker task that runs the scripts (whatever is
//!   queued as one pipelined round) and announces
//!   `join`/`leave` when a user+device enters or leaves a channel cluster-wide. Unsubscribes
//!   travel in the same queue so they stay ordered with the presence updates, and so do the
//!   `ic:`/`iu:` updates, so each set matches what the scripts counted.
//! - Every instance heartbeats into the `instances` sorted set (its open connections into
//!   `conns`, its busiest users into `tops`); an instance silent for half of
//!   `SYNCGATE_PRESENCE_TTL_MS` is reaped by any other (`ZREM` decides which one), which removes
//!   its presence channel by channel and its slots user by user, and sends `leave` for its
//!   members.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::RedisBus;
use crate::bus::{BoxFuture, Bus};
use crate::protocol::{self, Encoded, RequestId};

const PRESENCE_LUA: &str = include_str!("presence.lua");
const ACQUIRE_LUA: &str = include_str!("acquire.lua");
const RELEASE_LUA: &str = include_str!("release.lua");
const REAP_LUA: &str = include_str!("reap.lua");
const REAP_USER_LUA: &str = include_str!("reap_user.lua");

/// Users per instance written into `tops` for `/api/status`.
const TOPS: usize = 20;
/// `SCAN` steps one `/api/channels` page may take while they find nothing.
const SCAN_STEPS: usize = 16;
/// Presence ops sent to Redis in one pipelined round at most.
const BATCH: usize = 512;

/// Work for the presence worker, queued by the registry hooks.
pub(super) enum PresenceOp {
    Changed {
        channel: Arc<str>,
        user: Arc<str>,
        device: Arc<str>,
        joined: bool,
        origin: u64,
        announce: bool,
    },
    UserReleased(Arc<str>),
    /// This instance took its first slot of the user: remember it for reaping (`iu:`).
    UserTaken(Arc<str>),
    Unsubscribe(String),
}

impl RedisBus {
    /// A channel's presence keys: `[pc, pm, pi, pn]`, all in the channel's slot.
    fn channel_keys(&self, channel: &str) -> Vec<String> {
        let p = &self.settings.prefix;
        ["pc", "pm", "pi", "pn"].iter().map(|k| format!("{p}{k}:{{{channel}}}")).collect()
    }

    /// A user's slot keys: `[uc, ui]`, in the user's slot.
    fn user_keys(&self, user: &str) -> Vec<String> {
        let p = &self.settings.prefix;
        vec![format!("{p}uc:{{{user}}}"), format!("{p}ui:{{{user}}}")]
    }

    /// The channels (`ic`) or users (`iu`) instance `inst` holds.
    fn instance_set(&self, kind: &str, inst: &str) -> String {
        format!("{}{kind}:{{{inst}}}", self.settings.prefix)
    }

    /// Background task: applies queued [`PresenceOp`]s in order. Whatever is queued (up to
    /// [`BATCH`]) goes to Redis as one pipelined round of scripts — sent in queue order on each
    /// connection, so Redis applies them in that order — and their effects (join/leave frames,
    /// webhook transitions, then the `ic:`/`iu:` updates as a second round) follow in queue
    /// order. An unsubscribe ends a round: it waits for the ones before it.
    pub(super) async fn presence_worker(self: Arc<Self>, mut rx: mpsc::Receiver<PresenceOp>) {
        let mut ops = Vec::with_capacity(BATCH);
        let mut round = Vec::with_capacity(BATCH);
        loop {
            if rx.recv_many(&mut ops, BATCH).await == 0 {
                return;
            }
            for op in ops.drain(..) {
                match op {
                    PresenceOp::Unsubscribe(key) => {
                        self.run_round(&mut round).await;
                        self.unsubscribe_key(key).await;
                    }
                    op => round.push(op),
                }
            }
            self.run_round(&mut round).await;
        }
    }

    /// Runs one round of presence ops (emptied): their scripts pipelined, then their effects in
    /// order, then the instance-set updates they call for, pipelined.
    async fn run_round(&self, round: &mut Vec<PresenceOp>) {
        if round.is_empty() {
            return;
        }
        let me = self.instance.to_string();
        let sends = round.iter().map(|op| -> BoxFuture<'_, Result<(i64, i64), fred::error::Error>> {
            match op {
                PresenceOp::Changed { channel, user, device, joined, .. } => {
                    let tracked = self.registry.transitions().is_some() && !crate::channel::is_user_channel(channel);
                    let args = vec![
                        me.clone(),
                        user.to_string(),
                        device.to_string(),
                        if *joined { "1" } else { "-1" }.to_string(),
                        if tracked { "1" } else { "0" }.to_string(),
                    ];
                    Box::pin(self.client.eval(PRESENCE_LUA, self.channel_keys(channel), args))
                }
                PresenceOp::UserReleased(user) => {
                    Box::pin(self.client.eval(RELEASE_LUA, self.user_keys(user), vec![me.clone()]))
                }
                PresenceOp::UserTaken(user) => {
                    let (client, key, user) = (self.client.clone(), self.instance_set("iu", &me), user.to_string());
                    Box::pin(async move { client.sadd::<i64, _, _>(key, user).await.map(|_| (0, 0)) })
                }
                PresenceOp::Unsubscribe(_) => Box::pin(std::future::ready(Ok((0, 0)))),
            }
        });
        let results = futures_util::future::join_all(sends).await;
        let mut follow: Vec<(bool, String, String)> = Vec::new();
        for (op, result) in round.drain(..).zip(results) {
            let (a, b) = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "presence update failed");
                    continue;
                }
            };
            match op {
                PresenceOp::Changed { channel, user, device, joined, origin, announce } => {
                    let (total, flags) = (a, b);
                    // Which channels this instance holds presence in, for its reaper.
                    if flags & 16 != 0 {
                        follow.push((true, self.instance_set("ic", &me), channel.to_string()));
                    } else if flags & 32 != 0 {
                        follow.push((false, self.instance_set("ic", &me), channel.to_string()));
                    }
                    let user_channel = crate::channel::is_user_channel(&channel);
                    if let Some(t) = self.registry.transitions().filter(|_| !user_channel) {
                        report(&**t, &channel, &user, flags);
                    }
                    // User channels carry no join/leave; their presence is still kept.
                    if announce && !user_channel && if joined { total == 1 } else { total <= 0 } {
                        let kind = if joined { "join" } else { "leave" };
                        let frame = protocol::membership(kind, &channel, &user, &device);
                        self.publish(&channel, Message::Text(frame), origin);
                    }
                }
                PresenceOp::UserReleased(user) => {
                    let (left, mine) = (a, b);
                    if left == 0 {
                        if let Some(t) = self.registry.transitions() {
                            t.user_changed(&user, false);
                        }
                    }
                    if mine <= 0 {
                        follow.push((false, self.instance_set("iu", &me), user.to_string()));
                    }
                }
                PresenceOp::UserTaken(_) | PresenceOp::Unsubscribe(_) => {}
            }
        }
        let updates = follow.into_iter().map(|(add, key, member)| async move {
            let done: Result<i64, _> = match add {
                true => self.client.sadd(key, member).await,
                false => self.client.srem(key, member).await,
            };
            if let Err(e) = done {
                tracing::debug!(error = %e, "instance set update failed");
            }
        });
        futures_util::future::join_all(updates).await;
    }

    /// The cluster-wide `presence` reply for `channel`; what this instance knows when Redis is
    /// down.
    pub(super) async fn cluster_presence(&self, channel: &str, id: &RequestId) -> Encoded {
        let key = self.channel_keys(channel).swap_remove(0);
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
    }

    /// One page of the channels' presence hashes (`pc:{channel}`) whose names start with
    /// `prefix` (channel names hold no glob characters), each with its member count (`HLEN`);
    /// what this instance knows when Redis is down. One `SCAN` step per page; on a Redis Cluster
    /// the primaries are scanned one after the other (the cursor names which one).
    pub(super) async fn cluster_channels(&self, prefix: &str, cursor: &str, limit: usize) -> super::super::ChannelPage {
        let head = format!("{}pc:{{", self.settings.prefix);
        let pattern = format!("{head}{prefix}*");
        let (node, cursor) = match cursor.split_once('-') {
            Some((n, c)) => (n.parse::<usize>().unwrap_or(0), c.to_string()),
            None => (0, if cursor.is_empty() { "0".to_string() } else { cursor.to_string() }),
        };
        let nodes: Vec<fred::types::config::Server> = match self.cluster {
            true => self.client.cached_cluster_state().map(|s| s.unique_primary_nodes()).unwrap_or_default(),
            false => Vec::new(),
        };
        // Up to SCAN_STEPS steps until one finds a channel: a sparse keyspace (other keys, other
        // prefixes) does not cost the caller one request per empty step.
        let mut page: Result<(String, Vec<String>), fred::error::Error> = Ok((cursor, Vec::new()));
        for _ in 0..SCAN_STEPS {
            let at = match &page {
                Ok((c, keys)) if keys.is_empty() => c.clone(),
                _ => break,
            };
            page = match nodes.get(node) {
                Some(server) => {
                    self.client
                        .with_cluster_node(server.clone())
                        .scan_page(at, pattern.as_str(), Some(limit as u32), None)
                        .await
                }
                None if self.cluster => Ok(("0".to_string(), Vec::new())),
                None => self.client.scan_page(at, pattern.as_str(), Some(limit as u32), None).await,
            };
            if matches!(&page, Ok((c, _)) if c == "0") {
                break;
            }
        }
        let Ok((next, keys)) = page else {
            return self.registry.channel_page(prefix, "", limit);
        };
        let mut channels = Vec::with_capacity(keys.len());
        for key in keys {
            let n: i64 = self.client.hlen(key.as_str()).await.unwrap_or(0);
            let name = key.strip_prefix(head.as_str()).and_then(|k| k.strip_suffix('}'));
            if let (Some(name), true) = (name, n > 0) {
                channels.push((name.to_string(), n as u64));
            }
        }
        channels.sort_unstable();
        let next = match (next != "0", node + 1 < nodes.len()) {
            (true, _) if self.cluster => Some(format!("{node}-{next}")),
            (true, _) => Some(next),
            (false, true) => Some(format!("{}-0", node + 1)),
            (false, false) => None,
        };
        super::super::ChannelPage { channels, next }
    }

    /// Whether `user` holds a connection slot anywhere (`uc:{user}`); what this instance knows
    /// when Redis is down.
    pub(super) async fn cluster_user_connected(&self, user: &str) -> bool {
        match self.client.exists::<i64, _>(self.user_keys(user).swap_remove(0)).await {
            Ok(n) => n > 0,
            Err(_) => self.registry.user_connected(user),
        }
    }

    /// Takes a cluster-wide connection slot for `user` unless the user holds `max`; the user's
    /// first connection in the cluster is reported to the webhooks.
    pub(super) async fn acquire_user_slot(&self, user: &str, max: u32) -> bool {
        let args = vec![self.instance.to_string(), max.to_string()];
        match self.client.eval::<(i64, i64), _, _, _>(ACQUIRE_LUA, self.user_keys(user), args).await {
            Ok((n, mine)) => {
                let user: Arc<str> = Arc::from(user);
                if let Some(t) = self.registry.transitions().filter(|_| n == 1) {
                    t.user_changed(&user, true);
                }
                if mine == 1 {
                    self.queue_presence_op(PresenceOp::UserTaken(user));
                }
                n >= 1
            }
            // Redis down: the local cap still applies; do not lock users out.
            Err(_) => true,
        }
    }

    /// Background task: heartbeat into `instances` (with the open-connection count into `conns`
    /// and the busiest users into `tops`) and reap instances that stopped heartbeating.
    pub(super) async fn heartbeat(self: Arc<Self>) {
        let ttl = self.settings.presence_ttl;
        let every = (ttl / 5).max(Duration::from_millis(20));
        let key = self.key("instances");
        let conns_key = self.key("conns");
        let tops_key = self.key("tops");
        let me = self.instance.to_string();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = crate::util::now_millis();
            let _: Result<i64, _> =
                self.client.zadd(key.as_str(), None, None, false, false, (now as f64, me.as_str())).await;
            let n = self.metrics.connections.get();
            let _: Result<i64, _> = self.client.hset(conns_key.as_str(), (me.as_str(), n)).await;
            let (top, _) = self.registry.top_users(TOPS);
            let top: Vec<&str> = top.iter().map(|(u, _)| u.as_str()).collect();
            let _: Result<i64, _> = self.client.hset(tops_key.as_str(), (me.as_str(), top.join("\u{1f}"))).await;
            let dead_before = now.saturating_sub(ttl.as_millis() as u64 / 2);
            let dead: Vec<String> =
                match self.client.zrangebyscore(key.as_str(), "-inf", dead_before as f64, false, None).await {
                    Ok(d) => d,
                    Err(_) => continue,
                };
            for inst in dead.into_iter().filter(|d| *d != me) {
                self.reap(inst).await;
            }
        }
    }

    /// A graceful exit: stops counting and heartbeating, then reaps this instance itself (the
    /// `leave`s go out through the batcher, which gets a moment to send them).
    pub(super) async fn leave_cluster(&self) {
        for task in self.presence_tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
        self.reap(self.instance.to_string()).await;
        tokio::time::sleep(self.settings.flush + Duration::from_millis(50)).await;
    }

    /// Removes stopped instance `inst`'s records and sends `leave` for the members that left the
    /// cluster with it (nothing when another instance reaped it first: `ZREM` picks one reaper).
    async fn reap(&self, inst: String) {
        match self.client.zrem::<i64, _, _>(self.key("instances"), inst.as_str()).await {
            Ok(1) => {}
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "reap failed");
                return;
            }
        }
        let transitions = self.registry.transitions();
        let channels: Vec<String> = self.client.smembers(self.instance_set("ic", &inst)).await.unwrap_or_default();
        let mut leaves = 0usize;
        for ch in &channels {
            let user_channel = crate::channel::is_user_channel(ch);
            let tr = transitions.filter(|_| !user_channel);
            let args = vec![inst.clone(), if tr.is_some() { "1" } else { "0" }.to_string()];
            let left: Vec<String> = match self.client.eval(REAP_LUA, self.channel_keys(ch), args).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, channel = %ch, "reap of a channel failed");
                    continue;
                }
            };
            for pair in left.chunks_exact(2) {
                let Some((u, d)) = pair[0].split_once('\u{1f}') else { continue };
                leaves += 1;
                if let Some(t) = tr {
                    report(&**t, ch, &Arc::from(u), pair[1].parse().unwrap_or(0));
                }
                if !user_channel {
                    let frame = protocol::membership("leave", ch, u, d);
                    self.publish(ch, Message::Text(frame), 0);
                }
            }
        }
        let users: Vec<String> = self.client.smembers(self.instance_set("iu", &inst)).await.unwrap_or_default();
        for user in users {
            let left = self.client.eval::<i64, _, _, _>(REAP_USER_LUA, self.user_keys(&user), vec![inst.clone()]).await;
            if let (Ok(0), Some(t)) = (left, transitions) {
                t.user_changed(&Arc::from(user), false);
            }
        }
        let _: Result<i64, _> = self.client.del((self.instance_set("ic", &inst), self.instance_set("iu", &inst))).await;
        let _: Result<i64, _> = self.client.hdel(self.key("conns"), inst.as_str()).await;
        let _: Result<i64, _> = self.client.hdel(self.key("tops"), inst.as_str()).await;
        tracing::info!(instance = %inst, leaves, "reaped a stopped instance");
    }
}

/// Reports the transitions presence.lua or reap.lua flagged (1 occupied, 2 vacated, 4 member
/// added, 8 member removed).
fn report(t: &dyn crate::registry::Transitions, channel: &str, user: &Arc<str>, flags: i64) {
    if flags & 1 != 0 {
        t.channel_changed(channel, true);
    }
    if flags & 4 != 0 {
        t.member_changed(channel, user, true);
    }
    if flags & 8 != 0 {
        t.member_changed(channel, user, false);
    }
    if flags & 2 != 0 {
        t.channel_changed(channel, false);
    }
}
