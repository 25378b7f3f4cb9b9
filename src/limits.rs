//! Rate limits: the per-connection message bucket (with the abuse cut-off) and the per-IP connect
//! limiter. Keyed on the socket's peer address, never on a spoofable header.

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
        let mut b = self.buckets.entry(ip).or_insert((rate, now));
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
        l.sweep(t0 + Duration::from_secs(10));
        assert!(l.is_empty());
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
