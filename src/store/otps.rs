//! Password-reset codes: 6 digits from a CSPRNG, stored as salted SHA-256, valid 10 minutes, at
//! most 5 attempts; one live code per user (a new request replaces it).

use super::{Store, StoreError};

pub const OTP_TTL_MS: i64 = 10 * 60 * 1000;
pub const OTP_MAX_ATTEMPTS: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpCheck {
    Valid,
    Invalid,
}

fn digest(salt: &str, code: &str) -> String {
    let mut input = Vec::with_capacity(salt.len() + code.len() + 1);
    input.extend_from_slice(salt.as_bytes());
    input.push(b':');
    input.extend_from_slice(code.as_bytes());
    crate::util::hex(ring::digest::digest(&ring::digest::SHA256, &input).as_ref())
}

/// Six uniformly random digits.
pub fn new_code() -> Option<String> {
    let rng = ring::rand::SystemRandom::new();
    loop {
        let mut b = [0u8; 4];
        ring::rand::SecureRandom::fill(&rng, &mut b).ok()?;
        let n = u32::from_be_bytes(b);
        // Rejection sampling: no modulo bias.
        if n < u32::MAX - (u32::MAX % 1_000_000) {
            return Some(format!("{:06}", n % 1_000_000));
        }
    }
}

impl Store {
    /// Stores a fresh code for the user (replacing any earlier one).
    pub async fn put_otp(&self, user_id: &str, code: &str) -> Result<(), StoreError> {
        let salt = crate::util::random_hex(16);
        let expires = crate::auth::now_millis() as i64 + OTP_TTL_MS;
        sqlx::query("DELETE FROM otps WHERE user_id = $1").bind(user_id).execute(&self.pool).await?;
        sqlx::query("INSERT INTO otps (user_id, salt, code_hash, expires_at, attempts) VALUES ($1, $2, $3, $4, 0)")
            .bind(user_id)
            .bind(&salt)
            .bind(digest(&salt, code))
            .bind(expires)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Checks a code: each check is an attempt; the 5th failure (or expiry) burns the code; a
    /// valid code is consumed.
    pub async fn check_otp(&self, user_id: &str, code: &str) -> Result<OtpCheck, StoreError> {
        let row: Option<(String, String, i64, i64)> =
            sqlx::query_as("SELECT salt, code_hash, expires_at, attempts FROM otps WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((salt, hash, expires, attempts)) = row else {
            return Ok(OtpCheck::Invalid);
        };
        if expires < crate::auth::now_millis() as i64 || attempts >= OTP_MAX_ATTEMPTS {
            sqlx::query("DELETE FROM otps WHERE user_id = $1").bind(user_id).execute(&self.pool).await?;
            return Ok(OtpCheck::Invalid);
        }
        let given = digest(&salt, code);
        let same = given.len() == hash.len() && given.bytes().zip(hash.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        if same {
            sqlx::query("DELETE FROM otps WHERE user_id = $1").bind(user_id).execute(&self.pool).await?;
            return Ok(OtpCheck::Valid);
        }
        sqlx::query("UPDATE otps SET attempts = attempts + 1 WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(OtpCheck::Invalid)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let c = super::new_code().unwrap();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
