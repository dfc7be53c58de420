//! `backchain prune` (issue 15): retention through the CLI, merging the
//! dropped points; every kept point still equals its source (qemu-img
//! compare), every image passes qemu-img check, and the repository shrinks.

mod common;

use common::{Rng, backchain, qcow2_images as images, random, run, run_fail, tempdir, tool};
use serde_json::Value;
use std::path::{Path, PathBuf};

const CS: usize = 64 << 10;

fn bc(repo: &Path) -> std::process::Command {
    let mut c = backchain();
    c.arg("--repo").arg(repo);
    c
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn prune_keeps_the_newest_and_merges_the_rest() {
    let d = tempdir();
    let repo = d.path().join("repo");
    let disk = d.path().join("disk.raw");
    let mut rng = Rng::new(15);
    let mut data = random(&mut rng, 4 << 20);
    let mut saved: Vec<(String, PathBuf)> = Vec::new();
    for k in 0..6 {
        if k > 0 {
            for _ in 0..6 {
                let c = rng.below((data.len() / CS) as u64) as usize;
                let fill = random(&mut rng, CS);
                data[c * CS..(c + 1) * CS].copy_from_slice(&fill);
            }
        }
        std::fs::write(&disk, &data).unwrap();
        let out = json(&run(bc(&repo).args(["backup", "--vm", "pv", "--json", "--disk"]).arg(&disk)));
        let id = out["backup_id"].as_str().unwrap().to_string();
        let raw = d.path().join(format!("src-{k}.raw"));
        std::fs::write(&raw, &data).unwrap();
        saved.push((id, raw));
    }
    let err = run_fail(bc(&repo).args(["prune", "--vm", "pv"]));
    assert!(err.contains("keep nothing"), "{err}");

    // A dry run decides and changes nothing.
    let plan = json(&run(bc(&repo).args(["prune", "--vm", "pv", "--keep-last", "2", "--dry-run", "--json"])));
    assert_eq!(plan["dry_run"], true);
    assert_eq!((plan["kept"].as_u64(), plan["dropped"].as_u64()), (Some(2), Some(4)));
    let rows = plan["backups"].as_array().unwrap();
    for (i, row) in rows.iter().enumerate() {
        let (id, _) = &saved[5 - i];
        assert_eq!(row["id"].as_str(), Some(id.as_str()));
        if i < 2 {
            assert_eq!((row["action"].as_str(), row["rule"].as_str()), (Some("keep"), Some("last")), "{row}");
        } else {
            assert_eq!((row["action"].as_str(), row["reason"].as_str()), (Some("drop"), Some("not_selected")), "{row}");
        }
    }
    let dir = repo.join("vms/pv/disk-0");
    assert_eq!(images(&dir).len(), 6);

    let done = json(&run(bc(&repo).args(["prune", "--vm", "pv", "--keep", "2", "--json"])));
    assert_eq!(done["dropped"].as_u64(), Some(4));
    assert!(done["bytes_reclaimed"].as_u64().unwrap() > 0, "{done}");
    let list = json(&run(bc(&repo).args(["list", "--vm", "pv", "--json"])));
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![saved[5].0.as_str(), saved[4].0.as_str()]);
    assert_eq!(images(&dir).len(), 2);
    for (id, raw) in &saved[4..] {
        let img = dir.join(format!("{id}.qcow2"));
        run(tool("qemu-img").args(["compare", "-f", "qcow2", "-F", "raw"]).arg(&img).arg(raw));
        run(tool("qemu-img").args(["check", "-f", "qcow2"]).arg(&img));
    }
    // The oldest kept point became the full, and the chain goes on.
    let chain = json(&run(bc(&repo).args(["chain", "pv", "--json"])));
    assert_eq!(chain[0]["images"].as_array().unwrap().len(), 2, "{chain}");
    assert_eq!(chain[0]["images"][0]["disk_type"], "full", "{chain}");
    run(bc(&repo).arg("verify"));
    let out = json(&run(bc(&repo).args(["backup", "--vm", "pv", "--json", "--disk"]).arg(&disk)));
    assert_eq!(out["backup_type"], "incremental");
    let last = json(&run(bc(&repo).args(["prune", "--vm", "pv", "--keep-last", "1", "--json"])));
    assert_eq!(last["dropped"].as_u64(), Some(2));
    assert_eq!(images(&dir).len(), 1);
    let img = images(&dir).remove(0);
    run(tool("qemu-img").args(["compare", "-f", "qcow2", "-F", "raw"]).arg(&img).arg(&disk));
    run(tool("qemu-img").args(["check", "-f", "qcow2"]).arg(&img));
}
