//! The NBD client against a scripted hostile server: every malformed reply
//! is a clear error, never a panic, a hang or a large allocation; a server
//! that stalls times out; an error reply leaves the connection usable;
//! chunks may come out of order and interleaved.

use backchain::nbd::client::{Client, Endpoint, Options};
use backchain::nbd::consts::*;
use backchain::nbd::handshake::{OptionHeader, OptionReplyHeader, greeting};
use backchain::nbd::option::{Info, MetaContext};
use backchain::nbd::reply::{ChunkHeader, encode_simple};
use backchain::nbd::request::Request;
use backchain::nbd::structured::{Descriptor, encode_block_status, encode_data_header, encode_hole};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

const SIZE: u64 = 1 << 20;

/// Answers the options of our client: structured replies, base:allocation
/// as context 1, and a read-only export of SIZE bytes.
fn handshake(s: &mut UnixStream) {
    s.write_all(&greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)).unwrap();
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags).unwrap();
    loop {
        let mut raw = [0u8; 16];
        s.read_exact(&mut raw).unwrap();
        let h = OptionHeader::parse(&raw).unwrap();
        let mut data = vec![0u8; h.len as usize];
        s.read_exact(&mut data).unwrap();
        let reply = |s: &mut UnixStream, reply: u32, d: &[u8]| {
            s.write_all(&OptionReplyHeader { option: h.option, reply, len: d.len() as u32 }.encode(d)).unwrap()
        };
        match h.option {
            OPT_SET_META_CONTEXT => {
                reply(s, REP_META_CONTEXT, &MetaContext { id: 1, name: CONTEXT_BASE_ALLOCATION.into() }.encode());
                reply(s, REP_ACK, &[]);
            }
            OPT_GO => {
                reply(s, REP_INFO, &Info::Export { size: SIZE, flags: TFLAG_HAS_FLAGS | TFLAG_READ_ONLY }.encode());
                reply(s, REP_ACK, &[]);
                return;
            }
            _ => reply(s, REP_ACK, &[]),
        }
    }
}

fn request(s: &mut UnixStream) -> Request {
    let mut raw = [0u8; REQUEST_HEADER_LEN];
    s.read_exact(&mut raw).unwrap();
    Request::parse(&raw).unwrap()
}

/// Starts a server running `script` after the handshake, and a client.
fn with_server<T>(script: impl FnOnce(&mut UnixStream) + Send + 'static, client: impl AsyncFnOnce(Client) -> T) -> T {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        handshake(&mut s);
        script(&mut s);
        // Keep the socket open until the client is done with it.
        let _ = s.read(&mut [0u8; 64]);
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let out = rt.block_on(async {
        let mut opts = Options::new("");
        opts.request_timeout = Duration::from_millis(500);
        let c = Client::connect(&Endpoint::Unix(path.clone()), &opts).await.unwrap();
        assert_eq!(c.info().size, SIZE);
        assert_eq!(c.info().context_id(CONTEXT_BASE_ALLOCATION), Some(1));
        client(c).await
    });
    // The aborted reader task holds the socket until the runtime goes.
    drop(rt);
    server.join().unwrap();
    out
}

fn read_error(script: impl FnOnce(&mut UnixStream, Request) + Send + 'static) -> String {
    with_server(
        move |s| {
            let r = request(s);
            script(s, r)
        },
        async |c| c.read(0, 4096).await.unwrap_err().to_string(),
    )
}

/// What the server does with the request it read.
type Script = Box<dyn FnOnce(&mut UnixStream, Request) + Send>;

fn chunk(flags: u16, kind: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = ChunkHeader { flags, kind, cookie, len: payload.len() as u32 }.encode().to_vec();
    b.extend_from_slice(payload);
    b
}

#[test]
fn malformed_read_replies_are_corrupt() {
    let cases: Vec<(&str, Script)> = vec![
        (
            "with 33554441 bytes",
            Box::new(|s, r| {
                let h = ChunkHeader { flags: 0, kind: REPLY_TYPE_OFFSET_DATA, cookie: r.cookie, len: MAX_PAYLOAD + 9 };
                s.write_all(&h.encode()).unwrap();
            }),
        ),
        ("unknown cookie", Box::new(|s, r| s.write_all(&encode_simple(0, r.cookie + 1)).unwrap())),
        (
            "overlap",
            Box::new(|s, r| {
                // One write: the client may hang up as soon as it sees the overlap.
                let mut b = encode_data_header(0, r.cookie, 0, 2048);
                b.extend_from_slice(&[1u8; 2048]);
                b.extend_from_slice(&encode_data_header(REPLY_FLAG_DONE, r.cookie, 1024, 2048));
                b.extend_from_slice(&[2u8; 2048]);
                s.write_all(&b).unwrap();
            }),
        ),
        (
            "outside the read",
            Box::new(|s, r| s.write_all(&encode_hole(REPLY_FLAG_DONE, r.cookie, 2048, 4096)).unwrap()),
        ),
        (
            "covered 2048 of 4096",
            Box::new(|s, r| s.write_all(&encode_hole(REPLY_FLAG_DONE, r.cookie, 0, 2048)).unwrap()),
        ),
        (
            "unknown reply chunk type 99",
            Box::new(|s, r| s.write_all(&chunk(REPLY_FLAG_DONE, 99, r.cookie, &[])).unwrap()),
        ),
        ("reply magic", Box::new(|s, _| s.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]).unwrap())),
        ("extended-header", Box::new(|s, _| s.write_all(&EXTENDED_REPLY_MAGIC.to_be_bytes()).unwrap())),
        ("closed", Box::new(|s, _| s.shutdown(std::net::Shutdown::Both).unwrap())),
        ("did not answer", Box::new(|_, _| std::thread::sleep(Duration::from_millis(800)))),
    ];
    for (want, script) in cases {
        let e = read_error(script);
        assert!(e.contains(want), "want {want:?}, got {e}");
    }
}

#[test]
fn hostile_block_status_is_refused() {
    let zero_len = with_server(
        |s| {
            let r = request(s);
            s.write_all(&encode_block_status(REPLY_FLAG_DONE, r.cookie, 1, &[Descriptor { len: 0, flags: 0 }]))
                .unwrap();
        },
        async |c| c.block_status(1, 0, 4096).await.unwrap_err().to_string(),
    );
    assert!(zero_len.contains("length 0"), "{zero_len}");
    let too_many = with_server(
        |s| {
            let r = request(s);
            let h = ChunkHeader {
                flags: REPLY_FLAG_DONE,
                kind: REPLY_TYPE_BLOCK_STATUS,
                cookie: r.cookie,
                len: 4 + 8 * (MAX_EXTENTS + 1),
            };
            s.write_all(&h.encode()).unwrap();
        },
        async |c| c.block_status(1, 0, 4096).await.unwrap_err().to_string(),
    );
    assert!(too_many.contains("type 5 with"), "{too_many}");
    let other_ctx = with_server(
        |s| {
            let r = request(s);
            s.write_all(&encode_block_status(REPLY_FLAG_DONE, r.cookie, 9, &[Descriptor { len: 512, flags: 0 }]))
                .unwrap();
        },
        async |c| c.block_status(1, 0, 4096).await.unwrap_err().to_string(),
    );
    assert!(other_ctx.contains("no block status for context 1"), "{other_ctx}");
}

#[test]
fn short_and_overrunning_block_status_are_clipped() {
    let got = with_server(
        |s| {
            let r = request(s);
            // Covers less than asked: the caller asks again.
            s.write_all(&encode_block_status(REPLY_FLAG_DONE, r.cookie, 1, &[Descriptor { len: 512, flags: 3 }]))
                .unwrap();
            let r = request(s);
            assert_eq!(r.offset, 512);
            // The last extent runs past the request: cut at its end.
            let d = [Descriptor { len: 1024, flags: 0 }, Descriptor { len: 1 << 30, flags: 3 }];
            s.write_all(&encode_block_status(REPLY_FLAG_DONE, r.cookie, 1, &d)).unwrap();
        },
        async |c| {
            let a = c.block_status(1, 0, 4096).await.unwrap();
            let b = c.block_status(1, 512, 4096 - 512).await.unwrap();
            (a, b)
        },
    );
    assert_eq!(got.0.len(), 1);
    assert_eq!((got.0[0].offset, got.0[0].len), (0, 512));
    let b: Vec<_> = got.1.iter().map(|e| (e.offset, e.len, e.flags)).collect();
    assert_eq!(b, vec![(512, 1024, 0), (1536, 2560, 3)]);
}

#[test]
fn errors_out_of_order_chunks_and_interleaving() {
    let (e, a, b) = with_server(
        |s| {
            let r = request(s);
            // ERROR_OFFSET: error, message, offset; then NONE with DONE.
            let mut payload = EIO.to_be_bytes().to_vec();
            payload.extend_from_slice(&3u16.to_be_bytes());
            payload.extend_from_slice(b"bad");
            payload.extend_from_slice(&2048u64.to_be_bytes());
            s.write_all(&chunk(0, REPLY_TYPE_ERROR_OFFSET, r.cookie, &payload)).unwrap();
            s.write_all(&chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, r.cookie, &[])).unwrap();
            let r1 = request(s);
            let r2 = request(s);
            // The second request's first chunk, the first request whole,
            // then the rest of the second.
            s.write_all(&encode_data_header(0, r2.cookie, r2.offset + 2048, 2048)).unwrap();
            s.write_all(&[7u8; 2048]).unwrap();
            s.write_all(&encode_hole(0, r1.cookie, r1.offset + 1024, 3072)).unwrap();
            s.write_all(&encode_data_header(REPLY_FLAG_DONE, r1.cookie, r1.offset, 1024)).unwrap();
            s.write_all(&[5u8; 1024]).unwrap();
            s.write_all(&encode_hole(REPLY_FLAG_DONE, r2.cookie, r2.offset, 2048)).unwrap();
        },
        async |c| {
            let e = c.read(0, 4096).await.unwrap_err().to_string();
            let (a, b) = futures_util::future::join(c.read(0, 4096), c.read(8192, 4096)).await;
            (e, a.unwrap(), b.unwrap())
        },
    );
    assert!(e.contains("EIO at offset 2048 (bad)"), "{e}");
    assert!(a[..1024].iter().all(|&x| x == 5) && a[1024..].iter().all(|&x| x == 0));
    assert!(b[..2048].iter().all(|&x| x == 0) && b[2048..].iter().all(|&x| x == 7));
}

#[test]
fn a_timed_out_connection_stays_closed() {
    let (first, second) = with_server(
        |s| {
            let _ = request(s);
            std::thread::sleep(Duration::from_millis(700));
        },
        async |c| {
            let first = c.read(0, 512).await.unwrap_err().to_string();
            let second = c.read(0, 512).await.unwrap_err().to_string();
            (first, second)
        },
    );
    assert!(first.contains("did not answer within"), "{first}");
    assert!(second.contains("closed"), "{second}");
}
