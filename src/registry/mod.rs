//! The sharded connection registry (dashmap): channel members with presence, per-user connection
//! slots, and encode-once fan-out.
//!
//! Locks: each channel entry lives in a dashmap shard; fan-out holds that shard's read lock only
//! while it pushes `Bytes` clones into bounded queues (no await, no allocation per recipient).

mod conn;
pub mod sequencer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio_tungstenite::tungstenite::Message;

pub use conn::{ConnHandle, OpenGuard, Push};

use crate::protocol::{self, Encoded, RequestId};

/// Shards for the channel and user maps; more shards than cores keeps writers apart.
const SHARDS: usize = 64;
/// Keyed devices whose key login needs no store lookup (about 150 bytes each: 40 MB at most).
pub const KEY_OWNERS: usize = 262_144;

/// Members of one channel. Most channels (every user channel of a one-device user, most
/// rooms of idle users) have one member, so that case is stored inline: 16 bytes instead of two
/// hash maps.
enum ChannelEntry {
    One(Arc<ConnHandle>),
    Many(Box<Many>),
}

struct Many {
    subs: HashMap<u64, Arc<ConnHandle>>,
    /// Connections per (user, device): join on 0→1, leave on 1→0.
    presence: HashMap<(Arc<str>, Arc<str>), u32>,
}

impl Many {
    fn add(&mut self, conn: &Arc<ConnHandle>) -> bool {
        self.subs.insert(conn.id, conn.clone());
        let n = self.presence.entry((conn.user_id.clone(), conn.device_id.clone())).or_insert(0);
        *n += 1;
        *n == 1
    }
}

impl ChannelEntry {
    fn for_each(&self, mut f: impl FnMut(&Arc<ConnHandle>)) {
        match self {
            ChannelEntry::One(c) => f(c),
            ChannelEntry::Many(m) => m.subs.values().for_each(f),
        }
    }

    fn len(&self) -> usize {
        match self {
            ChannelEntry::One(_) => 1,
            ChannelEntry::Many(m) => m.subs.len(),
        }
    }
}

/// Outcome of a subscribe.
#[derive(Debug, PartialEq, Eq)]
pub enum Subscribed {
    New,
    Already,
}

/// What the registry tells a cluster bus about local membership changes (sync, never blocks:
/// implementations queue the work).
pub trait ClusterHooks: Send + Sync {
    /// A user+device started (`joined`) or stopped being present in `channel` on this instance;
    /// `announce`: the channel is small enough for `join`/`leave` frames (the cluster count is
    /// kept either way).
    fn presence_changed(
        &self,
        channel: &str,
        user: &Arc<str>,
        device: &Arc<str>,
        joined: bool,
        origin: u64,
        announce: bool,
    );
    /// One local member left `channel` (pairs with the bus's `subscribe`).
    fn member_left(&self, channel: &str);
    /// A cluster connection slot (the bus's `acquire_user`) was released.
    fn user_released(&self, user: &Arc<str>);
}

/// Presence transitions for webhooks (defined by the registry, which never imports them).
/// Without a cluster bus the registry reports them, with its shard lock held, so the
/// transitions of one channel (or user) are reported in the order they happen; with one, the
/// bus reports the cluster-wide ones (each by exactly one instance) and the registry none.
/// Implementations only queue.
pub trait Transitions: Send + Sync {
    /// A channel (never a user channel) got its first member or lost its last one.
    fn channel_changed(&self, channel: &str, occupied: bool);
    /// A user's first connection joined, or last one left, a channel (never a user channel).
    fn member_changed(&self, channel: &str, user: &Arc<str>, added: bool);
    /// A user's first connection opened, or last one closed.
    fn user_changed(&self, user: &Arc<str>, online: bool);
    /// One instance, no cluster bus: a user+device started (`joined`) or stopped being present
    /// in a channel (never a user channel); the implementation counts devices per user to
    /// report [`Transitions::member_changed`].
    fn device_changed(&self, channel: &str, user: &Arc<str>, device: &Arc<str>, joined: bool);
}

/// A page of active channels: (name, member count), and the cursor of the next page (`None`:
/// this was the last).
#[derive(Debug, Default)]
pub struct ChannelPage {
    pub channels: Vec<(String, u64)>,
    pub next: Option<String>,
}

/// Shared registry; methods take `&self`, all state is sharded inside.
pub struct Registry {
    channels: DashMap<Arc<str>, ChannelEntry>,
    /// Live connections per user (the per-user cap).
    user_slots: DashMap<Arc<str>, u32>,
    /// Frames handed to recipients; updated once per fan-out, not per recipient.
    deliveries: AtomicU64,
    /// Channels with more members than this send no join/leave.
    join_leave_max: usize,
    /// Set when a cluster bus runs: presence changes and departures are reported to it, and
    /// join/leave are announced cluster-wide by the bus instead of locally.
    hooks: std::sync::OnceLock<Arc<dyn ClusterHooks>>,
    /// Set when webhooks run: presence transitions are reported to it (by the registry without
    /// a cluster bus, by the bus with one).
    transitions: std::sync::OnceLock<Arc<dyn Transitions>>,
    /// In-order live delivery of durable events (see [`sequencer`]).
    sequencer: sequencer::Sequencer,
    /// `user\x1fdevice` of every revoked device: such a device never connects again.
    revoked: dashmap::DashSet<String>,
    /// Devices with a registered public key (`user \u{1f} device`): no token-only connections.
    keyed: dashmap::DashSet<String>,
    /// Key login's lookup, `device \u{1f} public key` → user, for up to [`KEY_OWNERS`] keyed
    /// devices (past it, logins of the others ask the store).
    key_owners: DashMap<Box<str>, Arc<str>>,
    /// user → current token generation, for users whose tokens were invalidated at least once
    /// (absent: 0). Tokens and connections of an older generation are refused and closed.
    token_gens: DashMap<Box<str>, u64>,
    /// Set once anything was put in `revoked`, `keyed` or `token_gens`: the checks every connect
    /// makes skip the maps while they are empty (`DashMap::is_empty` locks every shard).
    any_revoked: AtomicBool,
    any_keyed: AtomicBool,
    any_gen: AtomicBool,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

/// User channels carry no join/leave (devices of one user are not "members" of a room).
fn announces_presence(channel: &str) -> bool {
    !crate::channel::is_user_channel(channel)
}

/// Default for [`Registry::with_join_leave_limit`].
pub const DEFAULT_JOIN_LEAVE_MAX_MEMBERS: usize = 1000;

fn announce(entry: &ChannelEntry, kind: &str, channel: &str, who: &ConnHandle, limit: usize) {
    // Join/leave cost O(members) each, O(members²) for a crowd arriving; large channels (live
    // audiences) skip them, as Pusher and Centrifugo do. `presence` still answers.
    if !announces_presence(channel) || entry.len() > limit {
        return;
    }
    let frame = Message::Text(protocol::membership(kind, channel, &who.user_id, &who.device_id));
    entry.for_each(|other| {
        if other.id != who.id {
            other.push(frame.clone());
        }
    });
}

impl Registry {
    pub fn new() -> Registry {
        Registry::with_join_leave_limit(DEFAULT_JOIN_LEAVE_MAX_MEMBERS)
    }

    /// A registry whose channels above `max_members` members send no join/leave.
    pub fn with_join_leave_limit(max_members: usize) -> Registry {
        Registry {
            channels: DashMap::with_shard_amount(SHARDS),
            user_slots: DashMap::with_shard_amount(SHARDS),
            deliveries: AtomicU64::new(0),
            join_leave_max: max_members,
            hooks: std::sync::OnceLock::new(),
            transitions: std::sync::OnceLock::new(),
            sequencer: sequencer::Sequencer::default(),
            revoked: dashmap::DashSet::new(),
            keyed: dashmap::DashSet::new(),
            key_owners: DashMap::with_shard_amount(SHARDS),
            token_gens: DashMap::with_shard_amount(SHARDS),
            any_revoked: Default::default(),
            any_keyed: Default::default(),
            any_gen: Default::default(),
        }
    }

    pub fn is_revoked(&self, user: &str, device: &str) -> bool {
        self.any_revoked.load(Ordering::Acquire) && self.revoked.contains(&format!("{user}\u{1f}{device}"))
    }

    pub fn mark_revoked(&self, user: &str, device: &str) {
        self.revoked.insert(format!("{user}\u{1f}{device}"));
        self.any_revoked.store(true, Ordering::Release);
    }

    /// Whether the device has registered a public key (it then connects with key login only).
    pub fn is_keyed(&self, user: &str, device: &str) -> bool {
        self.any_keyed.load(Ordering::Acquire) && self.keyed.contains(&format!("{user}\u{1f}{device}"))
    }

    /// Marks the device keyed and remembers its key for key login (a key belongs to one device).
    pub fn mark_keyed(&self, user: &str, device: &str, public_key: &str) {
        self.keyed.insert(format!("{user}\u{1f}{device}"));
        self.any_keyed.store(true, Ordering::Release);
        self.remember_key_owner(device, public_key, user);
    }

    /// The user whose live device `device` has registered `public_key`, when known here and
    /// unambiguous (`None`: ask the store).
    pub fn key_owner(&self, device: &str, public_key: &str) -> Option<Arc<str>> {
        let owner = self.key_owners.get(format!("{device}\u{1f}{public_key}").as_str())?.clone();
        (!owner.is_empty()).then_some(owner)
    }

    /// Remembers a key's device and user (found in the store, or registered), while fewer than
    /// [`KEY_OWNERS`] are remembered. The same device id and key registered by two users is
    /// remembered as ambiguous (an empty user): the store decides, and refuses such a login.
    pub fn remember_key_owner(&self, device: &str, public_key: &str, user: &str) {
        let key: Box<str> = format!("{device}\u{1f}{public_key}").into();
        // Read before the entry is locked: `len` visits every shard.
        let full = self.key_owners.len() >= KEY_OWNERS;
        match self.key_owners.entry(key) {
            dashmap::Entry::Occupied(mut e) if &**e.get() != user => {
                e.insert(Arc::from(""));
            }
            dashmap::Entry::Occupied(_) => {}
            dashmap::Entry::Vacant(e) if !full => {
                e.insert(Arc::from(user));
            }
            dashmap::Entry::Vacant(_) => {}
        }
    }

    /// The user's current token generation (0 until the password first changes).
    pub fn token_gen(&self, user: &str) -> u64 {
        if !self.any_gen.load(Ordering::Acquire) {
            return 0;
        }
        self.token_gens.get(user).map_or(0, |g| *g)
    }

    /// Whether a token of generation `gen` for `user` is still current.
    pub fn gen_current(&self, user: &str, gen: u64) -> bool {
        gen >= self.token_gen(user)
    }

    /// Starts generation `gen` for `user` here (never goes back) and closes the user's
    /// connections authenticated in an older one with 4003. Returns how many were closed.
    pub fn set_token_gen(&self, user: &str, gen: u64) -> usize {
        {
            let mut g = self.token_gens.entry(Box::from(user)).or_insert(0);
            self.any_gen.store(true, Ordering::Release);
            if *g < gen {
                *g = gen;
            }
        }
        let current = self.token_gen(user);
        let channel = crate::channel::user_channel(user);
        let Some(entry) = self.channels.get(channel.as_str()) else {
            return 0;
        };
        let mut n = 0;
        entry.for_each(|conn| {
            if conn.gen < current {
                conn.close(crate::error::CloseReason::Forbidden);
                n += 1;
            }
        });
        n
    }

    /// Revokes a device here: marks it and closes its connections with 4003.
    pub fn revoke_device(&self, user: &str, device: &str) -> usize {
        self.mark_revoked(user, device);
        self.close_user(user, Some(device), crate::error::CloseReason::Forbidden)
    }

    /// Whether `user` still has a connection of `device` on this instance.
    pub fn device_connected(&self, user: &str, device: &str) -> bool {
        let channel = crate::channel::user_channel(user);
        let mut found = false;
        if let Some(e) = self.channels.get(channel.as_str()) {
            e.for_each(|c| found |= &*c.device_id == device);
        }
        found
    }

    /// Connects a cluster bus (once, at start-up).
    pub fn set_hooks(&self, hooks: Arc<dyn ClusterHooks>) {
        let _ = self.hooks.set(hooks);
    }

    /// Connects the webhooks' transition sink (once, at start-up).
    pub fn set_transitions(&self, t: Arc<dyn Transitions>) {
        let _ = self.transitions.set(t);
    }

    /// The webhooks' transition sink, when webhooks run.
    pub fn transitions(&self) -> Option<&Arc<dyn Transitions>> {
        self.transitions.get()
    }

    /// The sink, when this registry reports transitions itself (no cluster bus).
    fn local_transitions(&self) -> Option<&Arc<dyn Transitions>> {
        match self.hooks.get() {
            Some(_) => None,
            None => self.transitions.get(),
        }
    }

    /// Join/leave for `who` in `channel`: announced locally, or reported to the cluster bus.
    fn presence_changed(&self, entry: &ChannelEntry, channel: &str, who: &ConnHandle, joined: bool) {
        match self.hooks.get() {
            Some(h) => {
                let announce = entry.len() <= self.join_leave_max;
                h.presence_changed(channel, &who.user_id, &who.device_id, joined, who.id, announce);
            }
            None => {
                if let Some(t) = self.transitions.get().filter(|_| announces_presence(channel)) {
                    t.device_changed(channel, &who.user_id, &who.device_id, joined);
                }
                announce(entry, if joined { "join" } else { "leave" }, channel, who, self.join_leave_max)
            }
        }
    }

    /// Adds `conn` to `channel`, announcing a join to the other members when this user+device
    /// was not present yet.
    pub fn subscribe(&self, channel: &str, conn: &Arc<ConnHandle>) -> Subscribed {
        let mut entry = match self.channels.entry(Arc::from(channel)) {
            dashmap::Entry::Vacant(v) => {
                let entry = v.insert(ChannelEntry::One(conn.clone()));
                if let Some(h) = self.hooks.get() {
                    h.presence_changed(channel, &conn.user_id, &conn.device_id, true, conn.id, true);
                } else if let Some(t) = self.transitions.get().filter(|_| announces_presence(channel)) {
                    t.channel_changed(channel, true);
                    t.device_changed(channel, &conn.user_id, &conn.device_id, true);
                }
                drop(entry);
                return Subscribed::New;
            }
            dashmap::Entry::Occupied(o) => o.into_ref(),
        };
        let joined = match &mut *entry {
            ChannelEntry::One(existing) if existing.id == conn.id => return Subscribed::Already,
            ChannelEntry::One(existing) => {
                let mut many = Many { subs: HashMap::with_capacity(2), presence: HashMap::with_capacity(2) };
                many.add(existing);
                let joined = many.add(conn);
                *entry = ChannelEntry::Many(Box::new(many));
                joined
            }
            ChannelEntry::Many(m) => {
                if m.subs.contains_key(&conn.id) {
                    return Subscribed::Already;
                }
                m.add(conn)
            }
        };
        if joined {
            self.presence_changed(&entry, channel, conn, true);
        }
        Subscribed::New
    }

    /// Removes `conn` from `channel`; announces a leave when its user+device has no connection
    /// left there. Returns whether it was subscribed.
    pub fn unsubscribe(&self, channel: &str, conn: &ConnHandle) -> bool {
        let Some(mut entry) = self.channels.get_mut(channel) else {
            return false;
        };
        let (gone, left) = match &mut *entry {
            ChannelEntry::One(c) if c.id == conn.id => (true, 0),
            ChannelEntry::One(_) => return false,
            ChannelEntry::Many(m) => {
                if m.subs.remove(&conn.id).is_none() {
                    return false;
                }
                let key = (conn.user_id.clone(), conn.device_id.clone());
                let gone = match m.presence.get_mut(&key) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        false
                    }
                    _ => {
                        m.presence.remove(&key);
                        true
                    }
                };
                (gone, m.subs.len())
            }
        };
        if left == 1 {
            // Back to the compact form.
            let last = match &*entry {
                ChannelEntry::Many(m) => m.subs.values().next().cloned(),
                ChannelEntry::One(_) => None,
            };
            if let Some(last) = last {
                *entry = ChannelEntry::One(last);
            }
        }
        if gone && (left > 0 || self.hooks.get().is_some()) {
            self.presence_changed(&entry, channel, conn, false);
        } else if gone {
            // The last member: no one to announce a leave to, but a transition to report.
            if let Some(t) = self.local_transitions().filter(|_| announces_presence(channel)) {
                t.device_changed(channel, &conn.user_id, &conn.device_id, false);
            }
        }
        drop(entry);
        if let Some(h) = self.hooks.get() {
            h.member_left(channel);
        }
        if left == 0 {
            self.channels.remove_if(channel, |_, e| {
                let empty = match e {
                    ChannelEntry::One(c) => c.id == conn.id,
                    ChannelEntry::Many(m) => m.subs.is_empty(),
                };
                // Reported under the shard lock: a new first member reports after this.
                if let Some(t) = self.local_transitions().filter(|_| empty && announces_presence(channel)) {
                    t.channel_changed(channel, false);
                }
                empty
            });
        }
        true
    }

    /// Hands `msg` to every member of `channel` except connection `except`. Returns the number of
    /// recipients. The message is encoded once by the caller; each recipient gets a clone.
    pub fn fan_out(&self, channel: &str, msg: &Message, except: u64) -> usize {
        let Some(entry) = self.channels.get(channel) else {
            return 0;
        };
        let mut n = 0;
        entry.for_each(|conn| {
            if conn.id != except {
                conn.push(msg.clone());
                n += 1;
            }
        });
        drop(entry);
        self.deliveries.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// [`Registry::fan_out`] for a durable event (`seq` of `channel`) to the members of `route`:
    /// through the sequencer, so each route sees a channel's events in `seq` order whatever
    /// path they came by. Returns the number of recipients handed something now.
    pub fn fan_out_durable(&self, route: &str, channel: &str, seq: u64, msg: Message, except: u64) -> usize {
        let mut n = 0;
        // One instance: its single writer delivers every channel in seq order already, so no
        // state is kept. In a cluster another instance's earlier commit may still be on its way.
        if self.hooks.get().is_none() {
            return self.fan_out(route, &msg, except);
        }
        self.sequencer.offer(route, channel, seq, msg, except, 8, |m, e| n += self.fan_out(route, &m, e));
        n
    }

    /// Releases durable events that waited too long for a missing predecessor; `repair` is
    /// asked to read a gap's events from the store (route, channel, first and last missing seq)
    /// and hand them back through [`Registry::fan_out_durable`].
    pub fn sequencer_tick(&self, repair: impl FnMut(&str, &str, u64, u64)) {
        self.sequencer.tick(
            |route, m, e| {
                self.fan_out(route, &m, e);
            },
            repair,
        );
    }

    /// True while some durable stream waits for a missing event.
    pub fn sequencer_waiting(&self) -> bool {
        self.sequencer.waiting()
    }

    /// Resolves when an event starts waiting (see [`Registry::sequencer_waiting`]).
    pub async fn sequencer_wait(&self) {
        self.sequencer.wait().await
    }

    /// Forgets idle sequencer state.
    pub fn sequencer_evict_idle(&self) {
        self.sequencer.evict_idle();
    }

    /// Frames handed to recipients by [`Registry::fan_out`] so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// The `presence` reply for `channel`.
    pub fn presence(&self, channel: &str, id: &RequestId) -> Encoded {
        match self.channels.get(channel).as_deref() {
            Some(ChannelEntry::One(c)) => {
                protocol::presence(channel, std::iter::once((&*c.user_id, &*c.device_id)), id)
            }
            Some(ChannelEntry::Many(m)) => {
                let mut members: Vec<(&str, &str)> = m.presence.keys().map(|(u, d)| (&**u, &**d)).collect();
                members.sort_unstable();
                protocol::presence(channel, members.into_iter(), id)
            }
            None => protocol::presence(channel, std::iter::empty(), id),
        }
    }

    /// Up to `limit` channels of this instance whose name starts with `prefix` and sorts after
    /// `cursor`, in name order, with their member counts (distinct user+device); `next` is the
    /// last name when more may follow.
    pub fn channel_page(&self, prefix: &str, cursor: &str, limit: usize) -> ChannelPage {
        let mut all: Vec<(String, u64)> = self
            .channels
            .iter()
            .filter(|e| e.key().starts_with(prefix) && &**e.key() > cursor)
            .map(|e| {
                let members = match e.value() {
                    ChannelEntry::One(_) => 1,
                    ChannelEntry::Many(m) => m.presence.len() as u64,
                };
                (e.key().to_string(), members)
            })
            .collect();
        all.sort_unstable();
        let more = all.len() > limit;
        all.truncate(limit);
        let next = if more { all.last().map(|(c, _)| c.clone()) } else { None };
        ChannelPage { channels: all, next }
    }

    /// Number of connections subscribed to `channel`.
    pub fn member_count(&self, channel: &str) -> usize {
        self.channels.get(channel).map(|e| e.len()).unwrap_or(0)
    }

    /// Every registered connection (each is in exactly one user channel).
    pub fn all_conns(&self) -> Vec<Arc<ConnHandle>> {
        let mut out = Vec::new();
        for entry in self.channels.iter() {
            if crate::channel::is_user_channel(entry.key()) {
                entry.value().for_each(|c| out.push(c.clone()));
            }
        }
        out
    }

    /// Connections per user, largest first (at most `n`), and the instance total.
    pub fn top_users(&self, n: usize) -> (Vec<(String, u32)>, u64) {
        let mut all: Vec<(String, u32)> = self.user_slots.iter().map(|e| (e.key().to_string(), *e.value())).collect();
        let total = all.iter().map(|(_, c)| *c as u64).sum();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        (all, total)
    }

    /// Asks every registered connection to close (shutdown). Each connection is in exactly one
    /// user channel, so walking those reaches each once.
    pub fn close_all(&self, reason: crate::error::CloseReason) -> usize {
        let mut n = 0;
        for entry in self.channels.iter() {
            if entry.key().starts_with("user:") {
                entry.value().for_each(|c| {
                    c.close(reason);
                    n += 1;
                });
            }
        }
        n
    }

    /// Asks every connection of `user` (optionally one device) to close.
    pub fn close_user(&self, user: &str, device: Option<&str>, reason: crate::error::CloseReason) -> usize {
        let channel = crate::channel::user_channel(user);
        let Some(entry) = self.channels.get(channel.as_str()) else {
            return 0;
        };
        let mut n = 0;
        entry.for_each(|conn| {
            if device.is_none_or(|d| d == &*conn.device_id) {
                conn.close(reason);
                n += 1;
            }
        });
        n
    }

    /// Whether `user` holds a connection slot here (a connection admitted and not yet gone).
    pub fn user_connected(&self, user: &str) -> bool {
        self.user_slots.contains_key(user)
    }

    /// Takes one of `user`'s connection slots if fewer than `max` are in use. The slot is released
    /// when the returned guard drops, on every exit path.
    pub fn acquire_slot(self: &Arc<Self>, user: &Arc<str>, max: u32) -> Option<UserSlot> {
        let mut n = self.user_slots.entry(user.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        if *n == 1 {
            if let Some(t) = self.local_transitions() {
                t.user_changed(user, true);
            }
        }
        drop(n);
        Some(UserSlot { registry: self.clone(), user: user.clone(), cluster: false })
    }
}

/// RAII per-user connection slot.
pub struct UserSlot {
    registry: Arc<Registry>,
    user: Arc<str>,
    /// Also holds a cluster-wide slot (released through the bus).
    cluster: bool,
}

impl UserSlot {
    /// Records that a cluster-wide slot was taken too, so that dropping releases it.
    pub fn mark_cluster(&mut self) {
        self.cluster = true;
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        // Decremented and removed under one lock, so a new first connection is always
        // reported after this last one.
        self.registry.user_slots.remove_if_mut(&self.user, |user, n| {
            *n = n.saturating_sub(1);
            if *n == 0 {
                if let Some(t) = self.registry.local_transitions() {
                    t.user_changed(user, false);
                }
            }
            *n == 0
        });
        if self.cluster {
            if let Some(h) = self.registry.hooks.get() {
                h.user_released(&self.user);
            }
        }
    }
}

/// RAII membership of one connection: every channel it joined is left when this drops, so an
/// abrupt disconnect (or a panic in the session) still sends `leave` and frees registry entries.
pub struct Membership {
    registry: Arc<Registry>,
    pub conn: Arc<ConnHandle>,
    channels: Vec<Arc<str>>,
}

impl Membership {
    pub fn new(registry: Arc<Registry>, conn: Arc<ConnHandle>) -> Membership {
        Membership { registry, conn, channels: Vec::new() }
    }

    pub fn is_member(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| &**c == channel)
    }

    pub fn count(&self) -> usize {
        self.channels.len()
    }

    pub fn join(&mut self, channel: &str) -> Subscribed {
        let r = self.registry.subscribe(channel, &self.conn);
        if r == Subscribed::New {
            self.channels.push(Arc::from(channel));
        }
        r
    }

    pub fn leave(&mut self, channel: &str) -> bool {
        let Some(pos) = self.channels.iter().position(|c| &**c == channel) else {
            return false;
        };
        self.channels.swap_remove(pos);
        self.registry.unsubscribe(channel, &self.conn)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for c in self.channels.drain(..) {
            self.registry.unsubscribe(&c, &self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn conn(id: u64, user: &str, device: &str) -> Arc<ConnHandle> {
        Arc::new(ConnHandle::new(id, user.into(), device.into(), 16, 1 << 20, Arc::default()))
    }

    fn drain(c: &ConnHandle) -> Vec<String> {
        let mut q = VecDeque::new();
        c.take(&mut q);
        q.into_iter().map(|m| m.into_text().unwrap().to_string()).collect()
    }

    #[test]
    fn join_leave_once_per_device() {
        let r = Arc::new(Registry::new());
        let a = conn(1, "alice", "d1");
        let a2 = conn(2, "alice", "d1");
        let b = conn(3, "bob", "d1");
        let mut mb = Membership::new(r.clone(), b.clone());
        mb.join("room:1");
        let mut m1 = Membership::new(r.clone(), a.clone());
        m1.join("room:1");
        let mut m2 = Membership::new(r.clone(), a2.clone());
        m2.join("room:1");
        let got = drain(&b);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("\"join\""));
        assert_eq!(r.member_count("room:1"), 3);
        drop(m1);
        assert!(drain(&b).is_empty(), "second connection of the device keeps it present");
        drop(m2);
        let got = drain(&b);
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("\"leave\""));
        drop(mb);
        assert_eq!(r.member_count("room:1"), 0);
        assert!(r.channels.is_empty());
    }

    #[test]
    fn fan_out_excludes_sender_and_slots_release() {
        let r = Arc::new(Registry::new());
        let conns: Vec<_> = (0..4).map(|i| conn(i, "u", &format!("d{i}"))).collect();
        let _ms: Vec<_> = conns
            .iter()
            .map(|c| {
                let mut m = Membership::new(r.clone(), c.clone());
                m.join("user:u");
                m
            })
            .collect();
        assert_eq!(r.fan_out("user:u", &Message::text("x"), 0), 3);
        assert!(drain(&conns[0]).is_empty());
        assert_eq!(drain(&conns[1]), vec!["x"]);
        let user: Arc<str> = "u".into();
        let s1 = r.acquire_slot(&user, 2).unwrap();
        let _s2 = r.acquire_slot(&user, 2).unwrap();
        assert!(r.acquire_slot(&user, 2).is_none());
        drop(s1);
        assert!(r.acquire_slot(&user, 2).is_some());
    }
}
