//! `backchain nbd-export`: an image served in the foreground until SIGINT,
//! read by qemu-img convert and by our own NBD client (eight threads over
//! one connection), and its refusals (non-loopback address, a missing image).

mod common;

use backchain::block::{Alloc, ReadAt};
use backchain::nbd::{NbdDisk, NbdUri};
use common::{backchain, qemu_img, qemu_io, qemu_raw, run, run_fail, tempdir, tool};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;

#[test]
fn nbd_export_serves_an_image_until_sigint() {
    let dir = tempdir();
    let img = dir.path().join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "5M"]);
    let cmds = ["write -P 0x61 0 300k", "write -P 0x62 2M 4k", "write -z 4M 64k"];
    qemu_io(&img, "qcow2", &cmds.map(String::from));
    let want = qemu_raw(&img, dir.path());
    let sock = dir.path().join("nbd.sock");
    for listen in ["127.0.0.1:0".to_string(), format!("unix:{}", sock.display())] {
        let mut child = backchain()
            .args(["nbd-export", img.to_str().unwrap(), "--listen", &listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let uri = line.trim().strip_prefix("disk-0 ").unwrap_or_else(|| panic!("{line}")).to_string();
        let out = dir.path().join("out.raw");
        run(tool("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &uri]).arg(&out));
        assert!(std::fs::read(&out).unwrap() == want, "{uri}");

        let disk = Arc::new(NbdDisk::open(&NbdUri::parse(&uri).unwrap()).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let (disk, want) = (disk.clone(), want.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 70_001];
                    for i in (t..70).step_by(8) {
                        let off = i * 70_001;
                        disk.read_exact_at(off, &mut buf).unwrap();
                        assert!(buf[..] == want[off as usize..off as usize + buf.len()], "at {off}");
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(disk.status(0, 5 << 20).unwrap().alloc, Alloc::Data);
        drop(disk);

        run(tool("kill").args(["-INT", &child.id().to_string()]));
        let st = child.wait().unwrap();
        assert!(st.success(), "{listen}: {st}");
        assert!(!sock.exists(), "the unix socket is removed on exit");
    }
}

#[test]
fn nbd_export_refuses_what_it_cannot_do_safely() {
    let dir = tempdir();
    let img = dir.path().join("disk.raw");
    std::fs::write(&img, vec![0u8; 65536]).unwrap();
    let e = run_fail(backchain().args(["nbd-export", img.to_str().unwrap(), "--listen", "0.0.0.0:0"]));
    assert!(e.contains("only on loopback"), "{e}");
    let e = run_fail(backchain().args(["nbd-export", dir.path().join("nope.qcow2").to_str().unwrap()]));
    assert!(e.contains("no such image"), "{e}");
}
