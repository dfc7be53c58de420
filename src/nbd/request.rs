//! "Request message": the 28-byte header of every transmission request.

use super::consts::*;
use super::error::{Error, Result};
use super::wire::Put;

/// One request header. WRITE carries `len` bytes of payload after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    /// The client's cookie (the spec's "handle"), echoed in every reply.
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

impl Request {
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut b = Vec::with_capacity(REQUEST_HEADER_LEN);
        b.put_u32(REQUEST_MAGIC);
        b.put_u16(self.flags);
        b.put_u16(self.kind);
        b.put_u64(self.cookie);
        b.put_u64(self.offset);
        b.put_u32(self.len);
        b.try_into().expect("28 bytes")
    }

    pub fn parse(raw: &[u8; REQUEST_HEADER_LEN]) -> Result<Self> {
        let magic = u32::from_be_bytes(raw[0..4].try_into().expect("4"));
        if magic != REQUEST_MAGIC {
            return Err(Error::Corrupt(format!("request magic {magic:#x}")));
        }
        Ok(Request {
            flags: u16::from_be_bytes(raw[4..6].try_into().expect("2")),
            kind: u16::from_be_bytes(raw[6..8].try_into().expect("2")),
            cookie: u64::from_be_bytes(raw[8..16].try_into().expect("8")),
            offset: u64::from_be_bytes(raw[16..24].try_into().expect("8")),
            len: u32::from_be_bytes(raw[24..28].try_into().expect("4")),
        })
    }

    /// The first byte after the request's range, or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(u64::from(self.len))
    }
}

/// Fuzz entry for the request parser.
pub fn fuzz_entry(data: &[u8]) {
    if let Some(raw) = data.get(..REQUEST_HEADER_LEN) {
        let raw: &[u8; REQUEST_HEADER_LEN] = raw.try_into().expect("28 bytes");
        if let Ok(r) = Request::parse(raw) {
            assert_eq!(Request::parse(&r.encode()).ok(), Some(r));
            let _ = r.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_magic() {
        let r = Request { flags: CMD_FLAG_FUA, kind: CMD_WRITE, cookie: 9, offset: 1 << 33, len: 4096 };
        let mut b = r.encode();
        assert_eq!(Request::parse(&b).unwrap(), r);
        b[0] ^= 1;
        assert!(Request::parse(&b).is_err());
        let r = Request { offset: u64::MAX, len: 1, ..r };
        assert_eq!(r.end(), None);
    }
}
