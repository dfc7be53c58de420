//! Every kind of file and its metadata survives a restore: devices, FIFOs,
//! sockets, hard links, setuid bits, xattrs, SELinux labels, capabilities
//! and ACLs, from an ext4 volume built by `mkfs.ext4 -d` from the tree of
//! `fixtures/metadata/make_tree.sh`, and from an XFS volume holding the
//! same tree (copied in through a kernel loop mount).
//! Oracles: the source tree as the host kernel shows it (lstat, listxattr,
//! `getfacl`), GNU tar and Info-ZIP unzip extracting our archives, and the
//! kernel's view through our FUSE mount; `fixtures/metadata/compare.py`
//! compares trees.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/metadata");

struct Volume {
    _t: tempfile::TempDir,
    src: PathBuf,
    img: String,
    /// The folder of the volume in the image's tree (`/Volume (…)`).
    folder: String,
    dir: PathBuf,
}

/// The filesystem a test volume is built as.
#[derive(Clone, Copy)]
enum Fs {
    /// `mkfs.ext4 -d`.
    Ext4,
    /// mkfs.xfs, then `cp -a` through a kernel loop mount (which keeps
    /// xattrs, ACLs and hard links), with the fixture's times set again.
    Xfs,
}

fn volume() -> Volume {
    volume_on(Fs::Ext4)
}

fn volume_on(fs: Fs) -> Volume {
    let t = tempdir();
    let src = t.path().join("src");
    run(tool("bash").arg(format!("{FIXTURES}/make_tree.sh")).arg(&src));
    let img = t.path().join("fs.img");
    match fs {
        Fs::Ext4 => {
            std::fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
            run(tool("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-I", "256", "-d"]).arg(&src).arg(&img));
        }
        Fs::Xfs => {
            mkfs_xfs(&img, "64M", &[]);
            let m = LoopMount::new(&img, &t.path().join("loop"));
            run(tool("cp").arg("-a").arg(format!("{}/.", src.display())).arg(&m.0));
            let touch = "find . -depth -exec touch -h -d '2024-05-06 07:08:09' {} +";
            run(tool("sh").args(["-c", touch]).current_dir(&m.0));
        }
    }
    let img = img.to_str().unwrap().to_string();
    let out = run(backchain().args(["ls", &img, "/"]));
    let line = String::from_utf8(out.stdout).unwrap();
    let name = line.lines().next().unwrap().split_once(" Volume").map(|(_, n)| format!("Volume{n}")).unwrap();
    Volume { dir: t.path().to_path_buf(), _t: t, src, img, folder: format!("/{name}") }
}

fn compare(src: &Path, restored: &Path, extra: &[&str]) {
    let out =
        tool("python3").arg(format!("{FIXTURES}/compare.py")).arg(src).arg(restored).args(extra).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{} differs from the source:\n{text}", restored.display());
}

/// `getfacl -R -n -p` of a folder, relative to it: one block per entry,
/// sorted by path (getfacl lists in folder order), without `skip`.
fn getfacl(dir: &Path, skip: &[&str]) -> Vec<String> {
    let out = run(tool("getfacl").args(["-R", "-n", "-p", "-P", "."]).current_dir(dir));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut blocks: Vec<String> = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .filter(|b| !skip.iter().any(|s| b.starts_with(&format!("# file: ./{s}\n"))))
        .map(str::to_string)
        .collect();
    blocks.sort();
    blocks
}

#[test]
fn the_listing_shows_special_types_and_device_numbers() {
    let v = volume();
    let out = run(backchain().args(["ls", &v.img, &v.folder, "--json"]));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let get = |n: &str| list.iter().find(|e| e["name"] == n).unwrap_or_else(|| panic!("{n} in {list:?}")).clone();
    assert_eq!(get("null")["type"], "chardevice");
    assert_eq!((get("null")["device"]["major"].clone(), get("null")["device"]["minor"].clone()), (1.into(), 3.into()));
    assert_eq!(get("sda1")["type"], "blockdevice");
    assert_eq!(get("big-dev")["device"]["minor"], 70000);
    assert_eq!(get("fifo")["type"], "fifo");
    assert_eq!(get("sock")["type"], "socket");
    assert_eq!(get("suid")["mode"], "4755");
    let text = String::from_utf8(run(backchain().args(["ls", &v.img, &v.folder])).stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("brw-r--r--") && l.contains("8, 1") && l.ends_with("sda1")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("-rwsr-xr-x") && l.ends_with("suid")), "{text}");
}

/// GNU tar restores the tree exactly from our tar.gz, as root: everything
/// but the socket, which tar cannot hold and the notes name.
#[test]
fn tar_gz_restores_the_tree_with_gnu_tar() {
    tar_restores(volume());
}

/// The same from XFS, whose xattrs and ACLs live in its attribute forks.
#[test]
fn tar_gz_restores_an_xfs_tree_with_gnu_tar() {
    tar_restores(volume_on(Fs::Xfs));
}

fn tar_restores(v: Volume) {
    let tgz = v.dir.join("t.tar.gz");
    run(backchain().args(["get", &v.img, &format!("{}/", v.folder), "-o"]).arg(&tgz));
    let out = v.dir.join("out");
    std::fs::create_dir(&out).unwrap();
    run(tool("tar")
        .args(["--xattrs", "--xattrs-include=*", "--acls", "--selinux", "--numeric-owner", "-xpzf"])
        .arg(&tgz)
        .arg("-C")
        .arg(&out));
    let notes = std::fs::read_to_string(out.join("RESTORE-NOTES.txt")).unwrap();
    assert!(notes.contains("sock: a socket"), "{notes}");
    compare(&v.src, &out, &["--skip-type", "socket", "--ignore", "RESTORE-NOTES.txt", "--ignore", "lost+found"]);
    let skip = ["RESTORE-NOTES.txt", "lost+found", "sock"];
    assert_eq!(getfacl(&out, &skip), getfacl(&v.src, &skip));
}

/// Info-ZIP unzip restores contents, modes, owners and times from our zip;
/// devices, FIFOs and sockets are named in the notes; hard links are copies.
#[test]
fn zip_keeps_owners_and_names_what_it_cannot_hold() {
    let v = volume();
    let zip = v.dir.join("t.zip");
    run(backchain().args(["get", &v.img, &format!("{}/", v.folder), "-o"]).arg(&zip));
    let out = v.dir.join("out");
    run(tool("unzip").args(["-X", "-K", "-q"]).arg(&zip).arg("-d").arg(&out));
    let notes = std::fs::read_to_string(out.join("RESTORE-NOTES.txt")).unwrap();
    for n in ["null: a chardevice", "sda1: a blockdevice", "fifo: a fifo", "sock: a socket"] {
        assert!(notes.contains(n), "{n} in {notes}");
    }
    let skip = ["socket", "chardev", "blockdev", "fifo"].iter().flat_map(|t| ["--skip-type", t]).collect::<Vec<_>>();
    let mut args = vec![
        "--no-xattrs",
        "--no-links",
        "--no-symlink-times",
        "--ignore",
        "RESTORE-NOTES.txt",
        "--ignore",
        "lost+found",
    ];
    args.extend(skip);
    compare(&v.src, &out, &args);
}

/// Through the kernel: every entry's type, mode, owner, times, rdev,
/// content, symlink target, hard-link grouping and xattrs equal the source.
#[test]
fn a_mount_shows_every_kind_of_file_as_the_source() {
    mount_shows_the_source(volume());
}

#[test]
fn a_mount_shows_every_kind_of_file_of_xfs_as_the_source() {
    mount_shows_the_source(volume_on(Fs::Xfs));
}

fn mount_shows_the_source(v: Volume) {
    assert!(Path::new("/dev/fuse").exists(), "FUSE needs /dev/fuse");
    let mnt = v.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(backchain().arg("--repo").arg(v.dir.join("repo")).arg("mount").arg(&v.img).arg(&mnt));
    let _m = FuseMount(mnt.clone());
    let vol = mnt.join(v.folder.trim_start_matches('/'));
    compare(&v.src, &vol, &["--ignore", "lost+found"]);
    assert_eq!(getfacl(&vol, &["lost+found"]), getfacl(&v.src, &[]));
}
