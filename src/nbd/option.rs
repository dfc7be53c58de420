//! Option payloads ("Option types", "Option reply types", "Information
//! types"): what NBD_OPT_INFO/GO and LIST/SET_META_CONTEXT carry, and the
//! NBD_REP_INFO and NBD_REP_META_CONTEXT answers. Encoders for one side,
//! parsers for the other; the parsers take untrusted bytes.

use super::consts::*;
use super::error::{Error, Result};
use super::wire::{Fields, Put};

/// NBD_OPT_INFO / NBD_OPT_GO data: an export name and the information
/// types asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub name: String,
    pub infos: Vec<u16>,
}

impl ExportRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_str32(&self.name);
        b.put_u16(self.infos.len() as u16);
        for &i in &self.infos {
            b.put_u16(i);
        }
        b
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        let mut f = Fields::new("NBD_OPT_GO data", data);
        let len = f.u32("name length")?;
        let name = f.string(len as usize, MAX_STRING, "export name")?;
        let n = f.u16("information request count")?;
        // Each request is 2 bytes, and the payload is bounded already.
        let infos = (0..n).map(|_| f.u16("information request")).collect::<Result<Vec<_>>>()?;
        f.end()?;
        Ok(ExportRequest { name, infos })
    }
}

/// LIST/SET_META_CONTEXT data: an export name and context queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub export: String,
    pub queries: Vec<String>,
}

impl MetaRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_str32(&self.export);
        b.put_u32(self.queries.len() as u32);
        for q in &self.queries {
            b.put_str32(q);
        }
        b
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        let mut f = Fields::new("meta context request", data);
        let len = f.u32("export name length")?;
        let export = f.string(len as usize, MAX_STRING, "export name")?;
        let n = f.u32("query count")?;
        if n > MAX_QUERIES {
            return Err(Error::Corrupt(format!("{n} meta context queries (limit {MAX_QUERIES})")));
        }
        let mut queries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let len = f.u32("query length")?;
            queries.push(f.string(len as usize, MAX_STRING, "query")?);
        }
        f.end()?;
        Ok(MetaRequest { export, queries })
    }
}

/// The block size constraints of an export ("Block size constraints").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    pub minimum: u32,
    pub preferred: u32,
    pub maximum: u32,
}

impl BlockSize {
    /// What a server that sends no NBD_INFO_BLOCK_SIZE promises.
    pub const DEFAULT: BlockSize = BlockSize { minimum: 1, preferred: 4096, maximum: MAX_PAYLOAD };

    /// Checks the spec's rules: powers of two, minimum at most 64 KiB, preferred at least the minimum,
    /// maximum a multiple of the minimum (or 0xffffffff, "no limit").
    pub fn check(self) -> Result<Self> {
        let BlockSize { minimum, preferred, maximum } = self;
        let ok = minimum.is_power_of_two()
            && minimum <= 64 << 10
            && preferred.is_power_of_two()
            && preferred >= minimum
            && maximum >= minimum
            && (maximum == u32::MAX || maximum.is_multiple_of(minimum));
        if ok { Ok(self) } else { Err(Error::Corrupt(format!("block size constraints {self:?}"))) }
    }

    /// The largest request we send: the export's maximum, at most
    /// [`MAX_PAYLOAD`], a multiple of the minimum.
    pub fn max_request(&self) -> u32 {
        let m = self.maximum.min(MAX_PAYLOAD);
        m - m % self.minimum
    }
}

/// One NBD_REP_INFO payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    Export {
        size: u64,
        flags: u16,
    },
    BlockSize(BlockSize),
    /// NAME, DESCRIPTION and types we do not know: ignored, as the spec asks.
    Other(u16),
}

impl Info {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Info::Export { size, flags } => {
                b.put_u16(INFO_EXPORT);
                b.put_u64(*size);
                b.put_u16(*flags);
            }
            Info::BlockSize(s) => {
                b.put_u16(INFO_BLOCK_SIZE);
                b.put_u32(s.minimum);
                b.put_u32(s.preferred);
                b.put_u32(s.maximum);
            }
            Info::Other(t) => b.put_u16(*t),
        }
        b
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        let mut f = Fields::new("NBD_REP_INFO", data);
        let info = match f.u16("information type")? {
            INFO_EXPORT => Info::Export { size: f.u64("export size")?, flags: f.u16("transmission flags")? },
            INFO_BLOCK_SIZE => Info::BlockSize(
                BlockSize {
                    minimum: f.u32("minimum block size")?,
                    preferred: f.u32("preferred block size")?,
                    maximum: f.u32("maximum block size")?,
                }
                .check()?,
            ),
            other => {
                f.rest();
                Info::Other(other)
            }
        };
        f.end()?;
        Ok(info)
    }
}

/// One NBD_REP_META_CONTEXT payload: a context id and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContext {
    pub id: u32,
    pub name: String,
}

impl MetaContext {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_u32(self.id);
        b.extend_from_slice(self.name.as_bytes());
        b
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        let mut f = Fields::new("NBD_REP_META_CONTEXT", data);
        let id = f.u32("context id")?;
        let len = f.remaining();
        let name = f.string(len, MAX_STRING, "context name")?;
        Ok(MetaContext { id, name })
    }
}

/// The message of an option error reply, shown to the user.
pub fn error_message(data: &[u8]) -> String {
    let n = data.len().min(MAX_STRING as usize);
    String::from_utf8_lossy(&data[..n]).into_owned()
}

/// Fuzz entry: every option payload parser on arbitrary bytes. Errors are
/// expected; panics, hangs and large allocations are bugs.
pub fn fuzz_entry(data: &[u8]) {
    let _ = ExportRequest::parse(data);
    let _ = MetaRequest::parse(data);
    let _ = Info::parse(data);
    let _ = MetaContext::parse(data);
    let _ = error_message(data);
    if let Ok(raw) = <&[u8; 20]>::try_from(data.get(..20).unwrap_or_default()) {
        let _ = super::handshake::OptionReplyHeader::parse(raw);
    }
    if let Ok(raw) = <&[u8; 16]>::try_from(data.get(..16).unwrap_or_default()) {
        let _ = super::handshake::OptionHeader::parse(raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let r = ExportRequest { name: "disk".into(), infos: vec![INFO_BLOCK_SIZE] };
        assert_eq!(ExportRequest::parse(&r.encode()).unwrap(), r);
        let m = MetaRequest { export: "disk".into(), queries: vec!["base:allocation".into()] };
        assert_eq!(MetaRequest::parse(&m.encode()).unwrap(), m);
        let i = Info::Export { size: 1 << 40, flags: TFLAG_HAS_FLAGS };
        assert_eq!(Info::parse(&i.encode()).unwrap(), i);
        let b = Info::BlockSize(BlockSize { minimum: 512, preferred: 4096, maximum: 1 << 20 });
        assert_eq!(Info::parse(&b.encode()).unwrap(), b);
        let c = MetaContext { id: 7, name: "qemu:dirty-bitmap:b0".into() };
        assert_eq!(MetaContext::parse(&c.encode()).unwrap(), c);
    }

    #[test]
    fn hostile_payloads_are_refused() {
        // A name length that runs past the payload.
        let mut b = Vec::new();
        b.put_u32(1000);
        b.extend_from_slice(b"abc");
        assert!(ExportRequest::parse(&b).is_err());
        // Block sizes that are not powers of two, or a maximum below the minimum.
        for (min, pref, max) in [(3, 4096, 1 << 20), (512, 4096, 256), (1 << 20, 1 << 20, 1 << 20), (512, 4096, 1000)] {
            let i = Info::BlockSize(BlockSize { minimum: min, preferred: pref, maximum: max });
            assert!(Info::parse(&i.encode()).is_err(), "{min} {pref} {max}");
        }
        // Too many queries.
        let mut b = Vec::new();
        b.put_str32("x");
        b.put_u32(MAX_QUERIES + 1);
        assert!(MetaRequest::parse(&b).unwrap_err().to_string().contains("limit"));
        // Trailing bytes after an INFO_EXPORT.
        let mut b = Info::Export { size: 1, flags: 1 }.encode();
        b.push(0);
        assert!(Info::parse(&b).is_err());
    }

    #[test]
    fn max_request_is_a_multiple_of_the_minimum() {
        let b = BlockSize { minimum: 4096, preferred: 4096, maximum: u32::MAX };
        assert_eq!(b.max_request(), MAX_PAYLOAD);
        let b = BlockSize { minimum: 1, preferred: 4096, maximum: 1 << 20 };
        assert_eq!(b.max_request(), 1 << 20);
    }
}
