//! Where state is kept: the database URL (unset: SQLite in the data directory) and the data
//! directory (also home of the development secret).

use std::path::PathBuf;

use super::mask_url;
use super::reader::Reader;

/// `postgres://…` for PostgreSQL, or an explicit `sqlite:` URL.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Data directory (the default SQLite database, the development secret).
pub const DATA_DIR: &str = "SYNCGATE_DATA_DIR";

/// The database and the data directory.
#[derive(Clone)]
pub struct StoreConfig {
    /// `DATABASE_URL`: PostgreSQL (or an explicit SQLite URL); default SQLite in the data dir.
    pub database_url: Option<String>,
    /// The data directory.
    pub data_dir: PathBuf,
}

impl StoreConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let database_url = r.raw(DATABASE_URL).map(str::to_string);
        if let Some(u) = &database_url {
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://") || u.starts_with("sqlite:")) {
                r.error(format!("{DATABASE_URL} must be a postgres:// or sqlite: URL"));
            }
        }
        let data_dir = PathBuf::from(r.raw(DATA_DIR).unwrap_or("./data"));
        StoreConfig { database_url, data_dir }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.extend([
            (
                DATABASE_URL,
                self.database_url
                    .as_deref()
                    .map(mask_url)
                    .unwrap_or_else(|| "(unset: SQLite in the data directory)".into()),
            ),
            (DATA_DIR, self.data_dir.display().to_string()),
        ]);
    }
}
