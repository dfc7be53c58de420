//! The shared tree over the fixture disks (built with mkfs.*, ntfs-3g, sgdisk,
//! sfdisk): partition folders named as DESIGN.md says, every file equal to the
//! file it was built from, every folder listing exactly the source's entries;
//! unbrowsable and corrupt partitions explained; restore points of a chain
//! each showing their own version of the files.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;

use backchain::qcow2::OpenOptions;
use backchain::tree::{self, Ino, Tree};
use backchain::volume::fs::NodeKind;
use common::*;
use fixtures::fixture;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn root_names(t: &Tree) -> Vec<String> {
    t.read_dir(tree::ROOT).unwrap().entries.iter().map(|n| n.name_lossy()).collect()
}

fn folder<'a>(names: &'a [String], prefix: &str) -> &'a str {
    names.iter().find(|n| n.starts_with(prefix)).unwrap_or_else(|| panic!("no folder {prefix}* in {names:?}"))
}

fn read_all(t: &Tree, ino: Ino, size: u64) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    let mut off = 0usize;
    while off < out.len() {
        // Odd-sized reads cross block, cluster and run boundaries.
        let end = (off + 200_003).min(out.len());
        let n = t.read(ino, off as u64, &mut out[off..end]).unwrap();
        assert!(n > 0, "short read at {off} of {size}");
        off += n;
    }
    let mut extra = [0u8; 16];
    assert_eq!(t.read(ino, size, &mut extra).unwrap(), 0, "bytes past the end");
    out
}

thread_local! {
    /// Bytes the zero-copy path (`Tree::locate`) served in this test.
    static LOCATED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn located() -> u64 {
    LOCATED.with(|c| c.get())
}

/// The file as the FUSE and HTTP servers assemble it: bytes of located
/// extents (lent from a memory map) where the tree has them, reads elsewhere.
fn read_located(t: &Tree, ino: Ino, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let at = out.len() as u64;
        let want = (size - at).min(300_007);
        match t.locate(ino, at, want) {
            Some(e) => {
                assert!(!e.is_empty() && e.len() <= want, "extent of {} bytes for {want}", e.len());
                out.extend_from_slice(e.bytes());
                LOCATED.with(|c| c.set(c.get() + e.len()));
            }
            None => {
                // Up to the next 512-byte boundary, where an extent may start.
                let mut b = vec![0u8; want.min(512 - at % 512) as usize];
                let n = t.read(ino, at, &mut b).unwrap();
                assert!(n > 0, "short read at {at} of {size}");
                out.extend_from_slice(&b[..n]);
            }
        }
    }
    assert!(t.locate(ino, size, 1).is_none(), "an extent past the end");
    out
}

/// Compares folder `ino` of the tree with `src`, recursively; `skip` names
/// entries of the tree the source does not have (lost+found, ...).
fn compare(t: &Tree, ino: Ino, src: &Path, skip: &[&str], check_links: bool) -> usize {
    let listing = t.read_dir(ino).unwrap();
    let mine: BTreeSet<Vec<u8>> = listing
        .entries
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| !skip.iter().any(|s| s.as_bytes() == n.as_slice()))
        .collect();
    let theirs: BTreeSet<Vec<u8>> = fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .filter(|n| {
            check_links || !fs::symlink_metadata(src.join(std::ffi::OsStr::from_bytes(n))).unwrap().is_symlink()
        })
        .collect();
    assert_eq!(
        mine.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect::<Vec<_>>(),
        theirs.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect::<Vec<_>>(),
        "listing of {}",
        src.display()
    );
    let mut files = 0;
    for n in listing.entries.iter().filter(|n| mine.contains(&n.name)) {
        let p = src.join(std::ffi::OsStr::from_bytes(&n.name));
        let meta = fs::symlink_metadata(&p).unwrap();
        match n.kind {
            NodeKind::Directory => {
                assert!(meta.is_dir(), "{} is a folder in the tree", p.display());
                files += compare(t, n.ino, &p, &[], check_links);
            }
            NodeKind::File => {
                assert!(meta.is_file(), "{} is a file in the tree", p.display());
                assert_eq!(n.size, meta.len(), "size of {}", p.display());
                let data = read_all(t, n.ino, n.size);
                let want = fs::read(&p).unwrap();
                assert!(data == want, "content of {}", p.display());
                assert!(read_located(t, n.ino, n.size) == want, "zero-copy content of {}", p.display());
                files += 1;
            }
            NodeKind::Symlink => {
                assert!(meta.is_symlink(), "{} is a symlink in the tree", p.display());
                assert_eq!(t.read_link(n.ino).unwrap(), fs::read_link(&p).unwrap().as_os_str().as_bytes());
            }
            _ => panic!("unexpected special file {}", p.display()),
        }
    }
    files
}

#[test]
fn gpt_disk_partitions_and_files() {
    let t = tree::for_image(&fixture("gpt.img"), &OpenOptions::default()).unwrap();
    let names = root_names(&t);
    assert_eq!(names.len(), 5, "{names:?}");
    let fat = folder(&names, "Partition 1 - BC-FAT32 (");
    let ntfs = folder(&names, "Partition 2 - BC-NTFS (");
    let ext = folder(&names, "Partition 3 - BC-EXT4 (");
    let swap = folder(&names, "Partition 4 - swap (");
    let unknown = folder(&names, "Partition 5 - mystery (");
    let f = fixtures::fixtures();
    // Each filesystem lends most file bytes straight from the image's map.
    let n = compare(&t, t.resolve(fat).unwrap().ino, &f.join("src-fat"), &[], false);
    assert!(n > 3000, "{n} files compared on FAT");
    let fat_located = located();
    assert!(fat_located > 1 << 20, "{fat_located} bytes located on FAT");
    let n = compare(&t, t.resolve(ntfs).unwrap().ino, &f.join("src-ntfs"), &["reparse"], false);
    assert!(n > 3000, "{n} files compared on NTFS");
    let ntfs_located = located() - fat_located;
    assert!(ntfs_located > 1 << 20, "{ntfs_located} bytes located on NTFS");
    let n = compare(&t, t.resolve(ext).unwrap().ino, &f.join("src"), &["lost+found"], true);
    assert!(n > 3000, "{n} files compared on ext4");
    let ext_located = located() - fat_located - ntfs_located;
    assert!(ext_located > 1 << 20, "{ext_located} bytes located on ext4");

    // Unbrowsable partitions: a reason, and their raw bytes.
    for (name, why) in [(swap, "Linux swap"), (unknown, "no filesystem")] {
        let dir = t.resolve(name).unwrap();
        assert!(dir.note.as_deref().unwrap_or("").contains(why), "{name}: {:?}", dir.note);
        let img = t.resolve(&format!("{name}/partition.img")).unwrap();
        let raw = read_all(&t, img.ino, img.size);
        let table = backchain::volume::table::read_table(
            &(std::sync::Arc::new(backchain::block::RawFile::open(&fixture("gpt.img")).unwrap())
                as std::sync::Arc<dyn backchain::block::ReadAt>),
        )
        .unwrap();
        let number: u32 = name[10..11].parse().unwrap();
        let p = table.partitions.iter().find(|p| p.number == number).unwrap();
        let disk = fs::read(fixture("gpt.img")).unwrap();
        assert!(raw == disk[p.start as usize..(p.start + p.size) as usize], "{name}/partition.img");
        let readme = t.resolve(&format!("{name}/README.txt")).unwrap();
        assert!(String::from_utf8(read_all(&t, readme.ino, readme.size)).unwrap().contains(why));
    }
    // Paths never leave the tree.
    assert!(t.resolve(&format!("{ext}/../{fat}")).is_err());
    assert!(t.resolve(&format!("{ext}/link-abs/x")).is_err());
}

#[test]
fn mbr_logical_partitions_and_4k_gpt() {
    let f = fixtures::fixtures();
    let t = tree::for_image(&fixture("mbr.img"), &OpenOptions::default()).unwrap();
    let names = root_names(&t);
    let numbers: Vec<&str> = names.iter().map(|n| n.split(' ').nth(1).unwrap()).collect();
    assert_eq!(numbers, ["1", "2", "5", "6", "7"], "{names:?}");
    compare(&t, t.resolve(folder(&names, "Partition 1 - BC-FAT12")).unwrap().ino, &f.join("src-small"), &[], false);
    compare(&t, t.resolve(folder(&names, "Partition 5 - BC-FAT16")).unwrap().ino, &f.join("src-small"), &[], false);
    compare(&t, t.resolve(folder(&names, "Partition 6 - BC-EXT4")).unwrap().ino, &f.join("src"), &["lost+found"], true);

    let t = tree::for_image(&fixture("gpt4k.img"), &OpenOptions::default()).unwrap();
    let names = root_names(&t);
    assert_eq!(names.len(), 2, "{names:?}");
    let ext = t.read_dir(t.resolve(&names[0]).unwrap().ino).unwrap();
    assert!(ext.get(b"many").is_some(), "{:?}", names);
    compare(&t, t.resolve(folder(&names, "Partition 2")).unwrap().ino, &f.join("src-fat"), &[], false);

    // No table: one `Volume (SIZE)` folder.
    let t = tree::for_image(&fixture("nopart-ext4.img"), &OpenOptions::default()).unwrap();
    let names = root_names(&t);
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("Volume ("), "{names:?}");
    compare(&t, t.resolve(&names[0]).unwrap().ino, &f.join("src"), &["lost+found"], true);
}

#[test]
fn a_corrupt_filesystem_leaves_the_others_browsable() {
    let d = tempdir();
    let disk = d.path().join("gpt.img");
    fs::copy(fixture("gpt.img"), &disk).unwrap();
    let t = tree::for_image(&disk, &OpenOptions::default()).unwrap();
    let names = root_names(&t);
    let ext = folder(&names, "Partition 3").to_string();
    drop(t);
    // Wreck the ext4 superblock (1024 bytes into the partition).
    let table = backchain::volume::table::read_table(
        &(std::sync::Arc::new(backchain::block::RawFile::open(&disk).unwrap())
            as std::sync::Arc<dyn backchain::block::ReadAt>),
    )
    .unwrap();
    let p = table.partitions.iter().find(|p| p.number == 3).unwrap();
    use std::os::unix::fs::FileExt;
    fs::OpenOptions::new().write(true).open(&disk).unwrap().write_all_at(&[0xA5; 1024], p.start + 1024).unwrap();
    let t = tree::for_image(&disk, &OpenOptions::default()).unwrap();
    let names = root_names(&t);
    assert_eq!(names.len(), 5, "{names:?}");
    // The label now comes from the GPT name: the superblock is gone.
    let broken = folder(&names, "Partition 3 - linux-root (");
    assert_ne!(broken, ext);
    let note = t.resolve(broken).unwrap().note.unwrap_or_default();
    assert!(!note.is_empty(), "no reason given for {broken}");
    let f = fixtures::fixtures();
    compare(&t, t.resolve(folder(&names, "Partition 1")).unwrap().ino, &f.join("src-fat"), &[], false);
    compare(&t, t.resolve(folder(&names, "Partition 2")).unwrap().ino, &f.join("src-ntfs"), &["reparse"], false);
}

#[test]
fn each_restore_point_shows_its_own_files() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let disk = d.path().join("disk.img");
    fs::copy(fixture("gpt.img"), &disk).unwrap();
    let full = run(backchain().arg("--repo").arg(&repo).args(["backup", "--vm", "pc", "--disk"]).arg(&disk));
    let full_id = String::from_utf8(full.stdout).unwrap().trim().to_string();

    // Change files on the ext4 partition through a loop mount.
    let table = backchain::volume::table::read_table(
        &(std::sync::Arc::new(backchain::block::RawFile::open(&disk).unwrap())
            as std::sync::Arc<dyn backchain::block::ReadAt>),
    )
    .unwrap();
    let p = table.partitions.iter().find(|p| p.number == 3).unwrap();
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    run(tool("mount").args(["-o", &format!("loop,offset={},sizelimit={}", p.start, p.size)]).arg(&disk).arg(&mnt));
    let new_text = b"changed after the full backup\n".repeat(1000);
    let result = std::panic::catch_unwind(|| {
        fs::write(mnt.join("README.txt"), &new_text).unwrap();
        fs::write(mnt.join("added.bin"), vec![7u8; 300_000]).unwrap();
    });
    run(tool("umount").arg(&mnt));
    result.unwrap();
    let inc = run(backchain().arg("--repo").arg(&repo).args(["backup", "--vm", "pc", "--disk"]).arg(&disk));
    let inc_id = String::from_utf8(inc.stdout).unwrap().trim().to_string();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let r = backchain::repo::Repo::open(&repo, rt.handle().clone()).unwrap();
    let old = backchain::restore::backup_tree(&r, &full_id, None).unwrap();
    let new = backchain::restore::backup_tree(&r, &inc_id, None).unwrap();
    let src = fixtures::fixtures().join("src");
    let ext_old = folder(&root_names_at(&old, "disk-0"), "Partition 3").to_string();
    let readme_old = old.resolve(&format!("disk-0/{ext_old}/README.txt")).unwrap();
    assert!(read_all(&old, readme_old.ino, readme_old.size) == fs::read(src.join("README.txt")).unwrap());
    assert!(old.resolve(&format!("disk-0/{ext_old}/added.bin")).is_err());
    let readme_new = new.resolve(&format!("disk-0/{ext_old}/README.txt")).unwrap();
    assert!(read_all(&new, readme_new.ino, readme_new.size) == new_text);
    let added = new.resolve(&format!("disk-0/{ext_old}/added.bin")).unwrap();
    assert!(read_all(&new, added.ino, added.size) == vec![7u8; 300_000]);
}

fn root_names_at(t: &Tree, path: &str) -> Vec<String> {
    t.read_dir(t.resolve(path).unwrap().ino).unwrap().entries.iter().map(|n| n.name_lossy()).collect()
}
