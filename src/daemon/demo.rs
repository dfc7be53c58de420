//! `backchain serve --demo`: on an empty repository, backs up the bundled
//! sample disk (GPT with FAT16, NTFS and ext4 partitions, built by
//! fixtures/demo/make.sh) in full, then its next-day version incrementally.

use super::ServeError;
use crate::engine::{BackupRequest, NoProgress, Requested, backup};
use crate::repo::Repo;
use std::fs::File;
use std::io::BufWriter;

/// The sample disk, zstd-compressed: first state, and the day after.
const V1: &[u8] = include_bytes!("../../fixtures/demo/demo-v1.img.zst");
const V2: &[u8] = include_bytes!("../../fixtures/demo/demo-v2.img.zst");
/// The VM the demo backups belong to.
pub const DEMO_VM: &str = "demo";

/// Fills an empty repository with the two demo backups; a repository that
/// already holds VMs is left as it is. Returns the backup ids made.
pub fn fill(repo: &Repo) -> Result<Vec<String>, ServeError> {
    if !repo.db().vms().map_err(crate::engine::EngineError::from)?.is_empty() {
        return Ok(Vec::new());
    }
    let dir = repo.root().join("demo-source");
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("demo-disk.img");
    let mut ids = Vec::new();
    let result = (|| {
        for (data, kind) in [(V1, Requested::Full), (V2, Requested::Incremental)] {
            let mut out = BufWriter::new(File::create(&disk)?);
            zstd::stream::copy_decode(data, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            let req = BackupRequest {
                vm: DEMO_VM.into(),
                disks: vec![disk.display().to_string()],
                kind,
                ..Default::default()
            };
            ids.push(backup::run(repo, &req, &NoProgress)?.backup_id);
        }
        Ok::<_, ServeError>(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(ids)
}

/// A few commands to try, for the server's start-up message.
/// The curl lines carry the token from its file, which only the server's
/// user can read.
pub fn examples(base: &str, token_file: &std::path::Path, ids: &[String]) -> String {
    let id = ids.last().map(String::as_str).unwrap_or("BACKUP_ID");
    let auth = format!("-H \"Authorization: Bearer $(cat {})\"", token_file.display());
    format!(
        "Try:\n  curl {auth} {base}/api/v1/backups\n  \
         curl {auth} -X POST {base}/api/v1/restore/mount -d '{{\"backup_id\":\"{id}\",\"disk_index\":0}}'\n  \
         curl {auth} '{base}/api/v1/restore/MOUNT_ID/files?path=/'\n  \
         curl {auth} -OJ '{base}/api/v1/restore/MOUNT_ID/download-directory?path=/&format=zip'\n\
         The web browser: {base}/ (paste the token when it asks)\n"
    )
}
