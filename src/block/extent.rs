//! Zero-copy access to stored bytes.
//!
//! Serving a restored file means moving many MiB from an image file to a
//! FUSE reply or a socket. Read through a buffer, that is one extra copy of
//! every byte, which cost more than half of the server's time in
//! bench/run.py (fuse-read, http-download). When a range of a file is stored
//! verbatim in one host file (an uncompressed QCOW2 cluster run, a raw
//! image), every layer can say where ([`super::ReadAt::locate`]), and the
//! server hands out the bytes of a read-only memory map of that file.
//!
//! A layer that transforms bytes (decompression, zero clusters, journal
//! replay, bytes past a valid-data length) never locates them: the default
//! is "read them".

use std::fs::File;
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

/// `len` bytes of a mapped host file, from `start`.
#[derive(Clone)]
pub struct Extent {
    map: Arc<Mapped>,
    start: usize,
    len: usize,
}

/// A file's map and the file itself (to check its size before lending).
#[derive(Debug)]
struct Mapped {
    map: Mmap,
    file: File,
}

impl Extent {
    /// The bytes at `[offset, offset + len)` of `map`, if they lie inside it.
    fn new(map: &Arc<Mapped>, offset: u64, len: u64) -> Option<Extent> {
        let start = usize::try_from(offset).ok()?;
        let len = usize::try_from(len).ok()?;
        let end = start.checked_add(len)?;
        (len > 0 && end <= map.map.len()).then(|| Extent { map: Arc::clone(map), start, len })
    }

    pub fn len(&self) -> u64 {
        self.len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map.map[self.start..self.start + self.len]
    }

    /// Whether the file still holds the extent's bytes. Checked right
    /// before the bytes are handed out: a file cut short under its map
    /// would otherwise raise SIGBUS on the lost pages; refused, the caller
    /// reads instead and gets a clean read error. (A truncation in the few
    /// microseconds between this check and the copy is not covered; image
    /// files are never truncated by backchain itself.)
    pub fn is_backed(&self) -> bool {
        let end = (self.start + self.len) as u64;
        self.map.file.metadata().is_ok_and(|m| m.len() >= end)
    }
}

impl AsRef<[u8]> for Extent {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl std::fmt::Debug for Extent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Extent({} bytes at {})", self.len, self.start)
    }
}

/// A file's read-only map, made on first use; `None` when the file cannot
/// be mapped (not a regular file, empty, or mmap refused), and then callers
/// read instead. The extents it gives may cover holes of a sparse file:
/// callers must not touch those bytes (on tmpfs a read through the map
/// allocates a page); `RawFile::locate` only gives data.
#[derive(Debug, Default)]
pub struct LazyMap(OnceLock<Option<Arc<Mapped>>>);

impl LazyMap {
    /// Up to `len` bytes of `file` (always the same file) from `offset`.
    pub fn locate(&self, file: &File, offset: u64, len: u64) -> Option<Extent> {
        let map = self.0.get_or_init(|| map_file(file)).as_ref()?;
        let avail = (map.map.len() as u64).checked_sub(offset)?;
        Extent::new(map, offset, len.min(avail))
    }
}

fn map_file(file: &File) -> Option<Arc<Mapped>> {
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() == 0 {
        return None;
    }
    // SAFETY: the map is read-only and only ever read as bytes. The one
    // hazard of a file map is another process truncating the file while it
    // is mapped (the next access to the lost pages raises SIGBUS). Image
    // files in a repository are written once and renamed into place, never
    // changed or truncated afterwards; the same holds for any image a user
    // mounts: changing it under a running restore would already serve
    // inconsistent data. Git maps its pack files on the same terms.
    let map = unsafe { Mmap::map(file) }.ok()?;
    // Sequential serving: let the kernel read ahead within the map.
    let _ = map.advise(memmap2::Advice::Sequential);
    Some(Arc::new(Mapped { map, file: file.try_clone().ok()? }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn locates_inside_the_file_only() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&(0..=255u8).cycle().take(10_000).collect::<Vec<_>>()).unwrap();
        let m = LazyMap::default();
        let e = m.locate(&f, 300, 10).unwrap();
        assert_eq!(e.bytes(), &(300..310).map(|i| (i % 256) as u8).collect::<Vec<_>>()[..]);
        // Cut at the end of the file; nothing past it.
        assert_eq!(m.locate(&f, 9_990, 100).unwrap().len(), 10);
        assert!(m.locate(&f, 10_000, 1).is_none());
        assert!(m.locate(&f, u64::MAX, 1).is_none());
        assert!(m.locate(&f, 5, 0).is_none());
        assert!(e.is_backed());
    }

    #[test]
    fn a_file_cut_short_under_the_map_is_refused() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![1u8; 1 << 20]).unwrap();
        let m = LazyMap::default();
        let e = m.locate(&f, 600_000, 100_000).unwrap();
        f.set_len(4096).unwrap();
        assert!(!e.is_backed(), "pages past the new end of the file");
        assert!(m.locate(&f, 0, 100).unwrap().is_backed());
    }

    /// A restore never reads a hole of a sparse image through the map (on
    /// tmpfs that would allocate pages in the user's file).
    #[test]
    fn raw_files_lend_data_never_holes() {
        use crate::block::{RawFile, ReadAt};
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse.raw");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[9u8; 1 << 20], 2 << 20).unwrap();
        drop(f);
        let raw = RawFile::open(&p).unwrap();
        let e = raw.locate(2 << 20, 4 << 20).unwrap();
        assert_eq!(e.bytes(), &[9u8; 1 << 20][..], "data up to the hole after it");
        // Holes, if the filesystem reports them (all but ancient ones do).
        if rustix::fs::seek(raw.file(), rustix::fs::SeekFrom::Data(0)).ok() == Some(2 << 20) {
            assert!(raw.locate(0, 4096).is_none());
            assert!(raw.locate(4 << 20, 4096).is_none());
        }
    }

    #[test]
    fn empty_files_are_not_mapped() {
        let f = tempfile::tempfile().unwrap();
        assert!(LazyMap::default().locate(&f, 0, 1).is_none());
    }
}
