//! One pushed disk as an NBD export: the agent reads the disk as the
//! parent restore point shows it (zeros for a full) and its writes go into
//! the new image through the image sink. Every call takes the sink's lock:
//! the sink is one QCOW2 writer, and requests of several connections
//! (CAN_MULTI_CONN) meet there in one order, so a FLUSH covers every write
//! answered before it, whichever connection sent it.

use crate::block::Run;
use crate::engine::EngineError;
use crate::engine::sink::ImageSink;
use crate::nbd::consts::MAX_PAYLOAD;
use crate::nbd::option::BlockSize;
use crate::nbd::server::{Export, Writable};
use crate::util::lock;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// When the agent last wrote, shared with the job's idle timeout.
pub type Activity = Arc<Mutex<Instant>>;

/// The push target of one disk.
pub struct PushExport {
    size: u64,
    cluster: u64,
    /// `None` once the disk is completed or the job aborted: requests then
    /// fail with EIO (the server's table forgets the name at the same time).
    sink: Mutex<Option<ImageSink>>,
    written: AtomicU64,
    zeroed: AtomicU64,
    activity: Activity,
}

impl PushExport {
    pub fn new(sink: ImageSink, size: u64, activity: Activity) -> Self {
        let cluster = sink.cluster_size();
        PushExport {
            size,
            cluster,
            sink: Mutex::new(Some(sink)),
            written: AtomicU64::new(0),
            zeroed: AtomicU64::new(0),
            activity,
        }
    }

    /// Takes the sink out (waiting for a request being served): no request
    /// reaches it after this.
    pub fn close(&self) -> Option<ImageSink> {
        lock(&self.sink).take()
    }

    /// Bytes the agent sent in WRITEs.
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Bytes the agent zeroed or trimmed.
    pub fn bytes_zeroed(&self) -> u64 {
        self.zeroed.load(Ordering::Relaxed)
    }

    fn with<T>(&self, f: impl FnOnce(&mut ImageSink) -> Result<T, EngineError>) -> io::Result<T> {
        let mut guard = lock(&self.sink);
        let sink = guard.as_mut().ok_or_else(|| io::Error::other("the push target is closed"))?;
        f(sink).map_err(to_io)
    }

    fn wrote(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        *lock(&self.activity) = Instant::now();
    }
}

/// An engine error as the io error the NBD server maps to an errno: a
/// request the sink refuses is EINVAL, a full disk on the hub ENOSPC (the
/// kind of the innermost io error), anything else EIO.
fn to_io(e: EngineError) -> io::Error {
    if let EngineError::BadRequest(m) = &e {
        return io::Error::new(io::ErrorKind::InvalidInput, m.clone());
    }
    let mut kind = io::ErrorKind::Other;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(ioe) = c.downcast_ref::<io::Error>() {
            kind = ioe.kind();
        }
        cause = c.source();
    }
    io::Error::new(kind, e.to_string())
}

impl Export for PushExport {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(|s| s.read_at(offset, buf))
    }
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        self.with(|s| s.status(offset, len))
    }
    /// Whole clusters are preferred: a smaller write reads the rest of its
    /// cluster from the parent first.
    fn block_size(&self) -> BlockSize {
        BlockSize { minimum: 1, preferred: self.cluster as u32, maximum: MAX_PAYLOAD }
    }
    fn writer(&self) -> Option<&dyn Writable> {
        Some(self)
    }
}

impl Writable for PushExport {
    fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.with(|s| {
            s.write_at(offset, data)?;
            if fua { s.flush() } else { Ok(()) }
        })?;
        self.wrote(&self.written, data.len() as u64);
        Ok(())
    }
    /// Zeros never leave a hole the parent would show through: `punch`
    /// makes no difference, both become zero clusters where needed.
    fn write_zeroes(&self, offset: u64, len: u64, _punch: bool, fua: bool) -> io::Result<()> {
        self.with(|s| {
            s.zero_range(offset, len)?;
            if fua { s.flush() } else { Ok(()) }
        })?;
        self.wrote(&self.zeroed, len);
        Ok(())
    }
    /// A trimmed range reads as zeros afterwards (NBD allows any content).
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.write_zeroes(offset, len, true, fua)
    }
    fn flush(&self) -> io::Result<()> {
        self.with(|s| s.flush())
    }
}
