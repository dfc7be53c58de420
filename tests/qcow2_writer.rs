//! The QCOW2 writer against qemu-img: every image it writes passes
//! `qemu-img check` with no errors and no leaks, `qemu-img compare` finds it
//! equal to its source, zero clusters stay unallocated in full images and
//! become zero clusters in incrementals, and incrementals name their parent
//! relatively with backing format qcow2.

mod common;
use backchain::block::{MemImage, ReadAt};
use backchain::qcow2::{ClusterSize, Compression, Writer, WriterOptions};
use common::*;
use std::path::Path;
use std::sync::Arc;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn opts(cluster: u64, compression: Option<Compression>, backing: Option<&str>) -> WriterOptions {
    WriterOptions {
        cluster: ClusterSize::from_bytes(cluster).unwrap(),
        compression,
        backing: backing.map(str::to_string),
    }
}

/// `qemu-img check --output=json`: no errors, no leaks, no corruptions.
fn check_clean(img: &Path) -> serde_json::Value {
    let out = tool("qemu-img").args(["check", "--output=json"]).arg(img).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("qemu-img check of {}: {e}: {}", img.display(), String::from_utf8_lossy(&out.stderr))
    });
    assert!(out.status.success(), "qemu-img check of {} failed: {v}", img.display());
    assert_eq!(v["check-errors"], 0, "{}: {v}", img.display());
    for key in ["leaks", "corruptions", "leaks-fixed", "corruptions-fixed"] {
        assert!(v.get(key).is_none_or(|n| n == 0), "{}: {key} in {v}", img.display());
    }
    v
}

/// `qemu-img compare` of an image with a raw file of the expected bytes.
/// The writer rounds the virtual size up to whole 512-byte sectors (QEMU
/// drops a partial last sector), so the expected bytes are padded likewise.
fn compare_raw(img: &Path, expected: &[u8], dir: &Path) {
    let mut padded = expected.to_vec();
    padded.resize(expected.len().next_multiple_of(512), 0);
    let raw = dir.join(format!("{}.expected.raw", img.file_name().unwrap().to_string_lossy()));
    std::fs::write(&raw, &padded).unwrap();
    run(tool("qemu-img").args(["compare", "-f", "qcow2", "-F", "raw"]).arg(img).arg(&raw));
    // compare accepts a size mismatch when the excess is zeros: check it.
    assert_eq!(qemu_info(img)["virtual-size"], padded.len() as u64);
    std::fs::remove_file(&raw).unwrap();
}

/// A disk of `size` bytes: random clusters, zero clusters, compressible
/// clusters and clusters with a few non-zero bytes.
fn disk(rng: &mut Rng, size: u64, cluster: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    for c in 0..size.div_ceil(cluster) {
        let s = (c * cluster) as usize;
        let e = ((c + 1) * cluster).min(size) as usize;
        match rng.below(5) {
            0 | 1 => rng.fill(&mut v[s..e]),
            2 => {}
            3 => v[s..e].copy_from_slice(&compressible(rng, e - s)),
            _ => {
                let at = s + rng.below((e - s) as u64) as usize;
                v[at] = 1 + rng.below(255) as u8;
            }
        }
    }
    v
}

/// (start, length) ranges of guest bytes.
type Ranges = Vec<(u64, u64)>;

/// Bytes of the guest ranges `qemu-img map` reports as holding data in the
/// image itself (depth 0), and as zero clusters of the image itself.
fn own_bytes(img: &Path) -> (Ranges, Ranges) {
    let (mut data, mut zero) = (Vec::new(), Vec::new());
    for e in qemu_map(img) {
        let r = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        if e["depth"] == 0 && e["data"] == true {
            data.push(r);
        } else if e["depth"] == 0 && e["zero"] == true && e["present"] == true {
            zero.push(r);
        }
    }
    (data, zero)
}

fn covers(ranges: &[(u64, u64)], off: u64) -> bool {
    ranges.iter().any(|&(s, l)| s <= off && off < s + l)
}

fn shuffled(rng: &mut Rng, n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// Writes `data` cluster by cluster in random order.
fn write_full(path: &Path, data: &[u8], o: WriterOptions, rng: &mut Rng) {
    let cs = o.cluster.bytes();
    let mut w = Writer::create(path, data.len() as u64, o).unwrap();
    for c in shuffled(rng, (data.len() as u64).div_ceil(cs)) {
        let s = (c * cs) as usize;
        let e = ((c + 1) * cs).min(data.len() as u64) as usize;
        w.write_cluster(c, &data[s..e]).unwrap();
    }
    w.finish().unwrap();
}

/// Full images in random cluster order, cluster sizes 4K to 2M, sizes that
/// end inside a cluster: clean, equal, and zero clusters left unallocated.
#[test]
fn full_images_in_random_order() {
    let d = tempdir();
    let mut rng = Rng::new(21);
    for (cluster, size) in [(4 * KIB, 3 * MIB + 1000), (64 * KIB, 5 * MIB + 512), (2 * MIB, 9 * MIB + 12345)] {
        let data = disk(&mut rng, size, cluster);
        let img = d.path().join(format!("full-{cluster}.qcow2"));
        write_full(&img, &data, opts(cluster, None, None), &mut rng);
        check_clean(&img);
        compare_raw(&img, &data, d.path());
        let info = qemu_info(&img);
        assert_eq!(info["cluster-size"], cluster);
        assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
        let (own, _) = own_bytes(&img);
        for c in 0..size.div_ceil(cluster) {
            let s = (c * cluster) as usize;
            let e = ((c + 1) * cluster).min(size) as usize;
            let zero = data[s..e].iter().all(|&b| b == 0);
            assert_eq!(covers(&own, c * cluster), !zero, "{}: cluster {c} (zero: {zero})", img.display());
        }
    }
}

/// Unaligned writes at random offsets, overlapping each other, some of
/// them zeros: the image equals the same writes applied to a buffer.
#[test]
fn unaligned_write_at() {
    let d = tempdir();
    let mut rng = Rng::new(22);
    for (cluster, size) in [(4 * KIB, 2 * MIB + 777), (64 * KIB, 3 * MIB + 4096)] {
        for compression in [None, Some(Compression::Zstd)] {
            let mut model = vec![0u8; size as usize];
            let img = d.path().join(format!("at-{cluster}-{}.qcow2", compression.is_some()));
            let mut w = Writer::create(&img, size, opts(cluster, compression, None)).unwrap();
            for i in 0..200 {
                let off = rng.below(size);
                let len = (rng.below(3 * cluster) + 1).min(size - off) as usize;
                let mut buf = if i % 3 == 0 { compressible(&mut rng, len) } else { vec![0u8; len] };
                if i % 3 == 1 {
                    rng.fill(&mut buf);
                }
                w.write_at(off, &buf).unwrap();
                model[off as usize..off as usize + len].copy_from_slice(&buf);
            }
            w.finish().unwrap();
            check_clean(&img);
            compare_raw(&img, &model, d.path());
        }
    }
}

/// zstd and deflate compression: clean, equal, the compression type
/// recorded, and clusters really stored compressed.
#[test]
fn compressed_images() {
    let d = tempdir();
    let mut rng = Rng::new(23);
    for compression in [Compression::Deflate, Compression::Zstd] {
        for (cluster, size) in [(4 * KIB, 2 * MIB + 100), (64 * KIB, 4 * MIB), (2 * MIB, 6 * MIB + 512)] {
            let data = disk(&mut rng, size, cluster);
            let img = d.path().join(format!("c-{}-{cluster}.qcow2", compression.name()));
            write_full(&img, &data, opts(cluster, Some(compression), None), &mut rng);
            let check = check_clean(&img);
            compare_raw(&img, &data, d.path());
            let info = qemu_info(&img);
            let ty = if compression == Compression::Zstd { "zstd" } else { "zlib" };
            assert_eq!(info["format-specific"]["data"]["compression-type"], ty);
            // `qemu-img check` counts compressed clusters in every QEMU
            // version; `qemu-img map` only reports them from QEMU 8 on, and
            // CI may have Debian's 7.2.
            let compressed = check["compressed-clusters"].as_u64().unwrap_or(0);
            assert!(compressed > 0, "{}: no compressed clusters: {check}", img.display());
        }
    }
}

/// Incrementals over a parent with data: a relative backing name with
/// backing format qcow2, changed clusters stored, all-zero clusters over
/// parent data stored as zero clusters, untouched clusters unallocated.
#[test]
fn incremental_images() {
    let d = tempdir();
    let mut rng = Rng::new(24);
    for (cluster, compression) in [(64 * KIB, None), (4 * KIB, Some(Compression::Deflate)), (2 * MIB, None)] {
        let size = if cluster == 2 * MIB { 8 * MIB + 512 } else { 3 * MIB + 1536 };
        let sub = d.path().join(format!("vm-{cluster}"));
        std::fs::create_dir(&sub).unwrap();
        let parent_data = disk(&mut rng, size, cluster);
        let parent = sub.join("full.qcow2");
        write_full(&parent, &parent_data, opts(cluster, None, None), &mut rng);

        // Second level: a chain of two incrementals, the second naming the
        // first relatively, both in the same folder as the full image.
        let mut prev_name = "full.qcow2".to_string();
        let mut prev_data = parent_data;
        for level in 1..=2 {
            let name = format!("inc{level}.qcow2");
            let img = sub.join(&name);
            let mut w = Writer::create(&img, size, opts(cluster, compression, Some(&prev_name))).unwrap();
            w.set_backing_reader(Arc::new(MemImage(prev_data.clone())));
            let mut data = prev_data.clone();
            let clusters = size.div_ceil(cluster);
            let mut zeroed = Vec::new();
            let mut changed = Vec::new();
            for c in shuffled(&mut rng, clusters).into_iter().take((clusters / 3) as usize) {
                let s = (c * cluster) as usize;
                let e = ((c + 1) * cluster).min(size) as usize;
                let parent_has_data = prev_data[s..e].iter().any(|&b| b != 0);
                if rng.below(3) == 0 && parent_has_data {
                    data[s..e].fill(0);
                    w.write_cluster(c, &data[s..e]).unwrap();
                    zeroed.push(c);
                } else {
                    rng.fill(&mut data[s..e]);
                    w.write_cluster(c, &data[s..e]).unwrap();
                    changed.push(c);
                }
            }
            // An unaligned write too, reading the rest of its cluster from
            // the parent.
            let off = size / 2 + 333;
            let mut patch = vec![0u8; 5000];
            rng.fill(&mut patch);
            w.write_at(off, &patch).unwrap();
            data[off as usize..off as usize + patch.len()].copy_from_slice(&patch);
            changed.extend([off / cluster, (off + 4999) / cluster]);
            zeroed.retain(|c| !changed.contains(c));
            w.finish().unwrap();

            check_clean(&img);
            compare_raw(&img, &data, d.path());
            let info = qemu_info(&img);
            assert_eq!(info["backing-filename"], prev_name.as_str(), "{info}");
            assert_eq!(info["backing-filename-format"], "qcow2", "{info}");
            assert_eq!(info["full-backing-filename"], sub.join(&prev_name).to_str().unwrap(), "{info}");
            let (own, own_zero) = own_bytes(&img);
            for c in 0..clusters {
                let off = c * cluster;
                if zeroed.contains(&c) {
                    assert!(
                        covers(&own_zero, off) && !covers(&own, off),
                        "{name}: cluster {c} should be a zero cluster"
                    );
                } else if changed.contains(&c) {
                    assert!(covers(&own, off), "{name}: changed cluster {c} not allocated");
                } else {
                    assert!(!covers(&own, off) && !covers(&own_zero, off), "{name}: untouched cluster {c} allocated");
                }
            }
            prev_name = name;
            prev_data = data;
        }
    }
}

/// Writing a cluster twice, and zeroing a written cluster, keeps the
/// metadata right (refcounts of replaced compressed data, no leaks).
#[test]
fn rewrites_keep_metadata_clean() {
    let d = tempdir();
    let mut rng = Rng::new(25);
    for compression in [None, Some(Compression::Zstd), Some(Compression::Deflate)] {
        let (cluster, size) = (4 * KIB, MIB + 512);
        let img = d.path().join(format!("rw-{compression:?}.qcow2"));
        let mut model = vec![0u8; size as usize];
        let mut w = Writer::create(&img, size, opts(cluster, compression, None)).unwrap();
        let clusters = size.div_ceil(cluster);
        for _ in 0..3 * clusters {
            let c = rng.below(clusters);
            let s = (c * cluster) as usize;
            let e = ((c + 1) * cluster).min(size) as usize;
            match rng.below(4) {
                0 => model[s..e].fill(0),
                1 => rng.fill(&mut model[s..e]),
                _ => model[s..e].copy_from_slice(&compressible(&mut rng, e - s)),
            }
            w.write_cluster(c, &model[s..e]).unwrap();
        }
        w.finish().unwrap();
        check_clean(&img);
        compare_raw(&img, &model, d.path());
    }
}

/// The image a writer produced reads back through the library too.
#[test]
fn written_image_reads_back_through_the_library() {
    let d = tempdir();
    let mut rng = Rng::new(26);
    let (cluster, size) = (16 * KIB, 2 * MIB + 4607);
    let data = disk(&mut rng, size, cluster);
    let img = d.path().join("rb.qcow2");
    write_full(&img, &data, opts(cluster, Some(Compression::Zstd), None), &mut rng);
    check_clean(&img);
    let chain = backchain::qcow2::Chain::open(&img, &Default::default()).unwrap();
    let mut padded = data.clone();
    padded.resize(size.next_multiple_of(512) as usize, 0);
    assert_eq!(chain.size(), padded.len() as u64);
    let mut all = vec![0u8; padded.len()];
    chain.read_exact_at(0, &mut all).unwrap();
    assert!(all == padded);
    assert!(qemu_raw(&img, d.path()) == padded);
}

/// Metadata spanning many clusters: 512-byte clusters (hundreds of refcount
/// blocks, a refcount table of several clusters), and a large sparse virtual
/// size (an L1 table of many clusters) with a few clusters written far apart.
#[test]
fn metadata_over_many_clusters() {
    let d = tempdir();
    let mut rng = Rng::new(27);
    let size = 12 * MIB + 512;
    let data = disk(&mut rng, size, 512);
    let img = d.path().join("small-clusters.qcow2");
    write_full(&img, &data, opts(512, None, None), &mut rng);
    check_clean(&img);
    compare_raw(&img, &data, d.path());

    for cluster in [4 * KIB, 64 * KIB] {
        let size: u64 = 64 << 30;
        let img = d.path().join(format!("sparse-{cluster}.qcow2"));
        let expected = d.path().join(format!("sparse-{cluster}.raw"));
        let raw = std::fs::File::create(&expected).unwrap();
        raw.set_len(size).unwrap();
        let mut w = Writer::create(&img, size, opts(cluster, None, None)).unwrap();
        let clusters = size / cluster;
        let mut picks: Vec<u64> = (0..40).map(|_| rng.below(clusters)).collect();
        picks.extend([0, clusters - 1]);
        for c in picks {
            let mut buf = vec![0u8; cluster as usize];
            rng.fill(&mut buf);
            w.write_cluster(c, &buf).unwrap();
            use std::os::unix::fs::FileExt;
            raw.write_all_at(&buf, c * cluster).unwrap();
        }
        w.finish().unwrap();
        check_clean(&img);
        run(tool("qemu-img").args(["compare", "-f", "qcow2", "-F", "raw"]).arg(&img).arg(&expected));
        assert_eq!(qemu_info(&img)["virtual-size"], size);
    }
}

/// `backchain export --format qcow2` of a raw disk whose size is not a whole
/// number of sectors: QEMU sees every byte (the size is rounded up, never
/// down), with and without compression.
#[test]
fn cli_export_of_an_odd_sized_raw_disk() {
    let d = tempdir();
    let mut rng = Rng::new(28);
    let size = 3 * MIB + 1000;
    let data = disk(&mut rng, size, 64 * KIB);
    let src = d.path().join("odd.raw");
    std::fs::write(&src, &data).unwrap();
    for compress in [None, Some("zstd"), Some("deflate")] {
        let out = d.path().join(format!("odd-{}.qcow2", compress.unwrap_or("none")));
        let mut c = backchain();
        c.arg("export").arg(&src).args(["--format", "qcow2", "-o"]).arg(&out);
        if let Some(z) = compress {
            c.args(["--compress", z]);
        }
        run(&mut c);
        check_clean(&out);
        compare_raw(&out, &data, d.path());
    }
}

/// Images with nothing written (a 1 GiB empty disk, a zero-length disk, an
/// incremental that changes nothing) are valid and read as expected.
#[test]
fn empty_images() {
    let d = tempdir();
    for size in [0u64, 1 << 30, 512] {
        let img = d.path().join(format!("empty-{size}.qcow2"));
        Writer::create(&img, size, WriterOptions::default()).unwrap().finish().unwrap();
        check_clean(&img);
        let raw = d.path().join(format!("empty-{size}.raw"));
        std::fs::File::create(&raw).unwrap().set_len(size).unwrap();
        run(tool("qemu-img").args(["compare", "-f", "qcow2", "-F", "raw"]).arg(&img).arg(&raw));
        assert_eq!(qemu_info(&img)["virtual-size"], size);
        assert!(qemu_map(&img).iter().all(|e| e["data"] == false));
        let chain = backchain::qcow2::Chain::open(&img, &Default::default()).unwrap();
        assert_eq!(chain.size(), size);
    }
    let parent = d.path().join("empty-512.qcow2");
    let inc = d.path().join("inc.qcow2");
    let o = opts(64 * KIB, None, Some("empty-512.qcow2"));
    Writer::create(&inc, 512, o).unwrap().finish().unwrap();
    check_clean(&inc);
    assert_eq!(qemu_info(&inc)["backing-filename"], "empty-512.qcow2");
    qemu_img(&["compare", s(&inc), s(&parent)]);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
