//! `dist/backchain.service` passes `systemd-analyze verify` (the oracle for
//! unit files), with its hardening in place and `ExecStart` pointing at the
//! binary under test.

mod common;

use common::{backchain, tool};

#[test]
fn the_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/backchain.service")).unwrap();
    for want in
        ["NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/backchain", "KillSignal=SIGTERM"]
    {
        assert!(unit.lines().any(|l| l == want), "{want} missing");
    }
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    assert!(exec.starts_with("/usr/local/bin/backchain serve --config "), "{exec}");
    let d = tempfile::tempdir().unwrap();
    let local = unit.replace("/usr/local/bin/backchain", env!("CARGO_BIN_EXE_backchain"));
    let path = d.path().join("backchain.service");
    std::fs::write(&path, local).unwrap();
    let out = tool("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Lines about other units on this host are not ours.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("backchain")).collect();
    assert!(out.status.success() && ours.is_empty(), "{err}");
    // The sample config file is one `serve --config` accepts: an unknown
    // key in it is refused, by name.
    let cfg = d.path().join("serve.toml");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/serve.toml"), &cfg).unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("max_jobz = 3\n");
    std::fs::write(&cfg, text).unwrap();
    let out =
        backchain().arg("--repo").arg(d.path().join("repo")).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("max_jobz"), "{err}");
}
