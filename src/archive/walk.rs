//! Depth-first walk of a tree folder, feeding an archive writer.

use super::{ArchiveError, BUFFER, Result};
use crate::tree::{Ino, Node, Tree, TreeError};
use crate::volume::fs::{NodeKind, bad_name};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

/// Folder levels below the archived folder; deeper folders fail the archive
/// rather than recursing without bound.
pub const MAX_DEPTH: usize = 256;

/// What an archive format does with each entry. Paths are relative to the
/// archived folder, `/`-separated, without a leading or trailing slash.
pub trait Sink {
    fn dir(&mut self, path: &[u8], node: &Node) -> Result<()>;
    fn file(&mut self, path: &[u8], node: &Node, data: &mut FileReader<'_>) -> Result<()>;
    fn symlink(&mut self, path: &[u8], node: &Node, target: &[u8]) -> Result<()>;
}

pub fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn tree_err(path: &[u8], source: TreeError) -> ArchiveError {
    ArchiveError::Tree { path: lossy(path), source }
}

/// Walks the folder `dir` into `sink`. Devices, FIFOs and sockets are skipped.
pub fn walk(tree: &Tree, dir: Ino, sink: &mut dyn Sink, cancel: &AtomicBool) -> Result<()> {
    let node = tree.getattr(dir).map_err(|e| tree_err(b"", e))?;
    if node.kind != NodeKind::Directory {
        return Err(tree_err(b"", TreeError::Fs(crate::volume::fs::FsError::NotADirectory)));
    }
    walk_dir(tree, dir, &mut Vec::new(), 0, sink, cancel)
}

fn walk_dir(
    tree: &Tree,
    dir: Ino,
    path: &mut Vec<u8>,
    depth: usize,
    sink: &mut dyn Sink,
    cancel: &AtomicBool,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(ArchiveError::TooDeep { path: lossy(path) });
    }
    let listing = tree.read_dir(dir).map_err(|e| tree_err(path, e))?;
    for entry in &listing.entries {
        if cancel.load(Ordering::Relaxed) {
            return Err(ArchiveError::Cancelled);
        }
        // The tree already leaves such names out; an archive writer still
        // refuses them, whatever it is given, so no entry can leave its folder
        // when the archive is unpacked.
        if let Some(why) = bad_name(&entry.name) {
            return Err(ArchiveError::UnsafeName { path: lossy(path), why });
        }
        let base = path.len();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&entry.name);
        match entry.kind {
            NodeKind::Directory => {
                sink.dir(path, entry)?;
                walk_dir(tree, entry.ino, path, depth + 1, sink, cancel)?;
            }
            NodeKind::File => {
                let mut r = FileReader { tree, node: entry, path, at: 0, cancel };
                sink.file(path, entry, &mut r)?;
                r.check_done()?;
            }
            NodeKind::Symlink => {
                let target = tree.read_link(entry.ino).map_err(|e| tree_err(path, e))?;
                sink.symlink(path, entry, &target)?;
            }
            NodeKind::Other => {}
        }
        path.truncate(base);
    }
    Ok(())
}

/// A file's bytes as `Read`, exactly `node.size` of them: a file that ends
/// early fails the archive instead of producing wrong bytes.
pub struct FileReader<'a> {
    tree: &'a Tree,
    node: &'a Node,
    path: &'a [u8],
    at: u64,
    cancel: &'a AtomicBool,
}

impl FileReader<'_> {
    fn check_done(&self) -> Result<()> {
        if self.at != self.node.size {
            return Err(ArchiveError::Truncated { path: lossy(self.path), at: self.at, size: self.node.size });
        }
        Ok(())
    }

    /// Reads as much as fits in `buf` (fewer only at the end of the file).
    pub fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let m = self.read(&mut buf[n..])?;
            if m == 0 {
                break;
            }
            n += m;
        }
        Ok(n)
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other(ArchiveError::Cancelled));
        }
        let left = self.node.size - self.at;
        let want = buf.len().min(BUFFER).min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self
            .tree
            .read(self.node.ino, self.at, &mut buf[..want])
            .map_err(|e| io::Error::other(format!("{}: {e}", lossy(self.path))))?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: the file ended at byte {} of {}", lossy(self.path), self.at, self.node.size),
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}
