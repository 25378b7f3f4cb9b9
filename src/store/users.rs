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
    /// The token generation: tokens issued in an earlier one are no longer valid.
    pub token_gen: u64,
}

type Row = (String, String, Option<String>, String, i64);

const COLUMNS: &str = "id, email, username, password_hash, token_gen";

fn creds(r: Row) -> Credentials {
    Credentials { user: User { id: r.0, email: r.1, username: r.2 }, password_hash: r.3, token_gen: r.4.max(0) as u64 }
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
            .bind(crate::util::now_millis() as i64)
            .execute(&self.pool)
            .await
            .map_err(Store::map_unique)?;
        Ok(User { id, email: email.to_string(), username: username.map(str::to_string) })
    }

    /// Looks a user up by email (already normalised) or username (any case).
    pub async fn credentials_by_login(&self, login: &str) -> Result<Option<Credentials>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email = $1 OR lower(username) = lower($1)");
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(login).fetch_optional(&self.pool).await?;
        Ok(row.map(creds))
    }

    pub async fn credentials_by_id(&self, id: &str) -> Result<Option<Credentials>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(creds))
    }

    /// Stores a new password hash, starts a new token generation and revokes every refresh token
    /// and outstanding login-page code of the user, in one transaction. Returns the new generation.
    pub async fn replace_password(&self, user_id: &str, password_hash: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let (gen,): (i64,) = sqlx::query_as(
            "UPDATE users SET password_hash = $1, token_gen = token_gen + 1 WHERE id = $2 RETURNING token_gen",
        )
        .bind(password_hash)
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        // A login-page code handed out under the old password must not yield tokens after it.
        sqlx::query("DELETE FROM login_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(gen.max(0) as u64)
    }

    /// Every user whose tokens were invalidated at least once: (user, generation), loaded at
    /// start into the in-memory check.
    pub async fn token_generations(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, token_gen FROM users WHERE token_gen > 0").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(u, g)| (u, g.max(0) as u64)).collect())
    }
}

/// pg_trgm's trigram similarity, for SQLite: words padded with two spaces in front and one
/// behind, lower-cased; |shared trigrams| / |all trigrams|.
pub fn trigram_similarity(a: &str, b: &str) -> f64 {
    fn grams(s: &str) -> std::collections::HashSet<[char; 3]> {
        let mut out = std::collections::HashSet::new();
        for word in s.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            let padded: Vec<char> = "  ".chars().chain(word.chars()).chain(" ".chars()).collect();
            for w in padded.windows(3) {
                out.insert([w[0], w[1], w[2]]);
            }
        }
        out
    }
    let (ga, gb) = (grams(a), grams(b));
    let union = ga.union(&gb).count();
    if union == 0 {
        return 0.0;
    }
    ga.intersection(&gb).count() as f64 / union as f64
}

/// Search results: never an email.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Found {
    pub id: String,
    pub username: String,
}

impl Store {
    /// Up to `limit` users ranked by username similarity to `q`, excluding `caller`.
    pub async fn search_users(&self, q: &str, caller: &str, limit: usize) -> Result<Vec<Found>, StoreError> {
        match self.backend {
            super::Backend::Postgres => {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT id, username FROM users WHERE username IS NOT NULL AND id <> $2 \
                     AND (username % $1 OR username ILIKE '%' || $1 || '%') \
                     ORDER BY similarity(username, $1) DESC, username LIMIT $3",
                )
                .bind(q)
                .bind(caller)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(id, username)| Found { id, username }).collect())
            }
            super::Backend::Sqlite => {
                // Rank in Rust over a bounded candidate set.
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT id, username FROM users WHERE username IS NOT NULL AND id <> $1 LIMIT 10000",
                )
                .bind(caller)
                .fetch_all(&self.pool)
                .await?;
                let needle = q.to_lowercase();
                let mut scored: Vec<(f64, Found)> = rows
                    .into_iter()
                    .filter_map(|(id, username)| {
                        let mut s = trigram_similarity(q, &username);
                        if username.to_lowercase().contains(&needle) {
                            s = s.max(0.3) + 0.01;
                        }
                        (s >= 0.3).then_some((s, Found { id, username }))
                    })
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.username.cmp(&b.1.username)));
                Ok(scored.into_iter().take(limit).map(|(_, f)| f).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::trigram_similarity as sim;

    #[test]
    fn trigrams_like_pg_trgm() {
        assert_eq!(sim("word", "word"), 1.0);
        // The example from the pg_trgm documentation: 0.36363637.
        assert!((sim("word", "two words") - 4.0 / 11.0).abs() < 1e-9);
        assert!(sim("alice", "alicia") > sim("alice", "bob"));
        assert_eq!(sim("", "x"), 0.0);
    }
}
