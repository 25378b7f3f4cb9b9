//! Pairing codes: one live code per (user, device), stored only as a keyed hash (the caller
//! hashes; see `Verifier::pairing_hash`) with its expiry, claimed once by any instance.

use super::{Store, StoreError};

/// The device that made a code, found by claiming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingCode {
    pub user_id: String,
    pub device_id: String,
    /// The user's token generation when the code was made (a password change since voids it).
    pub token_gen: u64,
}

impl Store {
    /// Stores `code_hash` as the live code of (`user_id`, `device_id`) for `ttl_ms`, replacing
    /// that device's earlier code in the same statement, and deletes expired codes (so the table
    /// holds at most one row per device plus codes not yet expired). A hash already taken by
    /// another device is [`StoreError::Conflict`] (the caller draws another code).
    pub async fn put_pairing_code(
        &self,
        code_hash: &str,
        user_id: &str,
        device_id: &str,
        token_gen: u64,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let now = crate::util::now_millis() as i64;
        sqlx::query("DELETE FROM pairing_codes WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        sqlx::query(
            "INSERT INTO pairing_codes (code_hash, user_id, device_id, token_gen, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET code_hash = excluded.code_hash, \
             token_gen = excluded.token_gen, expires_at = excluded.expires_at, created_at = excluded.created_at",
        )
        .bind(code_hash)
        .bind(user_id)
        .bind(device_id)
        .bind(token_gen.min(i64::MAX as u64) as i64)
        .bind(now.saturating_add(ttl_ms))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(Store::map_unique)?;
        Ok(())
    }

    /// Claims a live code: deletes it and returns who made it, in one statement, so of two
    /// concurrent claims (on any instances sharing the database) exactly one gets `Some`.
    /// Unknown, already claimed and expired codes are `None`.
    pub async fn claim_pairing_code(&self, code_hash: &str) -> Result<Option<PairingCode>, StoreError> {
        let now = crate::util::now_millis() as i64;
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "DELETE FROM pairing_codes WHERE code_hash = $1 AND expires_at > $2 RETURNING user_id, device_id, token_gen",
        )
        .bind(code_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(user_id, device_id, gen)| PairingCode { user_id, device_id, token_gen: gen.max(0) as u64 }))
    }
}
