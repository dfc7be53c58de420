//! The client's side of fixed newstyle negotiation, one function per option:
//! STRUCTURED_REPLY, SET_META_CONTEXT, then GO (with EXPORT_NAME for servers
//! that answer GO with ERR_UNSUP). Every reply is bounded and checked.

use crate::nbd::consts::*;
use crate::nbd::error::{Error, Result, rep_error_name};
use crate::nbd::handshake::{read_greeting, read_option_reply, send_option};
use crate::nbd::option::{BlockSize, ExportRequest, Info, MetaContext, MetaRequest, error_message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What negotiation settled for the transmission phase.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub size: u64,
    /// Transmission flags (0 when the server did not set HAS_FLAGS).
    pub flags: u16,
    pub block: BlockSize,
    pub structured: bool,
    /// The contexts the server granted, by id.
    pub contexts: Vec<MetaContext>,
}

impl Negotiated {
    /// The id of a granted context, by name.
    pub fn context_id(&self, name: &str) -> Option<u32> {
        self.contexts.iter().find(|c| c.name == name).map(|c| c.id)
    }

    pub fn read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }

    pub fn can_multi_conn(&self) -> bool {
        self.flags & TFLAG_CAN_MULTI_CONN != 0
    }
}

/// Runs the whole negotiation on a fresh connection.
pub async fn negotiate<S>(s: &mut S, export: &str, contexts: &[String], structured: bool) -> Result<Negotiated>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if export.len() > MAX_STRING as usize || contexts.iter().any(|c| c.len() > MAX_STRING as usize) {
        return Err(Error::Range(format!("export or context name longer than {MAX_STRING} bytes")));
    }
    let hflags = read_greeting(s).await?;
    let no_zeroes = hflags & FLAG_NO_ZEROES != 0;
    s.write_u32(CLIENT_FIXED_NEWSTYLE | if no_zeroes { CLIENT_NO_ZEROES } else { 0 }).await?;
    let structured = structured && structured_reply(s).await?;
    let granted =
        if structured && !contexts.is_empty() { set_meta_context(s, export, contexts).await? } else { vec![] };
    let (size, flags, block) = go(s, export, no_zeroes).await?;
    Ok(Negotiated { size, flags, block, structured, contexts: granted })
}

/// An option error reply: `Ok(Some(kind))` for the refusals a client
/// handles (the option is simply not available), `Err` otherwise.
fn refusal(option: u32, reply: u32, data: &[u8]) -> Result<Option<u32>> {
    if reply & REP_FLAG_ERROR == 0 {
        return Err(Error::Corrupt(format!("option {option}: unexpected reply type {reply}")));
    }
    match reply {
        REP_ERR_UNSUP | REP_ERR_POLICY | REP_ERR_INVALID | REP_ERR_PLATFORM => Ok(Some(reply)),
        _ => Err(Error::Refused { option, kind: rep_error_name(reply), message: error_message(data) }),
    }
}

async fn structured_reply<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<bool> {
    send_option(s, OPT_STRUCTURED_REPLY, &[]).await?;
    let (reply, data) = read_option_reply(s, OPT_STRUCTURED_REPLY).await?;
    match reply {
        REP_ACK if data.is_empty() => Ok(true),
        REP_ACK => Err(Error::Corrupt("ACK with a payload".into())),
        _ => refusal(OPT_STRUCTURED_REPLY, reply, &data).map(|_| false),
    }
}

/// Asks for `queries` (exact context names); returns those granted. A
/// server without metadata contexts grants none.
async fn set_meta_context<S>(s: &mut S, export: &str, queries: &[String]) -> Result<Vec<MetaContext>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = MetaRequest { export: export.into(), queries: queries.to_vec() };
    send_option(s, OPT_SET_META_CONTEXT, &req.encode()).await?;
    let mut granted: Vec<MetaContext> = Vec::new();
    for _ in 0..MAX_OPTION_REPLIES {
        let (reply, data) = read_option_reply(s, OPT_SET_META_CONTEXT).await?;
        match reply {
            REP_ACK => return Ok(granted),
            REP_META_CONTEXT => {
                let c = MetaContext::parse(&data)?;
                if !queries.contains(&c.name) {
                    return Err(Error::Corrupt(format!("granted context {:?}, which was not asked for", c.name)));
                }
                if granted.iter().any(|g| g.id == c.id || g.name == c.name) {
                    return Err(Error::Corrupt(format!("context id {} granted twice", c.id)));
                }
                granted.push(c);
            }
            // ERR_UNKNOWN for a missing export: OPT_GO reports it clearly.
            REP_ERR_UNKNOWN => return Ok(vec![]),
            _ => return refusal(OPT_SET_META_CONTEXT, reply, &data).map(|_| vec![]),
        }
    }
    Err(Error::Corrupt(format!("more than {MAX_OPTION_REPLIES} replies to SET_META_CONTEXT")))
}

/// NBD_OPT_GO with NBD_INFO_BLOCK_SIZE: size, transmission flags, block sizes.
async fn go<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    no_zeroes: bool,
) -> Result<(u64, u16, BlockSize)> {
    let req = ExportRequest { name: export.into(), infos: vec![INFO_BLOCK_SIZE] };
    send_option(s, OPT_GO, &req.encode()).await?;
    let mut export_info = None;
    let mut block = BlockSize::DEFAULT;
    for _ in 0..MAX_OPTION_REPLIES {
        let (reply, data) = read_option_reply(s, OPT_GO).await?;
        match reply {
            REP_INFO => match Info::parse(&data)? {
                Info::Export { size, flags } => export_info = Some((size, flags)),
                Info::BlockSize(b) => block = b,
                Info::Other(_) => {}
            },
            REP_ACK => {
                let (size, flags) =
                    export_info.ok_or_else(|| Error::Corrupt("OPT_GO ended without NBD_INFO_EXPORT".into()))?;
                return finish(size, flags, block);
            }
            REP_ERR_UNKNOWN => return Err(Error::NoSuchExport(export.into())),
            REP_ERR_UNSUP => return export_name(s, export, no_zeroes).await,
            _ => {
                refusal(OPT_GO, reply, &data)?;
                return Err(Error::Refused {
                    option: OPT_GO,
                    kind: rep_error_name(reply),
                    message: error_message(&data),
                });
            }
        }
    }
    Err(Error::Corrupt(format!("more than {MAX_OPTION_REPLIES} replies to OPT_GO")))
}

/// The old way in, for servers without OPT_GO: no error reply exists, so a
/// missing export is a closed connection.
async fn export_name<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    no_zeroes: bool,
) -> Result<(u64, u16, BlockSize)> {
    send_option(s, OPT_EXPORT_NAME, export.as_bytes()).await?;
    let size = s.read_u64().await.map_err(|_| Error::NoSuchExport(export.into()))?;
    let flags = s.read_u16().await?;
    if !no_zeroes {
        let mut pad = [0u8; EXPORT_NAME_PADDING];
        s.read_exact(&mut pad).await?;
    }
    finish(size, flags, BlockSize::DEFAULT)
}

fn finish(size: u64, flags: u16, block: BlockSize) -> Result<(u64, u16, BlockSize)> {
    if size > i64::MAX as u64 {
        return Err(Error::Corrupt(format!("export size {size}")));
    }
    let flags = if flags & TFLAG_HAS_FLAGS != 0 { flags } else { 0 };
    Ok((size, flags, block))
}
