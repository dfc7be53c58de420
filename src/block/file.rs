use super::extent::LazyMap;
use super::{Extent, ReadAt, check_range};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A raw file or block device, read with `pread`.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    map: LazyMap,
}

impl RawFile {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        Self::from_file(file)
    }

    pub fn from_file(file: File) -> io::Result<Self> {
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "is a directory"));
        }
        // Block devices report a zero length in their metadata; seeking to the
        // end gives their real size.
        let size = if meta.len() == 0 && !meta.is_file() {
            use std::io::Seek;
            (&file).seek(io::SeekFrom::End(0))?
        } else {
            meta.len()
        };
        Ok(Self { file, size, map: LazyMap::default() })
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ReadAt for RawFile {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.file.read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.size
    }
    /// Data only, never a hole of a sparse file: reading a hole through a
    /// map allocates pages on some filesystems (tmpfs), which a restore
    /// must not do to the files it reads. Two `lseek`s per call.
    fn locate(&self, offset: u64, len: u64) -> Option<Extent> {
        use rustix::fs::{SeekFrom, seek};
        let len = len.min(self.size.checked_sub(offset)?);
        if seek(&self.file, SeekFrom::Data(offset)).ok()? != offset {
            return None;
        }
        let hole = seek(&self.file, SeekFrom::Hole(offset)).ok()?;
        self.map.locate(&self.file, offset, len.min(hole.checked_sub(offset)?))
    }
}
