//! Restore-point locks shared across processes: every reader of a point (a
//! restore session, a FUSE mount, an NBD export, in this process or
//! another) holds a shared `flock` on the point's lock file for as long as
//! it reads; a merge that drops the point takes it exclusively, without
//! waiting, and reports "busy" when a reader holds it. The kernel releases
//! the lock when the holder's file is closed, also when its process dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;

/// A held lock; released on drop.
#[derive(Debug)]
pub struct PointLock {
    _file: File,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).truncate(false).write(true).open(path)
}

impl PointLock {
    /// A reader's lock: waits while a merge holds the point.
    pub fn shared(path: &Path) -> io::Result<Self> {
        let file = open(path)?;
        file.lock_shared()?;
        Ok(Self { _file: file })
    }

    /// A reader's lock without waiting; `None` while a merge holds it.
    pub fn try_shared(path: &Path) -> io::Result<Option<Self>> {
        Self::try_with(path, File::try_lock_shared)
    }

    /// A merge's lock without waiting; `None` while anyone holds the point.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<Self>> {
        Self::try_with(path, File::try_lock)
    }

    fn try_with(path: &Path, lock: fn(&File) -> Result<(), TryLockError>) -> io::Result<Option<Self>> {
        let file = open(path)?;
        match lock(&file) {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PointLock;

    #[test]
    fn readers_share_and_a_merge_excludes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("point.lock");
        let r1 = PointLock::shared(&p).unwrap();
        let r2 = PointLock::try_shared(&p).unwrap();
        assert!(r2.is_some(), "two readers share a point");
        assert!(PointLock::try_exclusive(&p).unwrap().is_none(), "a merge waits for readers");
        drop((r1, r2));
        let m = PointLock::try_exclusive(&p).unwrap().expect("free once the readers are gone");
        assert!(PointLock::try_shared(&p).unwrap().is_none(), "a reader waits for the merge");
        drop(m);
        assert!(PointLock::try_shared(&p).unwrap().is_some());
    }
}
