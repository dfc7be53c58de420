//! Mounting, unmounting, and cleaning up mounts whose server died.
//!
//! As root the mount is a direct mount(2); as a normal user fuser goes
//! through the setuid helper `fusermount3` (package fuse3). Unmounting uses
//! umount2(2) as root and `fusermount3 -u` otherwise.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};
use nix::mount::MntFlags;

use crate::mountinfo::{self, MountEntry};
use crate::options::{MountOptions, SUBTYPE};
use crate::server::Server;
use crate::tree::ReadOnlyTree;

/// The FUSE device; without it nothing can be mounted.
pub const FUSE_DEVICE: &str = "/dev/fuse";
/// The setuid helper non-root users mount and unmount through.
const FUSERMOUNT: &str = "fusermount3";
/// How long a mount may take to answer `statfs` before it counts as alive
/// but busy (a dead one answers at once with ENOTCONN).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Dead mounts stacked at one place that `clean_stale_mount` removes at most.
const MAX_STACKED_MOUNTS: usize = 16;
/// How long unmounting waits for the session thread to end.
const SESSION_END_WAIT: Duration = Duration::from_secs(5);
const SESSION_END_POLL: Duration = Duration::from_millis(5);
/// How often a detached session is checked for its end.
const REAP_POLL: Duration = Duration::from_millis(200);
/// How often `mount_foreground` checks for a signal or an external unmount.
const FOREGROUND_POLL: Duration = Duration::from_millis(100);
/// Readahead, in KiB, set on the mount's backing device when allowed (root):
/// the kernel offers FUSE only 128 KiB at mount time.
const READAHEAD_KB: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{FUSE_DEVICE} is missing: install the fuse3 package and load the fuse module")]
    NoFuseDevice,
    #[error("{FUSE_DEVICE} is not open to normal users (it should be mode 0666, as the fuse3 package sets it)")]
    FuseDeviceDenied,
    #[error("{0}: not a folder")]
    NotAFolder(PathBuf),
    #[error("{0}: already mounted")]
    AlreadyMounted(PathBuf),
    #[error("{0}: not a FUSE mount")]
    NotMounted(PathBuf),
    #[error("{0}: busy (a program still uses a file or folder in it)")]
    Busy(PathBuf),
    #[error("{0}: mounting for other users needs 'user_allow_other' in /etc/fuse.conf")]
    AllowOtherDenied(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MountError + '_ {
    move |source| MountError::Io { path: path.to_path_buf(), source }
}

/// A live mount served by background threads. Dropping it unmounts.
#[derive(Debug)]
pub struct MountHandle {
    session: Option<BackgroundSession>,
    path: PathBuf,
    /// The mount's device number, to recognise it in the mount table.
    dev: Option<(u32, u32)>,
}

impl MountHandle {
    /// Where the tree is mounted (absolute, without symlinks).
    pub fn mountpoint(&self) -> &Path {
        &self.path
    }

    /// Whether the server is still running (false after an external unmount).
    pub fn is_serving(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmounts. If a program still uses the mount, it is detached instead
    /// (gone from the namespace; open files keep working until closed).
    /// Either way nothing is left mounted at the mount point afterwards.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else { return Ok(()) };
        if session.guard.is_finished() {
            // Unmounted from outside; the session already ended.
            release(session);
            return Ok(());
        }
        // Only unmount what is still ours: it may have been detached from
        // outside, and something else mounted there since.
        let top = mountinfo::mounts_at(&self.path).map_err(io_err(&self.path))?.pop();
        if !top.is_some_and(|m| m.is_fuse() && (self.dev.is_none() || m.dev == self.dev)) {
            reap(session);
            return Ok(());
        }
        // Unmount here rather than through fuser, which as a normal user
        // always detaches lazily and then waits for the last open file.
        let result = match umount_now(&self.path) {
            Ok(()) => {
                let t0 = Instant::now();
                while !session.guard.is_finished() && t0.elapsed() < SESSION_END_WAIT {
                    thread::sleep(SESSION_END_POLL);
                }
                Ok(())
            }
            // Files are still open: detach the mount; the session serves
            // them until they are closed, then ends by itself.
            Err(MountError::Busy(_)) => detach(&self.path),
            Err(e) => Err(e),
        };
        reap(session);
        result
    }
}

/// Lets go of a session once it ends by itself, without ever dropping it.
fn reap(session: BackgroundSession) {
    if session.guard.is_finished() {
        release(session);
        return;
    }
    let spawned = thread::Builder::new().name("backchain-reap".into()).spawn(move || {
        while !session.guard.is_finished() {
            thread::sleep(REAP_POLL);
        }
        release(session);
    });
    if let Err(e) = spawned {
        log::warn!("backchain-fuse: cannot wait for a detached session: {e}");
    }
}

/// Forgets a session whose thread has ended. Dropping (or joining) a
/// fuser session drops its mount record, which unmounts the mount point *by
/// path*: by then that path may hold a new mount (a `backchain mount` at the
/// same place right after `backchain umount`), which would vanish. Seen
/// while benchmarking: mount, umount and mount again at one place lost the
/// new mount about one time in three. The cost is the session's small state
/// (a /dev/fuse handle of a connection that is gone, the mount record), once
/// per mount.
fn release(session: BackgroundSession) {
    std::mem::forget(session);
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            log::warn!("backchain-fuse: unmounting {}: {e}", self.path.display());
        }
    }
}

/// Mounts `tree` read-only at `mountpoint` and serves it from background
/// threads; returns once the mount is live. A dead mount left at the same
/// place by a server that died is cleaned up first.
pub fn mount(tree: Arc<dyn ReadOnlyTree>, mountpoint: &Path, opts: &MountOptions) -> Result<MountHandle, MountError> {
    let (session, path) = start(tree, mountpoint, opts)?;
    let session = session.spawn().map_err(io_err(&path))?;
    let dev = std::fs::metadata(&path).ok().map(|m| (libc::major(m.dev()), libc::minor(m.dev())));
    if let Some((major, minor)) = dev {
        raise_readahead(major, minor);
    }
    Ok(MountHandle { session: Some(session), path, dev })
}

/// Like [`mount`], but serves until the mount is unmounted from outside or
/// the process gets SIGINT, SIGTERM or SIGHUP, which unmount it. Returns
/// after unmounting. Those signals stay caught (and ignored) afterwards, so
/// the caller should exit soon after.
pub fn mount_foreground(tree: Arc<dyn ReadOnlyTree>, mountpoint: &Path, opts: &MountOptions) -> Result<(), MountError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut ids = Vec::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        ids.push(signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(io_err(mountpoint))?);
    }
    let result = mount(tree, mountpoint, opts).and_then(|handle| {
        while !stop.load(Ordering::Relaxed) && handle.is_serving() {
            thread::sleep(FOREGROUND_POLL);
        }
        handle.unmount()
    });
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    result
}

/// Unmounts the FUSE mount at `mountpoint` (refusing anything that is not a
/// FUSE mount). A dead mount is detached; a busy one is left alone and
/// reported as [`MountError::Busy`].
pub fn unmount(mountpoint: &Path) -> Result<(), MountError> {
    let path = resolve(mountpoint)?;
    let top = mountinfo::mounts_at(&path).map_err(io_err(&path))?.pop();
    if !top.as_ref().is_some_and(MountEntry::is_fuse) {
        return Err(MountError::NotMounted(path));
    }
    if probe(&path) == Probe::Dead {
        return detach(&path);
    }
    umount_now(&path)
}

/// A plain (not lazy) unmount: umount2(2) as root, `fusermount3 -u` otherwise.
fn umount_now(path: &Path) -> Result<(), MountError> {
    if nix::unistd::geteuid().is_root() {
        return match nix::mount::umount2(path, MntFlags::empty()) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EBUSY) => Err(MountError::Busy(path.to_path_buf())),
            Err(e) => Err(io_err(path)(e.into())),
        };
    }
    let out = Command::new(FUSERMOUNT).arg("-u").arg("--").arg(path).output().map_err(io_err(path))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.contains("busy") {
        Err(MountError::Busy(path.to_path_buf()))
    } else {
        Err(io_err(path)(io::Error::other(stderr)))
    }
}

/// Whether a FUSE mount (live or dead) sits at `mountpoint`. A parent
/// process that started `mount_foreground` in a child can poll this to know
/// when the folder is live.
pub fn is_mounted(mountpoint: &Path) -> Result<bool, MountError> {
    let path = resolve(mountpoint)?;
    Ok(mountinfo::mounts_at(&path).map_err(io_err(&path))?.last().is_some_and(MountEntry::is_fuse))
}

/// Detects a dead FUSE mount at `mountpoint` (its server is gone: every
/// access fails with "transport endpoint is not connected") and detaches it,
/// repeatedly if several are stacked there. Returns whether anything was
/// cleaned. A live mount, even a slow one, is never touched.
pub fn clean_stale_mount(mountpoint: &Path) -> Result<bool, MountError> {
    let path = resolve(mountpoint)?;
    let mut cleaned = false;
    for _ in 0..MAX_STACKED_MOUNTS {
        let top = mountinfo::mounts_at(&path).map_err(io_err(&path))?.pop();
        if !top.as_ref().is_some_and(MountEntry::is_fuse) || probe(&path) != Probe::Dead {
            break;
        }
        log::info!("backchain-fuse: detaching the dead mount at {}", path.display());
        detach(&path)?;
        cleaned = true;
    }
    Ok(cleaned)
}

/// Mount-time checks and the mount itself (the session is live on return).
fn start(
    tree: Arc<dyn ReadOnlyTree>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<(Session<Server>, PathBuf), MountError> {
    if !Path::new(FUSE_DEVICE).exists() {
        return Err(MountError::NoFuseDevice);
    }
    // fuser opens the device before falling back to fusermount3, so a normal
    // user needs it open to all, as distributions set it up.
    if !nix::unistd::geteuid().is_root()
        && let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(FUSE_DEVICE)
        && e.kind() == io::ErrorKind::PermissionDenied
    {
        return Err(MountError::FuseDeviceDenied);
    }
    let path = resolve(mountpoint)?;
    clean_stale_mount(&path)?;
    if mountinfo::mounts_at(&path).map_err(io_err(&path))?.last().is_some_and(MountEntry::is_fuse) {
        return Err(MountError::AlreadyMounted(path));
    }
    if !std::fs::metadata(&path).map_err(io_err(&path))?.is_dir() {
        return Err(MountError::NotAFolder(path));
    }
    let mut config = Config::default();
    // Several threads take requests, each from its own clone of the device,
    // so a read answered inline never holds up the next request.
    config.n_threads = Some(opts.fuse_threads.max(1));
    config.clone_fd = true;
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        MountOption::FSName(fsname(&opts.fsname)),
        MountOption::Subtype(SUBTYPE.to_string()),
    ];
    if opts.allow_other {
        config.mount_options.push(MountOption::DefaultPermissions);
        config.acl = SessionACL::All;
    }
    let server = Server::new(tree, opts.read_threads, opts.meta_threads, opts.direct_io).map_err(io_err(&path))?;
    let session = Session::new(server, &path, &config).map_err(|e| {
        if opts.allow_other && e.kind() == io::ErrorKind::PermissionDenied {
            MountError::AllowOtherDenied(path.clone())
        } else {
            io_err(&path)(e)
        }
    })?;
    Ok((session, path))
}

/// The source name as mount options can carry it: commas would split it
/// into options (fusermount3 reads `-o fsname=...`), and blanks or
/// backslashes come out escaped in mount listings.
fn fsname(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c == ',' || c == '\\' || c.is_whitespace() || c.is_control() { '_' } else { c })
        .collect();
    if clean.is_empty() { SUBTYPE.to_string() } else { clean }
}

/// An absolute path for `mountpoint` without symlinks, found without
/// touching the mount point itself (a dead mount fails every access).
fn resolve(mountpoint: &Path) -> Result<PathBuf, MountError> {
    let absolute = std::path::absolute(mountpoint).map_err(io_err(mountpoint))?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize().map_err(io_err(parent))?.join(name)),
        _ => Err(MountError::NotAFolder(absolute)),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Probe {
    Dead,
    Alive,
}

/// Asks the mount for `statfs` on a helper thread: ENOTCONN (or
/// ECONNABORTED) means the server is gone. (Not `stat`: the kernel answers
/// that from its attribute cache, even for a dead mount.) A server that does
/// not answer in time is treated as alive, and the helper thread is left
/// blocked rather than this one.
fn probe(path: &Path) -> Probe {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    let spawned = thread::Builder::new().name("backchain-probe".into()).spawn(move || {
        let _ = tx.send(nix::sys::statvfs::statvfs(&p).err());
    });
    if spawned.is_err() {
        return Probe::Alive;
    }
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(Some(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED)) => Probe::Dead,
        _ => Probe::Alive,
    }
}

/// Lazy unmount: the mount disappears from the namespace at once; the
/// kernel drops it when its last user goes.
fn detach(path: &Path) -> Result<(), MountError> {
    if nix::unistd::geteuid().is_root() {
        return nix::mount::umount2(path, MntFlags::MNT_DETACH).map_err(|e| io_err(path)(e.into()));
    }
    let out = Command::new(FUSERMOUNT).args(["-u", "-z", "--"]).arg(path).output().map_err(io_err(path))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io_err(path)(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string())))
    }
}

/// Best effort: FUSE starts with the default 128 KiB readahead; root may
/// raise it on the mount's backing device (named MAJOR:MINOR in sysfs).
fn raise_readahead(major: u32, minor: u32) {
    let bdi = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&bdi, READAHEAD_KB.to_string()) {
        log::debug!("backchain-fuse: cannot raise readahead through {bdi}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsname_cannot_smuggle_mount_options() {
        assert_eq!(fsname("vm1/2024-01-01 disk,allow_other"), "vm1/2024-01-01_disk_allow_other");
        assert_eq!(fsname("a\\b\tc\nd"), "a_b_c_d");
        assert_eq!(fsname(""), SUBTYPE);
        assert_eq!(fsname("backup-42:0"), "backup-42:0");
    }
}
