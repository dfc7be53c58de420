//! Recycled chunk buffers for streamed response bodies.
//!
//! A fresh 1 MiB buffer per chunk costs the kernel a page fault and a
//! zeroed page for every 4 KiB of it, which took more server time than the
//! copy of the data itself (bench/run.py http-download). Each streamed body
//! gets a small pool instead: a chunk handed to hyper as [`Bytes`] returns its
//! buffer to the pool when hyper has written it, and the producer takes the
//! next one from there. The pool never holds more than `keep` idle buffers;
//! the bounded channel between producer and socket bounds the busy ones.

use crate::util::lock;
use axum::body::Bytes;
use std::sync::{Arc, Mutex};

pub struct ChunkPool {
    free: Mutex<Vec<Vec<u8>>>,
    size: usize,
    keep: usize,
}

impl ChunkPool {
    /// A pool of buffers of `size` bytes that keeps at most `keep` idle ones.
    pub fn new(size: usize, keep: usize) -> Arc<ChunkPool> {
        Arc::new(ChunkPool { free: Mutex::new(Vec::new()), size, keep })
    }

    /// A buffer of exactly `size` initialised bytes (zeroed only when it is
    /// new; a recycled one holds an earlier chunk's bytes).
    pub fn take(&self) -> Vec<u8> {
        let recycled = lock(&self.free).pop();
        recycled.unwrap_or_else(|| vec![0; self.size])
    }

    /// The first `len` bytes of `buf` as a chunk; `buf` comes back to the
    /// pool when the chunk is dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>, len: usize) -> Bytes {
        let len = len.min(buf.len());
        Bytes::from_owner(Chunk { buf, len, pool: Arc::clone(self) })
    }
}

struct Chunk {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<ChunkPool>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() == self.pool.size {
            let mut free = lock(&self.pool.free);
            if free.len() < self.pool.keep {
                free.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_after_the_chunk_is_dropped() {
        let pool = ChunkPool::new(8, 2);
        let mut a = pool.take();
        a[..3].copy_from_slice(b"abc");
        let ptr = a.as_ptr();
        let chunk = pool.freeze(a, 3);
        assert_eq!(&chunk[..], b"abc");
        // A slice of the chunk keeps the buffer alive.
        let part = chunk.slice(1..);
        drop(chunk);
        assert!(pool.free.lock().unwrap().is_empty());
        drop(part);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr, "the same buffer is reused");
        assert_eq!(b.len(), 8);
    }

    #[test]
    fn the_pool_keeps_at_most_keep_idle_buffers() {
        let pool = ChunkPool::new(4, 1);
        let chunks: Vec<Bytes> = (0..3).map(|_| pool.freeze(pool.take(), 4)).collect();
        drop(chunks);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
    }
}
