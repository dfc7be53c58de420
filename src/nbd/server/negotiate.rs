//! The server's side of fixed newstyle negotiation, one function per
//! option. Unknown options (extended headers, STARTTLS without TLS, ...)
//! get ERR_UNSUP and negotiation goes on; only a broken framing closes the
//! connection. Export names are never listed (OPT_LIST → ERR_POLICY).

use super::export::{Export, ExportTable};
use crate::nbd::consts::*;
use crate::nbd::error::{Error, Result};
use crate::nbd::handshake::{OptionHeader, export_name_reply, greeting, send_option_reply};
use crate::nbd::option::{ExportRequest, Info, MetaContext, MetaRequest};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The one metadata context we serve, and its id.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// What a connection settled on for the transmission phase.
#[derive(Clone)]
pub struct Session {
    pub name: String,
    pub export: Arc<dyn Export>,
    pub structured: bool,
    /// base:allocation was selected for this export.
    pub allocation: bool,
    pub flags: u16,
}

/// Transmission flags of an export.
pub fn flags_of(export: &dyn Export) -> u16 {
    let base = TFLAG_HAS_FLAGS | TFLAG_CAN_MULTI_CONN;
    match export.writer() {
        None => base | TFLAG_READ_ONLY,
        Some(_) => {
            base | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_FAST_ZERO
        }
    }
}

#[derive(Default)]
struct State {
    structured: bool,
    /// The export that SET_META_CONTEXT selected base:allocation for.
    meta_export: Option<String>,
}

/// Negotiates; `None` when the client leaves (ABORT, a bad export name with
/// OPT_EXPORT_NAME, broken framing, too many options).
pub async fn negotiate<S>(s: &mut S, table: &ExportTable) -> Result<Option<Session>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let no_zeroes = greet(s).await?;
    options(s, table, no_zeroes, false).await
}

/// The greeting and the client's flags; true when it asked for NO_ZEROES.
pub async fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<bool> {
    s.write_all(&greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)).await?;
    s.flush().await?;
    let cflags = s.read_u32().await?;
    if cflags & CLIENT_FIXED_NEWSTYLE == 0 || cflags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
        return Err(Error::Unsupported(format!("client flags {cflags:#x}")));
    }
    Ok(cflags & CLIENT_NO_ZEROES != 0)
}

/// One option request: its header and data (at most [`MAX_OPTION_DATA`]).
pub async fn read_option<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<(OptionHeader, Vec<u8>)> {
    let mut raw = [0u8; 16];
    s.read_exact(&mut raw).await?;
    let h = OptionHeader::parse(&raw)?;
    if h.len > MAX_OPTION_DATA {
        send_option_reply(s, h.option, REP_ERR_TOO_BIG, b"option data too long").await?;
        return Err(Error::Corrupt(format!("option data of {} bytes", h.len)));
    }
    let mut data = vec![0u8; h.len as usize];
    s.read_exact(&mut data).await?;
    Ok((h, data))
}

/// The option haggling after the greeting (after STARTTLS when `tls`).
pub async fn options<S>(s: &mut S, table: &ExportTable, no_zeroes: bool, tls: bool) -> Result<Option<Session>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut st = State::default();
    for _ in 0..MAX_OPTIONS {
        let (h, data) = read_option(s).await?;
        let done = match h.option {
            OPT_EXPORT_NAME => return export_name(s, table, &data, &st, no_zeroes).await,
            OPT_ABORT => {
                let _ = send_option_reply(s, h.option, REP_ACK, &[]).await;
                return Ok(None);
            }
            OPT_LIST => refuse(s, h.option, REP_ERR_POLICY, "export names are not listed").await?,
            OPT_STARTTLS if tls => refuse(s, h.option, REP_ERR_INVALID, "TLS is on already").await?,
            OPT_STARTTLS => refuse(s, h.option, REP_ERR_UNSUP, "TLS is not enabled").await?,
            OPT_INFO | OPT_GO => info(s, table, h.option, &data, &st).await?,
            OPT_STRUCTURED_REPLY if data.is_empty() => {
                st.structured = true;
                send_option_reply(s, h.option, REP_ACK, &[]).await?;
                None
            }
            OPT_STRUCTURED_REPLY => refuse(s, h.option, REP_ERR_INVALID, "no data expected").await?,
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => meta_context(s, table, h.option, &data, &mut st).await?,
            _ => refuse(s, h.option, REP_ERR_UNSUP, "unsupported option").await?,
        };
        if done.is_some() {
            return Ok(done);
        }
    }
    Err(Error::Corrupt(format!("more than {MAX_OPTIONS} options")))
}

pub async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, option: u32, rep: u32, msg: &str) -> Result<Option<Session>> {
    send_option_reply(s, option, rep, msg.as_bytes()).await?;
    Ok(None)
}

fn session(name: &str, export: Arc<dyn Export>, st: &State) -> Session {
    Session {
        name: name.to_string(),
        flags: flags_of(&*export),
        export,
        structured: st.structured,
        allocation: st.structured && st.meta_export.as_deref() == Some(name),
    }
}

/// OPT_EXPORT_NAME: no error reply exists, so an unknown name closes.
async fn export_name<S>(s: &mut S, table: &ExportTable, data: &[u8], st: &State, nz: bool) -> Result<Option<Session>>
where
    S: AsyncWrite + Unpin,
{
    let Some((name, export)) = std::str::from_utf8(data).ok().and_then(|n| Some((n, table.get(n)?))) else {
        return Ok(None);
    };
    let sess = session(name, export, st);
    s.write_all(&export_name_reply(sess.export.size(), sess.flags, nz)).await?;
    s.flush().await?;
    Ok(Some(sess))
}

/// OPT_INFO and OPT_GO: INFO_EXPORT and INFO_BLOCK_SIZE, then ACK; GO
/// enters the transmission phase.
async fn info<S>(s: &mut S, table: &ExportTable, option: u32, data: &[u8], st: &State) -> Result<Option<Session>>
where
    S: AsyncWrite + Unpin,
{
    let Ok(req) = ExportRequest::parse(data) else {
        return refuse(s, option, REP_ERR_INVALID, "malformed request").await;
    };
    let Some(export) = table.get(&req.name) else {
        return refuse(s, option, REP_ERR_UNKNOWN, "no such export").await;
    };
    let sess = session(&req.name, export, st);
    let infos =
        [Info::Export { size: sess.export.size(), flags: sess.flags }, Info::BlockSize(sess.export.block_size())];
    for i in infos {
        send_option_reply(s, option, REP_INFO, &i.encode()).await?;
    }
    send_option_reply(s, option, REP_ACK, &[]).await?;
    Ok((option == OPT_GO).then_some(sess))
}

/// LIST/SET_META_CONTEXT: only `base:allocation` exists (`base:` and an
/// empty LIST query list name it too).
async fn meta_context<S>(
    s: &mut S,
    table: &ExportTable,
    option: u32,
    data: &[u8],
    st: &mut State,
) -> Result<Option<Session>>
where
    S: AsyncWrite + Unpin,
{
    let set = option == OPT_SET_META_CONTEXT;
    let Ok(req) = MetaRequest::parse(data) else {
        return refuse(s, option, REP_ERR_INVALID, "malformed request").await;
    };
    if set && !st.structured {
        return refuse(s, option, REP_ERR_INVALID, "structured replies must be negotiated first").await;
    }
    if table.get(&req.export).is_none() {
        return refuse(s, option, REP_ERR_UNKNOWN, "no such export").await;
    }
    let matches = |q: &String| q == CONTEXT_BASE_ALLOCATION || (!set && q == "base:");
    let granted = req.queries.iter().any(matches) || (!set && req.queries.is_empty());
    if granted {
        let c = MetaContext { id: BASE_ALLOCATION_ID, name: CONTEXT_BASE_ALLOCATION.into() };
        send_option_reply(s, option, REP_META_CONTEXT, &c.encode()).await?;
    }
    if set {
        st.meta_export = granted.then_some(req.export);
    }
    send_option_reply(s, option, REP_ACK, &[]).await?;
    Ok(None)
}
