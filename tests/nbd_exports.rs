//! Restore-point exports over NBD from `backchain serve` (issue 14 items 3
//! and 4), driven over HTTP and read and written by real clients: qemu-img,
//! qemu-io, nbdinfo and nbdcopy. Oracles: `backchain export` of the same
//! restore point, `qemu-img map` of its chain, `qemu-img check` of the
//! overlay, SHA-256 of the repository's images.

mod common;

use common::{backchain, qemu_img, qemu_io, run, run_fail, tempdir, tool};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIZE: u64 = 6 << 20;
const TOKEN: &str = "export-test-token-0123456789";

/// `backchain serve` on port 0 (HTTP) and `nbd_listen`, stopped on drop.
struct Hub {
    child: Child,
    http: String,
    nbd: String,
    log: Arc<Mutex<String>>,
}

impl Hub {
    fn start(repo: &Path, token_file: &Path, extra: &[&str]) -> Hub {
        let mut child = backchain()
            .arg("--repo")
            .arg(repo)
            .args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
            .arg(token_file)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{l}\n"));
                let _ = tx.send(l);
            }
        });
        let (mut http, mut nbd) = (None, None);
        while http.is_none() || nbd.is_none() {
            let Ok(l) = rx.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                panic!("serve did not start:\n{}", log.lock().unwrap());
            };
            if let Some(at) = l.find("http://") {
                http = Some(l[at + 7..].split('/').next().unwrap().to_string());
            }
            if l.contains(": NBD") {
                nbd = l.rsplit(" on ").next().map(|a| a.trim().to_string());
            }
        }
        Hub { child, http: http.unwrap(), nbd: nbd.unwrap(), log }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut s = TcpStream::connect(&self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} /api/v1{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// Stops the server the way Ctrl-C does and waits for it.
    fn stop(mut self) -> String {
        run(tool("kill").args(["-INT", &self.child.id().to_string()]));
        let st = self.child.wait().unwrap();
        assert!(st.success(), "serve: {st}\n{}", self.log.lock().unwrap());
        self.log.lock().unwrap().clone()
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository with VM `vm`: a full and an incremental backup of a
/// QCOW2 source with data, zero clusters and holes. Returns the repo, the
/// token file, the two backup ids and the incremental's raw bytes.
fn repo_with_chain(dir: &Path) -> (PathBuf, PathBuf, [String; 2], Vec<u8>) {
    let repo = dir.join("repo");
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let src = dir.join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", src.to_str().unwrap(), &SIZE.to_string()]);
    let mut ids = Vec::new();
    let rounds: [&[&str]; 2] = [
        &["write -P 0x11 0 1M", "write -P 0x22 3M 512k", "write -P 0x44 5M 64k"],
        &["write -P 0x33 512k 100k", "write -z 3M 128k", "write -P 0x55 4M 4k"],
    ];
    for cmds in rounds {
        qemu_io(&src, "qcow2", &cmds.iter().map(|c| c.to_string()).collect::<Vec<_>>());
        let out =
            run(backchain().arg("--repo").arg(&repo).args(["backup", "--vm", "vm", "--json", "--disk"]).arg(&src));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(v["backup_id"].as_str().unwrap_or_else(|| panic!("{v}")).to_string());
    }
    let raw = export_raw(&repo, &ids[1], dir);
    (repo, token, [ids[0].clone(), ids[1].clone()], raw)
}

/// `backchain export ID:0 --format raw`: the oracle of every read.
fn export_raw(repo: &Path, id: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("{id}.raw"));
    let _ = std::fs::remove_file(&out);
    run(backchain().arg("--repo").arg(repo).args(["export", &format!("{id}:0"), "--format", "raw", "-o"]).arg(&out));
    std::fs::read(&out).unwrap()
}

fn read_uri(uri: &str, dir: &Path, name: &str) -> Vec<u8> {
    let out = dir.join(name);
    let _ = std::fs::remove_file(&out);
    run(tool("qemu-img").args(["convert", "-f", "raw", "-O", "raw", uri]).arg(&out));
    std::fs::read(&out).unwrap()
}

/// SHA-256 of every file under `dir`, by path.
fn tree_sha(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(tree_sha(&p));
        } else {
            out.push((p.clone(), format!("{:x}", Sha256::digest(std::fs::read(&p).unwrap()))));
        }
    }
    out.sort();
    out
}

/// Data (not hole, not zero) per 64 KiB block, as `nbdinfo --map` says.
fn nbdinfo_data(uri: &str) -> Vec<bool> {
    let out = run(tool("nbdinfo").args(["--map", "--json", uri]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut blocks = vec![false; (SIZE >> 16) as usize];
    let mut end = 0;
    for e in v.as_array().unwrap() {
        let (off, len, ty) =
            (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap(), e["type"].as_u64().unwrap());
        assert_eq!(off, end, "extents are contiguous");
        end = off + len;
        for b in (off >> 16)..((off + len).div_ceil(1 << 16)) {
            blocks[b as usize] |= ty == 0;
        }
    }
    assert_eq!(end, SIZE);
    blocks
}

/// Data per 64 KiB block, as `qemu-img map` of the chain's top says.
fn qemu_data(image: &Path) -> Vec<bool> {
    let mut blocks = vec![false; (SIZE >> 16) as usize];
    for e in common::qemu_map(image) {
        let (off, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        for b in (off >> 16)..((off + len).div_ceil(1 << 16)) {
            blocks[b as usize] |= e["data"].as_bool().unwrap();
        }
    }
    blocks
}

fn image_of(repo: &Path, id: &str) -> PathBuf {
    repo.join("vms/vm/disk-0").join(format!("{id}.qcow2"))
}

#[test]
fn read_only_export_equals_backchain_export() {
    let dir = tempdir();
    let (repo, token, ids, want) = repo_with_chain(dir.path());
    let hub = Hub::start(&repo, &token, &["--nbd-listen", "127.0.0.1:0"]);
    let (st, e) = hub.call("POST", "/exports", Some(json!({"backup_id": ids[1], "disk_index": 0})));
    assert_eq!(st, 201, "{e}");
    let uri = e["nbd_uri"].as_str().unwrap().to_string();
    let name = uri.rsplit('/').next().unwrap().to_string();
    assert_eq!(name.len(), 32, "128 random bits: {uri}");
    assert!(uri.starts_with(&format!("nbd://{}/", hub.nbd)), "{uri}");

    assert!(read_uri(&uri, dir.path(), "ro.raw") == want, "qemu-img convert equals backchain export");
    assert_eq!(nbdinfo_data(&uri), qemu_data(&image_of(&repo, &ids[1])), "holes as the chain has them");

    // Eight readers at once, each its own connection.
    let readers: Vec<(Child, PathBuf)> = (0..8)
        .map(|i| {
            let out = dir.path().join(format!("copy{i}.raw"));
            (tool("nbdcopy").arg(&uri).arg(&out).spawn().unwrap(), out)
        })
        .collect();
    for (mut c, out) in readers {
        assert!(c.wait().unwrap().success());
        assert!(std::fs::read(&out).unwrap() == want, "{}", out.display());
    }

    // Names are never listed over NBD: OPT_LIST is refused.
    let list = tool("nbdinfo").args(["--list", &format!("nbd://{}", hub.nbd)]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    let (st, l) = hub.call("GET", "/exports", None);
    assert_eq!((st, l["exports"][0]["export_id"].clone()), (200, e["export_id"].clone()));
    assert_eq!(l["exports"].as_array().unwrap().len(), 1);

    // An exported point is neither deleted nor pruned.
    let (st, err) = hub.call("DELETE", &format!("/backups/{}", ids[1]), None);
    assert_eq!(st, 409, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("exported"), "{err}");
    let msg = run_fail(backchain().arg("--repo").arg(&repo).args(["delete", &ids[1]]));
    assert!(msg.contains("exported"), "{msg}");
    // Pruning the full under it is fine (merges keep every byte it shows),
    // unless the full is exported too: then it is kept, as busy.
    let (st, full) = hub.call("POST", "/exports", Some(json!({"backup_id": ids[0], "disk_index": 0})));
    assert_eq!(st, 201, "{full}");
    let pruned =
        backchain().arg("--repo").arg(&repo).args(["prune", "--vm", "vm", "--keep-last", "1", "--json"]).output();
    let out = String::from_utf8_lossy(&pruned.unwrap().stdout).into_owned();
    assert!(out.contains(&ids[0]) && out.contains("busy"), "{out}");
    assert!(export_raw(&repo, &ids[0], dir.path()).len() as u64 == SIZE, "the exported full is kept");
    let (st, _) = hub.call("DELETE", &format!("/exports/{}", full["export_id"].as_str().unwrap()), None);
    assert_eq!(st, 200);
    run(backchain().arg("--repo").arg(&repo).args(["prune", "--vm", "vm", "--keep-last", "1"]));
    assert!(read_uri(&uri, dir.path(), "ro2.raw") == want, "the export reads the same after the merge");

    let (st, _) = hub.call("DELETE", &format!("/exports/{}", e["export_id"].as_str().unwrap()), None);
    assert_eq!(st, 200);
    let gone = tool("qemu-img").args(["info", &uri]).output().unwrap();
    assert!(!gone.status.success(), "a deleted export is gone");
    assert_eq!(hub.call("GET", "/exports", None).1["exports"], json!([]));
    let log = hub.stop();
    assert!(!log.contains(&name), "export names are never logged:\n{log}");
    run(backchain().arg("--repo").arg(&repo).args(["delete", &ids[1]]));
}

#[test]
fn writable_export_keeps_its_writes_across_restarts() {
    let dir = tempdir();
    let (repo, token, ids, base) = repo_with_chain(dir.path());
    let before = tree_sha(&repo.join("vms"));
    let nbd = ["--nbd-listen", "127.0.0.1:0"];
    let hub = Hub::start(&repo, &token, &nbd);
    let (st, e) = hub.call("POST", "/exports", Some(json!({"backup_id": ids[1], "disk_index": 0, "writable": true})));
    assert_eq!(st, 201, "{e}");
    let (id, uri) = (e["export_id"].as_str().unwrap().to_string(), e["nbd_uri"].as_str().unwrap().to_string());
    let name = uri.rsplit('/').next().unwrap().to_string();
    let cmds = ["write -P 0x5a 100000 8000", "write -z 1M 64k", "write -P 0x66 3100k 3k", "write -z 5M 1000"];
    qemu_io(Path::new(&uri), "raw", &cmds.map(String::from));
    let mut want = base.clone();
    want[100_000..108_000].fill(0x5a);
    want[1 << 20..(1 << 20) + (64 << 10)].fill(0);
    want[3100 << 10..(3103 << 10)].fill(0x66);
    want[5 << 20..(5 << 20) + 1000].fill(0);
    assert!(read_uri(&uri, dir.path(), "w1.raw") == want, "writes are visible");
    hub.stop();

    // Closed cleanly: a QCOW2 over the restore point that qemu-img accepts.
    let overlay = repo.join("exports").join(format!("{id}.qcow2"));
    run(tool("qemu-img").arg("check").arg(&overlay));
    std::fs::write(dir.path().join("want.raw"), &want).unwrap();
    run(tool("qemu-img").args(["compare", "-f", "qcow2", "-F", "raw"]).arg(&overlay).arg(dir.path().join("want.raw")));

    // Back after a restart, same name; then a write, a kill -9, and back.
    let hub = Hub::start(&repo, &token, &nbd);
    let (_, l) = hub.call("GET", "/exports", None);
    let uri = l["exports"][0]["nbd_uri"].as_str().unwrap().to_string();
    assert_eq!((l["exports"][0]["export_id"].as_str(), uri.rsplit('/').next()), (Some(id.as_str()), Some(&*name)));
    assert!(read_uri(&uri, dir.path(), "w2.raw") == want, "the overlay survives a restart");
    qemu_io(Path::new(&uri), "raw", &["write -P 0x77 2M 70k".to_string()]);
    want[2 << 20..(2 << 20) + (70 << 10)].fill(0x77);
    hub.kill9();
    let hub = Hub::start(&repo, &token, &nbd);
    let uri = hub.call("GET", "/exports", None).1["exports"][0]["nbd_uri"].as_str().unwrap().to_string();
    assert!(read_uri(&uri, dir.path(), "w3.raw") == want, "flushed writes survive a crash");

    let (st, _) = hub.call("DELETE", &format!("/exports/{id}"), None);
    assert_eq!(st, 200);
    assert!(!overlay.exists(), "the overlay goes with its export");
    hub.stop();
    run(backchain().arg("--repo").arg(&repo).args(["verify", &ids[1]]));
    assert_eq!(tree_sha(&repo.join("vms")), before, "the backup never changed");
    assert!(export_raw(&repo, &ids[1], dir.path()) == base);
}

/// A self-signed certificate for 127.0.0.1, in QEMU's x509 folder layout
/// (the client trusts `ca-cert.pem`).
fn self_signed(dir: &Path) -> PathBuf {
    let certs = dir.join("pki");
    std::fs::create_dir_all(&certs).unwrap();
    run(tool("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(certs.join("server-key.pem"))
        .arg("-out")
        .arg(certs.join("server-cert.pem")));
    std::fs::copy(certs.join("server-cert.pem"), certs.join("ca-cert.pem")).unwrap();
    certs
}

#[test]
fn off_loopback_nbd_requires_tls() {
    let dir = tempdir();
    let (repo, token, ids, _) = repo_with_chain(dir.path());
    let e = run_fail(backchain().arg("--repo").arg(&repo).args(["serve", "--nbd-listen", "0.0.0.0:0"]));
    assert!(e.contains("requires TLS") && e.lines().count() == 1, "{e}");

    let pki = self_signed(dir.path());
    let (cert, key) = (pki.join("server-cert.pem"), pki.join("server-key.pem"));
    let args = ["--nbd-listen", "0.0.0.0:0", "--nbd-tls-cert", cert.to_str().unwrap(), "--nbd-tls-key"];
    let hub = Hub::start(&repo, &token, &[&args[..], &[key.to_str().unwrap()]].concat());
    let (st, e) = hub.call("POST", "/exports", Some(json!({"backup_id": ids[0], "disk_index": 0})));
    assert_eq!(st, 201, "{e}");
    let uri = e["nbd_uri"].as_str().unwrap();
    assert!(uri.starts_with("nbds://"), "{uri}");
    let name = uri.rsplit('/').next().unwrap();
    let port = hub.nbd.rsplit(':').next().unwrap();

    let tls = format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", pki.display());
    let opts =
        format!("driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},export={name},tls-creds=tls0");
    let out = run(tool("qemu-img").args(["info", "--output=json", "--object", &tls, "--image-opts", &opts]));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["virtual-size"].as_u64(), Some(SIZE));

    let plain = tool("qemu-img").args(["info", &format!("nbd://127.0.0.1:{port}/{name}")]).output().unwrap();
    assert!(!plain.status.success(), "plaintext is refused");
    let why = String::from_utf8_lossy(&plain.stderr);
    assert!(why.to_lowercase().contains("tls"), "{why}");
    hub.stop();
}

#[test]
fn cli_writable_export_leaves_the_image_alone() {
    let dir = tempdir();
    let img = dir.path().join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "2M"]);
    qemu_io(&img, "qcow2", &["write -P 0x61 0 1M".to_string()]);
    let before = std::fs::read(&img).unwrap();
    let mut child = backchain()
        .args(["nbd-export", img.to_str().unwrap(), "--listen", "127.0.0.1:0", "--writable"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let uri = line.trim().strip_prefix("disk-0 ").unwrap_or_else(|| panic!("{line}")).to_string();
    qemu_io(Path::new(&uri), "raw", &["write -P 0x62 4000 100".to_string()]);
    let got = read_uri(&uri, dir.path(), "cli.raw");
    assert!(got[4000..4100].iter().all(|&b| b == 0x62) && got[..4000].iter().all(|&b| b == 0x61));
    run(tool("kill").args(["-INT", &child.id().to_string()]));
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(20), "nbd-export did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::fs::read(&img).unwrap() == before, "the image is never written");
}
