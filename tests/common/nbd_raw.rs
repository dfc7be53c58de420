//! A minimal NBD client that sends raw requests (bad ones too) and reads
//! replies one by one, to check the server's answers byte for byte.
//! Included with `#[path = "common/nbd_raw.rs"] mod nbd_raw;`.
#![allow(dead_code)]

use backchain::nbd::consts::*;
use backchain::nbd::handshake::{OptionHeader, OptionReplyHeader};
use backchain::nbd::option::{ExportRequest, MetaRequest};
use backchain::nbd::reply::{ReplyHeader, parse as parse_reply};
use backchain::nbd::request::Request;
use std::io::{Read, Write};

pub trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Reads one option reply: its type and data.
pub fn option_reply(s: &mut impl Read) -> (u32, Vec<u8>) {
    let mut raw = [0u8; 20];
    s.read_exact(&mut raw).unwrap();
    let h = OptionReplyHeader::parse(&raw).unwrap();
    let mut data = vec![0u8; h.len as usize];
    s.read_exact(&mut data).unwrap();
    (h.reply, data)
}

/// Sends an option and returns its first reply.
pub fn option(s: &mut impl Stream, option: u32, data: &[u8]) -> (u32, Vec<u8>) {
    s.write_all(&OptionHeader { option, len: data.len() as u32 }.encode(data)).unwrap();
    option_reply(s)
}

/// Negotiates `export` with OPT_GO; with `structured`, structured replies
/// and base:allocation first. Returns the export's size and flags.
pub fn go(s: &mut impl Stream, export: &str, structured: bool) -> (u64, u16) {
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    s.write_all(&(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES).to_be_bytes()).unwrap();
    if structured {
        assert_eq!(option(s, OPT_STRUCTURED_REPLY, &[]).0, REP_ACK);
        let meta = MetaRequest { export: export.into(), queries: vec![CONTEXT_BASE_ALLOCATION.into()] }.encode();
        assert_eq!(option(s, OPT_SET_META_CONTEXT, &meta).0, REP_META_CONTEXT);
        assert_eq!(option_reply(s).0, REP_ACK);
    }
    let data = ExportRequest { name: export.into(), infos: vec![INFO_BLOCK_SIZE] }.encode();
    s.write_all(&OptionHeader { option: OPT_GO, len: data.len() as u32 }.encode(&data)).unwrap();
    let mut export_info = None;
    loop {
        let (rep, data) = option_reply(s);
        match rep {
            REP_ACK => return export_info.expect("NBD_INFO_EXPORT before the ACK"),
            REP_INFO if u16::from_be_bytes([data[0], data[1]]) == INFO_EXPORT => {
                let size = u64::from_be_bytes(data[2..10].try_into().unwrap());
                export_info = Some((size, u16::from_be_bytes([data[10], data[11]])));
            }
            REP_INFO => {}
            other => panic!("OPT_GO {export}: reply {other:#x}: {}", String::from_utf8_lossy(&data)),
        }
    }
}

/// Sends a request (and its payload) without waiting for the reply.
pub fn send(s: &mut impl Write, flags: u16, kind: u16, cookie: u64, offset: u64, len: u32, payload: &[u8]) {
    s.write_all(&Request { flags, kind, cookie, offset, len }.encode()).unwrap();
    s.write_all(payload).unwrap();
}

/// Reads one simple reply: error and cookie, and `data_len` bytes of data
/// when it succeeded.
pub fn simple_reply(s: &mut impl Read, data_len: usize) -> (u32, u64, Vec<u8>) {
    let mut raw = [0u8; SIMPLE_REPLY_LEN];
    s.read_exact(&mut raw).unwrap();
    let magic = u32::from_be_bytes(raw[..4].try_into().unwrap());
    let ReplyHeader::Simple { error, cookie } = parse_reply(magic, &raw[4..]).unwrap() else { panic!("not simple") };
    let mut data = vec![];
    if error == 0 {
        data.resize(data_len, 0);
        s.read_exact(&mut data).unwrap();
    }
    (error, cookie, data)
}

/// One request and its simple reply's error (and data for a READ).
pub fn call(s: &mut impl Stream, kind: u16, offset: u64, len: u32, payload: &[u8]) -> (u32, Vec<u8>) {
    send(s, 0, kind, 7, offset, len, payload);
    let (error, cookie, data) = simple_reply(s, if kind == CMD_READ { len as usize } else { 0 });
    assert_eq!(cookie, 7);
    (error, data)
}

/// Reads one structured chunk: its header and payload.
pub fn chunk(s: &mut impl Read) -> (backchain::nbd::reply::ChunkHeader, Vec<u8>) {
    let mut raw = [0u8; CHUNK_HEADER_LEN];
    s.read_exact(&mut raw).unwrap();
    let magic = u32::from_be_bytes(raw[..4].try_into().unwrap());
    let ReplyHeader::Chunk(h) = parse_reply(magic, &raw[4..]).unwrap() else { panic!("not a chunk") };
    let mut payload = vec![0u8; h.len as usize];
    s.read_exact(&mut payload).unwrap();
    (h, payload)
}

/// BLOCK_STATUS (structured replies negotiated): the descriptors of the
/// one chunk, as (length, flags).
pub fn block_status(s: &mut impl Stream, flags: u16, offset: u64, len: u32) -> Vec<(u32, u32)> {
    send(s, flags, CMD_BLOCK_STATUS, 9, offset, len, &[]);
    let (h, payload) = chunk(s);
    assert_eq!((h.kind, h.flags & REPLY_FLAG_DONE), (REPLY_TYPE_BLOCK_STATUS, REPLY_FLAG_DONE), "{h:?}");
    payload[4..]
        .chunks(8)
        .map(|d| (u32::from_be_bytes(d[..4].try_into().unwrap()), u32::from_be_bytes(d[4..].try_into().unwrap())))
        .collect()
}
