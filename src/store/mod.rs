//! Durable storage (sqlx): SQLite in the data directory by default (WAL mode), PostgreSQL when
//! `DATABASE_URL=postgres://…`. One `Store` API over sqlx's `Any` driver — the same SQL (`$N`
//! placeholders) runs on both. Migrations live in `migrations/sqlite` and `migrations/postgres`,
//! are embedded in the binary and run at start and by `syncgate migrate`.
//!
//! - [`users`] — accounts.
//! - [`devices`] — devices per user, revocation.
//! - [`otps`] — password-reset codes.
//! - [`tokens`] — rotating refresh tokens with reuse detection.
//! - [`login_codes`] — the login page's one-time codes (PKCE).
//! - [`pairing`] — pairing codes (a signed-in device lets a new one join), claimed once.
//! - [`events`] — durable streams: group-committed appends with per-channel `seq`, idempotent
//!   `msg_id`s, replay and history reads, read positions, retention.

pub mod devices;
pub mod events;
pub mod login_codes;
pub mod otps;
pub mod pairing;
pub mod tokens;
pub mod users;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::config::Config;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Config(String),
}

/// (version, name, SQL) of every migration, in order.
type Migration = (i64, &'static str, &'static str);

const SQLITE_MIGRATIONS: &[Migration] = &[
    (1, "accounts", include_str!("../../migrations/sqlite/0001_accounts.sql")),
    (2, "otps", include_str!("../../migrations/sqlite/0002_otps.sql")),
    (3, "streams", include_str!("../../migrations/sqlite/0003_streams.sql")),
    (4, "otp_failures", include_str!("../../migrations/sqlite/0004_otp_failures.sql")),
    (5, "token_generations", include_str!("../../migrations/sqlite/0005_token_generations.sql")),
    (6, "login_codes", include_str!("../../migrations/sqlite/0006_login_codes.sql")),
    (7, "device_keys", include_str!("../../migrations/sqlite/0007_device_keys.sql")),
    (8, "pairing_codes", include_str!("../../migrations/sqlite/0008_pairing_codes.sql")),
    (9, "signed_events", include_str!("../../migrations/sqlite/0009_signed_events.sql")),
    (10, "device_key_lookup", include_str!("../../migrations/sqlite/0010_device_key_lookup.sql")),
];
const POSTGRES_MIGRATIONS: &[Migration] = &[
    (1, "accounts", include_str!("../../migrations/postgres/0001_accounts.sql")),
    (2, "otps", include_str!("../../migrations/postgres/0002_otps.sql")),
    (3, "streams", include_str!("../../migrations/postgres/0003_streams.sql")),
    (4, "otp_failures", include_str!("../../migrations/postgres/0004_otp_failures.sql")),
    (5, "token_generations", include_str!("../../migrations/postgres/0005_token_generations.sql")),
    (6, "login_codes", include_str!("../../migrations/postgres/0006_login_codes.sql")),
    (7, "device_keys", include_str!("../../migrations/postgres/0007_device_keys.sql")),
    (8, "pairing_codes", include_str!("../../migrations/postgres/0008_pairing_codes.sql")),
    (9, "signed_events", include_str!("../../migrations/postgres/0009_signed_events.sql")),
    (10, "device_key_lookup", include_str!("../../migrations/postgres/0010_device_key_lookup.sql")),
];

/// The advisory-lock key that serialises migrations across instances ("syncgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x73796e6367617465;

/// Cheap to clone (the pool is a handle).
#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub backend: Backend,
}

/// The database URL: `DATABASE_URL`, or a SQLite file in the data directory.
pub fn database_url(config: &Config) -> Result<(String, Backend), StoreError> {
    match &config.store.database_url {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => Ok((u.clone(), Backend::Postgres)),
        Some(u) if u.starts_with("sqlite:") => Ok((u.clone(), Backend::Sqlite)),
        Some(_) => Err(StoreError::Config("DATABASE_URL must be postgres://… or sqlite:…".into())),
        None => {
            std::fs::create_dir_all(&config.store.data_dir)
                .map_err(|e| StoreError::Config(format!("{}: {e}", config.store.data_dir.display())))?;
            let path = config.store.data_dir.join("syncgate.db");
            private_file(&path).map_err(|e| StoreError::Config(format!("{}: {e}", path.display())))?;
            Ok((format!("sqlite://{}?mode=rwc", path.display()), Backend::Sqlite))
        }
    }
}

/// Creates the database file readable by its owner only (0600), or tightens an existing one.
/// SQLite gives the `-wal` and `-shm` files the database file's permissions.
fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Store {
    /// Connects and runs the migrations.
    pub async fn open(config: &Config) -> Result<Store, StoreError> {
        let store = Store::connect(config).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn connect(config: &Config) -> Result<Store, StoreError> {
        let (url, backend) = database_url(config)?;
        sqlx::any::install_default_drivers();
        let max = match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        };
        let mut options = AnyPoolOptions::new().max_connections(max).acquire_timeout(std::time::Duration::from_secs(5));
        if backend == Backend::Postgres {
            options = options.after_connect(|_, _| {
                Box::pin(async {
                    nodelay_on_every_socket();
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        let store = Store { pool, backend };
        if backend == Backend::Sqlite {
            // WAL: readers never block the writer; persistent for the database file.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&store.pool).await?;
            sqlx::query("PRAGMA foreign_keys=ON").execute(&store.pool).await?;
        }
        Ok(store)
    }

    /// Applies the embedded migrations not yet recorded; returns how many ran. On PostgreSQL the
    /// whole run holds an advisory lock, so instances starting together against a fresh database
    /// migrate one after the other instead of racing on `CREATE TABLE`.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
        }
        let result = self.migrate_on(&mut conn).await;
        if self.backend == Backend::Postgres {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await;
            if unlocked.is_err() {
                // Never hand a connection that may still hold the lock back to the pool.
                conn.close_on_drop();
            }
        }
        result
    }

    async fn migrate_on(&self, conn: &mut sqlx::pool::PoolConnection<sqlx::Any>) -> Result<usize, StoreError> {
        use sqlx::Connection;
        let ledger = match self.backend {
            Backend::Postgres => {
                "CREATE TABLE IF NOT EXISTS syncgate_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            }
            Backend::Sqlite => {
                "CREATE TABLE IF NOT EXISTS syncgate_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            }
        };
        sqlx::query(ledger).execute(&mut **conn).await?;
        let list = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        let mut ran = 0;
        for (version, name, sql) in list {
            let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM syncgate_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut **conn)
                .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = conn.begin().await?;
            // Comment lines go first, so a `;` inside a comment never splits a statement.
            let code: String = sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
            for statement in code.split(';').map(str::trim).filter(|s| !s.is_empty() && !is_comment(s)) {
                sqlx::query(sqlx::AssertSqlSafe(statement.to_string())).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO syncgate_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(*version)
                .bind(*name)
                .bind(crate::util::now_millis() as i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            ran += 1;
        }
        Ok(ran)
    }

    /// A transaction that will write. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first and then writes fails at once with
    /// `SQLITE_BUSY` when another connection committed in between (WAL snapshot rule), while an
    /// immediate one just waits its turn.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A unique-constraint violation becomes [`StoreError::Conflict`].
    pub(crate) fn map_unique(e: sqlx::Error) -> StoreError {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Db(e),
        }
    }
}

/// Sets `TCP_NODELAY` on every TCP socket of this process. sqlx does not set it on its
/// PostgreSQL connections, and without it a statement written in more than one `write` (any
/// large parameter) waits for the server's delayed ACK: 40 ms per group commit, measured. Runs
/// only when the pool opens a connection; client sockets already have it, so touching them is
/// harmless, and non-TCP descriptors just refuse the option.
fn nodelay_on_every_socket() {
    #[cfg(target_os = "linux")]
    {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
        for entry in dir.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<libc::c_int>().ok()) else { continue };
            let is_socket = std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
            if !is_socket {
                continue;
            }
            let one: libc::c_int = 1;
            // SAFETY: `fd` is open in this process (listed just now); a fd closed meanwhile or a
            // non-TCP socket only makes the call fail, which is ignored.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

fn is_comment(statement: &str) -> bool {
    statement.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}
