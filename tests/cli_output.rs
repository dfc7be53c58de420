//! The command line's output to a reader that leaves early: `backchain list
//! | head -1` and friends. The commands finish quietly with their own exit
//! code (a backup committed before the pipe closed is a success), never a
//! panic. Regression test for issue 12 item 10.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `cmd` with its stdout a pipe whose reading end is already closed;
/// returns (success, stderr).
fn with_closed_stdout(cmd: &mut Command) -> (bool, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn bc(repo: &Path) -> Command {
    let mut c = backchain();
    c.arg("--repo").arg(repo);
    c
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let t = tempdir();
    let repo = t.path().join("repo");
    let disk = t.path().join("disk.raw");
    let mut rng = Rng::new(5);
    random_file(&disk, &mut rng, 3 << 20);
    run(bc(&repo).args(["backup", "--vm", "vm1", "--disk"]).arg(&disk));

    // A backup whose summary goes nowhere is still a committed success.
    let (ok, err) = with_closed_stdout(bc(&repo).args(["backup", "--vm", "vm1", "--disk"]).arg(&disk));
    assert!(ok && !err.contains("panicked"), "backup: {err}");
    let list = run(bc(&repo).args(["list", "--json"]));
    let backups: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(backups.len(), 2, "the second backup was committed");

    let cases: Vec<Vec<String>> = vec![
        vec!["list".into()],
        vec!["list".into(), "--json".into()],
        vec!["chain".into(), "vm1".into()],
        vec!["verify".into()],
        vec!["info".into(), disk.to_str().unwrap().into()],
        vec!["ls".into(), disk.to_str().unwrap().into(), "/".into()],
    ];
    for args in cases {
        let (ok, err) = with_closed_stdout(bc(&repo).args(&args));
        assert!(ok && err.is_empty(), "{args:?}: {err}");
    }
}

/// Outputs never destroy their inputs or what they replace (issue 12
/// items 4 and 5): an export or get onto the image being read (itself, or
/// a backing file of its chain) is refused before anything is written, and
/// a failed export leaves the old output file as it was, with no temporary
/// file behind.
#[test]
fn outputs_never_overwrite_their_inputs_or_a_good_file() {
    let t = tempdir();
    let d = t.path();
    let mut rng = Rng::new(9);
    let raw = d.join("d.img");
    random_file(&raw, &mut rng, 2 << 20);
    let raw_bytes = std::fs::read(&raw).unwrap();
    let err = run_fail(backchain().args(["export", raw.to_str().unwrap(), "-o"]).arg(&raw));
    assert!(err.contains("refusing to write"), "{err}");
    assert_eq!(std::fs::read(&raw).unwrap(), raw_bytes);

    let base = d.join("base.qcow2");
    let top = d.join("top.qcow2");
    run(tool("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&base).arg("4M"));
    run(tool("qemu-io").args(["-c", "write -P 0x5a 0 3M"]).arg(&base));
    run(tool("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2"]).arg(&top));
    let base_bytes = std::fs::read(&base).unwrap();
    for out in [&top, &base] {
        let err = run_fail(backchain().args(["export", top.to_str().unwrap(), "--format", "qcow2", "-o"]).arg(out));
        assert!(err.contains("refusing to write"), "{err}");
    }
    assert_eq!(std::fs::read(&base).unwrap(), base_bytes, "the backing file is untouched");

    // get of a file onto the image the tree reads.
    let fat = d.join("fat.img");
    std::fs::File::create(&fat).unwrap().set_len(8 << 20).unwrap();
    run(tool("mkfs.fat").args(["-n", "V"]).arg(&fat));
    run(tool("mcopy").arg("-i").arg(&fat).arg(&raw).arg("::/notes.txt").env("MTOOLS_SKIP_CHECK", "1"));
    let fat_bytes = std::fs::read(&fat).unwrap();
    let list = String::from_utf8(run(backchain().args(["ls", fat.to_str().unwrap(), "/"])).stdout).unwrap();
    let vol = list.lines().find_map(|l| l.find("Volume").map(|i| l[i..].to_string())).unwrap();
    let err = run_fail(backchain().args(["get", fat.to_str().unwrap(), &format!("/{vol}/notes.txt"), "-o"]).arg(&fat));
    assert!(err.contains("refusing to write"), "{err}");
    assert_eq!(std::fs::read(&fat).unwrap(), fat_bytes);

    // A failed export keeps the file it would have replaced.
    let half = d.join("trunc_half.qcow2");
    std::fs::copy(&base, &half).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&half).unwrap();
    f.set_len(base_bytes.len() as u64 / 2).unwrap();
    drop(f);
    let existing = d.join("existing.raw");
    std::fs::write(&existing, b"a good file").unwrap();
    let before: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
    run_fail(backchain().args(["export", half.to_str().unwrap(), "-o"]).arg(&existing));
    assert_eq!(std::fs::read(&existing).unwrap(), b"a good file");
    let after: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before.len(), after.len(), "no temporary file left: {after:?}");
}

/// A symlink loop given as an image is an image path with its own error,
/// not "no such backup" (issue 12 item 13).
#[test]
fn a_symlink_loop_image_says_so() {
    let t = tempdir();
    std::os::unix::fs::symlink("loop-b", t.path().join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", t.path().join("loop-b")).unwrap();
    let err = run_fail(backchain().args(["ls", "loop-a", "/"]).current_dir(t.path()));
    assert!(!err.contains("no such backup") && err.contains("symbolic links"), "{err}");
}
