//! tar.gz: the `tar` crate's builder over a gzip encoder, written the way
//! GNU tar writes it: long names and link targets as GNU long-name entries,
//! symlinks as symlinks, second and later names of a file as hard-link
//! entries, devices and FIFOs as their own entry types, and xattrs, ACLs and
//! SELinux labels in PAX headers (see `pax`). tar cannot hold sockets (GNU
//! tar skips them too); they are named in `RESTORE-NOTES.txt`.

use super::walk::{self, FileReader, Sink};
use super::{BUFFER, NOTES_FILE, Result, pax};
use crate::tree::{Ino, Node, Tree};
use crate::volume::fs::{NodeKind, Xattr};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::ffi::OsStr;
use std::io::{BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use tar::{Builder, EntryType, Header};

/// Writes the folder `dir` of `tree` as a gzip-compressed tar archive into
/// `out`; returns `out` once the archive is complete.
pub fn write_tar_gz<W: Write>(tree: &Tree, dir: Ino, out: W, cancel: &AtomicBool) -> Result<W> {
    let mut b = Builder::new(GzEncoder::new(out, Compression::fast()));
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    walk::walk(tree, dir, &mut TarSink { b: &mut b, pending: Vec::new() }, cancel)?;
    let gz = b.into_inner()?;
    Ok(gz.finish()?)
}

struct TarSink<'a, W: Write> {
    b: &'a mut Builder<W>,
    /// PAX records for the next entry.
    pending: Vec<(String, Vec<u8>)>,
}

impl<W: Write> TarSink<'_, W> {
    /// Writes the pending PAX header, which applies to the entry after it.
    fn pax(&mut self) -> Result<()> {
        let records = std::mem::take(&mut self.pending);
        if !records.is_empty() {
            self.b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        Ok(())
    }
}

fn header(node: &Node, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(u32::from(node.perm) & 0o7777);
    h.set_uid(u64::from(node.uid));
    h.set_gid(u64::from(node.gid));
    // tar holds no times before 1970.
    h.set_mtime(u64::try_from(node.mtime.secs).unwrap_or(0));
    h.set_size(size);
    h
}

fn path(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

impl<W: Write> Sink for TarSink<'_, W> {
    fn dir(&mut self, p: &[u8], node: &Node) -> Result<()> {
        self.pax()?;
        let mut h = header(node, EntryType::Directory, 0);
        self.b.append_data(&mut h, path(p), std::io::empty())?;
        Ok(())
    }

    fn file(&mut self, p: &[u8], node: &Node, data: &mut FileReader<'_>) -> Result<()> {
        self.pax()?;
        let mut h = header(node, EntryType::Regular, node.size);
        self.b.append_data(&mut h, path(p), BufReader::with_capacity(BUFFER, data))?;
        Ok(())
    }

    fn symlink(&mut self, p: &[u8], node: &Node, target: &[u8]) -> Result<()> {
        self.pax()?;
        let mut h = header(node, EntryType::Symlink, 0);
        self.b.append_link(&mut h, path(p), path(target))?;
        Ok(())
    }

    fn special(&mut self, p: &[u8], node: &Node) -> Result<bool> {
        let (kind, rdev) = match node.kind {
            NodeKind::CharDevice(r) => (EntryType::Char, r),
            NodeKind::BlockDevice(r) => (EntryType::Block, r),
            NodeKind::Fifo => (EntryType::Fifo, Default::default()),
            _ => {
                self.pending.clear();
                return Ok(false);
            }
        };
        self.pax()?;
        let mut h = header(node, kind, 0);
        h.set_device_major(rdev.major)?;
        h.set_device_minor(rdev.minor)?;
        self.b.append_data(&mut h, path(p), std::io::empty())?;
        Ok(true)
    }

    fn hard_link(&mut self, p: &[u8], node: &Node, first: &[u8]) -> Result<bool> {
        let mut h = header(node, EntryType::Link, 0);
        self.b.append_link(&mut h, path(p), path(first))?;
        Ok(true)
    }

    fn wants_xattrs(&self) -> bool {
        true
    }

    fn xattrs(&mut self, xattrs: &[Xattr]) -> Result<()> {
        self.pending = pax::records(xattrs);
        Ok(())
    }

    fn notes(&mut self, text: &str) -> Result<()> {
        self.pending.clear();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o444);
        h.set_size(text.len() as u64);
        self.b.append_data(&mut h, NOTES_FILE, text.as_bytes())?;
        Ok(())
    }
}
