//! NBD servers and clients as test peers: qemu-nbd and nbdkit started on a
//! unix socket or a loopback port, polled until they accept, killed on drop.
//! Included with `#[path = "common/nbd_peer.rs"] mod nbd_peer;` next to `mod common;`.
#![allow(dead_code)]

use crate::common::{run, tool};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server process, killed when dropped.
pub struct Peer {
    child: Child,
    pub uri: String,
}

impl Peer {
    /// Starts `cmd` (already told where to listen) and waits until `ready`
    /// connects, for at most 20 s.
    pub fn start(mut cmd: Command, uri: String, ready: impl Fn() -> bool) -> Peer {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut peer = Peer { child, uri };
        let t0 = Instant::now();
        while !ready() {
            if let Some(st) = peer.child.try_wait().unwrap() {
                panic!("{cmd:?} exited before it listened: {st}");
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{cmd:?} never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        peer
    }

    /// `cmd` with `-k`/`-U` style arguments added by the caller, on `socket`.
    pub fn on_socket(cmd: Command, socket: &Path, export: &str) -> Peer {
        let uri = format!("nbd+unix:///{export}?socket={}", socket.display());
        let s = socket.to_path_buf();
        Peer::start(cmd, uri, move || std::os::unix::net::UnixStream::connect(&s).is_ok())
    }

    pub fn on_port(cmd: Command, port: u16, export: &str) -> Peer {
        let uri = format!("nbd://127.0.0.1:{port}/{export}");
        Peer::start(cmd, uri, move || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// qemu-nbd serving `image` (format `fmt`) read-only on a unix socket,
/// with extra arguments (`-B BITMAP`...).
pub fn qemu_nbd(image: &Path, fmt: &str, socket: &Path, extra: &[&str]) -> Peer {
    let mut c = tool("qemu-nbd");
    c.args(["-r", "-t", "-f", fmt, "-k"]).arg(socket).args(extra).arg(image);
    Peer::on_socket(c, socket, "")
}

/// nbdkit in the foreground on a unix socket: `args` are the plugin (or
/// `--filter=...` first) and its parameters.
pub fn nbdkit(socket: &Path, args: &[&str]) -> Peer {
    let mut c = tool("nbdkit");
    c.args(["-f", "--exit-with-parent", "-U"]).arg(socket).args(args);
    Peer::on_socket(c, socket, "")
}

/// `nbdcopy URI FILE`: the bytes of an export according to libnbd.
pub fn nbdcopy_bytes(uri: &str, dir: &Path) -> Vec<u8> {
    let out: PathBuf = dir.join("nbdcopy.out");
    let _ = std::fs::remove_file(&out);
    std::fs::File::create(&out).unwrap();
    run(tool("nbdcopy").arg(uri).arg(&out));
    let data = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    data
}

/// `nbdinfo --map --json URI`: (offset, length, type) per extent.
pub fn nbdinfo_map(uri: &str) -> Vec<(u64, u64, u64)> {
    let out = run(tool("nbdinfo").args(["--map", "--json", uri]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nbdinfo JSON");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap(), e["type"].as_u64().unwrap()))
        .collect()
}

/// Appends a range to sorted ranges, merging it with the last if they touch.
pub fn push_merged(out: &mut Vec<Range<u64>>, r: Range<u64>) {
    match out.last_mut() {
        Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
        _ => out.push(r),
    }
}
