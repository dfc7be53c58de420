//! A repository written by the code of commit 0d064fa (catalog schema 1,
//! fixtures/legacy-repo/) still opens, lists, browses, verifies and takes
//! new backups after the catalog's migrations carry it forward.

mod common;

use backchain::catalog::{BackupStatus, BackupType, SCHEMA_VERSION};
use backchain::repo::Repo;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const FULL: &str = "20261207T144023Z-33d07c";
const INCREMENTAL: &str = "20261207T144023Z-90f8bd";

/// Unpacks the fixture into `dir`; returns the repository folder.
fn unpack(dir: &Path) -> PathBuf {
    let packed = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy-repo/legacy-repo.tar.zst");
    let tarball = zstd::stream::decode_all(std::fs::File::open(packed).unwrap()).unwrap();
    tar::Archive::new(&tarball[..]).unpack(dir).unwrap();
    dir.join("legacy-repo")
}

fn bc(repo: &Path) -> std::process::Command {
    let mut c = backchain();
    c.arg("--repo").arg(repo);
    c
}

fn json(cmd: &mut std::process::Command) -> Value {
    serde_json::from_slice(&run(cmd).stdout).unwrap()
}

#[test]
fn legacy_catalog_migrates_and_reads_as_typed_rows() {
    let t = tempdir();
    let repo = unpack(t.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let r = Repo::open(&repo, rt.handle().clone()).unwrap();
    assert_eq!(r.db().schema_version().unwrap(), SCHEMA_VERSION);
    let list = r.db().list_backups(Some("legacy")).unwrap();
    let ids: Vec<&str> = list.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, [INCREMENTAL, FULL]);
    assert!(list.iter().all(|b| b.status == BackupStatus::Completed));
    assert_eq!(list[0].backup_type, BackupType::Incremental);
    assert_eq!(list[1].backup_type, BackupType::Full);
    // Times read back as the very text the old code stored.
    assert_eq!(list[1].started_at.to_string(), "2026-12-07T14:40:23.832Z");
    let point = r.restore_point(INCREMENTAL, Some(0)).unwrap();
    assert_eq!(point.disks[0].parent_id, Some(list[1].disks[0].id));
    r.close();
    // Opening again finds nothing more to migrate.
    let r = Repo::open(&repo, rt.handle().clone()).unwrap();
    assert_eq!(r.db().schema_version().unwrap(), SCHEMA_VERSION);
    r.close();
}

#[test]
fn legacy_repository_lists_browses_and_takes_an_incremental() {
    let t = tempdir();
    let repo = unpack(t.path());
    let list = json(bc(&repo).args(["list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[0]["id"], INCREMENTAL);
    assert_eq!(list[0]["status"], "completed");
    assert_eq!(list[1]["started_at"], "2026-12-07T14:40:23.832Z");

    // Browse: the volume folder of disk 0, then two files in it.
    let root = json(bc(&repo).args(["ls", &format!("{INCREMENTAL}:0"), "/", "--json"]));
    let volume = root.as_array().unwrap()[0]["path"].as_str().unwrap().to_string();
    assert_eq!(volume, "/Volume (4.2 MB)", "{root}");
    let hello = run(bc(&repo).args(["cat", &format!("{INCREMENTAL}:0"), &format!("{volume}/hello.txt")]));
    assert_eq!(hello.stdout, b"hello from the legacy repository\n");
    let later = run(bc(&repo).args(["cat", &format!("{INCREMENTAL}:0"), &format!("{volume}/data/later.txt")]));
    assert_eq!(later.stdout, b"written for the incremental\n");
    let seq = run(bc(&repo).args(["cat", &format!("{FULL}:0"), &format!("{volume}/data/seq.bin")]));
    assert_eq!(seq.stdout, (0..=255u8).cycle().take(65536).collect::<Vec<u8>>());

    // A new incremental on the legacy chain: the disk as restored, with a
    // changed cluster in the volume's free space.
    let disk = t.path().join("disk.img");
    run(bc(&repo).args(["export", &format!("{INCREMENTAL}:0"), "--format", "raw", "-o"]).arg(&disk));
    let mut bytes = std::fs::read(&disk).unwrap();
    let end = bytes.len();
    bytes[end - 65536..end - 32768].fill(0x5a);
    std::fs::write(&disk, &bytes).unwrap();
    let b = json(bc(&repo).args(["backup", "--vm", "legacy", "--type", "incremental", "--json", "--disk"]).arg(&disk));
    assert_eq!(b["backup_type"], "incremental", "{b}");
    let chains = json(bc(&repo).args(["chain", "legacy", "--json"]));
    let images: Vec<&str> =
        chains[0]["images"].as_array().unwrap().iter().map(|i| i["backup_id"].as_str().unwrap()).collect();
    assert_eq!(images, [FULL, INCREMENTAL, b["backup_id"].as_str().unwrap()]);
    // Every image, old and new, passes verify (chain links, digests).
    let v = run(bc(&repo).arg("verify"));
    assert!(String::from_utf8_lossy(&v.stdout).contains("3 disk images verified"));
    let new_id = format!("{}:0", b["backup_id"].as_str().unwrap());
    let hello = run(bc(&repo).args(["cat", &new_id, &format!("{volume}/hello.txt")]));
    assert_eq!(hello.stdout, b"hello from the legacy repository\n");
    let out = t.path().join("new.raw");
    run(bc(&repo).args(["export", &new_id, "--format", "raw", "-o"]).arg(&out));
    assert!(std::fs::read(&out).unwrap() == bytes);
}
