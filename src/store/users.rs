//! Accounts.

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub username: Option<String>,
}

/// A user with the stored password hash (never leaves the auth layer).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

type Row = (String, String, Option<String>, String);

fn creds(r: Row) -> Credentials {
    Credentials {
        user: User {
            id: r.0,
            email: r.1,
            username: r.2,
        },
        password_hash: r.3,
    }
}

impl Store {
    /// Creates a user; a taken email or username is [`StoreError::Conflict`].
    pub async fn create_user(
        &self,
        email: &str,
        username: Option<&str>,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let id = crate::util::random_hex(16);
        sqlx::query("INSERT INTO users (id, email, username, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(email)
            .bind(username)
            .bind(password_hash)
            .bind(crate::auth::now_millis() as i64)
            .execute(&self.pool)
            .await
            .map_err(Store::map_unique)?;
        Ok(User {
            id,
            email: email.to_string(),
            username: username.map(str::to_string),
        })
    }

    /// Looks a user up by email (already normalised) or username.
    pub async fn credentials_by_login(
        &self,
        login: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as("SELECT id, email, username, password_hash FROM users WHERE email = $1 OR username = $1")
                .bind(login)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(creds))
    }

    pub async fn credentials_by_id(&self, id: &str) -> Result<Option<Credentials>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as("SELECT id, email, username, password_hash FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(creds))
    }

    pub async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
