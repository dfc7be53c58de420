//! A server killed with SIGKILL leaves a dead mount ("transport endpoint is
//! not connected"); `clean_stale_mount` (and `mount` itself) must clear it.
//!
//! Runs without the test harness: the same binary, started with
//! `CHILD_ENV` set, is the server process that gets killed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use backchain_fuse::{MountOptions, clean_stale_mount, mount};
use common::*;

/// Set to a mount point: mount the sample tree there, say so, serve forever.
const CHILD_ENV: &str = "BACKCHAIN_FUSE_TEST_SERVE_AT";
const READY: &str = "mounted";

fn main() {
    if let Some(at) = std::env::var_os(CHILD_ENV) {
        let handle = mount(Arc::new(MemTree::sample()), Path::new(&at), &MountOptions::default()).expect("child mount");
        println!("{READY}");
        loop {
            std::thread::park();
            let _ = &handle;
        }
    }
    if !fuse_available() {
        return;
    }
    let cases: [(&str, fn()); 2] = [
        ("clean_stale_mount_clears_a_killed_server", explicit_cleanup),
        ("mount_clears_a_dead_mount_itself", implicit_cleanup),
    ];
    for (name, case) in cases {
        case();
        println!("test {name} ... ok");
    }
    println!("\n{} passed, 0 failed", cases.len());
}

/// Detaches whatever a failing case leaves mounted, so no dead mount
/// outlives the test run.
struct Detach<'a>(&'a Path);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        for _ in 0..4 {
            if fuse_mounts_at(self.0).is_empty() {
                break;
            }
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Starts a server process at `mnt`, checks it serves, and kills it.
fn kill_a_server_at(mnt: &Path) {
    let mut child: Child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, mnt)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), READY, "the server process did not mount");
    assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), HELLO);
    child.kill().unwrap(); // SIGKILL: no chance to unmount
    child.wait().unwrap();
    // statfs always reaches the server (stat may be answered from the cache).
    let err = nix::sys::statvfs::statvfs(mnt).unwrap_err();
    assert_eq!(err, nix::errno::Errno::ENOTCONN, "expected a dead mount");
    assert_eq!(std::fs::read(mnt.join("empty.txt")).unwrap_err().raw_os_error(), Some(libc::ENOTCONN));
    assert_eq!(fuse_mounts_at(mnt).len(), 1, "the dead mount is listed");
}

fn explicit_cleanup() {
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    let _detach = Detach(&mnt);
    // Nothing to clean on a plain folder.
    assert!(!clean_stale_mount(&mnt).unwrap());
    kill_a_server_at(&mnt);
    assert!(clean_stale_mount(&mnt).unwrap(), "the dead mount was not cleaned");
    assert!(fuse_mounts_at(&mnt).is_empty());
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
    assert!(!clean_stale_mount(&mnt).unwrap());
    // A live mount is never touched.
    let handle = mount(Arc::new(MemTree::sample()), &mnt, &MountOptions::default()).unwrap();
    assert!(!clean_stale_mount(&mnt).unwrap());
    assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), HELLO);
    handle.unmount().unwrap();
    assert!(fuse_mounts_at(&mnt).is_empty());
}

fn implicit_cleanup() {
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    let _detach = Detach(&mnt);
    // A place where servers died twice.
    kill_a_server_at(&mnt);
    assert!(clean_stale_mount(&mnt).unwrap());
    kill_a_server_at(&mnt);
    let handle = mount(Arc::new(MemTree::sample()), &mnt, &MountOptions::default()).expect("mount over a dead mount");
    assert_eq!(fuse_mounts_at(&mnt).len(), 1, "the dead mount is still below the new one");
    assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), HELLO);
    handle.unmount().unwrap();
    assert!(fuse_mounts_at(&mnt).is_empty());
}
