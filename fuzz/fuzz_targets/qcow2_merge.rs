//! Merges a small written child into an image made of arbitrary bytes
//! (the fold that drops the oldest point), and reads a merge journal made of
//! them. Errors are fine; a panic, a hang or an unbounded allocation is a bug.
#![no_main]

use backchain::block::MemImage;
use backchain::qcow2::merge::{self, Journal, Merge};
use backchain::qcow2::{Header, Writer, WriterOptions};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

/// Virtual sizes above this are skipped: the child's writer would allocate
/// an L1 table for them, which is not what this target exercises.
const MAX_SIZE: u64 = 64 << 20;

fn workdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("backchain-fuzz-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fuzz_target!(|data: &[u8]| {
    let dir = workdir();
    let journal = dir.join("j.merge.json");
    std::fs::write(&journal, data).unwrap();
    let _ = Journal::load(&journal);
    let _ = Journal::parse(data);
    let Ok(h) = Header::read(&MemImage(data.to_vec())) else { return };
    if h.size == 0 || h.size > MAX_SIZE || h.backing_file.is_some() {
        return;
    }
    std::fs::write(dir.join("a.qcow2"), data).unwrap();
    let opts = WriterOptions { cluster: h.cluster, backing: Some("a.qcow2".into()), ..Default::default() };
    let Ok(mut w) = Writer::create(&dir.join("b.qcow2"), h.size, opts) else { return };
    let cs = h.cluster.bytes();
    let last = (h.size - 1) / cs;
    let full = vec![0x5a; cs as usize];
    for c in [0, last / 2, last] {
        let n = (h.size - c * cs).min(cs) as usize;
        let _ = w.write_cluster(c, &full[..n]);
    }
    if last > 2 {
        let _ = w.write_zero_cluster(1);
    }
    if w.finish().is_err() {
        return;
    }
    let chain = vec!["a.qcow2".to_string(), "b.qcow2".to_string()];
    let Ok(lock) = merge::lock_dropped(&dir.join("a.lock"), "a") else { return };
    if let Ok(m) = Merge::begin(&dir, &chain, 0, &lock) {
        let _ = m.run();
    }
});
