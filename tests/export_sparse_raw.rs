//! Exports of sparse raw sources: holes found with SEEK_HOLE are skipped,
//! and data that shares a 64 KiB block with a hole, or lies at the very end
//! of an unaligned file, still arrives. Checked against the source bytes and
//! qemu-img's own reading of the images written.

mod common;
use common::*;
use std::io::{Seek, SeekFrom, Write};

#[test]
fn sparse_raw_exports_match_the_source() {
    let d = tempdir();
    let src = d.path().join("sparse.raw");
    // 40 MiB + 3 KiB: the last 64 KiB block is partial (sector-aligned,
    // since QEMU sees a QCOW2 virtual size in whole sectors).
    let size = (40u64 << 20) + 3072;
    let mut f = std::fs::File::create(&src).unwrap();
    f.set_len(size).unwrap();
    let mut rng = Rng::new(7);
    // (offset, length): a page inside a block, runs across block edges, a
    // multi-chunk run, and the file's tail.
    let pieces = [
        (4096, 4096),
        ((1 << 20) - 512, 1024),
        (3 << 20, 9 << 20),
        ((20 << 20) + 65536 * 3 + 7, 100_000),
        (size - 700, 700),
    ];
    for (off, len) in pieces {
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&buf).unwrap();
    }
    drop(f);
    let want = std::fs::read(&src).unwrap();

    let raw = d.path().join("out.raw");
    run(backchain().args(["export"]).arg(&src).args(["--format", "raw", "-o"]).arg(&raw));
    assert!(std::fs::read(&raw).unwrap() == want, "raw export differs from the source");

    let q = d.path().join("out.qcow2");
    run(backchain().args(["export"]).arg(&src).args(["--format", "qcow2", "-o"]).arg(&q));
    qemu_img(&["check", q.to_str().unwrap()]);
    assert!(qemu_raw(&q, d.path()) == want, "qcow2 export differs from the source");
}

/// A chain with a vast unmapped virtual size: holes are skipped by whole L1
/// ranges, in every layer, so export does not walk tens of terabytes
/// cluster by cluster, and the data around them still arrives.
#[test]
fn huge_sparse_chain_exports_its_few_clusters() {
    let d = tempdir();
    let base = d.path().join("base.qcow2");
    let top = d.path().join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16T"]);
    qemu_io(&base, "qcow2", &["write -P 0x21 0 64k".into(), "write -P 0x22 10T 4k".into()]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=16384",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    qemu_io(&top, "qcow2", &["write -P 0x23 5T 8k".into(), "write -P 0x24 17592186040320 4k".into()]);
    let out = d.path().join("out.qcow2");
    run(backchain().args(["export"]).arg(&top).args(["--format", "qcow2", "-o"]).arg(&out));
    qemu_img(&["check", out.to_str().unwrap()]);
    qemu_img(&["compare", "-q", top.to_str().unwrap(), out.to_str().unwrap()]);
}
