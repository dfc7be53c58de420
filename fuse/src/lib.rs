//! backchain-fuse: serves a read-only tree over FUSE. It knows nothing about
//! disks or QCOW2; the main crate implements [`ReadOnlyTree`] for its tree.

/// A node's kind, as FUSE reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
}
