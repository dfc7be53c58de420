//! The catalog for blocking code: the same queries as [`Catalog`], each
//! waiting for its answer on the repository's runtime. Call it from a thread
//! outside the runtime (the CLI's main thread, `spawn_blocking`, FUSE).

use super::*;
use tokio::runtime::Handle;

/// [`Catalog`], blocking.
#[derive(Clone)]
pub struct SyncCatalog {
    inner: Catalog,
    rt: Handle,
}

impl SyncCatalog {
    pub fn new(inner: Catalog, rt: Handle) -> Self {
        Self { inner, rt }
    }

    pub fn handle(&self) -> &Handle {
        &self.rt
    }

    /// The async catalog behind this one.
    pub fn catalog(&self) -> &Catalog {
        &self.inner
    }

    pub fn close(&self) {
        self.rt.block_on(self.inner.close());
    }

    pub fn schema_version(&self) -> Result<i64> {
        self.rt.block_on(self.inner.schema_version())
    }

    pub fn vm_id(&self, name: &str, create: bool) -> Result<Option<i64>> {
        self.rt.block_on(self.inner.vm_id(name, create))
    }

    pub fn set_vm_disks(&self, vm_id: i64, sources: &[String]) -> Result<()> {
        self.rt.block_on(self.inner.set_vm_disks(vm_id, sources))
    }

    pub fn vms(&self) -> Result<Vec<Vm>> {
        self.rt.block_on(self.inner.vms())
    }

    pub fn latest_disk(&self, vm_id: i64, disk_index: i64) -> Result<Option<BackupDisk>> {
        self.rt.block_on(self.inner.latest_disk(vm_id, disk_index))
    }

    pub fn start_backup(&self, id: &str, vm_id: i64, kind: BackupType, bytes_total: u64) -> Result<()> {
        self.rt.block_on(self.inner.start_backup(id, vm_id, kind, bytes_total))
    }

    pub fn progress(&self, id: &str, bytes_read: u64, bytes_written: u64) -> Result<()> {
        self.rt.block_on(self.inner.progress(id, bytes_read, bytes_written))
    }

    pub fn commit_backup(&self, id: &str, vm_id: i64, disks: &[NewDisk], read: u64, written: u64) -> Result<()> {
        self.rt.block_on(self.inner.commit_backup(id, vm_id, disks, read, written))
    }

    pub fn set_notes(&self, backup_id: &str, notes: &[String]) -> Result<()> {
        self.rt.block_on(self.inner.set_notes(backup_id, notes))
    }

    pub fn fail_backup(&self, id: &str, error: &str) -> Result<()> {
        self.rt.block_on(self.inner.fail_backup(id, error))
    }

    pub fn mark_interrupted(&self, vm_id: i64) -> Result<u64> {
        self.rt.block_on(self.inner.mark_interrupted(vm_id))
    }

    pub fn list_backups(&self, vm: Option<&str>) -> Result<Vec<Backup>> {
        self.rt.block_on(self.inner.list_backups(vm))
    }

    pub fn backup(&self, id: &str) -> Result<Backup> {
        self.rt.block_on(self.inner.backup(id))
    }

    pub fn latest_backup(&self, vm: &str) -> Result<Option<Backup>> {
        self.rt.block_on(self.inner.latest_backup(vm))
    }

    pub fn chains(&self, vm: &str) -> Result<Vec<DiskChain>> {
        self.rt.block_on(self.inner.chains(vm))
    }

    pub fn set_change_id(&self, backup_id: &str, disk_index: i64, change_id: &str) -> Result<()> {
        self.rt.block_on(self.inner.set_change_id(backup_id, disk_index, change_id))
    }

    pub fn delete_backup(&self, id: &str) -> Result<Vec<BackupDisk>> {
        self.rt.block_on(self.inner.delete_backup(id))
    }

    pub fn drop_merged_backup(&self, id: &str) -> Result<Vec<BackupDisk>> {
        self.rt.block_on(self.inner.drop_merged_backup(id))
    }

    pub fn add_export(&self, e: &ExportRow) -> Result<()> {
        self.rt.block_on(self.inner.add_export(e))
    }

    pub fn exports(&self) -> Result<Vec<ExportRow>> {
        self.rt.block_on(self.inner.exports())
    }

    pub fn delete_export(&self, id: &str) -> Result<bool> {
        self.rt.block_on(self.inner.delete_export(id))
    }

    pub fn check_not_exported(&self, id: &str) -> Result<()> {
        self.rt.block_on(self.inner.check_not_exported(id))
    }

    pub fn merges(&self, vm: &str) -> Result<Vec<MergeIntent>> {
        self.rt.block_on(self.inner.merges(vm))
    }

    pub fn merge_vms(&self) -> Result<Vec<String>> {
        self.rt.block_on(self.inner.merge_vms())
    }

    pub fn save_merge_journal(&self, id: i64, journal: &str) -> Result<()> {
        self.rt.block_on(self.inner.save_merge_journal(id, journal))
    }

    pub fn finish_merge(&self, id: i64, restat: &[(String, u64)]) -> Result<()> {
        self.rt.block_on(self.inner.finish_merge(id, restat))
    }

    pub fn record_verify(&self, disk_id: i64, error: Option<&str>) -> Result<()> {
        self.rt.block_on(self.inner.record_verify(disk_id, error))
    }

    pub fn corrupt_in_chain(&self, chain_id: i64) -> Result<Option<String>> {
        self.rt.block_on(self.inner.corrupt_in_chain(chain_id))
    }

    pub fn adopt_backup(&self, b: &AdoptedBackup) -> Result<Vec<(i64, i64)>> {
        self.rt.block_on(self.inner.adopt_backup(b))
    }

    pub fn set_backup_status(&self, id: &str, status: BackupStatus) -> Result<()> {
        self.rt.block_on(self.inner.set_backup_status(id, status))
    }

    pub fn abort_backup(&self, id: &str, reason: &str) -> Result<()> {
        self.rt.block_on(self.inner.abort_backup(id, reason))
    }

    pub fn claim_job(&self, id: i64, pid: u32) -> Result<bool> {
        self.rt.block_on(self.inner.claim_job(id, pid))
    }

    pub fn finish_job(&self, id: i64, end: &JobEnd) -> Result<()> {
        self.rt.block_on(self.inner.finish_job(id, end))
    }

    pub fn set_job_backup(&self, id: i64, backup_id: &str) -> Result<()> {
        self.rt.block_on(self.inner.set_job_backup(id, backup_id))
    }

    pub fn jobs(&self, f: &JobFilter<'_>) -> Result<Vec<JobRow>> {
        self.rt.block_on(self.inner.jobs(f))
    }

    pub fn job(&self, id: i64) -> Result<JobRow> {
        self.rt.block_on(self.inner.job(id))
    }

    pub fn last_jobs(&self) -> Result<Vec<JobRow>> {
        self.rt.block_on(self.inner.last_jobs())
    }
}
