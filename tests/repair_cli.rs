//! `backchain repair` and orphan files (issue 12 item 6): a catalog lost
//! (truncated) is rebuilt from the repository's images, with the same
//! backups, times, disks, chains and content digests as before, and every
//! restore point exports the bytes its source had (the source snapshots are
//! the oracle); an image that does not open or match its digest map is left
//! out with its reason; `verify` reports files no catalog row names, and
//! `repair --remove-orphans` removes them.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

fn bc(repo: &Path) -> std::process::Command {
    let mut c = backchain();
    c.arg("--repo").arg(repo);
    c
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Random data in about half of the 64 KiB clusters of a fresh disk, or
/// (`seed` again on an existing one) a few clusters changed.
fn scribble(path: &Path, size: u64, clusters: u64, rng: &mut Rng) {
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).unwrap();
    f.set_len(size).unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..clusters {
        rng.fill(&mut buf);
        f.write_all_at(&buf, rng.below(size / 65536) * 65536).unwrap();
    }
}

/// Backs up `disks` of `vm`; returns the backup id and a copy of each disk
/// as it was (the oracle for what the restore point holds).
fn backup(repo: &Path, vm: &str, disks: &[&Path], keep: &Path) -> (String, Vec<PathBuf>) {
    let mut c = bc(repo);
    c.args(["backup", "--vm", vm, "--json"]);
    for d in disks {
        c.arg("--disk").arg(d);
    }
    let id = json(&run(&mut c))["backup_id"].as_str().unwrap().to_string();
    let copies = disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = keep.join(format!("{id}-{i}.raw"));
            fs::copy(d, &p).unwrap();
            p
        })
        .collect();
    (id, copies)
}

/// What the catalog says of each backup, for comparing before and after:
/// type, status, and per disk its size, content digest and
/// the backup its parent image belongs to.
fn summary(repo: &Path) -> BTreeMap<String, Value> {
    let list = json(&run(bc(repo).args(["list", "--json"])));
    let mut parent_of: BTreeMap<i64, String> = BTreeMap::new();
    for b in list.as_array().unwrap() {
        for d in b["disks"].as_array().unwrap() {
            parent_of.insert(d["id"].as_i64().unwrap(), b["id"].as_str().unwrap().to_string());
        }
    }
    list.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let disks: Vec<Value> = b["disks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let parent = d["parent_id"].as_i64().map(|p| parent_of[&p].clone());
                    serde_json::json!([
                        d["disk_index"],
                        d["disk_type"],
                        d["virtual_size"],
                        d["content_digest"],
                        d["image_path"],
                        parent
                    ])
                })
                .collect();
            let v = serde_json::json!([b["vm"], b["backup_type"], b["status"], disks]);
            (b["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[test]
fn a_lost_catalog_is_rebuilt_from_the_images() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let keep = d.path().join("keep");
    fs::create_dir(&keep).unwrap();
    let mut rng = Rng::new(21);
    let (a, b, c) = (d.path().join("a.raw"), d.path().join("b.raw"), d.path().join("c.raw"));
    scribble(&a, 4 * MIB, 40, &mut rng);
    scribble(&b, 3 * MIB, 30, &mut rng);
    scribble(&c, 2 * MIB, 20, &mut rng);
    // VM web: two disks, a full and two incrementals. VM db: a full and two
    // incrementals, whose middle image is then moved away.
    let mut points = Vec::new();
    for round in 0..3 {
        if round > 0 {
            scribble(&a, 4 * MIB, 3, &mut rng);
            scribble(&b, 3 * MIB, 2, &mut rng);
            scribble(&c, 2 * MIB, 2, &mut rng);
        }
        points.push(backup(&repo, "web", &[&a, &b], &keep));
        points.push(backup(&repo, "db", &[&c], &keep));
    }
    let before = summary(&repo);
    assert_eq!(before.len(), 6);
    let (db_mid, db_top) = (points[3].0.clone(), points[5].0.clone());
    let moved = repo.join(format!("vms/db/disk-0/{db_mid}.qcow2"));
    fs::rename(&moved, d.path().join("moved.qcow2")).unwrap();
    // An image whose cluster differs from its digest map: left out too.
    let web0 = repo.join(format!("vms/web/disk-0/{}.qcow2", points[0].0));
    let damaged = repo.join("vms/web/disk-0/20200101T000000Z-dead00.qcow2");
    fs::copy(&web0, &damaged).unwrap();
    fs::copy(web0.with_extension("digests"), damaged.with_extension("digests")).unwrap();
    let map = qemu_map(&damaged);
    let data = map.iter().find(|e| e["data"] == true).unwrap()["offset"].as_u64().unwrap();
    fs::OpenOptions::new().write(true).open(&damaged).unwrap().write_all_at(b"garbage!", data).unwrap();

    fs::OpenOptions::new().write(true).open(repo.join("catalog.db")).unwrap().set_len(0).unwrap();
    let err = run_fail(bc(&repo).arg("list"));
    assert!(err.contains("missing or empty"), "{err}");

    let r = json(&run(bc(&repo).args(["repair", "--rebuild-catalog", "--json"])));
    let rebuild = &r["rebuild"];
    assert_eq!(rebuild["backups"], 4, "{r}");
    assert_eq!(rebuild["vms"], 2, "{r}");
    assert_eq!(rebuild["adopted"].as_array().unwrap().len(), 7, "{r}");
    let left: BTreeMap<&str, &str> = rebuild["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["image_path"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(left.len(), 2, "{r}");
    assert!(left[format!("vms/db/disk-0/{db_top}.qcow2").as_str()].contains("does not open"), "{r}");
    assert!(left["vms/web/disk-0/20200101T000000Z-dead00.qcow2"].contains("digest"), "{r}");
    let old = rebuild["old_catalog"].as_str().unwrap();
    assert!(Path::new(old).exists() && old.contains("catalog.db.before-repair-"), "{r}");
    // The files left out are orphans now, for the user to decide about.
    assert!(r["orphans"].as_array().unwrap().len() >= 3, "{r}");

    // The same backups, times, disks, chains and digests as before.
    let after = summary(&repo);
    let mut expected = before.clone();
    expected.remove(&db_mid);
    expected.remove(&db_top);
    assert_eq!(after, expected);
    // Times: the start an id carries (ids begin with it), the end the file's.
    for b in json(&run(bc(&repo).args(["list", "--json"]))).as_array().unwrap() {
        let started = b["started_at"].as_str().unwrap()[..19].replace(['-', ':'], "");
        assert_eq!(started, b["id"].as_str().unwrap()[..15], "{b}");
        assert!(b["ended_at"].as_str().unwrap()[..19] >= b["started_at"].as_str().unwrap()[..19], "{b}");
    }
    // Each restore point holds what its source held.
    for (id, copies) in points.iter().filter(|p| after.contains_key(&p.0)) {
        for (i, copy) in copies.iter().enumerate() {
            let out = d.path().join("export.raw");
            run(bc(&repo).args(["export", &format!("{id}:{i}"), "-o"]).arg(&out));
            assert!(fs::read(&out).unwrap() == fs::read(copy).unwrap(), "{id}:{i}");
        }
    }
    // verify reports the orphans; removing them leaves a clean repository.
    let err = run_fail(bc(&repo).arg("verify"));
    assert!(err.contains("faults"), "{err}");
    let out = bc(&repo).arg("verify").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("20200101T000000Z-dead00.qcow2") && text.contains("orphan file"), "{text}");
    let r = json(&run(bc(&repo).args(["repair", "--remove-orphans", "--json"])));
    assert!(r["removed"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().ends_with("dead00.qcow2")), "{r}");
    assert!(!damaged.exists());
    let v = run(bc(&repo).arg("verify"));
    assert!(String::from_utf8_lossy(&v.stdout).contains("7 disk images verified"));
    // The next backup continues web's chains.
    scribble(&a, 4 * MIB, 1, &mut rng);
    let mut cmd = bc(&repo);
    cmd.args(["backup", "--vm", "web", "--json", "--disk"]).arg(&a).arg("--disk").arg(&b);
    let next = json(&run(&mut cmd));
    assert_eq!(next["backup_type"], "incremental", "{next}");
    assert_eq!(next["disks"][0]["parent_backup"], points[4].0.as_str(), "{next}");
}

/// A file no catalog row names (an image copied in under another id) is a
/// fault for `verify`; `repair` lists it, `repair --remove-orphans` removes it.
#[test]
fn verify_reports_orphans_and_repair_removes_them() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let mut rng = Rng::new(22);
    let a = d.path().join("a.raw");
    scribble(&a, 2 * MIB, 10, &mut rng);
    let (id, _) = backup(&repo, "vm", &[&a], d.path());
    run(bc(&repo).arg("verify"));
    let image = repo.join(format!("vms/vm/disk-0/{id}.qcow2"));
    let stray = repo.join("vms/vm/disk-0/20200101T000000Z-abcdef.qcow2");
    fs::copy(&image, &stray).unwrap();
    let out = bc(&repo).arg("verify").output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAULT") && text.contains("20200101T000000Z-abcdef.qcow2"), "{text}");
    assert!(text.contains("no backup 20200101T000000Z-abcdef in the catalog"), "{text}");
    let listed = String::from_utf8_lossy(&run(bc(&repo).arg("repair")).stdout).into_owned();
    assert!(listed.contains("orphan  vms/vm/disk-0/20200101T000000Z-abcdef.qcow2"), "{listed}");
    assert!(stray.exists(), "repair without --remove-orphans removes nothing");
    run(bc(&repo).args(["repair", "--remove-orphans"]));
    assert!(!stray.exists() && image.exists());
    let v = run(bc(&repo).arg("verify"));
    assert!(String::from_utf8_lossy(&v.stdout).contains("1 disk images verified"));
}
