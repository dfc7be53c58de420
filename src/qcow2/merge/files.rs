//! The file-level steps of a merge: the folded image taking the kept point's
//! name, a child re-parented onto its grandparent, an image removed. Each is
//! idempotent and leaves every name a reader may open valid at every instant.

use super::MergeError;
use crate::qcow2::consts::*;
use crate::qcow2::{Error, Header};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// Suffix of the temporary second name of a folded image.
const LINKING: &str = ".merging";
/// Offset of backing_file_offset (8 bytes) and backing_file_size (4 bytes):
/// switched together by one 12-byte write.
const BACKING_FIELDS_AT: u64 = 8;

/// fsync of a folder, so links, renames and removals in it are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), MergeError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| MergeError::io(dir, e))
}

fn same_file(a: &Path, b: &Path) -> io::Result<bool> {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => Ok(x.dev() == y.dev() && x.ino() == y.ino()),
        (Err(e), _) | (_, Err(e)) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(false),
    }
}

/// The folded image `from` becomes `to` (the kept point's name, replacing
/// its old image): a second name is linked and renamed over `to`
/// atomically, and only then is `from` removed. Until that removal both
/// names open the folded image, so a reader that read `to`'s old header
/// still finds the backing file it names, with the same bytes.
pub(super) fn replace(dir: &Path, from: &str, to: &str) -> Result<(), MergeError> {
    let (src, dst) = (dir.join(from), dir.join(to));
    let tmp = dir.join(format!("{to}{LINKING}"));
    let exists = |p: &Path| p.try_exists().map_err(|e| MergeError::io(p, e));
    if !exists(&src)? {
        // Renamed and removed by an earlier run: `to` must be there.
        if !exists(&dst)? {
            return Err(MergeError::Unsupported(format!("neither {} nor {} exists", src.display(), dst.display())));
        }
        return Ok(());
    }
    if !same_file(&src, &dst).map_err(|e| MergeError::io(&dst, e))? {
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(MergeError::io(&tmp, e)),
            _ => {}
        }
        fs::hard_link(&src, &tmp).map_err(|e| MergeError::io(&tmp, e))?;
        fs::rename(&tmp, &dst).map_err(|e| MergeError::io(&dst, e))?;
        sync_dir(dir)?;
    }
    remove(dir, from)
}

/// Removes an image (already gone is fine).
pub(super) fn remove(dir: &Path, name: &str) -> Result<(), MergeError> {
    let p = dir.join(name);
    match fs::remove_file(&p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(MergeError::io(&p, e)),
        _ => {}
    }
    sync_dir(dir)
}

/// Where the header extensions end ("Header extensions": a list closed by
/// an end marker, in the first cluster).
fn extensions_end(h: &Header, first: &[u8]) -> Result<u64, Error> {
    let mut at = if h.version == 2 { V2_HEADER_LEN } else { h.header_length } as usize;
    loop {
        let Some(ext) = first.get(at..at + 8) else {
            return Err(Error::corrupt(at as u64, "header extensions do not end in the first cluster"));
        };
        // OK to unwrap: `ext` is 8 bytes.
        let kind = u32::from_be_bytes(ext[..4].try_into().unwrap());
        let len = u32::from_be_bytes(ext[4..].try_into().unwrap()) as usize;
        at += 8;
        if kind == EXT_END {
            return Ok(at as u64);
        }
        at = at.saturating_add(len.div_ceil(8) * 8);
    }
}

/// Points `image` at backing file `backing`. The new name is written where
/// nothing reads it yet (after the current name, or between the extensions
/// and the current name), made durable, and then offset and length switch
/// in one 12-byte write: a reader sees the old name or the new one. Both
/// name images with the same bytes at this point of the merge.
pub(super) fn rebase(dir: &Path, image: &str, backing: &str) -> Result<(), MergeError> {
    let path = dir.join(image);
    let h = Header::read(&crate::block::RawFile::open(&path).map_err(|e| MergeError::io(&path, e))?)?;
    if h.backing_file.as_deref() == Some(backing) {
        return Ok(());
    }
    if backing.is_empty() || backing.len() > MAX_BACKING_NAME as usize {
        return Err(MergeError::Unsupported(format!("backing file name of {} bytes", backing.len())));
    }
    let f = fs::OpenOptions::new().read(true).write(true).open(&path).map_err(|e| MergeError::io(&path, e))?;
    let cs = h.cluster.bytes();
    let flen = f.metadata().map_err(|e| MergeError::io(&path, e))?.len();
    let mut first = vec![0u8; cs.min(flen) as usize];
    f.read_exact_at(&mut first, 0).map_err(Error::io(0))?;
    let ext_end = extensions_end(&h, &first)?;
    let mut off_len = [0u8; 12];
    off_len.copy_from_slice(&first[8..20]);
    let old_off = u64::from_be_bytes(off_len[..8].try_into().unwrap_or_default());
    let old_len = u32::from_be_bytes(off_len[8..].try_into().unwrap_or_default()) as u64;
    let len = backing.len() as u64;
    let after_old = (old_off + old_len).max(ext_end).next_multiple_of(8);
    let at = if after_old + len <= cs {
        after_old
    } else if old_off == 0 || ext_end + len <= old_off {
        ext_end
    } else {
        return Err(MergeError::Unsupported(format!(
            "no room in the first cluster of {} for a new backing name",
            path.display()
        )));
    };
    f.write_all_at(backing.as_bytes(), at).map_err(Error::io(at))?;
    f.sync_data().map_err(Error::io(at))?;
    let mut fields = [0u8; 12];
    fields[..8].copy_from_slice(&at.to_be_bytes());
    fields[8..].copy_from_slice(&(len as u32).to_be_bytes());
    f.write_all_at(&fields, BACKING_FIELDS_AT).map_err(Error::io(BACKING_FIELDS_AT))?;
    f.sync_all().map_err(Error::io(0))?;
    Ok(())
}
