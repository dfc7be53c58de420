//! backchain's NBD server against real clients: qemu-img convert/compare,
//! qemu-io, nbdcopy and nbdinfo. A read-only export of a QCOW2 chain opened
//! by our reader must equal qemu-img's view of the chain; a writable
//! in-memory export written by nbdcopy and qemu-io reads back; bad requests
//! get NBD errors and the connection keeps serving.

mod common;
#[path = "common/nbd_peer.rs"]
mod nbd_peer;
#[path = "common/nbd_raw.rs"]
mod nbd_raw;

use backchain::nbd::consts::*;
use backchain::nbd::handshake::OptionHeader;
use backchain::nbd::option::ExportRequest;
use backchain::nbd::reply::{ReplyHeader, parse as parse_reply};
use backchain::nbd::request::Request;
use backchain::nbd::server::{Export, ExportTable, Listener, MemExport, ReadOnly, run};
use backchain::qcow2::{Chain, OpenOptions};
use common::{qemu_img, qemu_io, qemu_raw, run as run_cmd, tempdir, tool};
use nbd_peer::{nbdcopy_bytes, nbdinfo_map, push_merged};
use nbd_raw::option_reply;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// The server on a runtime of its own, stopped (and waited for) on drop.
struct Server {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(addr: &str, table: ExportTable) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(Listener::bind(addr)).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(run(listener, table, async {
                let _ = stopped.await;
            }))
            .unwrap();
        });
        Server { addr, stop: Some(stop), thread: Some(thread) }
    }

    fn uri(&self, export: &str) -> String {
        match self.addr.strip_prefix("unix:") {
            Some(p) => format!("nbd+unix:///{export}?socket={p}"),
            None => format!("nbd://{}/{export}", self.addr),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// A two-image chain: data, zeros over data, a discard, sub-cluster writes.
fn chain(dir: &Path) -> std::path::PathBuf {
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "6M"]);
    let cmds = ["write -P 0x11 0 1M", "write -P 0x22 2M 512k", "write -P 0x33 5M 64k"];
    qemu_io(&base, "qcow2", &cmds.map(String::from));
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top.to_str().unwrap()]);
    let cmds = ["write -P 0x44 4096 512", "write -z 2M 128k", "write -P 0x55 3M 100k", "discard 5M 64k"];
    qemu_io(&top, "qcow2", &cmds.map(String::from));
    top
}

#[test]
fn read_only_chain_export_equals_qemu_img() {
    let dir = tempdir();
    let top = chain(dir.path());
    let want = qemu_raw(&top, dir.path());
    let table = ExportTable::new();
    let chain = Chain::open(&top, &OpenOptions::default()).unwrap();
    let export: Arc<dyn Export> = Arc::new(ReadOnly(chain));
    table.insert("restore-point", export.clone());
    let tcp = Server::start("127.0.0.1:0", table.clone());
    let unix = Server::start(&format!("unix:{}", dir.path().join("nbd.sock").display()), table);
    for s in [&tcp, &unix] {
        let uri = s.uri("restore-point");
        // qemu-img convert through NBD (structured replies, block status).
        let out = dir.path().join("out.raw");
        run_cmd(tool("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &uri]).arg(&out));
        assert!(std::fs::read(&out).unwrap() == want, "{uri}: qemu-img convert differs");
        let reference = dir.path().join("ref.raw");
        std::fs::write(&reference, &want).unwrap();
        run_cmd(tool("qemu-img").args(["compare", "-f", "raw", "-F", "raw", &uri]).arg(&reference));
        assert!(nbdcopy_bytes(&uri, dir.path()) == want, "{uri}: nbdcopy differs");
        let cmds = ["read -P 0x44 4096 512", "read -P 0 2M 128k", "read -P 0x55 3M 100k", "read -P 0x11 0 4096"];
        qemu_io_nbd(&uri, true, &cmds);
    }
    // nbdinfo --map sees the allocation the export reports.
    assert_eq!(map_data(&tcp.uri("restore-point")), status_data(&*export));
    let info = run_cmd(tool("nbdinfo").args(["--json", &tcp.uri("restore-point")]));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["exports"][0]["export-size"], 6 << 20, "{info}");
    assert_eq!(info["exports"][0]["is_read_only"], true, "{info}");
    // Export names are never listed; an unknown name is refused.
    let out = tool("nbdinfo").args(["--list", &tcp.uri("")]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("restore-point"));
    assert!(!tool("nbdinfo").arg(tcp.uri("nope")).output().unwrap().status.success());
}

/// The ranges nbdinfo --map shows as data (not reading as zeros), merged.
fn map_data(uri: &str) -> Vec<Range<u64>> {
    let mut got = Vec::new();
    for (o, l, t) in nbdinfo_map(uri) {
        if t & 2 == 0 {
            push_merged(&mut got, o..o + l);
        }
    }
    got
}

/// The ranges an export's status calls `Data`, merged.
fn status_data(e: &dyn Export) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < e.size() {
        let r = e.status(at, e.size() - at).unwrap();
        if r.alloc == backchain::block::Alloc::Data {
            push_merged(&mut out, r.offset..r.end());
        }
        at = r.end();
    }
    out
}

fn qemu_io_nbd(uri: &str, read_only: bool, cmds: &[&str]) {
    let mut c = tool("qemu-io");
    c.args(["-f", "raw"]);
    if read_only {
        c.arg("-r");
    }
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let out = run_cmd(c.arg(uri));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Pattern verification failed") && !text.contains("failed"), "{text}");
}

#[test]
fn writable_memory_export_reads_back() {
    let dir = tempdir();
    let mem = Arc::new(MemExport::new(8 << 20));
    let table = ExportTable::new();
    table.insert("scratch", mem.clone());
    let server = Server::start("127.0.0.1:0", table);
    let uri = server.uri("scratch");
    let mut rng = common::Rng::new(5);
    let mut src = vec![0u8; 8 << 20];
    rng.fill(&mut src[..3 << 20]);
    rng.fill(&mut src[(5 << 20) + 777..(6 << 20) + 3]);
    let src_path = dir.path().join("src.raw");
    std::fs::write(&src_path, &src).unwrap();
    run_cmd(tool("nbdcopy").args(["--flush"]).arg(&src_path).arg(&uri));
    assert!(mem.bytes() == src, "after nbdcopy");
    // Unaligned writes, FUA, zeros with and without holes, a trim, a flush.
    qemu_io_nbd(
        &uri,
        false,
        &["write -P 0x5a 1000 5000", "write -f -P 0x6b 3M 64k", "write -z 65536 65536", "discard 2M 8192", "flush"],
    );
    src[1000..6000].fill(0x5a);
    src[3 << 20..(3 << 20) + (64 << 10)].fill(0x6b);
    src[65536..131072].fill(0);
    src[2 << 20..(2 << 20) + 8192].fill(0);
    assert!(mem.bytes() == src, "after qemu-io");
    // Holes (never written, trimmed) come back as holes.
    let data = status_data(&*mem);
    assert!(data.len() > 1, "{data:?}");
    assert_eq!(map_data(&uri), data);
    let reference = dir.path().join("ref.raw");
    std::fs::write(&reference, &src).unwrap();
    run_cmd(tool("qemu-img").args(["compare", "-f", "raw", "-F", "raw", &uri]).arg(&reference));
}

/// A minimal client that sends raw requests after OPT_GO.
fn raw_client(addr: &str, export: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    s.write_all(&(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES).to_be_bytes()).unwrap();
    // Options the server must refuse while going on: LIST, extended headers, STARTTLS.
    for (opt, want) in
        [(OPT_LIST, REP_ERR_POLICY), (OPT_EXTENDED_HEADERS, REP_ERR_UNSUP), (OPT_STARTTLS, REP_ERR_UNSUP)]
    {
        s.write_all(&OptionHeader { option: opt, len: 0 }.encode(&[])).unwrap();
        let (rep, _) = option_reply(&mut s);
        assert_eq!(rep, want, "option {opt}");
    }
    let data = ExportRequest { name: export.into(), infos: vec![INFO_BLOCK_SIZE] }.encode();
    s.write_all(&OptionHeader { option: OPT_GO, len: data.len() as u32 }.encode(&data)).unwrap();
    loop {
        let (rep, _) = option_reply(&mut s);
        if rep == REP_ACK {
            return s;
        }
        assert_eq!(rep, REP_INFO);
    }
}

/// Sends one request (with payload) and returns the simple reply's error.
fn simple(s: &mut TcpStream, kind: u16, offset: u64, len: u32, payload: &[u8]) -> (u32, Vec<u8>) {
    request(s, 0, kind, offset, len, payload)
}

fn request(s: &mut TcpStream, flags: u16, kind: u16, offset: u64, len: u32, payload: &[u8]) -> (u32, Vec<u8>) {
    let req = Request { flags, kind, cookie: 77, offset, len };
    s.write_all(&req.encode()).unwrap();
    s.write_all(payload).unwrap();
    let mut raw = [0u8; SIMPLE_REPLY_LEN];
    s.read_exact(&mut raw).unwrap();
    let magic = u32::from_be_bytes(raw[..4].try_into().unwrap());
    let ReplyHeader::Simple { error, cookie } = parse_reply(magic, &raw[4..]).unwrap() else { panic!("not simple") };
    assert_eq!(cookie, 77);
    let mut data = vec![];
    if error == 0 && kind == CMD_READ {
        data.resize(len as usize, 0);
        s.read_exact(&mut data).unwrap();
    }
    (error, data)
}

#[test]
fn bad_requests_get_nbd_errors_and_the_connection_goes_on() {
    let table = ExportTable::new();
    let ro: Arc<dyn Export> = Arc::new(ReadOnly(backchain::block::MemImage(vec![9u8; 1 << 20])));
    table.insert("ro", ro);
    table.insert("rw", Arc::new(MemExport::new(1 << 20)));
    let server = Server::start("127.0.0.1:0", table.clone());
    let mut ro = raw_client(&server.addr, "ro");
    assert_eq!(simple(&mut ro, CMD_WRITE, 0, 4096, &[1u8; 4096]).0, EPERM);
    assert_eq!(simple(&mut ro, CMD_READ, (1 << 20) - 10, 20, &[]).0, EINVAL);
    assert_eq!(simple(&mut ro, CMD_READ, u64::MAX - 5, 20, &[]).0, EINVAL);
    assert_eq!(simple(&mut ro, 99, 0, 0, &[]).0, EINVAL);
    assert_eq!(simple(&mut ro, CMD_READ, 100, 8, &[]), (0, vec![9u8; 8]));
    let mut rw = raw_client(&server.addr, "rw");
    assert_eq!(simple(&mut rw, CMD_WRITE, (1 << 20) - 2, 4, b"abcd").0, ENOSPC);
    // A payload over the limit is read and dropped: the stream stays in sync.
    let big = vec![3u8; MAX_PAYLOAD as usize + 1];
    assert_eq!(simple(&mut rw, CMD_WRITE, 0, big.len() as u32, &big).0, EINVAL);
    assert_eq!(simple(&mut rw, CMD_WRITE, 10, 4, b"wxyz").0, 0);
    assert_eq!(simple(&mut rw, CMD_READ, 8, 8, &[]), (0, b"\0\0wxyz\0\0".to_vec()));
    // Zeros that must stay allocated, fast: MemExport zeroes in memory.
    let flags = CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO | CMD_FLAG_FUA;
    assert_eq!(request(&mut rw, flags, CMD_WRITE_ZEROES, 8, 4, &[]).0, 0);
    assert_eq!(simple(&mut rw, CMD_READ, 8, 8, &[]), (0, b"\0\0\0\0yz\0\0".to_vec()));
    assert_eq!(request(&mut rw, CMD_FLAG_REQ_ONE, CMD_WRITE, 0, 4, b"abcd").0, EINVAL);
    // A removed export answers EIO from then on.
    table.remove("rw");
    assert_eq!(simple(&mut rw, CMD_READ, 8, 8, &[]).0, EIO);
}

#[test]
fn old_clients_and_info_queries_negotiate() {
    let table = ExportTable::new();
    table.insert("disk", Arc::new(ReadOnly(backchain::block::MemImage(vec![4u8; 12345]))));
    let server = Server::start("127.0.0.1:0", table);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(u16::from_be_bytes([greeting[16], greeting[17]]), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    s.write_all(&CLIENT_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    // OPT_INFO for an unknown export, then for ours; neither ends negotiation.
    for (name, want) in [("nope", REP_ERR_UNKNOWN), ("disk", REP_INFO)] {
        let data = ExportRequest { name: name.into(), infos: vec![] }.encode();
        s.write_all(&OptionHeader { option: OPT_INFO, len: data.len() as u32 }.encode(&data)).unwrap();
        let (rep, _) = option_reply(&mut s);
        assert_eq!(rep, want, "{name}");
        if rep == REP_INFO {
            while option_reply(&mut s).0 != REP_ACK {}
        }
    }
    // LIST_META_CONTEXT with no queries lists base:allocation.
    let data = backchain::nbd::option::MetaRequest { export: "disk".into(), queries: vec![] }.encode();
    s.write_all(&OptionHeader { option: OPT_LIST_META_CONTEXT, len: data.len() as u32 }.encode(&data)).unwrap();
    let (rep, data) = option_reply(&mut s);
    assert_eq!(rep, REP_META_CONTEXT);
    let ctx = backchain::nbd::option::MetaContext::parse(&data).unwrap();
    assert_eq!(ctx.name, CONTEXT_BASE_ALLOCATION);
    assert_eq!(option_reply(&mut s).0, REP_ACK);
    // OPT_EXPORT_NAME: size, flags and 124 zero bytes (no NO_ZEROES asked).
    s.write_all(&OptionHeader { option: OPT_EXPORT_NAME, len: 4 }.encode(b"disk")).unwrap();
    let mut reply = [0u8; 10 + EXPORT_NAME_PADDING];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), 12345);
    assert!(u16::from_be_bytes([reply[8], reply[9]]) & TFLAG_READ_ONLY != 0);
    assert!(reply[10..].iter().all(|&b| b == 0));
    assert_eq!(simple(&mut s, CMD_READ, 12340, 5, &[]), (0, vec![4u8; 5]));
}
