//! tar.gz: the `tar` crate's builder over a gzip encoder. Long names and
//! link targets use GNU long-name entries; symlinks stay symlinks.

use super::walk::{self, FileReader, Sink};
use super::{BUFFER, Result};
use crate::tree::{Ino, Node, Tree};
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
    walk::walk(tree, dir, &mut TarSink { b: &mut b }, cancel)?;
    let gz = b.into_inner()?;
    Ok(gz.finish()?)
}

struct TarSink<'a, W: Write> {
    b: &'a mut Builder<W>,
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
        let mut h = header(node, EntryType::Directory, 0);
        self.b.append_data(&mut h, path(p), std::io::empty())?;
        Ok(())
    }

    fn file(&mut self, p: &[u8], node: &Node, data: &mut FileReader<'_>) -> Result<()> {
        let mut h = header(node, EntryType::Regular, node.size);
        self.b.append_data(&mut h, path(p), BufReader::with_capacity(BUFFER, data))?;
        Ok(())
    }

    fn symlink(&mut self, p: &[u8], node: &Node, target: &[u8]) -> Result<()> {
        let mut h = header(node, EntryType::Symlink, 0);
        self.b.append_link(&mut h, path(p), path(target))?;
        Ok(())
    }
}
