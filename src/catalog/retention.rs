//! Retention's statements: a dropped backup leaves the catalog together
//! with the merge intents of its images (one transaction), merges record
//! their progress and finish, verify records what it found.

use super::*;
use crate::util::time::UtcTime;
use sqlx::sqlite::SqliteRow;

const MERGE_COLUMNS: &str = "m.id, v.name AS vm, m.backup_id, m.disk_index, m.dir, m.image, m.digests, m.journal";

fn merge(r: &SqliteRow) -> Result<MergeIntent> {
    Ok(MergeIntent {
        id: r.try_get("id")?,
        vm: r.try_get("vm")?,
        backup_id: r.try_get("backup_id")?,
        disk_index: r.try_get("disk_index")?,
        dir: r.try_get("dir")?,
        image: r.try_get("image")?,
        digests: r.try_get("digests")?,
        journal: r.try_get("journal")?,
    })
}

/// `path`'s folder and file name (repository-relative paths with `/`).
fn split_path(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Catalog {
    /// Removes backup `id` (not running) whose images a merge folds into
    /// their neighbours: per disk, its child takes its parent (and becomes
    /// the chain's full when it had none), and a merge intent is recorded
    /// for its image, all in one transaction, so the point leaves listings
    /// exactly when its merges become due. Returns its disk rows.
    pub async fn drop_merged_backup(&self, id: &str) -> Result<Vec<BackupDisk>> {
        let b = self.backup(id).await?;
        if b.status.is_active() {
            return Err(CatalogError::Conflict(format!("backup {id} is still running")));
        }
        let now = UtcTime::now().to_string();
        let vm_id: i64 = sqlx::query("SELECT vm_id FROM backups WHERE id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await?
            .try_get("vm_id")?;
        let mut tx = self.write_tx().await?;
        for d in &b.disks {
            let child: Option<(i64, String)> =
                sqlx::query("SELECT id, backup_id FROM backup_disks WHERE parent_id = ?")
                    .bind(d.id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| Ok::<_, sqlx::Error>((r.try_get("id")?, r.try_get("backup_id")?)))
                    .transpose()?;
            if d.verify_state == Some(VerifyState::Corrupt) {
                // The merge carries the damage into the child: so does the mark.
                sqlx::query(
                    "UPDATE backup_disks SET verify_state = 'corrupt', verified_at = ?, verify_error = ? \
                     WHERE parent_id = ?",
                )
                .bind(&now)
                .bind(format!("merged with backup {id}, which verify found corrupt"))
                .bind(d.id)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE backup_disks SET parent_id = ?, \
                 disk_type = CASE WHEN ? IS NULL THEN 'full' ELSE disk_type END WHERE parent_id = ?",
            )
            .bind(d.parent_id)
            .bind(d.parent_id)
            .bind(d.id)
            .execute(&mut *tx)
            .await?;
            // A backup whose every disk is now a full is a full.
            if let Some((_, child_backup)) = &child {
                sqlx::query(
                    "UPDATE backups SET backup_type = 'full' WHERE id = ? AND NOT EXISTS \
                     (SELECT 1 FROM backup_disks WHERE backup_id = ? AND disk_type = 'incremental')",
                )
                .bind(child_backup)
                .bind(child_backup)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE chains SET image_count = image_count - 1, total_bytes = total_bytes - ?, \
                 first_disk_id = CASE WHEN first_disk_id = ? THEN ? ELSE first_disk_id END, \
                 latest_disk_id = CASE WHEN latest_disk_id = ? THEN ? ELSE latest_disk_id END WHERE id = ?",
            )
            .bind(d.stored_bytes)
            .bind(d.id)
            .bind(child.as_ref().map(|c| c.0))
            .bind(d.id)
            .bind(d.parent_id)
            .bind(d.chain_id)
            .execute(&mut *tx)
            .await?;
            let (dir, image) = split_path(&d.image_path);
            let (_, digests) = split_path(&d.digest_path);
            sqlx::query(
                "INSERT INTO merges (vm_id, backup_id, disk_index, dir, image, digests, journal, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            )
            .bind(vm_id)
            .bind(id)
            .bind(d.disk_index)
            .bind(dir)
            .bind(image)
            .bind(digests)
            .bind(&now)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM backups WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(b.disks)
    }

    /// The merges due in VM `vm`, in the order they were recorded.
    pub async fn merges(&self, vm: &str) -> Result<Vec<MergeIntent>> {
        let sql =
            format!("SELECT {MERGE_COLUMNS} FROM merges m JOIN vms v ON v.id = m.vm_id WHERE v.name = ? ORDER BY m.id");
        let rows = sqlx::query(&sql).bind(vm).fetch_all(&self.pool).await?;
        rows.iter().map(merge).collect()
    }

    /// The VMs with merges due.
    pub async fn merge_vms(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT v.name FROM merges m JOIN vms v ON v.id = m.vm_id ORDER BY v.name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// Records merge `id`'s journal (its plan and progress).
    pub async fn save_merge_journal(&self, id: i64, journal: &str) -> Result<()> {
        let done = sqlx::query("UPDATE merges SET journal = ?, updated_at = ? WHERE id = ?")
            .bind(journal)
            .bind(UtcTime::now().to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("no merge {id}")));
        }
        Ok(())
    }

    /// Merge `id` is done: its row goes, and the images it changed get
    /// their new stored sizes (`restat`: image path, bytes), with their
    /// chains' totals, in one transaction.
    pub async fn finish_merge(&self, id: i64, restat: &[(String, u64)]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for (path, bytes) in restat {
            // The image changed: a pass of its old file says nothing of the
            // new one (a corrupt mark stays: the merge carried it forward).
            sqlx::query(
                "UPDATE backup_disks SET stored_bytes = ?, \
                 verified_at = CASE WHEN verify_state = 'corrupt' THEN verified_at ELSE NULL END, \
                 verify_state = CASE WHEN verify_state = 'corrupt' THEN 'corrupt' ELSE NULL END \
                 WHERE image_path = ?",
            )
            .bind(*bytes as i64)
            .bind(path)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE chains SET total_bytes = (SELECT COALESCE(SUM(stored_bytes), 0) FROM backup_disks \
                 WHERE chain_id = chains.id) WHERE id IN (SELECT chain_id FROM backup_disks WHERE image_path = ?)",
            )
            .bind(path)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM merges WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a verify of disk image `disk_id`: `error` is `None` when it
    /// passed.
    pub async fn record_verify(&self, disk_id: i64, error: Option<&str>) -> Result<()> {
        let state = if error.is_some() { VerifyState::Corrupt } else { VerifyState::Ok };
        sqlx::query("UPDATE backup_disks SET verified_at = ?, verify_state = ?, verify_error = ? WHERE id = ?")
            .bind(UtcTime::now().to_string())
            .bind(state.as_str())
            .bind(error)
            .bind(disk_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A backup of chain `chain_id` whose image verify marked corrupt, if
    /// any: such a chain is never extended.
    pub async fn corrupt_in_chain(&self, chain_id: i64) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT backup_id FROM backup_disks WHERE chain_id = ? AND verify_state = 'corrupt' ORDER BY id LIMIT 1",
        )
        .bind(chain_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("backup_id")).transpose()?)
    }
}
