//! `mount` and `umount`: the tree of a backup, a disk of a backup, an image
//! file, or the whole repository as a read-only FUSE folder.

use super::CliError;
use super::target::{self, Target};
use backchain::qcow2::OpenOptions;
use backchain::repo::Repo;
use backchain::tree::{self, Tree, fuse::FuseTree};
use backchain_fuse as bf;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `mount` waits for its background server to go live.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct MountArgs {
    pub target: Option<String>,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub allow_other: bool,
    /// `--direct-io` (Always), `--page-cache` (Never), or the default.
    pub direct_io: bf::DirectIo,
}

pub fn mount(repo_dir: PathBuf, a: MountArgs) -> Result<(), CliError> {
    // A server that died leaves a dead mount ("transport endpoint is not
    // connected"): detach it first, so that the check below and the wait for
    // the new mount see the folder itself.
    bf::clean_stale_mount(&a.mountpoint)?;
    if !a.mountpoint.is_dir() {
        return Err(CliError::msg(format!("mount point {} is not a folder", a.mountpoint.display())));
    }
    if bf::is_mounted(&a.mountpoint)? {
        return Err(CliError::msg(format!("{} is already mounted", a.mountpoint.display())));
    }
    if !a.foreground {
        return spawn_background(&repo_dir, &a);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // `_guard`: a backup's reader lock, held for as long as it is mounted.
    let (tree, fsname, _guard) = match a.target.as_deref().map(target::parse) {
        None => {
            let repo = Arc::new(Repo::open_existing(&repo_dir, rt.handle().clone())?);
            (backchain::restore::repository_tree(repo), "backchain-repo".to_string(), None)
        }
        Some(Target::Image(p)) => (tree::for_image(&p, &OpenOptions::default())?, p.display().to_string(), None),
        Some(Target::Backup { id, disk }) => {
            let repo = Repo::open_existing(&repo_dir, rt.handle().clone())?;
            let (t, guard): (Tree, _) = target::backup_tree(&repo, &id, disk)?;
            (t, id, Some(guard))
        }
    };
    let opts = bf::MountOptions { allow_other: a.allow_other, direct_io: a.direct_io, fsname, ..Default::default() };
    bf::mount_foreground(Arc::new(FuseTree(tree)), &a.mountpoint, &opts)?;
    Ok(())
}

/// Runs `backchain mount --foreground` detached, and returns once the mount
/// is live (or with the server's error).
fn spawn_background(repo_dir: &Path, a: &MountArgs) -> Result<(), CliError> {
    use std::os::unix::process::CommandExt;
    let log = tempfile_path();
    let err_file = std::fs::File::create(&log)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--repo").arg(repo_dir).arg("mount").arg("--foreground");
    if a.allow_other {
        cmd.arg("--allow-other");
    }
    match a.direct_io {
        bf::DirectIo::Always => _ = cmd.arg("--direct-io"),
        bf::DirectIo::Never => _ = cmd.arg("--page-cache"),
        bf::DirectIo::FromSize(_) => {}
    }
    if let Some(t) = &a.target {
        cmd.arg(t);
    }
    cmd.arg(&a.mountpoint).stdin(Stdio::null()).stdout(Stdio::null()).stderr(err_file).process_group(0);
    let mut child = cmd.spawn()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let msg = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            let line = msg.lines().last().unwrap_or("").trim_start_matches("backchain: ").to_string();
            return Err(CliError::msg(if line.is_empty() { format!("mount server exited ({status})") } else { line }));
        }
        if bf::is_mounted(&a.mountpoint).unwrap_or(false) {
            let _ = std::fs::remove_file(&log);
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = std::fs::remove_file(&log);
            return Err(CliError::msg("the mount did not come up in time"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tempfile_path() -> PathBuf {
    std::env::temp_dir().join(format!("backchain-mount-{}.log", std::process::id()))
}

pub fn umount(mountpoint: &Path) -> Result<(), CliError> {
    bf::unmount(mountpoint)?;
    Ok(())
}
