//! Cluster-wide presence and per-user connection caps, kept in Redis hashes with a record per
//! instance, plus the heartbeat that lets any instance reap one that stopped.
//!
//! - Membership changes and slot releases come from the registry through [`super::ClusterHooks`]
//!   (sync) and are queued, in order, to one worker task that runs the Lua scripts and announces
//!   `join`/`leave` when a user+device enters or leaves a channel cluster-wide. Unsubscribes
//!   travel in the same queue so they stay ordered with the presence updates.
//! - Every instance heartbeats into the `instances` sorted set (and writes its open connections
//!   into `conns`); an instance silent for half of `SYNCGATE_PRESENCE_TTL_MS` is reaped by any
//!   other (`reap.lua`, atomic: only one reaper wins), which sends `leave` for its members.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::RedisBus;
use crate::bus::Bus;
use crate::protocol::{self, Encoded, RequestId};

const PRESENCE_LUA: &str = include_str!("presence.lua");
const ACQUIRE_LUA: &str = include_str!("acquire.lua");
const RELEASE_LUA: &str = include_str!("release.lua");
const REAP_LUA: &str = include_str!("reap.lua");

/// Work for the presence worker, queued by the registry hooks.
pub(super) enum PresenceOp {
    Changed { channel: Arc<str>, user: Arc<str>, device: Arc<str>, joined: bool, origin: u64, announce: bool },
    UserReleased(Arc<str>),
    Unsubscribe(String),
}

impl RedisBus {
    /// Background task: applies queued [`PresenceOp`]s one by one, in order.
    pub(super) async fn presence_worker(self: Arc<Self>, mut rx: mpsc::Receiver<PresenceOp>) {
        while let Some(op) = rx.recv().await {
            match op {
                PresenceOp::Changed { channel, user, device, joined, origin, announce } => {
                    self.presence_update(&channel, &user, &device, joined, origin, announce).await
                }
                PresenceOp::Unsubscribe(key) => self.unsubscribe_key(key).await,
                PresenceOp::UserReleased(user) => {
                    let args = vec![self.settings.prefix.clone(), self.instance.to_string(), user.to_string()];
                    match self.client.eval::<i64, _, _, _>(RELEASE_LUA, Vec::<String>::new(), args).await {
                        Ok(0) => {
                            if let Some(t) = self.registry.transitions() {
                                t.user_changed(&user, false);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "user slot release failed"),
                    }
                }
            }
        }
    }

    /// Counts one user+device joining or leaving `channel` here; announces `join` when it is the
    /// first in the cluster and `leave` when it was the last (unless `announce` is off: a large
    /// channel), and reports the cluster-wide transitions this change made to the webhooks.
    async fn presence_update(
        &self,
        channel: &str,
        user: &Arc<str>,
        device: &str,
        joined: bool,
        origin: u64,
        announce: bool,
    ) {
        let delta = if joined { "1" } else { "-1" };
        let user_channel = crate::channel::is_user_channel(channel);
        let transitions = self.registry.transitions().filter(|_| !user_channel);
        let args = vec![
            self.settings.prefix.clone(),
            self.instance.to_string(),
            channel.to_string(),
            user.to_string(),
            device.to_string(),
            delta.into(),
            if transitions.is_some() { "1" } else { "0" }.into(),
        ];
        match self.client.eval::<(i64, i64), _, _, _>(PRESENCE_LUA, Vec::<String>::new(), args).await {
            Ok((total, flags)) => {
                if let Some(t) = transitions {
                    report(&**t, channel, user, flags);
                }
                // User channels carry no join/leave; their presence is still kept.
                let announce = announce && !user_channel && if joined { total == 1 } else { total <= 0 };
                if announce {
                    let kind = if joined { "join" } else { "leave" };
                    let frame = protocol::membership(kind, channel, user, device);
                    self.publish(channel, Message::Text(frame), origin);
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence update failed"),
        }
    }

    /// The cluster-wide `presence` reply for `channel`; what this instance knows when Redis is
    /// down.
    pub(super) async fn cluster_presence(&self, channel: &str, id: &RequestId) -> Encoded {
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
    }

    /// One `SCAN` page over the channels' presence hashes (`pc:<channel>`) whose names start with
    /// `prefix` (channel names hold no glob characters), each with its member count (`HLEN`);
    /// what this instance knows when Redis is down.
    pub(super) async fn cluster_channels(&self, prefix: &str, cursor: &str, limit: usize) -> super::super::ChannelPage {
        let head = self.key("pc:");
        let pattern = format!("{head}{prefix}*");
        let cursor = if cursor.is_empty() { "0" } else { cursor };
        let page: Result<(String, Vec<String>), _> =
            self.client.scan_page(cursor.to_string(), pattern, Some(limit as u32), None).await;
        let Ok((next, keys)) = page else {
            return self.registry.channel_page(prefix, "", limit);
        };
        let mut channels = Vec::with_capacity(keys.len());
        for key in keys {
            let n: i64 = self.client.hlen(key.as_str()).await.unwrap_or(0);
            if let (Some(name), true) = (key.strip_prefix(head.as_str()), n > 0) {
                channels.push((name.to_string(), n as u64));
            }
        }
        channels.sort_unstable();
        super::super::ChannelPage { channels, next: (next != "0").then_some(next) }
    }

    /// Whether `user` holds a connection slot anywhere (`uc`); what this instance knows when
    /// Redis is down.
    pub(super) async fn cluster_user_connected(&self, user: &str) -> bool {
        match self.client.hexists::<bool, _, _>(self.key("uc"), user).await {
            Ok(found) => found,
            Err(_) => self.registry.user_connected(user),
        }
    }

    /// Takes a cluster-wide connection slot for `user` unless the user holds `max`; the user's
    /// first connection in the cluster is reported to the webhooks.
    pub(super) async fn acquire_user_slot(&self, user: &str, max: u32) -> bool {
        let args = vec![self.settings.prefix.clone(), self.instance.to_string(), user.to_string(), max.to_string()];
        match self.client.eval::<i64, _, _, _>(ACQUIRE_LUA, Vec::<String>::new(), args).await {
            Ok(n) => {
                if let Some(t) = self.registry.transitions().filter(|_| n == 1) {
                    t.user_changed(&Arc::from(user), true);
                }
                n >= 1
            }
            // Redis down: the local cap still applies; do not lock users out.
            Err(_) => true,
        }
    }

    /// Background task: heartbeat into `instances` (with the open-connection count into `conns`)
    /// and reap instances that stopped heartbeating.
    pub(super) async fn heartbeat(self: Arc<Self>) {
        let ttl = self.settings.presence_ttl;
        let every = (ttl / 5).max(Duration::from_millis(20));
        let key = self.key("instances");
        let conns_key = self.key("conns");
        let me = self.instance.to_string();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = crate::util::now_millis();
            let _: Result<i64, _> =
                self.client.zadd(key.as_str(), None, None, false, false, (now as f64, me.as_str())).await;
            let n = self.metrics.connections.get();
            let _: Result<i64, _> = self.client.hset(conns_key.as_str(), (me.as_str(), n)).await;
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

    /// Removes stopped instance `inst`'s records and sends `leave` for the members that left the
    /// cluster with it (nothing when another instance reaped it first).
    async fn reap(&self, inst: String) {
        let transitions = self.registry.transitions();
        let flag = if transitions.is_some() { "1" } else { "0" };
        let args = vec![self.settings.prefix.clone(), inst.clone(), flag.to_string()];
        let (leaves, offline): (Vec<String>, Vec<String>) =
            match self.client.eval(REAP_LUA, Vec::<String>::new(), args).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "reap failed");
                    return;
                }
            };
        tracing::info!(instance = %inst, leaves = leaves.len() / 2, "reaped a stopped instance");
        for pair in leaves.chunks_exact(2) {
            let mut parts = pair[0].split('\u{1f}');
            if let (Some(ch), Some(u), Some(d)) = (parts.next(), parts.next(), parts.next()) {
                if let Some(t) = transitions {
                    report(&**t, ch, &Arc::from(u), pair[1].parse().unwrap_or(0));
                }
                if !crate::channel::is_user_channel(ch) {
                    let frame = protocol::membership("leave", ch, u, d);
                    self.publish(ch, Message::Text(frame), 0);
                }
            }
        }
        if let Some(t) = transitions {
            for user in offline {
                t.user_changed(&Arc::from(user), false);
            }
        }
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
