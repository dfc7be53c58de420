//! A full repository disk: telling it from other failures, and saying how
//! much room is left. A backup that runs out of room fails cleanly (its
//! partial files are removed, the job is marked failed); its message names
//! the repository, the file being written and the free space, instead of a
//! bare "I/O error at offset N" (issue 12 item 8).

use std::error::Error;
use std::path::Path;

/// Less free space than this, and any write error is taken for a full disk:
/// SQLite reports running out of room for its shared-memory file or journal
/// as a generic I/O error.
pub const NEARLY_FULL: u64 = 1 << 20;

/// Whether `e` or one of its causes says the disk (or the user's quota) is
/// full.
pub fn says_full(e: &(dyn Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        {
            return true;
        }
        if e.downcast_ref::<crate::catalog::CatalogError>().is_some_and(|c| c.is_disk_full()) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Bytes an unprivileged writer may still use on the filesystem holding
/// `path`; `None` when that cannot be told.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    s.f_bavail.checked_mul(s.f_frsize)
}

/// Whether `e`, met while writing under `root`, comes from a full disk.
pub fn is_full(e: &(dyn Error + 'static), root: &Path) -> bool {
    says_full(e) || free_bytes(root).is_some_and(|f| f < NEARLY_FULL)
}

/// "The repository's disk is full", with the repository and its free space.
pub fn full_state(root: &Path) -> String {
    let free = free_bytes(root).map_or("unknown".to_string(), crate::util::human_size);
    format!("the repository's disk is full ({} has {free} free)", root.display())
}

/// The sentence that says so: the repository, its free space, what failed,
/// and the way out.
pub fn full_message(root: &Path, what: &str) -> String {
    format!(
        "{}: {what}; free space (backchain delete or prune old backups, or grow the disk) and try again",
        full_state(root)
    )
}
