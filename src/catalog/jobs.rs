//! The scheduler's job queue and history. The queue is the `jobs` table
//! itself: a job is queued by inserting its row, claimed by the one process
//! that moves it to `running`, and ended with its outcome, so a daemon, the
//! CLI and the HTTP API share one queue and nothing is lost in a restart.

use super::queries::{opt_time, time, word};
use super::*;
use sqlx::sqlite::SqliteRow;

const JOB_COLUMNS: &str = "id, policy, vm_name, kind, reason, state, attempt, queued_at, not_before, started_at, \
     ended_at, error, notes, backup_id, bytes_read, bytes_written";

fn job(r: &SqliteRow) -> Result<JobRow> {
    Ok(JobRow {
        id: r.try_get("id")?,
        policy: r.try_get("policy")?,
        vm_name: r.try_get("vm_name")?,
        kind: word(r, "kind", JobKind::parse)?,
        reason: word(r, "reason", JobReason::parse)?,
        state: word(r, "state", RunState::parse)?,
        attempt: r.try_get("attempt")?,
        queued_at: time(r, "queued_at")?,
        not_before: time(r, "not_before")?,
        started_at: opt_time(r, "started_at")?,
        ended_at: opt_time(r, "ended_at")?,
        error: r.try_get("error")?,
        notes: r.try_get("notes")?,
        backup_id: r.try_get("backup_id")?,
        bytes_read: r.try_get("bytes_read")?,
        bytes_written: r.try_get("bytes_written")?,
    })
}

/// Which jobs [`Catalog::jobs`] lists.
#[derive(Debug, Clone, Default)]
pub struct JobFilter<'a> {
    pub policy: Option<&'a str>,
    pub vm: Option<&'a str>,
    pub state: Option<RunState>,
    /// At most this many, newest first (`None`: all).
    pub limit: Option<i64>,
}

impl Catalog {
    /// Queues `j`, unless a job of the same kind for the same VM is still
    /// queued or running: then the new one is recorded as `skipped`, with
    /// the reason. One statement, so two processes cannot both queue.
    /// Returns the new job.
    pub async fn enqueue(&self, j: &NewJob) -> Result<JobRow> {
        let now = UtcTime::now().to_string();
        let sql = format!(
            "INSERT INTO jobs (policy, vm_name, kind, reason, state, attempt, queued_at, not_before, error, ended_at) \
             SELECT ?, ?, ?, ?, CASE WHEN o.id IS NULL THEN 'queued' ELSE 'skipped' END, ?, ?, ?, \
                    CASE WHEN o.id IS NULL THEN NULL \
                         ELSE 'the previous run of this VM (job ' || o.id || ') is still ' || o.state END, \
                    CASE WHEN o.id IS NULL THEN NULL ELSE ? END \
             FROM (SELECT 1) LEFT JOIN (SELECT id, state FROM jobs WHERE vm_name = ? AND kind = ? \
                                        AND state IN ('queued', 'running') ORDER BY id LIMIT 1) o \
             RETURNING {JOB_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&j.policy)
            .bind(&j.vm_name)
            .bind(j.kind.as_str())
            .bind(j.reason.as_str())
            .bind(j.attempt)
            .bind(&now)
            .bind(j.not_before.to_string())
            .bind(&now)
            .bind(&j.vm_name)
            .bind(j.kind.as_str())
            .fetch_one(&self.pool)
            .await?;
        job(&row)
    }

    /// Moves queued job `id` to `running` for process `pid`; false when it
    /// is no longer queued (another process claimed it, or it was aborted).
    pub async fn claim_job(&self, id: i64, pid: u32) -> Result<bool> {
        let r =
            sqlx::query("UPDATE jobs SET state = 'running', pid = ?, started_at = ? WHERE id = ? AND state = 'queued'")
                .bind(i64::from(pid))
                .bind(UtcTime::now().to_string())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ends job `id` (queued or running) with `end`.
    pub async fn finish_job(&self, id: i64, end: &JobEnd) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = ?, ended_at = ?, error = ?, notes = ?, backup_id = ?, bytes_read = ?, \
             bytes_written = ?, pid = NULL WHERE id = ? AND state IN ('queued', 'running')",
        )
        .bind(end.state.as_str())
        .bind(UtcTime::now().to_string())
        .bind(&end.error)
        .bind(&end.notes)
        .bind(&end.backup_id)
        .bind(end.bytes_read as i64)
        .bind(end.bytes_written as i64)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the backup a running job writes, as soon as it is known.
    pub async fn set_job_backup(&self, id: i64, backup_id: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET backup_id = ? WHERE id = ?").bind(backup_id).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// The running jobs and the process running each.
    pub async fn running_jobs(&self) -> Result<Vec<(i64, Option<i64>)>> {
        let rows = sqlx::query("SELECT id, pid FROM jobs WHERE state = 'running'").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("pid")?))).collect()
    }

    /// Jobs, newest first.
    pub async fn jobs(&self, f: &JobFilter<'_>) -> Result<Vec<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (? IS NULL OR policy = ?) AND (? IS NULL OR vm_name = ?) \
             AND (? IS NULL OR state = ?) ORDER BY id DESC LIMIT ?"
        );
        let state = f.state.map(RunState::as_str);
        let rows = sqlx::query(&sql)
            .bind(f.policy)
            .bind(f.policy)
            .bind(f.vm)
            .bind(f.vm)
            .bind(state)
            .bind(state)
            .bind(f.limit.unwrap_or(-1))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job).collect()
    }

    pub async fn job(&self, id: i64) -> Result<JobRow> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job).transpose()?.ok_or_else(|| CatalogError::NotFound(format!("no job {id}")))
    }

    /// The newest ended job of each VM and kind.
    pub async fn last_jobs(&self) -> Result<Vec<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id IN (SELECT MAX(id) FROM jobs \
             WHERE state NOT IN ('queued', 'running', 'skipped') GROUP BY vm_name, kind) ORDER BY vm_name, kind"
        );
        sqlx::query(&sql).fetch_all(&self.pool).await?.iter().map(job).collect()
    }

    /// Forgets jobs that ended before `cutoff`. Returns how many.
    pub async fn delete_jobs_before(&self, cutoff: UtcTime) -> Result<u64> {
        let r = sqlx::query("DELETE FROM jobs WHERE ended_at IS NOT NULL AND ended_at < ?")
            .bind(cutoff.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
