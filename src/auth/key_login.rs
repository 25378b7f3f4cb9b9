//! Key login (`GET /ws?auth=key`): the server's signed challenge and the check of the device's
//! answer. Only the cryptography and the exact signed strings live here; finding the device (a
//! live, unrevoked device whose registered key is the one presented) is the session's job.
//!
//! ```text
//! server → {"type":"challenge","nonce":N,"ts":MS,"key_id":K,"sig":S}
//!          S  = Ed25519(server key, "syncgate-challenge-v1\n" + N + "\n" + MS)
//! client → {"type":"auth","device_id":D,"public_key":PK,"client_nonce":CN,"sig":CS}
//!          CS = Ed25519(device key, "syncgate-device-auth-v1\n" + N + "\n" + CN + "\n" + D + "\n" + PK)
//! ```
//! N is 32 random bytes, MS the server's time in ms; keys, nonces and signatures are base64url
//! without padding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SecureRandom;

use super::server_key::ServerKey;

/// The challenge sent on one connection; its nonce is the only one this connection accepts.
pub struct Challenge {
    /// N: base64url of 32 random bytes.
    pub nonce: String,
    /// The frame, ready to send.
    pub frame: String,
}

impl Challenge {
    /// A fresh challenge signed by the server key, at `now_ms`.
    pub fn new(key: &ServerKey, now_ms: u64) -> Option<Challenge> {
        let mut raw = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut raw).ok()?;
        let nonce = URL_SAFE_NO_PAD.encode(raw);
        let sig = URL_SAFE_NO_PAD.encode(key.sign(challenge_text(&nonce, now_ms).as_bytes()));
        // Every value is base64url, hex or digits: nothing to escape.
        let frame = format!(
            r#"{{"type":"challenge","nonce":"{nonce}","ts":{now_ms},"key_id":"{}","sig":"{sig}"}}"#,
            key.key_id
        );
        Some(Challenge { nonce, frame })
    }
}

/// The text the server signs: `"syncgate-challenge-v1\n" + N + "\n" + MS`.
pub fn challenge_text(nonce: &str, ts_ms: u64) -> String {
    format!("syncgate-challenge-v1\n{nonce}\n{ts_ms}")
}

/// The text a device signs: `"syncgate-device-auth-v1\n" + N + "\n" + CN + "\n" + D + "\n" + PK`.
pub fn device_auth_text(nonce: &str, client_nonce: &str, device_id: &str, public_key: &str) -> String {
    format!("syncgate-device-auth-v1\n{nonce}\n{client_nonce}\n{device_id}\n{public_key}")
}

/// The device's answer to a challenge, as sent.
#[derive(Debug, serde::Deserialize)]
pub struct Answer {
    #[serde(rename = "type")]
    pub kind: String,
    pub device_id: String,
    pub public_key: String,
    pub client_nonce: String,
    pub sig: String,
}

/// Why an answer is refused (every case closes the connection with 4001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyLoginError {
    #[error("malformed auth answer")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
}

/// `[A-Za-z0-9_-]{min,max}`: client nonces (16–64) and signed-frame nonces.
pub fn valid_nonce(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Decodes base64url without padding into exactly `N` bytes.
pub fn b64_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    // The encoded length decides; a longer text is refused before decoding.
    if text.len() != (N * 4).div_ceil(3) {
        return None;
    }
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

/// Checks the answer to the challenge whose nonce is `nonce`: well-formed fields and a device
/// signature that verifies with the public key it presents. (Whether that key is the device's
/// registered one is checked against the store afterwards.)
pub fn verify_answer(nonce: &str, a: &Answer) -> Result<(), KeyLoginError> {
    if a.kind != "auth" || !crate::identity::valid_device_id(&a.device_id) || !valid_nonce(&a.client_nonce, 16, 64) {
        return Err(KeyLoginError::Malformed);
    }
    let pk = b64_exact::<32>(&a.public_key).ok_or(KeyLoginError::Malformed)?;
    let sig = b64_exact::<64>(&a.sig).ok_or(KeyLoginError::Malformed)?;
    let text = device_auth_text(nonce, &a.client_nonce, &a.device_id, &a.public_key);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk)
        .verify(text.as_bytes(), &sig)
        .map_err(|_| KeyLoginError::BadSignature)
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;

    fn device() -> Ed25519KeyPair {
        let der = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap()
    }

    fn answer(pair: &Ed25519KeyPair, nonce: &str, device: &str) -> Answer {
        let pk = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let cn = "client-nonce-0123456789";
        let sig = URL_SAFE_NO_PAD.encode(pair.sign(device_auth_text(nonce, cn, device, &pk).as_bytes()));
        Answer { kind: "auth".into(), device_id: device.into(), public_key: pk, client_nonce: cn.into(), sig }
    }

    #[test]
    fn the_challenge_frame_is_signed_over_its_own_texts() {
        let dir = std::env::temp_dir().join(format!("kl-{}", crate::util::random_hex(6)));
        let key = ServerKey::load(None, &dir).unwrap();
        let c = Challenge::new(&key, 1_700_000_000_123).unwrap();
        let v: serde_json::Value = serde_json::from_str(&c.frame).unwrap();
        assert_eq!(v["type"], "challenge");
        assert_eq!(v["nonce"], c.nonce.as_str());
        assert_eq!(b64_exact::<32>(&c.nonce).map(|_| ()), Some(()));
        assert_eq!(v["ts"], 1_700_000_000_123u64);
        assert_eq!(v["key_id"], key.key_id.as_str());
        let sig = URL_SAFE_NO_PAD.decode(v["sig"].as_str().unwrap()).unwrap();
        let pk = URL_SAFE_NO_PAD.decode(&key.public_key).unwrap();
        let signed = format!("syncgate-challenge-v1\n{}\n1700000000123", c.nonce);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk).verify(signed.as_bytes(), &sig).unwrap();
        assert_ne!(Challenge::new(&key, 1).unwrap().nonce, c.nonce, "a fresh nonce every time");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn answers_verify_only_for_their_nonce_and_fields() {
        let pair = device();
        let good = answer(&pair, "N1", "phone");
        assert_eq!(verify_answer("N1", &good), Ok(()));
        assert_eq!(verify_answer("N2", &good), Err(KeyLoginError::BadSignature), "another connection's nonce");
        let other_device = Answer { device_id: "laptop".into(), ..answer(&pair, "N1", "phone") };
        assert_eq!(verify_answer("N1", &other_device), Err(KeyLoginError::BadSignature));
        let other_key =
            Answer { public_key: answer(&device(), "N1", "phone").public_key, ..answer(&pair, "N1", "phone") };
        assert_eq!(verify_answer("N1", &other_key), Err(KeyLoginError::BadSignature));
        for bad in [
            Answer { client_nonce: "short".into(), ..answer(&pair, "N1", "phone") },
            Answer { client_nonce: "x".repeat(65), ..answer(&pair, "N1", "phone") },
            Answer { client_nonce: "has space in it!!!".into(), ..answer(&pair, "N1", "phone") },
            Answer { device_id: "bad id".into(), ..answer(&pair, "N1", "phone") },
            Answer { public_key: "AAAA".into(), ..answer(&pair, "N1", "phone") },
            Answer { sig: "AAAA".into(), ..answer(&pair, "N1", "phone") },
            Answer { kind: "subscribe".into(), ..answer(&pair, "N1", "phone") },
        ] {
            assert_eq!(verify_answer("N1", &bad), Err(KeyLoginError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn nonces_and_base64_are_exact() {
        assert!(valid_nonce(&"a".repeat(16), 16, 64));
        assert!(valid_nonce("AZaz09_-AZaz09_-", 16, 64));
        assert!(!valid_nonce(&"a".repeat(15), 16, 64));
        assert!(!valid_nonce("AZaz09_-AZaz09_=", 16, 64));
        assert_eq!(b64_exact::<2>("AAA"), Some([0, 0]));
        assert_eq!(b64_exact::<2>("AAA="), None);
        assert_eq!(b64_exact::<2>("AA+A"), None);
    }
}

#[cfg(test)]
mod worked_example {
    //! The example in docs/protocol.md ("Key login"), pinned: Ed25519 signatures are
    //! deterministic, so these exact bytes are what every correct client produces.
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;

    pub const SEED: [u8; 32] = [7; 32];
    pub const NONCE: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    pub const CLIENT_NONCE: &str = "cn-0123456789abcdef";

    #[test]
    fn the_documented_answer() {
        let pair = Ed25519KeyPair::from_seed_unchecked(&SEED).unwrap();
        let pk = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let raw: Vec<u8> = (0u8..32).collect();
        assert_eq!(URL_SAFE_NO_PAD.encode(&raw), NONCE);
        let text = device_auth_text(NONCE, CLIENT_NONCE, "phone", &pk);
        let sig = URL_SAFE_NO_PAD.encode(pair.sign(text.as_bytes()));
        let doc = include_str!("../../docs/protocol.md");
        assert!(doc.contains(&pk), "docs/protocol.md shows the public key {pk}");
        assert!(doc.contains(&sig), "docs/protocol.md shows the signature {sig}");
        let answer = Answer {
            kind: "auth".into(),
            device_id: "phone".into(),
            public_key: pk,
            client_nonce: CLIENT_NONCE.into(),
            sig,
        };
        assert_eq!(verify_answer(NONCE, &answer), Ok(()));
    }
}
