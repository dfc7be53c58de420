//! Opens a QCOW2 image from arbitrary bytes and reads across it. Errors are
//! fine; a panic, a hang or an unbounded allocation is a bug.
#![no_main]

use backchain::block::{Alloc, MemImage, ReadAt};
use backchain::qcow2::{self, Chain};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

/// Reads per input, so one input cannot keep the target busy for long.
const MAX_READS: u64 = 48;
/// Zero-map steps per input: a sparse disk of petabytes must not be walked
/// to its end.
const MAX_STEPS: u32 = 2048;
/// Largest single read: a few clusters of the default size, so reads that
/// span cluster and region boundaries are exercised.
const MAX_READ: u64 = 256 << 10;

fuzz_target!(|data: &[u8]| {
    let Ok(chain) = Chain::from_reader(Arc::new(MemImage(data.to_vec()))) else {
        return;
    };
    let _ = qcow2::info(&chain);
    let size = chain.size();
    let cs = chain.cluster_size().bytes();
    if size == 0 {
        return;
    }
    let mut buf = vec![0u8; MAX_READ as usize];
    let mut reads = 0;
    // The first clusters, read whole and then across a cluster boundary.
    for c in 0..MAX_READS / 4 {
        let off = c * cs;
        if off >= size {
            break;
        }
        let n = cs.min(size - off).min(MAX_READ) as usize;
        let _ = chain.read_exact_at(off, &mut buf[..n]);
        // The zero-copy lookup resolves the same clusters (MemImage lends
        // nothing, but the cluster-run walk runs).
        let _ = chain.locate(off, MAX_READ);
        reads += 1;
    }
    if size > cs / 2 + 1 {
        let off = cs / 2;
        let n = (size - off).min(MAX_READ) as usize;
        let _ = chain.read_exact_at(off, &mut buf[..n]);
    }
    // Then the runs the zero map reports as data, wherever they lie in the
    // guest space: those are the clusters the image maps.
    let mut off = 0u64;
    let mut steps = 0;
    while off < size && reads < MAX_READS && steps < MAX_STEPS {
        steps += 1;
        let Ok(run) = chain.status(off, 64 * cs) else {
            break;
        };
        let (zero, n) = (run.alloc != Alloc::Data, run.len);
        if n == 0 {
            break;
        }
        if !zero {
            let len = n.min(MAX_READ) as usize;
            let _ = chain.read_exact_at(off, &mut buf[..len]);
            let _ = chain.locate(off, len as u64);
            reads += 1;
        }
        off = off.saturating_add(n);
    }
    // And the very end of the disk.
    let tail = size.min(MAX_READ);
    let _ = chain.read_exact_at(size - tail, &mut buf[..tail as usize]);
});
