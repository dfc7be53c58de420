//! The NBD client against real servers: qemu-nbd (QCOW2 with zero and
//! unallocated clusters, a dirty bitmap made by qemu-img and written by
//! qemu-io) and nbdkit (data, sparse-random, memory, the error filter).
//! Oracles: qemu-img convert/map, nbdcopy and nbdinfo --map.

mod common;
#[path = "common/nbd_peer.rs"]
mod nbd_peer;

use backchain::block::{Alloc, ReadAt};
use backchain::nbd::{NbdDisk, NbdUri};
use common::{qemu_img, qemu_io, qemu_map, qemu_raw, tempdir, tool};
use nbd_peer::{Peer, free_port, nbdcopy_bytes, nbdinfo_map, nbdkit, push_merged, qemu_nbd};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

fn open(uri: &str) -> NbdDisk {
    NbdDisk::open(&NbdUri::parse(uri).unwrap()).unwrap_or_else(|e| panic!("{uri}: {e}"))
}

/// Reads the whole disk in odd-sized, unaligned pieces.
fn read_all(d: &dyn ReadAt) -> Vec<u8> {
    let mut out = vec![0u8; d.size() as usize];
    for (i, c) in out.chunks_mut(100_003).enumerate() {
        d.read_exact_at(i as u64 * 100_003, c).unwrap();
    }
    out
}

/// The ranges `status` reports as `Data`, merged.
fn data_runs(d: &dyn ReadAt) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut at = 0;
    while at < d.size() {
        let r = d.status(at, d.size() - at).unwrap();
        assert!(r.len > 0 && r.offset == at);
        if r.alloc == Alloc::Data {
            push_merged(&mut out, r.offset..r.end());
        }
        at = r.end();
    }
    out
}

/// A 4 MiB QCOW2 with data, a zero cluster over data, a sub-cluster write
/// and unallocated space.
fn sample_qcow2(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", img.to_str().unwrap(), "4M"]);
    let cmds = ["write -P 0x11 0 192k", "write -z 64k 64k", "write -P 0x22 1m 512", "write -P 0x33 3200k 300k"];
    qemu_io(&img, "qcow2", &cmds.map(String::from));
    img
}

#[test]
fn qemu_nbd_reads_and_allocation_match_qemu_img() {
    let dir = tempdir();
    let img = sample_qcow2(dir.path());
    let want = qemu_raw(&img, dir.path());
    let mut want_data = Vec::new();
    for e in qemu_map(&img).iter().filter(|e| e["data"].as_bool() == Some(true)) {
        let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        push_merged(&mut want_data, s..s + l);
    }
    let unix = qemu_nbd(&img, "qcow2", &dir.path().join("s"), &[]);
    let port = free_port();
    let mut c = tool("qemu-nbd");
    c.args(["-r", "-t", "-f", "qcow2", "-b", "127.0.0.1", "-p", &port.to_string()]).arg(&img);
    let tcp = Peer::on_port(c, port, "");
    for peer in [&unix, &tcp] {
        let disk = open(&peer.uri);
        assert_eq!(disk.size(), 4 << 20);
        assert!(read_all(&disk) == want, "{}: bytes differ from qemu-img convert", peer.uri);
        assert_eq!(data_runs(&disk), want_data, "{}", peer.uri);
    }
    // Eight threads reading interleaved pieces over one connection.
    let disk = Arc::new(open(&unix.uri));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (disk, want) = (disk.clone(), want.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 40_000];
                for i in (t..100).step_by(8) {
                    let off = i * 41_000;
                    disk.read_exact_at(off, &mut buf).unwrap();
                    assert!(buf[..] == want[off as usize..off as usize + buf.len()], "thread {t} at {off}");
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let mut buf = [0u8; 2];
    let e = disk.read_exact_at((4 << 20) - 1, &mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[test]
fn dirty_bitmap_extents_are_what_qemu_io_wrote() {
    let dir = tempdir();
    let img = dir.path().join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "8M"]);
    qemu_io(&img, "qcow2", &["write -P 0x44 0 8M".to_string()]);
    qemu_img(&["bitmap", "--add", "--granularity", "65536", img.to_str().unwrap(), "b0"]);
    // Data, zeros over old data, a 512-byte write, a write across a granule
    // boundary, and two writes in neighbouring granules (merged).
    let writes: [(u64, u64, &str); 6] = [
        (1 << 20, 4096, "write -P 0x11"),
        (2 << 20, 128 << 10, "write -z"),
        ((3 << 20) + 512, 512, "write -P 0x22"),
        ((5 << 20) - 512, 1024, "write -P 0x33"),
        (6 << 20, 4096, "write -P 0x55"),
        ((6 << 20) + (64 << 10), 4096, "write -P 0x66"),
    ];
    let cmds: Vec<String> = writes.iter().map(|(o, l, c)| format!("{c} {o} {l}")).collect();
    qemu_io(&img, "qcow2", &cmds);
    let g = 64 << 10;
    let mut want: Vec<Range<u64>> = Vec::new();
    let mut rounded: Vec<Range<u64>> = writes.iter().map(|(o, l, _)| o / g * g..(o + l).div_ceil(g) * g).collect();
    rounded.sort_by_key(|r| r.start);
    rounded.into_iter().for_each(|r| push_merged(&mut want, r));

    let peer = qemu_nbd(&img, "qcow2", &dir.path().join("s"), &["-B", "b0"]);
    let disk = open(&format!("{}&bitmap=b0", peer.uri));
    assert!(disk.bitmap_granted());
    assert_eq!(disk.changed_extents().unwrap(), want);
    drop(disk);
    drop(peer);

    // Served without the bitmap: not granted, and never "nothing changed".
    let peer = qemu_nbd(&img, "qcow2", &dir.path().join("s2"), &[]);
    let disk = open(&format!("{}&bitmap=b0", peer.uri));
    assert!(!disk.bitmap_granted());
    let e = disk.changed_extents().unwrap_err().to_string();
    assert!(e.contains("not granted"), "{e}");
}

#[test]
fn nbdkit_plugins_read_like_nbdcopy_and_map_like_nbdinfo() {
    let dir = tempdir();
    let sock = dir.path().join("s");
    let peer = nbdkit(&sock, &["sparse-random", "16M", "seed=7", "percent=30", "runlength=100000"]);
    let disk = open(&peer.uri);
    let mut want = Vec::new();
    for (o, l, t) in nbdinfo_map(&peer.uri) {
        if t & 2 == 0 {
            push_merged(&mut want, o..o + l);
        }
    }
    let data = data_runs(&disk);
    assert_eq!(data, want);
    // Its bytes depend on how a read is cut, so only the holes compare:
    // everything outside the data runs reads as zeros.
    let bytes = read_all(&disk);
    let mut at = 0;
    for r in data.iter().chain([&(16 << 20..16 << 20)]) {
        assert!(bytes[at as usize..r.start as usize].iter().all(|&b| b == 0), "hole at {at}");
        at = r.end;
    }
    drop(peer);

    let peer = nbdkit(&dir.path().join("s2"), &["pattern", "9M"]);
    let disk = open(&peer.uri);
    assert!(read_all(&disk) == nbdcopy_bytes(&peer.uri, dir.path()), "pattern plugin bytes");
    drop(peer);

    // Sizes not a multiple of 512, data at unaligned offsets.
    let peer = nbdkit(&dir.path().join("s3"), &["data", "1 2 3 @0x1ff 0x55 0xaa @70000 9 8 7", "size=100001"]);
    let disk = open(&peer.uri);
    assert_eq!(disk.size(), 100_001);
    assert!(read_all(&disk) == nbdcopy_bytes(&peer.uri, dir.path()), "data plugin bytes");
}

#[test]
fn exports_over_4_gib_loop_over_u32_lengths() {
    let dir = tempdir();
    let sock = dir.path().join("s");
    let peer = nbdkit(&sock, &["data", "@0x140000001 0xab 0xcd @0x17ffffffe 1 2", "size=6G"]);
    let disk = open(&peer.uri);
    assert_eq!(disk.size(), 6 << 30);
    let mut buf = [0u8; 4];
    disk.read_exact_at(0x1_4000_0000, &mut buf).unwrap();
    assert_eq!(buf, [0, 0xab, 0xcd, 0]);
    disk.read_exact_at((6 << 30) - 4, &mut buf).unwrap();
    assert_eq!(buf, [0, 0, 1, 2]);
    let data = data_runs(&disk);
    assert!(!data.is_empty() && data.iter().all(|r| r.start >= 0x1_4000_0000 - (1 << 20)), "{data:?}");
    assert!(data.last().unwrap().end == 6 << 30, "{data:?}");
}

#[test]
fn server_errors_fail_the_read_with_the_errno() {
    let dir = tempdir();
    let sock = dir.path().join("s");
    let args = ["--filter=error", "memory", "1M", "error-pread=EIO", "error-pread-rate=100%"];
    let peer = nbdkit(&sock, &args);
    let disk = open(&peer.uri);
    let mut buf = [0u8; 4096];
    let e = disk.read_exact_at(0, &mut buf).unwrap_err().to_string();
    assert!(e.contains("EIO"), "{e}");
    // An error reply is an answer: the connection stays usable.
    assert_eq!(disk.status(0, 1 << 20).unwrap().offset, 0);
}

#[test]
fn block_size_limits_and_simple_replies_are_honoured() {
    let dir = tempdir();
    // Every request must be 4 KiB aligned and at most 1 MiB, or it fails.
    let args = [
        "--filter=blocksize-policy",
        "pattern",
        "3M",
        "blocksize-minimum=4096",
        "blocksize-preferred=65536",
        "blocksize-maximum=1M",
        "blocksize-error-policy=error",
    ];
    let peer = nbdkit(&dir.path().join("s"), &args);
    let disk = open(&peer.uri);
    let b = disk.client().info().block;
    assert_eq!((b.minimum, b.maximum), (4096, 1 << 20));
    let want = nbdcopy_bytes(&peer.uri, dir.path());
    assert!(read_all(&disk) == want, "blocksize-policy bytes");
    // Unaligned and over the maximum: widened, split, sent together.
    let mut big = vec![0u8; (2 << 20) + 3];
    disk.read_exact_at(5, &mut big).unwrap();
    assert!(big[..] == want[5..5 + big.len()]);
    drop(peer);

    // No structured replies: reads still work, and everything is data.
    let mut c = tool("nbdkit");
    let sock = dir.path().join("s2");
    c.args(["-f", "--exit-with-parent", "--no-sr", "-U"]).arg(&sock).args(["pattern", "1M"]);
    let peer = Peer::on_socket(c, &sock, "");
    let disk = open(&peer.uri);
    assert!(!disk.client().info().structured);
    assert!(read_all(&disk) == nbdcopy_bytes(&peer.uri, dir.path()), "--no-sr bytes");
    assert_eq!(data_runs(&disk), vec![0..1 << 20]);
}
