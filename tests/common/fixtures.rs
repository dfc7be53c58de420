//! The fixture disks that `fixtures/build.sh` builds with the real tools
//! (mkfs.*, ntfs-3g, sgdisk, sfdisk). Include with
//! `#[path = "common/fixtures.rs"] mod fixtures;` from a test crate root.
//!
//! They are built once per machine into `<target dir>/fixtures/<hash>/`, where
//! the hash covers the build scripts, so editing a script rebuilds. A lock
//! file (flock, taken by build.sh) keeps parallel test binaries from racing;
//! the script skips whatever already exists.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const BUILD_SH: &str = include_str!("../../fixtures/build.sh");
const GEN_TREE: &str = include_str!("../../fixtures/gen_tree.py");

/// The fixture directory, built on first use. Layout: see fixtures/README.md
/// (`src/`, `src-fat/`, `src-ntfs/`, `src-small/`, `ext4.img`, `fat32.img`,
/// `fat16.img`, `fat12.img`, `ntfs.img`, `gpt.img`, `mbr.img`, `gpt4k.img`,
/// `nopart-ext4.img`, `ntfs-streams.txt`, `ntfs-reparse.txt`; ntfs.img also
/// holds `reparse/`, which is not in `src-ntfs/`). `BACKCHAIN_FIXTURES=DIR` overrides
/// the location.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("BACKCHAIN_FIXTURES") {
            Some(d) => PathBuf::from(d),
            None => target_dir().join("fixtures").join(format!("{:016x}", fnv1a(&[BUILD_SH, GEN_TREE]))),
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "fixtures/build.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        dir
    })
}

/// A fixture file's path, e.g. `fixture("gpt.img")`.
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// The rows of a tab-separated manifest (`ntfs-reparse.txt`, `ntfs-streams.txt`),
/// without `#` comment lines.
pub fn manifest(name: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The cargo target directory: the test binary lives in `<target>/<profile>/deps/`.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// FNV-1a over the scripts: a stable version tag for the fixture set.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
