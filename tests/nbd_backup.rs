//! Backups pulled from NBD exports, against real peers: qemu-nbd (QCOW2
//! with a persistent dirty bitmap made by qemu-img and written by qemu-io),
//! qemu-storage-daemon (a fleecing export), nbdkit (block-size policy, no
//! structured replies, injected EIO, a server killed mid-backup, a sparse
//! export over 4 GiB). Oracles: qemu-img convert/compare/check of the
//! source at each moment, nbdinfo's map of the dirty bitmap, and qemu-nbd's
//! own trace of the read chunks it sent.

mod common;
#[path = "common/nbd_peer.rs"]
mod nbd_peer;

use common::*;
use nbd_peer::{Peer, free_port, nbdkit, push_merged, qemu_nbd};
use serde_json::Value;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// backchain's cluster size, and the granularity of the test bitmaps.
const CS: u64 = 64 * KIB;

fn bc(repo: &Path) -> Command {
    let mut c = backchain();
    c.arg("--repo").arg(repo);
    c
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `backchain backup --vm VM --disk SRC --json [extra]`, which must succeed.
fn backup(repo: &Path, vm: &str, src: &str, extra: &[&str]) -> Value {
    json(&run(bc(repo).args(["backup", "--vm", vm, "--json", "--disk", src]).args(extra)))
}

/// The same, expected to fail: its one-line error.
fn backup_fails(repo: &Path, vm: &str, src: &str) -> String {
    let err = run_fail(bc(repo).args(["backup", "--vm", vm, "--disk", src]));
    assert_eq!(err.trim_end().lines().count(), 1, "one clear line: {err}");
    err
}

/// The image a backup wrote for disk 0.
fn image(repo: &Path, b: &Value) -> PathBuf {
    repo.join(b["disks"][0]["image_path"].as_str().expect("image_path"))
}

/// `qemu-img check` finds nothing and the image (with its chain) reads as
/// `want` (anything qemu-img opens: a raw file or an NBD URI).
fn assert_restores(image: &Path, want_fmt: &str, want: &str) {
    let out = tool("qemu-img").args(["check", "--output=json"]).arg(image).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("qemu-img check JSON");
    assert!(out.status.success(), "qemu-img check {}: {v}", image.display());
    for k in ["corruptions", "leaks", "check-errors"] {
        assert_eq!(v.get(k).and_then(Value::as_u64).unwrap_or(0), 0, "{k}: {v}");
    }
    run(tool("qemu-img").args(["compare", "-q", "-f", "qcow2", "-F", want_fmt]).arg(image).arg(want));
}

/// The source as raw bytes in a file, now (qemu-img convert).
fn snapshot(img: &Path, name: &str) -> String {
    let out = img.with_file_name(name);
    run(tool("qemu-img").args(["convert", "-O", "raw"]).arg(img).arg(&out));
    out.display().to_string()
}

fn new_qcow2(dir: &Path, size: &str, writes: &[&str]) -> PathBuf {
    let img = dir.join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", img.to_str().unwrap(), size]);
    qemu_io(&img, "qcow2", &writes.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    img
}

fn add_bitmap(img: &Path, name: &str) {
    qemu_img(&["bitmap", "--add", "--granularity", "65536", img.to_str().unwrap(), name]);
}

/// Ranges widened to whole clusters and merged.
fn widen(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        push_merged(&mut out, r.start / CS * CS..r.end.div_ceil(CS) * CS);
    }
    out
}

/// The chunks qemu-nbd's trace says it sent for reads (data and holes):
/// `(offset, len)` from `nbd_co_send_chunk_read*` lines.
fn traced_reads(log: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(log).expect("qemu-nbd trace");
    let field = |line: &str, key: &str| -> u64 {
        let at = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
        line[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    text.lines()
        .filter(|l| l.contains("nbd_co_send_chunk_read"))
        .map(|l| (field(l, "offset = "), field(l, "len = ")))
        .collect()
}

/// Full backup, writes of every kind under a dirty bitmap, then an
/// incremental that reads only the dirty extents (proved by qemu-nbd's
/// trace), and a later one without a bitmap that compares digests.
#[test]
fn bitmap_incremental_reads_only_dirty_extents() {
    let dir = tempdir();
    let d = dir.path();
    let repo = d.join("repo");
    let img = new_qcow2(d, "8M", &["write -P 0x11 0 1M", "write -P 0x22 2M 512k", "write -P 0x33 5M 64k"]);
    // The bitmap starts at the full backup, which records its name.
    add_bitmap(&img, "b1");
    let t0 = snapshot(&img, "t0.raw");
    let sock = d.join("nbd.sock");
    let peer = qemu_nbd(&img, "qcow2", &sock, &["-B", "b1"]);
    let full = backup(&repo, "vm", &format!("{}&bitmap=b1", peer.uri), &[]);
    drop(peer);
    assert_eq!(full["backup_type"], "full");
    assert_eq!(full["disks"][0]["change_id"], "b1");
    // Holes are never read: 1.5 MiB + 64 KiB of data.
    assert_eq!(full["bytes_read"].as_u64().unwrap(), 1536 * KIB + CS, "{full}");
    assert_restores(&image(&repo, &full), "raw", &t0);

    // New data, zeros over old data, a 512-byte write, data in a hole.
    let writes = ["write -P 0x55 1M 128k", "write -z 0 64k", "write -P 0x66 2200k 512", "write -P 0x77 6M 64k"];
    qemu_io(&img, "qcow2", &writes.map(String::from));
    let t1 = snapshot(&img, "t1.raw");
    let (events, log) = (d.join("events"), d.join("trace.log"));
    std::fs::write(&events, "nbd_co_send_chunk_read*\n").unwrap();
    let port = free_port();
    let mut c = tool("qemu-nbd");
    c.args(["-r", "-t", "-f", "qcow2", "-b", "127.0.0.1", "-p", &port.to_string(), "-B", "b1", "-T"])
        .arg(format!("events={},file={}", events.display(), log.display()))
        .arg(&img);
    let peer = Peer::on_port(c, port, "");
    let dirty = dirty_extents(&peer.uri, "b1");
    let wide = widen(&dirty);
    let dirty_bytes: u64 = wide.iter().map(|r| r.end - r.start).sum();
    assert_eq!(dirty_bytes, 5 * CS, "the oracle's dirty extents: {dirty:?}");
    let before = traced_reads(&log).len();
    let inc = backup(&repo, "vm", &format!("{}?bitmap=b1", peer.uri), &["--type", "incremental"]);
    drop(peer);
    assert_eq!(inc["backup_type"], "incremental");
    assert_eq!(inc["disks"][0]["change_id"], "b1");
    assert_eq!(inc["notes"], serde_json::json!([]), "same bitmap as the parent: no note");
    let chunks = &traced_reads(&log)[before..];
    assert!(!chunks.is_empty());
    for &(off, len) in chunks {
        assert!(wide.iter().any(|r| r.start <= off && off + len <= r.end), "read {off}+{len} outside {wide:?}");
    }
    let read: u64 = chunks.iter().map(|c| c.1).sum();
    assert!(read * 10 <= dirty_bytes * 11, "qemu-nbd sent {read} bytes for {dirty_bytes} dirty");
    assert!(inc["bytes_read"].as_u64().unwrap() <= dirty_bytes, "{inc}");
    // The zeroed cluster is a zero cluster, the others data: 4 data
    // clusters and the metadata of a small image.
    let stored = inc["disks"][0]["stored_bytes"].as_u64().unwrap();
    assert!(stored <= 4 * CS + 6 * CS, "incremental file of {stored} bytes");
    assert_eq!(inc["disks"][0]["changed_bytes"].as_u64().unwrap(), 5 * CS, "{inc}");
    assert_restores(&image(&repo, &inc), "raw", &t1);
    assert_restores(&image(&repo, &full), "raw", &t0);

    // More writes, served without the bitmap: an incremental by digests.
    qemu_io(&img, "qcow2", &["write -P 0x99 3M 4k".to_string(), "write -z 1M 64k".to_string()]);
    let t2 = snapshot(&img, "t2.raw");
    let peer = qemu_nbd(&img, "qcow2", &sock, &[]);
    let plain = backup(&repo, "vm", &peer.uri, &[]);
    assert_eq!(plain["backup_type"], "incremental");
    assert_eq!(plain["disks"][0]["changed_bytes"].as_u64().unwrap(), 2 * CS, "{plain}");
    assert_restores(&image(&repo, &plain), "raw", &t2);
    assert_restores(&image(&repo, &inc), "raw", &t1);
}

/// The dirty ranges of bitmap `name` on `uri`, according to nbdinfo.
fn dirty_extents(uri: &str, name: &str) -> Vec<Range<u64>> {
    let out = run(tool("nbdinfo").args([&format!("--map=qemu:dirty-bitmap:{name}"), "--json", uri]));
    let v: Value = serde_json::from_slice(&out.stdout).expect("nbdinfo JSON");
    let mut ranges = Vec::new();
    for e in v.as_array().unwrap().iter().filter(|e| e["type"].as_u64().unwrap() & 1 != 0) {
        let (o, l) = (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        push_merged(&mut ranges, o..o + l);
    }
    ranges
}

/// Waits up to 10 s for `cmd` to exit and returns whether it failed; a
/// command still running then is killed and fails the test.
fn exits_with_failure(cmd: &mut Command) -> bool {
    let mut child = cmd.stdin(std::process::Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return !st.success();
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{cmd:?} is still running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A writer killed with the image open leaves its bitmap in use
/// (inconsistent): qemu-nbd refuses to export it, so the bitmap is not
/// granted, and the incremental reads everything, compares digests and
/// says so in a note. The result is still exact.
#[test]
fn an_inconsistent_bitmap_falls_back_to_digests_with_a_note() {
    let dir = tempdir();
    let d = dir.path();
    let repo = d.join("repo");
    let img = new_qcow2(d, "4M", &["write -P 0x11 0 1M", "write -P 0x22 3M 128k"]);
    add_bitmap(&img, "b1");
    let sock = d.join("nbd.sock");
    let peer = qemu_nbd(&img, "qcow2", &sock, &["-B", "b1"]);
    backup(&repo, "vm", &format!("{}&bitmap=b1", peer.uri), &[]);
    drop(peer);

    // Writes, a flush, and then the writer stays until it is killed.
    let mut writer = tool("qemu-io");
    writer.args(["-f", "qcow2"]);
    for cmd in ["write -P 0x44 1M 64k", "write -P 0x45 3M 512", "flush", "sleep 60000"] {
        writer.arg("-c").arg(cmd);
    }
    let mut writer = writer.arg(&img).stdout(std::process::Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while qemu_raw_u(&img, d)[3 * MIB as usize] != 0x45 {
        assert!(writer.try_wait().unwrap().is_none(), "qemu-io ended early");
        assert!(t0.elapsed() < Duration::from_secs(10), "the writes never showed");
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.kill().unwrap();
    writer.wait().unwrap();
    let info = qemu_img(&["info", "-U", "--output=json", img.to_str().unwrap()]);
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    let flags = &info["format-specific"]["data"]["bitmaps"][0]["flags"];
    assert!(flags.as_array().unwrap().iter().any(|f| f == "in-use"), "{info}");
    let mut c = tool("qemu-nbd");
    c.args(["-r", "-f", "qcow2", "-k"]).arg(d.join("refused.sock")).args(["-B", "b1"]).arg(&img);
    assert!(exits_with_failure(&mut c), "qemu-nbd exports an inconsistent bitmap");

    let t1 = snapshot(&img, "t1.raw");
    let peer = qemu_nbd(&img, "qcow2", &sock, &[]);
    let inc = backup(&repo, "vm", &format!("{}&bitmap=b1", peer.uri), &["--type", "incremental"]);
    let notes = inc["notes"].to_string();
    assert!(notes.contains("did not grant dirty bitmap") && notes.contains("b1"), "{inc}");
    assert_eq!(inc["disks"][0]["changed_bytes"].as_u64().unwrap(), 2 * CS, "{inc}");
    assert_eq!(inc["bytes_read"].as_u64().unwrap(), MIB + 3 * CS, "every data cluster read: {inc}");
    assert_restores(&image(&repo, &inc), "raw", &t1);
    let listed = json(&run(bc(&repo).args(["list", "--vm", "vm", "--json"])));
    assert_eq!(listed[0]["notes"], inc["notes"], "the catalog keeps the notes: {listed}");
    // A bitmap name the parent did not record is accepted, with a note.
    let other = backup(&repo, "vm", &format!("{}&bitmap=b2", peer.uri), &[]);
    assert!(other["notes"].to_string().contains("differs from the parent backup"), "{other}");
}

/// The bytes of an image opened with -U (another process may hold it).
fn qemu_raw_u(img: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join("peek.raw");
    run(tool("qemu-img").args(["convert", "-U", "-O", "raw"]).arg(img).arg(&out));
    std::fs::read(&out).unwrap()
}

/// qemu-storage-daemon with copy-before-write and snapshot-access (the
/// fleecing libvirt's pull-mode backup-begin sets up): a guest keeps
/// writing to the live export while backchain backs up the fleecing
/// export, which must give the disk as it was at the fleecing point.
#[test]
fn fleecing_export_of_qemu_storage_daemon() {
    let dir = tempdir();
    let d = dir.path();
    let repo = d.join("repo");
    let img = new_qcow2(d, "8M", &["write -P 0x11 0 3M", "write -P 0x22 6M 1M"]);
    let t0 = snapshot(&img, "t0.raw");
    let fleece = d.join("fleece.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", fleece.to_str().unwrap(), "8M"]);
    let sock = d.join("qsd.sock");
    let mut c = tool("qemu-storage-daemon");
    c.arg("--blockdev")
        .arg(format!("driver=file,node-name=f0,filename={}", img.display()))
        .args(["--blockdev", "driver=qcow2,node-name=disk,file=f0", "--blockdev"])
        .arg(format!("driver=file,node-name=f1,filename={}", fleece.display()))
        .args(["--blockdev", "driver=qcow2,node-name=fleece,file=f1"])
        .args(["--blockdev", "driver=copy-before-write,node-name=cbw,file=disk,target=fleece"])
        .args(["--blockdev", "driver=snapshot-access,node-name=snap,file=cbw", "--nbd-server"])
        .arg(format!("addr.type=unix,addr.path={}", sock.display()))
        .args(["--export", "type=nbd,id=e0,node-name=cbw,name=live,writable=on"])
        .args(["--export", "type=nbd,id=e1,node-name=snap,name=fleece"]);
    let qsd = Peer::on_socket(c, &sock, "fleece");
    let live = format!("nbd+unix:///live?socket={}", sock.display());
    let guest = |round: u64| {
        let cmds =
            [format!("write -P {} {}k 64k", 0x60 + round, round * 448), format!("write -z {}k 4k", 6144 + round * 64)];
        qemu_io_uri(&live, &cmds);
    };
    guest(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (b, rounds) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 16 {
                guest(n);
                n += 1;
            }
            n
        });
        let b = backup(&repo, "vm", &qsd.uri, &[]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (b, writer.join().unwrap())
    });
    drop(qsd);
    assert!(rounds >= 2, "the guest wrote during the backup");
    assert_restores(&image(&repo, &b), "raw", &t0);
    let now = snapshot(&img, "now.raw");
    assert_ne!(std::fs::read(&now).unwrap(), std::fs::read(&t0).unwrap(), "the guest's writes reached the disk");
}

/// qemu-io on an NBD URI (raw over NBD).
fn qemu_io_uri(uri: &str, cmds: &[String]) {
    let mut c = tool("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    run(c.arg(uri));
}

/// nbdkit's data plugin: 1 MiB of a pattern, 64 KiB of another at 5 MiB,
/// in an 8 MiB export.
const DATA: [&str; 2] = ["data=(1 2 3 4 5 6 7 8)*131072 @5242880 (0x5a 0xa5)*32768", "size=8M"];

/// Requests that must fit a 4 KiB minimum and a 1 MiB maximum block size
/// (the filter fails any that does not), and a server without structured
/// replies (no block status: everything is read).
#[test]
fn nbdkit_block_size_policy_and_no_structured_replies() {
    let dir = tempdir();
    let d = dir.path();
    let repo = d.join("repo");
    let policy = ["--filter=blocksize-policy", "data", DATA[0], DATA[1]];
    let limits = ["blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=1M"];
    let args: Vec<&str> = policy.iter().chain(&limits).copied().chain(["blocksize-error-policy=error"]).collect();
    let peer = nbdkit(&d.join("policy.sock"), &args);
    let b = backup(&repo, "policy", &peer.uri, &[]);
    assert_eq!(b["bytes_read"].as_u64().unwrap(), MIB + CS, "{b}");
    assert_restores(&image(&repo, &b), "raw", &peer.uri);

    let peer = nbdkit(&d.join("nosr.sock"), &["--no-sr", "data", DATA[0], DATA[1]]);
    let b = backup(&repo, "nosr", &peer.uri, &[]);
    assert_eq!(b["bytes_read"].as_u64().unwrap(), 8 * MIB, "no block status: all read: {b}");
    assert_eq!(b["disks"][0]["changed_bytes"].as_u64().unwrap(), MIB + CS, "zeros are not stored: {b}");
    assert_restores(&image(&repo, &b), "raw", &peer.uri);
}

/// `.partial` files left anywhere under `repo`.
fn partials(repo: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in std::fs::read_dir(&d).into_iter().flatten().flatten().map(|e| e.path()) {
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".partial") {
                found.push(p);
            }
        }
    }
    found
}

/// The statuses `list --json` gives for VM `vm`, newest first.
fn statuses(repo: &Path, vm: &str) -> Vec<String> {
    let v = json(&run(bc(repo).args(["list", "--vm", vm, "--json"])));
    v.as_array().unwrap().iter().map(|b| b["status"].as_str().unwrap().to_string()).collect()
}

/// EIO from the server and a server killed mid-backup each fail the job
/// with one line, leave no `.partial`, mark it failed, and the next backup
/// works.
#[test]
fn a_failing_or_dying_server_fails_the_job_cleanly() {
    let dir = tempdir();
    let d = dir.path();
    let repo = d.join("repo");
    let flag = d.join("errors-on");
    std::fs::write(&flag, b"").unwrap();
    let file = format!("error-pread-file={}", flag.display());
    let eio = ["--filter=error", "data", DATA[0], DATA[1], "error-pread=EIO", "error-pread-rate=100%", &file];
    let peer = nbdkit(&d.join("eio.sock"), &eio);
    let err = backup_fails(&repo, "vm", &peer.uri);
    assert!(err.contains("EIO"), "{err}");
    assert!(partials(&repo).is_empty(), "{:?}", partials(&repo));
    assert_eq!(statuses(&repo, "vm"), ["failed"]);
    std::fs::remove_file(&flag).unwrap();
    let b = backup(&repo, "vm", &peer.uri, &[]);
    assert_restores(&image(&repo, &b), "raw", &peer.uri);
    drop(peer);

    // Slow reads, and the server killed once the backup has begun writing.
    let slow = d.join("slow.sock");
    let mut peer = Some(nbdkit(&slow, &["--filter=delay", "data", DATA[0], DATA[1], "rdelay=2"]));
    let uri = peer.as_ref().unwrap().uri.clone();
    let mut job = bc(&repo)
        .args(["backup", "--vm", "vm", "--type", "full", "--disk", &uri])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while partials(&repo).is_empty() {
        assert!(job.try_wait().unwrap().is_none(), "the backup ended before the server was killed");
        assert!(t0.elapsed() < Duration::from_secs(20), "no .partial appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(peer.take());
    let out = job.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&uri), "names the source: {err}");
    assert!(partials(&repo).is_empty(), "{:?}", partials(&repo));
    assert_eq!(statuses(&repo, "vm"), ["failed", "completed", "failed"]);
    let peer = nbdkit(&d.join("again.sock"), &["data", DATA[0], DATA[1]]);
    let b = backup(&repo, "vm", &peer.uri, &[]);
    assert_eq!(b["backup_type"], "incremental");
    assert_eq!(b["disks"][0]["changed_bytes"], 0, "{b}");
    assert_restores(&image(&repo, &b), "raw", &peer.uri);
}

/// A sparse 6 GiB export: block status and reads past 4 GiB (u32 lengths).
#[test]
fn a_sparse_export_over_4_gib() {
    let dir = tempdir();
    let d = dir.path();
    let repo = d.join("repo");
    let data = "data=(1 2 3 4)*16384 @4294901760 (7 7 7 9)*65536 @6442385408 (0x42)*65536";
    let peer = nbdkit(&d.join("big.sock"), &["data", data, "size=6G"]);
    let b = backup(&repo, "big", &peer.uri, &[]);
    // 64 KiB + 256 KiB straddling 4 GiB + the last 64 KiB.
    assert_eq!(b["bytes_read"].as_u64().unwrap(), 6 * CS, "{b}");
    assert_restores(&image(&repo, &b), "raw", &peer.uri);
    let inc = backup(&repo, "big", &peer.uri, &[]);
    assert_eq!(inc["backup_type"], "incremental");
    assert_eq!(inc["disks"][0]["changed_bytes"], 0, "{inc}");
}

/// `curl` against the API with the token; the JSON answer.
fn api(addr: &str, token: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut c = tool("curl");
    c.args(["-sS", "--fail-with-body", "-X", method, "-H", &format!("Authorization: Bearer {token}")]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
    }
    json(&run(c.arg(format!("http://{addr}/api/v1{path}"))))
}

/// The server process, stopped when the test ends.
struct Serve(std::process::Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same sources through `POST /backups`: a full and a bitmap
/// incremental of a qemu-nbd export, followed to completion.
#[test]
fn backups_over_http_from_an_nbd_export() {
    let dir = tempdir();
    let d = dir.path();
    let repo = d.join("repo");
    let img = new_qcow2(d, "4M", &["write -P 0x11 0 1M"]);
    add_bitmap(&img, "b1");
    let mut serve = Serve(
        bc(&repo).args(["serve", "--listen", "127.0.0.1:0"]).stderr(std::process::Stdio::piped()).spawn().unwrap(),
    );
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(serve.0.stderr.take().unwrap()));
    let line = lines.by_ref().map(|l| l.unwrap()).find(|l| l.contains("http://")).expect("a start-up line");
    let addr = line[line.find("http://").unwrap() + 7..].split('/').next().unwrap().to_string();
    std::thread::spawn(move || lines.for_each(drop));
    let token = std::fs::read_to_string(repo.join("api.token")).unwrap().trim().to_string();
    let sock = d.join("nbd.sock");
    let mut wants = Vec::new();
    for (kind, write) in [("full", None), ("incremental", Some("write -P 0x33 2M 64k"))] {
        if let Some(w) = write {
            qemu_io(&img, "qcow2", &[w.to_string()]);
        }
        wants.push(snapshot(&img, &format!("{kind}.raw")));
        let peer = qemu_nbd(&img, "qcow2", &sock, &["-B", "b1"]);
        let body = serde_json::json!({"vm_name": "vm", "disks": [{"source": format!("{}&bitmap=b1", peer.uri)}]});
        let started = api(&addr, &token, "POST", "/backups", Some(&body));
        let id = started["backup_id"].as_str().unwrap().to_string();
        let t0 = Instant::now();
        let done = loop {
            let v = api(&addr, &token, "GET", &format!("/backups/{id}"), None);
            if v["status"] != "running" && v["status"] != "pending" {
                break v;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "{v}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["backup_type"], kind, "{done}");
        assert_eq!(done["disks"][0]["change_id"], "b1", "{done}");
    }
    let list = json(&run(bc(&repo).args(["list", "--vm", "vm", "--json"])));
    let list = list.as_array().unwrap();
    for (b, want) in list.iter().rev().zip(&wants) {
        let img = repo.join(b["disks"][0]["image_path"].as_str().unwrap());
        assert_restores(&img, "raw", want);
    }
    assert_eq!(list[0]["disks"][0]["changed_bytes"].as_u64().unwrap(), CS, "{list:?}");
}

/// `(connection, offset, count)` of every Read in an nbdkit log filter's
/// file (`connection=N Read id=I offset=0x.. count=0x.. ...`).
fn logged_reads(log: &Path) -> Vec<(u64, u64, u64)> {
    let text = std::fs::read_to_string(log).expect("nbdkit log");
    let hex = |l: &str, key: &str| {
        let at = l.find(key).unwrap() + key.len();
        u64::from_str_radix(l[at..].split(' ').next().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    text.lines()
        .filter(|l| l.contains(" Read id=") && !l.contains("...Read"))
        .map(|l| (hex(l, "connection="), hex(l, "offset="), hex(l, "count=")))
        .collect()
}

/// A server that allows several connections (nbdkit sets CAN_MULTI_CONN)
/// gets reads on several, and exactly the bytes backchain says it read
/// (nbdkit's log filter is the witness); an export whose size changed
/// starts a new chain.
#[test]
fn multi_conn_reads_and_a_resized_export() {
    let dir = tempdir();
    let d = dir.path();
    let repo = d.join("repo");
    let log = d.join("nbdkit.log");
    let logfile = format!("logfile={}", log.display());
    let peer = nbdkit(&d.join("log.sock"), &["--filter=log", "data", DATA[0], DATA[1], &logfile]);
    let b = backup(&repo, "vm", &peer.uri, &[]);
    drop(peer);
    let reads = logged_reads(&log);
    let mut conns: Vec<u64> = reads.iter().map(|r| r.0).collect();
    conns.sort();
    conns.dedup();
    assert!(conns.len() >= 2, "reads on one connection only: {reads:?}");
    assert_eq!(reads.iter().map(|r| r.2).sum::<u64>(), b["bytes_read"].as_u64().unwrap(), "{reads:?}");
    assert!(reads.iter().all(|&(_, o, n)| o + n <= MIB || (o >= 5 * MIB && o + n <= 5 * MIB + CS)), "{reads:?}");

    let peer = nbdkit(&d.join("big.sock"), &["data", DATA[0], "size=16M"]);
    let grown = backup(&repo, "vm", &peer.uri, &[]);
    assert_eq!(grown["backup_type"], "full", "{grown}");
    assert!(grown["notes"].to_string().contains("changed size"), "{grown}");
    assert_restores(&image(&repo, &grown), "raw", &peer.uri);
}
