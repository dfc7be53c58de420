//! A mutation fuzzer for stable Rust: the same entry points as the
//! libFuzzer targets, fed seeded random mutations of a seed corpus for a
//! bounded time. It has no coverage feedback, so it finds less than
//! `cargo fuzz` per hour; it exists because cargo-fuzz needs nightly and
//! the parsers must still be run against hostile input for real minutes.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --bin mutate -- xfs_open_walk --seconds 600
//! cargo run --manifest-path fuzz/Cargo.toml --bin mutate -- xfs_open_walk --replay crash-FILE
//! ```
//!
//! A panic, an input slower than `--timeout` seconds, or one that makes the
//! process hold more than `--memory` MiB of heap is written to
//! `fuzz/artifacts/TARGET/` and ends the run with a non-zero exit. Each
//! input is derived from (`--seed`, its number) alone, so a run repeats.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Entry = fn(&[u8]);

/// The heap, counted: an input that makes the parser hold more than
/// `LIMIT` bytes at once is an unbounded allocation. The input being run is
/// published in `INPUT` so that the allocator can save it before exiting.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static INPUT: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());
static TARGET: Mutex<String> = Mutex::new(String::new());
static SAVING: AtomicBool = AtomicBool::new(false);

// SAFETY: every call is passed to the system allocator unchanged; only a
// counter is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        if live > LIMIT.load(Ordering::Relaxed) && !SAVING.swap(true, Ordering::Relaxed) {
            out_of_memory(layout.size());
        }
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Saves the input being run and ends the process (called once: `SAVING`).
fn out_of_memory(size: usize) -> ! {
    LIMIT.store(usize::MAX, Ordering::Relaxed); // Saving allocates a little.
    let input = INPUT.load(Ordering::Relaxed);
    let target = TARGET.lock().map(|t| t.clone()).unwrap_or_default();
    if !input.is_null() {
        // SAFETY: the main loop keeps the published input alive while it runs.
        let data = unsafe { &*input };
        eprintln!("OUT OF MEMORY (asking for {size} bytes): input saved as {}", save(&target, "oom", data).display());
    }
    std::process::exit(71)
}

/// Every libFuzzer target of fuzz/fuzz_targets that takes raw bytes.
const TARGETS: &[(&str, Entry)] = &[
    ("partition_table", backchain::volume::table::fuzz_entry),
    ("ext4_open_walk", backchain::volume::fs::ext4::fuzz_open_walk),
    ("ntfs_open_walk", backchain::volume::fs::ntfs::fuzz_open_walk),
    ("fat_open_walk", backchain::volume::fs::fat::fuzz_open_walk),
    ("xfs_open_walk", backchain::volume::fs::xfs::fuzz_open_walk),
    ("btrfs_open_walk", backchain::volume::fs::btrfs::fuzz_open_walk),
    ("btrfs_decompress", backchain::volume::fs::btrfs::fuzz_decompress),
    ("lvm_metadata", backchain::volume::lvm::fuzz_metadata),
    ("lvm_pv", backchain::volume::lvm::fuzz_pv),
    ("calendar_parse", backchain::schedule::calendar::fuzz_entry),
    ("digest_map", backchain::engine::digests::fuzz_entry),
    ("nbd_option", backchain::nbd::option::fuzz_entry),
    ("nbd_request", backchain::nbd::request::fuzz_entry),
];

/// Values that sit on the edges parsers get wrong (lengths, counts, signs).
const INTERESTING: &[u64] = &[0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x1_0000, 0x7fff_ffff, 0xffff_ffff];

/// xorshift64*: small, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// One seed and where its non-zero 512-byte blocks are: filesystem images
/// are mostly zeros, and mutating zeros of unused space finds nothing.
struct Seed {
    data: Vec<u8>,
    busy: Vec<usize>,
}

impl Seed {
    fn new(data: Vec<u8>) -> Self {
        let busy = data.chunks(512).enumerate().filter(|(_, c)| c.iter().any(|&b| b != 0)).map(|(k, _)| k).collect();
        Seed { data, busy }
    }

    /// A position to mutate: mostly inside a block that holds something.
    fn spot(&self, rng: &mut Rng) -> usize {
        if self.busy.is_empty() || rng.below(8) == 0 {
            return rng.below(self.data.len());
        }
        (self.busy[rng.below(self.busy.len())] * 512 + rng.below(512)).min(self.data.len() - 1)
    }
}

/// Input number `n` of a run: a seed with 1 to 16 mutations.
fn input(seeds: &[Seed], seed: u64, n: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let s = &seeds[rng.below(seeds.len())];
    let mut d = s.data.clone();
    if d.is_empty() {
        d.push(0);
    }
    for _ in 0..1 + rng.below(16) {
        let at = s.spot(&mut rng).min(d.len() - 1);
        match rng.below(8) {
            0 => d[at] ^= 1 << rng.below(8),
            1 | 2 => d[at] = rng.next() as u8,
            3 => {
                // An edge value, 1 to 8 bytes wide, either byte order.
                let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let w = [1, 2, 4, 8][rng.below(4)];
                let end = (at + w).min(d.len());
                let mut bytes = v[..end - at].to_vec();
                if rng.below(2) == 0 {
                    bytes.reverse();
                }
                d[at..end].copy_from_slice(&bytes);
            }
            4 => {
                // A run of bytes copied from elsewhere in the input.
                let len = 1 + rng.below(64);
                let from = rng.below(d.len());
                let len = len.min(d.len() - from).min(d.len() - at);
                d.copy_within(from..from + len, at);
            }
            5 => d[at] = d[at].wrapping_add(rng.below(5) as u8).wrapping_sub(2),
            6 if rng.below(4) == 0 => d.truncate(rng.below(d.len()).max(1)),
            _ => d[at] = 0,
        }
    }
    d
}

fn usage() -> ! {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
    eprintln!("usage: mutate TARGET [--seconds N] [--seed N] [--corpus DIR] [--timeout S] [--memory MIB] [--replay FILE]...");
    eprintln!("targets: {}", names.join(" "));
    std::process::exit(2)
}

struct Options {
    target: String,
    seconds: u64,
    seed: u64,
    corpus: PathBuf,
    timeout: u64,
    memory_mib: usize,
    replay: Vec<PathBuf>,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| usage());
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        corpus: here.join("corpus").join(&target),
        target,
        seconds: 60,
        seed: 1,
        timeout: 10,
        memory_mib: 2048,
        replay: Vec::new(),
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--seed" => o.seed = value().parse().unwrap_or_else(|_| usage()),
            "--timeout" => o.timeout = value().parse().unwrap_or_else(|_| usage()),
            "--memory" => o.memory_mib = value().parse().unwrap_or_else(|_| usage()),
            "--corpus" => o.corpus = value().into(),
            "--replay" => o.replay.push(value().into()),
            _ => usage(),
        }
    }
    o
}

fn save(target: &str, kind: &str, data: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts").join(target);
    std::fs::create_dir_all(&dir).expect("artifacts folder");
    let sum = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let path = dir.join(format!("{kind}-{sum:016x}"));
    std::fs::write(&path, data).expect("write artifact");
    path
}

fn main() {
    let o = options();
    let Some(&(_, entry)) = TARGETS.iter().find(|t| t.0 == o.target) else { usage() };
    if !o.replay.is_empty() {
        for f in &o.replay {
            entry(&std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
            println!("{}: ok", f.display());
        }
        return;
    }
    let mut seeds: Vec<Seed> = std::fs::read_dir(&o.corpus)
        .unwrap_or_else(|e| panic!("{}: {e} (run fuzz/make_seeds.sh, fuzz/make_fs_seeds.sh)", o.corpus.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| Seed::new(std::fs::read(p).expect("seed")))
        .collect();
    seeds.sort_by(|a, b| a.data.cmp(&b.data));
    assert!(!seeds.is_empty(), "no seeds in {}", o.corpus.display());
    for s in &seeds {
        entry(&s.data); // The seeds themselves must pass.
    }
    // A watchdog: an input running past the timeout is saved, then the
    // process ends (a hang cannot be interrupted from inside).
    let current = Arc::new(Mutex::new(Arc::new(Vec::new())));
    let started = Arc::new(AtomicU64::new(u64::MAX));
    let t0 = Instant::now();
    {
        let (current, started, target, timeout) = (current.clone(), started.clone(), o.target.clone(), o.timeout);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let s = started.load(Ordering::Relaxed);
                if s != u64::MAX && t0.elapsed().as_millis() as u64 > s + timeout * 1000 {
                    let data = current.lock().unwrap().clone();
                    eprintln!("TIMEOUT: input saved as {}", save(&target, "timeout", &data).display());
                    std::process::exit(70);
                }
            }
        });
    }
    std::panic::set_hook(Box::new(|_| {})); // Reported below, with the input.
    *TARGET.lock().unwrap() = o.target.clone();
    LIMIT.store(LIVE.load(Ordering::Relaxed) + (o.memory_mib << 20), Ordering::Relaxed);
    let (mut n, mut slowest) = (0u64, Duration::ZERO);
    while t0.elapsed() < Duration::from_secs(o.seconds) {
        let data = Arc::new(input(&seeds, o.seed, n));
        *current.lock().unwrap() = data.clone();
        INPUT.store(Arc::as_ptr(&data) as *mut Vec<u8>, Ordering::Relaxed);
        let t = Instant::now();
        started.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
        let r = catch_unwind(AssertUnwindSafe(|| entry(&data)));
        started.store(u64::MAX, Ordering::Relaxed);
        INPUT.store(std::ptr::null_mut(), Ordering::Relaxed);
        slowest = slowest.max(t.elapsed());
        if let Err(p) = r {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            let path = save(&o.target, "crash", &data);
            eprintln!("CRASH at input {n} (seed {}): {}", o.seed, msg.unwrap_or_default());
            eprintln!("input saved as {}", path.display());
            std::process::exit(1);
        }
        n += 1;
    }
    println!(
        "{}: {n} inputs in {:.0} s from {} seeds, seed {}, slowest {:.3} s, no crash or timeout",
        o.target,
        t0.elapsed().as_secs_f64(),
        seeds.len(),
        o.seed,
        slowest.as_secs_f64()
    );
}
