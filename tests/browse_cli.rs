//! `ls`, `cat` and `get` from the command line, and the archive writers over
//! a tree with long names, symlinks and set times. Oracles: the source
//! bytes (SHA-256), unzip and tar.

mod common;
use backchain::archive;
use backchain::block::MemImage;
use backchain::tree::{self, Child, DirSource, Tree};
use backchain::volume::fs::Timestamp;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

const SECTOR: usize = 512;
const P1: (usize, usize) = (2048, 4095);

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// A GPT disk (sgdisk) with one 1 MiB partition of random bytes.
fn disk(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("disk.img");
    std::fs::File::create(&path).unwrap().set_len(4 << 20).unwrap();
    run(tool("sgdisk").args(["-n", &format!("1:{}:{}", P1.0, P1.1), "-c", "1:data"]).arg(&path));
    let mut d = std::fs::read(&path).unwrap();
    Rng::new(3).fill(&mut d[P1.0 * SECTOR..(P1.1 + 1) * SECTOR]);
    std::fs::write(&path, &d).unwrap();
    let part = d[P1.0 * SECTOR..(P1.1 + 1) * SECTOR].to_vec();
    (path, part)
}

fn ls_json(target: &str, path: &str, repo: &Path) -> Vec<Value> {
    let out = run(backchain().arg("--repo").arg(repo).args(["ls", target, path, "--json"]));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[test]
fn ls_cat_get_on_an_image_and_a_backup() {
    let t = tempdir();
    let (img, part) = disk(t.path());
    let repo = t.path().join("repo");
    let img_s = img.display().to_string();
    let root = ls_json(&img_s, "/", &repo);
    assert_eq!(root.len(), 1);
    let dir = root[0]["path"].as_str().unwrap().to_string();
    assert!(dir.starts_with("/Partition 1 - data"), "{dir}");
    assert_eq!(root[0]["type"], "directory");
    let files = ls_json(&img_s, &dir, &repo);
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["README.txt", "partition.img"]);
    assert_eq!(files[1]["size"], part.len());
    // Plain ls: like ls -l.
    let out = run(backchain().args(["ls", &img_s, &dir]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("-r--r--r--") && l.ends_with(" partition.img")), "{text}");

    let file = format!("{dir}/partition.img");
    let out = run(backchain().args(["cat", &img_s, &file]));
    assert_eq!(sha(&out.stdout), sha(&part));
    let got = t.path().join("p.img");
    run(backchain().args(["get", &img_s, &file, "-o"]).arg(&got));
    assert_eq!(sha(&std::fs::read(&got).unwrap()), sha(&part));

    // A folder needs an archive name.
    let err = run_fail(backchain().args(["get", &img_s, &dir, "-o"]).arg(t.path().join("out.bin")));
    assert!(err.contains("OUT.zip or OUT.tar.gz"), "{err}");
    let err = run_fail(backchain().args(["cat", &img_s, &dir]));
    assert!(err.contains("is a folder"), "{err}");
    let err = run_fail(backchain().args(["cat", &img_s, "/../etc/passwd"]));
    assert!(err.contains("'..'"), "{err}");
    for ext in ["zip", "tar.gz"] {
        let out = t.path().join(format!("p.{ext}"));
        run(backchain().args(["get", &img_s, &dir, "-o"]).arg(&out));
        let x = t.path().join(format!("x-{ext}"));
        std::fs::create_dir_all(&x).unwrap();
        if ext == "zip" {
            run(tool("unzip").arg("-q").arg(&out).arg("-d").arg(&x));
        } else {
            run(tool("tar").arg("-xzf").arg(&out).arg("-C").arg(&x));
        }
        assert_eq!(sha(&std::fs::read(x.join("partition.img")).unwrap()), sha(&part), "{ext}");
    }

    // The same disk as a backup: BACKUP_ID and BACKUP_ID:0.
    let out = run(backchain().arg("--repo").arg(&repo).args(["backup", "--vm", "v", "--disk", &img_s, "--json"]));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["backup_id"].as_str().unwrap().to_string();
    assert_eq!(ls_json(&id, "/", &repo)[0]["name"], "disk-0");
    let out = run(backchain().arg("--repo").arg(&repo).args(["cat", &format!("{id}:0"), &file]));
    assert_eq!(sha(&out.stdout), sha(&part));
    let err = run_fail(backchain().arg("--repo").arg(&repo).args(["ls", "nosuchbackup"]));
    assert!(err.contains("nosuchbackup"), "{err}");
}

/// A folder whose only child is a symlink, built when listed.
struct Links;
impl DirSource for Links {
    fn children(&self, tree: &Tree, dir: u64) -> tree::Result<Vec<Child>> {
        let ino = tree.lazy_child_symlink(dir, "link", "../deep/file.bin", Timestamp { secs: 1_600_000_000, nanos: 0 });
        Ok(vec![Child { name: b"link".to_vec(), ino }])
    }
    fn dynamic(&self) -> bool {
        false
    }
}

#[test]
fn archives_keep_names_bytes_symlinks_and_times() {
    let t = tempdir();
    let when = Timestamp { secs: 1_700_000_000, nanos: 0 };
    let tr = Tree::new(when);
    let mut rng = Rng::new(11);
    let long = "n".repeat(120);
    let deep = tr.add_dir(tree::ROOT, &long, when, None);
    let deeper = tr.add_dir(deep, &format!("{long}-2"), when, None);
    let mut random = vec![0u8; 3 << 20];
    rng.fill(&mut random);
    let text = compressible(&mut rng, 1 << 20);
    tr.add_file(deeper, &format!("{long}-random.bin"), when, Arc::new(MemImage(random.clone())));
    tr.add_file(deeper, "text ünï.txt", when, Arc::new(MemImage(text.clone())));
    tr.add_file(tree::ROOT, "empty", when, Arc::new(MemImage(Vec::new())));
    tr.add_lazy_dir(tree::ROOT, "links", when, Arc::new(Links));

    let cancel = AtomicBool::new(false);
    let zip = archive::write_zip(&tr, tree::ROOT, Vec::new(), &cancel).unwrap();
    let tgz = archive::write_tar_gz(&tr, tree::ROOT, Vec::new(), &cancel).unwrap();
    // Deflate where it pays: the compressible MiB shrinks the zip.
    assert!(zip.len() < random.len() + text.len() - 100_000, "zip {} bytes", zip.len());
    for (ext, data) in [("zip", &zip), ("tar.gz", &tgz)] {
        let f = t.path().join(format!("a.{ext}"));
        std::fs::write(&f, data).unwrap();
        let x = t.path().join(format!("x-{ext}"));
        std::fs::create_dir_all(&x).unwrap();
        if ext == "zip" {
            run(tool("unzip").arg("-tq").arg(&f));
            run(tool("unzip").arg("-q").arg(&f).arg("-d").arg(&x));
        } else {
            run(tool("tar").arg("-xzpf").arg(&f).arg("-C").arg(&x));
        }
        let d = x.join(&long).join(format!("{long}-2"));
        let rf = d.join(format!("{long}-random.bin"));
        assert_eq!(sha(&std::fs::read(&rf).unwrap()), sha(&random), "{ext}");
        assert_eq!(sha(&std::fs::read(d.join("text ünï.txt")).unwrap()), sha(&text), "{ext}");
        assert_eq!(std::fs::metadata(&rf).unwrap().mtime(), when.secs, "{ext}");
        assert_eq!(std::fs::metadata(&rf).unwrap().permissions().mode() & 0o777, 0o444, "{ext}");
        assert_eq!(std::fs::read(x.join("empty")).unwrap().len(), 0);
        assert_eq!(std::fs::read_link(x.join("links/link")).unwrap(), Path::new("../deep/file.bin"), "{ext}");
    }
    // A cancelled archive stops with an error.
    let cancel = AtomicBool::new(true);
    assert!(archive::write_zip(&tr, tree::ROOT, Vec::new(), &cancel).is_err());
    // A file is not a folder.
    let file = tr.resolve("empty").unwrap().ino;
    assert!(archive::write_tar_gz(&tr, file, Vec::new(), &AtomicBool::new(false)).is_err());
}
