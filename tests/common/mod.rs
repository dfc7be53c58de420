//! Helpers shared by the integration tests: the oracle tools, temporary
//! folders, deterministic random data and the backchain binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The backchain binary built for this test run.
pub fn backchain() -> Command {
    Command::new(env!("CARGO_BIN_EXE_backchain"))
}

/// Runs an oracle tool. A missing tool fails the test with a clear message:
/// `scripts/test.sh` installs every tool the tests use, so nothing ever skips.
pub fn tool(name: &str) -> Command {
    let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists());
    match found {
        Some(p) => Command::new(p),
        None => panic!("test tool {name} is missing: run scripts/test.sh, which installs it"),
    }
}

/// Runs a command and returns its output, failing the test on a non-zero exit.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Runs a command expected to fail; returns its stderr.
pub fn run_fail(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(!out.status.success(), "{cmd:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("backchain-test-").tempdir().expect("tempdir")
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

pub fn qemu_img(args: &[&str]) -> Output {
    run(tool("qemu-img").args(args))
}

/// Runs qemu-io commands against an image (`-f` format given explicitly).
pub fn qemu_io(image: &Path, fmt: &str, cmds: &[String]) {
    let mut c = tool("qemu-io");
    c.arg("-f").arg(fmt);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(image);
    run(&mut c);
}

/// The raw bytes of an image according to qemu-img.
pub fn qemu_raw(image: &Path, dir: &Path) -> Vec<u8> {
    let out: PathBuf = dir.join(format!("{}.oracle.raw", image.file_name().unwrap().to_string_lossy()));
    run(tool("qemu-img").args(["convert", "-O", "raw"]).arg(image).arg(&out));
    let data = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    data
}

/// `qemu-img map --output=json` of an image (its whole chain).
pub fn qemu_map(image: &Path) -> Vec<serde_json::Value> {
    let out = run(tool("qemu-img").args(["map", "--output=json"]).arg(image));
    serde_json::from_slice(&out.stdout).expect("qemu-img map JSON")
}

/// `qemu-img info --output=json` of one image.
pub fn qemu_info(image: &Path) -> serde_json::Value {
    let out = run(tool("qemu-img").args(["info", "--output=json"]).arg(image));
    serde_json::from_slice(&out.stdout).expect("qemu-img info JSON")
}

/// A file of `len` random bytes, for `qemu-io write -s` and raw sources.
pub fn random_file(path: &Path, rng: &mut Rng, len: usize) -> PathBuf {
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    std::fs::write(path, &data).unwrap();
    path.to_path_buf()
}

/// Random bytes that compress to a random fraction of their size: runs of
/// random bytes separated by runs of one repeated byte.
pub fn compressible(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut pos = 0;
    while pos < len {
        let n = (rng.below(2048) as usize + 1).min(len - pos);
        if rng.below(2) == 0 {
            rng.fill(&mut v[pos..pos + n]);
        } else {
            v[pos..pos + n].fill(rng.below(256) as u8);
        }
        pos += n;
    }
    v
}

/// Writes a file, creating its folders.
pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// `len` random bytes.
pub fn random(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// SHA-256 of a file read whole through a filesystem, checking its size.
pub fn sha_fs(fs: &dyn backchain::volume::fs::Filesystem, node: u64, size: u64) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 128 << 10];
    let mut off = 0u64;
    loop {
        let n = fs.read(node, off, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    assert_eq!(off, size);
    h.finalize().into()
}

/// Special modes and owners in a source tree: a setuid `script.sh`, a
/// `private/` folder (0700, 1234:5678) holding `secret` (0600, owners past
/// 16 bits: 70000:80000).
pub fn special_modes_and_owners(root: &Path) {
    use std::os::unix::fs::{PermissionsExt, chown};
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let exe = root.join("script.sh");
    write(&exe, b"#!/bin/sh\necho hi\n");
    mode(&exe, 0o4755);
    let private = root.join("private");
    write(&private.join("secret"), b"secret\n");
    mode(&private, 0o700);
    mode(&private.join("secret"), 0o600);
    chown(&private, Some(1234), Some(5678)).unwrap();
    chown(private.join("secret"), Some(70000), Some(80000)).unwrap();
}

/// A small corrupt-image smoke test: `rounds` copies of `base`, each with 1
/// to 16 random bytes below `meta_end` changed (every tenth also cut short),
/// handed to a filesystem's fuzz entry point, which must not panic or hang.
pub fn mutate_and_walk(base: &[u8], meta_end: u64, rounds: usize, seed: u64, walk: fn(&[u8])) {
    let mut rng = Rng::new(seed);
    for round in 0..rounds {
        let mut data = base.to_vec();
        for _ in 0..1 + rng.below(16) {
            let at = rng.below(meta_end) as usize;
            data[at] = rng.next() as u8;
        }
        if round % 10 == 0 {
            data.truncate(rng.below(base.len() as u64) as usize);
        }
        walk(&data);
    }
}

/// The `.qcow2` files of a folder, sorted.
pub fn qcow2_images(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "qcow2"))
        .collect();
    v.sort();
    v
}

/// mkfs.xfs refuses volumes under 300 MB unless it runs under the XFS
/// test suite, which these variables announce; small images keep tests fast.
pub fn mkfs_xfs(img: &Path, size: &str, args: &[&str]) {
    run(tool("truncate").args(["-s", size]).arg(img));
    let mut c = tool("mkfs.xfs");
    c.env("TEST_DIR", "/tmp").env("TEST_DEV", "backchain").env("QA_CHECK_FS", "1");
    run(c.args(["-q", "-f"]).args(args).arg(img));
}

/// A kernel loop mount (the oracle's view of an image), unmounted when
/// dropped.
pub struct LoopMount(pub PathBuf);

impl LoopMount {
    pub fn new(img: &Path, at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        run(tool("mount").args(["-o", "loop"]).arg(img).arg(at));
        LoopMount(at.to_path_buf())
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A `backchain mount` of ours, unmounted when dropped.
pub struct FuseMount(pub PathBuf);

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = backchain().arg("umount").arg(&self.0).output();
    }
}
