use super::extent::LazyMap;
use super::{Alloc, Extent, ReadAt, Run, check_range, whole_run};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

/// A raw file or block device, read with `pread`.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    map: LazyMap,
    /// The file's data runs, found once (see `locate`).
    data: OnceLock<Option<Vec<(u64, u64)>>>,
}

/// Most data runs of a sparse file remembered for `locate`; a file with
/// more is read, never mapped.
const MAX_DATA_RUNS: usize = 1 << 16;

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
        Ok(Self { file, size, map: LazyMap::default(), data: OnceLock::new() })
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
    /// must not do to the files it reads. The data runs are listed once
    /// (SEEK_DATA / SEEK_HOLE over the whole file): one SEEK_HOLE per call
    /// would scan to the next hole, through the whole of a dense image.
    fn locate(&self, offset: u64, len: u64) -> Option<Extent> {
        let len = len.min(self.size.checked_sub(offset)?);
        let runs = self.data.get_or_init(|| data_runs(&self.file, self.size)).as_ref()?;
        let i = runs.partition_point(|&(_, end)| end <= offset);
        let &(start, end) = runs.get(i)?;
        if start > offset {
            return None;
        }
        self.map.locate(&self.file, offset, len.min(end - offset))
    }
    /// Holes of a sparse file are `Unallocated` (SEEK_DATA / SEEK_HOLE, as
    /// `qemu-img map` finds them); everything else, and every file whose
    /// filesystem cannot tell, is data.
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        let run = whole_run(offset, len, self.size, Alloc::Data)?;
        Ok(seek_run(&self.file, run.offset, run.end()).unwrap_or(run))
    }
}

/// The run of data or hole at `off`, up to `end`, by SEEK_DATA / SEEK_HOLE
/// (`off < end`); `None` when the filesystem or device cannot tell.
fn seek_run(file: &File, off: u64, end: u64) -> Option<Run> {
    use rustix::fs::{SeekFrom, seek};
    let run = |stop: u64, alloc| Some(Run { offset: off, len: stop.clamp(off + 1, end) - off, alloc });
    match seek(file, SeekFrom::Data(off)) {
        // Data at `off`: it lasts until the next hole (the end of the file
        // counts as one).
        Ok(d) if d <= off => run(seek(file, SeekFrom::Hole(off)).ok()?, Alloc::Data),
        Ok(d) => run(d, Alloc::Unallocated),
        // No data at or after `off`.
        Err(e) if e == rustix::io::Errno::NXIO => run(end, Alloc::Unallocated),
        Err(_) => None,
    }
}

/// `[start, end)` of every data run of `file`, or `None` when there are
/// more than `MAX_DATA_RUNS` or the filesystem cannot tell (then all reads
/// go through `pread`). A filesystem without hole support reports one run.
fn data_runs(file: &File, size: u64) -> Option<Vec<(u64, u64)>> {
    let mut runs = Vec::new();
    let mut pos = 0;
    while pos < size {
        let run = seek_run(file, pos, size)?;
        if run.alloc == Alloc::Data {
            if runs.len() == MAX_DATA_RUNS {
                return None;
            }
            runs.push((run.offset, run.end()));
        }
        pos = run.end();
    }
    Some(runs)
}
