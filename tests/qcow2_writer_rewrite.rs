//! The writer hands gathered data writes to a background thread and writes
//! long runs straight from the caller's buffer; clusters
//! rewritten in place, partial writes that read back the image's own data,
//! and zeroed clusters must still see every earlier write. Checked against
//! qemu-img's reading of the finished image.

mod common;
use backchain::qcow2::{Writer, WriterOptions};
use common::*;

#[test]
fn rewrites_after_background_writes_land_in_order() {
    let d = tempdir();
    let path = d.path().join("w.qcow2");
    let cs = 64usize << 10;
    let clusters = 256u64; // 16 MiB: several 4 MiB write batches
    let mut want = vec![0u8; clusters as usize * cs];
    let mut w = Writer::create(&path, want.len() as u64, WriterOptions::default()).unwrap();
    let mut rng = Rng::new(11);
    for c in 0..clusters {
        // Every seventh cluster stays zero: runs of data between holes.
        if c % 7 != 3 {
            let s = c as usize * cs;
            rng.fill(&mut want[s..s + cs]);
        }
    }
    // The first half in whole runs (written straight from the buffer), the
    // rest cluster by cluster (gathered, written in the background).
    let half = clusters as usize / 2 * cs;
    w.write_clusters(0, &want[..half]).unwrap();
    for c in clusters / 2..clusters {
        let s = c as usize * cs;
        w.write_cluster(c, &want[s..s + cs]).unwrap();
    }
    // Rewrite early clusters in place (their first write may still be queued),
    // patch parts of others, and zero a few.
    for c in [0u64, 1, 63, 64, 200, 255] {
        let s = c as usize * cs;
        rng.fill(&mut want[s..s + cs]);
        w.write_cluster(c, &want[s..s + cs]).unwrap();
    }
    for (off, len) in [(100usize * cs + 1000, 5000usize), (130 * cs - 10, 20), (254 * cs + 7, 3)] {
        rng.fill(&mut want[off..off + len]);
        w.write_at(off as u64, &want[off..off + len]).unwrap();
    }
    for c in [2u64, 150] {
        let s = c as usize * cs;
        want[s..s + cs].fill(0);
        w.write_zero_cluster(c).unwrap();
    }
    w.finish().unwrap();
    qemu_img(&["check", path.to_str().unwrap()]);
    assert!(qemu_raw(&path, d.path()) == want);
}
