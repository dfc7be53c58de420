//! The HTTP API, served in-process on port 0 over a temporary repository and
//! driven by a small HTTP/1.1 client over TcpStream. Oracles: the source
//! disk's bytes (SHA-256), unzip/tar extraction, qemu-img compare.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;
use backchain::api::{self, Options};
use backchain::engine::{BackupRequest, Requested, backup};
use backchain::repo::Repo;
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECTOR: u64 = 512;
/// Partition 1: sectors 2048..=6143 (2 MiB), partition 2: 6144..=12287 (3 MiB).
const P1: (u64, u64) = (2048, 6143);
const P2: (u64, u64) = (6144, 12287);
const DISK_SIZE: u64 = 8 << 20;

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// A GPT disk made by sgdisk, its partitions filled with random bytes.
fn make_disk(dir: &Path, name: &str, seed: u64) -> (PathBuf, Vec<u8>) {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(DISK_SIZE).unwrap();
    run(tool("sgdisk")
        .args(["-n", &format!("1:{}:{}", P1.0, P1.1), "-c", "1:alpha"])
        .args(["-n", &format!("2:{}:{}", P2.0, P2.1), "-c", "2:beta ünï"])
        .arg(&path));
    let mut disk = std::fs::read(&path).unwrap();
    let mut rng = Rng::new(seed);
    for (a, z) in [P1, P2] {
        rng.fill(&mut disk[(a * SECTOR) as usize..((z + 1) * SECTOR) as usize]);
    }
    std::fs::write(&path, &disk).unwrap();
    (path, disk)
}

fn part(disk: &[u8], p: (u64, u64)) -> &[u8] {
    &disk[(p.0 * SECTOR) as usize..((p.1 + 1) * SECTOR) as usize]
}

struct Server {
    addr: SocketAddr,
    token: Option<String>,
    _rt: tokio::runtime::Runtime,
    _stop: tokio::sync::oneshot::Sender<()>,
    repo: Arc<Repo>,
    dir: tempfile::TempDir,
    disk: Vec<u8>,
    disk_path: PathBuf,
    backup_id: String,
}

/// A repository holding one full backup of a two-partition disk, served.
fn server(mut opts: Options) -> Server {
    let dir = tempdir();
    // Confinement has its own test; the others name sources anywhere.
    if opts.source_dirs.is_empty() {
        opts.source_dirs = vec![PathBuf::from("/")];
    }
    let (disk_path, disk) = make_disk(dir.path(), "disk.img", 7);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let repo = Arc::new(Repo::open(&dir.path().join("repo"), rt.handle().clone()).unwrap());
    let req = BackupRequest {
        vm: "vm1".into(),
        disks: vec![disk_path.display().to_string()],
        kind: Requested::Full,
        ..Default::default()
    };
    let backup_id = backup::run(&repo, &req, &backchain::engine::NoProgress).unwrap().backup_id;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let token = opts.token.clone();
    rt.spawn(api::run(listener, repo.clone(), opts, async {
        let _ = rx.await;
    }));
    Server { addr, token, _rt: rt, _stop: tx, repo, dir, disk, disk_path, backup_id }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("status {}: not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }
    fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().expect("an error code").to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection; the body is read to the end
/// (chunked transfer decoded).
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Resp { status, headers, body }
}

/// Decodes a chunked body; panics on a transfer that did not end cleanly.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size line: transfer cut short");
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().split(';').next().unwrap(), 16).unwrap();
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        assert!(b.len() >= size + 2, "chunk cut short");
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

impl Server {
    fn call(&self, method: &str, target: &str, body: Option<Value>) -> Resp {
        self.call_h(method, target, &[], body)
    }
    fn call_h(&self, method: &str, target: &str, extra: &[(&str, &str)], body: Option<Value>) -> Resp {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = extra.to_vec();
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        request(self.addr, method, &format!("/api/v1{target}"), &h, &body)
    }
    fn mount(&self, disk: Option<usize>) -> String {
        let r = self.call("POST", "/restore/mount", Some(json!({"backup_id": self.backup_id, "disk_index": disk})));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()["mount_id"].as_str().unwrap().to_string()
    }
    /// The listing of `path` in session `m`.
    fn ls(&self, m: &str, path: &str) -> Value {
        let r = self.call(
            "GET",
            &format!("/restore/{m}/files?path={}", backchain::restore::entry::encode_query(path)),
            None,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }
    /// The path of the folder of partition `n` in a one-disk session.
    fn part_dir(&self, m: &str, n: u32) -> String {
        let root = self.ls(m, "/");
        let prefix = format!("Partition {n}");
        let e = root["entries"].as_array().unwrap().iter().find(|e| e["name"].as_str().unwrap().starts_with(&prefix));
        e.unwrap_or_else(|| panic!("no {prefix} in {root}"))["path"].as_str().unwrap().to_string()
    }
}

fn q(path: &str) -> String {
    backchain::restore::entry::encode_query(path)
}

#[test]
fn listing_download_ranges_and_head() {
    let s = server(Options::default());
    assert_eq!(s.call("GET", "/health", None).json()["status"], "ok");
    let page = request(s.addr, "GET", "/", &[], b"");
    assert_eq!((page.status, page.header("content-type")), (200, Some("text/html; charset=utf-8")));
    assert!(String::from_utf8_lossy(&page.body).contains("/api/v1"));
    let m = s.mount(None);
    let root = s.ls(&m, "/");
    assert_eq!(root["entries"][0]["name"], "disk-0");
    assert_eq!(root["entries"][0]["type"], "directory");
    let m = s.mount(Some(0));
    let dir = s.part_dir(&m, 1);
    assert!(dir.contains("alpha"), "{dir}");
    let l = s.ls(&m, &dir);
    let img = l["entries"].as_array().unwrap().iter().find(|e| e["name"] == "partition.img").expect("partition.img");
    assert_eq!(img["type"], "file");
    assert_eq!(img["size"], (P1.1 - P1.0 + 1) * SECTOR);
    assert!(img["modified_time"].as_str().unwrap().ends_with('Z'));
    let file = format!("{dir}/partition.img");
    let url = format!("/restore/{m}/download?path={}", q(&file));

    let r = s.call("GET", &url, None);
    assert_eq!(r.status, 200);
    assert_eq!(sha(&r.body), sha(part(&s.disk, P1)));
    assert_eq!(r.header("content-length").unwrap(), r.body.len().to_string());
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("content-disposition").unwrap().contains("filename*=UTF-8''partition.img"));
    assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
    let tag = r.header("etag").unwrap().to_string();

    // Ranges: a middle slice, a suffix, an open end; unsatisfiable ones.
    let src = part(&s.disk, P1);
    for (h, a, z) in [
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=-700", src.len() - 700, src.len() - 1),
        ("bytes=2097000-", 2_097_000, src.len() - 1),
    ] {
        let r = s.call_h("GET", &url, &[("Range", h)], None);
        assert_eq!(r.status, 206, "{h}");
        assert_eq!(r.body, &src[a..=z], "{h}");
        assert_eq!(r.header("content-range").unwrap(), format!("bytes {a}-{z}/{}", src.len()));
    }
    let r = s.call_h("GET", &url, &[("Range", &format!("bytes={}-", src.len()))], None);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range").unwrap(), format!("bytes */{}", src.len()));
    // A stale If-Range gets the whole file.
    let r = s.call_h("GET", &url, &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")], None);
    assert_eq!((r.status, r.body.len()), (200, src.len()));

    let r = s.call("HEAD", &url, None);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length").unwrap(), src.len().to_string());
    let r = s.call_h("GET", &url, &[("If-None-Match", &tag)], None);
    assert_eq!(r.status, 304);

    // Pages of a listing.
    let r = s.call("GET", &format!("/restore/{m}/files?path={}&offset=1&limit=1", q(&dir)), None).json();
    assert_eq!((r["total"].as_u64(), r["entries"].as_array().unwrap().len()), (Some(2), 1));
    assert_eq!(r["entries"][0]["name"], l["entries"][1]["name"]);
    assert_eq!(s.call("GET", &format!("/restore/{m}/files?limit=0"), None).status, 400);
    // A file is not a folder, a folder downloads as a zip.
    assert_eq!(s.call("GET", &format!("/restore/{m}/files?path={}", q(&file)), None).error_code(), "not_a_directory");
    let r = s.call("GET", &format!("/restore/{m}/download?path={}", q(&dir)), None);
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/zip")));
    assert_eq!(&r.body[..4], b"PK\x03\x04");
}

fn extract_and_compare(s: &Server, archive: &[u8], kind: &str) {
    let out = s.dir.path().join(format!("x-{kind}"));
    std::fs::create_dir_all(&out).unwrap();
    let file = s.dir.path().join(format!("a.{kind}"));
    std::fs::write(&file, archive).unwrap();
    if kind == "zip" {
        run(tool("unzip").arg("-tq").arg(&file));
        run(tool("unzip").arg("-q").arg(&file).arg("-d").arg(&out));
    } else {
        run(tool("tar").arg("-xzf").arg(&file).arg("-C").arg(&out));
    }
    for (n, p) in [(1, P1), (2, P2)] {
        let dirs: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|d| d.file_name().unwrap().to_string_lossy().starts_with(&format!("Partition {n}")))
            .collect();
        assert_eq!(dirs.len(), 1, "{kind}: partition {n} folder");
        let got = std::fs::read(dirs[0].join("partition.img")).unwrap();
        assert_eq!(sha(&got), sha(part(&s.disk, p)), "{kind}: partition {n}");
        let note = std::fs::read_to_string(dirs[0].join("README.txt")).unwrap();
        assert!(note.contains("partition.img"), "{note}");
    }
}

#[test]
fn folders_as_zip_and_tar_gz_match_the_source() {
    let s = server(Options::default());
    let m = s.mount(None);
    for kind in ["zip", "tar.gz"] {
        let r = s.call("GET", &format!("/restore/{m}/download-directory?path=/disk-0&format={kind}"), None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.header("content-disposition").unwrap().contains(&format!("disk-0.{kind}")));
        extract_and_compare(&s, &r.body, kind);
        // HEAD answers GET's headers: no length claimed for a streamed archive.
        let h = s.call("HEAD", &format!("/restore/{m}/download-directory?path=/disk-0&format={kind}"), None);
        assert_eq!(h.status, 200);
        assert_eq!(h.header("content-length"), r.header("content-length"), "HEAD vs GET");
    }
    let r = s.call("GET", &format!("/restore/{m}/download-directory?path=/disk-0&format=rar"), None);
    assert_eq!(r.status, 400);
}

#[test]
fn traversal_is_refused() {
    let s = server(Options::default());
    let m = s.mount(Some(0));
    let dir = s.part_dir(&m, 1);
    let outside = std::fs::canonicalize(&s.disk_path).unwrap().display().to_string();
    for (path, codes) in [
        (format!("{}/../{}/partition.img", q(&dir), q(&dir)), &[400][..]),
        (format!("{}/%2e%2e/partition.img", q(&dir)), &[400]),
        (format!("{}/%2E%2E/%2E%2E/etc/passwd", q(&dir)), &[400]),
        ("..%2f..%2fetc%2fpasswd".to_string(), &[400]),
        (q(&outside), &[404]),
        ("/etc/passwd".into(), &[404]),
        (format!("{}/partition.img%00", q(&dir)), &[400]),
        ("%00".into(), &[400]),
    ] {
        for route in ["download", "files", "download-directory"] {
            let r = s.call("GET", &format!("/restore/{m}/{route}?path={path}"), None);
            assert!(codes.contains(&r.status), "{route} {path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
            assert!(r.json()["error"]["code"].is_string());
        }
    }
    // The session id itself cannot walk anywhere either.
    for id in ["..", "%2e%2e", "..%2f..%2fetc"] {
        let r = s.call("GET", &format!("/restore/{id}/files?path=/"), None);
        assert_eq!(r.status, 404, "{id}");
    }
}

#[test]
fn token_is_required_when_set() {
    let token = "a-long-enough-test-token-0123456789";
    let mut s = server(Options { token: Some(token.into()), ..Default::default() });
    assert_eq!(s.call("GET", "/vms", None).status, 200);
    assert_eq!(s.call("GET", "/vms", None).json()["vms"][0]["name"], "vm1");
    s.token = None;
    assert_eq!(s.call("GET", "/health", None).status, 200);
    let r = s.call("GET", "/vms", None);
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    for wrong in ["Bearer nope", "Bearer a-long-enough-test-token-012345678", "Basic abc", token] {
        let r = request(s.addr, "GET", "/api/v1/backups", &[("Authorization", wrong)], b"");
        assert_eq!(r.status, 401, "{wrong}");
    }
    let r = request(s.addr, "POST", "/api/v1/restore/mount", &[], b"{}");
    assert_eq!(r.status, 401);
}

#[test]
fn sessions_expire_and_are_capped() {
    let s = server(Options { session_idle: Duration::from_millis(1500), max_sessions: 2, ..Default::default() });
    let a = s.mount(None);
    let b = s.mount(Some(0));
    let r = s.call("POST", "/restore/mount", Some(json!({"backup_id": s.backup_id})));
    assert_eq!((r.status, r.error_code().as_str()), (429, "too_many_sessions"));
    assert_eq!(s.call("GET", "/restore/mounts", None).json()["mounts"].as_array().unwrap().len(), 2);
    assert_eq!(s.call("DELETE", &format!("/restore/{b}"), None).status, 200);
    assert_eq!(s.call("DELETE", &format!("/restore/{b}"), None).status, 404);
    let c = s.mount(None);
    // Use keeps `a` alive past the idle time; `c` goes idle and expires.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3000) {
        assert_eq!(s.call("GET", &format!("/restore/{a}/files?path=/"), None).status, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = s.call("GET", &format!("/restore/{c}/files?path=/"), None);
    assert_eq!(r.status, 404);
    let ids: Vec<String> = s.call("GET", "/restore/mounts", None).json()["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mount_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![a]);
    // Unknown backups and disks.
    let r = s.call("POST", "/restore/mount", Some(json!({"backup_id": "nope"})));
    assert_eq!(r.status, 404);
    let r = s.call("POST", "/restore/mount", Some(json!({"backup_id": s.backup_id, "disk_index": 3})));
    assert_eq!(r.status, 404);
}

#[test]
fn fifty_concurrent_downloads() {
    let s = server(Options::default());
    let m = s.mount(Some(0));
    let want = [sha(part(&s.disk, P1)), sha(part(&s.disk, P2))];
    let urls = [1, 2].map(|n| format!("/api/v1/restore/{m}/download?path={}/partition.img", q(&s.part_dir(&m, n))));
    let addr = s.addr;
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let url = urls[i % 2].clone();
            std::thread::spawn(move || (i % 2, request(addr, "GET", &url, &[], b"")))
        })
        .collect();
    for t in threads {
        let (k, r) = t.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(sha(&r.body), want[k]);
    }
}

/// Polls a backup until it leaves "running".
fn wait_backup(s: &Server, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let r = s.call("GET", &format!("/backups/{id}"), None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        if v["status"] != "running" && v["status"] != "pending" {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "backup {id} still running: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Backs up `source` as VM `vm` over HTTP, waits for it, and opens a
/// session over its disk 0: (backup id, the POST /restore/mount answer).
fn backup_and_mount(s: &Server, vm: &str, source: &Path) -> (String, Value) {
    let r = s.call("POST", "/backups", Some(json!({"vm_name": vm, "disks": [{"source": source}]})));
    let id = r.json()["backup_id"].as_str().unwrap().to_string();
    assert_eq!(wait_backup(s, &id)["status"], "completed");
    let r = s.call("POST", "/restore/mount", Some(json!({"backup_id": id, "disk_index": 0})));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    (id, r.json())
}

#[test]
fn backups_over_http_and_delete_rules() {
    let s = server(Options::default());
    let (src, mut disk) = make_disk(s.dir.path(), "vm2.img", 9);
    let start = |kind: &str| {
        let r = s.call(
            "POST",
            "/backups",
            Some(json!({"vm_name": "vm2", "disks": [{"source": src}], "backup_type": kind})),
        );
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["status"], "running");
        r.json()["backup_id"].as_str().unwrap().to_string()
    };
    let full = start("full");
    let v = wait_backup(&s, &full);
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["progress"]["bytes_total"], DISK_SIZE);
    assert_eq!(v["progress"]["bytes_done"], DISK_SIZE);
    let image = s.repo.path(v["disks"][0]["image_path"].as_str().unwrap());
    run(tool("qemu-img").args(["compare", "-f", "raw", "-F", "qcow2"]).arg(&src).arg(&image));

    // An incremental of a changed disk.
    disk[(P2.0 * SECTOR) as usize..][..4096].fill(0xA5);
    std::fs::write(&src, &disk).unwrap();
    let inc = start("auto");
    let v = wait_backup(&s, &inc);
    assert_eq!((v["status"].as_str(), v["backup_type"].as_str()), (Some("completed"), Some("incremental")), "{v}");
    let inc_image = s.repo.path(v["disks"][0]["image_path"].as_str().unwrap());
    run(tool("qemu-img").args(["compare", "-f", "raw", "-F", "qcow2"]).arg(&src).arg(&inc_image));

    // Push agents record change ids.
    let r = s.call("POST", &format!("/backups/{inc}/complete"), Some(json!({"disk_index": 0, "change_id": "cbt-42"})));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(s.call("GET", &format!("/backups/{inc}"), None).json()["disks"][0]["change_id"], "cbt-42");
    assert_eq!(
        s.call("POST", &format!("/backups/{inc}/complete"), Some(json!({"disk_index": 5, "change_id": "x"}))).status,
        404
    );

    // Listings.
    assert_eq!(s.call("GET", "/backups?vm_name=vm2", None).json()["backups"].as_array().unwrap().len(), 2);
    assert_eq!(s.call("GET", "/backups", None).json()["backups"].as_array().unwrap().len(), 3);
    let c = s.call("GET", "/backups/chain/vm2", None).json();
    assert_eq!(c["chains"][0]["images"].as_array().unwrap().len(), 2);
    assert_eq!(s.call("GET", "/backups/chain/nope", None).status, 404);
    let vms = s.call("GET", "/vms", None).json();
    assert_eq!(vms["vms"].as_array().unwrap().len(), 2);

    // The full backup has a dependent: it is merged into it (the
    // incremental's image becomes the full, under its own name); then the
    // last point goes.
    let inc_bytes = qemu_raw(&inc_image, s.dir.path());
    let r = s.call("DELETE", &format!("/backups/{full}"), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["merges"].as_array().unwrap().len(), 1);
    assert!(!image.exists());
    assert_eq!(s.call("GET", &format!("/backups/{full}"), None).status, 404);
    assert!(qemu_raw(&inc_image, s.dir.path()) == inc_bytes, "the kept point keeps its bytes");
    assert_eq!(s.call("GET", &format!("/backups/{inc}"), None).json()["disks"][0]["disk_type"], "full");
    assert_eq!(s.call("DELETE", &format!("/backups/{inc}"), None).status, 200);
    assert!(!inc_image.exists());

    // Refusals: a bad body, a bad name, a missing source (found when the
    // source is resolved for the --source-dir check).
    assert_eq!(s.call("POST", "/backups", Some(json!({"vm_name": "x"}))).status, 400);
    assert_eq!(s.call("POST", "/backups", Some(json!({"vm_name": "../x", "disks": [{"source": src}]}))).status, 400);
    let r = s.call("POST", "/backups", Some(json!({"vm_name": "vm3", "disks": [{"source": "/nonexistent/disk"}]})));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("nonexistent"), "{}", r.json());
    let big = vec![b' '; api::MAX_BODY + 10];
    let r = request(s.addr, "POST", "/api/v1/backups", &[], &big);
    assert_eq!(r.status, 413);
    assert_eq!(s.call("GET", "/nope", None).status, 404);
}

/// Kills the server process when the test ends, however it ends.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        // SIGINT: the server's Ctrl-C path, which also unmounts.
        let _ = std::process::Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_demo_and_listen_rules() {
    let t = tempdir();
    let repo = t.path().join("repo");
    let short = t.path().join("short-token");
    std::fs::write(&short, "abc\n").unwrap();
    let err = run_fail(backchain().arg("--repo").arg(&repo).args(["serve", "--token-file"]).arg(&short));
    assert!(err.contains("at least 16"), "{err}");

    let mnt = t.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut child = Child(
        backchain()
            .arg("--repo")
            .arg(&repo)
            .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--mount"])
            .arg(&mnt)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.0.stderr.take().unwrap()));
    let line = lines.by_ref().map(|l| l.unwrap()).find(|l| l.contains("http://")).expect("a start-up line");
    let at = line.find("http://").unwrap_or_else(|| panic!("{line}"));
    let addr: SocketAddr = line[at + 7..].split('/').next().unwrap().parse().unwrap();
    // The token was made on first start, readable by its owner only, and
    // every request but /health needs it, on loopback too.
    let token_file = repo.join("api.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    assert_eq!(request(addr, "GET", "/api/v1/health", &[], b"").status, 200);
    for (m, p) in [("GET", "/api/v1/backups"), ("GET", "/api/v1/vms"), ("DELETE", "/api/v1/backups/x")] {
        assert_eq!(request(addr, m, p, &[], b"").status, 401, "{m} {p} without the token");
    }
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    let backups = request(addr, "GET", "/api/v1/backups?vm_name=demo", &h, b"").json();
    let list = backups["backups"].as_array().unwrap();
    let kinds: Vec<&str> = list.iter().map(|b| b["backup_type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["incremental", "full"]);
    let id = list[0]["id"].as_str().unwrap();
    let body = json!({"backup_id": id, "disk_index": 0}).to_string();
    let r = request(addr, "POST", "/api/v1/restore/mount", &h, body.as_bytes());
    assert_eq!(r.status, 201);
    let names: Vec<String> =
        r.json()["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // --mount: the repository as a folder, while the server runs.
    let vms: Vec<String> =
        std::fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(vms, ["demo"]);
    let mut backups: Vec<String> = std::fs::read_dir(mnt.join("demo"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    backups.sort();
    let mut want: Vec<String> = list.iter().map(|b| b["id"].as_str().unwrap().to_string()).collect();
    want.push("latest".into());
    want.sort();
    assert_eq!(backups, want);
    for (i, fs) in ["FAT", "NTFS", "EXT4"].iter().enumerate() {
        let n = names[i].to_uppercase();
        assert!(n.starts_with(&format!("PARTITION {}", i + 1)) && n.contains(fs), "{names:?}");
    }
}

/// A backup of an ext4 disk built by mkfs.ext4 -d from the fixture tree
/// `src/`: files downloaded and folders archived equal that tree.
#[test]
fn ext4_files_and_archives_equal_the_source_tree() {
    let src = fixtures::fixtures().join("src");
    let image = fixtures::fixture("nopart-ext4.img");
    let s = server(Options::default());
    let (_, r) = backup_and_mount(&s, "ext4vm", &image);
    let m = r["mount_id"].as_str().unwrap().to_string();
    let vol = r["entries"][0]["path"].as_str().unwrap().to_string();

    // Every regular file at the top of src/, by SHA-256.
    let l = s.ls(&m, &vol);
    let mut checked = 0;
    for e in l["entries"].as_array().unwrap().iter().filter(|e| e["type"] == "file") {
        let name = e["name"].as_str().unwrap();
        let want = std::fs::read(src.join(name)).unwrap();
        let r = s.call("GET", &format!("/restore/{m}/download?path={}", e["path_encoded"].as_str().unwrap()), None);
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(sha(&r.body), sha(&want), "{name}");
        checked += 1;
    }
    assert!(checked >= 3, "{l}");
    let links: Vec<&Value> = l["entries"].as_array().unwrap().iter().filter(|e| e["type"] == "symlink").collect();
    for e in &links {
        let want = std::fs::read_link(src.join(e["name"].as_str().unwrap())).unwrap();
        assert_eq!(e["target"].as_str().unwrap(), want.to_str().unwrap());
    }

    for kind in ["zip", "tar.gz"] {
        let r = s.call("GET", &format!("/restore/{m}/download-directory?path={}&format={kind}", q(&vol)), None);
        assert_eq!(r.status, 200);
        let file = s.dir.path().join(format!("ext4.{kind}"));
        std::fs::write(&file, &r.body).unwrap();
        let out = s.dir.path().join(format!("ext4-{kind}"));
        std::fs::create_dir_all(&out).unwrap();
        if kind == "zip" {
            run(tool("unzip").arg("-tq").arg(&file));
            run(tool("unzip").arg("-q").arg(&file).arg("-d").arg(&out));
        } else {
            run(tool("tar").arg("-xzf").arg(&file).arg("-C").arg(&out));
        }
        // Content, names and symlink targets (not followed) all equal.
        let lost = out.join("lost+found");
        if lost.exists() {
            std::fs::remove_dir_all(&lost).unwrap();
        }
        run(tool("diff").arg("-r").arg("--no-dereference").arg(&src).arg(&out));
    }
}

/// A client that stops reading holds the server at a bounded amount of work
/// and keeps its session alive past the idle time; when it disconnects, the
/// server stops reading the backup at once, and the session's idle time
/// counts from then.
#[test]
fn a_stalled_download_keeps_its_session_and_a_disconnect_stops_it() {
    let idle = Duration::from_secs(3);
    let s = server(Options { session_idle: idle, ..Default::default() });
    // 64 MiB of random bytes (no partition table): far more than the socket
    // buffers and the server's chunk channel hold.
    let raw = s.dir.path().join("big.raw");
    let mut data = vec![0u8; 64 << 20];
    Rng::new(11).fill(&mut data);
    data[..512].fill(0);
    std::fs::write(&raw, &data).unwrap();
    let (id, r) = backup_and_mount(&s, "bigvm", &raw);
    let m = r["mount_id"].as_str().unwrap().to_string();
    let file = format!("{}/partition.img", r["entries"][0]["path"].as_str().unwrap());
    // The session's running downloads; None once it is closed.
    let active = |m: &str| -> Option<u64> {
        let v = s.call("GET", "/restore/mounts", None).json();
        let found = v["mounts"].as_array().unwrap().iter().find(|x| x["mount_id"] == m);
        found.map(|x| x["active_downloads"].as_u64().unwrap())
    };
    assert_eq!(active(&m), Some(0));
    // Drops the client of a download in session `m`; the server's work on it
    // ends within moments.
    let hang_up = |c: TcpStream, m: &str| {
        drop(c);
        let t0 = Instant::now();
        while active(m) != Some(0) {
            assert!(t0.elapsed() < Duration::from_secs(10), "the download went on after the client left");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "GET /api/v1/restore/{m}/download?path={} HTTP/1.1\r\nHost: x\r\n\r\n", q(&file)).unwrap();
    let mut head = vec![0u8; 64 * 1024];
    let n = c.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n.min(200)]));
    // Stalled for longer than the idle time: the download is still being
    // produced (blocked, not run ahead to the end) and the session lives.
    std::thread::sleep(idle + Duration::from_secs(1));
    assert_eq!(active(&m), Some(1), "the stalled download ended or its session expired");
    assert_eq!(s.call("GET", &format!("/restore/{m}/files?path=/"), None).status, 200);

    // The client goes away: the server stops producing.
    hang_up(c, &m);
    // Idle from now on: the session expires.
    let t0 = Instant::now();
    while active(&m).is_some() {
        assert!(t0.elapsed() < idle * 4, "the session never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same for a folder download (zip): stalled, then dropped.
    let r = s.call("POST", "/restore/mount", Some(json!({"backup_id": id, "disk_index": 0})));
    let m2 = r.json()["mount_id"].as_str().unwrap().to_string();
    let mut c = TcpStream::connect(s.addr).unwrap();
    write!(c, "GET /api/v1/restore/{m2}/download-directory?path=/&format=zip HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let n = c.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(active(&m2), Some(1));
    hang_up(c, &m2);
}

/// A file whose name is not UTF-8 (Latin-1 "café", as an old Linux guest may
/// have written it) is listed with a lossy `name` and an exact
/// `path_encoded`, and downloads by that encoded path.
#[test]
fn names_that_are_not_utf8_stay_reachable() {
    use std::os::unix::ffi::OsStrExt;
    let s = server(Options::default());
    let src = s.dir.path().join("latin1");
    let folder = src.join(std::ffi::OsStr::from_bytes(b"d\xe9j\xe0"));
    std::fs::create_dir_all(&folder).unwrap();
    let content = b"bytes behind a Latin-1 name\n".repeat(100);
    std::fs::write(folder.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")), &content).unwrap();
    let img = s.dir.path().join("latin1.img");
    std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
    run(tool("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&img));
    let (_, r) = backup_and_mount(&s, "latin1", &img);
    let m = r["mount_id"].as_str().unwrap().to_string();
    let vol = r["entries"][0]["path_encoded"].as_str().unwrap().to_string();

    let get = |target: &str| s.call("GET", &format!("/restore/{m}/{target}"), None);
    let l = get(&format!("files?path={vol}")).json();
    let dir = l["entries"].as_array().unwrap().iter().find(|e| e["type"] == "directory" && e["name"] != "lost+found");
    let dir = dir.unwrap_or_else(|| panic!("{l}"));
    assert_eq!(dir["name"], "d\u{FFFD}j\u{FFFD}");
    assert_eq!(dir["path_encoded"], format!("{vol}/d%E9j%E0"));
    let l = get(&format!("files?path={}", dir["path_encoded"].as_str().unwrap())).json();
    let file = &l["entries"][0];
    assert_eq!((file["name"].as_str(), file["size"].as_u64()), (Some("caf\u{FFFD}.txt"), Some(content.len() as u64)));
    let r = get(&format!("download?path={}", file["path_encoded"].as_str().unwrap()));
    assert_eq!(r.status, 200);
    assert_eq!(sha(&r.body), sha(&content));
    // The lossy name is another name: it is not found.
    assert_eq!(get(&format!("download?path={}", q(file["path"].as_str().unwrap()))).status, 404);
}

/// Disk sources named over HTTP are confined to --source-dir roots
/// (`/etc/shadow` through a backup was a local privilege escalation), and
/// download tickets open one download, once, without the token.
#[test]
fn sources_are_confined_and_download_tickets_are_single_use() {
    let root = tempdir();
    let s = server(Options {
        token: Some("a-long-enough-test-token".into()),
        source_dirs: vec![root.path().to_path_buf()],
        ..Default::default()
    });
    let inside = root.path().join("disk.img");
    std::fs::copy(&s.disk_path, &inside).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", root.path().join("shadow")).unwrap();
    let outside = [
        "/etc/shadow".to_string(),
        root.path().join("shadow").display().to_string(),
        root.path().join("../../etc/shadow").display().to_string(),
    ];
    for src in outside {
        let r = s.call("POST", "/backups", Some(json!({"vm_name": "x", "disks": [{"source": src}]})));
        assert_eq!(r.status, 403, "{src}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.error_code(), "source_not_allowed");
    }
    let r =
        s.call("POST", "/backups", Some(json!({"vm_name": "x", "disks": [{"source": inside.display().to_string()}]})));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));

    let m = s.mount(Some(0));
    let p1 = s.part_dir(&m, 1);
    let file = format!("{p1}/partition.img");
    let r = s.call("POST", &format!("/restore/{m}/tickets"), Some(json!({"path": file})));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let url = r.json()["url"].as_str().unwrap().to_string();
    let got = request(s.addr, "GET", &url, &[], b"");
    assert_eq!(got.status, 200);
    assert_eq!(sha(&got.body), sha(part(&s.disk, P1)));
    assert_eq!(request(s.addr, "GET", &url, &[], b"").status, 403, "a ticket is single-use");
    // A ticket opens only its own path.
    let r = s.call("POST", &format!("/restore/{m}/tickets"), Some(json!({"path": file})));
    let url = r.json()["url"].as_str().unwrap().to_string();
    let other = url.replace("partition.img", "README.txt");
    assert_eq!(request(s.addr, "GET", &other, &[], b"").status, 403);
    // Without a ticket or the token: 401.
    let plain = url.split("&ticket=").next().unwrap();
    assert_eq!(request(s.addr, "GET", plain, &[], b"").status, 401);
}

/// Slowloris: clients that never finish their headers are cut off after
/// the header timeout and never hold more than the connection cap, so
/// /health still answers (issue 12 item 3).
#[test]
fn clients_that_never_finish_their_headers_do_not_starve_the_server() {
    let s = server(Options { header_timeout: Duration::from_secs(1), max_connections: 16, ..Default::default() });
    let mut stalled = Vec::new();
    for _ in 0..64 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
        stalled.push(c);
    }
    let start = Instant::now();
    let r = request(s.addr, "GET", "/api/v1/health", &[], b"");
    assert_eq!(r.status, 200);
    assert!(start.elapsed() < Duration::from_secs(30), "/health took {:?}", start.elapsed());
    // The stalled clients were disconnected, none answered.
    for mut c in stalled.into_iter().take(16) {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"), "{:?}", &buf[..n]);
    }
}

/// The listing JSON shows special types with their device numbers, the
/// names of each entry's xattrs and whether it has an ACL (issue 18).
#[test]
fn listings_show_special_types_xattr_names_and_acls() {
    let s = server(Options::default());
    let src = s.dir.path().join("meta-src");
    run(tool("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/metadata/make_tree.sh")).arg(&src));
    let img = s.dir.path().join("meta.img");
    std::fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
    run(tool("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-I", "256", "-d"]).arg(&src).arg(&img));
    let (_, m) = backup_and_mount(&s, "meta", &img);
    let m = m["mount_id"].as_str().unwrap().to_string();
    let root = s.ls(&m, "/");
    let vol = root["entries"][0]["path"].as_str().unwrap().to_string();
    let list = s.ls(&m, &vol);
    let get = |n: &str| list["entries"].as_array().unwrap().iter().find(|e| e["name"] == n).unwrap().clone();
    let tagged = get("tagged");
    let tagged: Vec<&str> = tagged["xattrs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for name in ["user.comment", "trusted.overlay", "security.selinux"] {
        assert!(tagged.contains(&name), "{name} in {tagged:?}");
    }
    assert_eq!(get("shared")["acl"], true);
    assert!(get("plain").get("acl").is_none() && get("plain").get("xattrs").is_none());
    assert_eq!(get("null")["type"], "chardevice");
    assert_eq!(get("null")["device"], json!({"major": 1, "minor": 3}));
    assert_eq!(get("fifo")["type"], "fifo");
}

/// `POST /prune` (issue 15): a dry run decides and changes nothing; a
/// restore session on a point to drop makes `DELETE /backups/{id}` answer
/// 409 and the prune skip it (409 with the report); once the session is
/// closed the prune drops it, and the kept point keeps its bytes.
#[test]
fn prune_over_http_and_sessions_hold_their_points() {
    let s = server(Options::default());
    let mut ids = vec![s.backup_id.clone()];
    let mut disk = s.disk.clone();
    for k in 0..3u8 {
        disk[(P1.0 * SECTOR) as usize + 4096 * k as usize..][..4096].fill(k + 1);
        std::fs::write(&s.disk_path, &disk).unwrap();
        let req =
            BackupRequest { vm: "vm1".into(), disks: vec![s.disk_path.display().to_string()], ..Default::default() };
        ids.push(backup::run(&s.repo, &req, &backchain::engine::NoProgress).unwrap().backup_id);
    }
    let newest = s.repo.path(&format!("vms/vm1/disk-0/{}.qcow2", ids[3]));
    let bad = s.call("POST", "/prune", Some(json!({"vm_name": "vm1"})));
    assert_eq!((bad.status, bad.error_code().as_str()), (400, "bad_request"));
    assert_eq!(s.call("POST", "/prune", Some(json!({"vm_name": "nope", "keep_last": 1}))).status, 404);

    let r = s.call("POST", "/prune", Some(json!({"vm_name": "vm1", "keep_last": 1, "dry_run": true})));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let plan = r.json();
    assert_eq!((plan["kept"].as_u64(), plan["dropped"].as_u64()), (Some(1), Some(3)), "{plan}");
    assert_eq!(plan["backups"][0]["action"], "keep");
    assert_eq!(plan["backups"][3]["action"], "drop");
    assert_eq!(s.call("GET", "/backups?vm_name=vm1", None).json()["backups"].as_array().unwrap().len(), 4);

    let m = s.call("POST", "/restore/mount", Some(json!({"backup_id": ids[1]})));
    assert_eq!(m.status, 201, "{}", String::from_utf8_lossy(&m.body));
    let mount = m.json()["mount_id"].as_str().unwrap().to_string();
    let r = s.call("DELETE", &format!("/backups/{}", ids[1]), None);
    assert_eq!((r.status, r.error_code().as_str()), (409, "busy"));
    assert!(String::from_utf8_lossy(&r.body).contains("in use by a reader"));
    let r = s.call("POST", "/prune", Some(json!({"vm_name": "vm1", "keep": 1})));
    assert_eq!((r.status, r.error_code().as_str()), (409, "busy"));
    let v = r.json();
    assert_eq!(v["report"]["busy"], json!([ids[1]]), "{v}");
    assert_eq!(v["report"]["dropped"].as_u64(), Some(2), "{v}");
    // The session still reads its point.
    let f = s.call("GET", &format!("/restore/{mount}/files?path=/"), None);
    assert_eq!(f.status, 200);
    assert_eq!(s.call("DELETE", &format!("/restore/{mount}"), None).status, 200);

    let r = s.call("POST", "/prune", Some(json!({"vm_name": "vm1", "keep_last": 1})));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["dropped"].as_u64(), Some(1));
    let left = s.call("GET", "/backups?vm_name=vm1", None).json();
    assert_eq!(left["backups"].as_array().unwrap().len(), 1, "{left}");
    run(tool("qemu-img").args(["compare", "-f", "raw", "-F", "qcow2"]).arg(&s.disk_path).arg(&newest));
    run(tool("qemu-img").args(["check"]).arg(&newest));
    let b = s.call("GET", &format!("/backups/{}", ids[3]), None).json();
    assert_eq!(b["disks"][0]["disk_type"], "full", "{b}");
    assert!(b["verify_state"].is_null(), "{b}");
}
