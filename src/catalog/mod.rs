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

mod adopt;
mod blocking;
#[macro_use]
mod model;
mod jobs;
mod policies;
mod queries;
mod retention;

pub use adopt::AdoptedBackup;
pub use blocking::SyncCatalog;
pub use jobs::JobFilter;
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
    (6, "policies", include_str!("migrations/0006_policies.sql")),
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

/// SQLite's primary result code for "database or disk is full".
const SQLITE_FULL: i32 = 13;

impl CatalogError {
    /// SQLite ran out of room on the catalog's disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            CatalogError::Db(sqlx::Error::Database(d)) => {
                d.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == SQLITE_FULL)
            }
            CatalogError::Db(sqlx::Error::Io(e)) => e.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

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

    /// Opens the SQLite catalog at `path` without writing anything, not even
    /// SQLite's shared-memory file: for reading a repository whose disk is
    /// full. Its schema must be current (migrating needs room).
    pub async fn open_sqlite_read_only(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new().filename(path).read_only(true).immutable(true).foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS).connect_with(opts).await?;
        let catalog = Self { pool };
        match catalog.schema_version().await? {
            SCHEMA_VERSION => Ok(catalog),
            v if v > SCHEMA_VERSION => Err(CatalogError::TooNew(v)),
            v => Err(CatalogError::Invalid(format!(
                "schema version {v} must be migrated to {SCHEMA_VERSION} first, which needs free space"
            ))),
        }
    }

    /// Folds the write-ahead log into the database file and empties it, so
    /// the file alone holds every committed row (before it is moved).
    pub async fn checkpoint(&self) -> Result<()> {
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.pool).await?;
        let busy: i64 = row.try_get(0)?;
        if busy != 0 {
            return Err(CatalogError::Conflict("the catalog is in use: its log cannot be folded in".into()));
        }
        Ok(())
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

    /// A write transaction, its lock taken up front (`BEGIN IMMEDIATE`). A
    /// deferred one that reads first and then writes fails at once with
    /// "database is locked" when another connection writes meanwhile (the
    /// busy timeout cannot help a read lock that must be upgraded): two
    /// jobs of the scheduler committing and pruning at once hit that.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
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
