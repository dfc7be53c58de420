//! The SQL catalog: VMs, backup jobs, per-disk images, change ids and chains.
//!
//! SQLite (`REPO/catalog.db`) is the embedded default. Callers see typed
//! rows (enums for statuses and kinds, [`UtcTime`] for times) and two
//! facades: [`Catalog`] (async, for the HTTP handlers) and [`SyncCatalog`]
//! (blocking, for the engine, the CLI and the trees). No `sqlx` type leaves
//! this module, so a PostgreSQL backend can be added behind the same methods;
//! docs/catalog.md says how.
//!
//! [`UtcTime`]: crate::util::time::UtcTime

mod blocking;
mod model;
mod queries;
mod retention;

pub use blocking::SyncCatalog;
pub use model::*;

use crate::util::time::UtcTime;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use std::path::Path;
use std::time::Duration;

/// Embedded migrations, applied in order on open (docs/catalog.md).
pub const SCHEMA_VERSION: i64 = 8;
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (2, "statuses", include_str!("migrations/0002_statuses.sql")),
    (4, "exports", include_str!("migrations/0004_exports.sql")),
    (5, "retention", include_str!("migrations/0005_retention.sql")),
    (8, "backup_notes", include_str!("migrations/0008_backup_notes.sql")),
];
/// Connections in the pool: the server's handlers and a few blocking jobs.
const MAX_CONNECTIONS: u32 = 4;
/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("catalog is newer than this program (schema version {0})")]
    TooNew(i64),
    /// A stored value this program does not know (a corrupt or foreign row).
    #[error("catalog row: {0}")]
    Invalid(String),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// The catalog, async. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Catalog {
    pool: SqlitePool,
}

impl Catalog {
    /// Opens (creating on first use) the SQLite catalog at `path` and brings
    /// its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        // Migrations run on a connection of their own: some must turn
        // foreign keys off, which no pooled connection may inherit.
        let mut conn = SqliteConnection::connect_with(&opts.clone().foreign_keys(false)).await?;
        let migrated = migrate(&mut conn).await;
        conn.close().await?;
        migrated?;
        let pool = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS).connect_with(opts).await?;
        Ok(Self { pool })
    }

    /// The schema version the catalog is at (the last migration applied).
    pub async fn schema_version(&self) -> Result<i64> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetch_one(&self.pool).await?;
        Ok(row.try_get("v")?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Applies the migrations the catalog lacks, in one write transaction taken
/// up front (two processes opening a catalog at once do not both migrate).
async fn migrate(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let r = apply_migrations(conn).await;
    let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
    sqlx::raw_sql(end).execute(&mut *conn).await?;
    r
}

async fn apply_migrations(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get("version"))
        .collect::<Result<_, _>>()?;
    let current = applied.iter().copied().max().unwrap_or(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(CatalogError::TooNew(current));
    }
    // Every migration not applied yet, also one numbered below the newest
    // applied (branches land their numbered migrations in any order).
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| !applied.contains(&m.0)) {
        sqlx::raw_sql(sql).execute(&mut *conn).await?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(name)
            .bind(UtcTime::now().to_string())
            .execute(&mut *conn)
            .await?;
    }
    // Foreign keys were off: prove the migrations kept every reference.
    let broken = sqlx::query("PRAGMA foreign_key_check").fetch_all(&mut *conn).await?;
    if !broken.is_empty() {
        return Err(CatalogError::Invalid(format!("{} rows break a foreign key after migrating", broken.len())));
    }
    Ok(())
}
