//! "Newstyle negotiation" framing: the server's greeting, the client's
//! flags, option request headers and option reply headers, and the
//! old-style NBD_OPT_EXPORT_NAME answer.

use super::consts::*;
use super::error::{Error, Result};
use super::wire::Put;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags (18 bytes).
pub fn greeting(flags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(18);
    b.put_u64(NBD_MAGIC);
    b.put_u64(IHAVEOPT);
    b.put_u16(flags);
    b
}

/// Reads the server's greeting; returns its handshake flags. Oldstyle
/// servers and servers without fixed newstyle are refused.
pub async fn read_greeting<R: AsyncRead + Unpin>(r: &mut R) -> Result<u16> {
    let magic = r.read_u64().await?;
    if magic != NBD_MAGIC {
        return Err(Error::Corrupt(format!("greeting magic {magic:#x}, not NBDMAGIC: not an NBD server")));
    }
    let version = r.read_u64().await?;
    if version != IHAVEOPT {
        return Err(Error::Unsupported(format!("oldstyle negotiation (magic {version:#x})")));
    }
    let flags = r.read_u16().await?;
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(Error::Unsupported("a server without fixed newstyle negotiation".into()));
    }
    Ok(flags)
}

/// An option request header: IHAVEOPT, option, data length (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

impl OptionHeader {
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + data.len());
        b.put_u64(IHAVEOPT);
        b.put_u32(self.option);
        b.put_u32(self.len);
        b.extend_from_slice(data);
        b
    }

    pub fn parse(raw: &[u8; 16]) -> Result<Self> {
        let magic = u64::from_be_bytes(raw[0..8].try_into().expect("8"));
        if magic != IHAVEOPT {
            return Err(Error::Corrupt(format!("option magic {magic:#x}, not IHAVEOPT")));
        }
        Ok(OptionHeader {
            option: u32::from_be_bytes(raw[8..12].try_into().expect("4")),
            len: u32::from_be_bytes(raw[12..16].try_into().expect("4")),
        })
    }
}

/// Sends one option with its data.
pub async fn send_option<W: AsyncWrite + Unpin>(w: &mut W, option: u32, data: &[u8]) -> Result<()> {
    let len = u32::try_from(data.len()).ok().filter(|&n| n <= MAX_OPTION_DATA);
    let len = len.ok_or_else(|| Error::Range(format!("option data of {} bytes", data.len())))?;
    w.write_all(&OptionHeader { option, len }.encode(data)).await?;
    w.flush().await?;
    Ok(())
}

/// An option reply header: magic, option, reply type, length (20 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply: u32,
    pub len: u32,
}

impl OptionReplyHeader {
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(20 + data.len());
        b.put_u64(OPTION_REPLY_MAGIC);
        b.put_u32(self.option);
        b.put_u32(self.reply);
        b.put_u32(self.len);
        b.extend_from_slice(data);
        b
    }

    pub fn parse(raw: &[u8; 20]) -> Result<Self> {
        let magic = u64::from_be_bytes(raw[0..8].try_into().expect("8"));
        if magic != OPTION_REPLY_MAGIC {
            return Err(Error::Corrupt(format!("option reply magic {magic:#x}")));
        }
        let h = OptionReplyHeader {
            option: u32::from_be_bytes(raw[8..12].try_into().expect("4")),
            reply: u32::from_be_bytes(raw[12..16].try_into().expect("4")),
            len: u32::from_be_bytes(raw[16..20].try_into().expect("4")),
        };
        if h.len > MAX_OPTION_DATA {
            return Err(Error::Corrupt(format!(
                "option reply of {} bytes to option {} (limit {MAX_OPTION_DATA})",
                h.len, h.option
            )));
        }
        Ok(h)
    }
}

/// Reads one option reply to `option`: its type and payload (bounded by
/// [`MAX_OPTION_DATA`]). A reply to another option is corrupt.
pub async fn read_option_reply<R: AsyncRead + Unpin>(r: &mut R, option: u32) -> Result<(u32, Vec<u8>)> {
    let mut raw = [0u8; 20];
    r.read_exact(&mut raw).await?;
    let h = OptionReplyHeader::parse(&raw)?;
    if h.option != option {
        return Err(Error::Corrupt(format!("reply to option {} while option {option} was asked", h.option)));
    }
    let mut data = vec![0u8; h.len as usize];
    r.read_exact(&mut data).await?;
    Ok((h.reply, data))
}

/// Sends one option reply.
pub async fn send_option_reply<W: AsyncWrite + Unpin>(w: &mut W, option: u32, reply: u32, data: &[u8]) -> Result<()> {
    // Our own replies are small: an INFO or one context name.
    let h = OptionReplyHeader { option, reply, len: data.len() as u32 };
    w.write_all(&h.encode(data)).await?;
    w.flush().await?;
    Ok(())
}

/// The answer to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124
/// zero bytes unless the client set NO_ZEROES.
pub fn export_name_reply(size: u64, tflags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(10 + EXPORT_NAME_PADDING);
    b.put_u64(size);
    b.put_u16(tflags);
    if !no_zeroes {
        b.resize(10 + EXPORT_NAME_PADDING, 0);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let b = OptionHeader { option: OPT_GO, len: 3 }.encode(b"abc");
        let h = OptionHeader::parse(b[..16].try_into().unwrap()).unwrap();
        assert_eq!(h, OptionHeader { option: OPT_GO, len: 3 });
        let b = OptionReplyHeader { option: OPT_GO, reply: REP_ACK, len: 0 }.encode(&[]);
        let h = OptionReplyHeader::parse(b[..20].try_into().unwrap()).unwrap();
        assert_eq!(h.reply, REP_ACK);
    }

    #[test]
    fn oversized_option_replies_are_refused() {
        let b = OptionReplyHeader { option: OPT_GO, reply: REP_INFO, len: MAX_OPTION_DATA + 1 }.encode(&[]);
        let e = OptionReplyHeader::parse(b[..20].try_into().unwrap()).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }
}
