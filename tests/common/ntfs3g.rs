//! ntfs-3g as the NTFS oracle: images made by mkntfs, filled and read back
//! through an ntfs-3g mount.
#![allow(dead_code)]

use super::common::{run, tool};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const LABEL: &str = "BackchainNTFS";

/// An ntfs-3g mount run in the foreground, so that unmounting waits until
/// every byte is on the image.
pub struct Mount {
    child: Option<Child>,
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(image: &Path, dir: &Path) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let child = tool("ntfs-3g")
            .args(["-o", "no_detach"])
            .arg(image)
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ntfs-3g");
        let start = Instant::now();
        loop {
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
            if mounts.lines().any(|l| l.split(' ').nth(1) == Some(dir.to_str().unwrap())) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "ntfs-3g did not mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        Mount { child: Some(child), dir: dir.to_path_buf() }
    }

    pub fn unmount(mut self) {
        run(tool("umount").arg(&self.dir));
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(status.success(), "ntfs-3g exited with {status}");
    }
}

impl Drop for Mount {
    /// A failing test still leaves no mount behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = tool("umount").arg(&self.dir).status();
            let _ = child.wait();
        }
    }
}

pub fn mkntfs(image: &Path, size_mib: u64) {
    let f = std::fs::File::create(image).unwrap();
    f.set_len(size_mib << 20).unwrap();
    run(tool("mkntfs").args(["-F", "-Q", "-q", "-L", LABEL]).arg(image));
}

pub fn setfattr(path: &Path, name: &str, value: &str) {
    run(tool("setfattr").args(["-n", name, "-v", value]).arg(path));
}

/// An extended attribute as ntfs-3g returns it, as `0x...` hex.
pub fn getfattr_hex(path: &Path, name: &str) -> String {
    let out = run(tool("getfattr").args(["-h", "-e", "hex", "-n", name]).arg(path));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().find_map(|l| l.split_once('=')).map(|(_, h)| h.trim().to_string()).unwrap()
}

pub fn ntfs_attrib(path: &Path) -> u32 {
    let hex = getfattr_hex(path, "system.ntfs_attrib_be");
    u32::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
}
