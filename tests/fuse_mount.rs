//! `backchain mount` through the kernel: a backup and the whole repository as
//! folders, compared with the fixture's source trees; concurrent readers;
//! EROFS; clean unmount; a dead mount cleaned up by the next mount.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;

use common::*;
use fixtures::fixture;
use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// FUSE needs /dev/fuse: in CI it must be there; elsewhere say so loudly.
fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "/dev/fuse is missing in CI");
    eprintln!("\n*** SKIPPING FUSE TESTS: /dev/fuse is missing on this machine ***\n");
    false
}

fn mounted(p: &Path) -> bool {
    let canon = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(canon.to_str().unwrap()))
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = backchain().arg("umount").arg(&self.0).output();
        }
    }
}

fn compare_dirs(mine: &Path, src: &Path, skip: &[&str], links: bool) -> usize {
    let names = |d: &Path, filter_links: bool| -> BTreeSet<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !filter_links || !e.file_type().unwrap().is_symlink())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !skip.contains(&n.as_str()))
            .collect()
    };
    let a = names(mine, false);
    assert_eq!(a, names(src, !links), "listing of {}", mine.display());
    let mut files = 0;
    for n in a {
        let (m, s) = (mine.join(&n), src.join(&n));
        let (mm, sm) = (fs::symlink_metadata(&m).unwrap(), fs::symlink_metadata(&s).unwrap());
        if sm.is_symlink() {
            assert!(mm.is_symlink(), "{}", m.display());
            assert_eq!(fs::read_link(&m).unwrap(), fs::read_link(&s).unwrap());
        } else if sm.is_dir() {
            assert!(mm.is_dir(), "{}", m.display());
            files += compare_dirs(&m, &s, &[], links);
        } else {
            assert_eq!(mm.len(), sm.len(), "size of {}", m.display());
            assert!(fs::read(&m).unwrap() == fs::read(&s).unwrap(), "content of {}", m.display());
            files += 1;
        }
    }
    files
}

fn find(dir: &Path, prefix: &str) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

fn backup(repo: &Path, vm: &str, disk: &Path) -> String {
    let out = run(backchain().arg("--repo").arg(repo).args(["backup", "--vm", vm, "--disk"]).arg(disk));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A scratch folder with a repository holding one backup of `image` (a
/// fixture) as VM `vm`, and an empty mount point; `None` (the test returns)
/// when FUSE is unavailable outside CI.
struct Lab {
    d: tempfile::TempDir,
    repo: PathBuf,
    id: String,
    mnt: PathBuf,
}

fn lab(vm: &str, image: &str) -> Option<Lab> {
    if !fuse_available() {
        return None;
    }
    let d = tempdir();
    let repo = d.path().join("repo");
    let id = backup(&repo, vm, &fixture(image));
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    Some(Lab { d, repo, id, mnt })
}

/// `threads` readers at random offsets (reads of 1 to `max_len` bytes) of
/// the swap partition's `partition.img` under `disk` (the mounted disk-0 of
/// backup `id`) get the same bytes as the disk's flat export.
fn random_reads_match_export(repo: &Path, id: &str, disk: &Path, scratch: &Path, threads: u64, max_len: u64) {
    let flat = scratch.join("flat.raw");
    run(backchain().arg("--repo").arg(repo).args(["export", &format!("{id}:0"), "-o"]).arg(&flat));
    let table = backchain::volume::table::read_table(
        &(std::sync::Arc::new(backchain::block::RawFile::open(&flat).unwrap())
            as std::sync::Arc<dyn backchain::block::ReadAt>),
    )
    .unwrap();
    let swap = table.partitions.iter().find(|p| p.number == 4).unwrap().clone();
    let max_len = max_len.min(swap.size / 2);
    let img = find(disk, "Partition 4 - ").join("partition.img");
    std::thread::scope(|s| {
        for t in 0..threads {
            let (img, flat) = (&img, &flat);
            s.spawn(move || {
                let (a, b) = (fs::File::open(img).unwrap(), fs::File::open(flat).unwrap());
                let mut rng = Rng::new(t + 1);
                for _ in 0..200 {
                    let len = 1 + rng.below(max_len) as usize;
                    let off = rng.below(swap.size - len as u64);
                    let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
                    a.read_exact_at(&mut x, off).unwrap();
                    b.read_exact_at(&mut y, swap.start + off).unwrap();
                    assert!(x == y, "reader {t} at {off}+{len}");
                }
            });
        }
    });
    fs::remove_file(&flat).unwrap();
}

#[test]
fn a_backup_mounted_reads_like_its_source() {
    let Some(Lab { d, repo, id, mnt }) = lab("pc", "gpt.img") else { return };
    run(backchain().arg("--repo").arg(&repo).args(["mount", &id]).arg(&mnt));
    let _guard = Mount(mnt.clone());
    assert!(mounted(&mnt));
    let disk = mnt.join("disk-0");
    let f = fixtures::fixtures();
    assert!(compare_dirs(&find(&disk, "Partition 1 - "), &f.join("src-fat"), &[], false) > 3000);
    assert!(compare_dirs(&find(&disk, "Partition 2 - "), &f.join("src-ntfs"), &["reparse"], false) > 3000);
    assert!(compare_dirs(&find(&disk, "Partition 3 - "), &f.join("src"), &["lost+found"], true) > 3000);

    // 8 readers at random offsets of a raw partition get the flat export's bytes.
    random_reads_match_export(&repo, &id, &disk, d.path(), 8, 300_000);

    // Read-only: every write fails with EROFS.
    let part = find(&disk, "Partition 3 - ");
    let erofs = |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(30), "EROFS expected");
    erofs(fs::write(part.join("new.txt"), b"x"));
    erofs(fs::OpenOptions::new().write(true).open(part.join("README.txt")).map(|_| ()));
    erofs(fs::create_dir(part.join("newdir")));
    erofs(fs::remove_file(part.join("README.txt")));
    erofs(fs::rename(part.join("README.txt"), part.join("moved.txt")));
    let err = fs::read_dir(mnt.join("no-such")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Unmount leaves nothing behind.
    run(backchain().arg("umount").arg(&mnt));
    assert!(!mounted(&mnt));
}

/// `--direct-io` (every read served by the server in the size asked,
/// straight into the reader's buffer) and `--page-cache` (every read through
/// the kernel's cache, large files too): the bytes must be the same.
#[test]
fn direct_io_and_page_cache_mounts_read_like_their_source() {
    let Some(Lab { d, repo, id, mnt }) = lab("pc", "gpt.img") else { return };
    for flag in ["--direct-io", "--page-cache"] {
        run(backchain().arg("--repo").arg(&repo).args(["mount", flag, &format!("{id}:0")]).arg(&mnt));
        let _guard = Mount(mnt.clone());
        let f = fixtures::fixtures();
        assert!(compare_dirs(&find(&mnt, "Partition 3 - "), &f.join("src"), &["lost+found"], true) > 3000);
        assert!(compare_dirs(&find(&mnt, "Partition 2 - "), &f.join("src-ntfs"), &["reparse"], false) > 3000);

        // Odd sizes up to half the partition at random offsets, from several
        // readers at once.
        random_reads_match_export(&repo, &id, &mnt, d.path(), 4, 1 << 20);
        run(backchain().arg("umount").arg(&mnt));
        assert!(!mounted(&mnt), "{flag}");
    }
}

/// Unmount, then mount again at once at the same place: the old server's
/// shutdown must not take the new mount down with it (fuser's session drop
/// unmounted by path, and did, about one time in three).
#[test]
fn a_quick_remount_at_the_same_place_stays_mounted() {
    let Some(Lab { d: _d, repo, id, mnt }) = lab("pc", "gpt.img") else { return };
    for round in 0..6 {
        run(backchain().arg("--repo").arg(&repo).args(["mount", &id]).arg(&mnt));
        let _guard = Mount(mnt.clone());
        // Longer than the old server takes to notice its unmount and end.
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(mounted(&mnt), "round {round}: the new mount vanished");
        assert!(fs::read_dir(mnt.join("disk-0")).is_ok(), "round {round}: the mount does not answer");
        run(backchain().arg("umount").arg(&mnt));
    }
}

#[test]
fn the_repository_mount_shows_new_backups_and_latest() {
    if !fuse_available() {
        return;
    }
    let d = tempdir();
    let repo = d.path().join("repo");
    let disk = d.path().join("disk.img");
    fs::copy(fixture("gpt.img"), &disk).unwrap();
    let first = backup(&repo, "pc", &disk);
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    run(backchain().arg("--repo").arg(&repo).arg("mount").arg(&mnt));
    let _guard = Mount(mnt.clone());
    let ext = find(&mnt.join("pc").join(&first).join("disk-0"), "Partition 3 - ");
    let src = fixtures::fixtures().join("src");
    assert!(fs::read(ext.join("README.txt")).unwrap() == fs::read(src.join("README.txt")).unwrap());
    assert_eq!(fs::read_link(mnt.join("pc/latest")).unwrap(), PathBuf::from(&first));

    // A backup committed after the mount appears, and `latest` follows it.
    // The kernel may keep the old listing for the volatile TTL (1 s): poll.
    let second = backup(&repo, "pc", &disk);
    let t0 = std::time::Instant::now();
    loop {
        let backups: BTreeSet<String> = fs::read_dir(mnt.join("pc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let latest = fs::read_link(mnt.join("pc/latest")).unwrap();
        if backups.contains(&second) && backups.contains(&first) && latest == Path::new(&second) {
            break;
        }
        assert!(t0.elapsed().as_secs() < 15, "{backups:?}, latest {latest:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(mnt.join("pc/latest/disk-0").is_dir());
    run(backchain().arg("umount").arg(&mnt));
    assert!(!mounted(&mnt));
}

#[test]
fn a_dead_mount_is_cleaned_up_by_the_next_mount() {
    if !fuse_available() {
        return;
    }
    let d = tempdir();
    let img = fixture("nopart-ext4.img");
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut server = backchain()
        .args(["mount", "--foreground"])
        .arg(&img)
        .arg(&mnt)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !mounted(&mnt) {
        assert!(t0.elapsed().as_secs() < 20, "mount did not come up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run(std::process::Command::new("kill").args(["-9", &server.id().to_string()]));
    server.wait().unwrap();
    let err = fs::read_dir(&mnt).map(|_| ()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(107), "ENOTCONN expected, got {err}");
    run(backchain().arg("mount").arg(&img).arg(&mnt));
    let _guard = Mount(mnt.clone());
    let vol = find(&mnt, "Volume (");
    assert!(vol.join("README.txt").is_file());
    run(backchain().arg("umount").arg(&mnt));
    assert!(!mounted(&mnt));
}

#[test]
fn serve_keeps_a_repository_mount_while_it_runs() {
    let Some(Lab { d: _d, repo, id, mnt }) = lab("srv", "nopart-ext4.img") else { return };
    let mut server = backchain()
        .arg("--repo")
        .arg(&repo)
        .args(["serve", "--listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--mount"])
        .arg(&mnt)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !mounted(&mnt) {
        assert!(t0.elapsed().as_secs() < 30, "serve --mount did not mount");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let vol = find(&mnt.join("srv").join(&id).join("disk-0"), "Volume (");
    let src = fixtures::fixtures().join("src");
    assert!(fs::read(vol.join("README.txt")).unwrap() == fs::read(src.join("README.txt")).unwrap());
    // Ctrl-C stops the server and takes the mount with it.
    run(std::process::Command::new("kill").args(["-INT", &server.id().to_string()]));
    assert!(server.wait().unwrap().success());
    assert!(!mounted(&mnt));
}
