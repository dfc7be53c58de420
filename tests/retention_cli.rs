//! Retention through the CLI (issue 15): `delete` of any restore point
//! (oldest, middle, newest) and `prune` on a 2-disk VM; `kill -9` during
//! merges, finished by the next open of the repository; readers holding a
//! point; verify results and corruption. Oracles: qemu-img compare and
//! check against saved copies of the sources, SHA-256 of `backchain export`,
//! sqlite3 for the catalog's merge rows.

mod common;

use common::{Rng, backchain, qcow2_images as images, random, run, run_fail, tempdir, tool};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CS: usize = 64 << 10;
const DISKS: usize = 2;

fn bc(repo: &Path) -> Command {
    let mut c = backchain();
    c.arg("--repo").arg(repo);
    c
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn sha_file(p: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
}

/// A VM of two disks backed up `n` times, `changes` random clusters
/// rewritten per disk between backups. Returns each backup's id with the
/// raw copies of its disks as they were.
struct Vm {
    points: Vec<(String, Vec<PathBuf>)>,
}

fn build_vm(dir: &Path, repo: &Path, vm: &str, n: usize, size: usize, changes: usize, seed: u64) -> Vm {
    let mut rng = Rng::new(seed);
    let mut disks: Vec<Vec<u8>> = (0..DISKS).map(|_| random(&mut rng, size)).collect();
    let live: Vec<PathBuf> = (0..DISKS).map(|i| dir.join(format!("{vm}-live-{i}.raw"))).collect();
    let mut points = Vec::new();
    for k in 0..n {
        let mut saved = Vec::new();
        for (i, disk) in disks.iter_mut().enumerate() {
            if k > 0 {
                for _ in 0..changes {
                    let c = rng.below((size / CS) as u64) as usize;
                    let cl = &mut disk[c * CS..(c + 1) * CS];
                    if rng.below(5) == 0 { cl.fill(0) } else { rng.fill(cl) }
                }
            }
            std::fs::write(&live[i], &*disk).unwrap();
            let copy = dir.join(format!("{vm}-{k:02}-{i}.raw"));
            std::fs::write(&copy, &*disk).unwrap();
            saved.push(copy);
        }
        let mut cmd = bc(repo);
        cmd.args(["backup", "--vm", vm, "--json"]);
        for l in &live {
            cmd.arg("--disk").arg(l);
        }
        let out = json(&run(&mut cmd));
        points.push((out["backup_id"].as_str().unwrap().to_string(), saved));
    }
    Vm { points }
}

fn listed(repo: &Path, vm: &str) -> Vec<String> {
    let list = json(&run(bc(repo).args(["list", "--vm", vm, "--json"])));
    let mut ids: Vec<String> = list.as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_string()).collect();
    ids.reverse();
    ids
}

/// Every listed point of `vm` equals its saved sources (qemu-img compare
/// of its image, and SHA-256 of `backchain export`), every image passes
/// qemu-img check, and the disk folders hold exactly the listed images.
fn check_kept(repo: &Path, vm: &Vm, name: &str, scratch: &Path, why: &str) {
    let ids = listed(repo, name);
    for id in &ids {
        let (_, saved) = vm.points.iter().find(|(p, _)| p == id).unwrap_or_else(|| panic!("{why}: unknown {id}"));
        for (i, raw) in saved.iter().enumerate() {
            let img = repo.join(format!("vms/{name}/disk-{i}/{id}.qcow2"));
            run(tool("qemu-img").args(["check", "-q", "-f", "qcow2"]).arg(&img));
            run(tool("qemu-img").args(["compare", "-q", "-f", "qcow2", "-F", "raw"]).arg(&img).arg(raw));
            let out = scratch.join("export.raw");
            run(bc(repo).args(["export", &format!("{id}:{i}"), "-o"]).arg(&out));
            assert_eq!(sha_file(&out), sha_file(raw), "{why}: {id} disk {i}");
            std::fs::remove_file(&out).unwrap();
        }
    }
    for i in 0..DISKS {
        let names: Vec<String> = images(&repo.join(format!("vms/{name}/disk-{i}")))
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(names, want, "{why}: disk {i} holds exactly the kept points' images");
    }
}

fn du(dir: &Path) -> u64 {
    let out = run(tool("du").args(["-s", "-B1"]).arg(dir));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap()
}

/// Twelve backups of a 2-disk VM; `delete` of the oldest, a middle and the
/// newest point, then `prune --keep-last 3` and `--keep-last 1`: every kept
/// point keeps its bytes, images pass qemu-img check, the repository
/// shrinks, and the chain goes on.
#[test]
fn delete_anywhere_and_prune_keep_every_kept_point() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let vm = build_vm(d.path(), &repo, "web", 12, 2 << 20, 6, 1);
    let ids: Vec<String> = vm.points.iter().map(|p| p.0.clone()).collect();
    let start = du(&repo.join("vms"));

    for (victim, what) in [(0, "the oldest"), (5, "a middle point"), (11, "the newest")] {
        let before = du(&repo.join("vms"));
        let out = json(&run(bc(&repo).args(["delete", &ids[victim], "--json"])));
        assert_eq!(out["deleted"], ids[victim].as_str());
        assert_eq!(out["merges"].as_array().unwrap().len(), DISKS, "{out}");
        assert!(!listed(&repo, "web").contains(&ids[victim]), "{what}");
        check_kept(&repo, &vm, "web", d.path(), &format!("after deleting {what}"));
        assert!(du(&repo.join("vms")) < before, "deleting {what} gave space back");
    }
    let err = run_fail(bc(&repo).args(["delete", &ids[0]]));
    assert!(err.contains("no backup"), "{err}");
    assert_eq!(listed(&repo, "web").len(), 9);
    // The new oldest point became the full.
    let chain = json(&run(bc(&repo).args(["chain", "web", "--json"])));
    for c in chain.as_array().unwrap() {
        assert_eq!(c["images"][0]["disk_type"], "full", "{c}");
        assert_eq!(c["images"][0]["backup_id"], ids[1].as_str(), "{c}");
        assert_eq!(c["image_count"], 9, "{c}");
    }

    let out = json(&run(bc(&repo).args(["prune", "--vm", "web", "--keep-last", "3", "--json"])));
    assert_eq!((out["kept"].as_u64(), out["dropped"].as_u64()), (Some(3), Some(6)), "{out}");
    assert_eq!(listed(&repo, "web"), ids[8..11].to_vec());
    check_kept(&repo, &vm, "web", d.path(), "after --keep-last 3");
    // Stats follow the merges: the chain's total is its images' sizes.
    let chain = json(&run(bc(&repo).args(["chain", "web", "--json"])));
    for c in chain.as_array().unwrap() {
        let sum: i64 = c["images"].as_array().unwrap().iter().map(|i| i["stored_bytes"].as_i64().unwrap()).sum();
        assert_eq!(c["total_bytes"].as_i64(), Some(sum), "{c}");
    }
    run(bc(&repo).arg("verify"));
    let out = json(&run(bc(&repo).args(["prune", "--vm", "web", "--keep-last", "1", "--json"])));
    assert_eq!(out["dropped"].as_u64(), Some(2), "{out}");
    check_kept(&repo, &vm, "web", d.path(), "after --keep-last 1");
    assert!(du(&repo.join("vms")) < start / 3, "the repository shrank");
    // The chain goes on from the folded full.
    let mut cmd = bc(&repo);
    cmd.args(["backup", "--vm", "web", "--json"]);
    for i in 0..DISKS {
        cmd.arg("--disk").arg(d.path().join(format!("web-live-{i}.raw")));
    }
    assert_eq!(json(&run(&mut cmd))["backup_type"], "incremental");
    run(bc(&repo).arg("verify"));
}

fn copy_dir(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn sql(repo: &Path, q: &str) -> String {
    let out = run(tool("sqlite3").arg("-readonly").arg(repo.join("catalog.db")).arg(q));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn spawn(repo: &Path, args: &[&str]) -> Child {
    bc(repo).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

/// kill -9 of `delete` (oldest, middle) and `prune` at random instants:
/// the next command that opens the repository finishes the merge the
/// catalog recorded; every kept point then exports the same bytes
/// (SHA-256) and the next prune completes.
#[test]
fn kill_nine_during_merges_then_any_open_finishes_them() {
    let d = tempdir();
    let pristine = d.path().join("pristine");
    let vm = build_vm(d.path(), &pristine, "kv", 4, 8 << 20, 48, 2);
    let ids: Vec<String> = vm.points.iter().map(|p| p.0.clone()).collect();
    let jobs: [Vec<&str>; 3] =
        [vec!["delete", &ids[0]], vec!["delete", &ids[1]], vec!["prune", "--vm", "kv", "--keep-last", "1"]];
    // Uninterrupted runs: their length is the window the kills fall in.
    let mut windows = Vec::new();
    for (j, args) in jobs.iter().enumerate() {
        let timed = d.path().join(format!("timed-{j}"));
        copy_dir(&pristine, &timed);
        let t0 = Instant::now();
        assert!(spawn(&timed, args).wait().unwrap().success());
        windows.push(t0.elapsed());
    }
    let mut rng = Rng::new(3);
    let mut landed = 0;
    for round in 0..18 {
        if round >= 9 && landed >= 4 {
            break;
        }
        let j = round % jobs.len();
        let repo = d.path().join(format!("round-{round}"));
        copy_dir(&pristine, &repo);
        let at = windows[j].mul_f64(rng.below(1000) as f64 / 1000.0);
        let mut child = spawn(&repo, &jobs[j]);
        let t0 = Instant::now();
        while t0.elapsed() < at && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let why = format!("round {round}: {:?} killed at {at:?} of {:?}", jobs[j], windows[j]);
        if sql(&repo, "SELECT COUNT(*) FROM merges") != "0" {
            landed += 1;
        }
        // Any open (here `list`) finishes what the catalog recorded.
        let ids_now = listed(&repo, "kv");
        assert_eq!(sql(&repo, "SELECT COUNT(*) FROM merges"), "0", "{why}");
        assert!(ids_now.contains(&ids[3]), "{why}: the newest point is kept");
        check_kept(&repo, &vm, "kv", d.path(), &why);
        let out = json(&run(bc(&repo).args(["prune", "--vm", "kv", "--keep-last", "1", "--json"])));
        assert!(out["busy"].as_array().unwrap().is_empty(), "{why}: {out}");
        check_kept(&repo, &vm, "kv", d.path(), &format!("{why}, then pruned"));
        assert_eq!(listed(&repo, "kv"), vec![ids[3].clone()], "{why}");
        std::fs::remove_dir_all(&repo).unwrap();
    }
    assert!(landed >= 4, "only {landed} kills landed inside a merge ({windows:?})");
}

/// A reader in another process (an NBD export of a point) makes `delete`
/// of that point fail and `prune` skip it with a clear message, while a
/// reader of a kept point keeps seeing its bytes during the merges.
#[test]
fn readers_hold_their_points() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let vm = build_vm(d.path(), &repo, "rd", 5, 4 << 20, 24, 4);
    let ids: Vec<String> = vm.points.iter().map(|p| p.0.clone()).collect();
    let (export, uri) = nbd_export(&repo, &ids[1], &d.path().join("nbd.sock"));
    let err = run_fail(bc(&repo).args(["delete", &ids[1]]));
    assert!(err.contains("in use by a reader"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A kept point's reader, opened before the merges, loops over it.
    let (kept, kept_uri) = nbd_export(&repo, &ids[4], &d.path().join("nbd2.sock"));
    let mut prune = bc(&repo).args(["prune", "--vm", "rd", "--keep-last", "1", "--json"]).output_child();
    let mut reads = 0;
    loop {
        let done = prune.try_wait().unwrap().is_some();
        let out = d.path().join("read.raw");
        run(tool("nbdcopy").arg(&kept_uri).arg(&out));
        assert_eq!(sha_file(&out), sha_file(&vm.points[4].1[0]), "read {reads} of the kept point");
        reads += 1;
        if done && reads >= 3 {
            break;
        }
    }
    let out = prune.wait_with_output().unwrap();
    assert!(!out.status.success(), "a prune that skipped a busy point says so");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["busy"], serde_json::json!([ids[1]]), "{report}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by readers") && err.contains(&ids[1]), "{err}");
    assert_eq!(listed(&repo, "rd"), vec![ids[1].clone(), ids[4].clone()]);
    check_kept(&repo, &vm, "rd", d.path(), "with a reader on a point to drop");
    // The reader of the busy point still reads its bytes.
    let out = d.path().join("busy.raw");
    run(tool("nbdcopy").arg(&uri).arg(&out));
    assert_eq!(sha_file(&out), sha_file(&vm.points[1].1[0]));
    for mut c in [export, kept] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let report = json(&run(bc(&repo).args(["prune", "--vm", "rd", "--keep-last", "1", "--json"])));
    assert_eq!(report["dropped"].as_u64(), Some(1), "{report}");
    check_kept(&repo, &vm, "rd", d.path(), "after the reader left");
}

/// `backchain nbd-export ID:0` on a unix socket, in the background: the
/// process and the URI it prints.
fn nbd_export(repo: &Path, id: &str, sock: &Path) -> (Child, String) {
    use std::io::BufRead;
    let mut c = bc(repo)
        .args(["nbd-export", &format!("{id}:0"), "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let uri = line.split_whitespace().nth(1).unwrap_or_else(|| panic!("no URI in {line:?}")).to_string();
    (c, uri)
}

trait OutputChild {
    fn output_child(&mut self) -> Child;
}

impl OutputChild for Command {
    fn output_child(&mut self) -> Child {
        self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }
}

/// verify records its result per image; `--outdated-after` skips recent
/// passes; a merge makes the merged image due again; a flipped byte is
/// marked corrupt in `list --json`, and the next backup is a full.
#[test]
fn verify_jobs_record_results_and_corruption_forces_a_full() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let vm = build_vm(d.path(), &repo, "vf", 3, 2 << 20, 6, 5);
    let ids: Vec<String> = vm.points.iter().map(|p| p.0.clone()).collect();
    let list = json(&run(bc(&repo).args(["list", "--json"])));
    assert!(list[0]["verify_state"].is_null() && list[0]["verified_at"].is_null(), "{list}");
    let out = json(&run(bc(&repo).args(["verify", "--vm", "vf", "--json"])));
    assert_eq!(out.as_array().unwrap().len(), 3 * DISKS);
    let list = json(&run(bc(&repo).args(["list", "--json"])));
    for b in list.as_array().unwrap() {
        assert_eq!(b["verify_state"], "ok", "{b}");
        assert!(b["verified_at"].is_string() && b["disks"][1]["verify_state"] == "ok", "{b}");
    }
    let out = json(&run(bc(&repo).args(["verify", "--outdated-after", "30", "--json"])));
    assert!(out.as_array().unwrap().iter().all(|r| r["skipped"] == true), "{out}");
    // Dropping the oldest folds the next image: that one is due again.
    run(bc(&repo).args(["delete", &ids[0]]));
    let out = json(&run(bc(&repo).args(["verify", "--outdated-after", "30", "--json"])));
    let verified: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["skipped"] == false)
        .map(|r| r["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(verified, vec![ids[1].as_str(); DISKS], "{out}");

    // A flipped byte in the data of disk 1's newest image.
    let img = repo.join(format!("vms/vf/disk-1/{}.qcow2", ids[2]));
    let map = common::qemu_map(&img);
    let data = map.iter().find(|e| e["data"] == true && e["depth"] == 0).expect("a data cluster");
    let at = data["offset"].as_u64().unwrap() + 100;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let mut b = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[b[0] ^ 0x40], at).unwrap();
    // A recent pass counts for a verify job (not re-read), not for a full
    // verify, which finds the flip.
    run(bc(&repo).args(["verify", "--outdated-after", "30"]));
    let err = run_fail(bc(&repo).args(["verify", "--vm", "vf"]));
    assert!(err.contains("fault"), "{err}");
    let list = json(&run(bc(&repo).args(["list", "--json"])));
    let newest = &list[0];
    assert_eq!(newest["verify_state"], "corrupt", "{newest}");
    assert_eq!(newest["disks"][1]["verify_state"], "corrupt", "{newest}");
    assert!(newest["disks"][1]["verify_error"].is_string(), "{newest}");
    assert_eq!(newest["disks"][0]["verify_state"], "ok", "{newest}");
    // A corrupt chain is never extended: the next backup is a full.
    let mut cmd = bc(&repo);
    cmd.args(["backup", "--vm", "vf", "--json"]);
    for i in 0..DISKS {
        cmd.arg("--disk").arg(d.path().join(format!("vf-live-{i}.raw")));
    }
    let out = json(&run(&mut cmd));
    assert_eq!(out["disks"][1]["disk_type"], "full", "{out}");
    assert_eq!(out["disks"][0]["disk_type"], "incremental", "{out}");
    let mut cmd = bc(&repo);
    cmd.args(["backup", "--vm", "vf", "--type", "incremental"]);
    for i in 0..DISKS {
        cmd.arg("--disk").arg(d.path().join(format!("vf-live-{i}.raw")));
    }
    // The new chain is sound: incrementals go on from it.
    run(&mut cmd);
}

/// Unmounts a FUSE mount when dropped (also when an assertion fails).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = backchain().arg("umount").arg(&self.0).output();
    }
}

/// FUSE mounts hold their points: a mounted backup, and a backup folder of
/// a whole-repository mount once it was opened, cannot be deleted until
/// unmounted; a point of the repository mount never opened can.
#[test]
fn fuse_mounts_hold_their_points() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let vm = build_vm(d.path(), &repo, "fm", 4, 1 << 20, 4, 6);
    let ids: Vec<String> = vm.points.iter().map(|p| p.0.clone()).collect();
    let one = d.path().join("one");
    let all = d.path().join("all");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&all).unwrap();
    run(bc(&repo).args(["mount", &ids[1]]).arg(&one));
    let m1 = Mounted(one.clone());
    run(bc(&repo).arg("mount").arg(&all));
    let m2 = Mounted(all.clone());
    assert!(all.join("fm").join(&ids[2]).join("disk-0").is_dir());
    for id in [&ids[1], &ids[2]] {
        let err = run_fail(bc(&repo).args(["delete", id]));
        assert!(err.contains("in use by a reader"), "{id}: {err}");
    }
    run(bc(&repo).args(["delete", &ids[0]]));
    check_kept(&repo, &vm, "fm", d.path(), "with mounts");
    drop((m1, m2));
    // The mount processes exit (dropping their locks) just after unmounting.
    for id in [&ids[1], &ids[2]] {
        let t0 = Instant::now();
        while !bc(&repo).args(["delete", id]).output().unwrap().status.success() {
            assert!(t0.elapsed() < Duration::from_secs(20), "{id} still held after the unmount");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(listed(&repo, "fm"), vec![ids[3].clone()]);
    check_kept(&repo, &vm, "fm", d.path(), "after the mounts");
}
