//! Devices: upserted when a connection authenticates, listed and revoked by their user. A revoked
//! device id stays revoked for that user.

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    pub id: String,
    pub name: Option<String>,
    pub online: bool,
    pub last_seen: i64,
}

/// A device seen connecting (online) or disconnecting.
#[derive(Debug, Clone)]
pub struct Seen {
    pub user_id: String,
    pub device_id: String,
    pub name: Option<String>,
    pub online: bool,
    pub at: i64,
}

impl Store {
    /// Upserts a batch of sightings in one transaction (one commit for many connections).
    pub async fn touch_devices(&self, batch: &[Seen]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for s in batch {
            sqlx::query(
                "INSERT INTO devices (user_id, device_id, name, last_seen, online, revoked) VALUES ($1, $2, $3, $4, $5, 0) \
                 ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen = $4, online = $5, \
                 name = COALESCE($3, devices.name)",
            )
            .bind(&s.user_id)
            .bind(&s.device_id)
            .bind(&s.name)
            .bind(s.at)
            .bind(i64::from(s.online))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The user's devices that are not revoked, most recently seen first.
    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT device_id, name, online, last_seen FROM devices WHERE user_id = $1 AND revoked = 0 ORDER BY last_seen DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, online, last_seen)| Device { id, name, online: online != 0, last_seen })
            .collect())
    }

    /// Revokes one of the user's devices and its refresh tokens; false if the user has no such
    /// device.
    pub async fn revoke_device(&self, user_id: &str, device_id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE devices SET revoked = 1, online = 0 WHERE user_id = $1 AND device_id = $2 AND revoked = 0",
        )
        .bind(user_id)
        .bind(device_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n > 0 {
            sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(n > 0)
    }

    /// Every revoked (user, device), loaded at start into the in-memory check.
    pub async fn revoked_devices(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT user_id, device_id FROM devices WHERE revoked = 1").fetch_all(&self.pool).await?)
    }
}
