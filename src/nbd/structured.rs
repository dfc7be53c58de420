//! "Structured reply types": the payloads of reply chunks (OFFSET_DATA's
//! header, OFFSET_HOLE, BLOCK_STATUS, ERROR, ERROR_OFFSET). Parsers take
//! untrusted bytes and check every length against the named limits.

use super::consts::*;
use super::error::{Error, Result};
use super::reply::ChunkHeader;
use super::wire::{Fields, Put};

/// One BLOCK_STATUS descriptor: a length and the context's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub len: u32,
    pub flags: u32,
}

/// A parsed chunk whose payload is not bulk data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// NBD_REPLY_TYPE_NONE: only valid with the DONE flag.
    None,
    Hole {
        offset: u64,
        len: u32,
    },
    BlockStatus {
        context: u32,
        extents: Vec<Descriptor>,
    },
    Error {
        errno: u32,
        message: String,
        offset: Option<u64>,
    },
}

/// Checks a chunk header's payload length against its type before a byte
/// of the payload is read, so no peer can make us allocate more than
/// [`MAX_PAYLOAD`] + 8 or [`MAX_CHUNK_META`] bytes.
pub fn check_len(h: &ChunkHeader) -> Result<()> {
    let ok = match h.kind {
        REPLY_TYPE_NONE => h.len == 0,
        REPLY_TYPE_OFFSET_DATA => h.len > 8 && h.len - 8 <= MAX_PAYLOAD,
        REPLY_TYPE_OFFSET_HOLE => h.len == 12,
        REPLY_TYPE_BLOCK_STATUS => h.len >= 12 && h.len <= MAX_CHUNK_META && (h.len - 4).is_multiple_of(8),
        k if k & REPLY_TYPE_ERROR_BIT != 0 => (6..=6 + MAX_STRING + 8).contains(&h.len),
        k => return Err(Error::Corrupt(format!("unknown reply chunk type {k}"))),
    };
    if ok { Ok(()) } else { Err(Error::Corrupt(format!("reply chunk of type {} with {} bytes", h.kind, h.len))) }
}

/// Parses the payload of a chunk other than OFFSET_DATA.
pub fn parse(kind: u16, payload: &[u8]) -> Result<Chunk> {
    let mut f = Fields::new("reply chunk", payload);
    let chunk = match kind {
        REPLY_TYPE_NONE => Chunk::None,
        REPLY_TYPE_OFFSET_HOLE => {
            let offset = f.u64("hole offset")?;
            let len = f.u32("hole length")?;
            if len == 0 {
                return Err(Error::Corrupt(format!("empty hole at offset {offset}")));
            }
            Chunk::Hole { offset, len }
        }
        REPLY_TYPE_BLOCK_STATUS => parse_block_status(&mut f)?,
        k if k & REPLY_TYPE_ERROR_BIT != 0 => parse_error(k, &mut f)?,
        k => return Err(Error::Corrupt(format!("reply chunk type {k} here"))),
    };
    f.end()?;
    Ok(chunk)
}

fn parse_block_status(f: &mut Fields) -> Result<Chunk> {
    let context = f.u32("context id")?;
    let n = f.remaining() / 8;
    if n == 0 || n > MAX_EXTENTS as usize || !f.remaining().is_multiple_of(8) {
        return Err(Error::Corrupt(format!("block status with {} descriptor bytes", f.remaining())));
    }
    let mut extents = Vec::with_capacity(n);
    for _ in 0..n {
        let len = f.u32("extent length")?;
        let flags = f.u32("extent flags")?;
        if len == 0 {
            return Err(Error::Corrupt("block status extent of length 0".into()));
        }
        extents.push(Descriptor { len, flags });
    }
    Ok(Chunk::BlockStatus { context, extents })
}

fn parse_error(kind: u16, f: &mut Fields) -> Result<Chunk> {
    let errno = f.u32("error")?;
    if errno == 0 {
        return Err(Error::Corrupt("error chunk with error 0".into()));
    }
    let len = f.u16("message length")?;
    let message = f.message(len as usize)?;
    let offset = match kind {
        REPLY_TYPE_ERROR_OFFSET => Some(f.u64("error offset")?),
        REPLY_TYPE_ERROR => None,
        _ => {
            // An error type we do not know: the spec lets us treat it as
            // ERROR and ignore what follows the message.
            f.rest();
            None
        }
    };
    Ok(Chunk::Error { errno, message, offset })
}

/// The header of an OFFSET_DATA chunk whose payload is `data_len` bytes of
/// data at `offset` (the data follows).
pub fn encode_data_header(flags: u16, cookie: u64, offset: u64, data_len: u32) -> Vec<u8> {
    let h = ChunkHeader { flags, kind: REPLY_TYPE_OFFSET_DATA, cookie, len: data_len + 8 };
    let mut b = h.encode().to_vec();
    b.put_u64(offset);
    b
}

/// A whole OFFSET_HOLE chunk.
pub fn encode_hole(flags: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut b = ChunkHeader { flags, kind: REPLY_TYPE_OFFSET_HOLE, cookie, len: 12 }.encode().to_vec();
    b.put_u64(offset);
    b.put_u32(len);
    b
}

/// A whole BLOCK_STATUS chunk (at most [`MAX_EXTENTS`] descriptors).
pub fn encode_block_status(flags: u16, cookie: u64, context: u32, extents: &[Descriptor]) -> Vec<u8> {
    let len = 4 + 8 * extents.len() as u32;
    let mut b = ChunkHeader { flags, kind: REPLY_TYPE_BLOCK_STATUS, cookie, len }.encode().to_vec();
    b.put_u32(context);
    for e in extents {
        b.put_u32(e.len);
        b.put_u32(e.flags);
    }
    b
}

/// A whole ERROR chunk with the DONE flag.
pub fn encode_error(cookie: u64, errno: u32, message: &str) -> Vec<u8> {
    let msg = &message.as_bytes()[..message.len().min(MAX_STRING as usize)];
    let len = 6 + msg.len() as u32;
    let mut b = ChunkHeader { flags: REPLY_FLAG_DONE, kind: REPLY_TYPE_ERROR, cookie, len }.encode().to_vec();
    b.put_u32(errno);
    b.put_u16(msg.len() as u16);
    b.extend_from_slice(msg);
    b
}

/// Fuzz entry: a chunk header and payload from arbitrary bytes, through
/// the same checks the client applies.
pub fn fuzz_entry(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let magic = u32::from_be_bytes(data[..4].try_into().expect("4"));
    let Ok(n) = super::reply::rest_len(magic) else { return };
    let Some(rest) = data.get(4..4 + n) else { return };
    if let Ok(super::reply::ReplyHeader::Chunk(h)) = super::reply::parse(magic, rest)
        && check_len(&h).is_ok()
        && h.kind != REPLY_TYPE_OFFSET_DATA
    {
        let payload = &data[4 + n..];
        let payload = &payload[..payload.len().min(h.len as usize)];
        let _ = parse(h.kind, payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(chunk: Vec<u8>) -> (ChunkHeader, Vec<u8>) {
        match super::super::reply::parse(STRUCTURED_REPLY_MAGIC, &chunk[4..20]).unwrap() {
            super::super::reply::ReplyHeader::Chunk(h) => (h, chunk[20..].to_vec()),
            _ => unreachable!(),
        }
    }

    #[test]
    fn chunks_round_trip() {
        let (h, p) = payload(encode_hole(0, 1, 4096, 512));
        check_len(&h).unwrap();
        assert_eq!(parse(h.kind, &p).unwrap(), Chunk::Hole { offset: 4096, len: 512 });
        let ext = [Descriptor { len: 4096, flags: STATE_HOLE | STATE_ZERO }, Descriptor { len: 512, flags: 0 }];
        let (h, p) = payload(encode_block_status(REPLY_FLAG_DONE, 1, 3, &ext));
        check_len(&h).unwrap();
        assert_eq!(parse(h.kind, &p).unwrap(), Chunk::BlockStatus { context: 3, extents: ext.to_vec() });
        let (h, p) = payload(encode_error(1, EIO, "bad sector"));
        check_len(&h).unwrap();
        assert_eq!(parse(h.kind, &p).unwrap(), Chunk::Error { errno: EIO, message: "bad sector".into(), offset: None });
    }

    #[test]
    fn hostile_chunks_are_refused() {
        let big = ChunkHeader { flags: 0, kind: REPLY_TYPE_OFFSET_DATA, cookie: 1, len: MAX_PAYLOAD + 9 };
        assert!(check_len(&big).is_err());
        let bs = ChunkHeader { flags: 0, kind: REPLY_TYPE_BLOCK_STATUS, cookie: 1, len: MAX_CHUNK_META + 8 };
        assert!(check_len(&bs).is_err());
        let odd = ChunkHeader { flags: 0, kind: REPLY_TYPE_BLOCK_STATUS, cookie: 1, len: 13 };
        assert!(check_len(&odd).is_err());
        assert!(check_len(&ChunkHeader { flags: 0, kind: 77, cookie: 1, len: 0 }).is_err());
        // A zero-length extent would make a caller loop forever.
        let (h, p) = payload(encode_block_status(0, 1, 3, &[Descriptor { len: 0, flags: 0 }]));
        assert!(parse(h.kind, &p).is_err());
        // An error chunk whose message runs past its payload.
        let mut b = Vec::new();
        b.put_u32(EIO);
        b.put_u16(100);
        assert!(parse(REPLY_TYPE_ERROR, &b).is_err());
        // An empty hole.
        let (h, p) = payload(encode_hole(0, 1, 0, 0));
        assert!(parse(h.kind, &p).is_err());
    }
}
