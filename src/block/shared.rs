//! Open image files shared across readers: one handle per file, counted by
//! its `Arc`s and closed with the last one.
//!
//! Every restore session opens the whole chain of each of its disks. A chain
//! of 59 images on 2 disks is 118 handles; opened per session, 8 sessions
//! exhausted a limit of 1,024 handles (issue 12 item 11). Shared, the same
//! images cost 118 handles however many sessions read them.
//!
//! A file is shared only while it is unchanged: the key holds its device,
//! inode, length and change time, so a file rewritten or replaced (a merge
//! folds clusters into an image, a new image takes a removed one's inode)
//! is opened afresh, and readers of the old state keep their own handle.

use super::RawFile;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// What identifies one state of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    len: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Key {
    fn of(m: &std::fs::Metadata) -> Self {
        Key { dev: m.dev(), ino: m.ino(), len: m.len(), ctime: m.ctime(), ctime_nsec: m.ctime_nsec() }
    }
}

static OPEN: Mutex<Option<HashMap<Key, Weak<RawFile>>>> = Mutex::new(None);

/// Opens `path`, or shares the handle already open on the same, unchanged
/// file.
pub fn open_shared(path: &Path) -> io::Result<Arc<RawFile>> {
    let before = Key::of(&std::fs::metadata(path)?);
    let mut guard = crate::util::lock(&OPEN);
    let open = guard.get_or_insert_with(HashMap::new);
    if let Some(f) = open.get(&before).and_then(Weak::upgrade) {
        return Ok(f);
    }
    let file = std::fs::File::open(path)?;
    let key = Key::of(&file.metadata()?);
    let f = Arc::new(RawFile::from_file(file)?);
    // The path may name another file (or another state) by the time it is
    // opened: share the handle under what was actually opened.
    open.retain(|_, w| w.strong_count() > 0);
    open.insert(key, Arc::downgrade(&f));
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::ReadAt;

    #[test]
    fn one_handle_per_unchanged_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"first").unwrap();
        let a = open_shared(&p).unwrap();
        let b = open_shared(&p).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "an unchanged file is opened once");
        // Changed (longer): a new handle; the old one keeps its own view.
        std::fs::write(&p, b"second!").unwrap();
        let c = open_shared(&p).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.size(), 7);
        assert_eq!(a.size(), 5);
        // Closed with its last reader: the next open is a new handle.
        let w = Arc::downgrade(&c);
        drop(c);
        assert!(w.upgrade().is_none(), "the cache must not keep a file open");
        assert_eq!(open_shared(&p).unwrap().size(), 7);
    }
}
