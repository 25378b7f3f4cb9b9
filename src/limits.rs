//! Rate limits: the per-connection message bucket (with the abuse cut-off), the per-IP connect
//! limiter, and the bounded login-attempt limiter. Keyed on the socket's peer address, never on a
//! spoofable header.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Verdict for one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the allowance: drop it and answer `rate_limited`.
    Drop,
    /// More than twice the allowance within a minute: close with 1008.
    Close,
}

/// Token bucket of `per_min` messages per minute (burst `per_min`), plus a one-minute window
/// counting every message sent, for the 2× abuse rule. 32 bytes, lives in the session task.
#[derive(Debug)]
pub struct MessageLimiter {
    per_min: u32,
    tokens: f64,
    last: Instant,
    window_start: Instant,
    window_count: u32,
}

impl MessageLimiter {
    pub fn new(per_min: u32, now: Instant) -> MessageLimiter {
        MessageLimiter { per_min, tokens: per_min as f64, last: now, window_start: now, window_count: 0 }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        if now.duration_since(self.window_start) >= Duration::from_secs(60) {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count = self.window_count.saturating_add(1);
        if self.window_count > self.per_min.saturating_mul(2) {
            return Verdict::Close;
        }
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_min as f64 / 60.0).min(self.per_min as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Verdict::Allow
        } else {
            Verdict::Drop
        }
    }
}

/// New connections per IP per second (token bucket, burst = rate). Entries idle for a while are
/// swept by [`IpLimiter::sweep`], so the map stays bounded by recently active addresses.
pub struct IpLimiter {
    per_sec: u32,
    buckets: DashMap<IpAddr, (f64, Instant)>,
}

impl IpLimiter {
    pub fn new(per_sec: u32) -> IpLimiter {
        IpLimiter { per_sec, buckets: DashMap::with_shard_amount(32) }
    }

    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let rate = self.per_sec as f64;
        let mut b = self.buckets.entry(client_key(ip)).or_insert((rate, now));
        let (tokens, last) = *b;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
        if tokens >= 1.0 {
            *b = (tokens - 1.0, now);
            true
        } else {
            *b = (tokens, now);
            false
        }
    }

    /// Drops buckets that are full again (idle for at least a second).
    pub fn sweep(&self, now: Instant) {
        self.buckets.retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(2));
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_drops_then_closes() {
        let t0 = Instant::now();
        let mut l = MessageLimiter::new(10, t0);
        let verdicts: Vec<_> = (0..25).map(|_| l.check(t0)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Allow));
        assert!(verdicts[10..20].iter().all(|v| *v == Verdict::Drop));
        assert!(verdicts[20..].iter().all(|v| *v == Verdict::Close));
    }

    #[test]
    fn bucket_refills() {
        let t0 = Instant::now();
        let mut l = MessageLimiter::new(60, t0);
        for _ in 0..60 {
            assert_eq!(l.check(t0), Verdict::Allow);
        }
        assert_eq!(l.check(t0), Verdict::Drop);
        assert_eq!(l.check(t0 + Duration::from_secs(1)), Verdict::Allow);
        // A new minute resets the abuse window.
        let mut l = MessageLimiter::new(1, t0);
        assert_eq!(l.check(t0), Verdict::Allow);
        assert_eq!(l.check(t0), Verdict::Drop);
        assert_eq!(l.check(t0), Verdict::Close);
        assert_eq!(l.check(t0 + Duration::from_secs(61)), Verdict::Allow);
    }

    #[test]
    fn ip_limiter() {
        let t0 = Instant::now();
        let l = IpLimiter::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.allow(ip, t0));
        assert!(l.allow(ip, t0));
        assert!(!l.allow(ip, t0));
        assert!(l.allow("127.0.0.2".parse().unwrap(), t0));
        assert!(l.allow(ip, t0 + Duration::from_millis(600)));
        // IPv6 by its /64; IPv4-mapped as the IPv4 address.
        let l = IpLimiter::new(1);
        assert!(l.allow("2001:db8:1:2::1".parse().unwrap(), t0));
        assert!(!l.allow("2001:db8:1:2:ffff::9".parse().unwrap(), t0));
        assert!(l.allow("2001:db8:1:3::1".parse().unwrap(), t0));
        assert!(l.allow("10.0.0.1".parse().unwrap(), t0));
        assert!(!l.allow("::ffff:10.0.0.1".parse().unwrap(), t0));
        l.sweep(t0 + Duration::from_secs(10));
        assert!(l.is_empty());
    }
}

/// Open connections per client address (the PROXY protocol's address behind a balancer) on
/// this instance, for `/api/status`. An entry lives while a connection from it is admitted.
#[derive(Default)]
pub struct ClientAddresses(dashmap::DashMap<IpAddr, u32>);

impl ClientAddresses {
    pub(crate) fn add(&self, ip: IpAddr) {
        *self.0.entry(ip).or_insert(0) += 1;
    }

    pub(crate) fn remove(&self, ip: IpAddr) {
        self.0.remove_if_mut(&ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    /// The `top` addresses with most open connections, most first.
    pub fn top(&self, top: usize) -> Vec<(IpAddr, u32)> {
        let mut all: Vec<(IpAddr, u32)> = self.0.iter().map(|e| (*e.key(), *e.value())).collect();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(top);
        all
    }
}

/// Attempts per key (`ip:…`, `account:…`) per fixed window: login, password reset and register
/// abuse limits. Entries whose window ended are swept.
pub struct AttemptLimiter {
    limit: u32,
    window: Duration,
    map: DashMap<String, (u32, Instant)>,
}

impl AttemptLimiter {
    pub fn new(limit: u32, window: Duration) -> AttemptLimiter {
        AttemptLimiter { limit, window, map: DashMap::with_shard_amount(32) }
    }

    /// Counts one attempt for every key; false if any of them is over its limit.
    pub fn allow(&self, keys: &[String], now: Instant) -> bool {
        let mut ok = true;
        for k in keys {
            let mut e = self.map.entry(k.clone()).or_insert((0, now));
            if now.duration_since(e.1) >= self.window {
                *e = (0, now);
            }
            e.0 = e.0.saturating_add(1);
            ok &= e.0 <= self.limit;
        }
        ok
    }

    pub fn sweep(&self, now: Instant) {
        self.map.retain(|_, (_, start)| now.duration_since(*start) < self.window);
    }
}

#[cfg(test)]
mod attempt_tests {
    use super::*;

    #[test]
    fn per_key_windows() {
        let t0 = Instant::now();
        let l = AttemptLimiter::new(2, Duration::from_secs(60));
        let k = |s: &str| vec![s.to_string()];
        assert!(l.allow(&k("ip:1"), t0));
        assert!(l.allow(&k("ip:1"), t0));
        assert!(!l.allow(&k("ip:1"), t0));
        assert!(l.allow(&k("ip:2"), t0));
        assert!(l.allow(&k("ip:1"), t0 + Duration::from_secs(61)));
        assert!(l.allow(&k("ip:1"), t0 + Duration::from_secs(61)));
        // Any key over its limit refuses.
        assert!(!l.allow(&["ip:3".to_string(), "ip:1".to_string()], t0 + Duration::from_secs(61)));
        l.sweep(t0 + Duration::from_secs(200));
        assert!(l.map.is_empty());
    }
}

/// Entries one [`AuthLimiter`] table holds at most. An entry is a 16-byte key and a (count,
/// window start) pair — about 64 bytes with the map's overhead and slack — so a table stays
/// under about 6.4 MB and the four tables under about 26 MB, whatever number of distinct
/// addresses and login strings arrive.
pub const AUTH_LIMIT_ENTRIES: usize = 100_000;

/// Fixed-window counters on 128-bit keys with a bounded number of entries.
///
/// When a new key finds the table full: entries whose window ended are dropped; if it is still
/// full, every entry under its limit is dropped too (it blocks nothing; its count restarts);
/// if it is still full — every entry is over its limit — the new key is refused (fail closed)
/// until windows end.
struct Windows {
    limit: u32,
    window: Duration,
    cap: usize,
    /// A `DashMap`: one shard locked per update, never across an await.
    map: DashMap<u128, (u32, Instant)>,
}

impl Windows {
    fn new(limit: u32, window: Duration, cap: usize) -> Windows {
        Windows { limit, window, cap, map: DashMap::with_shard_amount(32) }
    }

    /// Counts one attempt for `key` if it is under its limit; false (nothing counted) otherwise.
    fn take(&self, key: u128, now: Instant) -> bool {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap && !self.make_room(now) {
            return false;
        }
        let mut e = self.map.entry(key).or_insert((0, now));
        if now.duration_since(e.1) >= self.window {
            *e = (0, now);
        }
        if e.0 >= self.limit {
            return false;
        }
        e.0 += 1;
        true
    }

    /// Gives back an attempt counted by [`Windows::take`] (another limit refused it).
    fn give_back(&self, key: u128) {
        if let Some(mut e) = self.map.get_mut(&key) {
            e.0 = e.0.saturating_sub(1);
        }
    }

    /// See the type's docs; true when there is room for one more key.
    fn make_room(&self, now: Instant) -> bool {
        self.sweep(now);
        if self.map.len() >= self.cap {
            let limit = self.limit;
            self.map.retain(|_, (n, _)| *n >= limit);
        }
        self.map.len() < self.cap
    }

    fn sweep(&self, now: Instant) {
        self.map.retain(|_, (_, start)| now.duration_since(*start) < self.window);
    }
}

/// Login, forgot-password and reset-password attempts, limited so that one address alone can
/// never lock a user out:
///
/// - per (address, account): `SYNCGATE_AUTH_ATTEMPTS_PER_MIN` per minute, and at most half of
///   the account's hourly limit per hour;
/// - per address, any account: `SYNCGATE_AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN` per minute;
/// - per account, any address: `SYNCGATE_AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR` per hour. Only
///   attempts the other limits admitted count here, and one (address, account) pair contributes
///   at most half of it — so from one address the account limit is never reached, and the user
///   still logs in from another address.
///
/// An attempt is admitted when every limit has room; only admitted attempts are counted.
/// Addresses are keyed by the IPv4 address or the IPv6 /64 (an IPv4-mapped IPv6 address is its
/// IPv4 address). Every key is an HMAC-SHA256 (per-process random key) truncated to 128 bits:
/// no attacker string is stored. Memory: [`AUTH_LIMIT_ENTRIES`] per table.
pub struct AuthLimiter {
    key: ring::hmac::Key,
    pair: Windows,
    pair_hour: Windows,
    address: Windows,
    account: Windows,
}

impl AuthLimiter {
    pub fn new(per_pair_min: u32, per_address_min: u32, per_account_hour: u32) -> AuthLimiter {
        Self::with_capacity(per_pair_min, per_address_min, per_account_hour, AUTH_LIMIT_ENTRIES)
    }

    fn with_capacity(per_pair_min: u32, per_address_min: u32, per_account_hour: u32, cap: usize) -> AuthLimiter {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            // The OS random source failing is not recoverable; a fixed key would still bound
            // memory (only the keys' unpredictability would be lost).
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"syncgate-auth-limits"));
        let (min, hour) = (Duration::from_secs(60), Duration::from_secs(3600));
        AuthLimiter {
            key,
            pair: Windows::new(per_pair_min, min, cap),
            pair_hour: Windows::new((per_account_hour / 2).max(1), hour, cap),
            address: Windows::new(per_address_min, min, cap),
            account: Windows::new(per_account_hour, hour, cap),
        }
    }

    fn hash(&self, parts: &[&[u8]]) -> u128 {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        for p in parts {
            // Length-prefixed: no two different part lists hash the same input.
            ctx.update(&(p.len() as u32).to_be_bytes());
            ctx.update(p);
        }
        let tag = ctx.sign();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        u128::from_be_bytes(out)
    }

    /// Counts one attempt from `peer` on `account` (the validated, canonical login: a
    /// normalised email or a lower-cased username; `None` for a string that names no possible
    /// account — those share one key). False when any limit is reached.
    pub fn allow(&self, peer: IpAddr, account: Option<&str>, now: Instant) -> bool {
        let addr = address_bytes(peer);
        let account = account.map_or(&b"\0invalid"[..], str::as_bytes);
        let a = self.hash(&[b"address", &addr]);
        let p = self.hash(&[b"pair", &addr, account]);
        let c = self.hash(&[b"account", account]);
        let steps: [(&Windows, u128); 4] =
            [(&self.address, a), (&self.pair, p), (&self.pair_hour, p), (&self.account, c)];
        for (i, (w, k)) in steps.iter().enumerate() {
            if !w.take(*k, now) {
                for (w, k) in &steps[..i] {
                    w.give_back(*k);
                }
                return false;
            }
        }
        true
    }

    /// Drops entries whose window ended.
    pub fn sweep(&self, now: Instant) {
        for w in [&self.pair, &self.pair_hour, &self.address, &self.account] {
            w.sweep(now);
        }
    }

    /// Entries held, all tables together.
    pub fn len(&self) -> usize {
        [&self.pair, &self.pair_hour, &self.address, &self.account].iter().map(|w| w.map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Requests per client address per fixed one-minute window (pairing-code claims), with the
/// memory bound and the full-table policy of [`AuthLimiter`]'s tables ([`AUTH_LIMIT_ENTRIES`]).
/// The key is the address itself (IPv4, or the IPv6 /64): no attacker-chosen string is stored.
pub struct AddressLimiter {
    windows: Windows,
}

impl AddressLimiter {
    pub fn new(per_min: u32) -> AddressLimiter {
        AddressLimiter { windows: Windows::new(per_min, Duration::from_secs(60), AUTH_LIMIT_ENTRIES) }
    }

    /// Counts one request from `peer`; false (not counted) when its minute's limit is reached.
    pub fn allow(&self, peer: IpAddr, now: Instant) -> bool {
        let key = match client_key(peer) {
            // A bit above the 64 an IPv6 prefix uses: the two kinds never share a key.
            IpAddr::V4(v4) => (1u128 << 100) | u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6) >> 64,
        };
        self.windows.take(key, now)
    }

    /// Drops entries whose window ended.
    pub fn sweep(&self, now: Instant) {
        self.windows.sweep(now);
    }
}

/// One counter per clock minute (`unix time / 60`), for a limit shared by every caller of this
/// process: the in-memory stand-in for a Redis `INCR` on a per-minute key. A `std` mutex: held
/// for two integer operations, never across an await.
#[derive(Default)]
pub struct MinuteCounter {
    state: std::sync::Mutex<(u64, u64)>,
}

impl MinuteCounter {
    /// Adds one to `minute`'s count (a new minute starts from zero) and returns the count.
    pub fn incr(&self, minute: u64) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 != minute {
            *s = (minute, 0);
        }
        s.1 = s.1.saturating_add(1);
        s.1
    }
}

/// What an address is keyed by: the IPv4 address (also inside an IPv4-mapped IPv6 address), or
/// the /64 of an IPv6 address (one subscriber's prefix).
fn address_bytes(ip: IpAddr) -> Vec<u8> {
    match client_key(ip) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
    }
}

/// The address every per-address limit counts: IPv4 as is (an IPv4-mapped IPv6 address as its
/// IPv4), IPv6 by its /64 (one subscriber's prefix; the rest of the address is free for it to
/// choose).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod auth_limiter_tests {
    use super::*;

    #[test]
    fn address_limiter_and_minute_counter() {
        let t0 = Instant::now();
        let l = AddressLimiter::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.allow(ip, t0));
        assert!(l.allow("::ffff:10.0.0.1".parse().unwrap(), t0));
        assert!(!l.allow(ip, t0));
        assert!(l.allow("10.0.0.2".parse().unwrap(), t0));
        // IPv6 by its /64; never the same key as an IPv4 address.
        assert!(l.allow("2001:db8::1".parse().unwrap(), t0));
        assert!(l.allow("2001:db8::2".parse().unwrap(), t0));
        assert!(!l.allow("2001:db8::3".parse().unwrap(), t0));
        assert!(l.allow("::a00:1".parse().unwrap(), t0));
        assert!(l.allow(ip, t0 + Duration::from_secs(61)));
        l.sweep(t0 + Duration::from_secs(200));
        assert!(l.windows.map.is_empty());

        let c = MinuteCounter::default();
        assert_eq!((c.incr(5), c.incr(5), c.incr(6), c.incr(6)), (1, 2, 1, 2));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_never_locks_the_account() {
        let t0 = Instant::now();
        let l = AuthLimiter::new(10, 60, 30);
        // 10 per minute from one address, then refused.
        for _ in 0..10 {
            assert!(l.allow(ip("10.0.0.1"), Some("alice"), t0));
        }
        assert!(!l.allow(ip("10.0.0.1"), Some("alice"), t0));
        // Another address: fine. Another account from the first address: fine.
        assert!(l.allow(ip("10.0.0.2"), Some("alice"), t0));
        assert!(l.allow(ip("10.0.0.1"), Some("bob"), t0));
        // Minute after minute from one address: it stops at half the hourly account limit.
        let mut admitted = 10;
        for m in 1..60u64 {
            for _ in 0..10 {
                admitted += u32::from(l.allow(ip("10.0.0.1"), Some("alice"), t0 + Duration::from_secs(60 * m)));
            }
        }
        assert_eq!(admitted, 15);
        // The account still has room for another address.
        assert!(l.allow(ip("10.0.0.3"), Some("alice"), t0 + Duration::from_secs(600)));
    }

    #[test]
    fn per_address_and_per_account_limits() {
        let t0 = Instant::now();
        let l = AuthLimiter::new(10, 5, 300);
        for i in 0..5 {
            assert!(l.allow(ip("10.0.0.1"), Some(&format!("u{i}")), t0));
        }
        assert!(!l.allow(ip("10.0.0.1"), Some("u9"), t0));
        assert!(l.allow(ip("10.0.0.2"), Some("u9"), t0));
        let l = AuthLimiter::new(10, 60, 4);
        // Two per pair per hour (half of 4), so three addresses are needed to reach the limit.
        let mut admitted = 0;
        for a in 1..=3 {
            for _ in 0..3 {
                admitted += u32::from(l.allow(ip(&format!("10.0.1.{a}")), Some("carol"), t0));
            }
        }
        assert_eq!(admitted, 4);
        assert!(!l.allow(ip("10.0.1.9"), Some("carol"), t0));
        // An hour later the account has room again.
        assert!(l.allow(ip("10.0.1.9"), Some("carol"), t0 + Duration::from_secs(3601)));
    }

    #[test]
    fn ipv6_by_its_64_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let l = AuthLimiter::new(2, 60, 300);
        assert!(l.allow(ip("2001:db8:1:2::1"), Some("dave"), t0));
        assert!(l.allow(ip("2001:db8:1:2:ffff::9"), Some("dave"), t0));
        assert!(!l.allow(ip("2001:db8:1:2:abcd::1"), Some("dave"), t0), "same /64");
        assert!(l.allow(ip("2001:db8:1:3::1"), Some("dave"), t0), "another /64");
        assert!(l.allow(ip("192.0.2.7"), Some("erin"), t0));
        assert!(l.allow(ip("::ffff:192.0.2.7"), Some("erin"), t0));
        assert!(!l.allow(ip("192.0.2.7"), Some("erin"), t0), "the mapped address is the IPv4 one");
        assert_eq!(address_bytes(ip("::1")).len(), 8);
    }

    #[test]
    fn memory_is_bounded_by_the_entry_cap() {
        let t0 = Instant::now();
        let cap = 10_000;
        let w = Windows::new(3, Duration::from_secs(60), cap);
        for k in 0..1_000_000u128 {
            assert!(w.take(k, t0), "keys under their limit make room");
            assert!(w.map.len() <= cap);
        }
        // Entries over their limit are kept when room is made; a full table of them refuses.
        let w = Windows::new(1, Duration::from_secs(60), 100);
        for k in 0..100u128 {
            assert!(w.take(k, t0));
        }
        assert!(!w.take(5, t0), "over its limit");
        assert!(!w.take(1000, t0), "full of blocking entries: fail closed");
        assert_eq!(w.map.len(), 100);
        // Once their window ends there is room again.
        assert!(w.take(1000, t0 + Duration::from_secs(61)));
        // Through the limiter: a million distinct logins from a million addresses.
        let l = AuthLimiter::with_capacity(10, 60, 300, 1000);
        for i in 0..20_000u32 {
            let addr = IpAddr::from(i.to_be_bytes());
            assert!(l.allow(addr, Some(&format!("user{i}")), t0));
        }
        assert!(l.len() <= 4 * 1000);
    }
}
