//! Devices: upserted when a connection authenticates, listed and revoked by their user. A revoked
//! device id stays revoked for that user.

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    pub id: String,
    pub name: Option<String>,
    pub online: bool,
    pub last_seen: i64,
    /// The device's Ed25519 public key (base64url), once registered.
    pub public_key: Option<String>,
}

/// A `devices` row as listed: id, name, online, last_seen, public_key.
type DeviceRow = (String, Option<String>, i64, i64, Option<String>);

fn device_from_row((id, name, online, last_seen, public_key): DeviceRow) -> Device {
    Device { id, name, online: online != 0, last_seen, public_key }
}

/// What registering a device's public key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySet {
    /// Registered now, or this same key was already registered.
    Set,
    /// Another key is registered: it cannot be replaced.
    Conflict,
    /// No such (unrevoked) device for this user.
    NotFound,
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

/// What registering a device for a login found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// The device exists (now or already) and is not revoked.
    Ok,
    /// The device id was revoked for this user.
    Revoked,
    /// The user already has the maximum number of unrevoked devices.
    TooMany,
}

impl Store {
    /// Makes sure `device_id` is one of the user's devices before tokens bound to it are issued:
    /// an existing unrevoked device is fine, a revoked one is refused, a new one is created
    /// (offline) unless the user already has `max` unrevoked devices. One write transaction, so
    /// concurrent logins cannot pass the limit together.
    pub async fn register_device(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
        max: u32,
    ) -> Result<Registered, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == super::Backend::Postgres {
            // Serialises this user's device registrations (the row lock lives until commit).
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE").bind(user_id).execute(&mut *tx).await?;
        }
        let existing: Option<(i64,)> =
            sqlx::query_as("SELECT revoked FROM devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        match existing {
            Some((r,)) if r != 0 => return Ok(Registered::Revoked),
            Some(_) => return Ok(Registered::Ok),
            None => {}
        }
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM devices WHERE user_id = $1 AND revoked = 0")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        if n >= i64::from(max) {
            return Ok(Registered::TooMany);
        }
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, name, last_seen, online, revoked) VALUES ($1, $2, $3, $4, 0, 0)",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(name)
        .bind(crate::util::now_millis() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Registered::Ok)
    }

    /// Upserts a batch of sightings in one transaction (one commit for many connections), a
    /// few hundred rows per statement. A device seen twice in the batch keeps its last state
    /// (and its last name given).
    pub async fn touch_devices(&self, batch: &[Seen]) -> Result<(), StoreError> {
        const ROWS: usize = 400;
        let mut last: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
        let mut rows: Vec<(&Seen, Option<&str>)> = Vec::with_capacity(batch.len());
        for s in batch {
            match last.get(&(s.user_id.as_str(), s.device_id.as_str())) {
                Some(&i) => {
                    let name = s.name.as_deref().or(rows[i].1);
                    rows[i] = (s, name);
                }
                None => {
                    last.insert((&s.user_id, &s.device_id), rows.len());
                    rows.push((s, s.name.as_deref()));
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(ROWS) {
            let mut sql =
                String::from("INSERT INTO devices (user_id, device_id, name, last_seen, online, revoked) VALUES ");
            for i in 0..chunk.len() {
                let p = i * 5;
                if i > 0 {
                    sql.push(',');
                }
                if self.backend == super::Backend::Sqlite {
                    // Anonymous parameters: SQLite finds a named one (`$N`) by a linear scan of
                    // the statement's names, and the driver looks up every one of the 2 000 by
                    // name on each execution: quadratic, a third of the gateway's CPU in a
                    // connect storm before this.
                    sql.push_str("(?, ?, ?, ?, ?, 0)");
                } else {
                    sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, 0)", p + 1, p + 2, p + 3, p + 4, p + 5));
                }
            }
            sql.push_str(
                " ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen = excluded.last_seen, \
                 online = excluded.online, name = COALESCE(excluded.name, devices.name)",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (s, name) in chunk {
                q = q.bind(&s.user_id).bind(&s.device_id).bind(*name).bind(s.at).bind(i64::from(s.online));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The user's devices that are not revoked, most recently seen first.
    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let rows: Vec<DeviceRow> = sqlx::query_as(
            "SELECT device_id, name, online, last_seen, public_key FROM devices WHERE user_id = $1 AND revoked = 0 ORDER BY last_seen DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(device_from_row).collect())
    }

    /// Registers the device's public key once: a second, different key is a conflict. One
    /// conditional UPDATE, so two racing registrations cannot both win.
    pub async fn set_device_key(&self, user_id: &str, device_id: &str, key: &str) -> Result<KeySet, StoreError> {
        // Twice at most: a row the device writer inserts between the update and the read is
        // found keyless; the second update sets it.
        for _ in 0..2 {
            let set = sqlx::query(
                "UPDATE devices SET public_key = $3 WHERE user_id = $1 AND device_id = $2 AND revoked = 0 AND public_key IS NULL",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(key)
            .execute(&self.pool)
            .await?;
            if set.rows_affected() == 1 {
                return Ok(KeySet::Set);
            }
            let existing: Option<(Option<String>,)> =
                sqlx::query_as("SELECT public_key FROM devices WHERE user_id = $1 AND device_id = $2 AND revoked = 0")
                    .bind(user_id)
                    .bind(device_id)
                    .fetch_optional(&self.pool)
                    .await?;
            match existing {
                None => return Ok(KeySet::NotFound),
                Some((Some(k),)) if k == key => return Ok(KeySet::Set),
                Some((Some(_),)) => return Ok(KeySet::Conflict),
                Some((None,)) => continue,
            }
        }
        Ok(KeySet::NotFound)
    }

    /// One of the user's unrevoked devices.
    pub async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>, StoreError> {
        let row: Option<DeviceRow> = sqlx::query_as(
            "SELECT device_id, name, online, last_seen, public_key FROM devices WHERE user_id = $1 AND device_id = $2 AND revoked = 0",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(device_from_row))
    }

    /// The users owning an unrevoked device `device_id` whose registered key is `public_key` (key
    /// login). At most two are read: anything but exactly one owner refuses the login.
    pub async fn key_owners(&self, device_id: &str, public_key: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT user_id FROM devices WHERE device_id = $1 AND public_key = $2 AND revoked = 0 LIMIT 2",
        )
        .bind(device_id)
        .bind(public_key)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
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

    /// (user, device, public key) of every unrevoked device with a registered public key.
    pub async fn keyed_devices(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, device_id, public_key FROM devices WHERE revoked = 0 AND public_key IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
