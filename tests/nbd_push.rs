//! Push targets, end to end: `backchain serve` with its NBD listener, real
//! agents (qemu-img convert -n, nbdcopy --flush, qemu-io) writing into
//! pushed disks, and the HTTP calls around them. Oracles: qemu-img compare
//! of each restore point against the source as it was, qemu-img check,
//! `backchain verify` (the digest map against the image), and the files
//! left in the repository after aborts, timeouts and a killed server.

mod common;
#[path = "common/nbd_raw.rs"]
mod nbd_raw;

use backchain::nbd::consts::*;
use common::{Rng, backchain, run, tempdir, tool};
use serde_json::{Value, json};
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// `backchain serve` on a loopback HTTP port and an NBD unix socket,
/// killed (SIGKILL) when dropped unless stopped before.
struct Hub {
    child: Child,
    http: SocketAddr,
    token: String,
    repo: PathBuf,
}

impl Hub {
    fn start(repo: &Path, nbd: &str, extra: &[&str]) -> Hub {
        let mut child = backchain()
            .arg("--repo")
            .arg(repo)
            .args(["serve", "--listen", "127.0.0.1:0", "--nbd-listen", nbd])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines.by_ref().map(|l| l.unwrap()).find(|l| l.contains("http://")).expect("a start-up line");
        let at = line.find("http://").unwrap();
        let http: SocketAddr = line[at + 7..].split('/').next().unwrap().parse().unwrap();
        // Keep draining the server's messages so it never blocks on them.
        std::thread::spawn(move || lines.for_each(drop));
        let token = std::fs::read_to_string(repo.join("api.token")).unwrap().trim().to_string();
        Hub { child, http, token, repo: repo.to_path_buf() }
    }

    /// One API call; returns the status and the JSON body.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut s = TcpStream::connect(self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} /api/v1{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.token,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
        let status = String::from_utf8_lossy(&raw[9..12]).parse().unwrap();
        let body = serde_json::from_slice(&raw[end + 4..]).unwrap_or(Value::Null);
        (status, body)
    }

    /// Starts a push job; returns its id and the disks' NBD URIs.
    fn push(&self, vm: &str, disks: Value, kind: &str) -> (String, Vec<String>) {
        let (st, v) = self.call("POST", "/backups", Some(json!({"vm_name": vm, "disks": disks, "backup_type": kind})));
        assert_eq!(st, 202, "{v}");
        assert_eq!(v["status"], "waiting", "{v}");
        let uris = v["disks"].as_array().unwrap().iter().filter_map(|d| d["nbd_uri"].as_str()).map(String::from);
        (v["backup_id"].as_str().unwrap().to_string(), uris.collect())
    }

    fn complete(&self, id: &str, disk: usize, change_id: &str) -> Value {
        let body = json!({"disk_index": disk, "change_id": change_id});
        let (st, v) = self.call("POST", &format!("/backups/{id}/complete"), Some(body));
        assert_eq!(st, 200, "{v}");
        v
    }

    fn backup(&self, id: &str) -> Value {
        let (st, v) = self.call("GET", &format!("/backups/{id}"), None);
        assert_eq!(st, 200, "{v}");
        v
    }

    fn change_id(&self, vm: &str, disk: usize) -> Value {
        self.call("GET", &format!("/backups/changeid?vm_name={vm}&disk_index={disk}"), None).1["change_id"].clone()
    }

    fn image(&self, vm: &str, disk: usize, id: &str) -> PathBuf {
        self.repo.join(format!("vms/{vm}/disk-{disk}/{id}.qcow2"))
    }

    /// Ctrl-C: the server aborts the jobs still waiting and exits cleanly.
    fn stop(mut self) {
        run(std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]));
        assert!(self.child.wait().unwrap().success(), "serve exits cleanly on SIGINT");
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A disk with random data in `parts` (offset, length) and holes elsewhere.
fn disk(path: &Path, size: usize, parts: &[(usize, usize)], seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let mut rng = Rng::new(seed);
    for &(at, len) in parts {
        rng.fill(&mut v[at..at + len]);
    }
    std::fs::write(path, &v).unwrap();
    v
}

fn compare(image: &Path, reference: &Path) {
    run(tool("qemu-img").args(["compare", "-f", "qcow2", "-F", "raw"]).arg(image).arg(reference));
}

fn check(image: &Path) {
    run(tool("qemu-img").args(["check", "-f", "qcow2"]).arg(image));
}

/// Every file of the repository's VM folders whose name ends in .partial.
fn partials(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.join("vms")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".partial") {
                out.push(p);
            }
        }
    }
    out
}

/// Polls `f` until it holds, for at most 20 s.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn qemu_io(uri: &str, cmds: &[String]) {
    let mut c = tool("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(c.arg(uri));
}

#[test]
fn push_full_then_incremental_equals_the_source() {
    let t = tempdir();
    let repo = t.path().join("repo");
    let sock = t.path().join("nbd.sock");
    let hub = Hub::start(&repo, &format!("unix:{}", sock.display()), &[]);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the NBD socket is its owner's only");
    let size = 16 * MIB;
    let src = t.path().join("src.raw");
    let mut bytes = disk(&src, size, &[(0, 3 * MIB), (5 * MIB + 4097, 4 * MIB), (12 * MIB, 2 * MIB)], 1);

    // A full pushed by qemu-img convert -n.
    let (a, uris) = hub.push("vm", json!([{"push": {"size": size}}]), "full");
    let name = uris[0].split('/').nth(3).unwrap().split('?').next().unwrap();
    assert!(name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()), "128-bit export name: {name}");
    assert_eq!(hub.backup(&a)["status"], "waiting");
    run(tool("qemu-img").args(["convert", "-n", "-f", "raw", "-O", "raw"]).arg(&src).arg(&uris[0]));
    let v = hub.backup(&a);
    assert!(v["push"]["disks"][0]["bytes_written"].as_u64().unwrap() >= 9 * MIB as u64, "{v}");
    assert_eq!(hub.complete(&a, 0, "cbt-1")["status"], "completed");
    assert_eq!(hub.backup(&a)["status"], "completed");
    compare(&hub.image("vm", 0, &a), &src);
    check(&hub.image("vm", 0, &a));
    assert_eq!(hub.change_id("vm", 0), "cbt-1");

    // Another full, by nbdcopy --flush, after the source changed.
    bytes[100..200].fill(0x77);
    std::fs::write(&src, &bytes).unwrap();
    let (b, uris) = hub.push("vm", json!([{"push": {"size": size}}]), "full");
    run(tool("nbdcopy").arg("--flush").arg(&src).arg(&uris[0]));
    hub.complete(&b, 0, "cbt-2");
    compare(&hub.image("vm", 0, &b), &src);

    // An incremental: the agent sees the parent, then writes 512 B, 4 KiB,
    // 64 KiB and 3 MiB at unaligned offsets, zeros and a discard.
    let (c, uris) = hub.push("vm", json!([{"push": {"size": size}}]), "incremental");
    run(tool("qemu-img").args(["compare", "-f", "raw", "-F", "raw"]).arg(&uris[0]).arg(&src));
    let writes = [(1000, 512, 0x11), (70001, 4096, 0x22), (200_003, 65536, 0x33), (5 * MIB + 7, 3 * MIB, 0x44)];
    let mut cmds: Vec<String> = writes.iter().map(|(at, len, p)| format!("write -P {p} {at} {len}")).collect();
    cmds.extend(["write -z 12582912 1048576".into(), "write -z 9000 100".into(), "discard 14680064 131072".into()]);
    qemu_io(&uris[0], &cmds);
    for (at, len, p) in writes {
        bytes[at..at + len].fill(p as u8);
    }
    bytes[12 * MIB..13 * MIB].fill(0);
    bytes[9000..9100].fill(0);
    bytes[14 * MIB..14 * MIB + 131072].fill(0);
    std::fs::write(&src, &bytes).unwrap();
    // The export reads what was written, before it is complete.
    run(tool("qemu-img").args(["compare", "-f", "raw", "-F", "raw"]).arg(&uris[0]).arg(&src));
    assert_eq!(hub.complete(&c, 0, "cbt-3")["status"], "completed");
    let image = hub.image("vm", 0, &c);
    compare(&image, &src);
    check(&image);
    let v = hub.backup(&c);
    assert_eq!(v["backup_type"], "incremental", "{v}");
    // About what was written: 3 MiB and a few clusters, not the disk.
    let len = std::fs::metadata(&image).unwrap().len();
    assert!(len > 3 * MIB as u64 && len < 5 * MIB as u64, "incremental of {len} bytes");
    assert_eq!(hub.change_id("vm", 0), "cbt-3");
    // The digest map agrees with the image (verify reads both).
    run(backchain().arg("--repo").arg(&repo).args(["verify", &c]));
    assert!(partials(&repo).is_empty(), "{:?}", partials(&repo));
    assert_eq!(hub.call("GET", "/backups/changeid?vm_name=nope&disk_index=0", None).0, 404);
}

#[test]
fn two_disks_and_a_source_disk_commit_together() {
    let t = tempdir();
    let repo = t.path().join("repo");
    let sock = t.path().join("nbd.sock");
    let srcdir = t.path().join("sources");
    std::fs::create_dir_all(&srcdir).unwrap();
    let src_dir = srcdir.display().to_string();
    let hub = Hub::start(&repo, &format!("unix:{}", sock.display()), &["--source-dir", &src_dir]);
    let d0 = t.path().join("d0.raw");
    let d1 = t.path().join("d1.raw");
    let d2 = srcdir.join("d2.raw");
    disk(&d0, 8 * MIB, &[(0, 5 * MIB)], 2);
    disk(&d1, 12 * MIB, &[(MIB, 3 * MIB), (11 * MIB, MIB)], 3);
    disk(&d2, 4 * MIB, &[(MIB, MIB)], 4);
    let disks = json!([{"push": {"size": 8 * MIB}}, {"push": {"size": 12 * MIB}}, {"source": d2}]);
    let (id, uris) = hub.push("two", disks, "auto");
    assert_eq!(uris.len(), 2);
    assert_ne!(uris[0], uris[1]);
    // Both agents at once.
    let copies: Vec<Child> = [(&d0, &uris[0]), (&d1, &uris[1])]
        .iter()
        .map(|(s, u)| tool("nbdcopy").arg(s).arg(u).spawn().unwrap())
        .collect();
    for mut c in copies {
        assert!(c.wait().unwrap().success());
    }
    let v = hub.complete(&id, 1, "d1-1");
    assert_eq!(v["status"], "waiting", "one disk left: {v}");
    assert_eq!(
        hub.call("POST", &format!("/backups/{id}/complete"), Some(json!({"disk_index": 1, "change_id": "again"}))).0,
        409
    );
    assert_eq!(
        hub.call("POST", &format!("/backups/{id}/complete"), Some(json!({"disk_index": 2, "change_id": "x"}))).0,
        400
    );
    assert!(!hub.image("two", 0, &id).exists(), "nothing is committed before the last disk");
    hub.complete(&id, 0, "d0-1");
    // The source disk may still be read in the background: the backup
    // commits when it is done too.
    wait_until("the commit", || hub.backup(&id)["status"] == "completed");
    compare(&hub.image("two", 0, &id), &d0);
    compare(&hub.image("two", 1, &id), &d1);
    compare(&hub.image("two", 2, &id), &d2);
    assert_eq!(hub.change_id("two", 1), "d1-1");
    let v = hub.backup(&id);
    assert_eq!(v["disks"].as_array().unwrap().len(), 3, "{v}");
    // A completed job takes no more data and cannot be completed again.
    assert_eq!(
        hub.call("POST", &format!("/backups/{id}/complete"), Some(json!({"disk_index": 0, "change_id": "z"}))).0,
        409
    );
    // Bad pushes: a size that is not whole sectors, neither source nor push.
    let bad = |disks: Value| hub.call("POST", "/backups", Some(json!({"vm_name": "two", "disks": disks}))).0;
    assert_eq!(bad(json!([{"push": {"size": 1000}}])), 400);
    assert_eq!(bad(json!([{}])), 400);
    assert_eq!(bad(json!([{"push": {"size": 512}, "source": "x"}])), 400);
}

#[test]
fn aborts_timeouts_and_a_killed_server_leave_nothing_behind() {
    let t = tempdir();
    let repo = t.path().join("repo");
    let sock = t.path().join("nbd.sock");
    let nbd = format!("unix:{}", sock.display());
    let hub = Hub::start(&repo, &nbd, &["--push-idle", "2"]);
    let src = t.path().join("src.raw");
    let size = 8 * MIB;
    disk(&src, size, &[(0, 6 * MIB)], 5);
    let one = json!([{"push": {"size": size}}]);

    // DELETE while data comes in: exports gone, files gone, backup aborted.
    let (a, uris) = hub.push("vm", one.clone(), "full");
    qemu_io(&uris[0], &["write -P 1 0 1M".into()]);
    let (st, v) = hub.call("DELETE", &format!("/backups/{a}"), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(hub.backup(&a)["status"], "aborted");
    let out = tool("qemu-io").args(["-f", "raw", "-c", "read 0 512"]).arg(&uris[0]).output().unwrap();
    assert!(!out.status.success(), "the export of an aborted job is gone");
    assert!(partials(&repo).is_empty(), "{:?}", partials(&repo));

    // The idle timeout.
    let (b, _) = hub.push("vm", one.clone(), "full");
    wait_until("the idle timeout", || hub.backup(&b)["status"] == "aborted");
    assert!(hub.backup(&b)["error"].as_str().unwrap().contains("timed out"));
    assert!(partials(&repo).is_empty(), "{:?}", partials(&repo));

    // The next backup works.
    let (c, uris) = hub.push("vm", one.clone(), "auto");
    run(tool("nbdcopy").arg(&src).arg(&uris[0]));
    hub.complete(&c, 0, "c");
    compare(&hub.image("vm", 0, &c), &src);

    // kill -9 in the middle of an incremental push.
    let (d, uris) = hub.push("vm", one.clone(), "incremental");
    qemu_io(&uris[0], &["write -P 9 4096 2M".into()]);
    hub.kill();
    let hub = Hub::start(&repo, &nbd, &[]);
    assert_eq!(hub.backup(&d)["status"], "interrupted");
    assert!(partials(&repo).is_empty(), "{:?}", partials(&repo));
    assert!(!hub.image("vm", 0, &d).exists());
    let (e, uris) = hub.push("vm", one, "incremental");
    qemu_io(&uris[0], &["write -P 3 100 5000".into()]);
    hub.complete(&e, 0, "e");
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[100..5100].fill(3);
    std::fs::write(&src, &bytes).unwrap();
    compare(&hub.image("vm", 0, &e), &src);
    assert_eq!(hub.change_id("vm", 0), "e");

    // A clean stop aborts what still waits.
    let (f, uris) = hub.push("vm", json!([{"push": {"size": size}}]), "incremental");
    qemu_io(&uris[0], &["write -P 4 0 64k".into()]);
    hub.stop();
    assert!(partials(&repo).is_empty(), "{:?}", partials(&repo));
    let hub = Hub::start(&repo, &nbd, &[]);
    let v = hub.backup(&f);
    assert_eq!((v["status"].as_str(), v["error"].as_str()), (Some("aborted"), Some("the server stopped")), "{v}");
}

#[test]
fn bad_requests_get_nbd_errors_and_the_server_keeps_serving() {
    let t = tempdir();
    let repo = t.path().join("repo");
    let sock = t.path().join("nbd.sock");
    let hub = Hub::start(&repo, &format!("unix:{}", sock.display()), &[]);
    let src = t.path().join("src.raw");
    let size = 4 * MIB;
    disk(&src, size, &[(0, MIB)], 6);
    let (a, uris) = hub.push("vm", json!([{"push": {"size": size}}]), "full");
    run(tool("nbdcopy").arg(&src).arg(&uris[0]));
    hub.complete(&a, 0, "a");
    let (b, uris) = hub.push("vm", json!([{"push": {"size": size}}]), "incremental");
    let name = uris[0].split('/').nth(3).unwrap().split('?').next().unwrap().to_string();

    let mut s = UnixStream::connect(&sock).unwrap();
    let (got, flags) = nbd_raw::go(&mut s, &name, true);
    assert_eq!(got, size as u64);
    assert_ne!(flags & TFLAG_CAN_MULTI_CONN, 0);
    assert_eq!(flags & TFLAG_READ_ONLY, 0);
    // Past the end: ENOSPC for a write (its payload read and dropped), EINVAL for a read.
    nbd_raw::send(&mut s, 0, CMD_WRITE, 1, size as u64 - 2, 4, b"abcd");
    assert_eq!(nbd_raw::simple_reply(&mut s, 0).0, ENOSPC);
    nbd_raw::send(&mut s, 0, CMD_WRITE_ZEROES, 2, size as u64, 512, &[]);
    assert_eq!(nbd_raw::simple_reply(&mut s, 0).0, ENOSPC);
    // Many requests outstanding at once: every cookie answered.
    for i in 0..16u64 {
        nbd_raw::send(
            &mut s,
            CMD_FLAG_FUA,
            CMD_WRITE,
            100 + i,
            (MIB as u64) + i * 4096 + 3,
            4096,
            &[i as u8 + 1; 4096],
        );
    }
    let mut cookies: Vec<u64> = (0..16)
        .map(|_| match nbd_raw::simple_reply(&mut s, 0) {
            (0, cookie, _) => cookie,
            (e, cookie, _) => panic!("write {cookie}: error {e}"),
        })
        .collect();
    cookies.sort();
    assert_eq!(cookies, (100..116).collect::<Vec<_>>());
    // Block status: data where the parent and the writes are, REQ_ONE gives one descriptor.
    let all = nbd_raw::block_status(&mut s, 0, 0, size as u32);
    assert_eq!(all[0], ((MIB + 65536 + 65536) as u32, 0), "{all:?}");
    assert_eq!(all.iter().map(|d| u64::from(d.0)).sum::<u64>(), size as u64);
    let one = nbd_raw::block_status(&mut s, CMD_FLAG_REQ_ONE, 2 * MIB as u64, 2 * MIB as u32);
    assert_eq!(one, [(2 * MIB as u32, STATE_HOLE | STATE_ZERO)]);
    drop(s);
    // After completion the name is gone: negotiation says so, and a
    // connection opened before gets EIO.
    let mut s = UnixStream::connect(&sock).unwrap();
    nbd_raw::go(&mut s, &name, false);
    hub.complete(&b, 0, "b");
    assert_eq!(nbd_raw::call(&mut s, CMD_READ, 0, 512, &[]).0, EIO);
    let mut s = UnixStream::connect(&sock).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    s.write_all(&CLIENT_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    let data = backchain::nbd::option::ExportRequest { name: name.clone(), infos: vec![] }.encode();
    assert_eq!(nbd_raw::option(&mut s, OPT_GO, &data).0, REP_ERR_UNKNOWN);
    assert_eq!(nbd_raw::option(&mut s, OPT_LIST, &[]).0, REP_ERR_POLICY);
    // The server still serves: the restore point reads back.
    let mut want = std::fs::read(&src).unwrap();
    for i in 0..16usize {
        let at = MIB + i * 4096 + 3;
        want[at..at + 4096].fill(i as u8 + 1);
    }
    std::fs::write(&src, &want).unwrap();
    compare(&hub.image("vm", 0, &b), &src);
}
