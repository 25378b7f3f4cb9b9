//! Refresh tokens: random, stored as SHA-256 hashes, rotated on every use. Each login starts a
//! family; presenting an already rotated token revokes the whole family (a stolen token was
//! replayed).

use super::{Store, StoreError};

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// Valid: it is now used; issue the next one in `family`.
    Valid { user_id: String, family: String, device_id: Option<String> },
    /// Unknown, expired or revoked.
    Invalid,
    /// Already rotated: the family has been revoked.
    Reused,
}

/// Hex SHA-256 of a token (what the database keeps).
pub fn hash(token: &str) -> String {
    crate::util::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

impl Store {
    /// Stores a new refresh token (by hash) in `family`.
    pub async fn insert_refresh(
        &self,
        token: &str,
        user_id: &str,
        family: &str,
        device_id: Option<&str>,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let now = crate::util::now_millis() as i64;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, family, device_id, used, revoked, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, 0, 0, $5, $6)",
        )
        .bind(hash(token))
        .bind(user_id)
        .bind(family)
        .bind(device_id)
        .bind(now + (ttl_secs as i64) * 1000)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a token used if it is valid (atomically: of two concurrent uses one wins, the other
    /// counts as reuse).
    pub async fn redeem_refresh(&self, token: &str) -> Result<Redeemed, StoreError> {
        let h = hash(token);
        let now = crate::util::now_millis() as i64;
        let row: Option<(String, String, Option<String>, i64, i64, i64)> = sqlx::query_as(
            "SELECT user_id, family, device_id, used, revoked, expires_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(&h)
        .fetch_optional(&self.pool)
        .await?;
        let Some((user_id, family, device_id, used, revoked, expires_at)) = row else {
            return Ok(Redeemed::Invalid);
        };
        if revoked != 0 || expires_at < now {
            return Ok(Redeemed::Invalid);
        }
        if used != 0 {
            self.revoke_family(&family).await?;
            return Ok(Redeemed::Reused);
        }
        let claimed = sqlx::query("UPDATE refresh_tokens SET used = 1 WHERE token_hash = $1 AND used = 0")
            .bind(&h)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if claimed == 0 {
            self.revoke_family(&family).await?;
            return Ok(Redeemed::Reused);
        }
        Ok(Redeemed::Valid { user_id, family, device_id })
    }

    pub async fn revoke_family(&self, family: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE family = $1")
            .bind(family)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Logout: revokes the token's family (that login). Unknown tokens are ignored.
    pub async fn revoke_by_token(&self, token: &str) -> Result<bool, StoreError> {
        let family: Option<(String,)> = sqlx::query_as("SELECT family FROM refresh_tokens WHERE token_hash = $1")
            .bind(hash(token))
            .fetch_optional(&self.pool)
            .await?;
        match family {
            Some((f,)) => Ok(self.revoke_family(&f).await? > 0),
            None => Ok(false),
        }
    }
}
