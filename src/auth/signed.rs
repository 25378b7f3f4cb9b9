//! Signed frames: the exact text a device signs for a `publish`, Ed25519 verification (ring) and
//! the in-process nonce memory (the Redis bus keeps a cluster-wide one instead when it can).
//!
//! The signed text, every part as bytes, joined by `\n` (0x0A):
//! `syncgate-event-v1`, the full channel name, the event name, the nonce, `sig_ts` in decimal,
//! then the `data` JSON text exactly as the client sent it (docs/protocol.md has a worked example).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use base64::Engine;

/// The first line of every signed text: the format's version.
pub const SIGNED_PREFIX: &str = "syncgate-event-v1";
/// Shortest and longest nonce, in characters of `[A-Za-z0-9_-]`.
pub const NONCE_MIN: usize = 16;
pub const NONCE_MAX: usize = 64;
/// Most nonces the in-process memory holds at once (all users); see [`NonceCache`].
pub const MAX_NONCES: usize = 1 << 20;
const SHARDS: usize = 16;

/// The text a device signs for a publish (see the module docs).
pub fn signed_text(channel: &str, event: &str, nonce: &str, sig_ts: u64, data: &[u8]) -> Vec<u8> {
    let ts = sig_ts.to_string();
    let mut out =
        Vec::with_capacity(SIGNED_PREFIX.len() + channel.len() + event.len() + nonce.len() + ts.len() + data.len() + 5);
    for part in [SIGNED_PREFIX.as_bytes(), channel.as_bytes(), event.as_bytes(), nonce.as_bytes(), ts.as_bytes()] {
        out.extend_from_slice(part);
        out.push(b'\n');
    }
    out.extend_from_slice(data);
    out
}

/// 16-64 characters of `[A-Za-z0-9_-]`.
pub fn valid_nonce(nonce: &str) -> bool {
    super::key_login::valid_nonce(nonce, NONCE_MIN, NONCE_MAX)
}

/// base64url without padding → bytes (`None` for anything else, padding included).
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()
}

/// bytes → base64url without padding.
pub fn b64_encode(raw: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A device's public key: the 32 raw bytes (verification) and its base64url text (frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    pub raw: [u8; 32],
    pub text: std::sync::Arc<str>,
}

impl DeviceKey {
    /// The key as stored (`devices.public_key`); `None` when it is not 32 bytes of base64url.
    pub fn parse(text: &str) -> Option<DeviceKey> {
        let raw = super::key_login::b64_exact::<32>(text)?;
        Some(DeviceKey { raw, text: text.into() })
    }

    /// Whether `sig` (base64url of 64 bytes) is this key's Ed25519 signature of `message`.
    pub fn verifies(&self, message: &[u8], sig: &str) -> bool {
        if sig.len() != 86 {
            return false;
        }
        let Some(sig) = b64_decode(sig) else { return false };
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.raw).verify(message, &sig).is_ok()
    }
}

/// What [`NonceCache::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceTake {
    /// Not seen before: now remembered until its expiry.
    Fresh,
    /// Already used (and not yet expired).
    Used,
    /// The memory is full of unexpired nonces: nothing was remembered (the publish is refused
    /// with `unavailable`; an unexpired nonce is never forgotten early, which would allow a replay).
    Full,
}

/// The in-process memory of used nonces per (user, device): [`SHARDS`] maps, each behind its own
/// mutex (held for one map operation, never across an await), from a 128-bit keyed hash of
/// (user, device, nonce) to the time (ms) the nonce may be forgotten (`sig_ts` + the window).
/// At most [`MAX_NONCES`] entries (about 32 bytes each: ~48 MiB at the bound); a full shard is
/// purged of expired entries first (at most once a second); [`NonceCache::purge`] runs every 5 s.
pub struct NonceCache {
    shards: Vec<Mutex<Shard>>,
    hashers: [std::collections::hash_map::RandomState; 2],
}

/// One shard: nonce hash → when it may be forgotten (ms), and when a full shard was last purged
/// (a full shard of unexpired nonces is scanned at most once a second, not on every publish).
#[derive(Default)]
struct Shard {
    map: HashMap<u128, u64>,
    purged_full_at: u64,
}

impl Default for NonceCache {
    fn default() -> Self {
        NonceCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hashers: [Default::default(), Default::default()],
        }
    }
}

impl NonceCache {
    fn key(&self, user: &str, device: &str, nonce: &str) -> u128 {
        let parts = (user, device, nonce);
        (u128::from(self.hashers[0].hash_one(parts)) << 64) | u128::from(self.hashers[1].hash_one(parts))
    }

    fn shard(&self, key: u128) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(key as usize) % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the nonce until `expires` (ms) unless it is already remembered.
    pub fn take(&self, user: &str, device: &str, nonce: &str, expires: u64, now: u64) -> NonceTake {
        let key = self.key(user, device, nonce);
        let mut shard = self.shard(key);
        if shard.map.get(&key).is_some_and(|&e| e > now) {
            return NonceTake::Used;
        }
        if shard.map.len() >= MAX_NONCES / SHARDS {
            if now >= shard.purged_full_at.saturating_add(1000) || now < shard.purged_full_at {
                shard.purged_full_at = now;
                shard.map.retain(|_, e| *e > now);
            }
            if shard.map.len() >= MAX_NONCES / SHARDS {
                return NonceTake::Full;
            }
        }
        shard.map.insert(key, expires);
        NonceTake::Fresh
    }

    /// Forgets a nonce taken for a publish that was then refused before it was delivered or
    /// stored (quota, full queue): the client may retry with the same signature.
    pub fn release(&self, user: &str, device: &str, nonce: &str) {
        let key = self.key(user, device, nonce);
        self.shard(key).map.remove(&key);
    }

    /// Forgets every expired nonce.
    pub fn purge(&self, now: u64) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).map.retain(|_, e| *e > now);
        }
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// The worked example of docs/protocol.md ("Signed frames"): a fixed seed, so the signature
    /// (Ed25519 is deterministic) is the one printed there.
    #[test]
    fn worked_example_of_the_protocol_document() {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
        let key = DeviceKey::parse(&b64_encode(pair.public_key().as_ref())).unwrap();
        let data = br#"{"text":"hi",  "n":[1,2.50]}"#;
        let text = signed_text("dm:alice:bob", "msg", "k3v9Qd2Zr8mT1xY4bN6pWa", 1_700_000_000_000, data);
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "syncgate-event-v1\ndm:alice:bob\nmsg\nk3v9Qd2Zr8mT1xY4bN6pWa\n1700000000000\n{\"text\":\"hi\",  \"n\":[1,2.50]}"
        );
        assert_eq!(text.len(), 100);
        let sig = b64_encode(pair.sign(&text).as_ref());
        assert_eq!(&*key.text, EXAMPLE_KEY);
        assert_eq!(sig, EXAMPLE_SIG);
        assert!(key.verifies(&text, &sig));
        // One byte of data changed (whitespace too), another channel, a truncated signature: refused.
        let other = signed_text(
            "dm:alice:bob",
            "msg",
            "k3v9Qd2Zr8mT1xY4bN6pWa",
            1_700_000_000_000,
            br#"{"text":"hi", "n":[1,2.50]}"#,
        );
        assert!(!key.verifies(&other, &sig));
        let reencoded = signed_text(
            "dm:alice:bob",
            "msg",
            "k3v9Qd2Zr8mT1xY4bN6pWa",
            1_700_000_000_000,
            br#"{"text":"hi","n":[1,2.5]}"#,
        );
        assert!(!key.verifies(&reencoded, &sig));
        let other = signed_text("dm:alice:eve", "msg", "k3v9Qd2Zr8mT1xY4bN6pWa", 1_700_000_000_000, data);
        assert!(!key.verifies(&other, &sig));
        assert!(!key.verifies(&text, &sig[..85]));
        assert!(!key.verifies(&text, &format!("{sig}==")));
        assert!(!key.verifies(&text, "not base64 at all!"));
    }

    const EXAMPLE_KEY: &str = "6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw";
    const EXAMPLE_SIG: &str = "6VarioFmaiEI3emdz1dgQ-dI5hptR_rqb__ZsHt1h5yrgZXvqHS6tyXN0a0hjPPrNMKLv2JFivQFfdyFizsoBQ";

    #[test]
    fn nonces_and_keys() {
        assert!(valid_nonce("abcdefghijklmnop") && valid_nonce(&"A_-9".repeat(16)));
        assert!(!valid_nonce("abcdefghijklmno") && !valid_nonce(&"a".repeat(65)));
        assert!(
            !valid_nonce("abcdefghijklmno=") && !valid_nonce("abcdefghijklmno+") && !valid_nonce("abcdefghijklmnoé")
        );
        assert!(DeviceKey::parse(&b64_encode(&[1; 32])).is_some());
        assert!(DeviceKey::parse(&b64_encode(&[1; 31])).is_none());
        assert!(DeviceKey::parse(&format!("{}=", b64_encode(&[1; 32]))).is_none());
    }

    #[test]
    fn nonce_memory_remembers_until_expiry() {
        let c = NonceCache::default();
        assert_eq!(c.take("u", "d", "n1", 1000, 0), NonceTake::Fresh);
        assert_eq!(c.take("u", "d", "n1", 1000, 999), NonceTake::Used);
        // Per device and user.
        assert_eq!(c.take("u", "d2", "n1", 1000, 0), NonceTake::Fresh);
        assert_eq!(c.take("v", "d", "n1", 1000, 0), NonceTake::Fresh);
        // Expired: usable again (its sig_ts is then outside the window anyway).
        assert_eq!(c.take("u", "d", "n1", 2000, 1000), NonceTake::Fresh);
        c.release("u", "d", "n1");
        assert_eq!(c.take("u", "d", "n1", 2000, 1000), NonceTake::Fresh);
        assert_eq!(c.len(), 3);
        c.purge(1500);
        assert_eq!(c.len(), 1);
        c.purge(2000);
        assert!(c.is_empty());
    }

    #[test]
    fn nonce_memory_is_bounded() {
        let c = NonceCache::default();
        let mut full = 0;
        for i in 0..MAX_NONCES + 64 {
            if c.take("u", "d", &i.to_string(), 10, 0) == NonceTake::Full {
                full += 1;
            }
        }
        assert!(full >= 64, "{full}");
        assert!(c.len() <= MAX_NONCES);
        // Expired entries make room (a full shard is scanned at most once a second).
        assert_eq!(c.take("u", "d", "late", 2000, 1000), NonceTake::Fresh);
    }
}
