//! Digest maps cost data, not virtual size (issue 12, item 12): a thin
//! 1 TiB QCOW2 made by qemu-img with a few MiB of data backs up, verifies
//! and stores its map in proportion to that data; a disk past the named
//! size limit is refused; maps in the version written before (dense) still
//! read, verify and serve as the parent of an incremental.
//!
//! Oracles: `qemu-img compare` between the source and the backup image,
//! `qemu-img check`, and digests computed here from the raw bytes.

mod common;
use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const CLUSTER: usize = 64 << 10;

fn bc(repo: &Path) -> std::process::Command {
    let mut c = backchain();
    c.arg("--repo").arg(repo);
    c
}

fn backup(repo: &Path, vm: &str, disk: &Path) -> Value {
    let out = run(bc(repo).args(["backup", "--vm", vm, "--json", "--disk"]).arg(disk));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn image_of(repo: &Path, b: &Value) -> (std::path::PathBuf, std::path::PathBuf) {
    let image = repo.join(b["disks"][0]["image_path"].as_str().unwrap());
    let map = image.with_extension("digests");
    (image, map)
}

fn same_content(a: &Path, b: &Path) {
    qemu_img(&["compare", "-f", "qcow2", "-F", "qcow2", a.to_str().unwrap(), b.to_str().unwrap()]);
    qemu_img(&["check", b.to_str().unwrap()]);
}

#[test]
fn a_thin_terabyte_costs_its_data() {
    let d = tempdir();
    let (repo, src) = (d.path().join("repo"), d.path().join("thin.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", src.to_str().unwrap(), "1T"]);
    let cmds = ["write -P 17 0 4M", "write -P 34 300G 2M", "write -z 600G 1M", "write -c -P 51 1023G 64k"];
    qemu_io(&src, "qcow2", &cmds.map(String::from));
    // Before sparse maps this took 44 s (backup) and 77 s (verify) for a
    // 256 MiB map: the bound only catches a return to reading the whole
    // virtual size; the map size is the real check.
    let started = Instant::now();
    let full = backup(&repo, "thin", &src);
    assert_eq!(full["backup_type"], "full");
    assert_eq!(full["disks"][0]["virtual_size"], 1u64 << 40);
    let (image, map) = image_of(&repo, &full);
    let data_clusters = (4 + 2) * MIB / CLUSTER as u64 + 1;
    let map_len = fs::metadata(&map).unwrap().len();
    assert_eq!(map_len, 32 + 24 * data_clusters + 32, "one entry per data cluster");
    assert!(full["disks"][0]["stored_bytes"].as_u64().unwrap() < 16 * MIB, "{full}");
    same_content(&src, &image);
    let v = run(bc(&repo).arg("verify"));
    assert!(String::from_utf8_lossy(&v.stdout).contains("1 disk images verified"), "{v:?}");

    // An incremental: new data far out, zeros over old data.
    qemu_io(&src, "qcow2", &["write -P 68 700G 1M".into(), "write -z 0 1M".into()]);
    let inc = backup(&repo, "thin", &src);
    assert_eq!(inc["backup_type"], "incremental");
    assert_eq!(inc["disks"][0]["changed_bytes"], 2 * MIB, "{inc}");
    let (image, map) = image_of(&repo, &inc);
    // 16 clusters of new data, 16 that became zeros: as many entries.
    assert_eq!(fs::metadata(&map).unwrap().len(), 32 + 24 * data_clusters + 32);
    same_content(&src, &image);
    let v = run(bc(&repo).arg("verify"));
    assert!(String::from_utf8_lossy(&v.stdout).contains("2 disk images verified"), "{v:?}");
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}

#[test]
fn a_disk_past_the_size_limit_is_refused_by_name() {
    let d = tempdir();
    let (repo, src) = (d.path().join("repo"), d.path().join("huge.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", src.to_str().unwrap(), "65T"]);
    let err = run_fail(bc(&repo).args(["backup", "--vm", "huge", "--disk"]).arg(&src));
    assert!(err.contains("above the limit") && err.contains("64 TiB"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The version 1 digest of a cluster: BLAKE3's first 16 bytes, zeros for
/// an all-zero cluster.
fn digest(c: &[u8]) -> [u8; 16] {
    let mut d = [0u8; 16];
    if c.iter().any(|&b| b != 0) {
        d.copy_from_slice(&blake3::hash(c).as_bytes()[..16]);
    }
    d
}

/// Rewrites a backup's map as the code before sparse maps wrote it (one
/// digest per cluster) and its catalog row's content digest and change id
/// as that code computed them (BLAKE3 over every digest).
fn make_dense(repo: &Path, map: &Path, raw: &[u8], image_rel: &str) {
    let clusters = raw.len().div_ceil(CLUSTER) as u64;
    let mut bytes = b"BCDIGST1".to_vec();
    bytes.extend_from_slice(&(CLUSTER as u32).to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&clusters.to_le_bytes());
    let mut content = blake3::Hasher::new();
    for c in raw.chunks(CLUSTER) {
        let d = digest(c);
        content.update(&d);
        bytes.extend_from_slice(&d);
    }
    let trailer = blake3::hash(&bytes);
    bytes.extend_from_slice(trailer.as_bytes());
    fs::write(map, bytes).unwrap();
    let c = content.finalize().to_hex().to_string();
    let sql =
        format!("UPDATE backup_disks SET content_digest = '{c}', change_id = '{c}' WHERE image_path = '{image_rel}';");
    run(tool("sqlite3").arg(repo.join("catalog.db")).arg(sql));
}

#[test]
fn dense_maps_from_before_still_verify_and_parent_incrementals() {
    let d = tempdir();
    let (repo, src) = (d.path().join("repo"), d.path().join("disk.raw"));
    let mut rng = Rng::new(12);
    let mut raw = vec![0u8; 4 * MIB as usize + 777];
    for c in [0usize, 3, 4, 9, 20, 64] {
        let at = c * CLUSTER;
        let end = (at + CLUSTER).min(raw.len());
        rng.fill(&mut raw[at..end]);
    }
    write(&src, &raw);
    let full = backup(&repo, "old", &src);
    let (_, map) = image_of(&repo, &full);
    make_dense(&repo, &map, &raw, full["disks"][0]["image_path"].as_str().unwrap());
    let v = run(bc(&repo).arg("verify"));
    assert!(String::from_utf8_lossy(&v.stdout).contains("1 disk images verified"), "{v:?}");

    // The dense map is the parent's base: only what changed is stored.
    let f = fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.write_all_at(&[9u8; 100], 5 * CLUSTER as u64).unwrap();
    f.write_all_at(&vec![0u8; CLUSTER], 3 * CLUSTER as u64).unwrap();
    let inc = backup(&repo, "old", &src);
    assert_eq!(inc["backup_type"], "incremental");
    assert_eq!(inc["disks"][0]["changed_bytes"], 2 * CLUSTER as u64, "{inc}");
    let (image, map) = image_of(&repo, &inc);
    assert_eq!(&fs::read(&map).unwrap()[..8], b"BCDIGST2");
    qemu_img(&["compare", "-f", "qcow2", "-F", "raw", image.to_str().unwrap(), src.to_str().unwrap()]);
    let v = run(bc(&repo).arg("verify"));
    assert!(String::from_utf8_lossy(&v.stdout).contains("2 disk images verified"), "{v:?}");

    // A dense map that disagrees with its image is still caught.
    let (_, old_map) = image_of(&repo, &full);
    let mut bytes = fs::read(&old_map).unwrap();
    let at = 32 + 16 * 9;
    bytes[at] ^= 1;
    let n = bytes.len() - 32;
    let trailer = blake3::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(trailer.as_bytes());
    fs::write(&old_map, bytes).unwrap();
    let out = bc(&repo).args(["verify", full["backup_id"].as_str().unwrap()]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && said.contains("FAULT") && said.contains("differs from its digest"), "{said}");
}
