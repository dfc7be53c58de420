//! "Simple reply message" and the header of a "Structured reply chunk
//! message": what starts every reply in the transmission phase.

use super::consts::*;
use super::error::{Error, Result};
use super::wire::Put;

/// The header of one reply, told apart by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// error, cookie (16 bytes in all). A successful READ's data follows.
    Simple { error: u32, cookie: u64 },
    /// flags, type, cookie, payload length (20 bytes in all).
    Chunk(ChunkHeader),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub len: u32,
}

impl ChunkHeader {
    pub fn done(&self) -> bool {
        self.flags & REPLY_FLAG_DONE != 0
    }

    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut b = Vec::with_capacity(CHUNK_HEADER_LEN);
        b.put_u32(STRUCTURED_REPLY_MAGIC);
        b.put_u16(self.flags);
        b.put_u16(self.kind);
        b.put_u64(self.cookie);
        b.put_u32(self.len);
        b.try_into().expect("20 bytes")
    }
}

pub fn encode_simple(error: u32, cookie: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = Vec::with_capacity(SIMPLE_REPLY_LEN);
    b.put_u32(SIMPLE_REPLY_MAGIC);
    b.put_u32(error);
    b.put_u64(cookie);
    b.try_into().expect("16 bytes")
}

/// How many more header bytes follow a reply magic.
pub fn rest_len(magic: u32) -> Result<usize> {
    match magic {
        SIMPLE_REPLY_MAGIC => Ok(SIMPLE_REPLY_LEN - 4),
        STRUCTURED_REPLY_MAGIC => Ok(CHUNK_HEADER_LEN - 4),
        EXTENDED_REPLY_MAGIC => Err(Error::Corrupt("an extended-header reply, which was never negotiated".into())),
        m => Err(Error::Corrupt(format!("reply magic {m:#x}"))),
    }
}

/// Parses a reply header from its magic and the [`rest_len`] bytes after it.
pub fn parse(magic: u32, rest: &[u8]) -> Result<ReplyHeader> {
    if rest.len() != rest_len(magic)? {
        return Err(Error::Corrupt(format!("reply header of {} bytes", rest.len() + 4)));
    }
    let u16_at = |i: usize| u16::from_be_bytes(rest[i..i + 2].try_into().expect("2"));
    let u32_at = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().expect("4"));
    let u64_at = |i: usize| u64::from_be_bytes(rest[i..i + 8].try_into().expect("8"));
    Ok(match magic {
        SIMPLE_REPLY_MAGIC => ReplyHeader::Simple { error: u32_at(0), cookie: u64_at(4) },
        _ => ReplyHeader::Chunk(ChunkHeader { flags: u16_at(0), kind: u16_at(2), cookie: u64_at(4), len: u32_at(12) }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let s = encode_simple(EIO, 42);
        let magic = u32::from_be_bytes(s[..4].try_into().unwrap());
        assert_eq!(parse(magic, &s[4..]).unwrap(), ReplyHeader::Simple { error: EIO, cookie: 42 });
        let c = ChunkHeader { flags: REPLY_FLAG_DONE, kind: REPLY_TYPE_OFFSET_HOLE, cookie: 7, len: 12 };
        let b = c.encode();
        assert_eq!(parse(STRUCTURED_REPLY_MAGIC, &b[4..]).unwrap(), ReplyHeader::Chunk(c));
        assert!(rest_len(EXTENDED_REPLY_MAGIC).is_err());
        assert!(rest_len(0).is_err());
    }
}
