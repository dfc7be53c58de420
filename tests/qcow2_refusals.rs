//! Images the reader must refuse, each with one clear error: through the
//! library (the error message) and through the CLI (`backchain export` and
//! `backchain info` exit non-zero with one line on stderr, never a panic).

mod common;
use backchain::block::ReadAt;
use backchain::qcow2::{Chain, OpenOptions};
use common::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 1 MiB QCOW2 image with data in its first and last clusters.
fn image(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let mut c = tool("qemu-img");
    c.args(["create", "-q", "-f", "qcow2"]).args(extra).arg(&p).arg("1M");
    run(&mut c);
    p
}

fn fill(img: &Path) {
    qemu_io(img, "qcow2", &["write -P 0x5a 0 64k".into(), "write -P 0xa5 960k 64k".into()]);
}

fn patch(img: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn header_u64(img: &Path, at: usize) -> u64 {
    let b = std::fs::read(img).unwrap();
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Chain::open fails, and its message holds every one of `want`.
fn open_refused(img: &Path, opts: &OpenOptions, want: &[&str]) -> String {
    let msg = match Chain::open(img, opts) {
        Ok(_) => panic!("{}: opened, but should be refused ({want:?})", img.display()),
        Err(e) => e.to_string(),
    };
    for w in want {
        assert!(msg.contains(w), "{}: error {msg:?} lacks {w:?}", img.display());
    }
    msg
}

/// The image opens, but reading all of it fails with a message holding `want`.
fn read_refused(img: &Path, want: &[&str]) {
    let chain = Chain::open(img, &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; chain.size() as usize];
    let msg = chain.read_exact_at(0, &mut buf).expect_err("read should fail").to_string();
    for w in want {
        assert!(msg.contains(w), "{}: error {msg:?} lacks {w:?}", img.display());
    }
}

/// `backchain ARGS` fails with exactly one line on stderr holding `want`.
fn cli_refused(args: &[&str], want: &[&str]) {
    let out = backchain().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "backchain {args:?} should fail");
    assert_eq!(out.status.code(), Some(1), "backchain {args:?}: {err}");
    assert!(!err.contains("panicked"), "backchain {args:?} panicked: {err}");
    assert_eq!(err.lines().count(), 1, "backchain {args:?}: not one line: {err}");
    for w in want {
        assert!(err.contains(w), "backchain {args:?}: {err:?} lacks {w:?}");
    }
}

/// Both CLI commands refuse the image.
fn cli_refuses_image(img: &Path, want: &[&str]) {
    let out = img.with_extension("out.raw");
    cli_refused(&["export", s(img), "--format", "raw", "-o", s(&out)], want);
    let out = img.with_extension("out.qcow2");
    cli_refused(&["export", s(img), "--format", "qcow2", "-o", s(&out)], want);
    cli_refused(&["info", s(img)], want);
}

/// Both CLI exports fail while reading (the image itself opens).
fn cli_export_fails(img: &Path, want: &[&str]) {
    let out = img.with_extension("out.raw");
    cli_refused(&["export", s(img), "--format", "raw", "-o", s(&out)], want);
    let out = img.with_extension("out.qcow2");
    cli_refused(&["export", s(img), "--format", "qcow2", "-o", s(&out)], want);
}

#[test]
fn luks_encryption() {
    let d = tempdir();
    let img = image(
        d.path(),
        "luks.qcow2",
        &[
            "--object",
            "secret,id=sec0,data=backchain",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        ],
    );
    let want = ["encrypted image", "LUKS"];
    open_refused(&img, &OpenOptions::default(), &want);
    cli_refuses_image(&img, &want);
}

#[test]
fn aes_encryption() {
    let d = tempdir();
    let img = image(
        d.path(),
        "aes.qcow2",
        &["--object", "secret,id=sec0,data=backchain", "-o", "encrypt.format=aes,encrypt.key-secret=sec0"],
    );
    assert_eq!(qemu_info(&img)["encrypted"], true);
    let want = ["encrypted image", "AES"];
    open_refused(&img, &OpenOptions::default(), &want);
    cli_refuses_image(&img, &want);
}

#[test]
fn unknown_incompatible_bit() {
    let d = tempdir();
    for bit in [5u32, 33, 63] {
        let img = image(d.path(), &format!("incompat{bit}.qcow2"), &[]);
        fill(&img);
        let v = header_u64(&img, 72) | 1 << bit;
        patch(&img, 72, &v.to_be_bytes());
        let want = ["unknown incompatible feature", &format!("bit {bit}")];
        open_refused(&img, &OpenOptions::default(), &want);
        cli_refuses_image(&img, &want);
    }
}

#[test]
fn external_data_file() {
    let d = tempdir();
    let data = d.path().join("data.raw");
    let img = image(d.path(), "ext.qcow2", &["-o", &format!("data_file={}", data.display())]);
    let want = ["external data file"];
    open_refused(&img, &OpenOptions::default(), &want);
    cli_refuses_image(&img, &want);
}

#[test]
fn backing_loop() {
    let d = tempdir();
    let a = image(d.path(), "a.qcow2", &[]);
    let b = image(d.path(), "b.qcow2", &["-b", "a.qcow2", "-F", "qcow2"]);
    qemu_img(&["rebase", "-u", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", s(&a)]);
    let want = ["backing chain loops back to"];
    open_refused(&a, &OpenOptions::default(), &want);
    open_refused(&b, &OpenOptions::default(), &want);
    cli_refuses_image(&a, &want);
    // The same loop spelled differently: ./b.qcow2 and ../DIR/a.qcow2.
    let dir = d.path().file_name().unwrap().to_str().unwrap();
    qemu_img(&["rebase", "-u", "-f", "qcow2", "-b", "./b.qcow2", "-F", "qcow2", s(&a)]);
    qemu_img(&["rebase", "-u", "-f", "qcow2", "-b", &format!("../{dir}/a.qcow2"), "-F", "qcow2", s(&b)]);
    open_refused(&a, &OpenOptions::default(), &want);
    cli_refuses_image(&b, &want);
    // An image naming itself.
    let c = image(d.path(), "c.qcow2", &[]);
    qemu_img(&["rebase", "-u", "-f", "qcow2", "-b", "c.qcow2", "-F", "qcow2", s(&c)]);
    open_refused(&c, &OpenOptions::default(), &want);
    cli_refuses_image(&c, &want);
}

/// With a confinement root, a backing file outside it is refused however it
/// is named: absolute path, `..`, or a symlink inside the root pointing out.
/// The same chains open without confinement, which shows the refusal is the
/// confinement's.
#[test]
fn backing_path_escaping_the_confinement_root() {
    let d = tempdir();
    let root = d.path().join("repo");
    std::fs::create_dir(&root).unwrap();
    let outside = image(d.path(), "secret.qcow2", &[]);
    fill(&outside);
    let confined = OpenOptions { confine_to: Some(root.clone()), ..Default::default() };
    let want = ["outside the confinement root"];

    let abs = image(&root, "abs.qcow2", &["-b", s(&outside), "-F", "qcow2"]);
    let rel = image(&root, "rel.qcow2", &["-b", "../secret.qcow2", "-F", "qcow2"]);
    std::os::unix::fs::symlink(&outside, root.join("link.qcow2")).unwrap();
    let link = image(&root, "via-link.qcow2", &["-b", "link.qcow2", "-F", "qcow2"]);
    // The escape one level down: inside a sub-folder, `../..`.
    std::fs::create_dir(root.join("vm")).unwrap();
    let deep = image(&root.join("vm"), "deep.qcow2", &["-b", "../../secret.qcow2", "-F", "qcow2"]);
    // A raw backing file outside, too.
    std::fs::write(d.path().join("secret.raw"), vec![7u8; 1 << 20]).unwrap();
    let raw = image(&root, "raw.qcow2", &["-b", "../secret.raw", "-F", "raw"]);
    for img in [&abs, &rel, &link, &deep, &raw] {
        open_refused(img, &confined, &want);
        assert_eq!(Chain::open(img, &OpenOptions::default()).unwrap().layers().len(), 2);
    }
    // The top image itself outside the root (directly, and via a symlink).
    open_refused(&outside, &confined, &["outside the confinement root"]);
    std::os::unix::fs::symlink(&outside, root.join("top-link.qcow2")).unwrap();
    open_refused(&root.join("top-link.qcow2"), &confined, &["outside the confinement root"]);
    // A chain that stays inside opens, through `..` inside the root.
    image(&root, "inner.qcow2", &[]);
    let ok = image(&root.join("vm"), "ok.qcow2", &["-b", "../inner.qcow2", "-F", "qcow2"]);
    assert_eq!(Chain::open(&ok, &confined).unwrap().layers().len(), 2);
}

#[test]
fn chain_deeper_than_max_depth() {
    let d = tempdir();
    let mut prev: Option<String> = None;
    let mut top = PathBuf::new();
    for i in 0..6 {
        let name = format!("l{i}.qcow2");
        top = match &prev {
            Some(p) => image(d.path(), &name, &["-b", p, "-F", "qcow2"]),
            None => image(d.path(), &name, &[]),
        };
        prev = Some(name);
    }
    let opts = |max_depth| OpenOptions { max_depth, ..Default::default() };
    open_refused(&top, &opts(5), &["deeper than the limit of 5"]);
    open_refused(&top, &opts(1), &["deeper than the limit of 1"]);
    assert_eq!(Chain::open(&top, &opts(6)).unwrap().layers().len(), 6);
}

/// Truncated images: inside the header, inside the L1 table, and inside
/// the data (the last data cluster's L2 entry points past the end).
#[test]
fn truncated_file() {
    let d = tempdir();
    let img = image(d.path(), "t.qcow2", &[]);
    fill(&img);
    let full = std::fs::read(&img).unwrap();

    for (len, want) in [(0usize, "too short"), (50, "too short"), (80, "too short")] {
        let p = d.path().join(format!("t{len}.qcow2"));
        std::fs::write(&p, &full[..len]).unwrap();
        open_refused(&p, &OpenOptions::default(), &[want]);
        if len >= 4 {
            // Shorter files have no magic: the CLI takes them as raw disks.
            cli_refuses_image(&p, &[want]);
        }
    }
    // Cut inside the L1 table.
    let l1 = header_u64(&img, 40) as usize;
    let p = d.path().join("t-l1.qcow2");
    std::fs::write(&p, &full[..l1 + 4]).unwrap();
    open_refused(&p, &OpenOptions::default(), &["L1 table", "past the end of the file"]);
    cli_refuses_image(&p, &["L1 table", "past the end of the file"]);
    // Cut before the last data cluster: the image opens, reads fail.
    let qmap = qemu_map(&img);
    let last = qmap.iter().filter_map(|e| e["offset"].as_u64()).max().unwrap() as usize;
    let p = d.path().join("t-data.qcow2");
    std::fs::write(&p, &full[..last]).unwrap();
    read_refused(&p, &["past the end of the file"]);
    cli_export_fails(&p, &["past the end of the file"]);
    // The clusters before the cut still read.
    let chain = Chain::open(&p, &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    chain.read_exact_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5a));
}

/// An L1 entry pointing past the end of the file: a clear error on read.
#[test]
fn l2_table_offset_past_end_of_file() {
    let d = tempdir();
    let img = image(d.path(), "l2.qcow2", &[]);
    fill(&img);
    let l1 = header_u64(&img, 40);
    let bogus: u64 = (1 << 63) | (1 << 40);
    patch(&img, l1, &bogus.to_be_bytes());
    let want = ["L2 table at 0x10000000000", "past the end of the file"];
    read_refused(&img, &want);
    cli_export_fails(&img, &want);
    // Not cluster aligned.
    let bogus: u64 = (1 << 63) | 0x10200;
    patch(&img, l1, &bogus.to_be_bytes());
    read_refused(&img, &["not cluster aligned"]);
    cli_export_fails(&img, &["not cluster aligned"]);
}

/// A header claiming a huge L1 table (and the huge disk it maps): an error
/// before any allocation of that size.
#[test]
fn huge_l1_table() {
    let d = tempdir();
    let img = image(d.path(), "huge.qcow2", &[]);
    // 2^56 bytes at 64 KiB clusters need 2^27 L1 entries: a 1 GiB table.
    patch(&img, 24, &(1u64 << 56).to_be_bytes());
    patch(&img, 36, &(1u32 << 27).to_be_bytes());
    let want = ["L1 table of 1073741824 bytes is above the limit"];
    open_refused(&img, &OpenOptions::default(), &want);
    cli_refuses_image(&img, &want);
    // The largest l1_size: refused the same way.
    patch(&img, 36, &u32::MAX.to_be_bytes());
    open_refused(&img, &OpenOptions::default(), &["above the limit"]);
    // Within the limit, but the table would lie past the end of the file.
    patch(&img, 24, &(1u64 << 50).to_be_bytes());
    patch(&img, 36, &(1u32 << 21).to_be_bytes());
    let want = ["L1 table", "past the end of the file"];
    open_refused(&img, &OpenOptions::default(), &want);
    cli_refuses_image(&img, &want);
    // A virtual size above what QCOW2 can address.
    patch(&img, 24, &u64::MAX.to_be_bytes());
    open_refused(&img, &OpenOptions::default(), &["virtual size"]);
    cli_refuses_image(&img, &["virtual size"]);
}

/// Backing names that are not files, and a backing file that is missing.
#[test]
fn backing_names_that_are_not_files() {
    let d = tempdir();
    let base = image(d.path(), "base.qcow2", &[]);
    let img = image(d.path(), "top.qcow2", &["-b", "base.qcow2", "-F", "qcow2"]);
    let json = format!(r#"json:{{"driver":"qcow2","file":{{"driver":"file","filename":"{}"}}}}"#, base.display());
    for (name, want) in [
        (json.as_str(), "json: pseudo-protocol"),
        ("nbd://127.0.0.1:10809/disk", "network protocol"),
        ("missing.qcow2", "not found"),
    ] {
        qemu_img(&["rebase", "-u", "-f", "qcow2", "-b", name, "-F", "qcow2", s(&img)]);
        open_refused(&img, &OpenOptions::default(), &[want]);
        cli_refuses_image(&img, &[want]);
    }
}

/// Random damage to the metadata of real images (header, L1 and L2 tables,
/// compressed descriptors, subcluster bitmaps): opening and reading give
/// data or an error, never a panic or a hang.
#[test]
fn damaged_metadata_never_panics() {
    use backchain::block::MemImage;
    use std::sync::Arc;
    let d = tempdir();
    let mut rng = Rng::new(31);
    let variants: [(&str, &[&str]); 4] = [
        ("plain", &["-o", "cluster_size=65536"]),
        ("extl2", &["-o", "extended_l2=on,cluster_size=131072"]),
        ("v2-512", &["-o", "compat=0.10,cluster_size=512"]),
        ("zstd-4k", &["-o", "compression_type=zstd,cluster_size=4096"]),
    ];
    for (name, opts) in variants {
        let img = image(d.path(), &format!("{name}.qcow2"), opts);
        let cs = 1u64 << u32::from_be_bytes(std::fs::read(&img).unwrap()[20..24].try_into().unwrap());
        let mut cmds = vec![format!("write -c -P 0x11 0 {cs}"), format!("write -c -P 0x22 {cs} {cs}")];
        cmds.extend(["write -P 0x33 300k 100k".into(), "write -z 320k 8k".into(), "write -P 0x44 1000k 24k".into()]);
        qemu_io(&img, "qcow2", &cmds);
        let orig = std::fs::read(&img).unwrap();
        let be64 = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
        // Where the metadata is: header, L1 table, and the L2 tables it names.
        let l1 = be64(&orig, 40) as usize;
        let l1_len = u32::from_be_bytes(orig[36..40].try_into().unwrap()) as usize * 8;
        let mut regions = vec![(0usize, 512usize.min(orig.len())), (l1, l1_len)];
        for i in 0..l1_len / 8 {
            let l2 = (be64(&orig, l1 + i * 8) & 0x00ff_ffff_ffff_fe00) as usize;
            if l2 != 0 {
                regions.push((l2, (cs as usize).min(orig.len() - l2)));
            }
        }
        let interesting = [0u64, u64::MAX, 1 << 63, 1 << 62, (1 << 62) | 0x3fff_ffff_ffff_ffff, 1, 1 << 40, 0x200];
        for i in 0..300 {
            let mut b = orig.clone();
            let mut what = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let (start, len) = regions[rng.below(regions.len() as u64) as usize];
                let at = start + rng.below(len as u64) as usize;
                if rng.below(2) == 0 && at + 8 <= b.len() {
                    let v = interesting[rng.below(interesting.len() as u64) as usize];
                    let at = at & !7;
                    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
                    what.push(format!("u64 {v:#x} at {at}"));
                } else {
                    let v = rng.below(256) as u8;
                    b[at] = v;
                    what.push(format!("byte {v:#x} at {at}"));
                }
            }
            let r = std::panic::catch_unwind(|| {
                let Ok(chain) = Chain::from_reader(Arc::new(MemImage(b))) else { return };
                let size = chain.size();
                let mut buf = vec![0u8; (1 << 20).min(size) as usize];
                let mut off = 0;
                while off < size.min(4 << 20) {
                    let n = (buf.len() as u64).min(size - off) as usize;
                    let _ = chain.read_exact_at(off, &mut buf[..n]);
                    off += n as u64;
                }
                let mut small = [0u8; 777];
                for k in 0..20u64 {
                    let at = size / 20 * k;
                    let n = (small.len() as u64).min(size - at) as usize;
                    let _ = chain.read_exact_at(at, &mut small[..n]);
                }
                let _ = chain.status(0, size);
            });
            assert!(r.is_ok(), "{name}: damage {i} ({}) panicked", what.join(", "));
        }
    }
}

/// A backing "file" that is a FIFO (opening it would block forever), a
/// directory, or a socket: a clear error, promptly.
#[test]
fn backing_file_that_is_not_a_file() {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    let d = tempdir();
    run(tool("mkfifo").arg(d.path().join("fifo")));
    std::fs::create_dir(d.path().join("folder")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(d.path().join("sock")).unwrap();
    for (name, fmt) in [("fifo", "raw"), ("folder", "raw"), ("sock", "raw"), ("fifo", "qcow2")] {
        let img = image(d.path(), &format!("over-{name}-{fmt}.qcow2"), &[]);
        qemu_img(&["rebase", "-u", "-f", "qcow2", "-b", name, "-F", fmt, s(&img)]);
        let want = "not a regular file or block device";
        let (tx, rx) = mpsc::channel();
        let p = img.clone();
        std::thread::spawn(move || {
            tx.send(Chain::open(&p, &OpenOptions::default()).map(|_| ()).map_err(|e| e.to_string()))
        });
        let r = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("{name}: Chain::open hangs"));
        let msg = r.expect_err("a backing file that is not a file must be refused");
        assert!(msg.contains(want), "{name}: {msg}");
        // The CLI, under a deadline.
        let out = img.with_extension("out.raw");
        let mut child = backchain()
            .arg("export")
            .arg(&img)
            .args(["--format", "raw", "-o"])
            .arg(&out)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("{name}: backchain export hangs");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cli_refused(&["export", s(&img), "--format", "raw", "-o", s(&out)], &[want]);
    }
}

/// The default depth limit (1000 images) through the CLI: a 1000-deep chain
/// exports, a 1001-deep one is refused with one line.
#[test]
fn cli_default_depth_limit() {
    let d = tempdir();
    let name = |i: usize| format!("l{i:04}.qcow2");
    let base = image(d.path(), &name(0), &["-o", "cluster_size=512"]);
    qemu_io(&base, "qcow2", &["write -P 0x6b 1000 3000".into()]);
    let first = image(d.path(), &name(1), &["-o", "cluster_size=512", "-b", &name(0), "-F", "qcow2"]);
    // Every overlay is this one with another backing name of the same length.
    let template = std::fs::read(&first).unwrap();
    let at = template.windows(11).position(|w| w == name(0).as_bytes()).unwrap();
    for i in 2..=1000 {
        let mut b = template.clone();
        b[at..at + 11].copy_from_slice(name(i - 1).as_bytes());
        std::fs::write(d.path().join(name(i)), b).unwrap();
    }
    let expected = qemu_raw(&base, d.path());
    let top = d.path().join(name(999));
    let out = d.path().join("deep.raw");
    run(backchain().arg("export").arg(&top).args(["--format", "raw", "-o"]).arg(&out));
    assert!(std::fs::read(&out).unwrap() == expected);
    let top = d.path().join(name(1000));
    let ours = d.path().join("too-deep.raw");
    cli_refused(&["export", s(&top), "--format", "raw", "-o", s(&ours)], &["deeper than the limit of 1000"]);
    cli_refused(&["info", s(&top)], &["deeper than the limit of 1000"]);
}

/// The zero flag is reserved in version 2 L2 entries (QEMU reports such an
/// image as corrupt): reading that cluster is an error, not data or zeros.
#[test]
fn zero_flag_in_a_version_2_image() {
    let d = tempdir();
    let img = image(d.path(), "v2.qcow2", &["-o", "compat=0.10"]);
    fill(&img);
    let l1 = header_u64(&img, 40);
    let l2 = header_u64(&img, l1 as usize) & 0x00ff_ffff_ffff_fe00;
    let entry = header_u64(&img, l2 as usize);
    assert_ne!(entry & 0x00ff_ffff_ffff_fe00, 0, "the first cluster should hold data");
    patch(&img, l2, &(entry | 1).to_be_bytes());
    let want = ["zero flag", "version 2"];
    read_refused(&img, &want);
    cli_export_fails(&img, &want);
    // QEMU refuses to convert it as well.
    let out = tool("qemu-img").args(["convert", "-O", "raw"]).arg(&img).arg(d.path().join("q.raw")).output().unwrap();
    assert!(!out.status.success());
    // The other clusters still read.
    let chain = Chain::open(&img, &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    chain.read_exact_at(960 << 10, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xa5));
}
