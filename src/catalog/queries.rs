//! The catalog's statements.

use super::*;
use crate::util::time::UtcTime;
use sqlx::sqlite::SqliteRow;

const DISK_COLUMNS: &str = "d.id, d.backup_id, d.disk_index, d.chain_id, d.parent_id, d.disk_type, d.source, \
     d.image_path, d.digest_path, d.change_id, d.virtual_size, d.cluster_size, d.stored_bytes, d.changed_bytes, \
     d.content_digest, d.status, d.verified_at, d.verify_state, d.verify_error";

const BACKUP_COLUMNS: &str = "b.id, v.name AS vm, b.backup_type, b.status, b.started_at, b.ended_at, b.bytes_total, \
     b.bytes_read, b.bytes_written, b.error, b.notes";

/// A text column holding one of a catalog enum's words.
pub(super) fn word<T>(r: &SqliteRow, col: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    let s: String = r.try_get(col)?;
    parse(&s).ok_or_else(|| CatalogError::Invalid(format!("{col} {s:?} is not a known value")))
}

/// A text column holding an RFC 3339 time.
pub(super) fn time(r: &SqliteRow, col: &str) -> Result<UtcTime> {
    let s: String = r.try_get(col)?;
    UtcTime::parse(&s).map_err(|e| CatalogError::Invalid(format!("{col}: {e}")))
}

pub(super) fn opt_time(r: &SqliteRow, col: &str) -> Result<Option<UtcTime>> {
    let s: Option<String> = r.try_get(col)?;
    s.map(|s| UtcTime::parse(&s).map_err(|e| CatalogError::Invalid(format!("{col}: {e}")))).transpose()
}

fn disk(r: &SqliteRow) -> Result<BackupDisk> {
    Ok(BackupDisk {
        id: r.try_get("id")?,
        backup_id: r.try_get("backup_id")?,
        chain_id: r.try_get("chain_id")?,
        parent_id: r.try_get("parent_id")?,
        image: disk_image(r)?,
        status: word(r, "status", ImageStatus::parse)?,
        verified_at: opt_time(r, "verified_at")?,
        verify_state: r
            .try_get::<Option<String>, _>("verify_state")?
            .map(|s| VerifyState::parse(&s).ok_or_else(|| CatalogError::Invalid(format!("verify_state {s:?}"))))
            .transpose()?,
        verify_error: r.try_get("verify_error")?,
    })
}

fn disk_image(r: &SqliteRow) -> Result<DiskImage> {
    Ok(DiskImage {
        disk_index: r.try_get("disk_index")?,
        disk_type: word(r, "disk_type", BackupType::parse)?,
        source: r.try_get("source")?,
        image_path: r.try_get("image_path")?,
        digest_path: r.try_get("digest_path")?,
        change_id: r.try_get("change_id")?,
        virtual_size: r.try_get("virtual_size")?,
        cluster_size: r.try_get("cluster_size")?,
        stored_bytes: r.try_get("stored_bytes")?,
        changed_bytes: r.try_get("changed_bytes")?,
        content_digest: r.try_get("content_digest")?,
    })
}

/// The notes column: a JSON array of strings, NULL for none.
fn notes(r: &SqliteRow) -> Result<Vec<String>> {
    let s: Option<String> = r.try_get("notes")?;
    s.map_or(Ok(Vec::new()), |s| serde_json::from_str(&s).map_err(|e| CatalogError::Invalid(format!("notes: {e}"))))
}

fn backup(r: &SqliteRow) -> Result<Backup> {
    Ok(Backup {
        id: r.try_get("id")?,
        vm: r.try_get("vm")?,
        backup_type: word(r, "backup_type", BackupType::parse)?,
        status: word(r, "status", BackupStatus::parse)?,
        started_at: time(r, "started_at")?,
        ended_at: opt_time(r, "ended_at")?,
        bytes_total: r.try_get("bytes_total")?,
        bytes_read: r.try_get("bytes_read")?,
        bytes_written: r.try_get("bytes_written")?,
        error: r.try_get("error")?,
        notes: notes(r)?,
        verified_at: None,
        verify_state: None,
        disks: Vec::new(),
    })
}

impl Catalog {
    /// The id of VM `name`, creating it when `create` is set.
    pub async fn vm_id(&self, name: &str, create: bool) -> Result<Option<i64>> {
        if create {
            sqlx::query("INSERT INTO vms (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(UtcTime::now().to_string())
                .execute(&self.pool)
                .await?;
        }
        let row = sqlx::query("SELECT id FROM vms WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn set_vm_disks(&self, vm_id: i64, sources: &[String]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM vm_disks WHERE vm_id = ?").bind(vm_id).execute(&mut *tx).await?;
        for (i, s) in sources.iter().enumerate() {
            sqlx::query("INSERT INTO vm_disks (vm_id, disk_index, source) VALUES (?, ?, ?)")
                .bind(vm_id)
                .bind(i as i64)
                .bind(s)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn vms(&self) -> Result<Vec<Vm>> {
        let rows = sqlx::query(
            "SELECT v.id, v.name, v.created_at, \
             (SELECT COUNT(*) FROM backups b WHERE b.vm_id = v.id AND b.status = 'completed') AS n, \
             (SELECT MAX(b.started_at) FROM backups b WHERE b.vm_id = v.id AND b.status = 'completed') AS last \
             FROM vms v ORDER BY v.name",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut vms = Vec::new();
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let disks = sqlx::query("SELECT source FROM vm_disks WHERE vm_id = ? ORDER BY disk_index")
                .bind(id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get("source"))
                .collect::<Result<_, _>>()?;
            vms.push(Vm {
                id,
                name: r.try_get("name")?,
                created_at: time(&r, "created_at")?,
                disks,
                backup_count: r.try_get("n")?,
                last_backup: opt_time(&r, "last")?,
            });
        }
        Ok(vms)
    }

    /// The newest completed image of disk `disk_index` of a VM, with its chain.
    pub async fn latest_disk(&self, vm_id: i64, disk_index: i64) -> Result<Option<BackupDisk>> {
        let sql = format!(
            "SELECT {DISK_COLUMNS} FROM chains c JOIN backup_disks d ON d.id = c.latest_disk_id \
             WHERE c.vm_id = ? AND c.disk_index = ? AND c.image_count > 0 ORDER BY c.id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql).bind(vm_id).bind(disk_index).fetch_optional(&self.pool).await?;
        row.as_ref().map(disk).transpose()
    }

    /// Records a job as running (committed at once, so that a crash leaves a
    /// trace to mark interrupted).
    pub async fn start_backup(&self, id: &str, vm_id: i64, kind: BackupType, bytes_total: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO backups (id, vm_id, backup_type, status, started_at, bytes_total, pid) \
             VALUES (?, ?, ?, 'running', ?, ?, ?)",
        )
        .bind(id)
        .bind(vm_id)
        .bind(kind.as_str())
        .bind(UtcTime::now().to_string())
        .bind(bytes_total as i64)
        .bind(std::process::id() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn progress(&self, id: &str, bytes_read: u64, bytes_written: u64) -> Result<()> {
        sqlx::query("UPDATE backups SET bytes_read = ?, bytes_written = ? WHERE id = ? AND status = 'running'")
            .bind(bytes_read as i64)
            .bind(bytes_written as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Commits a finished backup in one transaction: its disk images, their
    /// chains, and the job's final status.
    pub async fn commit_backup(&self, id: &str, vm_id: i64, disks: &[NewDisk], read: u64, written: u64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let now = UtcTime::now().to_string();
        for d in disks {
            insert_disk(&mut tx, id, vm_id, d, &now).await?;
        }
        sqlx::query(
            "UPDATE backups SET status = 'completed', ended_at = ?, bytes_read = ?, bytes_written = ?, pid = NULL \
             WHERE id = ?",
        )
        .bind(&now)
        .bind(read as i64)
        .bind(written as i64)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a job that did not commit: `failed` with the error.
    pub async fn fail_backup(&self, id: &str, error: &str) -> Result<()> {
        self.end_backup(id, BackupStatus::Failed, error).await
    }

    /// Ends a job that did not commit as `status`, with why.
    async fn end_backup(&self, id: &str, status: BackupStatus, why: &str) -> Result<()> {
        sqlx::query("UPDATE backups SET status = ?, ended_at = ?, error = ?, pid = NULL WHERE id = ?")
            .bind(status.as_str())
            .bind(UtcTime::now().to_string())
            .bind(why)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves an unfinished job to `status` (a push target: `waiting` for
    /// its agent, then `running` while it commits).
    pub async fn set_backup_status(&self, id: &str, status: BackupStatus) -> Result<()> {
        sqlx::query("UPDATE backups SET status = ? WHERE id = ? AND status IN ('pending', 'waiting', 'running')")
            .bind(status.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a job that was cancelled (by a user or a timeout): `aborted`,
    /// with the reason.
    pub async fn abort_backup(&self, id: &str, reason: &str) -> Result<()> {
        self.end_backup(id, BackupStatus::Aborted, reason).await
    }

    /// Marks every unfinished job of a VM as interrupted. Callers hold the
    /// VM's lock, which proves no job of that VM is running.
    pub async fn mark_interrupted(&self, vm_id: i64) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE backups SET status = 'interrupted', ended_at = ?, pid = NULL, \
             error = 'the backup process stopped before the backup was committed' \
             WHERE vm_id = ? AND status IN ('pending', 'waiting', 'running')",
        )
        .bind(UtcTime::now().to_string())
        .bind(vm_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn with_disks(&self, mut backups: Vec<Backup>) -> Result<Vec<Backup>> {
        for b in &mut backups {
            let sql = format!("SELECT {DISK_COLUMNS} FROM backup_disks d WHERE d.backup_id = ? ORDER BY d.disk_index");
            let rows = sqlx::query(&sql).bind(&b.id).fetch_all(&self.pool).await?;
            b.disks = rows.iter().map(disk).collect::<Result<_, _>>()?;
            b.summarize_verify();
        }
        Ok(backups)
    }

    /// Backups, newest first.
    pub async fn list_backups(&self, vm: Option<&str>) -> Result<Vec<Backup>> {
        let sql = format!(
            "SELECT {BACKUP_COLUMNS} FROM backups b JOIN vms v ON v.id = b.vm_id \
             WHERE (? IS NULL OR v.name = ?) ORDER BY b.started_at DESC, b.id DESC"
        );
        let rows = sqlx::query(&sql).bind(vm).bind(vm).fetch_all(&self.pool).await?;
        let list = rows.iter().map(backup).collect::<Result<_, _>>()?;
        self.with_disks(list).await
    }

    pub async fn backup(&self, id: &str) -> Result<Backup> {
        let sql = format!("SELECT {BACKUP_COLUMNS} FROM backups b JOIN vms v ON v.id = b.vm_id WHERE b.id = ?");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        let b =
            row.as_ref().map(backup).transpose()?.ok_or_else(|| CatalogError::NotFound(format!("no backup {id}")))?;
        Ok(self.with_disks(vec![b]).await?.remove(0))
    }

    /// The newest completed backup of a VM.
    pub async fn latest_backup(&self, vm: &str) -> Result<Option<Backup>> {
        let sql = format!(
            "SELECT {BACKUP_COLUMNS} FROM backups b JOIN vms v ON v.id = b.vm_id \
             WHERE v.name = ? AND b.status = 'completed' ORDER BY b.started_at DESC, b.id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql).bind(vm).fetch_optional(&self.pool).await?;
        match row.as_ref().map(backup).transpose()? {
            Some(b) => Ok(Some(self.with_disks(vec![b]).await?.remove(0))),
            None => Ok(None),
        }
    }

    /// The chains of a VM's disks, each with its images, oldest first.
    pub async fn chains(&self, vm: &str) -> Result<Vec<DiskChain>> {
        let rows = sqlx::query(
            "SELECT c.id, v.name AS vm, c.disk_index, c.virtual_size, c.created_at, c.image_count, c.total_bytes \
             FROM chains c JOIN vms v ON v.id = c.vm_id WHERE v.name = ? AND c.image_count > 0 \
             ORDER BY c.disk_index, c.id",
        )
        .bind(vm)
        .fetch_all(&self.pool)
        .await?;
        let mut chains = Vec::new();
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let sql = format!("SELECT {DISK_COLUMNS} FROM backup_disks d WHERE d.chain_id = ? ORDER BY d.id");
            let images = sqlx::query(&sql).bind(id).fetch_all(&self.pool).await?;
            chains.push(DiskChain {
                id,
                vm: r.try_get("vm")?,
                disk_index: r.try_get("disk_index")?,
                virtual_size: r.try_get("virtual_size")?,
                created_at: time(&r, "created_at")?,
                image_count: r.try_get("image_count")?,
                total_bytes: r.try_get("total_bytes")?,
                images: images.iter().map(disk).collect::<Result<_, _>>()?,
            });
        }
        Ok(chains)
    }

    /// Records the change id a push agent reports for one disk of a backup.
    /// Records the notes of a backup (replacing any).
    pub async fn set_notes(&self, backup_id: &str, notes: &[String]) -> Result<()> {
        let text = (!notes.is_empty()).then(|| serde_json::to_string(notes)).transpose();
        let text = text.map_err(|e| CatalogError::Invalid(format!("notes: {e}")))?;
        sqlx::query("UPDATE backups SET notes = ? WHERE id = ?").bind(text).bind(backup_id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn set_change_id(&self, backup_id: &str, disk_index: i64, change_id: &str) -> Result<()> {
        let done = sqlx::query("UPDATE backup_disks SET change_id = ? WHERE backup_id = ? AND disk_index = ?")
            .bind(change_id)
            .bind(backup_id)
            .bind(disk_index)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            self.backup(backup_id).await?;
            return Err(CatalogError::NotFound(format!("backup {backup_id} has no disk {disk_index}")));
        }
        Ok(())
    }

    /// Deletes a backup that no later backup depends on; returns its disk
    /// rows so the caller can remove the files after the commit.
    pub async fn delete_backup(&self, id: &str) -> Result<Vec<BackupDisk>> {
        let b = self.backup(id).await?;
        if b.status.is_active() {
            return Err(CatalogError::Conflict(format!("backup {id} is still running")));
        }
        let mut tx = self.write_tx().await?;
        refuse_exported(&mut tx, id).await?;
        let dependents: Vec<String> = sqlx::query(
            "SELECT DISTINCT c.backup_id FROM backup_disks c JOIN backup_disks p ON c.parent_id = p.id \
             WHERE p.backup_id = ? ORDER BY c.backup_id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("backup_id"))
        .collect::<Result<_, _>>()?;
        if !dependents.is_empty() {
            return Err(CatalogError::Conflict(format!(
                "backup {id} cannot be deleted: later backups depend on it ({})",
                dependents.join(", ")
            )));
        }
        for d in &b.disks {
            sqlx::query(
                "UPDATE chains SET latest_disk_id = ?, image_count = image_count - 1, total_bytes = total_bytes - ?, \
                 first_disk_id = CASE WHEN first_disk_id = ? THEN NULL ELSE first_disk_id END WHERE id = ?",
            )
            .bind(d.parent_id)
            .bind(d.stored_bytes)
            .bind(d.id)
            .bind(d.chain_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM backups WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(b.disks)
    }
}

/// Inserts one disk image of backup `id` (and its chain when it starts one);
/// returns the image's row id and its chain's.
pub(super) async fn insert_disk(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: &str,
    vm_id: i64,
    d: &NewDisk,
    created_at: &str,
) -> Result<(i64, i64)> {
    let chain_id: i64 = match d.chain {
        ChainRef::Existing(c) => c,
        ChainRef::New => sqlx::query(
            "INSERT INTO chains (vm_id, disk_index, virtual_size, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(vm_id)
        .bind(d.disk_index)
        .bind(d.virtual_size)
        .bind(created_at)
        .fetch_one(&mut **tx)
        .await?
        .try_get("id")?,
    };
    let disk_id: i64 = sqlx::query(
        "INSERT INTO backup_disks (backup_id, disk_index, chain_id, parent_id, disk_type, source, image_path, \
             digest_path, change_id, virtual_size, cluster_size, stored_bytes, changed_bytes, content_digest, status) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'completed') RETURNING id",
    )
    .bind(id)
    .bind(d.disk_index)
    .bind(chain_id)
    .bind(d.parent_id)
    .bind(d.disk_type.as_str())
    .bind(&d.source)
    .bind(&d.image_path)
    .bind(&d.digest_path)
    .bind(&d.change_id)
    .bind(d.virtual_size)
    .bind(d.cluster_size)
    .bind(d.stored_bytes)
    .bind(d.changed_bytes)
    .bind(&d.content_digest)
    .fetch_one(&mut **tx)
    .await?
    .try_get("id")?;
    sqlx::query(
        "UPDATE chains SET first_disk_id = COALESCE(first_disk_id, ?), latest_disk_id = ?, \
             image_count = image_count + 1, total_bytes = total_bytes + ? WHERE id = ?",
    )
    .bind(disk_id)
    .bind(disk_id)
    .bind(d.stored_bytes)
    .bind(chain_id)
    .execute(&mut **tx)
    .await?;
    Ok((disk_id, chain_id))
}

fn export_row(r: &SqliteRow) -> Result<ExportRow> {
    Ok(ExportRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        backup_id: r.try_get("backup_id")?,
        disk_index: r.try_get("disk_index")?,
        writable: r.try_get("writable")?,
        overlay_path: r.try_get("overlay_path")?,
        created_at: time(r, "created_at")?,
    })
}

/// Refuses to drop backup `id` while an export names it.
async fn refuse_exported(conn: &mut sqlx::SqliteConnection, id: &str) -> Result<()> {
    let ids: Vec<String> = sqlx::query("SELECT id FROM exports WHERE backup_id = ? ORDER BY id")
        .bind(id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(());
    }
    Err(CatalogError::Conflict(format!(
        "backup {id} is exported over NBD (export {}); delete the export first",
        ids.join(", ")
    )))
}

impl Catalog {
    /// Records an export.
    pub async fn add_export(&self, e: &ExportRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO exports (id, name, backup_id, disk_index, writable, overlay_path, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.id)
        .bind(&e.name)
        .bind(&e.backup_id)
        .bind(e.disk_index)
        .bind(e.writable)
        .bind(&e.overlay_path)
        .bind(e.created_at.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every recorded export, oldest first.
    pub async fn exports(&self) -> Result<Vec<ExportRow>> {
        let rows = sqlx::query("SELECT * FROM exports ORDER BY created_at, id").fetch_all(&self.pool).await?;
        rows.iter().map(export_row).collect()
    }

    /// Forgets export `id`; false when there was none.
    pub async fn delete_export(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM exports WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Fails with `Conflict` while an export names backup `id`: a point
    /// being served cannot be deleted or merged away.
    pub async fn check_not_exported(&self, id: &str) -> Result<()> {
        refuse_exported(&mut *self.pool.acquire().await?, id).await
    }
}
