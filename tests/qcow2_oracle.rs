//! The QCOW2 reader against qemu-img: for every reader variant (versions,
//! cluster sizes, refcount widths, zero and compressed clusters, extended L2,
//! backing chains, snapshots, bitmaps, dirty and corrupt bits) an image is
//! made with qemu-img/qemu-io from random data, then `backchain export` must
//! equal `qemu-img convert -O raw` byte for byte, and many random unaligned
//! reads through the library must equal the same bytes.

mod common;
use backchain::block::ReadAt;
use backchain::qcow2::{Chain, Mapping, OpenOptions};
use common::*;
use std::path::{Path, PathBuf};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Random reads made through the library for each verified image.
const RANDOM_READS: usize = 300;

/// A folder of images and the random source that fills them.
struct Lab {
    dir: tempfile::TempDir,
    rng: Rng,
    files: u32,
    /// The most bytes `locate` found in one verified image.
    located: u64,
}

impl Lab {
    fn new(seed: u64) -> Self {
        Lab { dir: tempdir(), rng: Rng::new(seed), files: 0, located: 0 }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `qemu-img create -f qcow2 [-o OPTS] [-b BACKING -F FMT] NAME SIZE`.
    fn create(&self, name: &str, size: u64, opts: &str, backing: Option<(&str, &str)>) -> PathBuf {
        let p = self.path(name);
        let mut c = tool("qemu-img");
        c.args(["create", "-q", "-f", "qcow2"]);
        if !opts.is_empty() {
            c.args(["-o", opts]);
        }
        if let Some((b, f)) = backing {
            c.args(["-b", b, "-F", f]);
        }
        c.arg(&p).arg(size.to_string());
        run(&mut c);
        p
    }

    /// A qemu-io command writing fresh random bytes at `off`.
    fn data(&mut self, off: u64, len: u64) -> String {
        self.files += 1;
        let src = self.path(&format!("src-{}.bin", self.files));
        random_file(&src, &mut self.rng, len as usize);
        format!("write -s {} {off} {len}", src.display())
    }

    /// `n` random operations over `[0, size)`: unaligned data writes (most
    /// of them), zero writes and discards of up to `max_len` bytes.
    fn random_ops(&mut self, size: u64, n: usize, max_len: u64) -> Vec<String> {
        let mut cmds = Vec::new();
        for _ in 0..n {
            let off = self.rng.below(size);
            let len = (self.rng.below(max_len) + 1).min(size - off);
            match self.rng.below(10) {
                0 => cmds.push(format!("write -z {off} {len}")),
                1 => cmds.push(format!("discard {off} {len}")),
                _ => cmds.push(self.data(off, len)),
            }
        }
        cmds
    }

    /// The two checks every image gets: export equals qemu-img convert, and
    /// random reads through the library equal the same bytes.
    fn verify(&mut self, top: &Path) -> Vec<u8> {
        let expected = qemu_raw(top, self.dir.path());
        self.verify_against(top, &expected);
        expected
    }

    fn verify_against(&mut self, top: &Path, expected: &[u8]) {
        self.files += 1;
        let out = self.path(&format!("export-{}.raw", self.files));
        run(backchain().arg("export").arg(top).args(["--format", "raw", "-o"]).arg(&out));
        let got = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert_eq!(got.len(), expected.len(), "{}: exported size", top.display());
        if let Some(at) = first_difference(&got, expected) {
            panic!("{}: export differs from qemu-img convert at byte {at}", top.display());
        }

        let chain = Chain::open(top, &OpenOptions::default()).unwrap();
        assert_eq!(chain.size(), expected.len() as u64);
        let cs = chain.cluster_size().bytes();
        let size = expected.len() as u64;
        for i in 0..RANDOM_READS {
            let off = self.rng.below(size);
            // Short reads inside a cluster, reads crossing a few clusters,
            // and long reads.
            let max = match i % 3 {
                0 => 600,
                1 => 3 * cs,
                _ => 512 * KIB,
            };
            let len = (self.rng.below(max) + 1).min(size - off) as usize;
            let mut buf = vec![0u8; len];
            chain.read_exact_at(off, &mut buf).unwrap();
            let want = &expected[off as usize..off as usize + len];
            if let Some(at) = first_difference(&buf, want) {
                panic!("{}: read of {len} bytes at {off} differs at byte {}", top.display(), off + at as u64);
            }
        }
        // The very last byte, and a read past the end is an error.
        let mut b = [0u8; 1];
        chain.read_exact_at(size - 1, &mut b).unwrap();
        assert_eq!(b[0], expected[size as usize - 1]);
        assert!(chain.read_exact_at(size, &mut b).is_err());
        self.located = self.located.max(assert_located(&chain, top, expected));
    }
}

/// The whole image as the zero-copy servers assemble it (extents lent from
/// a map where `locate` finds them, reads elsewhere) equals `expected`;
/// returns how many bytes were located.
fn assert_located(chain: &Chain, top: &Path, expected: &[u8]) -> u64 {
    let size = expected.len() as u64;
    let (mut at, mut located) = (0u64, 0u64);
    while at < size {
        let want = (size - at).min(300_007);
        let got = match chain.locate(at, want) {
            Some(e) => {
                assert!(!e.is_empty() && e.len() <= want, "{}: extent of {} for {want}", top.display(), e.len());
                located += e.len();
                e.bytes().to_vec()
            }
            None => {
                // Up to the next 512-byte boundary, where an extent may start.
                let mut b = vec![0u8; want.min(512 - at % 512) as usize];
                chain.read_exact_at(at, &mut b).unwrap();
                b
            }
        };
        if let Some(d) = first_difference(&got, &expected[at as usize..at as usize + got.len()]) {
            panic!("{}: zero-copy bytes at {at} differ at byte {}", top.display(), at + d as u64);
        }
        at += got.len() as u64;
    }
    assert!(chain.locate(size, 1).is_none(), "{}: an extent past the end", top.display());
    located
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Versions 2 and 3 with every cluster size from 512 B to 2 MiB, a virtual
/// size that ends inside a cluster, over a backing file so that v2 zero
/// writes and discards must not expose backing data wrongly.
#[test]
fn versions_and_cluster_sizes() {
    let mut lab = Lab::new(1);
    for compat in ["0.10", "1.1"] {
        for cluster in [512, 4 * KIB, 64 * KIB, 2 * MIB] {
            let size = if cluster == 2 * MIB { 7 * MIB + 3 * 512 } else { 3 * MIB + 512 };
            let tag = format!("{compat}-{cluster}");
            let base = lab.create(&format!("base-{tag}.qcow2"), size, &format!("compat={compat}"), None);
            let ops = lab.random_ops(size, 12, 3 * cluster.min(256 * KIB));
            let mut cmds = vec![lab.data(0, size)];
            cmds.extend(ops);
            qemu_io(&base, "qcow2", &cmds);
            lab.verify(&base);

            let opts = format!("compat={compat},cluster_size={cluster}");
            let name = format!("base-{tag}.qcow2");
            let top = lab.create(&format!("top-{tag}.qcow2"), size, &opts, Some((&name, "qcow2")));
            let cmds = lab.random_ops(size, 30, 3 * cluster.min(256 * KIB));
            qemu_io(&top, "qcow2", &cmds);
            let info = qemu_info(&top);
            assert_eq!(info["format-specific"]["data"]["compat"], compat);
            assert_eq!(info["cluster-size"], cluster);
            lab.verify(&top);
        }
    }
}

#[test]
fn refcount_widths() {
    let mut lab = Lab::new(2);
    for bits in [1, 2, 4, 8, 16, 32, 64] {
        let size = 2 * MIB;
        let img =
            lab.create(&format!("rc{bits}.qcow2"), size, &format!("refcount_bits={bits},cluster_size=4096"), None);
        let cmds = lab.random_ops(size, 25, 100 * KIB);
        qemu_io(&img, "qcow2", &cmds);
        assert_eq!(qemu_info(&img)["format-specific"]["data"]["refcount-bits"], bits);
        lab.verify(&img);
    }
}

/// Zero flag with the host offset kept (QEMU's "zero, allocated" state),
/// and plain zero clusters, over a backing file full of data: both read
/// zeros, never the backing bytes.
#[test]
fn zero_clusters_keep_host_offset_and_hide_backing() {
    let mut lab = Lab::new(3);
    let size = 2 * MIB;
    let base = lab.create("base.qcow2", size, "", None);
    let fill = lab.data(0, size);
    qemu_io(&base, "qcow2", &[fill]);
    let top = lab.create("top.qcow2", size, "cluster_size=65536", Some(("base.qcow2", "qcow2")));
    let (a, b) = (lab.data(0, 512 * KIB), lab.data(1024 * KIB, 256 * KIB));
    // 64K..192K: data then zeroed (offset kept); 1024K..1088K likewise;
    // 768K..832K: zeroed where the top held nothing (zero flag, no offset).
    qemu_io(
        &top,
        "qcow2",
        &[a, b, "write -z 64k 128k".into(), "write -z 1024k 64k".into(), "write -z 768k 64k".into()],
    );
    let map = qemu_map(&top);
    let at = |start: u64| {
        map.iter()
            .find(|e| {
                e["start"].as_u64().unwrap() <= start
                    && start < e["start"].as_u64().unwrap() + e["length"].as_u64().unwrap()
            })
            .unwrap_or_else(|| panic!("no map entry for {start}"))
            .clone()
    };
    for start in [64 * KIB, 128 * KIB, 1024 * KIB] {
        let e = at(start);
        assert_eq!(e["depth"], 0, "{e}");
        assert_eq!(e["zero"], true, "{e}");
        assert!(e["offset"].is_u64(), "the zero cluster at {start} should keep its host offset: {e}");
    }
    let e = at(768 * KIB);
    assert_eq!((e["depth"].as_u64(), e["zero"].as_bool()), (Some(0), Some(true)), "{e}");
    assert!(e.get("offset").is_none(), "{e}");

    let expected = lab.verify(&top);
    let chain = Chain::open(&top, &OpenOptions::default()).unwrap();
    for (off, len) in [(64 * KIB, 128 * KIB), (1024 * KIB, 64 * KIB), (768 * KIB, 64 * KIB)] {
        let mut buf = vec![0xffu8; len as usize];
        chain.read_exact_at(off, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0), "zero cluster at {off} read non-zero bytes");
        assert!(expected[off as usize..(off + len) as usize].iter().all(|&x| x == 0));
    }
    // The library reports the zero-with-offset cluster as zero, not data.
    let img = chain.layers()[0].image().unwrap();
    assert_eq!(img.map(64 * KIB).unwrap().0, Mapping::Zero);
}

/// Compressed clusters: deflate written by `qemu-io write -c`, zstd by
/// `qemu-img convert -c`; compressed data is packed so that many clusters
/// cross a host cluster boundary.
#[test]
fn compressed_clusters_deflate_and_zstd() {
    let mut lab = Lab::new(4);
    for cluster in [4 * KIB, 64 * KIB] {
        let size = 2 * MIB;
        // Source: compressible random data with a few zero and incompressible runs.
        let mut raw = compressible(&mut lab.rng, size as usize);
        raw[(100 * KIB) as usize..(300 * KIB) as usize].fill(0);
        lab.rng.fill(&mut raw[MIB as usize..(MIB + 100 * KIB) as usize]);
        let src = lab.path(&format!("src-{cluster}.raw"));
        std::fs::write(&src, &raw).unwrap();

        // deflate via qemu-io write -c, cluster by cluster.
        let defl = lab.create(&format!("deflate-{cluster}.qcow2"), size, &format!("cluster_size={cluster}"), None);
        let mut cmds = Vec::new();
        for c in 0..size / cluster {
            let f = lab.path(&format!("c-{cluster}-{c}.bin"));
            let at = (c * cluster) as usize;
            std::fs::write(&f, &raw[at..at + cluster as usize]).unwrap();
            cmds.push(format!("write -c -s {} {} {cluster}", f.display(), c * cluster));
        }
        qemu_io(&defl, "qcow2", &cmds);
        // Then plain writes over some compressed clusters, and zeroing.
        let more = vec![lab.data(cluster + 100, 3 * cluster), format!("write -z {} {}", 20 * cluster, 2 * cluster)];
        qemu_io(&defl, "qcow2", &more);
        let expected = lab.verify(&defl);
        assert!(expected[..(cluster + 100) as usize] == raw[..(cluster + 100) as usize]);
        assert_compressed_crossing(&defl, 2);

        // zstd via qemu-img convert -c.
        let zstd = lab.path(&format!("zstd-{cluster}.qcow2"));
        run(tool("qemu-img")
            .args(["convert", "-c", "-f", "raw", "-O", "qcow2", "-o"])
            .arg(format!("compression_type=zstd,cluster_size={cluster}"))
            .arg(&src)
            .arg(&zstd));
        assert_eq!(qemu_info(&zstd)["format-specific"]["data"]["compression-type"], "zstd");
        let expected = lab.verify(&zstd);
        assert!(expected == raw);
        assert_compressed_crossing(&zstd, 2);
    }
}

/// Asserts the image holds compressed clusters whose data crosses a host
/// cluster boundary (at least `min` of them), so that case is really tested.
fn assert_compressed_crossing(img: &Path, min: usize) {
    let chain = Chain::open(img, &OpenOptions::default()).unwrap();
    let image = chain.layers()[0].image().unwrap();
    let cs = image.header.cluster.bytes();
    let (mut crossing, mut odd) = (0, 0);
    for c in 0..image.header.size / cs {
        if let (Mapping::Compressed { host, len }, _) = image.map(c * cs).unwrap() {
            // Bit 0 of the descriptor is where a zero flag would be: the
            // compressed bit must be checked first.
            odd += host & 1;
            // The length is rounded up to whole sectors, and sectors never
            // straddle clusters, so the rounded end tells the crossing.
            if host / cs != (host + len - 1) / cs {
                crossing += 1;
            }
        }
    }
    assert!(crossing >= min, "{}: only {crossing} compressed clusters cross a host cluster", img.display());
    assert!(odd > 0, "{}: no compressed cluster at an odd host offset", img.display());
}

/// Extended L2 entries: 4 KiB writes and zeroing inside 64 KiB and 128 KiB
/// clusters over a backing file, so unallocated subclusters fall through.
#[test]
fn extended_l2_subclusters() {
    let mut lab = Lab::new(5);
    let size = 3 * MIB;
    let base = lab.create("base.qcow2", size, "cluster_size=4096", None);
    let fill = lab.data(0, size);
    qemu_io(&base, "qcow2", &[fill]);
    for cluster in [64 * KIB, 128 * KIB] {
        let top = lab.create(
            &format!("ext-{cluster}.qcow2"),
            size,
            &format!("extended_l2=on,cluster_size={cluster}"),
            Some(("base.qcow2", "qcow2")),
        );
        let mut cmds = Vec::new();
        // Compressed clusters first: QEMU compresses only into unallocated
        // clusters (their subcluster bitmap is unused).
        let third = size / cluster / 3;
        for i in 0..3 {
            // One per third of the disk, so never the same cluster twice.
            let c = i * third + lab.rng.below(third);
            let mut data = compressible(&mut lab.rng, cluster as usize);
            data[..8].copy_from_slice(&c.to_le_bytes());
            let f = lab.path(&format!("ext-c-{cluster}-{c}.bin"));
            std::fs::write(&f, &data).unwrap();
            cmds.push(format!("write -c -s {} {} {cluster}", f.display(), c * cluster));
        }
        for _ in 0..40 {
            let off = lab.rng.below(size / (4 * KIB)) * 4 * KIB;
            match lab.rng.below(6) {
                0 => cmds.push(format!("write -z {off} 4k")),
                1 => cmds.push(format!("discard {off} 4k")),
                _ => cmds.push(lab.data(off, 4 * KIB)),
            }
        }
        // And a few unaligned writes.
        for _ in 0..5 {
            let off = lab.rng.below(size - 10 * KIB);
            let len = 1 + lab.rng.below(9 * KIB);
            cmds.push(lab.data(off, len));
        }
        qemu_io(&top, "qcow2", &cmds);
        assert_eq!(qemu_info(&top)["format-specific"]["data"]["extended-l2"], true);
        lab.verify(&top);
    }
    // Extended L2 over a raw backing file.
    let raw = random_file(&lab.path("base.raw"), &mut lab.rng, size as usize);
    let top = lab.create("ext-raw.qcow2", size, "extended_l2=on", Some((s(&raw), "raw")));
    let cmds = vec![lab.data(8 * KIB, 4 * KIB), "write -z 40k 2k".into(), lab.data(200 * KIB + 1, 3000)];
    qemu_io(&top, "qcow2", &cmds);
    lab.verify(&top);
}

/// A QCOW2 image over a raw backing file, with the backing format given.
#[test]
fn raw_backing_file() {
    let mut lab = Lab::new(6);
    let size = 3 * MIB;
    // Smaller than the overlay, and not a whole number of sectors.
    random_file(&lab.path("disk.raw"), &mut lab.rng, (2 * MIB + 100) as usize);
    let top = lab.create("top.qcow2", size, "cluster_size=16384", Some(("disk.raw", "raw")));
    let cmds = lab.random_ops(size, 20, 200 * KIB);
    qemu_io(&top, "qcow2", &cmds);
    lab.verify(&top);
}

/// QCOW2 backing chains of depth 2, 10 and 30, with layers of mixed cluster
/// sizes and versions, and backing files smaller than their overlays.
#[test]
fn qcow2_backing_chains() {
    let mut lab = Lab::new(7);
    for depth in [2usize, 10, 30] {
        let mut prev: Option<String> = None;
        let mut top = PathBuf::new();
        for level in 0..depth {
            // Each layer a little larger than the one below it.
            let size = MIB + level as u64 * 64 * KIB + 512;
            let cluster = [512, 4096, 65536, 16384][level % 4];
            let compat = if level % 5 == 3 { "0.10" } else { "1.1" };
            let name = format!("d{depth}-{level}.qcow2");
            let opts = format!("cluster_size={cluster},compat={compat}");
            top = lab.create(&name, size, &opts, prev.as_deref().map(|p| (p, "qcow2")));
            // A compressed cluster in every layer, at a cluster boundary
            // (first: QEMU compresses only into unallocated clusters).
            let c = lab.rng.below(size / cluster);
            let mut cmds = vec![format!("write -c -P {} {} {cluster}", level + 1, c * cluster)];
            cmds.extend(lab.random_ops(size, 6, 64 * KIB));
            qemu_io(&top, "qcow2", &cmds);
            prev = Some(name);
        }
        let chain = Chain::open(&top, &OpenOptions::default()).unwrap();
        assert_eq!(chain.layers().len(), depth);
        lab.verify(&top);
        assert!(lab.located > 0, "no data cluster of the depth-{depth} chain was located");
    }
}

/// Internal snapshots present: the active L1 table is served, not the
/// snapshot's.
#[test]
fn internal_snapshots_serve_the_active_state() {
    let mut lab = Lab::new(8);
    let size = 2 * MIB;
    let img = lab.create("snap.qcow2", size, "", None);
    let cmds = lab.random_ops(size, 10, 256 * KIB);
    qemu_io(&img, "qcow2", &cmds);
    let before = qemu_raw(&img, lab.dir.path());
    qemu_img(&["snapshot", "-c", "first", s(&img)]);
    let cmds = lab.random_ops(size, 10, 256 * KIB);
    qemu_io(&img, "qcow2", &cmds);
    qemu_img(&["snapshot", "-c", "second", s(&img)]);
    let cmds = lab.random_ops(size, 10, 256 * KIB);
    qemu_io(&img, "qcow2", &cmds);
    let now = lab.verify(&img);
    assert!(now != before, "the writes after the snapshot changed nothing");
    let chain = Chain::open(&img, &OpenOptions::default()).unwrap();
    assert_eq!(chain.layers()[0].image().unwrap().header.nb_snapshots, 2);
}

/// A persistent dirty bitmap (header extension and autoclear bit): ignored.
#[test]
fn bitmaps_extension_is_ignored() {
    let mut lab = Lab::new(9);
    let size = 2 * MIB;
    let img = lab.create("bm.qcow2", size, "", None);
    qemu_img(&["bitmap", "--add", s(&img), "b0"]);
    qemu_img(&["bitmap", "--add", "-g", "65536", s(&img), "b1"]);
    let cmds = lab.random_ops(size, 15, 256 * KIB);
    qemu_io(&img, "qcow2", &cmds);
    let chain = Chain::open(&img, &OpenOptions::default()).unwrap();
    assert!(chain.layers()[0].image().unwrap().header.has_bitmaps_ext);
    lab.verify(&img);
}

/// Dirty bit (a lazy_refcounts image whose writer died) and corrupt bit:
/// read anyway.
#[test]
fn dirty_and_corrupt_images_read_anyway() {
    let mut lab = Lab::new(10);
    let size = 2 * MIB;
    // Dirty: qemu-io aborts after its writes, so the bit stays set.
    let img = lab.create("dirty.qcow2", size, "lazy_refcounts=on", None);
    let mut cmds = lab.random_ops(size, 12, 256 * KIB);
    cmds.push("abort".into());
    let mut c = tool("qemu-io");
    c.args(["-f", "qcow2"]);
    for cmd in &cmds {
        c.arg("-c").arg(cmd);
    }
    let out = c.arg(&img).output().unwrap();
    assert!(!out.status.success(), "qemu-io abort should end the process");
    let incompat = header_u64(&img, 72);
    assert_eq!(incompat & 1, 1, "the image should be left dirty");
    lab.verify(&img);

    // Corrupt: set bit 1 on a clean image; the bytes are what qemu read
    // before the bit was set.
    let img = lab.create("corrupt.qcow2", size, "", None);
    let cmds = lab.random_ops(size, 12, 256 * KIB);
    qemu_io(&img, "qcow2", &cmds);
    let expected = qemu_raw(&img, lab.dir.path());
    set_header_u64(&img, 72, header_u64(&img, 72) | 2);
    lab.verify_against(&img, &expected);
    // Dirty bit set by hand as well.
    set_header_u64(&img, 72, header_u64(&img, 72) | 1);
    lab.verify_against(&img, &expected);
}

fn header_u64(img: &Path, at: usize) -> u64 {
    let b = std::fs::read(img).unwrap();
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn set_header_u64(img: &Path, at: u64, v: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&v.to_be_bytes(), at).unwrap();
}

/// Many threads reading one chain at once (the cache shared between them)
/// all get the right bytes.
#[test]
fn concurrent_reads() {
    let mut lab = Lab::new(11);
    let size = 4 * MIB;
    let base = lab.create("base.qcow2", size, "cluster_size=4096", None);
    let cmds = lab.random_ops(size, 30, 256 * KIB);
    qemu_io(&base, "qcow2", &cmds);
    let top = lab.create("top.qcow2", size, "cluster_size=65536", Some(("base.qcow2", "qcow2")));
    let mut cmds = vec!["write -c -P 9 1m 64k".to_string()];
    cmds.extend(lab.random_ops(size, 30, 256 * KIB));
    qemu_io(&top, "qcow2", &cmds);
    let expected = std::sync::Arc::new(qemu_raw(&top, lab.dir.path()));
    let chain = std::sync::Arc::new(Chain::open(&top, &OpenOptions::default()).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (chain, expected) = (chain.clone(), expected.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                for _ in 0..500 {
                    let off = rng.below(size);
                    let len = (rng.below(200 * KIB) + 1).min(size - off) as usize;
                    let mut buf = vec![0u8; len];
                    chain.read_exact_at(off, &mut buf).unwrap();
                    assert!(buf == expected[off as usize..off as usize + len], "thread {t}: read at {off}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Renames an image's backing-format header extension to an unknown type
/// (which readers skip), so the backing format must be probed.
fn forget_backing_format(img: &Path) {
    let mut b = std::fs::read(img).unwrap();
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let mut at = be32(&b, 100) as usize;
    loop {
        let (kind, len) = (be32(&b, at), be32(&b, at + 4) as usize);
        assert_ne!(kind, 0, "{}: no backing format extension", img.display());
        if kind == 0xe279_2aca {
            b[at..at + 4].copy_from_slice(&0x0bad_f00du32.to_be_bytes());
            break;
        }
        at += 8 + len.div_ceil(8) * 8;
    }
    std::fs::write(img, b).unwrap();
}

/// Backing files whose format the overlay does not record (probed: QCOW2
/// by its magic, else raw), and overlays smaller than their backing file.
#[test]
fn probed_backing_formats_and_smaller_overlays() {
    let mut lab = Lab::new(12);
    let size = 2 * MIB;
    random_file(&lab.path("disk.raw"), &mut lab.rng, size as usize);
    let mid = lab.create("mid.qcow2", size, "cluster_size=4096", Some(("disk.raw", "raw")));
    let cmds = lab.random_ops(size, 10, 128 * KIB);
    qemu_io(&mid, "qcow2", &cmds);
    let top = lab.create("top.qcow2", size, "", Some(("mid.qcow2", "qcow2")));
    let cmds = lab.random_ops(size, 10, 128 * KIB);
    qemu_io(&top, "qcow2", &cmds);
    let expected = qemu_raw(&top, lab.dir.path());
    forget_backing_format(&mid);
    forget_backing_format(&top);
    assert!(qemu_info(&top).get("backing-filename-format").is_none());
    assert!(qemu_info(&mid).get("backing-filename-format").is_none());
    lab.verify_against(&top, &expected);
    lab.verify(&top);

    // Overlays smaller than what they name: a QCOW2 and a raw backing file.
    for (name, backing, fmt) in [("small-q.qcow2", "top.qcow2", "qcow2"), ("small-r.qcow2", "disk.raw", "raw")] {
        let small = lab.create(name, MIB - 512, "cluster_size=65536", Some((backing, fmt)));
        let cmds = lab.random_ops(MIB - 512, 5, 64 * KIB);
        qemu_io(&small, "qcow2", &cmds);
        let got = lab.verify(&small);
        assert_eq!(got.len() as u64, MIB - 512);
    }
}

/// `backchain info --json` against `qemu-img info --backing-chain` and
/// `qemu-img map`, layer by layer, over images of many variants.
#[test]
fn info_matches_qemu_img_info() {
    let mut lab = Lab::new(13);
    let size = 2 * MIB;
    random_file(&lab.path("base.raw"), &mut lab.rng, size as usize);
    let v2 = lab.create("v2.qcow2", size, "compat=0.10,cluster_size=4096", Some(("base.raw", "raw")));
    let rc1 = lab.create("rc1.qcow2", size, "refcount_bits=1,lazy_refcounts=on", Some(("v2.qcow2", "qcow2")));
    let ext = lab.create("ext.qcow2", size, "extended_l2=on,cluster_size=65536", Some(("rc1.qcow2", "qcow2")));
    for img in [&v2, &rc1, &ext] {
        let mut cmds = vec!["write -c -P 3 0 64k".to_string()];
        cmds.extend(lab.random_ops(size, 8, 100 * KIB));
        qemu_io(img, "qcow2", &cmds);
    }
    let zstd = lab.path("zstd.qcow2");
    run(tool("qemu-img").args(["convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd"]).arg(&ext).arg(&zstd));
    let snap = lab.create("snap.qcow2", size, "refcount_bits=64", None);
    let cmds = lab.random_ops(size, 8, 100 * KIB);
    qemu_io(&snap, "qcow2", &cmds);
    qemu_img(&["snapshot", "-c", "s1", s(&snap)]);
    qemu_img(&["snapshot", "-c", "s2", s(&snap)]);

    for top in [&ext, &zstd, &snap] {
        let out = run(backchain().args(["info", "--json"]).arg(top));
        let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let out = run(tool("qemu-img").args(["info", "--backing-chain", "--output=json"]).arg(top));
        let theirs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let layers = ours["layers"].as_array().unwrap();
        assert_eq!(layers.len(), theirs.len(), "{}: depth", top.display());
        assert_eq!(ours["depth"], theirs.len());
        assert_eq!(ours["virtual_size"], theirs[0]["virtual-size"]);
        for (o, t) in layers.iter().zip(&theirs) {
            let ctx = format!("{}: {o} vs {t}", top.display());
            let name = |v: &serde_json::Value| Path::new(v.as_str().unwrap()).file_name().unwrap().to_owned();
            assert_eq!(name(&o["path"]), name(&t["filename"]), "{ctx}");
            assert_eq!(o["format"], t["format"], "{ctx}");
            assert_eq!(o["virtual_size"], t["virtual-size"], "{ctx}");
            assert_eq!(o["backing_file"], t.get("backing-filename").cloned().unwrap_or_default(), "{ctx}");
            assert_eq!(o["backing_format"], t.get("backing-filename-format").cloned().unwrap_or_default(), "{ctx}");
            if t["format"] != "qcow2" {
                continue;
            }
            let spec = &t["format-specific"]["data"];
            assert_eq!(o["cluster_size"], t["cluster-size"], "{ctx}");
            let version = if spec["compat"] == "0.10" { 2 } else { 3 };
            assert_eq!(o["version"], version, "{ctx}");
            if version == 3 {
                assert_eq!(o["refcount_bits"], spec["refcount-bits"], "{ctx}");
                let ct = if spec["compression-type"] == "zlib" { "deflate" } else { "zstd" };
                assert_eq!(o["compression_type"], ct, "{ctx}");
                let features: Vec<&str> =
                    o["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
                assert_eq!(features.contains(&"extended-l2"), spec["extended-l2"] == true, "{ctx}");
                assert_eq!(features.contains(&"lazy-refcounts"), spec["lazy-refcounts"] == true, "{ctx}");
            }
            let snapshots = t.get("snapshots").and_then(|s| s.as_array()).map_or(0, |a| a.len());
            assert_eq!(o["snapshots"], snapshots, "{ctx}");
            // Allocated guest bytes: what qemu-img map shows as this
            // image's own data (depth 0 of the layer opened alone).
            let layer = lab.path(name(&o["path"]).to_str().unwrap());
            let own: u64 = qemu_map(&layer)
                .iter()
                .filter(|e| e["depth"] == 0 && e["data"] == true)
                .map(|e| e["length"].as_u64().unwrap())
                .sum();
            assert_eq!(o["allocated_bytes"], own, "{ctx}");
        }
    }
}

/// An image opened through a symlink in another folder: its relative
/// backing name is resolved against the symlink's folder, as QEMU does
/// (a decoy of the same name next to the target proves which one is read).
#[test]
fn symlinked_image_resolves_backing_like_qemu() {
    let mut lab = Lab::new(14);
    let size = MIB;
    std::fs::create_dir(lab.path("sub")).unwrap();
    for name in ["base.qcow2", "sub/base.qcow2"] {
        let b = lab.create(name, size, "", None);
        let fill = lab.data(0, size);
        qemu_io(&b, "qcow2", &[fill]);
    }
    let top = lab.create("sub/top.qcow2", size, "", Some(("base.qcow2", "qcow2")));
    let cmds = lab.random_ops(size, 5, 64 * KIB);
    qemu_io(&top, "qcow2", &cmds);
    let link = lab.path("link.qcow2");
    std::os::unix::fs::symlink("sub/top.qcow2", &link).unwrap();
    let via_link = lab.verify(&link);
    let direct = lab.verify(&top);
    assert!(via_link != direct, "the two base images should give different disks");
    // A chain through a symlinked backing file: the next name is resolved
    // against the folder of the symlink too.
    std::os::unix::fs::symlink("sub/top.qcow2", lab.path("top-link.qcow2")).unwrap();
    let over = lab.create("over.qcow2", size, "", Some(("top-link.qcow2", "qcow2")));
    let expected = lab.verify(&over);
    assert!(expected == via_link);
}
