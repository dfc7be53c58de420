//! [`NbdDisk`]: an NBD export as a [`ReadAt`], for the sync readers of the
//! backup pipeline. It owns a small tokio runtime; every thread that reads
//! blocks on its own request while the connection carries all of them
//! concurrently (the reply reader routes by cookie). Big reads are split at
//! the server's maximum block size and sent at once, so one caller keeps
//! several requests in flight too.
//!
//! When the server says the export may be served over several connections
//! (CAN_MULTI_CONN: every connection sees the same data), up to
//! [`MAX_CONNECTIONS`] are opened and reads are spread over them: a server
//! that handles each connection on its own thread (nbdkit, qemu-nbd with
//! `-e N`) then reads in parallel, and one slow TCP stream no longer bounds
//! the copy. Without it (qemu-nbd's default `-e 1` would not even accept a
//! second connection) one connection carries everything.

use super::client::{Client, Endpoint, Extent, Options};
use super::consts::*;
use super::error::{Error, Result};
use super::uri::NbdUri;
use crate::block::{Alloc, ReadAt, Run, check_range, whole_run};
use std::io;
use std::ops::Range;

/// The largest BLOCK_STATUS request: lengths are u32, so disks over 4 GiB
/// always take several; 2 GiB keeps every server's own clamping out of play.
pub const MAX_STATUS_REQUEST: u32 = 1 << 31;
/// Merged changed extents one bitmap may report (16 bytes each, so 64 MiB):
/// far above what any real incremental needs (a 1 TiB disk dirty in every
/// other 64 KiB cluster has 8 Mi extents unmerged, but then a full read is
/// the better plan), and a bound a hostile server cannot push past.
pub const MAX_CHANGED_EXTENTS: usize = 1 << 22;

/// Connections one disk opens at most when the server allows several.
pub const MAX_CONNECTIONS: usize = 4;
/// The largest read request when several connections share a read, so a
/// pipeline chunk (4 MiB) spreads over all of them.
const MULTI_CONN_PIECE: u32 = 1 << 20;
/// How long an extra connection may take to negotiate; one that does not
/// is simply not used.
const EXTRA_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An NBD export opened for reading.
pub struct NbdDisk {
    rt: Option<tokio::runtime::Runtime>,
    /// The first connection (block status, bitmaps) and the extra ones
    /// CAN_MULTI_CONN allows (reads only).
    clients: Vec<Client>,
    /// Round-robin position over `clients` for read requests.
    next: std::sync::atomic::AtomicUsize,
    alloc: Option<u32>,
    bitmap: Option<(String, Option<u32>)>,
    /// The last `base:allocation` answer (see `status`).
    extents: std::sync::Mutex<Vec<Extent>>,
}

impl NbdDisk {
    /// Connects to a URI's export, asking for `base:allocation` and, with
    /// `bitmap=NAME`, for `qemu:dirty-bitmap:NAME`.
    pub fn open(uri: &NbdUri) -> Result<NbdDisk> {
        let mut opts = Options::new(&uri.export);
        if let Some(b) = &uri.bitmap {
            opts.contexts.push(format!("{CONTEXT_DIRTY_BITMAP_PREFIX}{b}"));
        }
        NbdDisk::connect(&uri.endpoint, &opts, uri.bitmap.clone())
    }

    /// Connects with explicit options; `bitmap` names the dirty bitmap
    /// whose context `opts.contexts` asks for, if any.
    pub fn connect(endpoint: &Endpoint, opts: &Options, bitmap: Option<String>) -> Result<NbdDisk> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("nbd-client")
            .enable_io()
            .enable_time()
            .build()?;
        let client = rt.block_on(Client::connect(endpoint, opts))?;
        let info = client.info();
        let alloc = info.context_id(CONTEXT_BASE_ALLOCATION);
        let bitmap = bitmap.map(|b| {
            let id = info.context_id(&format!("{CONTEXT_DIRTY_BITMAP_PREFIX}{b}"));
            (b, id)
        });
        let mut clients = vec![client];
        if clients[0].info().can_multi_conn() {
            let extra = rt.block_on(extra_connections(endpoint, opts, clients[0].info()));
            clients.extend(extra);
        }
        Ok(NbdDisk { rt: Some(rt), clients, next: Default::default(), alloc, bitmap, extents: Default::default() })
    }

    /// The first connection: the one block status and bitmaps use.
    pub fn client(&self) -> &Client {
        &self.clients[0]
    }

    /// How many connections carry the reads.
    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// Whether the server granted the dirty bitmap's context. When it did
    /// not (missing bitmap, wrong name, inconsistent after a crash), the
    /// bitmap says nothing: never read that as "nothing changed".
    pub fn bitmap_granted(&self) -> bool {
        self.bitmap.as_ref().is_some_and(|(_, id)| id.is_some())
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("runtime lives until drop").block_on(f)
    }

    /// The byte ranges the dirty bitmap marks as changed over the whole
    /// disk: sorted, merged, at most [`MAX_CHANGED_EXTENTS`]. An error when
    /// the bitmap context was not asked for or not granted.
    pub fn changed_extents(&self) -> Result<Vec<Range<u64>>> {
        let id = match &self.bitmap {
            Some((_, Some(id))) => *id,
            Some((name, None)) => return Err(Error::Unsupported(format!("dirty bitmap {name:?} was not granted"))),
            None => return Err(Error::Range("no bitmap was asked for".into())),
        };
        let size = self.size();
        let min = u64::from(self.client().info().block.minimum);
        let mut out: Vec<Range<u64>> = Vec::new();
        let mut at = 0;
        while at < size {
            let start = at - at % min;
            let len = (size - start).min(u64::from(MAX_STATUS_REQUEST)) as u32;
            let extents = self.block_on(self.client().block_status(id, start, len))?;
            for e in extents.iter().filter(|e| e.flags & STATE_DIRTY != 0) {
                match out.last_mut() {
                    Some(last) if last.end >= e.offset => last.end = last.end.max(e.offset + e.len),
                    _ => out.push(e.offset..e.offset + e.len),
                }
            }
            if out.len() > MAX_CHANGED_EXTENTS {
                return Err(Error::Corrupt(format!("more than {MAX_CHANGED_EXTENTS} changed extents")));
            }
            // block_status never returns nothing, and each extent is non-empty.
            at = extents.last().map_or(size, |e| e.offset + e.len).max(at + 1);
        }
        Ok(out)
    }

    /// The read requests covering `[offset, end)`: aligned to the minimum
    /// block size, at most the maximum each.
    fn pieces(&self, offset: u64, end: u64) -> Vec<(u64, u32)> {
        let b = self.client().info().block;
        let mut max = b.max_request();
        if self.clients.len() > 1 {
            max = max.min(MULTI_CONN_PIECE.max(b.minimum));
        }
        let (min, max) = (u64::from(b.minimum), u64::from(max));
        let size = self.size();
        let mut out = Vec::new();
        let mut at = offset - offset % min;
        while at < end {
            let to = end.min(at + max).div_ceil(min).saturating_mul(min).min(size);
            out.push((at, (to - at) as u32));
            at = to;
        }
        out
    }
}

/// Up to [`MAX_CONNECTIONS`]` - 1` more connections to the export `first`
/// negotiated, opened together. One that fails, stalls or negotiates a
/// different export (size, flags, block sizes) is dropped: extra
/// connections only ever speed reads up.
async fn extra_connections(endpoint: &Endpoint, opts: &Options, first: &super::client::Negotiated) -> Vec<Client> {
    let opts = Options {
        contexts: Vec::new(),
        connect_timeout: opts.connect_timeout.min(EXTRA_CONNECT_TIMEOUT),
        ..opts.clone()
    };
    let tries = (1..MAX_CONNECTIONS).map(|_| Client::connect(endpoint, &opts));
    futures_util::future::join_all(tries)
        .await
        .into_iter()
        .filter_map(|c| c.ok())
        .filter(|c| {
            let i = c.info();
            i.size == first.size && i.flags == first.flags && i.block == first.block && i.structured == first.structured
        })
        .collect()
}

/// An NBD failure as the io error a [`ReadAt`] gives: the whole message,
/// but no chain of inner errors and never `BrokenPipe`. A server that went
/// away (its EPIPE, or a closed connection) must not read as "our own
/// output was closed", which command-line tools end on quietly.
pub fn io_error(e: Error) -> io::Error {
    let e = io::Error::from(e);
    let kind = match e.kind() {
        io::ErrorKind::BrokenPipe => io::ErrorKind::ConnectionAborted,
        k => k,
    };
    io::Error::new(kind, e.to_string())
}

/// How base:allocation flags read as [`Alloc`]. A hole that does not read
/// as zeros (a backing file shows through) must be read: data.
pub fn alloc_of(flags: u32) -> Alloc {
    match flags & (STATE_HOLE | STATE_ZERO) {
        f if f == STATE_HOLE | STATE_ZERO => Alloc::Unallocated,
        STATE_ZERO => Alloc::Zero,
        _ => Alloc::Data,
    }
}

impl ReadAt for NbdDisk {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size())?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let pieces = self.pieces(offset, end);
        let first = self.next.fetch_add(pieces.len(), std::sync::atomic::Ordering::Relaxed);
        let n = self.clients.len();
        let reads = pieces.iter().enumerate().map(|(i, &(at, len))| self.clients[(first + i) % n].read(at, len));
        let data = self.block_on(futures_util::future::try_join_all(reads)).map_err(io_error)?;
        for ((at, _), d) in pieces.iter().zip(&data) {
            let from = offset.max(*at);
            let to = end.min(at + d.len() as u64);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&d[(from - at) as usize..(to - at) as usize]);
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.client().info().size
    }

    /// One run from the last BLOCK_STATUS answer, which is kept: a walk
    /// of a fragmented disk asks for every run in turn, and asking the
    /// server each time (for the rest of the disk, which it maps again)
    /// made a walk quadratic in its runs.
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        let first = whole_run(offset, len, self.size(), Alloc::Data)?;
        let Some(id) = self.alloc else { return Ok(first) };
        let mut cache = crate::util::lock(&self.extents);
        let cached = cache.first().is_some_and(|e| e.offset <= offset)
            && cache.last().is_some_and(|e| offset < e.offset + e.len);
        if !cached {
            *cache = self.fetch_status(id, offset)?;
        }
        let i = cache.partition_point(|e| e.offset + e.len <= offset);
        let alloc = alloc_of(cache[i].flags);
        let run_end = cache[i..]
            .iter()
            .take_while(|e| alloc_of(e.flags) == alloc)
            .last()
            .map_or(offset + 1, |e| e.offset + e.len);
        Ok(Run { offset, len: run_end.min(first.end()) - offset, alloc })
    }
}

impl NbdDisk {
    /// The extents of `base:allocation` (context `id`) from the one that
    /// holds `offset` on, as far as one answer for the rest of the disk
    /// (at most 2 GiB) goes. Never empty.
    fn fetch_status(&self, id: u32, offset: u64) -> io::Result<Vec<Extent>> {
        let min = u64::from(self.client().info().block.minimum);
        let mut at = offset - offset % min;
        loop {
            let n = (self.size() - at).min(u64::from(MAX_STATUS_REQUEST)) as u32;
            let mut extents = self.block_on(self.client().block_status(id, at, n)).map_err(io_error)?;
            match extents.iter().position(|e| e.offset + e.len > offset) {
                Some(i) => {
                    extents.drain(..i);
                    return Ok(extents);
                }
                // Every extent ended before `offset`: ask again from their end.
                None => at = extents.last().map_or(at + 1, |e| e.offset + e.len),
            }
        }
    }
}

impl Drop for NbdDisk {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Best effort: a clean NBD_CMD_DISC tells the server we are done.
            // Blocking on it is only allowed outside another runtime.
            if tokio::runtime::Handle::try_current().is_err() {
                let all = futures_util::future::join_all(self.clients.iter().map(Client::disconnect));
                let _ = rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(2), all).await });
            }
            // Never blocks, so dropping inside an async context is safe too.
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_flags_map_to_alloc() {
        assert_eq!(alloc_of(0), Alloc::Data);
        assert_eq!(alloc_of(STATE_ZERO), Alloc::Zero);
        assert_eq!(alloc_of(STATE_HOLE | STATE_ZERO), Alloc::Unallocated);
        assert_eq!(alloc_of(STATE_HOLE), Alloc::Data);
    }
}
