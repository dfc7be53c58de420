//! The open-file limit. Each image file of a chain is one descriptor, and a
//! server holds chains for many sessions and mounts: the usual soft limit
//! of 1024 ran out at 8 sessions on a 59-image, 2-disk chain. The hard
//! limit is what the admin allows; the soft one is only a default.

use rustix::process::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit; returns the limit
/// now in force (None when unlimited).
pub fn raise_open_files() -> Option<u64> {
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        // Refused (a container's policy, say): the old limit stays.
        let _ = setrlimit(Resource::Nofile, l);
    }
    getrlimit(Resource::Nofile).current
}
