//! Password hashing: argon2id on tokio's blocking pool with a bounded number in flight, so a
//! login storm never stalls WebSocket traffic on the async workers.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

/// A hash of a random password, made once: verifying against it costs the same as a real check,
/// so an unknown account takes as long as a wrong password.
static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn hash_now(password: &[u8]) -> Option<String> {
    let mut raw = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).ok()?;
    let salt = SaltString::encode_b64(&raw).ok()?;
    Argon2::default().hash_password(password, &salt).ok().map(|h| h.to_string())
}

fn dummy() -> &'static str {
    DUMMY.get_or_init(|| hash_now(crate::util::random_hex(16).as_bytes()).unwrap_or_default())
}

impl Hasher {
    pub fn new(concurrency: usize) -> Hasher {
        Hasher { permits: Arc::new(Semaphore::new(concurrency.max(1))) }
    }

    /// argon2id hash in PHC string form.
    pub async fn hash(&self, password: String) -> Option<String> {
        let _permit = self.permits.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || hash_now(password.as_bytes())).await.ok().flatten()
    }

    /// Verifies `password` against `hash` (or against a dummy hash when there is no account).
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let known = hash.is_some();
        tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(|| dummy().to_string());
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && known
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = Hasher::new(2);
        let hash = h.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(h.verify("correct horse".into(), Some(hash.clone())).await);
        assert!(!h.verify("wrong".into(), Some(hash)).await);
        assert!(!h.verify("anything".into(), None).await);
        assert!(PasswordHash::new(dummy()).is_ok());
    }
}
