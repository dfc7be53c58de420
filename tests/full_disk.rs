//! A full repository disk (issue 12 item 8), on a small tmpfs mounted in a
//! private mount namespace (`unshare`): a backup that runs out of room fails
//! cleanly (no partial file left, the job marked failed) with a message
//! naming the repository, the file and the free space; read-only commands
//! still work when not a byte is free.

mod common;
use common::*;
use std::fs;

/// The scenario, run inside the namespace; each step's output goes to a
/// file in $3 for the test to read.
const SCRIPT: &str = r#"
set -u
B=$1; M=$2; OUT=$3; DISK=$4
mount -t tmpfs -o size=8m none "$M"
R="$M/repo"
"$B" --repo "$R" backup --vm vm --disk "$DISK" > "$OUT/first.out" 2>&1 || exit 10
# Leave 768 KiB: room for the catalog's rows, not for another image.
avail=$(df -B1 --output=avail "$M" | tail -1)
dd if=/dev/zero of="$M/filler" bs=1024 count=$(( (avail - 786432) / 1024 )) 2>/dev/null
"$B" --repo "$R" backup --vm vm --disk "$DISK" --type full > "$OUT/full.out" 2> "$OUT/full.err"
echo $? > "$OUT/full.rc"
ls "$R/vms/vm/disk-0" > "$OUT/files.txt"
# Not a byte left.
dd if=/dev/zero of="$M/filler2" bs=1024 2>/dev/null
df -B1 --output=avail "$M" | tail -1 > "$OUT/avail.txt"
for cmd in "list --json" "verify" "chain vm"; do
  name=$(echo $cmd | cut -d' ' -f1)
  "$B" --repo "$R" $cmd > "$OUT/$name.out" 2> "$OUT/$name.err"
  echo $? > "$OUT/$name.rc"
done
"$B" --repo "$R" backup --vm vm --disk "$DISK" > /dev/null 2> "$OUT/none.err"
echo $? > "$OUT/none.rc"
"#;

#[test]
fn a_full_disk_fails_backups_cleanly_and_still_reads() {
    let t = tempdir();
    let (mnt, out) = (t.path().join("mnt"), t.path().join("out"));
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(&out).unwrap();
    let disk = t.path().join("disk.raw");
    let mut rng = Rng::new(41);
    let mut data = random(&mut rng, 3 << 20);
    data.resize(4 << 20, 0);
    fs::write(&disk, &data).unwrap();
    let mut c = tool("unshare");
    c.args(["--mount", "--map-root-user", "sh", "-c", SCRIPT, "sh", env!("CARGO_BIN_EXE_backchain")]);
    c.arg(&mnt).arg(&out).arg(&disk);
    run(&mut c);
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap();

    // The backup that ran out of room: a clear failure, nothing left over.
    assert_eq!(read("full.rc").trim(), "1");
    let err = read("full.err");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("the repository's disk is full") && err.contains("/repo has "), "{err}");
    assert!(err.contains(".qcow2.partial") && err.contains("No space left"), "{err}");
    let files = read("files.txt");
    assert_eq!(files.lines().count(), 2, "only the first backup's image and map: {files}");
    assert!(!files.contains(".partial"), "{files}");

    // Not a byte free: the reads still work, and see the failed job.
    assert_eq!(read("avail.txt").trim(), "0");
    for name in ["list", "verify", "chain"] {
        assert_eq!(read(&format!("{name}.rc")).trim(), "0", "{name}: {}", read(&format!("{name}.err")));
        assert!(read(&format!("{name}.err")).contains("read-only"), "{name}: {}", read(&format!("{name}.err")));
    }
    let list: serde_json::Value = serde_json::from_str(&read("list.out")).unwrap();
    let statuses: Vec<&str> = list.as_array().unwrap().iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["failed", "completed"], "{list}");
    assert!(list[0]["error"].as_str().unwrap().contains("No space left"), "{list}");
    assert!(read("verify.out").contains("1 disk images verified"));
    // A backup on the full disk says why it cannot start.
    assert_eq!(read("none.rc").trim(), "1");
    let none = read("none.err");
    assert!(none.contains("the repository's disk is full") && none.contains("has 0 B free"), "{none}");
}
