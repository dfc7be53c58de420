//! Depth-first walk of a tree folder, feeding an archive writer.

use super::{ArchiveError, BUFFER, Result};
use crate::tree::{Ino, Node, Tree, TreeError};
use crate::volume::fs::{NodeKind, Xattr, bad_name};
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

/// Folder levels below the archived folder; deeper folders fail the archive
/// rather than recursing without bound.
pub const MAX_DEPTH: usize = 256;

/// Files with several names whose first path is remembered, so later names
/// become hard-link entries; past this, later names are full copies.
pub const MAX_LINKED_FILES: usize = 1 << 20;
/// Entries named one by one in the restore notes; past this, only counted.
const MAX_NOTED: usize = 1000;

/// What an archive format does with each entry. Paths are relative to the
/// archived folder, `/`-separated, without a leading or trailing slash.
pub trait Sink {
    fn dir(&mut self, path: &[u8], node: &Node) -> Result<()>;
    fn file(&mut self, path: &[u8], node: &Node, data: &mut FileReader<'_>) -> Result<()>;
    fn symlink(&mut self, path: &[u8], node: &Node, target: &[u8]) -> Result<()>;
    /// A device, FIFO or socket: false when the format cannot hold it (the
    /// walk then names it in the restore notes).
    fn special(&mut self, path: &[u8], node: &Node) -> Result<bool>;
    /// A further name of a file already archived under `first`: false when
    /// the format has no hard links (the walk then writes a full copy).
    fn hard_link(&mut self, _path: &[u8], _node: &Node, _first: &[u8]) -> Result<bool> {
        Ok(false)
    }
    /// Whether the format carries extended attributes.
    fn wants_xattrs(&self) -> bool {
        false
    }
    /// The extended attributes of the entry that comes next.
    fn xattrs(&mut self, _xattrs: &[Xattr]) -> Result<()> {
        Ok(())
    }
    /// What the archive could not hold, as text for the person restoring,
    /// given once after the last entry when there is something to say.
    fn notes(&mut self, text: &str) -> Result<()>;
}

/// What the walk could not put into the archive.
#[derive(Default)]
struct Notes {
    lines: Vec<String>,
    more: usize,
}

impl Notes {
    fn add(&mut self, line: String) {
        if self.lines.len() < MAX_NOTED { self.lines.push(line) } else { self.more += 1 }
    }

    fn text(&self) -> Option<String> {
        if self.lines.is_empty() {
            return None;
        }
        let mut t = String::from("backchain could not put these entries of the backup into this archive:\n\n");
        for l in &self.lines {
            t.push_str(l);
            t.push('\n');
        }
        if self.more > 0 {
            t.push_str(&format!("... and {} more\n", self.more));
        }
        Some(t)
    }
}

/// The state of one walk.
struct Walk<'a> {
    tree: &'a Tree,
    sink: &'a mut dyn Sink,
    cancel: &'a AtomicBool,
    /// First archived path of each file with several names, by inode.
    linked: HashMap<Ino, Vec<u8>>,
    notes: Notes,
}

pub fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// A path as messages show it: the walk's root is the empty path, which a
/// message must still name (`/`, not `": unsupported: …"`). Archive entry
/// names use [`lossy`].
pub fn shown(path: &[u8]) -> String {
    if path.is_empty() { "/".to_string() } else { lossy(path) }
}

fn tree_err(path: &[u8], source: TreeError) -> ArchiveError {
    ArchiveError::Tree { path: shown(path), source }
}

/// Walks the folder `dir` into `sink`: every entry with its metadata, hard
/// links as links where the format has them, and what the format cannot hold
/// named in the restore notes.
pub fn walk(tree: &Tree, dir: Ino, sink: &mut dyn Sink, cancel: &AtomicBool) -> Result<()> {
    let node = tree.getattr(dir).map_err(|e| tree_err(b"", e))?;
    if node.kind != NodeKind::Directory {
        return Err(tree_err(b"", TreeError::Fs(crate::volume::fs::FsError::NotADirectory)));
    }
    let mut w = Walk { tree, sink, cancel, linked: HashMap::new(), notes: Notes::default() };
    w.dir(dir, &mut Vec::new(), 0)?;
    match w.notes.text() {
        Some(text) => w.sink.notes(&text),
        None => Ok(()),
    }
}

impl Walk<'_> {
    fn dir(&mut self, dir: Ino, path: &mut Vec<u8>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(ArchiveError::TooDeep { path: shown(path) });
        }
        let listing = self.tree.read_dir(dir).map_err(|e| tree_err(path, e))?;
        if let Some(note) = &listing.note {
            self.notes.add(format!("{}/: {note}", lossy(path)));
        }
        for entry in &listing.entries {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(ArchiveError::Cancelled);
            }
            let base = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&entry.name);
            self.entry(entry, path, depth)?;
            path.truncate(base);
        }
        Ok(())
    }

    fn entry(&mut self, entry: &Node, path: &mut Vec<u8>, depth: usize) -> Result<()> {
        // The tree already leaves such names out; an archive writer still
        // refuses them, whatever it is given, so no entry can leave its folder
        // when the archive is unpacked.
        if let Some(why) = bad_name(&entry.name) {
            return Err(ArchiveError::UnsafeName { path: shown(path), why });
        }
        if entry.kind == NodeKind::File && entry.nlink > 1 {
            if let Some(first) = self.linked.get(&entry.ino) {
                if self.sink.hard_link(path, entry, first)? {
                    return Ok(());
                }
            } else if self.linked.len() < MAX_LINKED_FILES {
                self.linked.insert(entry.ino, path.clone());
            }
        }
        if self.sink.wants_xattrs() {
            match self.tree.xattrs(entry.ino) {
                Ok(x) => self.sink.xattrs(&x)?,
                // A corrupt attribute block costs that file its attributes,
                // not the archive.
                Err(e) => self.notes.add(format!("{}: extended attributes left out: {e}", shown(path))),
            }
        }
        match entry.kind {
            NodeKind::Directory => {
                self.sink.dir(path, entry)?;
                self.dir(entry.ino, path, depth + 1)?;
            }
            NodeKind::File => {
                let mut r = FileReader { tree: self.tree, node: entry, path, at: 0, cancel: self.cancel };
                self.sink.file(path, entry, &mut r)?;
                r.check_done()?;
            }
            NodeKind::Symlink => {
                let target = self.tree.read_link(entry.ino).map_err(|e| tree_err(path, e))?;
                self.sink.symlink(path, entry, &target)?;
            }
            kind => {
                if !self.sink.special(path, entry)? {
                    self.notes.add(format!("{}: a {} (this archive format cannot hold it)", lossy(path), kind.name()));
                }
            }
        }
        Ok(())
    }
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
            return Err(ArchiveError::Truncated { path: shown(self.path), at: self.at, size: self.node.size });
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
            .map_err(|e| io::Error::other(format!("{}: {e}", shown(self.path))))?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: the file ended at byte {} of {}", shown(self.path), self.at, self.node.size),
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;

    // Issue 12 item 13: an unreadable root folder said ": unsupported: folder inode 2".
    #[test]
    fn the_root_is_named_in_messages() {
        let e = tree_err(b"", TreeError::Unavailable("unsupported: folder inode 2".into()));
        assert_eq!(e.to_string(), "/: unsupported: folder inode 2");
        assert_eq!(tree_err(b"a/b", TreeError::InvalidPath("x".into())).to_string(), "a/b: invalid path: x");
        assert_eq!(lossy(b""), "");
    }
}
