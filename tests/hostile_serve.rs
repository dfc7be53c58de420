//! The real `backchain serve`, attacked the way issue 12 found it open:
//! run as root, called by `nobody` through `setpriv` (item 1), and held to
//! a limit of 1,024 open files with 64 sessions on a 59-image chain of two
//! disks (item 11). curl is the client.

mod common;
use common::*;
use serde_json::Value;
use std::fs;
use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The server, stopped (SIGINT, then SIGKILL) when the test ends.
struct Serve {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Serve {
    /// `cmd` (a `backchain … serve`, maybe under a wrapper) started, and its
    /// address read from its first lines.
    fn start(mut cmd: Command) -> Serve {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(err).lines();
        let line = lines.by_ref().map(|l| l.unwrap()).find(|l| l.contains("http://")).expect("a start-up line");
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let at = line.find("http://").unwrap();
        let addr = line[at + 7..].split('/').next().unwrap().parse().unwrap();
        Serve { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.addr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl (as `nobody` when `as_nobody`): (HTTP status, body).
fn curl(as_nobody: bool, method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut c = if as_nobody {
        let mut c = tool("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(tool("curl").get_program());
        c
    } else {
        tool("curl")
    };
    c.args(["-s", "-S", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(t) = token {
        c.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.trim().parse().unwrap_or_else(|_| panic!("curl: {text} {}", String::from_utf8_lossy(&out.stderr))),
        body.into(),
    )
}

/// Item 1: root serves, `nobody` attacks. Without the token every call but
/// /health is refused; the token file is unreadable to nobody; and even
/// with the token, /etc/shadow is not a disk source HTTP may name.
#[test]
fn nobody_cannot_use_a_root_server() {
    let t = tempdir();
    // Everything on the way is open to others: only the token's own mode
    // keeps nobody out.
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let repo = t.path().join("repo");
    let mut cmd = backchain();
    cmd.arg("--repo").arg(&repo).args(["serve", "--listen", "127.0.0.1:0"]);
    let s = Serve::start(cmd);
    fs::set_permissions(&repo, fs::Permissions::from_mode(0o755)).unwrap();

    assert_eq!(curl(true, "GET", &s.url("/health"), None, None).0, 200);
    let shadow = r#"{"vm_name":"s","disks":[{"source":"/etc/shadow"}]}"#;
    for token in [None, Some("0123456789abcdef0123456789abcdef")] {
        let (code, body) = curl(true, "POST", &s.url("/backups"), token, Some(shadow));
        assert_eq!(code, 401, "{token:?}: {body}");
        for (m, p) in [("GET", "/backups"), ("DELETE", "/backups/x"), ("POST", "/restore/mount")] {
            assert_eq!(curl(true, m, &s.url(p), token, Some("{}")).0, 401, "{m} {p} {token:?}");
        }
    }
    let token_file = repo.join("api.token");
    let read =
        tool("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"]).arg(&token_file).output();
    assert!(!read.unwrap().status.success(), "nobody read {}", token_file.display());

    // Even a leaked token does not make /etc/shadow a disk source.
    let token = fs::read_to_string(&token_file).unwrap().trim().to_string();
    let (code, body) = curl(true, "POST", &s.url("/backups"), Some(&token), Some(shadow));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--source-dir"), "{body}");
    let (code, body) = curl(false, "GET", &s.url("/backups"), Some(&token), None);
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["backups"].as_array().unwrap().is_empty(), "{v}");
}

/// Item 11: with a hard limit of 1,024 open files, 64 sessions on a
/// 59-image chain of two disks all open, because each image file is open
/// once however many sessions read it.
#[test]
fn sixty_four_sessions_on_a_long_chain_share_their_files() {
    let t = tempdir();
    let repo = t.path().join("repo");
    let mut rng = Rng::new(31);
    let disks = [t.path().join("a.raw"), t.path().join("b.raw")];
    for d in &disks {
        fs::write(d, random(&mut rng, 256 << 10)).unwrap();
    }
    let mut last = String::new();
    for round in 0..59 {
        for d in &disks {
            let f = fs::OpenOptions::new().write(true).open(d).unwrap();
            f.write_all_at(&random(&mut rng, 4096), (round % 64) * 4096).unwrap();
        }
        let mut c = backchain();
        c.arg("--repo").arg(&repo).args(["backup", "--vm", "long", "--json"]);
        for d in &disks {
            c.arg("--disk").arg(d);
        }
        let r: Value = serde_json::from_slice(&run(&mut c).stdout).unwrap();
        last = r["backup_id"].as_str().unwrap().to_string();
    }
    let chain: Value =
        serde_json::from_slice(&run(backchain().arg("--repo").arg(&repo).args(["chain", "long", "--json"])).stdout)
            .unwrap();
    assert!(chain.as_array().unwrap().iter().all(|c| c["image_count"] == 59), "{chain}");

    let mut cmd = tool("prlimit");
    cmd.arg("--nofile=1024:1024").arg(env!("CARGO_BIN_EXE_backchain"));
    cmd.arg("--repo").arg(&repo).args(["serve", "--listen", "127.0.0.1:0", "--max-sessions", "64"]);
    let s = Serve::start(cmd);
    let token = fs::read_to_string(repo.join("api.token")).unwrap().trim().to_string();
    let body = format!(r#"{{"backup_id":"{last}"}}"#);
    for n in 0..64 {
        let (code, answer) = curl(false, "POST", &s.url("/restore/mount"), Some(&token), Some(&body));
        assert_eq!(code, 201, "session {n}: {answer}");
    }
    // 118 image files, each open once (plus the server's own handles).
    let fds = fs::read_dir(format!("/proc/{}/fd", s.child.id())).unwrap().count();
    assert!(fds < 400, "{fds} files open for 64 sessions");
    let (code, m) = curl(false, "GET", &s.url("/restore/mounts"), Some(&token), None);
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(v["mounts"].as_array().unwrap().len(), 64);
}
