//! The writer's data writes: gathered slices written with one `pwritev`
//! ([`Batch`]), and a background thread for buffered writes ([`Flusher`]).

use super::WRITES_QUEUED;
use crate::qcow2::error::{Error, Result};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Slices of callers' buffers bound for one contiguous host range.
#[derive(Default)]
pub(super) struct Batch<'a> {
    pub(super) at: u64,
    len: u64,
    pub(super) bufs: Vec<io::IoSlice<'a>>,
}

impl<'a> Batch<'a> {
    /// Where the next slice must go to join the batch (`None`: empty).
    pub(super) fn end(&self) -> Option<u64> {
        (!self.bufs.is_empty()).then_some(self.at + self.len)
    }

    pub(super) fn push(&mut self, data: &'a [u8]) {
        self.bufs.push(io::IoSlice::new(data));
        self.len += data.len() as u64;
    }

    /// Writes the batch (all of it: short writes continue) and empties it.
    pub(super) fn write(&mut self, file: &File) -> Result<()> {
        let mut at = self.at;
        let mut bufs = &mut self.bufs[..];
        while !bufs.is_empty() {
            let n = rustix::io::pwritev(file, bufs, at).map_err(|e| Error::io(at)(e.into()))?;
            if n == 0 {
                return Err(Error::io(at)(io::Error::from(io::ErrorKind::WriteZero)));
            }
            io::IoSlice::advance_slices(&mut bufs, n);
            at += n as u64;
        }
        self.bufs.clear();
        self.len = 0;
        Ok(())
    }
}

/// A thread that performs the writer's gathered data writes, so preparing
/// clusters and the kernel's copy of the previous batch overlap. Every write
/// comes back (with its buffer, for reuse) in order; the first error is
/// reported by the next call.
pub(super) struct Flusher {
    tx: std::sync::mpsc::SyncSender<(u64, Vec<u8>)>,
    done: std::sync::mpsc::Receiver<(u64, io::Result<Vec<u8>>)>,
    in_flight: usize,
}

impl Flusher {
    pub(super) fn start(file: File) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(WRITES_QUEUED);
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (at, mut buf) in rx {
                let r = file.write_all_at(&buf, at).map(|()| {
                    buf.clear();
                    buf
                });
                if done_tx.send((at, r)).is_err() {
                    return;
                }
            }
        });
        Self { tx, done, in_flight: 0 }
    }

    pub(super) fn send(&mut self, at: u64, buf: Vec<u8>) -> Result<()> {
        self.tx.send((at, buf)).map_err(|_| Error::io(at)(io::Error::other("background writer stopped")))?;
        self.in_flight += 1;
        Ok(())
    }

    /// A buffer back from a finished write, or a new one.
    pub(super) fn spare(&mut self) -> Result<Vec<u8>> {
        match self.done.try_recv() {
            Ok((at, r)) => {
                self.in_flight -= 1;
                r.map_err(Error::io(at))
            }
            Err(_) => Ok(Vec::new()),
        }
    }

    pub(super) fn wait_all(&mut self) -> Result<()> {
        while self.in_flight > 0 {
            let (at, r) = self.done.recv().map_err(|_| Error::io(0)(io::Error::other("background writer stopped")))?;
            self.in_flight -= 1;
            r.map_err(Error::io(at))?;
        }
        Ok(())
    }
}
