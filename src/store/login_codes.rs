//! The login page's one-time codes (RFC 8252 with PKCE): random, stored as SHA-256 hashes with
//! what the redemption must match (redirect URI, code challenge), redeemed once by any instance.

use super::tokens::hash;
use super::{Store, StoreError};

/// Used and expired rows are kept this long past their expiry (a late replay is still seen as
/// one and revokes its login), then deleted when a new code is stored.
const KEEP_AFTER_EXPIRY_MS: i64 = 10 * 60 * 1000;

/// What a login code is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCode {
    pub user_id: String,
    pub device_id: Option<String>,
    pub redirect_uri: String,
    pub code_challenge: String,
    /// The refresh-token family the redemption issues.
    pub family: String,
}

/// What presenting a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedeemed {
    /// Live and unused: it is now used.
    Valid(LoginCode),
    /// Presented before: the refresh-token family it issued, to revoke.
    Reused { family: String },
    /// Unknown or expired.
    Invalid,
}

impl Store {
    /// Stores a new code (by hash) valid for `ttl_ms`, and drops rows long expired.
    pub async fn insert_login_code(&self, code: &str, c: &LoginCode, ttl_ms: i64) -> Result<(), StoreError> {
        let now = crate::util::now_millis() as i64;
        sqlx::query("DELETE FROM login_codes WHERE expires_at < $1")
            .bind(now - KEEP_AFTER_EXPIRY_MS)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO login_codes (code_hash, user_id, device_id, redirect_uri, code_challenge, family, expires_at, used) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
        )
        .bind(hash(code))
        .bind(&c.user_id)
        .bind(c.device_id.as_deref())
        .bind(&c.redirect_uri)
        .bind(&c.code_challenge)
        .bind(&c.family)
        .bind(now + ttl_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a live code used and returns what it is bound to, in one statement: of two
    /// concurrent redemptions (on any instances) exactly one gets `Valid`.
    pub async fn redeem_login_code(&self, code: &str) -> Result<CodeRedeemed, StoreError> {
        let h = hash(code);
        let now = crate::util::now_millis() as i64;
        let row: Option<(String, Option<String>, String, String, String)> = sqlx::query_as(
            "UPDATE login_codes SET used = 1 WHERE code_hash = $1 AND used = 0 AND expires_at > $2 \
             RETURNING user_id, device_id, redirect_uri, code_challenge, family",
        )
        .bind(&h)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((user_id, device_id, redirect_uri, code_challenge, family)) = row {
            return Ok(CodeRedeemed::Valid(LoginCode { user_id, device_id, redirect_uri, code_challenge, family }));
        }
        let used: Option<(String,)> =
            sqlx::query_as("SELECT family FROM login_codes WHERE code_hash = $1 AND used = 1")
                .bind(&h)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match used {
            Some((family,)) => CodeRedeemed::Reused { family },
            None => CodeRedeemed::Invalid,
        })
    }
}
