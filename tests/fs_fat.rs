//! FAT12/16/32 through the `Filesystem` trait against images built by the
//! real mkfs.fat and filled by mtools (`mcopy -s -m`) from a source tree this
//! test generates: every file's SHA-256, every folder's entries (long
//! names, no 8.3 duplicates), sizes and modification times (2 s) match.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use backchain::block::{MemImage, RawFile, ReadAt};
use backchain::volume::fs::{self, Filesystem, FsError, FsKind, NodeId, NodeKind};
use common::{Rng, random, run, sha_fs, tempdir, tool, write};
use sha2::{Digest, Sha256};

fn build_tree(root: &Path, many: usize) {
    let mut rng = Rng::new(12);
    write(&root.join("README.TXT"), b"plain 8.3 name\n");
    write(&root.join("lower.txt"), b"lower-case 8.3 name\n");
    write(&root.join("MixedCase.Txt"), b"mixed\n");
    write(&root.join("A long file name with spaces and dots.tar.gz"), &random(&mut rng, 3000));
    write(&root.join("empty"), b"");
    // Basic Multilingual Plane only: mtools truncates characters beyond it
    // to 16 bits (U+1F4C1 becomes U+F4C1), so it cannot be the oracle there.
    write(&root.join("Ünïcödé – ファイル Ωμέγα/naïve café.txt"), &random(&mut rng, 4321));
    write(&root.join("Ünïcödé – ファイル Ωμέγα/empty.bin"), b"");
    let mut deep = root.join("deep");
    for i in 0..12 {
        deep = deep.join(format!("Level {i:02} folder"));
    }
    write(&deep.join("bottom.bin"), &random(&mut rng, 999));
    // Distinct leading characters keep mtools' short-name generation fast
    // (it searches ~N tails linearly for names sharing their first 6).
    for i in 0..many {
        write(&root.join(format!("many/{i:05} long name.dat")), &random(&mut rng, (i * 13) % 200));
    }
    for (k, size) in [1usize, 511, 512, 513, 2047, 4096, 32_769, 100_000, 700_001].into_iter().enumerate() {
        write(&root.join(format!("sizes/size-{k}-{size}.bin")), &random(&mut rng, size));
    }
    write(&root.join("readonly.txt"), b"read only\n");
}

fn mtools(name: &str) -> Command {
    let mut c = tool(name);
    c.env("MTOOLS_SKIP_CHECK", "1").env("TZ", "UTC").env("LC_ALL", "C.UTF-8");
    c
}

fn make_image(src: &Path, img: &Path, fat: &str, size: &str, label: &str) {
    run(tool("truncate").args(["-s", size]).arg(img));
    run(tool("mkfs.fat").args(["-F", fat, "-n", label]).arg(img));
    let mut c = mtools("mcopy");
    c.args(["-s", "-m", "-i"]).arg(img);
    for e in std::fs::read_dir(src).unwrap() {
        c.arg(e.unwrap().path());
    }
    run(c.arg("::/"));
    run(mtools("mattrib").args(["+r", "-i"]).arg(img).arg("::/readonly.txt"));
}

fn open(img: &Path) -> Arc<dyn Filesystem> {
    let vol: Arc<dyn ReadAt> = Arc::new(RawFile::open(img).unwrap());
    fs::open(vol).unwrap().expect("FAT recognised")
}

fn compare(fs: &dyn Filesystem, dir: NodeId, src: &Path, mtimes: bool, files: &mut usize) {
    let entries = fs.read_dir(dir).unwrap();
    let mut got: Vec<String> = entries.iter().map(|e| String::from_utf8(e.name.clone()).unwrap()).collect();
    got.sort();
    let mut want: Vec<String> =
        std::fs::read_dir(src).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    want.sort();
    assert_eq!(got, want, "listing of {}", src.display());
    for e in entries {
        let path = src.join(std::str::from_utf8(&e.name).unwrap());
        let md = std::fs::metadata(&path).unwrap();
        let a = &e.attr;
        assert_eq!(fs.lookup(dir, &e.name).unwrap().attr, *a);
        assert_eq!(fs.stat(a.node).unwrap(), *a);
        if md.is_dir() {
            assert_eq!((a.kind, a.perm), (NodeKind::Directory, 0o755));
            compare(fs, a.node, &path, mtimes, files);
        } else {
            assert_eq!(a.kind, NodeKind::File);
            let ro = e.name == b"readonly.txt";
            assert_eq!(a.perm, if ro { 0o444 } else { 0o644 }, "{}", path.display());
            assert_eq!(a.size, md.len(), "size of {}", path.display());
            // FAT keeps local time in 2 s steps; mtools ran with TZ=UTC.
            let diff = md.mtime() - a.mtime.secs;
            assert!(
                !mtimes || (0..2).contains(&diff),
                "mtime of {}: {} vs {}",
                path.display(),
                a.mtime.secs,
                md.mtime()
            );
            let want: [u8; 32] = Sha256::digest(std::fs::read(&path).unwrap()).into();
            assert_eq!(sha_fs(fs, a.node, a.size), want, "content of {}", path.display());
            assert!(matches!(fs.read_link(a.node), Err(FsError::NotASymlink)));
            *files += 1;
        }
    }
}

fn check(fat: &str, kind: FsKind, size: &str, many: usize) {
    let t = tempdir();
    let src = t.path().join("src");
    build_tree(&src, many);
    let img = t.path().join("fat.img");
    let label = format!("BC{fat}");
    make_image(&src, &img, fat, size, &label);
    let fs = open(&img);
    assert_eq!(fs.kind(), kind);
    assert_eq!(fs.label(), Some(label));
    let mut files = 0;
    compare(&*fs, fs.root(), &src, true, &mut files);
    assert_eq!(files, many + 18);
    assert!(matches!(fs.read(fs.root(), 0, &mut [0u8; 4]), Err(FsError::IsADirectory)));
    assert!(matches!(fs.lookup(fs.root(), b"no such file"), Err(FsError::NotFound)));
    let st = fs.statfs().unwrap();
    assert!(st.free_bytes > 0 && st.free_bytes < st.total_bytes);
}

#[test]
fn fat12_matches_source_tree() {
    check("12", FsKind::Fat12, "24M", 1100);
}

#[test]
fn fat16_matches_source_tree() {
    check("16", FsKind::Fat16, "48M", 1100);
}

#[test]
fn fat32_matches_source_tree() {
    check("32", FsKind::Fat32, "64M", 1500);
}

/// A long name whose checksum does not match its short entry is ignored:
/// the 8.3 name mtools generated is shown instead.
#[test]
fn bad_long_name_checksum_falls_back_to_short_name() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src.join("A long file name.txt"), b"x");
    let img = t.path().join("fat.img");
    run(tool("truncate").args(["-s", "32M"]).arg(&img));
    run(tool("mkfs.fat").args(["-F", "16"]).arg(&img));
    run(mtools("mcopy").args(["-m", "-i"]).arg(&img).arg(src.join("A long file name.txt")).arg("::/"));
    let node = open(&img).lookup(ROOT, b"A long file name.txt").unwrap().attr.node;
    // The long-name entry sits right before its short entry; byte 13 is its
    // checksum.
    let mut data = std::fs::read(&img).unwrap();
    let short: [u8; 11] = data[node as usize..node as usize + 11].try_into().unwrap();
    data[node as usize - 32 + 13] ^= 0xFF;
    let vol: Arc<dyn ReadAt> = Arc::new(MemImage(data));
    let fs = fs::open(vol).unwrap().unwrap();
    let names: Vec<Vec<u8>> = fs.read_dir(fs.root()).unwrap().into_iter().map(|e| e.name).collect();
    let base = String::from_utf8_lossy(&short[..8]).trim_end().to_string();
    let ext = String::from_utf8_lossy(&short[8..]).trim_end().to_string();
    assert_eq!(names, vec![format!("{base}.{ext}").into_bytes()]);
}

const ROOT: NodeId = backchain::volume::fs::fat::ROOT_NODE;

#[test]
fn corrupt_images_never_panic() {
    let t = tempdir();
    let src = t.path().join("src");
    let mut rng = Rng::new(5);
    for i in 0..40 {
        write(&src.join(format!("dir {}/long file name {i}.bin", i % 4)), &random(&mut rng, (i * 1009) % 9000));
    }
    let img = t.path().join("fat.img");
    make_image_plain(&src, &img);
    let base = std::fs::read(&img).unwrap();
    let vol: Arc<dyn ReadAt> = Arc::new(MemImage(base.clone()));
    assert_eq!(backchain::volume::fs::fuzz::walk(&*fs::open(vol).unwrap().unwrap()), 44);
    // Boot sector, FATs, root folder and the first data clusters.
    let meta_end = 64 << 10;
    for round in 0..400 {
        let mut data = base.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(meta_end) as usize;
            data[at] = rng.next() as u8;
        }
        if round % 10 == 0 {
            data.truncate(rng.below(base.len() as u64) as usize);
        }
        backchain::volume::fs::fat::fuzz_open_walk(&data);
    }
}

fn make_image_plain(src: &Path, img: &Path) {
    run(tool("truncate").args(["-s", "1M"]).arg(img));
    run(tool("mkfs.fat").args(["-F", "12", "-s", "1"]).arg(img));
    let mut c = mtools("mcopy");
    c.args(["-s", "-m", "-i"]).arg(img);
    for e in std::fs::read_dir(src).unwrap() {
        c.arg(e.unwrap().path());
    }
    run(c.arg("::/"));
}

/// The shared fixtures (fixtures/build.sh). They are filled by mcopy in the
/// machine's time zone, so modification times are not compared here (the
/// tests above pin TZ=UTC for that).
#[test]
fn fixture_images_match_their_sources() {
    for (img, src, kind, label) in [
        ("fat32.img", "src-fat", FsKind::Fat32, "BC-FAT32"),
        ("fat16.img", "src-small", FsKind::Fat16, "BC-FAT16"),
        ("fat12.img", "src-small", FsKind::Fat12, "BC-FAT12"),
    ] {
        let fs = open(&fixtures::fixture(img));
        assert_eq!((fs.kind(), fs.label().as_deref()), (kind, Some(label)), "{img}");
        let mut files = 0;
        compare(&*fs, fs.root(), &fixtures::fixture(src), false, &mut files);
        assert!(files > 5, "{img}: {files} files");
    }
}

/// A cluster chain that links back to itself is reported as corrupt
/// instead of being followed forever.
#[test]
fn looping_cluster_chain_is_corrupt() {
    let t = tempdir();
    let src = t.path().join("src");
    let mut rng = Rng::new(77);
    let content = random(&mut rng, 5000);
    write(&src.join("looped.bin"), &content);
    let img = t.path().join("fat.img");
    make_image_plain(&src, &img);
    let node = open(&img).lookup(ROOT, b"looped.bin").unwrap().attr.node as usize;
    let mut data = std::fs::read(&img).unwrap();
    // The file's first cluster (DIR_FstClusLO) and the FAT12 entry for it:
    // 12 bits at byte c + c/2 of the first FAT (after the reserved sectors).
    let first = usize::from(u16::from_le_bytes([data[node + 26], data[node + 27]]));
    let fat =
        usize::from(u16::from_le_bytes([data[14], data[15]])) * usize::from(u16::from_le_bytes([data[11], data[12]]));
    let at = fat + first + first / 2;
    let old = u16::from_le_bytes([data[at], data[at + 1]]);
    let new = if first % 2 == 1 { (old & 0x000F) | ((first as u16) << 4) } else { (old & 0xF000) | first as u16 };
    data[at..at + 2].copy_from_slice(&new.to_le_bytes());
    let vol: Arc<dyn ReadAt> = Arc::new(MemImage(data));
    let fs = fs::open(vol).unwrap().unwrap();
    let mut buf = vec![0u8; content.len()];
    match fs.read(node as NodeId, 0, &mut buf) {
        Err(FsError::Corrupt { what, .. }) => assert!(what.contains("loops"), "{what}"),
        other => panic!("expected a corrupt chain, got {other:?}"),
    }
}
