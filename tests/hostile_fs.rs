//! Filesystems whose guest owner is hostile (issue 12, items 2 and 9): names
//! patched to `../../x.t`, `/tmp/pw` and `a"\r\nX-Evil` inside an ext4 folder,
//! and a file whose size was set to 2^64 - 1 with debugfs. Such entries must
//! never reach a listing or an archive under any name, and an impossible size
//! is corruption for that file only, never an endless stream of zeros.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// An ext4 volume (no table) built by mkfs.ext4 -d from a folder holding
/// `keep.txt` and one file per name in `placeholders`; the placeholders'
/// names are then overwritten in the image by `hostile` (same lengths).
fn ext4_with_names(dir: &Path, placeholders: &[&str], hostile: &[&[u8]]) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    write(&src.join("keep.txt"), b"kept\n");
    for p in placeholders {
        write(&src.join(p), b"secret\n");
    }
    let img = dir.join("fs.img");
    std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
    // No metadata_csum and no dir_index: the patched folder block stays valid.
    run(tool("mkfs.ext4").args(["-q", "-F", "-O", "^metadata_csum,^dir_index", "-d"]).arg(&src).arg(&img));
    let mut data = std::fs::read(&img).unwrap();
    for (p, h) in placeholders.iter().zip(hostile) {
        assert_eq!(p.len(), h.len());
        let at = data.windows(p.len()).position(|w| w == p.as_bytes()).expect("placeholder name in the image");
        data[at..at + p.len()].copy_from_slice(h);
    }
    std::fs::write(&img, &data).unwrap();
    img
}

const PLACEHOLDERS: [&str; 3] = ["AAAAAAAAA", "BBBBBBB", "CCCCCCCCCC"];
const HOSTILE: [&[u8]; 3] = [b"../../x.t", b"/tmp/pw", b"a\"\r\nX-Evil"];

#[test]
fn names_that_would_leave_their_folder_are_left_out_and_never_archived() {
    let t = tempdir();
    let img = ext4_with_names(t.path(), &PLACEHOLDERS, &HOSTILE);
    let img_s = img.display().to_string();
    let repo = t.path().join("repo");
    let out = run(backchain().arg("--repo").arg(&repo).args(["ls", &img_s, "/", "--json"]));
    let root: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vol = root[0]["path"].as_str().unwrap().to_string();
    let out = run(backchain().arg("--repo").arg(&repo).args(["ls", &img_s, &vol, "--json"]));
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"keep.txt"), "{names:?}");
    // The CR/LF name has no '/' and is a legal (if odd) name; the two that
    // would escape are gone.
    assert!(names.iter().all(|n| !n.contains('/')), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.contains("x.t") || n.contains("pw")).count(), 0, "{names:?}");

    for fmt in ["zip", "tar.gz"] {
        let out = t.path().join(format!("n.{fmt}"));
        run(backchain().arg("--repo").arg(&repo).args(["get", &img_s, &vol, "-o"]).arg(&out));
        let list = if fmt == "zip" {
            run(tool("unzip").arg("-Z1").arg(&out)).stdout
        } else {
            run(tool("tar").arg("-tzf").arg(&out)).stdout
        };
        let list = String::from_utf8_lossy(&list).into_owned();
        assert!(list.contains("keep.txt"), "{fmt}: {list}");
        for line in list.lines() {
            assert!(!line.starts_with('/') && !line.split('/').any(|c| c == ".."), "{fmt}: {line}");
        }
    }
}

#[test]
fn a_size_past_the_largest_file_is_corruption_for_that_file_only() {
    let t = tempdir();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("home")).unwrap();
    write(&src.join("home/big.bin"), &[7u8; 5000]);
    write(&src.join("home/fine.txt"), b"fine\n");
    let img = t.path().join("fs.img");
    std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
    run(tool("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&img));
    run(tool("debugfs").args(["-w", "-R", "sif /home/big.bin size 0xffffffffffffffff"]).arg(&img));
    let img_s = img.display().to_string();
    let repo = t.path().join("repo");
    let out = run(backchain().arg("--repo").arg(&repo).args(["ls", &img_s, "/", "--json"]));
    let root: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vol = root[0]["path"].as_str().unwrap().to_string();
    let home = format!("{vol}/home");
    let out = run(backchain().arg("--repo").arg(&repo).args(["ls", &img_s, &home, "--json"]));
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fine.txt"]);
    let out = run(backchain().arg("--repo").arg(&repo).args(["cat", &img_s, &format!("{home}/fine.txt")]));
    assert_eq!(out.stdout, b"fine\n");
    let err = run_fail(backchain().arg("--repo").arg(&repo).args(["cat", &img_s, &format!("{home}/big.bin")]));
    assert!(err.contains("18446744073709551615") && err.contains("largest file"), "{err}");
    // The folder still archives, without the corrupt file.
    let out = t.path().join("home.tar.gz");
    run(backchain().arg("--repo").arg(&repo).args(["get", &img_s, &home, "-o"]).arg(&out));
    let list = String::from_utf8(run(tool("tar").arg("-tzf").arg(&out)).stdout).unwrap();
    assert!(list.contains("fine.txt") && !list.contains("big.bin"), "{list}");
}
