//! LVM2 volume groups built by the real tools, read without device-mapper.
//!
//! Fixtures: `pvcreate`/`vgcreate` on loop devices over image files (a
//! private LVM system dir and a device filter per test, so tests never see
//! each other or the host), `lvcreate --driverloaded n -an --zero n`, which
//! writes metadata only; the LV extents from `lvs --segments` and `pvs -o
//! pe_start`, and `mkfs.ext4 -d` images written into place (striped ones
//! chunk by chunk, the way dm-stripe lays them out). Oracle: the SHA-256 of
//! every source file, through `backchain cat` and through a FUSE mount.

mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// Loop devices and LVM commands confined to them.
struct Lvm {
    sys: tempfile::TempDir,
    /// (loop device, image file, offset of the PV in the file)
    loops: Vec<(String, PathBuf, u64)>,
}

impl Drop for Lvm {
    fn drop(&mut self) {
        for (dev, _, _) in &self.loops {
            let _ = std::process::Command::new("losetup").args(["-d", dev]).output();
        }
    }
}

/// One LV segment as `lvs --segments` reports it.
struct Seg {
    le_start: u64,
    /// (loop device, first PE, last PE) per stripe.
    ranges: Vec<(String, u64, u64)>,
    stripe_size: u64,
}

impl Lvm {
    fn new() -> Self {
        Lvm { sys: tempdir(), loops: Vec::new() }
    }

    /// Attaches `size` bytes at `offset` of `file` as a loop device (the
    /// kernel here makes no partition nodes, so a partition gets its own).
    fn attach(&mut self, file: &Path, offset: u64, size: u64) -> String {
        let out = run(tool("losetup")
            .args(["-f", "--show", "-o", &offset.to_string(), "--sizelimit", &size.to_string()])
            .arg(file));
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        self.loops.push((dev.clone(), file.to_path_buf(), offset));
        dev
    }

    fn cmd(&self, name: &str, args: &[&str]) -> String {
        let accept: Vec<String> = self.loops.iter().map(|(d, _, _)| format!("\"a|^{d}$|\"")).collect();
        let config = format!(
            "devices {{ filter = [{}, \"r|.*|\"] use_devicesfile = 0 obtain_device_list_from_udev = 0 }} \
             activation {{ udev_sync = 0 udev_rules = 0 }} backup {{ backup = 0 archive = 0 }}",
            accept.join(", ")
        );
        let out = run(tool(name)
            .env("LVM_SYSTEM_DIR", self.sys.path())
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .args(["--config", &config])
            .args(args));
        String::from_utf8(out.stdout).unwrap()
    }

    fn lvcreate(&self, args: &[&str]) {
        let mut a = vec!["--driverloaded", "n", "-an", "--zero", "n", "-q"];
        a.extend_from_slice(args);
        self.cmd("lvcreate", &a);
    }

    fn report(&self, name: &str, fields: &str) -> Vec<Vec<String>> {
        let out = self.cmd(name, &["--noheadings", "--units", "b", "--nosuffix", "--separator", ";", "-o", fields]);
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().split(';').map(str::to_string).collect())
            .collect()
    }

    /// The segments of `vg/lv` in LV order, and the extent size.
    fn segments(&self, vg: &str, lv: &str) -> (Vec<Seg>, u64) {
        let mut extent = 0;
        let mut segs = Vec::new();
        let fields = "vg_name,lv_name,seg_start_pe,seg_pe_ranges,stripe_size,vg_extent_size";
        let out = self.cmd(
            "lvs",
            &["--segments", "--noheadings", "--units", "b", "--nosuffix", "--separator", ";", "-o", fields],
        );
        for l in out.lines().map(|l| l.trim().split(';').map(str::to_string).collect::<Vec<_>>()) {
            if l.len() < 6 || l[0] != vg || l[1] != lv {
                continue;
            }
            extent = l[5].parse().unwrap();
            let ranges = l[3]
                .split([' ', ','])
                .filter(|r| !r.is_empty())
                .map(|r| {
                    let (dev, pes) = r.rsplit_once(':').unwrap();
                    let (a, b) = pes.split_once('-').unwrap();
                    (dev.to_string(), a.parse().unwrap(), b.parse().unwrap())
                })
                .collect();
            segs.push(Seg { le_start: l[2].parse().unwrap(), ranges, stripe_size: l[4].parse().unwrap() });
        }
        segs.sort_by_key(|s| s.le_start);
        assert!(!segs.is_empty(), "no segments for {vg}/{lv}");
        (segs, extent)
    }

    /// Writes `data` (the LV's contents) into the image files where the LV's
    /// extents lie.
    fn write_lv(&self, vg: &str, lv: &str, data: &[u8]) {
        let (segs, extent) = self.segments(vg, lv);
        let pe_start: BTreeMap<String, u64> =
            self.report("pvs", "pv_name,pe_start").into_iter().map(|r| (r[0].clone(), r[1].parse().unwrap())).collect();
        for s in &segs {
            let n = s.ranges.len() as u64;
            let per = (s.ranges[0].2 - s.ranges[0].1 + 1) * extent;
            let chunk = if n == 1 { per } else { s.stripe_size };
            let base = s.le_start * extent;
            for c in 0..per * n / chunk {
                let (dev, first, _) = &s.ranges[(c % n) as usize];
                let (_, file, off) = self.loops.iter().find(|(d, _, _)| d == dev).unwrap();
                let at = off + pe_start[dev] + first * extent + (c / n) * chunk;
                let from = (base + c * chunk) as usize;
                let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
                f.write_all_at(&data[from..from + chunk as usize], at).unwrap();
            }
        }
    }

    fn lv_size(&self, vg: &str, lv: &str) -> u64 {
        let rows = self.report("lvs", "vg_name,lv_name,lv_size");
        rows.iter().find(|r| r[0] == vg && r[1] == lv).unwrap()[2].parse().unwrap()
    }
}

/// A source tree of `n` files (some in a subfolder) with random contents,
/// as (relative path, SHA-256).
fn source(dir: &Path, seed: u64, n: usize) -> BTreeMap<String, String> {
    let mut rng = Rng::new(seed);
    let mut out = BTreeMap::new();
    for i in 0..n {
        let rel = if i % 3 == 0 { format!("sub/f{i}") } else { format!("f{i}") };
        let len = 1 + rng.below(300_000) as usize;
        let data = random(&mut rng, len);
        write(&dir.join(&rel), &data);
        out.insert(rel, sha(&data));
    }
    out
}

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// An ext4 image of `size` bytes holding `src`.
fn ext4(dir: &Path, name: &str, src: &Path, size: u64) -> Vec<u8> {
    let img = dir.join(name);
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    run(tool("mkfs.ext4").args(["-q", "-F", "-L", name, "-d"]).arg(src).arg(&img));
    std::fs::read(&img).unwrap()
}

/// An XFS image of `size` bytes holding `src` (flat files and folders),
/// built by mkfs.xfs from a protofile. mkfs.xfs refuses volumes under
/// 300 MB unless the XFS test suite's variables are set.
fn xfs(dir: &Path, name: &str, src: &Path, size: u64) -> Vec<u8> {
    fn proto(src: &Path, depth: usize, out: &mut String) {
        let mut names: Vec<_> = std::fs::read_dir(src).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let (pad, name) = (" ".repeat(depth), p.file_name().unwrap().to_str().unwrap().to_string());
            if p.is_dir() {
                out.push_str(&format!("{pad}{name} d--755 0 0\n"));
                proto(&p, depth + 1, out);
                out.push_str(&format!("{pad}$\n"));
            } else {
                out.push_str(&format!("{pad}{name} ---644 0 0 {}\n", p.display()));
            }
        }
    }
    let mut text = String::from("/dev/null\n0 0\nd--755 0 0\n");
    proto(src, 1, &mut text);
    text.push_str("$\n");
    let pf = dir.join(format!("{name}.proto"));
    std::fs::write(&pf, text).unwrap();
    let img = dir.join(name);
    blank(&img, size);
    let mut c = tool("mkfs.xfs");
    c.env("TEST_DIR", "/tmp").env("TEST_DEV", "backchain").env("QA_CHECK_FS", "1");
    run(c.args(["-q", "-f", "-L", name, "-p"]).arg(&pf).arg(&img));
    std::fs::read(&img).unwrap()
}

/// A filesystem image builder: `ext4` or `xfs`.
type Mkfs = fn(&Path, &str, &Path, u64) -> Vec<u8>;

/// A source tree, its image (`mkfs`) written into `vg/lv`, and the files' hashes.
fn fill_lv_with(lvm: &Lvm, dir: &Path, vg: &str, lv: &str, seed: u64, mkfs: Mkfs) -> BTreeMap<String, String> {
    let src = dir.join(format!("src-{vg}-{lv}"));
    let files = source(&src, seed, 6);
    let img = mkfs(dir, &format!("{vg}-{lv}"), &src, lvm.lv_size(vg, lv));
    lvm.write_lv(vg, lv, &img);
    files
}

/// A source tree, its ext4 image written into `vg/lv`, and the files' hashes.
fn fill_lv(lvm: &Lvm, dir: &Path, vg: &str, lv: &str, seed: u64) -> BTreeMap<String, String> {
    fill_lv_with(lvm, dir, vg, lv, seed, ext4)
}

fn blank(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// The folder of `parent` (a path in the tree) whose name starts with `prefix`.
fn folder(target: &str, parent: &str, prefix: &str) -> String {
    let out = run(backchain().args(["ls", target, parent, "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    let hit = names.iter().find(|n| n.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix}* in {names:?}"));
    format!("{}/{hit}", parent.trim_end_matches('/'))
}

/// Every file through `backchain cat` equals the source.
fn check_cli(repo: &Path, target: &str, dir: &str, files: &BTreeMap<String, String>) {
    for (rel, want) in files {
        let out = run(backchain().arg("--repo").arg(repo).args(["cat", target, &format!("{dir}/{rel}")]));
        assert_eq!(&sha(&out.stdout), want, "{dir}/{rel}");
    }
}

/// Every file through the mount equals the source.
fn check_mount(dir: &Path, files: &BTreeMap<String, String>) {
    for (rel, want) in files {
        assert_eq!(&sha(&std::fs::read(dir.join(rel)).unwrap()), want, "{}", dir.join(rel).display());
    }
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = backchain().arg("umount").arg(&self.0).output();
    }
}

fn mount(repo: &Path, target: Option<&str>, at: &Path) -> Mount {
    assert!(Path::new("/dev/fuse").exists(), "FUSE needs /dev/fuse");
    std::fs::create_dir_all(at).unwrap();
    run(backchain().arg("--repo").arg(repo).arg("mount").args(target).arg(at));
    Mount(at.to_path_buf())
}

fn backup(repo: &Path, vm: &str, disks: &[&Path]) -> String {
    let mut c = backchain();
    c.arg("--repo").arg(repo).args(["backup", "--vm", vm, "--json"]);
    for d in disks {
        c.arg("--disk").arg(d);
    }
    let v: serde_json::Value = serde_json::from_slice(&run(&mut c).stdout).unwrap();
    v["backup_id"].as_str().unwrap_or_else(|| panic!("{v}")).to_string()
}

/// The typical default install: a GPT disk with /boot (ext4) and an LVM PV
/// holding root, home (two segments: it was extended after swap was made)
/// and swap.
#[test]
fn gpt_disk_with_boot_and_a_pv_holding_root_home_and_swap() {
    let t = tempdir();
    let d = t.path();
    let disk = d.join("disk.img");
    blank(&disk, 72 * MIB);
    run(tool("sgdisk").args(["-n", "1:2048:+16M", "-c", "1:boot", "-n", "2:0:0", "-t", "2:8e00"]).arg(&disk));
    let (p2_start, p2_size) = (2048 * 512 + 16 * MIB, 72 * MIB - 2048 * 512 - 16 * MIB - 33 * 512);
    let boot_src = d.join("src-boot");
    let boot = source(&boot_src, 1, 4);
    let boot_img = ext4(d, "boot", &boot_src, 16 * MIB);
    std::fs::OpenOptions::new().write(true).open(&disk).unwrap().write_all_at(&boot_img, 2048 * 512).unwrap();

    let mut lvm = Lvm::new();
    let pv = lvm.attach(&disk, p2_start, p2_size);
    lvm.cmd("pvcreate", &["-q", "--pvmetadatacopies", "2", &pv]);
    lvm.cmd("vgcreate", &["-q", "-s", "1m", "rhel", &pv]);
    lvm.lvcreate(&["-L", "16m", "-n", "root", "rhel"]);
    lvm.lvcreate(&["-L", "8m", "-n", "home", "rhel"]);
    lvm.lvcreate(&["-L", "4m", "-n", "swap", "rhel"]);
    lvm.cmd("lvextend", &["--driverloaded", "n", "-q", "-L", "16m", "rhel/home"]);
    assert_eq!(lvm.segments("rhel", "home").0.len(), 2, "home has two segments");
    let root = fill_lv_with(&lvm, d, "rhel", "root", 2, xfs);
    let home = fill_lv(&lvm, d, "rhel", "home", 3);
    let swap = d.join("swap.img");
    blank(&swap, 4 * MIB);
    run(tool("mkswap").arg(&swap));
    lvm.write_lv("rhel", "swap", &std::fs::read(&swap).unwrap());
    add_snapshot(&lvm, d, "rhel", "root", 40);
    let lvs = lvm.cmd("lvs", &["--noheadings", "-o", "lv_name,origin"]);
    assert!(lvs.lines().any(|l| l.split_whitespace().eq(["snap", "root"])), "{lvs}");
    drop(lvm);
    // Break the first metadata area's header: the copy at the end of the PV is used.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(b"garbage", p2_start + 4096 + 100).unwrap();

    let img = disk.display().to_string();
    let repo = d.join("repo");
    let listing = String::from_utf8(run(backchain().args(["ls", &img, "/"])).stdout).unwrap();
    for name in ["Partition 1 - boot (16.8 MB)", "LV rhel-root (16.8 MB)", "LV rhel-home (16.8 MB)", "LV rhel-swap"] {
        assert!(listing.contains(name), "{name} in\n{listing}");
    }
    let pv_dir = folder(&img, "/", "Partition 2 - ");
    let readme = run(backchain().args(["cat", &img, &format!("{pv_dir}/README.txt")])).stdout;
    let readme = String::from_utf8(readme).unwrap();
    assert!(readme.contains("LVM physical volume") && readme.contains("volume group rhel"), "{readme}");
    let raw = run(backchain().args(["cat", &img, &format!("{pv_dir}/partition.img")])).stdout;
    assert_eq!(raw.len() as u64, p2_size);
    let swap_note = run(backchain().args(["cat", &img, &format!("{}/README.txt", folder(&img, "/", "LV rhel-swap"))]));
    assert!(String::from_utf8(swap_note.stdout).unwrap().contains("Linux swap"));
    let snap_note = run(backchain().args(["cat", &img, &format!("{}/README.txt", folder(&img, "/", "LV rhel-snap"))]));
    let snap_note = String::from_utf8(snap_note.stdout).unwrap();
    assert!(snap_note.contains("snapshot of LV root"), "{snap_note}");

    check_cli(&repo, &img, &folder(&img, "/", "Partition 1 - boot"), &boot);
    check_cli(&repo, &img, &folder(&img, "/", "LV rhel-root"), &root);
    check_cli(&repo, &img, &folder(&img, "/", "LV rhel-home"), &home);
    let mnt = d.join("mnt");
    let _m = mount(&repo, Some(&img), &mnt);
    check_mount(&mnt.join("LV rhel-root (16.8 MB)"), &root);
    check_mount(&mnt.join("LV rhel-home (16.8 MB)"), &home);
    check_mount(&mnt.join("Partition 1 - boot (16.8 MB)"), &boot);

    // A damaged PV label costs the VG, with the reason in the PV's README;
    // /boot stays browsable.
    let broken = d.join("broken.img");
    std::fs::copy(&disk, &broken).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&broken).unwrap();
    f.write_all_at(b"garbage", p2_start + 512 + 200).unwrap();
    let img = broken.display().to_string();
    let listing = String::from_utf8(run(backchain().args(["ls", &img, "/"])).stdout).unwrap();
    assert!(!listing.contains("LV rhel-"), "{listing}");
    let readme = run(backchain().args(["cat", &img, &format!("{}/README.txt", folder(&img, "/", "Partition 2 - "))]));
    let readme = String::from_utf8(readme.stdout).unwrap();
    assert!(readme.contains("label cannot be read") && readme.contains("CRC"), "{readme}");
    check_cli(&repo, &img, &folder(&img, "/", "Partition 1 - boot"), &boot);
}

/// One VM, two disks: disk 0 a whole-disk PV, disk 1 an MBR disk with a PV
/// partition. A striped LV and a linear LV that runs from one disk onto
/// the other appear at the backup's root; an LV on disk 1 alone beside its
/// partitions. Backing up disk 0 alone leaves them listed with the reason.
#[test]
fn a_vg_spanning_two_disks_with_a_striped_lv() {
    let t = tempdir();
    let d = t.path();
    let (a, b) = (d.join("a.img"), d.join("b.img"));
    blank(&a, 32 * MIB);
    blank(&b, 32 * MIB);
    run(tool("sfdisk").arg("-q").arg(&b).stdin_bytes(b"label: dos\nstart=2048, type=8e\n"));
    let mut lvm = Lvm::new();
    let pa = lvm.attach(&a, 0, 32 * MIB);
    let pb = lvm.attach(&b, MIB, 31 * MIB);
    lvm.cmd("pvcreate", &["-q", &pa, &pb]);
    lvm.cmd("vgcreate", &["-q", "-s", "1m", "data", &pa, &pb]);
    lvm.lvcreate(&["-i", "2", "-I", "64k", "-L", "16m", "-n", "stripes", "data"]);
    lvm.lvcreate(&["-L", "8m", "-n", "local", "data", &pb]);
    lvm.lvcreate(&["-L", "4m", "-n", "only0", "data", &pa]);
    // 30 MiB: what is left on disk 0 (19 MiB) and the rest on disk 1.
    lvm.lvcreate(&["-L", "30m", "-n", "span", "data", &pa, &pb]);
    let (span_segs, _) = lvm.segments("data", "span");
    assert!(span_segs.len() == 2 && span_segs[0].ranges[0].0 != span_segs[1].ranges[0].0, "span crosses disks");
    let stripes = fill_lv(&lvm, d, "data", "stripes", 4);
    let local = fill_lv(&lvm, d, "data", "local", 5);
    let span = fill_lv(&lvm, d, "data", "span", 6);
    let only0 = fill_lv(&lvm, d, "data", "only0", 9);
    drop(lvm);

    let repo = d.join("repo");
    let id = backup(&repo, "db", &[&a, &b]);
    let root = String::from_utf8(run(backchain().arg("--repo").arg(&repo).args(["ls", &id, "/"])).stdout).unwrap();
    for name in ["disk-0", "disk-1", "LV data-stripes (16.8 MB)", "LV data-span (31.5 MB)"] {
        assert!(root.contains(name), "{name} in\n{root}");
    }
    let disk1 = String::from_utf8(run(backchain().arg("--repo").arg(&repo).args(["ls", &id, "/disk-1"])).stdout);
    assert!(disk1.unwrap().contains("LV data-local (8.4 MB)"));
    let ls = |path: &str| {
        let out = run(backchain().arg("--repo").arg(&repo).args(["ls", &id, path, "--json"]));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert!(ls("/disk-0").as_array().unwrap().iter().any(|e| e["name"].as_str().unwrap().starts_with("Volume (")));
    check_cli(&repo, &id, "/LV data-stripes (16.8 MB)", &stripes);
    check_cli(&repo, &id, "/LV data-span (31.5 MB)", &span);
    check_cli(&repo, &id, "/disk-1/LV data-local (8.4 MB)", &local);
    check_cli(&repo, &id, "/disk-0/LV data-only0 (4.2 MB)", &only0);
    {
        let mnt = d.join("mnt");
        let _m = mount(&repo, Some(&id), &mnt);
        check_mount(&mnt.join("LV data-stripes (16.8 MB)"), &stripes);
        check_mount(&mnt.join("LV data-span (31.5 MB)"), &span);
        check_mount(&mnt.join("disk-1/LV data-local (8.4 MB)"), &local);
    }

    // Disk 0 alone: the VG is there, its LVs with extents on disk 1 are
    // listed with the reason, the one wholly on disk 0 reads as before.
    let only = backup(&repo, "half", &[&a]);
    check_cli(&repo, &only, "/disk-0/LV data-only0 (4.2 MB)", &only0);
    let out = run(backchain().arg("--repo").arg(&repo).args(["cat", &only, "/LV data-span (31.5 MB)/README.txt"]));
    let why = String::from_utf8(out.stdout).unwrap();
    assert!(why.contains("not among the disks of this backup"), "{why}");
}

/// Two VMs whose disks carry a VG of the same name (and LV) each see their
/// own; one VM with two such disks shows both, told apart by disk, also
/// when the disks are clones with the same UUIDs.
#[test]
fn the_same_vg_name_in_two_vms_and_on_cloned_disks() {
    let t = tempdir();
    let d = t.path();
    let mut disks = Vec::new();
    let mut files = Vec::new();
    for (i, seed) in [(0, 7u64), (1, 8)] {
        let disk = d.join(format!("vm{i}.img"));
        blank(&disk, 16 * MIB);
        let mut lvm = Lvm::new();
        let pv = lvm.attach(&disk, 0, 16 * MIB);
        lvm.cmd("pvcreate", &["-q", &pv]);
        lvm.cmd("vgcreate", &["-q", "-s", "1m", "ubuntu-vg", &pv]);
        lvm.lvcreate(&["-L", "8m", "-n", "root", "ubuntu-vg"]);
        files.push(fill_lv(&lvm, d, "ubuntu-vg", "root", seed));
        drop(lvm);
        std::fs::rename(d.join("src-ubuntu-vg-root"), d.join(format!("src-{i}"))).unwrap();
        disks.push(disk);
    }
    let clone = d.join("clone.img");
    std::fs::copy(&disks[0], &clone).unwrap();
    let repo = d.join("repo");
    backup(&repo, "web1", &[&disks[0]]);
    backup(&repo, "web2", &[&disks[1]]);
    let both = backup(&repo, "pair", &[&disks[0], &disks[1]]);
    let cloned = backup(&repo, "twins", &[&disks[0], &clone]);
    for (id, second) in [(&both, &files[1]), (&cloned, &files[0])] {
        check_cli(&repo, id, "/disk-0/LV ubuntu-vg-root [disk-0] (8.4 MB)", &files[0]);
        check_cli(&repo, id, "/disk-1/LV ubuntu-vg-root [disk-1] (8.4 MB)", second);
    }
    let mnt = d.join("mnt");
    let _m = mount(&repo, None, &mnt);
    check_mount(&mnt.join("web1/latest/disk-0/LV ubuntu-vg-root (8.4 MB)"), &files[0]);
    check_mount(&mnt.join("web2/latest/disk-0/LV ubuntu-vg-root (8.4 MB)"), &files[1]);
    check_mount(&mnt.join("pair/latest/disk-1/LV ubuntu-vg-root [disk-1] (8.4 MB)"), &files[1]);
}

/// Adds a 4-extent snapshot `snap` of `vg/origin`, its COW store at
/// extent `pe` of pv0, the way LVM2 records one (a hidden COW LV and a
/// hidden `snapshot` segment naming origin and store): `lvcreate -s` needs
/// device-mapper, so the metadata goes in through vgcfgbackup and
/// vgcfgrestore, which checks it.
fn add_snapshot(lvm: &Lvm, dir: &Path, vg: &str, origin: &str, pe: u64) {
    let file = dir.join("vg.txt");
    let file_s = file.to_str().unwrap();
    lvm.cmd("vgcfgbackup", &["-q", "-f", file_s, vg]);
    let text = std::fs::read_to_string(&file).unwrap();
    let lvs = format!(
        "snap {{ id = \"snapAA-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa\" status = [\"READ\"] flags = [] segment_count = 1
  segment1 {{ start_extent = 0 extent_count = 4 type = \"striped\" stripe_count = 1 stripes = [\"pv0\", {pe}] }} }}
snapshot0 {{ id = \"snapBB-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa\" status = [\"READ\"] flags = [] segment_count = 1
  segment1 {{ start_extent = 0 extent_count = 4 type = \"snapshot\" chunk_size = 8 origin = \"{origin}\" cow_store = \"snap\" }} }}
"
    );
    let at = text.find("logical_volumes {").unwrap() + "logical_volumes {".len();
    std::fs::write(&file, format!("{}\n{lvs}{}", &text[..at], &text[at..])).unwrap();
    lvm.cmd("vgcfgrestore", &["--driverloaded", "n", "-q", "-f", file_s, vg]);
}

/// Feeds stdin to a command.
trait StdinBytes {
    fn stdin_bytes(&mut self, data: &[u8]) -> &mut Self;
}

impl StdinBytes for std::process::Command {
    fn stdin_bytes(&mut self, data: &[u8]) -> &mut Self {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(data, 0).unwrap();
        self.stdin(f)
    }
}
