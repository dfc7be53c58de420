//! Partition tables of the fixture disks (built by fixtures/build.sh with
//! sgdisk/sfdisk), checked against the tools' own reading of them: sfdisk
//! --json for 512-byte-sector disks, fdisk -b 4096 for the 4Kn disk, blkid for
//! the filesystem signature of each partition. Then damage: a wiped primary
//! GPT header, absurd entry counts, truncated disks, a looping EBR chain and
//! random byte flips in the tables.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;

use std::io;
use std::path::Path;
use std::sync::Arc;

use backchain::block::{RawFile, ReadAt, Slice};
use backchain::volume::table::{
    FsHint, GPT_MAX_ENTRIES, Guid, PartKind, Scheme, Table, TableError, WHOLE_DISK, crc32, detect_fs_magic, read_table,
};
use common::{Rng, run, tool};
use fixtures::fixture;

fn open(name: &str) -> Arc<dyn ReadAt> {
    Arc::new(RawFile::open(&fixture(name)).unwrap())
}

/// A disk with some byte ranges replaced: damage without copying the image.
struct Overlay {
    inner: Arc<dyn ReadAt>,
    patches: Vec<(u64, Vec<u8>)>,
    size: u64,
}

impl Overlay {
    fn new(inner: Arc<dyn ReadAt>) -> Self {
        let size = inner.size();
        Overlay { inner, patches: Vec::new(), size }
    }
    fn patch(mut self, off: u64, data: Vec<u8>) -> Self {
        self.patches.push((off, data));
        self
    }
    fn disk(self) -> Arc<dyn ReadAt> {
        Arc::new(self)
    }
}

impl ReadAt for Overlay {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        backchain::block::check_range(offset, buf.len(), self.size)?;
        self.inner.read_exact_at(offset, buf)?;
        let end = offset + buf.len() as u64;
        for (p, data) in &self.patches {
            let (from, to) = ((*p).max(offset), (p + data.len() as u64).min(end));
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - p) as usize..(to - p) as usize]);
            }
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// One partition as an oracle reports it: (number, start, size) in bytes,
/// type (GUID text or MBR byte in hex), unique GUID, name.
type Row = (u32, u64, u64, String, Option<String>, Option<String>);

/// sfdisk --json, in bytes (sfdisk assumes 512-byte sectors for image files).
fn sfdisk(path: &Path) -> (String, Vec<Row>) {
    let out = run(tool("sfdisk").arg("--json").arg(path));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pt = &v["partitiontable"];
    let rows = pt["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let number = node.rsplit("img").next().unwrap().parse().unwrap();
            let s = |k: &str| p[k].as_str().map(str::to_string);
            (
                number,
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
                s("type").unwrap(),
                s("uuid"),
                s("name"),
            )
        })
        .collect();
    (pt["label"].as_str().unwrap().to_string(), rows)
}

/// Our reading, in the same shape.
fn rows(t: &Table) -> Vec<Row> {
    t.partitions
        .iter()
        .map(|p| match &p.kind {
            PartKind::Gpt { type_guid, unique_guid, name, .. } => {
                (p.number, p.start, p.size, type_guid.to_string(), Some(unique_guid.to_string()), Some(name.clone()))
            }
            PartKind::Mbr { type_byte, .. } => (p.number, p.start, p.size, format!("{type_byte:x}"), None, None),
            PartKind::Whole => (p.number, p.start, p.size, String::new(), None, None),
        })
        .collect()
}

/// The filesystem type blkid probes at a byte offset ("" when none).
fn blkid_type(path: &Path, offset: u64) -> String {
    let out = tool("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE", "-O"])
        .arg(offset.to_string())
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn hint_of_blkid(t: &str) -> FsHint {
    match t {
        "vfat" => FsHint::Fat,
        "ntfs" => FsHint::Ntfs,
        "ext2" | "ext3" | "ext4" => FsHint::Ext,
        "swap" => FsHint::Swap,
        _ => FsHint::Unknown,
    }
}

/// Every partition's signature agrees with blkid at the same offset.
fn check_hints(path: &Path, disk: &Arc<dyn ReadAt>, t: &Table) {
    for p in &t.partitions {
        let w = p.window(disk).unwrap();
        assert_eq!(detect_fs_magic(&w), hint_of_blkid(&blkid_type(path, p.start)), "partition {}", p.number);
    }
}

#[test]
fn gpt_disk_matches_sfdisk() {
    let disk = open("gpt.img");
    let t = read_table(&disk).unwrap();
    let (label, oracle) = sfdisk(&fixture("gpt.img"));
    assert_eq!(label, "gpt");
    assert_eq!(rows(&t), oracle);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let out = run(tool("sgdisk").arg("-p").arg(fixture("gpt.img")));
    let text = String::from_utf8(out.stdout).unwrap();
    let Scheme::Gpt { sector_size, disk_guid } = &t.scheme else { panic!("not GPT: {:?}", t.scheme) };
    assert_eq!(*sector_size, 512);
    assert!(text.contains(&format!("Disk identifier (GUID): {disk_guid}")), "{text}");
    let names: Vec<_> = t.partitions.iter().map(|p| p.type_name).collect();
    assert_eq!(
        names,
        [
            Some("EFI system partition"),
            Some("Microsoft basic data"),
            Some("Linux filesystem"),
            Some("Linux swap"),
            None
        ]
    );
    check_hints(&fixture("gpt.img"), &disk, &t);
    assert_eq!(detect_fs_magic(&t.partitions[3].window(&disk).unwrap()), FsHint::Swap);
}

#[test]
fn mbr_disk_matches_sfdisk() {
    let disk = open("mbr.img");
    let t = read_table(&disk).unwrap();
    let (label, mut oracle) = sfdisk(&fixture("mbr.img"));
    assert_eq!(label, "dos");
    // sfdisk lists the extended container (type 5) too; we list data partitions only.
    oracle.retain(|r| r.3 != "5");
    assert_eq!(rows(&t), oracle);
    assert_eq!(t.partitions.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2, 5, 6, 7]);
    let boot: Vec<bool> = t.partitions.iter().map(|p| matches!(p.kind, PartKind::Mbr { bootable: true, .. })).collect();
    assert_eq!(boot, [true, false, false, false, false]);
    check_hints(&fixture("mbr.img"), &disk, &t);
}

/// fdisk -b 4096: (number, start, size) in bytes, type GUID, unique GUID, name.
fn fdisk_4k(path: &Path) -> Vec<Row> {
    let out = run(tool("fdisk").args(["-b", "4096", "-l", "-o", "Device,Start,Sectors,Type-UUID,UUID,Name"]).arg(path));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .skip_while(|l| !l.starts_with("Device"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let number = f[0].rsplit("img").next().unwrap().parse().unwrap();
            let n = |s: &str| s.parse::<u64>().unwrap() * 4096;
            (number, n(f[1]), n(f[2]), f[3].to_string(), Some(f[4].to_string()), Some(f[5..].join(" ")))
        })
        .collect()
}

#[test]
fn gpt_4k_sectors_match_fdisk() {
    let disk = open("gpt4k.img");
    let t = read_table(&disk).unwrap();
    assert!(matches!(t.scheme, Scheme::Gpt { sector_size: 4096, .. }), "{:?}", t.scheme);
    let oracle = fdisk_4k(&fixture("gpt4k.img"));
    assert_eq!(oracle.len(), 2);
    assert_eq!(rows(&t), oracle);
    check_hints(&fixture("gpt4k.img"), &disk, &t);
}

#[test]
fn filesystem_without_table() {
    let path = fixture("nopart-ext4.img");
    let disk = open("nopart-ext4.img");
    let t = read_table(&disk).unwrap();
    assert_eq!(t.scheme, Scheme::None);
    assert_eq!(rows(&t), [(WHOLE_DISK, 0, disk.size(), String::new(), None, None)]);
    // The oracles agree there is no table and an ext4 at byte 0.
    let out = tool("blkid").args(["-p", "-o", "value", "-s", "PTTYPE"]).arg(&path).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().trim().is_empty());
    assert_eq!(blkid_type(&path, 0), "ext4");
    check_hints(&path, &disk, &t);
    // The manifests the NTFS fixture ships are well-formed (their users rely on it).
    assert!(fixtures::manifest("ntfs-reparse.txt").iter().all(|r| r.len() == 3 && r[0].starts_with("reparse/")));
    assert_eq!(fixtures::manifest("ntfs-streams.txt")[0][0], "README.txt:stream");
    // Whole-volume FAT and NTFS images carry 0x55AA but are not MBRs either.
    for name in ["fat32.img", "fat16.img", "fat12.img", "ntfs.img"] {
        let disk = open(name);
        let t = read_table(&disk).unwrap();
        assert_eq!(t.scheme, Scheme::None, "{name}");
        check_hints(&fixture(name), &disk, &t);
    }
}

/// Rewrites a GPT header's field and its CRC (header size 92, as sgdisk writes).
fn patched_header(disk: &dyn ReadAt, off: u64, field: usize, value: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 92];
    disk.read_exact_at(off, &mut h).unwrap();
    h[field..field + value.len()].copy_from_slice(value);
    h[16..20].fill(0);
    let crc = crc32(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

#[test]
fn damaged_primary_gpt_uses_backup() {
    for (name, sector) in [("gpt.img", 512u64), ("gpt4k.img", 4096)] {
        let disk = open(name);
        let good = read_table(&disk).unwrap();
        // Header zeroed, signature and all.
        let t = read_table(&Overlay::new(disk.clone()).patch(sector, vec![0; sector as usize]).disk()).unwrap();
        assert_eq!(t.partitions, good.partitions, "{name}");
        assert_eq!(t.scheme, good.scheme);
        assert!(t.warnings.iter().any(|w| w.contains("backup")), "{:?}", t.warnings);
        // One flipped bit in the primary entry array.
        let mut b = [0u8; 1];
        disk.read_exact_at(2 * sector + 3, &mut b).unwrap();
        let t = read_table(&Overlay::new(disk.clone()).patch(2 * sector + 3, vec![b[0] ^ 0x10]).disk()).unwrap();
        assert_eq!(t.partitions, good.partitions, "{name}");
        // Both copies gone: an error.
        let last = disk.size() / sector - 1;
        let both = Overlay::new(disk.clone())
            .patch(sector, vec![0; sector as usize])
            .patch(last * sector, vec![0; sector as usize])
            .disk();
        assert!(matches!(read_table(&both), Err(TableError::Corrupt { .. })), "{name}");
    }
}

#[test]
fn absurd_entry_counts_are_errors() {
    let disk = open("gpt.img");
    let last = disk.size() - 512;
    for count in [GPT_MAX_ENTRIES + 1, u32::MAX] {
        let v = count.to_le_bytes();
        let primary = patched_header(disk.as_ref(), 512, 80, &v);
        let backup = patched_header(disk.as_ref(), last, 80, &v);
        // Primary alone: the backup still reads.
        let t = read_table(&Overlay::new(disk.clone()).patch(512, primary.clone()).disk()).unwrap();
        assert_eq!(t.partitions.len(), 5);
        let both = Overlay::new(disk.clone()).patch(512, primary).patch(last, backup).disk();
        assert!(matches!(read_table(&both), Err(TableError::Unsupported { .. })), "count {count}");
    }
    // An entry size the spec does not allow.
    let primary = patched_header(disk.as_ref(), 512, 84, &100_000u32.to_le_bytes());
    let backup = patched_header(disk.as_ref(), last, 84, &100_000u32.to_le_bytes());
    assert!(read_table(&Overlay::new(disk.clone()).patch(512, primary).patch(last, backup).disk()).is_err());
}

#[test]
fn truncated_disks() {
    for name in ["gpt.img", "mbr.img", "gpt4k.img"] {
        let disk = open(name);
        let good = read_table(&disk).unwrap();
        // Cut inside the partitions: each partition is clamped or dropped, never past the end.
        for cut in [disk.size() / 2, disk.size() - 4096, 3 * 1024 * 1024] {
            let short: Arc<dyn ReadAt> = Arc::new(Slice::new(disk.clone(), 0, cut).unwrap());
            match read_table(&short) {
                Ok(t) => {
                    assert!(t.partitions.len() <= good.partitions.len());
                    for p in &t.partitions {
                        assert!(p.start + p.size <= cut, "{name} cut {cut}: {p:?}");
                        let orig = good.partitions.iter().find(|g| g.number == p.number).unwrap();
                        assert_eq!(p.start, orig.start);
                    }
                    assert!(!t.warnings.is_empty() || t.partitions == good.partitions, "{name} cut {cut}");
                }
                // The MBR's later EBRs are gone: an error naming the offset.
                Err(e) => assert!(name == "mbr.img" && matches!(e, TableError::Io { .. }), "{name} {cut}: {e}"),
            }
        }
        // Cut inside the table itself.
        for cut in [0u64, 300, 1000, 5000] {
            let short: Arc<dyn ReadAt> = Arc::new(Slice::new(disk.clone(), 0, cut).unwrap());
            if let Ok(t) = read_table(&short) {
                // Too short to hold the table: read as "no table", never an invented partition.
                assert_eq!(t.scheme, Scheme::None, "{name} cut {cut}");
                assert!(t.partitions.iter().all(|p| p.number == WHOLE_DISK && p.size == cut));
            }
        }
    }
}

/// The EBR chain of mbr.img: the LBAs of its EBRs, in order.
fn ebr_chain(disk: &dyn ReadAt, ext_start: u64) -> Vec<u64> {
    let mut out = vec![ext_start];
    loop {
        let mut s = [0u8; 512];
        disk.read_exact_at(out.last().unwrap() * 512, &mut s).unwrap();
        let link = &s[446 + 16..446 + 32];
        if link[4] == 0 {
            return out;
        }
        out.push(ext_start + u64::from(u32::from_le_bytes(link[8..12].try_into().unwrap())));
    }
}

#[test]
fn looping_extended_chain_is_an_error() {
    let disk = open("mbr.img");
    let (_, oracle) = sfdisk(&fixture("mbr.img"));
    let ext = oracle.iter().find(|r| r.3 == "5").unwrap().1 / 512;
    let chain = ebr_chain(disk.as_ref(), ext);
    assert_eq!(chain.len(), 3, "three logicals, three EBRs");
    // The last EBR links back to the first.
    let mut link = vec![0u8; 16];
    link[4] = 0x05;
    link[12] = 1;
    let looped = Overlay::new(disk.clone()).patch(chain[2] * 512 + 446 + 16, link.clone()).disk();
    assert!(matches!(read_table(&looped), Err(TableError::Corrupt { .. })));
    // The second EBR links to itself.
    link[8..12].copy_from_slice(&u32::try_from(chain[1] - ext).unwrap().to_le_bytes());
    let looped = Overlay::new(disk.clone()).patch(chain[1] * 512 + 446 + 16, link).disk();
    assert!(matches!(read_table(&looped), Err(TableError::Corrupt { .. })));
}

#[test]
fn random_damage_never_panics() {
    // Flip bytes in the tables of the real disks: every result is an error or
    // a table whose partitions lie inside the disk.
    let mut rng = Rng::new(4);
    for (name, hot) in [("gpt.img", 0..20 * 1024u64), ("gpt4k.img", 0..6 * 4096), ("mbr.img", 0..512)] {
        let disk = open(name);
        let mut hot_ranges = vec![hot];
        if name == "mbr.img" {
            let (_, oracle) = sfdisk(&fixture(name));
            let ext = oracle.iter().find(|r| r.3 == "5").unwrap().1 / 512;
            hot_ranges.extend(ebr_chain(disk.as_ref(), ext).iter().map(|l| l * 512 + 446..l * 512 + 512));
        } else {
            hot_ranges.push(disk.size() - 20 * 1024..disk.size());
        }
        let mut ok = 0;
        for _ in 0..1500 {
            let mut o = Overlay::new(disk.clone());
            for _ in 0..1 + rng.below(4) {
                let r = &hot_ranges[rng.below(hot_ranges.len() as u64) as usize];
                let off = r.start + rng.below(r.end - r.start);
                o = o.patch(off, vec![rng.next() as u8]);
            }
            let d = o.disk();
            if let Ok(t) = read_table(&d) {
                ok += 1;
                for p in &t.partitions {
                    assert!(p.start.checked_add(p.size).is_some_and(|e| e <= d.size()), "{name}: {p:?}");
                    let _ = detect_fs_magic(&p.window(&d).unwrap());
                }
            }
        }
        // Most flips land in unused bytes or are repaired by the backup copy.
        assert!(ok > 0, "{name}: every mutation failed");
    }
}

#[test]
fn guid_text_matches_sgdisk() {
    // sgdisk -i prints the unique GUID of partition 1 of gpt.img.
    let out = run(tool("sgdisk").args(["-i", "1"]).arg(fixture("gpt.img")));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with("Partition unique GUID:")).unwrap();
    let g = Guid::parse(line.rsplit(' ').next().unwrap()).unwrap();
    let t = read_table(&open("gpt.img")).unwrap();
    assert!(matches!(&t.partitions[0].kind, PartKind::Gpt { unique_guid, .. } if *unique_guid == g));
}

/// Entries the table cannot use are said in the disk's README, never
/// dropped silently: a GPT entry whose last LBA is before its first, and one
/// that starts past the disk's end (CRCs fixed up, so the table is valid).
#[test]
fn unusable_entries_are_listed_with_the_reason() {
    let t = common::tempdir();
    let img = t.path().join("gpt.img");
    std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
    run(tool("sgdisk").args(["-n", "1:2048:4095", "-n", "2:4096:6143", "-n", "3:6144:8191"]).arg(&img));
    // Entry 2: first 4096, last 4000; entry 3 starts at LBA 10^9. Then the
    // entry array's CRC and the header's CRC, as sgdisk computes them.
    let fix = r#"
import struct, sys, zlib
f = open(sys.argv[1], "r+b"); d = bytearray(f.read())
e = 1024
struct.pack_into("<Q", d, e + 128 + 40, 4000)
struct.pack_into("<QQ", d, e + 256 + 32, 10**9, 10**9 + 10)
n, size = struct.unpack_from("<II", d, 512 + 80)
struct.pack_into("<I", d, 512 + 88, zlib.crc32(bytes(d[e:e + n * size])))
struct.pack_into("<I", d, 512 + 16, 0)
struct.pack_into("<I", d, 512 + 16, zlib.crc32(bytes(d[512:512 + 92])))
f.seek(0); f.write(d)
"#;
    run(tool("python3").args(["-c", fix]).arg(&img));
    let img_s = img.to_str().unwrap();
    let out = run(common::backchain().args(["ls", img_s, "/"]));
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.contains("Partition 1 ") && !list.contains("Partition 2") && !list.contains("Partition 3"), "{list}");
    let readme = String::from_utf8(run(common::backchain().args(["cat", img_s, "/README.txt"])).stdout).unwrap();
    assert!(readme.contains("partition 2: invalid LBA range 4096..=4000"), "{readme}");
    assert!(readme.contains("partition 3: starts at byte"), "{readme}");
}

/// A FAT volume without a partition table whose boot sector has a broken
/// field: sector 0 ends in 0x55AA and lists no partition, so the disk is
/// shown whole, with a README saying why and its raw bytes.
#[test]
fn a_damaged_unpartitioned_fat_is_shown_whole_with_its_bytes() {
    let t = common::tempdir();
    let img = t.path().join("fat.img");
    std::fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
    run(tool("mkfs.fat").args(["-F", "16"]).arg(&img));
    let mut d = std::fs::read(&img).unwrap();
    d[11..13].copy_from_slice(&[0, 0]); // bytes per sector
    std::fs::write(&img, &d).unwrap();
    let img_s = img.to_str().unwrap();
    let list = String::from_utf8(run(common::backchain().args(["ls", img_s, "/"])).stdout).unwrap();
    assert!(list.contains("README.txt") && list.contains("Volume (33.6 MB)"), "{list}");
    let vol = String::from_utf8(run(common::backchain().args(["ls", img_s, "/Volume (33.6 MB)"])).stdout).unwrap();
    assert!(vol.contains("README.txt") && vol.contains("partition.img"), "{vol}");
    let raw = run(common::backchain().args(["cat", img_s, "/Volume (33.6 MB)/partition.img"])).stdout;
    assert!(raw == d, "partition.img is the disk's bytes");
}
