//! The backup engine against qemu-img as the oracle: a two-disk VM, a full
//! backup and three incrementals, job rules, bad sources and crash safety.

mod common;
use common::*;
use serde_json::Value;
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

/// A raw disk of `size` bytes: random data in about 60% of its 64 KiB
/// clusters, zeros elsewhere.
fn make_disk(path: &Path, size: u64, rng: &mut Rng) {
    let f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut buf = vec![0u8; 65536];
    for c in 0..size / 65536 {
        if rng.below(10) < 6 {
            rng.fill(&mut buf);
            f.write_all_at(&buf, c * 65536).unwrap();
        }
    }
}

/// Overwrites `count` random runs of 4 KiB-aligned bytes; returns bytes changed.
fn change(path: &Path, count: usize, rng: &mut Rng) -> u64 {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let mut total = 0;
    for _ in 0..count {
        let len = (1 + rng.below(16)) * 4096;
        let off = rng.below((size - len) / 4096) * 4096;
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        f.write_all_at(&buf, off).unwrap();
        total += len;
    }
    total
}

fn backup(repo: &Path, vm: &str, disks: &[&Path], extra: &[&str]) -> Value {
    let mut c = bc(repo);
    c.args(["backup", "--vm", vm, "--json"]).args(extra);
    for d in disks {
        c.arg("--disk").arg(d);
    }
    json(&run(&mut c))
}

fn snapshot(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    fs::copy(src, &p).unwrap();
    p
}

fn qemu_info(image: &Path) -> Value {
    let out = qemu_img(&["info", "--output=json", image.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_image(image: &Path, expected_raw: &Path) {
    let out = tool("qemu-img").args(["check", "--output=json"]).arg(image).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "qemu-img check failed for {}: {v}", image.display());
    assert_eq!(v.get("corruptions").and_then(Value::as_u64).unwrap_or(0), 0, "{v}");
    assert_eq!(v.get("leaks").and_then(Value::as_u64).unwrap_or(0), 0, "{v}");
    qemu_img(&["compare", "-f", "qcow2", "-F", "raw", image.to_str().unwrap(), expected_raw.to_str().unwrap()]);
}

fn partials(repo: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".partial") {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn two_disk_vm_full_then_three_incrementals() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let mut rng = Rng::new(7);
    let disk0 = d.path().join("disk0.raw");
    let disk1 = d.path().join("disk1.raw");
    make_disk(&disk0, 48 * MIB, &mut rng);
    make_disk(&disk1, 24 * MIB + 12345, &mut rng); // not a cluster multiple

    let mut history: Vec<(String, [PathBuf; 2])> = Vec::new();
    let full = backup(&repo, "web01", &[&disk0, &disk1], &[]);
    assert_eq!(full["backup_type"], "full");
    assert_eq!(full["vm"], "web01");
    let id = full["backup_id"].as_str().unwrap().to_string();
    history.push((id, [snapshot(&disk0, d.path(), "s0-0"), snapshot(&disk1, d.path(), "s0-1")]));

    for round in 1..=3 {
        if round == 3 {
            // A region whose data became a hole of the raw file (skipped
            // with SEEK_HOLE, never read) must read as zeros too: data
            // written first, so the parent surely holds data there.
            let f = fs::OpenOptions::new().write(true).open(&disk1).unwrap();
            let mut data = vec![0u8; 8 * 65536];
            rng.fill(&mut data);
            // In the fifth 4 MiB chunk, whose read buffer is a recycled one
            // that holds an earlier chunk's bytes.
            f.write_all_at(&data, 17 * MIB).unwrap();
            drop(f);
            let mid = backup(&repo, "web01", &[&disk0, &disk1], &[]);
            let id = mid["backup_id"].as_str().unwrap().to_string();
            history.push((id, [snapshot(&disk0, d.path(), "s3a-0"), snapshot(&disk1, d.path(), "s3a-1")]));
        }
        let mut changed = [change(&disk0, 8, &mut rng), change(&disk1, 4, &mut rng)];
        if round == 2 {
            // A region overwritten with zeros must read as zeros, not as the
            // parent's old data.
            let f = fs::OpenOptions::new().write(true).open(&disk0).unwrap();
            f.write_all_at(&vec![0u8; 3 * 65536 + 4096], 5 * MIB).unwrap();
            changed[0] += 3 * 65536 + 4096;
        }
        if round == 3 {
            run(tool("fallocate")
                .args(["--punch-hole", "--keep-size", "--offset"])
                .arg((17 * MIB + 65536).to_string())
                .args(["--length", &(5 * 65536).to_string()])
                .arg(&disk1));
            changed[1] += 5 * 65536;
        }
        let r = backup(&repo, "web01", &[&disk0, &disk1], &[]);
        assert_eq!(r["backup_type"], "incremental", "{r}");
        for (i, disk) in r["disks"].as_array().unwrap().iter().enumerate() {
            assert_eq!(disk["disk_type"], "incremental");
            assert_eq!(disk["parent_backup"].as_str().unwrap(), history.last().unwrap().0);
            // Stored bytes stay close to what changed: cluster rounding
            // (64 KiB per changed run) plus the metadata.
            let stored = disk["stored_bytes"].as_u64().unwrap();
            let changed_clusters = disk["changed_bytes"].as_u64().unwrap();
            assert!(changed_clusters >= changed[i] / 2, "disk {i}: {changed_clusters} < {}", changed[i]);
            assert!(stored <= changed_clusters + MIB, "disk {i}: stored {stored} for {changed_clusters} changed");
        }
        let id = r["backup_id"].as_str().unwrap().to_string();
        history.push((
            id,
            [snapshot(&disk0, d.path(), &format!("s{round}-0")), snapshot(&disk1, d.path(), &format!("s{round}-1"))],
        ));
    }

    // Every image: qemu-img check clean, and equal to its source as it was.
    let list = json(&run(bc(&repo).args(["list", "--json"])));
    assert_eq!(list.as_array().unwrap().len(), 5);
    for (id, snaps) in &history {
        let b = list.as_array().unwrap().iter().find(|b| b["id"] == id.as_str()).unwrap();
        assert_eq!(b["status"], "completed");
        for disk in b["disks"].as_array().unwrap() {
            let i = disk["disk_index"].as_u64().unwrap() as usize;
            let image = repo.join(disk["image_path"].as_str().unwrap());
            check_image(&image, &snaps[i]);
            let info = qemu_info(&image);
            if disk["disk_type"] == "incremental" {
                let backing = info["backing-filename"].as_str().unwrap();
                assert!(!backing.contains('/'), "backing name {backing} is not relative to the image folder");
                assert_eq!(info["backing-filename-format"], "qcow2");
            } else {
                assert!(info.get("backing-filename").is_none());
            }
            // export BACKUP_ID:N equals the source too.
            let out = d.path().join("export.raw");
            run(bc(&repo).args(["export", &format!("{id}:{i}"), "--format", "raw", "-o"]).arg(&out));
            assert!(fs::read(&out).unwrap() == fs::read(&snaps[i]).unwrap(), "export {id}:{i}");
        }
    }
    let chains = json(&run(bc(&repo).args(["chain", "web01", "--json"])));
    let chains = chains.as_array().unwrap();
    assert_eq!(chains.len(), 2);
    for c in chains {
        assert_eq!(c["image_count"], 5);
        assert_eq!(c["images"][0]["disk_type"], "full");
    }
    let v = run(bc(&repo).args(["verify"]));
    assert!(String::from_utf8_lossy(&v.stdout).contains("10 disk images verified"));

    // A damaged image is caught by verify.
    let b = &list.as_array().unwrap()[0];
    let image = repo.join(b["disks"][0]["image_path"].as_str().unwrap());
    let f = fs::OpenOptions::new().write(true).open(&image).unwrap();
    let info = qemu_img(&["map", "--output=json", image.to_str().unwrap()]);
    let map: Value = serde_json::from_slice(&info.stdout).unwrap();
    let data = map.as_array().unwrap().iter().find(|e| e["data"] == true && e["depth"] == 0).unwrap();
    f.write_all_at(b"garbage!", data["offset"].as_u64().unwrap()).unwrap();
    let err = run_fail(bc(&repo).args(["verify", b["id"].as_str().unwrap()]));
    assert!(err.contains("fault"), "{err}");
}

#[test]
fn job_rules() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let mut rng = Rng::new(11);
    let disk = d.path().join("disk.raw");
    make_disk(&disk, 8 * MIB, &mut rng);

    // Incremental without a chain.
    let err = run_fail(bc(&repo).args(["backup", "--vm", "db", "--type", "incremental", "--disk"]).arg(&disk));
    assert!(err.contains("no parent backup found for incremental — full backup required first"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // auto: full, then incremental; --type full forces a new chain.
    assert_eq!(backup(&repo, "db", &[&disk], &[])["backup_type"], "full");
    assert_eq!(backup(&repo, "db", &[&disk], &[])["backup_type"], "incremental");
    assert_eq!(backup(&repo, "db", &[&disk], &["--type", "full"])["backup_type"], "full");

    // A disk whose size changed starts a new full chain, and says so.
    fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(12 * MIB).unwrap();
    let r = backup(&repo, "db", &[&disk], &[]);
    assert_eq!(r["backup_type"], "full");
    assert!(r["notes"][0].as_str().unwrap().contains("new full chain"), "{r}");
    let out = run(bc(&repo).args(["backup", "--vm", "db", "--disk"]).arg(&disk));
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty()
            || !String::from_utf8_lossy(&out.stderr).contains("new full chain")
    );

    // A running backup of a VM (its lock held) refuses a second one; another
    // VM still backs up.
    let lock =
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(repo.join("locks/db.lock")).unwrap();
    lock.try_lock().unwrap();
    let err = run_fail(bc(&repo).args(["backup", "--vm", "db", "--disk"]).arg(&disk));
    assert!(err.contains("already running"), "{err}");
    assert_eq!(backup(&repo, "other", &[&disk], &[])["backup_type"], "full");
    lock.unlock().unwrap();
    assert_eq!(backup(&repo, "db", &[&disk], &[])["backup_type"], "incremental");

    // Deleting is refused while later backups depend on it (checked through
    // the catalog API in the HTTP tests); bad VM names are refused.
    let err = run_fail(bc(&repo).args(["backup", "--vm", "../evil", "--disk"]).arg(&disk));
    assert!(err.contains("invalid VM name"), "{err}");
}

#[test]
fn bad_sources_fail_cleanly() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let good = d.path().join("good.raw");
    make_disk(&good, 4 * MIB, &mut Rng::new(3));
    let empty = d.path().join("empty.raw");
    fs::File::create(&empty).unwrap();
    let dir = d.path().join("adir");
    fs::create_dir(&dir).unwrap();
    let cases: [(&Path, &str); 3] =
        [(&d.path().join("missing.raw"), "no such file"), (&empty, "is empty"), (&dir, "is a directory")];
    for (src, msg) in cases {
        // The bad disk comes second: nothing of the good first disk may be left.
        let err = run_fail(bc(&repo).args(["backup", "--vm", "vm1", "--disk"]).arg(&good).arg("--disk").arg(src));
        assert!(err.contains(msg), "{}: {err}", src.display());
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // Unreadable: a file the (unprivileged) backup process may not read.
    let secret = d.path().join("secret.raw");
    make_disk(&secret, MIB, &mut Rng::new(4));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let mut c = bc(&repo);
    if is_root() {
        use std::os::unix::process::CommandExt;
        fs::create_dir_all(repo.join("vms")).unwrap();
        chown_tree(&repo);
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        c.uid(65534).gid(65534);
    }
    let err = run_fail(c.args(["backup", "--vm", "vm1", "--disk"]).arg(&secret));
    assert!(err.contains("ermission denied"), "{err}");

    let list = json(&run(bc(&repo).args(["list", "--json"])));
    assert!(list.as_array().unwrap().iter().all(|b| b["status"] != "completed"));
    assert!(partials(&repo).is_empty());
    let images: Vec<_> = walk_files(&repo.join("vms"));
    assert!(images.is_empty(), "left behind: {images:?}");
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

fn chown_tree(p: &Path) {
    run(std::process::Command::new("chown").args(["-R", "65534:65534"]).arg(p));
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn kill_nine_at_random_moments_loses_nothing() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let mut rng = Rng::new(99);
    let disk = d.path().join("disk.raw");
    make_disk(&disk, 256 * MIB, &mut rng);
    let first = backup(&repo, "crashy", &[&disk], &[]);
    let first_id = first["backup_id"].as_str().unwrap().to_string();
    let mut committed = vec![(first_id, snapshot(&disk, d.path(), "snap-first"))];
    // An uninterrupted incremental, timed from the moment its `.partial`
    // image appears (the job is in the catalog and writing) to its exit: the
    // kills below land at random points of that window, so they fall inside
    // jobs however fast the machine's start-up, hashing or fsync are.
    change(&disk, 50, &mut rng);
    let snap = snapshot(&disk, d.path(), "snap-timed");
    let mut child = spawn_backup(&repo, &disk);
    let writing = wait_for_partial(&repo, &mut child);
    let out = child.wait_with_output().unwrap();
    let window = writing.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    committed.push((json(&out)["backup_id"].as_str().unwrap().to_string(), snap));

    // Six rounds at least; more (up to 16) until three kills landed inside a
    // job, so a lucky scheduler cannot make the test prove nothing.
    let mut landed = 0;
    for round in 0..16 {
        if round >= 6 && landed >= 3 {
            break;
        }
        change(&disk, 50, &mut rng);
        let snap = snapshot(&disk, d.path(), &format!("snap-{round}"));
        let mut child = spawn_backup(&repo, &disk);
        // Round 0 kills during start-up, before any image exists; the others
        // once the job is writing its image, after a random part of the
        // window: reading, writing, syncing, renaming, committing.
        if round == 0 {
            std::thread::sleep(std::time::Duration::from_micros(rng.below(20_000)));
        } else {
            wait_for_partial(&repo, &mut child);
            std::thread::sleep(window.mul_f64(rng.below(900) as f64 / 1000.0));
        }
        kill9(child.id());
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            committed.push((v["backup_id"].as_str().unwrap().to_string(), snap.clone()));
        }
        // The next command recovers: no partial file survives it, the killed
        // job is marked interrupted, and every committed backup verifies.
        let list = json(&run(bc(&repo).args(["list", "--vm", "crashy", "--json"])));
        assert!(partials(&repo).is_empty(), "round {round}: {:?}", partials(&repo));
        landed = list.as_array().unwrap().iter().filter(|b| b["status"] == "interrupted").count();
        for b in list.as_array().unwrap() {
            let status = b["status"].as_str().unwrap();
            assert!(status == "completed" || status == "interrupted", "round {round}: {b}");
            if status == "interrupted" {
                assert!(b["disks"].as_array().unwrap().is_empty());
            }
        }
        // A kill after the catalog commit but before the process printed
        // leaves a committed backup that the test did not see finish.
        let new: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["status"] == "completed")
            .map(|b| b["id"].as_str().unwrap().to_string())
            .filter(|id| !committed.iter().any(|(c, _)| c == id))
            .collect();
        assert!(new.len() <= 1 && (new.is_empty() || !out.status.success()), "round {round}: {new:?}");
        for id in new {
            committed.push((id, snap.clone()));
        }
        run(bc(&repo).arg("verify"));
        // Only committed images remain on disk.
        let files = walk_files(&repo.join("vms"));
        assert_eq!(files.len(), committed.len() * 2, "round {round}: {files:?}");
    }
    assert!(landed >= 2, "only {landed} kills landed inside a job (window {window:?})");
    for (id, snap) in &committed {
        let out = d.path().join("x.raw");
        run(bc(&repo).args(["export", id, "-o"]).arg(&out));
        assert!(fs::read(&out).unwrap() == fs::read(snap).unwrap(), "backup {id}");
    }
    // And the chain goes on.
    assert_eq!(backup(&repo, "crashy", &[&disk], &[])["backup_type"], "incremental");
    run(bc(&repo).arg("verify"));
}

fn spawn_backup(repo: &Path, disk: &Path) -> std::process::Child {
    bc(repo)
        .args(["backup", "--vm", "crashy", "--json", "--disk"])
        .arg(disk)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the job has a `.partial` file (or exited, or a minute
/// passed) and returns when that was seen.
fn wait_for_partial(repo: &Path, child: &mut std::process::Child) -> std::time::Instant {
    let t0 = std::time::Instant::now();
    while partials(repo).is_empty()
        && child.try_wait().unwrap().is_none()
        && t0.elapsed() < std::time::Duration::from_secs(60)
    {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    std::time::Instant::now()
}

fn kill9(pid: u32) {
    run(std::process::Command::new("kill").args(["-9", &pid.to_string()]));
}

/// A broken chain is never extended (issue 12 items 7 and 13): with a
/// middle image moved away, `--type incremental` fails before writing and
/// says to run a full; `auto` starts a new full chain with a note. A damaged
/// digest map is treated the same way.
#[test]
fn a_broken_parent_chain_is_never_extended() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let mut rng = Rng::new(12);
    let disk = d.path().join("disk.raw");
    make_disk(&disk, 8 * MIB, &mut rng);
    let mut images = Vec::new();
    for _ in 0..3 {
        change(&disk, 4, &mut rng);
        let r = backup(&repo, "vm", &[&disk], &[]);
        images.push(repo.join(r["disks"][0]["image_path"].as_str().unwrap()));
    }
    let aside = d.path().join("moved.qcow2");
    fs::rename(&images[1], &aside).unwrap();
    let before = json(&run(bc(&repo).args(["list", "--json"]))).as_array().unwrap().len();
    let err = run_fail(bc(&repo).args(["backup", "--vm", "vm", "--type", "incremental", "--disk"]).arg(&disk));
    assert!(err.contains("cannot be used as a parent") && err.contains("--type full"), "{err}");
    assert_eq!(json(&run(bc(&repo).args(["list", "--json"]))).as_array().unwrap().len(), before);

    let r = backup(&repo, "vm", &[&disk], &[]);
    assert_eq!(r["backup_type"], "full", "{r}");
    assert!(r["notes"][0].as_str().unwrap().contains("starting a new full chain"), "{r}");
    let full = repo.join(r["disks"][0]["image_path"].as_str().unwrap());
    check_image(&full, &disk);

    // A damaged digest map of the newest backup: the same.
    let map = full.with_extension("digests");
    fs::write(&map, b"not a digest map").unwrap();
    let r = backup(&repo, "vm", &[&disk], &[]);
    assert_eq!(r["backup_type"], "full", "{r}");
    assert!(r["notes"][0].as_str().unwrap().contains("digest map"), "{r}");
}

/// A lost catalog never silently becomes a new repository (issue 12 item
/// 6): read-only commands never create a repository, and a repository whose
/// vms/ holds images but whose catalog is missing or empty is refused, by
/// backups too, with a message naming the way out.
#[test]
fn a_lost_catalog_is_refused_and_reads_create_nothing() {
    let d = tempdir();
    let typo = d.path().join("repo-typo");
    for args in [vec!["list"], vec!["verify"], vec!["chain", "vm"]] {
        let err = run_fail(bc(&typo).args(&args));
        assert!(err.contains("no repository at"), "{args:?}: {err}");
    }
    assert!(!typo.exists(), "a read-only command created {}", typo.display());

    let repo = d.path().join("repo");
    let mut rng = Rng::new(13);
    let disk = d.path().join("disk.raw");
    make_disk(&disk, 4 * MIB, &mut rng);
    backup(&repo, "vm", &[&disk], &[]);
    let catalog = repo.join("catalog.db");
    for lose in ["truncate", "remove"] {
        if lose == "truncate" {
            fs::OpenOptions::new().write(true).open(&catalog).unwrap().set_len(0).unwrap();
        } else {
            fs::remove_file(&catalog).unwrap();
        }
        for args in [vec!["list"], vec!["verify"]] {
            let err = run_fail(bc(&repo).args(&args));
            assert!(err.contains("missing or empty") && err.contains("catalog.db"), "{lose} {args:?}: {err}");
        }
        let err = run_fail(bc(&repo).args(["backup", "--vm", "vm", "--disk"]).arg(&disk));
        assert!(err.contains("refusing to start a new catalog"), "{lose}: {err}");
    }
}

/// `backchain delete` drops the newest restore point of a chain with its
/// files, and a point later backups depend on by merging it into its child
/// (issue 12 item 8, issue 15 item 5): the child keeps its bytes.
#[test]
fn delete_drops_the_newest_point_and_merges_a_parent() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let mut rng = Rng::new(14);
    let disk = d.path().join("disk.raw");
    make_disk(&disk, 4 * MIB, &mut rng);
    let full = backup(&repo, "vm", &[&disk], &[]);
    change(&disk, 3, &mut rng);
    let inc = backup(&repo, "vm", &[&disk], &[]);
    let snap = d.path().join("snap.raw");
    fs::copy(&disk, &snap).unwrap();
    change(&disk, 3, &mut rng);
    let top = backup(&repo, "vm", &[&disk], &[]);
    let full_id = full["backup_id"].as_str().unwrap();
    let inc_id = inc["backup_id"].as_str().unwrap();
    let top_image = repo.join(top["disks"][0]["image_path"].as_str().unwrap());
    let out = json(&run(bc(&repo).args(["delete", top["backup_id"].as_str().unwrap(), "--json"])));
    assert_eq!(out["deleted"], top["backup_id"]);
    assert!(!top_image.exists());
    let full_image = repo.join(full["disks"][0]["image_path"].as_str().unwrap());
    let out = json(&run(bc(&repo).args(["delete", full_id, "--json"])));
    assert_eq!(out["deleted"], full_id);
    assert!(!full_image.exists());
    let list = json(&run(bc(&repo).args(["list", "--json"])));
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [inc_id]);
    assert_eq!(list[0]["backup_type"], "full", "{list}");
    let inc_image = repo.join(inc["disks"][0]["image_path"].as_str().unwrap());
    qemu_img(&["compare", "-f", "qcow2", "-F", "raw", inc_image.to_str().unwrap(), snap.to_str().unwrap()]);
    qemu_img(&["check", inc_image.to_str().unwrap()]);
}
