//! Tests where the FUSE server is another process: one killed with SIGKILL
//! leaves a dead mount ("transport endpoint is not connected") that
//! `clean_stale_mount` (and `mount` itself) must clear; `mount_foreground`
//! unmounts on SIGINT/SIGTERM and returns on an external unmount; a normal
//! user mounts, unmounts and cleans up through fusermount3.
//!
//! Runs without the test harness: the same binary, started with `MODE_ENV`
//! and `AT_ENV` set, is the server process.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use backchain_fuse::{MountOptions, clean_stale_mount, mount, mount_foreground, unmount};
use common::*;
use nix::sys::signal::Signal;

/// What the child process does: "serve", "foreground", "roundtrip" or "clean".
const MODE_ENV: &str = "BACKCHAIN_FUSE_TEST_MODE";
/// The mount point the child works on.
const AT_ENV: &str = "BACKCHAIN_FUSE_TEST_AT";
const READY: &str = "mounted";
/// How long a child may take to mount or to exit.
const PATIENCE: Duration = Duration::from_secs(10);
/// The unprivileged user for the fusermount3 test.
const NOBODY: u32 = 65534;

fn main() {
    if let (Some(mode), Some(at)) = (std::env::var_os(MODE_ENV), std::env::var_os(AT_ENV)) {
        child(mode.to_str().expect("mode"), Path::new(&at));
        return;
    }
    if !fuse_available() {
        return;
    }
    let mut cases: Vec<(&str, fn())> = vec![
        ("clean_stale_mount_clears_a_killed_server", explicit_cleanup),
        ("mount_clears_a_dead_mount_itself", implicit_cleanup),
        ("foreground_unmounts_on_sigterm_and_sigint", foreground_signals),
        ("foreground_returns_after_an_external_unmount", foreground_external_unmount),
    ];
    if nix::unistd::geteuid().is_root() {
        cases.push(("normal_user_mounts_through_fusermount3", normal_user));
    } else {
        eprintln!("\n*** SKIPPING the fusermount3 test: switching to another user needs root ***\n");
    }
    for (name, case) in &cases {
        case();
        println!("test {name} ... ok");
    }
    println!("\n{} passed, 0 failed", cases.len());
}

fn child(mode: &str, at: &Path) {
    let tree = Arc::new(MemTree::sample());
    match mode {
        "serve" => {
            let _handle = mount(tree, at, &MountOptions::default()).expect("child mount");
            println!("{READY}");
            loop {
                thread::park();
            }
        }
        "foreground" => {
            mount_foreground(tree, at, &MountOptions::default()).expect("foreground mount");
            println!("returned");
        }
        "roundtrip" => {
            let handle = mount(tree, at, &MountOptions::default()).expect("user mount");
            assert_eq!(std::fs::read(at.join("hello.txt")).unwrap(), HELLO);
            assert_eq!(fuse_mounts_at(at).len(), 1);
            handle.unmount().expect("user unmount");
            assert!(fuse_mounts_at(at).is_empty(), "still mounted after the user's unmount");
            let handle = mount(Arc::new(MemTree::sample()), at, &MountOptions::default()).expect("user mount");
            unmount(at).expect("user unmount by path");
            drop(handle);
            assert!(fuse_mounts_at(at).is_empty());
            // Busy: refused by path; the handle detaches and returns at once.
            let handle = mount(Arc::new(MemTree::sample()), at, &MountOptions::default()).expect("user mount");
            let open = std::fs::File::open(at.join("hello.txt")).unwrap();
            assert!(matches!(unmount(at), Err(backchain_fuse::MountError::Busy(_))));
            handle.unmount().expect("user unmount of a busy mount");
            assert!(fuse_mounts_at(at).is_empty());
            let mut buf = vec![0u8; HELLO.len()];
            std::os::unix::fs::FileExt::read_exact_at(&open, &mut buf, 0).unwrap();
            assert_eq!(buf, HELLO);
            println!("ok");
        }
        "clean" => println!("{}", clean_stale_mount(at).expect("clean_stale_mount")),
        _ => panic!("unknown mode {mode}"),
    }
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

fn spawn(exe: &Path, mode: &str, at: &Path, user: Option<u32>) -> Child {
    let mut cmd = match user {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}")).args(["--clear-groups", "--"]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.env(MODE_ENV, mode).env(AT_ENV, at).stdout(Stdio::piped()).spawn().expect("spawn the server process")
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    line.trim().to_string()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < PATIENCE, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command as `uid` (or as ourselves); returns (success, stdout, stderr).
fn run_as(user: Option<u32>, args: &[&std::ffi::OsStr]) -> (bool, Vec<u8>, String) {
    let mut cmd = match user {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}")).args(["--clear-groups", "--"]);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = cmd.output().expect("run a command");
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Starts a server process at `mnt` (as `user`), checks it serves, and kills
/// it. The checks run as the mount's user: the kernel keeps everyone else
/// (root included) out of a mount without allow_other.
fn kill_a_server_at(mnt: &Path, user: Option<u32>, exe: &Path) {
    let mut child = spawn(exe, "serve", mnt, user);
    assert_eq!(first_line(&mut child), READY, "the server process did not mount");
    let hello = mnt.join("hello.txt");
    let (ok, out, err) = run_as(user, &["cat".as_ref(), hello.as_os_str()]);
    assert!(ok && out == HELLO, "reading through the child's mount: {err}");
    child.kill().unwrap(); // SIGKILL: no chance to unmount
    child.wait().unwrap();
    // statfs always reaches the server (stat may be answered from the cache).
    let (ok, _, err) = run_as(user, &["stat".as_ref(), "-f".as_ref(), mnt.as_os_str()]);
    assert!(!ok && err.contains("Transport endpoint is not connected"), "expected a dead mount: {err}");
    let (ok, _, err) = run_as(user, &["cat".as_ref(), mnt.join("empty.txt").as_os_str()]);
    assert!(!ok && err.contains("Transport endpoint is not connected"), "expected a dead mount: {err}");
    assert_eq!(fuse_mounts_at(mnt).len(), 1, "the dead mount is listed");
}

fn this_exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

fn explicit_cleanup() {
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    let _detach = Detach(&mnt);
    // Nothing to clean on a plain folder.
    assert!(!clean_stale_mount(&mnt).unwrap());
    kill_a_server_at(&mnt, None, &this_exe());
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
    let handle = {
        kill_a_server_at(&mnt, None, &this_exe());
        mount(Arc::new(MemTree::sample()), &mnt, &MountOptions::default()).expect("mount over a dead mount")
    };
    assert_eq!(fuse_mounts_at(&mnt).len(), 1, "the dead mount is still below the new one");
    assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), HELLO);
    handle.unmount().unwrap();
    assert!(fuse_mounts_at(&mnt).is_empty());
}

fn foreground_signals() {
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    let _detach = Detach(&mnt);
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut child = spawn(&this_exe(), "foreground", &mnt, None);
        wait_until("the foreground mount is live", || backchain_fuse::is_mounted(&mnt).unwrap());
        assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), HELLO);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        wait_until("the foreground server exits", || child.try_wait().unwrap().is_some());
        assert!(child.wait().unwrap().success(), "{signal}: the server did not exit cleanly");
        assert_eq!(first_line(&mut child), "returned");
        assert!(fuse_mounts_at(&mnt).is_empty(), "{signal} left a mount behind");
    }
}

fn foreground_external_unmount() {
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    let _detach = Detach(&mnt);
    let mut child = spawn(&this_exe(), "foreground", &mnt, None);
    wait_until("the foreground mount is live", || !fuse_mounts_at(&mnt).is_empty());
    unmount(&mnt).unwrap();
    wait_until("the foreground server exits", || child.try_wait().unwrap().is_some());
    assert!(child.wait().unwrap().success());
    assert_eq!(first_line(&mut child), "returned");
    assert!(fuse_mounts_at(&mnt).is_empty());
}

/// As the user nobody (no privileges): mount and unmount through
/// fusermount3, then clean up after a killed server.
fn normal_user() {
    // Distributions make the device open to all (Debian's fuse3 udev rule:
    // mode 0666); some containers leave it 0600, which only root can use.
    let dev = std::fs::metadata(backchain_fuse::FUSE_DEVICE).unwrap();
    if dev.permissions().mode() & 0o666 != 0o666 {
        eprintln!("note: making {} mode 0666, as distributions set it", backchain_fuse::FUSE_DEVICE);
        std::fs::set_permissions(backchain_fuse::FUSE_DEVICE, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A copy of this binary that nobody may run, wherever the build lives.
    let exe = dir.path().join("server");
    std::fs::copy(this_exe(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = mountpoint(&dir);
    std::os::unix::fs::chown(&mnt, Some(NOBODY), Some(NOBODY)).unwrap();
    let _detach = Detach(&mnt);

    let mut child = spawn(&exe, "roundtrip", &mnt, Some(NOBODY));
    assert_eq!(first_line(&mut child), "ok", "the user's mount round trip failed");
    assert!(child.wait().unwrap().success());

    kill_a_server_at(&mnt, Some(NOBODY), &exe);
    let line = fuse_mounts_at(&mnt).pop().unwrap();
    assert!(line.contains("fuse.backchain") && line.contains(&format!("user_id={NOBODY}")), "{line}");
    let mut child = spawn(&exe, "clean", &mnt, Some(NOBODY));
    assert_eq!(first_line(&mut child), "true", "the user could not clean the dead mount");
    assert!(child.wait().unwrap().success());
    assert!(fuse_mounts_at(&mnt).is_empty());
}
