//! Deterministic mutation smoke test (the CI-runnable cousin of
//! fuzz/qcow2_open_read): valid small images made by qemu-img get random
//! header, L1, L2 and data bytes overwritten; opening and reading the result
//! may fail, but must never panic, hang or allocate without bound.
//!
//! One test function only: the allocation counter below is process-wide.

mod common;
use backchain::block::{Alloc, MemImage, ReadAt};
use backchain::qcow2::{self, Chain};
use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes and their peak, so the test can bound the memory
/// one open + read of a hostile image uses.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Mutated copies tried per seed image.
const MUTANTS_PER_IMAGE: u64 = 400;
/// Extra heap one open + read may use above the image bytes themselves: the
/// chain's caches are bounded (regions, L2 tables, decompressed clusters)
/// and the images here are tiny, so tens of MiB would already mean a bug.
const MAX_EXTRA_HEAP: usize = 48 << 20;
/// One open + read of a 1 MiB disk finishing later than this is a hang.
const MAX_CASE_TIME: Duration = Duration::from_secs(10);
/// Bounds on the reads per case, as in the fuzz target.
const MAX_READS: u64 = 48;
const MAX_STEPS: u32 = 2048;
const MAX_READ: u64 = 256 << 10;

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Opens an image from bytes and reads across it; returns whether it opened.
fn exercise(data: Vec<u8>) -> bool {
    let Ok(chain) = Chain::from_reader(Arc::new(MemImage(data))) else {
        return false;
    };
    let _ = qcow2::info(&chain);
    let size = chain.size();
    let cs = chain.cluster_size().bytes();
    let mut buf = vec![0u8; MAX_READ as usize];
    let mut reads = 0;
    let mut off = 0u64;
    while off < size && reads < MAX_READS / 4 {
        let n = (size - off).min(cs).min(MAX_READ) as usize;
        let _ = chain.read_exact_at(off, &mut buf[..n]);
        reads += 1;
        off += cs;
    }
    let (mut off, mut steps) = (0u64, 0);
    while off < size && reads < MAX_READS && steps < MAX_STEPS {
        steps += 1;
        let Ok(run) = chain.status(off, 64 * cs) else { break };
        let (zero, n) = (run.alloc != Alloc::Data, run.len);
        if n == 0 {
            break;
        }
        if !zero {
            let _ = chain.read_exact_at(off, &mut buf[..n.min(MAX_READ) as usize]);
            reads += 1;
        }
        off = off.saturating_add(n);
    }
    let tail = size.min(MAX_READ);
    let _ = chain.read_exact_at(size - tail, &mut buf[..tail as usize]);
    true
}

/// Byte ranges worth hitting in an image: its header, L1 table and L2 tables.
fn metadata_ranges(img: &[u8]) -> Vec<(usize, usize)> {
    let cs = 1usize << be32(img, 20);
    let l1_size = be32(img, 36) as usize;
    let l1_off = be64(img, 40) as usize;
    let mut r = vec![(0, 112.min(img.len())), (l1_off, l1_size * 8)];
    for i in 0..l1_size {
        let l2 = (be64(img, l1_off + i * 8) & 0x00ff_ffff_ffff_fe00) as usize;
        if l2 != 0 {
            r.push((l2, cs.min(img.len() - l2)));
        }
    }
    r
}

fn mutate(rng: &mut Rng, img: &[u8], ranges: &[(usize, usize)]) -> Vec<u8> {
    let mut m = img.to_vec();
    for _ in 0..1 + rng.below(4) {
        let (start, len) = ranges[rng.below(ranges.len() as u64) as usize];
        let at = start + rng.below(len as u64) as usize;
        match rng.below(4) {
            // One bit.
            0 => m[at] ^= 1 << rng.below(8),
            // One byte.
            1 => m[at] = rng.next() as u8,
            // A big-endian field: extreme values for offsets and sizes.
            2 => {
                let v: u64 = [0, u64::MAX, 1 << 63, 1 << 62 | 1, 1 << 55, rng.next()][rng.below(6) as usize];
                let end = (at + 8).min(m.len());
                m[at..end].copy_from_slice(&v.to_be_bytes()[..end - at]);
            }
            // An entry pointing at another place in the image.
            _ => {
                let target = (rng.below(m.len() as u64 * 2) & !0x1ff) | (rng.next() & (3 << 62));
                let end = (at + 8).min(m.len());
                m[at..end].copy_from_slice(&target.to_be_bytes()[..end - at]);
            }
        }
    }
    if rng.below(10) == 0 {
        m.truncate(rng.below(m.len() as u64) as usize);
    }
    m
}

fn seed_images(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let specs: [(&str, &str, &[&str]); 5] = [
        ("v2-512", "compat=0.10,cluster_size=512", &["write -P 0x11 0 1536", "write -P 0x22 300k 512"]),
        ("v3-4k-zero", "cluster_size=4096", &["write -P 0x33 0 8k", "write -z 16k 4k", "write -P 0x44 700k 4k"]),
        ("deflate", "cluster_size=4096", &["write -c -P 0x55 0 4k", "write -c -P 0x56 8k 4k", "write -P 0x57 12k 4k"]),
        ("zstd", "cluster_size=4096,compression_type=zstd", &["write -c -P 0x66 0 4k", "write -c -P 0x67 512k 4k"]),
        (
            "extl2",
            "cluster_size=16k,extended_l2=on",
            &["write -P 0x77 0 512", "write -z 1k 512", "write -P 0x78 20k 2k"],
        ),
    ];
    specs
        .iter()
        .map(|(name, opts, cmds)| {
            let p = dir.join(format!("{name}.qcow2"));
            qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, p.to_str().unwrap(), "1M"]);
            qemu_io(&p, "qcow2", &cmds.iter().map(|c| c.to_string()).collect::<Vec<_>>());
            (name.to_string(), std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn mutated_images_never_panic_hang_or_balloon() {
    let d = tempdir();
    let seeds = seed_images(d.path());
    let mut rng = Rng::new(0x5eed);
    for (name, img) in &seeds {
        // The unmutated image reads like qemu-img says it does.
        let chain = Chain::from_reader(Arc::new(MemImage(img.clone()))).unwrap();
        let mut ours = vec![0u8; chain.size() as usize];
        chain.read_exact_at(0, &mut ours).unwrap();
        assert!(ours == qemu_raw(&d.path().join(format!("{name}.qcow2")), d.path()), "{name}");

        let ranges = metadata_ranges(img);
        let mut opened = 0;
        for i in 0..MUTANTS_PER_IMAGE {
            let m = mutate(&mut rng, img, &ranges);
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let t = Instant::now();
            let copy = m.clone();
            let ok = std::panic::catch_unwind(move || exercise(copy));
            let took = t.elapsed();
            let extra = PEAK.load(Ordering::Relaxed).saturating_sub(base + m.len());
            let keep = |why: &str| {
                // Outside the test's temporary folder, which the panic removes.
                let dir = std::env::temp_dir().join("backchain-mutants");
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("{name}-{i}.qcow2"));
                std::fs::write(&path, &m).unwrap();
                panic!("{name} mutant {i}: {why}; kept at {}", path.display());
            };
            match ok {
                Err(_) => keep("panicked"),
                Ok(o) => opened += o as u32,
            }
            if took > MAX_CASE_TIME {
                keep(&format!("took {took:?}"));
            }
            if extra > MAX_EXTRA_HEAP {
                keep(&format!("used {extra} bytes of heap"));
            }
        }
        // The mutations must leave many images openable, or reads are never
        // exercised.
        assert!(opened as u64 > MUTANTS_PER_IMAGE / 5, "{name}: only {opened} mutants opened");
    }
}
