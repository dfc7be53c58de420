//! `ReadAt::status` against independent oracles: `qemu-img map
//! --output=json` for QCOW2 chains (and for raw files, where it asks
//! SEEK_DATA / SEEK_HOLE itself), and slices against their source.
//!
//! QEMU 7.2's map has no "compressed" field: only start, length, present,
//! zero and data are read.

mod common;

use backchain::block::{Alloc, RawFile, ReadAt, Slice};
use backchain::qcow2::{Chain, OpenOptions};
use common::{qemu_img, qemu_io};
use std::path::Path;
use std::sync::Arc;

/// `[start, end)` runs of one state, adjacent runs of the same state merged.
type Runs = Vec<(u64, u64, Alloc)>;

fn push(runs: &mut Runs, start: u64, end: u64, alloc: Alloc) {
    match runs.last_mut() {
        Some(last) if last.1 == start && last.2 == alloc => last.1 = end,
        _ => runs.push((start, end, alloc)),
    }
}

/// Every run of `r`, asking again from each run's end.
fn ours(r: &dyn ReadAt) -> Runs {
    let mut runs = Vec::new();
    let mut pos = 0;
    while pos < r.size() {
        let run = r.status(pos, r.size() - pos).unwrap();
        assert_eq!(run.offset, pos);
        assert!(run.len >= 1 && run.end() <= r.size(), "{run:?}");
        push(&mut runs, pos, run.end(), run.alloc);
        pos = run.end();
    }
    runs
}

/// qemu-img's view: data is data; no data but present in some layer is a
/// zero cluster; neither is unallocated.
fn oracle(image: &Path, format: &str) -> Runs {
    let out = qemu_img(&["map", "--output=json", "-f", format, image.to_str().unwrap()]);
    let map: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut runs = Vec::new();
    for e in map {
        let start = e["start"].as_u64().unwrap();
        let end = start + e["length"].as_u64().unwrap();
        let alloc = if e["data"].as_bool().unwrap() {
            Alloc::Data
        } else if format == "qcow2" && e["present"].as_bool().unwrap() {
            Alloc::Zero
        } else {
            Alloc::Unallocated
        };
        push(&mut runs, start, end, alloc);
    }
    runs
}

#[test]
fn raw_file_holes_match_seek_data_as_qemu_sees_it() {
    let dir = common::tempdir();
    let path = dir.path().join("sparse.raw");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(8 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    for (at, len) in [(0u64, 64usize << 10), (1 << 20, 4 << 10), (3 << 20, 2 << 20), ((8 << 20) - 4096, 4096)] {
        f.write_all_at(&vec![0x5a; len], at).unwrap();
    }
    f.sync_all().unwrap();
    let raw = RawFile::open(&path).unwrap();
    let got = ours(&raw);
    assert_eq!(got, oracle(&path, "raw"));
    assert!(got.iter().any(|r| r.2 == Alloc::Unallocated), "the file has holes: {got:?}");
    // A request is answered within its length.
    let r = raw.status(3 << 20, 100).unwrap();
    assert_eq!((r.offset, r.len, r.alloc), (3 << 20, 100, Alloc::Data));
    assert!(raw.status(8 << 20, 1).is_err(), "past the end");
    assert!(raw.status(0, 0).is_err(), "empty");
}

/// A four-deep chain: a 4 KiB-cluster base shorter than the disk, then
/// 64 KiB layers with data, zero and compressed clusters over each other.
fn chain(dir: &Path) -> std::path::PathBuf {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", &p("l0.qcow2"), "6M"]);
    let w = |img: &str, cmds: &[&str]| {
        qemu_io(&dir.join(img), "qcow2", &cmds.iter().map(|c| c.to_string()).collect::<Vec<_>>())
    };
    w("l0.qcow2", &["write -P 1 0 8k", "write -P 2 100k 4k", "write -P 3 2M 1M", "write -z 5M 64k"]);
    for (i, (name, below)) in
        [("l1.qcow2", "l0.qcow2"), ("l2.qcow2", "l1.qcow2"), ("l3.qcow2", "l2.qcow2")].iter().enumerate()
    {
        let size = if i == 0 { "7M" } else { "8M" };
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", &p(below), "-F", "qcow2", &p(name), size]);
    }
    // Zero over data, data over zero, compressed, zero over nothing, and
    // a discard that lets a lower layer show through again.
    w("l1.qcow2", &["write -z 2M 128k", "write -P 4 5M 64k", "write -c -P 5 1M 64k", "write -P 6 6M 128k"]);
    w("l2.qcow2", &["write -z 6M 64k", "write -P 7 3M 64k", "write -z 7M 64k"]);
    w("l3.qcow2", &["write -P 8 64k 64k", "write -z 7680k 64k", "write -P 9 2M 64k"]);
    dir.join("l3.qcow2")
}

#[test]
fn chain_status_matches_qemu_img_map_at_every_depth() {
    let dir = common::tempdir();
    let top = chain(dir.path());
    for layer in ["l0.qcow2", "l1.qcow2", "l2.qcow2", "l3.qcow2"] {
        let path = dir.path().join(layer);
        let c = Chain::open(&path, &OpenOptions::default()).unwrap();
        let got = ours(&c);
        assert_eq!(got, oracle(&path, "qcow2"), "{layer}");
    }
    let c = Chain::open(&top, &OpenOptions::default()).unwrap();
    let got = ours(&c);
    for kind in [Alloc::Data, Alloc::Zero, Alloc::Unallocated] {
        assert!(got.iter().any(|r| r.2 == kind), "the chain has {kind:?} runs: {got:?}");
    }
    // What status calls zero or unallocated reads as zeros.
    let mut buf = vec![0u8; 1 << 20];
    for &(start, end, alloc) in &got {
        if alloc != Alloc::Data {
            let n = ((end - start) as usize).min(buf.len());
            c.read_exact_at(start, &mut buf[..n]).unwrap();
            assert!(buf[..n].iter().all(|&b| b == 0), "{start}..{end} {alloc:?}");
        }
    }
}

#[test]
fn a_slice_reports_its_window_of_the_source() {
    let dir = common::tempdir();
    let top = chain(dir.path());
    let c: Arc<dyn ReadAt> = Arc::new(Chain::open(&top, &OpenOptions::default()).unwrap());
    let whole = ours(&*c);
    for (start, len) in [(0u64, 8u64 << 20), ((1 << 20) + 100, 5 << 20), (7 << 20, 1 << 20), (65_537, 3)] {
        let s = Slice::new(c.clone(), start, len).unwrap();
        let mut want = Vec::new();
        for &(a, b, alloc) in &whole {
            let (a, b) = (a.max(start), b.min(start + len));
            if a < b {
                push(&mut want, a - start, b - start, alloc);
            }
        }
        assert_eq!(ours(&s), want, "window {start}+{len}");
    }
}
