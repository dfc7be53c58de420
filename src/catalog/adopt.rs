//! Rows for backups found on disk rather than written by a job: what
//! `repair --rebuild-catalog` records for each backup it recovers from the
//! repository's images (see docs/catalog.md for the fields it cannot
//! recover).

use super::queries::insert_disk;
use super::*;

/// A completed backup recovered from its image files.
#[derive(Debug, Clone)]
pub struct AdoptedBackup {
    pub id: String,
    pub vm_id: i64,
    pub backup_type: BackupType,
    pub started_at: UtcTime,
    pub ended_at: UtcTime,
    /// Its disks, parents (by row id) recorded before.
    pub disks: Vec<NewDisk>,
}

impl Catalog {
    /// Records a recovered backup as completed, with its disk images and
    /// chains, in one transaction; returns each disk's (row id, chain id).
    pub async fn adopt_backup(&self, b: &AdoptedBackup) -> Result<Vec<(i64, i64)>> {
        let mut tx = self.write_tx().await?;
        let total: i64 = b.disks.iter().map(|d| d.virtual_size).sum();
        let written: i64 = b.disks.iter().map(|d| d.stored_bytes).sum();
        sqlx::query(
            "INSERT INTO backups (id, vm_id, backup_type, status, started_at, ended_at, bytes_total, bytes_read, \
             bytes_written) VALUES (?, ?, ?, 'completed', ?, ?, ?, ?, ?)",
        )
        .bind(&b.id)
        .bind(b.vm_id)
        .bind(b.backup_type.as_str())
        .bind(b.started_at.to_string())
        .bind(b.ended_at.to_string())
        .bind(total)
        .bind(total)
        .bind(written)
        .execute(&mut *tx)
        .await?;
        let created = b.started_at.to_string();
        let mut ids = Vec::with_capacity(b.disks.len());
        for d in &b.disks {
            ids.push(insert_disk(&mut tx, &b.id, b.vm_id, d, &created).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }
}
