//! The transmission phase of one connection: a loop reads requests (and
//! WRITE payloads, so the stream stays in sync even when a request fails),
//! and each request runs as its own task, so several are outstanding at
//! once; replies are written whole under the writer lock. Bad requests get
//! an NBD error, never a dropped connection.

use super::command;
use super::negotiate::Session;
use super::{ExportTable, MAX_BUFFERED_BYTES, MAX_OUTSTANDING};
use crate::nbd::consts::*;
use crate::nbd::request::Request;
use futures_util::future::{Either, select};
use std::pin::pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;

/// Serves requests until DISC, EOF, a broken request header or shutdown.
pub async fn serve<S>(stream: S, sess: Session, table: ExportTable, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut r, w) = tokio::io::split(stream);
    let w = Arc::new(Mutex::new(w));
    let slots = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let bytes = Arc::new(Semaphore::new(MAX_BUFFERED_BYTES));
    let sess = Arc::new(sess);
    let mut tasks = JoinSet::new();
    loop {
        let mut raw = [0u8; REQUEST_HEADER_LEN];
        let stop = pin!(shutdown.wait_for(|&s| s));
        match select(pin!(r.read_exact(&mut raw)), stop).await {
            Either::Left((Ok(_), _)) => {}
            _ => break,
        }
        // A header that is not one leaves no way to find the next: close.
        let Ok(req) = Request::parse(&raw) else { break };
        if req.kind == CMD_DISC {
            break;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        // Reads and writes hold their buffer's size in the byte budget.
        let buffered = if matches!(req.kind, CMD_READ | CMD_WRITE) { req.len.min(MAX_PAYLOAD) } else { 0 };
        let Ok(budget) = bytes.clone().acquire_many_owned(buffered).await else { break };
        let payload = match req.kind {
            CMD_WRITE => match read_payload(&mut r, req.len).await {
                Ok(p) => p,
                Err(_) => break,
            },
            _ => None,
        };
        let (sess, table, w) = (sess.clone(), table.clone(), w.clone());
        tasks.spawn(async move {
            let reply = tokio::task::spawn_blocking(move || command::execute(&sess, &table, req, payload)).await;
            // A panicking export must not leave the client waiting forever.
            let reply = reply.unwrap_or_else(|_| command::error_reply(req, EIO, "internal error", false));
            let mut w = w.lock().await;
            let ok = w.write_all(&reply).await.is_ok() && w.flush().await.is_ok();
            drop((slot, budget));
            ok
        });
        while let Some(done) = tasks.try_join_next() {
            if !matches!(done, Ok(true)) {
                tasks.abort_all();
                return;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let _ = w.lock().await.shutdown().await;
}

/// A WRITE's payload: `None` when it is over [`MAX_PAYLOAD`] (read and
/// dropped in pieces, never buffered; the request then fails).
async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, len: u32) -> std::io::Result<Option<Vec<u8>>> {
    if len > MAX_PAYLOAD {
        let mut left = u64::from(len);
        let mut sink = vec![0u8; 64 << 10];
        while left > 0 {
            let n = left.min(sink.len() as u64) as usize;
            r.read_exact(&mut sink[..n]).await?;
            left -= n as u64;
        }
        return Ok(None);
    }
    let mut data = vec![0u8; len as usize];
    r.read_exact(&mut data).await?;
    Ok(Some(data))
}
