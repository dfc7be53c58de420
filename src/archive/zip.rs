//! Zip through the `zip` crate's streaming writer (no seeking: sizes and
//! CRCs follow each entry in a data descriptor).

use super::walk::{self, FileReader, Sink, lossy};
use super::{BUFFER, NOTES_FILE, Result};
use crate::tree::{Ino, Node, Tree};
use crate::util::time::civil_from_days;
use crate::volume::fs::{NodeKind, Timestamp};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use zip::write::{FullFileOptions, StreamWriter};
use zip::{CompressionMethod, DateTime, ZipWriter};

/// Bytes of a file's start read before its entry starts.
const SAMPLE: usize = 64 << 10;
/// Of those, the bytes test-compressed to choose between deflate and stored:
/// enough to tell text from random data, small enough that folders of many
/// small files do not spend their time on the test (it cost 74% of a
/// 10,000-file zip at 64 KiB).
const TEST: usize = 16 << 10;
/// Deflate is used when the sample shrinks below this fraction (percent).
const WORTH_IT_PERCENT: usize = 90;
/// Deflate level: fast, since archives are produced while the client waits.
const LEVEL: i64 = 3;
/// Info-ZIP "ux" extra field (Info-ZIP extrafld.txt, "Info-ZIP UNIX (new)"):
/// version 1, then uid and gid as 4-byte little-endian numbers, which
/// `unzip -X` restores.
const UX_FIELD: u16 = 0x7875;
/// File type bits of a Unix mode (inode(7)) and MS-DOS's folder attribute.
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const DOS_DIR: u32 = 0x10;
/// Entries at or above this size get zip64 headers (APPNOTE 4.5.3): the
/// streaming writer must decide before the data is written.
const ZIP64_FROM: u64 = 0xFFFF_0000;

/// Writes the folder `dir` of `tree` as a zip archive into `out`; returns
/// `out` once the central directory is written.
pub fn write_zip<W: Write>(tree: &Tree, dir: Ino, out: W, cancel: &AtomicBool) -> Result<W> {
    let mut sink = ZipSink { zip: ZipWriter::new_stream(out), buf: vec![0; BUFFER] };
    walk::walk(tree, dir, &mut sink, cancel)?;
    Ok(sink.zip.finish()?.into_inner())
}

struct ZipSink<W: Write> {
    zip: ZipWriter<StreamWriter<W>>,
    buf: Vec<u8>,
}

/// DOS date and time (UTC; the format has no zone), clamped to the years it
/// can hold (1980-2107).
fn dos_time(t: Timestamp) -> DateTime {
    let days = t.secs.div_euclid(86_400);
    let rem = t.secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = ((rem / 3600) as u8, (rem / 60 % 60) as u8, (rem % 60) as u8);
    match y {
        ..1980 => DateTime::default(),
        2108.. => DateTime::from_date_and_time(2107, 12, 31, 23, 59, 58).unwrap_or_default(),
        _ => DateTime::from_date_and_time(y as u16, m as u8, d as u8, hh, mm, ss).unwrap_or_default(),
    }
}

fn options(node: &Node) -> Result<FullFileOptions<'static, 'static>> {
    let mut ux = vec![1u8, 4];
    ux.extend_from_slice(&node.uid.to_le_bytes());
    ux.push(4);
    ux.extend_from_slice(&node.gid.to_le_bytes());
    let mut o = FullFileOptions::default();
    o.add_extra_field(UX_FIELD, ux, false)?;
    // The Unix mode in the high half of the external attributes, with the
    // setuid, setgid and sticky bits that `unix_permissions` would drop
    // (`unzip -K` restores them); the low half has MS-DOS's folder bit.
    let (ty, dos) = match node.kind {
        NodeKind::Directory => (S_IFDIR, DOS_DIR),
        NodeKind::Symlink => (S_IFLNK, 0),
        _ => (S_IFREG, 0),
    };
    let o = o
        .last_modified_time(dos_time(node.mtime))
        .external_attributes(((ty | (u32::from(node.perm) & 0o7777)) << 16) | dos)
        .large_file(node.size >= ZIP64_FROM);
    // The extended timestamp (0x5455) keeps exact Unix seconds where they fit.
    match u32::try_from(node.mtime.secs) {
        Ok(secs) => Ok(o.with_extended_timestamp(Some(secs), None, None)?),
        Err(_) => Ok(o),
    }
}

/// Whether deflate pays for data like `sample`.
fn compressible(sample: &[u8]) -> bool {
    if sample.is_empty() {
        return false;
    }
    let mut enc = flate2::write::DeflateEncoder::new(Vec::with_capacity(sample.len()), flate2::Compression::fast());
    if enc.write_all(sample).is_err() {
        return false;
    }
    match enc.finish() {
        Ok(c) => c.len() * 100 < sample.len() * WORTH_IT_PERCENT,
        Err(_) => false,
    }
}

impl<W: Write> Sink for ZipSink<W> {
    fn dir(&mut self, path: &[u8], node: &Node) -> Result<()> {
        self.zip.add_directory(lossy(path), options(node)?)?;
        Ok(())
    }

    fn file(&mut self, path: &[u8], node: &Node, data: &mut FileReader<'_>) -> Result<()> {
        let first = data.fill(&mut self.buf[..SAMPLE])?;
        let method = if compressible(&self.buf[..first.min(TEST)]) {
            CompressionMethod::Deflated
        } else {
            CompressionMethod::Stored
        };
        let level = (method == CompressionMethod::Deflated).then_some(LEVEL);
        self.zip.start_file(lossy(path), options(node)?.compression_method(method).compression_level(level))?;
        self.zip.write_all(&self.buf[..first])?;
        loop {
            let n = data.fill(&mut self.buf)?;
            if n == 0 {
                break;
            }
            self.zip.write_all(&self.buf[..n])?;
        }
        Ok(())
    }

    fn symlink(&mut self, path: &[u8], node: &Node, target: &[u8]) -> Result<()> {
        self.zip.add_symlink(lossy(path), lossy(target), options(node)?)?;
        Ok(())
    }

    /// Zip has no devices, FIFOs or sockets.
    fn special(&mut self, _path: &[u8], _node: &Node) -> Result<bool> {
        Ok(false)
    }

    fn notes(&mut self, text: &str) -> Result<()> {
        let o = FullFileOptions::default().unix_permissions(0o444);
        self.zip.start_file(NOTES_FILE, o)?;
        self.zip.write_all(text.as_bytes())?;
        Ok(())
    }
}
