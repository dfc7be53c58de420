//! `backchain serve` as a process: a policy on `*:*:0/2` with keep_last 2
//! backs up two VMs on schedule and /metrics shows it; bad policies are
//! refused with clear errors; `kill -9` in the middle of a job leaves an
//! `interrupted` job and no partial file, and the next run succeeds;
//! SIGTERM ends the daemon. Real clock: the schedule fires every 2 s.

mod common;

use common::{backchain, run};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    addr: SocketAddr,
    token: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(repo: &Path, args: &[&str]) -> Daemon {
    let mut child = backchain()
        .arg("--repo")
        .arg(repo)
        .args(["serve", "--listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.by_ref().map(|l| l.unwrap()).find(|l| l.contains("http://")).expect("a start-up line");
    let at = line.find("http://").unwrap();
    let addr: SocketAddr = line[at + 7..].split('/').next().unwrap().parse().unwrap();
    // Keep reading the log so the daemon never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let token = std::fs::read_to_string(repo.join("api.token")).unwrap().trim().to_string();
    Daemon { child, addr, token }
}

impl Daemon {
    fn call(&self, method: &str, target: &str, body: Option<Value>) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
    }

    fn json(&self, method: &str, target: &str, body: Option<Value>) -> (u16, Value) {
        let (status, text) = self.call(method, target, body);
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text}: {e}")))
    }

    fn jobs(&self, query: &str) -> Vec<Value> {
        let (s, v) = self.json("GET", &format!("/api/v1/jobs{query}"), None);
        assert_eq!(s, 200, "{v}");
        v["jobs"].as_array().unwrap().clone()
    }

    fn wait(&self, what: &str, limit: Duration, f: impl Fn(&Daemon) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(start.elapsed() < limit, "timed out waiting for {what}: {:#?}", self.jobs(""));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn disk(dir: &Path, name: &str, len: usize, seed: u8) -> PathBuf {
    let p = dir.join(name);
    let data: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 ^ seed).collect();
    std::fs::write(&p, data).unwrap();
    p
}

fn completed(jobs: &[Value], vm: &str) -> usize {
    jobs.iter().filter(|j| j["vm_name"] == vm && j["state"] == "completed").count()
}

#[test]
fn policy_runs_every_two_seconds_with_retention_and_metrics() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("disks");
    std::fs::create_dir(&src).unwrap();
    let (a, b) = (disk(&src, "a.img", 128 << 10, 1), disk(&src, "b.img", 128 << 10, 2));
    let repo = t.path().join("repo");
    let d = serve(&repo, &["--source-dir", src.to_str().unwrap()]);
    let policy = json!({"name": "fast", "schedule": "*:*:0/2", "retention": {"keep_last": 2},
        "vms": [{"vm_name": "a", "disks": [{"source": a}]}, {"vm_name": "b", "disks": [{"source": b}]}]});
    let (s, v) = d.json("POST", "/api/v1/policies", Some(policy.clone()));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["schedule_normalized"], "*-*-* *:*:00/2");

    // Bad policies, each with its own clear refusal.
    let bad = |patch: Value| {
        let mut p = policy.clone();
        for (k, v) in patch.as_object().unwrap() {
            p[k] = v.clone();
        }
        d.json("POST", "/api/v1/policies", Some(p))
    };
    let cases = [
        (json!({}), 409, "exists already"),
        (json!({"name": "other"}), 409, "VM a belongs to policy fast"),
        (json!({"name": "x", "schedule": "mon..fri 25:00"}), 400, "bad schedule"),
        (json!({"name": "x", "retention": {"keep_lats": 1}}), 400, "keep_lats"),
        (json!({"name": "x", "vms": [{"vm_name": "z", "disks": [{"source": "/etc/hostname"}]}]}), 403, "--source-dir"),
        (json!({"name": "x", "vms": [{"vm_name": "z", "disks": [{"source": "nbd://h:1/e?bad=1"}]}]}), 400, "query"),
        (json!({"name": "x", "vms": [{"vm_name": "z", "disks": []}]}), 400, "1 to 64 disks"),
    ];
    for (patch, status, want) in cases {
        let (s, v) = bad(patch.clone());
        let msg = v["error"]["message"].as_str().unwrap_or_default().to_string();
        assert_eq!(s, status, "{patch}: {v}");
        assert!(msg.contains(want), "{patch}: {msg}");
    }
    let (s, v) = d.json("GET", "/api/v1/policies/fast", None);
    assert_eq!((s, v["retention"]["keep_last"].as_u64()), (200, Some(2)), "{v}");

    // Within a bounded time: three runs per VM, and whenever no job of a VM
    // is under way (between a commit and its prune there are three), never
    // more than two points.
    let checked = std::cell::Cell::new(0);
    d.wait("three runs of each VM", Duration::from_secs(40), |d| {
        let before = d.jobs("?policy=fast");
        for vm in ["a", "b"] {
            let (s, v) = d.json("GET", &format!("/api/v1/backups?vm_name={vm}"), None);
            assert_eq!(s, 200);
            let after = d.jobs("?policy=fast");
            let idle = |jobs: &[Value]| !jobs.iter().any(|j| j["vm_name"] == vm && j["state"] == "running");
            if before.len() == after.len() && idle(&before) && idle(&after) {
                let n = v["backups"].as_array().unwrap().len();
                assert!(n <= 2, "VM {vm} has {n} points: {v}; jobs: {after:?}");
                checked.set(checked.get() + 1);
            }
        }
        completed(&before, "a") >= 3 && completed(&before, "b") >= 3
    });
    assert!(checked.get() > 0, "the point count was never checked between jobs");
    let jobs = d.jobs("?policy=fast&vm_name=a");
    assert!(jobs.iter().all(|j| j["vm_name"] == "a" && j["policy"] == "fast"));
    let ids: Vec<&str> =
        jobs.iter().filter(|j| j["state"] == "completed").map(|j| j["backup_id"].as_str().unwrap()).collect();
    let (_, v) = d.json("GET", "/api/v1/backups?vm_name=a", None);
    let kept: Vec<&str> = v["backups"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert!(kept.iter().all(|k| ids.contains(k)), "the kept points are the jobs' backups: {kept:?} {ids:?}");

    let (s, page) = d.call("GET", "/metrics", None);
    assert_eq!(s, 200);
    for want in [
        "backchain_vm_last_success_timestamp_seconds{vm=\"a\"}",
        "backchain_vm_last_job_state{vm=\"b\",state=\"completed\"} 1",
        "backchain_vm_last_job_bytes_read{vm=\"a\"} 131072",
        "backchain_jobs_queued ",
        "backchain_repository_free_bytes{repository=",
        "backchain_restore_sessions_open 0",
    ] {
        assert!(page.contains(want), "{want} missing from\n{page}");
    }
    // The CLI sees the same history (the catalog is shared).
    let out = run(backchain().arg("--repo").arg(&repo).args(["jobs", "--policy", "fast", "--vm", "b", "--json"]));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(cli["jobs"].as_array().unwrap().iter().all(|j| j["vm_name"] == "b"));

    // Removed: no more runs are queued for it.
    assert_eq!(d.json("DELETE", "/api/v1/policies/fast", None).0, 200);
    assert_eq!(d.json("GET", "/api/v1/policies/fast", None).0, 404);
}

/// Waits until `repo` holds a `.partial` file (a job is writing).
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

#[test]
fn kill_9_mid_job_leaves_an_interrupted_job_and_the_next_run_succeeds() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("disks");
    std::fs::create_dir(&src).unwrap();
    // Big enough that the backup takes a while (non-zero, incompressible).
    let big = disk(&src, "big.img", 192 << 20, 7);
    let repo = t.path().join("repo");
    let mut d = serve(&repo, &["--source-dir", src.to_str().unwrap(), "--max-jobs", "1"]);
    let policy = json!({"name": "p", "schedule": "*:*:0/2", "vms": [{"vm_name": "big", "disks": [{"source": big}]}]});
    assert_eq!(d.json("POST", "/api/v1/policies", Some(policy)).0, 201);
    let start = Instant::now();
    while partials(&repo).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(40), "no job started writing: {:#?}", d.jobs(""));
        std::thread::sleep(Duration::from_millis(10));
    }
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let running = jobs_cli(&repo, "running");
    assert_eq!(running.len(), 1, "{running:#?}");
    // Opening the repository (the CLI just did) removed the dead job's files.
    assert_eq!(partials(&repo), Vec::<PathBuf>::new());

    let d = serve(&repo, &["--source-dir", src.to_str().unwrap(), "--max-jobs", "1"]);
    let id = running[0]["id"].as_i64().unwrap();
    let jobs = d.jobs("");
    let j = jobs.iter().find(|j| j["id"] == id).unwrap();
    assert_eq!(j["state"], "interrupted", "{j}");
    assert!(j["error"].as_str().unwrap().contains("stopped before the job ended"), "{j}");
    assert!(jobs.iter().all(|j| j["state"] != "running" || j["id"].as_i64().unwrap() > id));
    // The start-up cleaned the killed job's files before anything ran.
    d.wait("the next run to succeed", Duration::from_secs(60), |d| completed(&d.jobs(""), "big") >= 1);
    let (_, v) = d.json("GET", "/api/v1/backups?vm_name=big", None);
    let statuses: Vec<&str> = v["backups"].as_array().unwrap().iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"completed") && statuses.contains(&"interrupted"), "{statuses:?}");

    // SIGTERM: the daemon stops (a job running then is aborted after the grace).
    let pid = rustix::process::Pid::from_child(&d.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let mut d = d;
    let start = Instant::now();
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(75), "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(jobs_cli(&repo, "running"), Vec::<Value>::new(), "nothing stays running after SIGTERM");
}

/// The jobs the catalog holds in `state`, read by the CLI.
fn jobs_cli(repo: &Path, state: &str) -> Vec<Value> {
    let out = run(backchain().arg("--repo").arg(repo).args(["jobs", "--state", state, "--json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["jobs"].as_array().unwrap().clone()
}
