//! Password-reset codes: 6 digits from a CSPRNG, stored as salted SHA-256, valid 10 minutes, at
//! most 5 attempts; one live code per user (a new request replaces it).

use super::{Store, StoreError};

pub const OTP_TTL_MS: i64 = 10 * 60 * 1000;
pub const OTP_MAX_ATTEMPTS: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpCheck {
    Valid,
    Invalid,
    /// The account's wrong-code budget for the last 24 h is spent: no code is checked.
    OverBudget,
}

/// The rolling window of the per-account wrong-code budget.
pub const OTP_BUDGET_WINDOW_MS: i64 = 24 * 3600 * 1000;

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
        let expires = crate::util::now_millis() as i64 + OTP_TTL_MS;
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

    /// Checks a code. At most `budget` wrong codes per account per rolling 24 h, across every
    /// code issued (a new code does not reset it): past it, `OverBudget` without checking. Each
    /// check first claims one of the code's 5 attempts in one atomic statement, so concurrent
    /// wrong guesses can never exceed them; a valid code is consumed (once, even if sent twice
    /// at once); the 5th failure (or expiry) burns it.
    pub async fn check_otp(&self, user_id: &str, code: &str, budget: u32) -> Result<OtpCheck, StoreError> {
        let now = crate::util::now_millis() as i64;
        let since = now - OTP_BUDGET_WINDOW_MS;
        let (failures,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM otp_failures WHERE user_id = $1 AND at > $2")
            .bind(user_id)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        if failures >= i64::from(budget) {
            return Ok(OtpCheck::OverBudget);
        }
        let claimed: Option<(String, String)> = sqlx::query_as(
            "UPDATE otps SET attempts = attempts + 1 WHERE user_id = $1 AND attempts < $2 AND expires_at >= $3 \
             RETURNING salt, code_hash",
        )
        .bind(user_id)
        .bind(OTP_MAX_ATTEMPTS)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let valid = match claimed {
            None => {
                // No code, an expired one, or one with its attempts spent: burn it.
                sqlx::query("DELETE FROM otps WHERE user_id = $1").bind(user_id).execute(&self.pool).await?;
                false
            }
            Some((salt, hash)) => {
                let given = digest(&salt, code);
                let same = given.len() == hash.len()
                    && given.bytes().zip(hash.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
                // Consumed by whoever deletes it first.
                same && sqlx::query("DELETE FROM otps WHERE user_id = $1 AND code_hash = $2")
                    .bind(user_id)
                    .bind(&hash)
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
                    == 1
            }
        };
        if valid {
            return Ok(OtpCheck::Valid);
        }
        sqlx::query("DELETE FROM otp_failures WHERE user_id = $1 AND at <= $2")
            .bind(user_id)
            .bind(since)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO otp_failures (user_id, at) VALUES ($1, $2)")
            .bind(user_id)
            .bind(now)
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
