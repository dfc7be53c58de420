//! The client's reply reader: one task per connection reads every reply,
//! finds its request by cookie, and fills that request's state. Structured
//! chunks may come in any order and interleave between requests; each
//! request completes on its DONE chunk (or its simple reply).

use crate::nbd::consts::*;
use crate::nbd::error::{Error, Result};
use crate::nbd::reply::{self, ChunkHeader, ReplyHeader};
use crate::nbd::structured::{self, Chunk, Descriptor};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

/// What a finished request gives back.
#[derive(Debug)]
pub enum Outcome {
    Data(Vec<u8>),
    /// Descriptors per context id, as the server sent them.
    Status(HashMap<u32, Vec<Descriptor>>),
    Done,
}

pub enum State {
    Read {
        offset: u64,
        buf: Vec<u8>,
        /// Ranges received (start → end, relative to `offset`): chunks must
        /// neither overlap nor leave gaps.
        got: BTreeMap<u64, u64>,
    },
    Status {
        contexts: HashMap<u32, Vec<Descriptor>>,
    },
    Plain,
}

/// One request waiting for its reply.
pub struct Pending {
    pub state: State,
    pub error: Option<Error>,
    pub done: oneshot::Sender<Result<Outcome>>,
}

impl Pending {
    fn finish(self) {
        let result = match (self.error, self.state) {
            (Some(e), _) => Err(e),
            (None, State::Read { buf, got, .. }) => {
                let covered: u64 = got.iter().map(|(s, e)| e - s).sum();
                if covered == buf.len() as u64 {
                    Ok(Outcome::Data(buf))
                } else {
                    Err(Error::Corrupt(format!("read reply covered {covered} of {} bytes", buf.len())))
                }
            }
            (None, State::Status { contexts }) => Ok(Outcome::Status(contexts)),
            (None, State::Plain) => Ok(Outcome::Done),
        };
        // The requester may have timed out and gone: nothing to tell then.
        let _ = self.done.send(result);
    }

    /// Records `[start, start + len)` (absolute) as received; returns where
    /// it lies in the buffer. Out-of-range or overlapping chunks are corrupt.
    fn claim(&mut self, start: u64, len: u64) -> Result<std::ops::Range<usize>> {
        let State::Read { offset, buf, got } = &mut self.state else {
            return Err(Error::Corrupt("data chunk in the reply to a request that reads nothing".into()));
        };
        let rel = start.checked_sub(*offset).filter(|r| r.checked_add(len).is_some_and(|e| e <= buf.len() as u64));
        let rel = rel.ok_or_else(|| {
            Error::Corrupt(format!("chunk of {len} bytes at {start} outside the read of {} at {offset}", buf.len()))
        })?;
        let end = rel + len;
        let before = got.range(..end).next_back();
        if before.is_some_and(|(_, &e)| e > rel) {
            return Err(Error::Corrupt(format!("chunks overlap at offset {start}")));
        }
        got.insert(rel, end);
        Ok(rel as usize..end as usize)
    }

    fn apply(&mut self, chunk: Chunk) -> Result<()> {
        match chunk {
            Chunk::None => Ok(()),
            Chunk::Hole { offset, len } => {
                // The buffer starts zeroed and chunks cannot overlap, so a
                // hole's bytes are zeros already.
                self.claim(offset, u64::from(len)).map(|_| ())
            }
            Chunk::BlockStatus { context, extents } => {
                let State::Status { contexts } = &mut self.state else {
                    return Err(Error::Corrupt("block status in the reply to another command".into()));
                };
                if contexts.insert(context, extents).is_some() {
                    return Err(Error::Corrupt(format!("two block status chunks for context {context}")));
                }
                Ok(())
            }
            Chunk::Error { errno, message, offset } => {
                // The first error is what the caller sees; later ones add nothing.
                self.error.get_or_insert(Error::Server { errno, message, offset });
                Ok(())
            }
        }
    }
}

/// The requests in flight on one connection, by cookie.
#[derive(Default)]
pub struct InFlight {
    pub map: Mutex<HashMap<u64, Pending>>,
}

impl InFlight {
    fn take(&self, cookie: u64) -> Result<Pending> {
        let mut map = crate::util::lock(&self.map);
        map.remove(&cookie).ok_or_else(|| Error::Corrupt(format!("reply with unknown cookie {cookie}")))
    }

    fn put_back(&self, cookie: u64, p: Pending) {
        crate::util::lock(&self.map).insert(cookie, p);
    }

    /// Fails every request in flight (the connection is gone).
    pub fn fail_all(&self, why: &str) {
        let drained: Vec<Pending> = crate::util::lock(&self.map).drain().map(|(_, p)| p).collect();
        for p in drained {
            let _ = p.done.send(Err(Error::Closed(why.to_string())));
        }
    }
}

/// Reads and dispatches one reply. A reply that breaks the protocol fails
/// its own request with the reason, and the connection (the caller's loop).
pub async fn receive_one<R: AsyncRead + Unpin>(r: &mut R, inflight: &InFlight) -> Result<()> {
    let magic = r.read_u32().await?;
    let mut rest = [0u8; CHUNK_HEADER_LEN];
    let n = reply::rest_len(magic)?;
    r.read_exact(&mut rest[..n]).await?;
    let header = reply::parse(magic, &rest[..n])?;
    let (cookie, done) = match header {
        ReplyHeader::Simple { cookie, .. } => (cookie, true),
        ReplyHeader::Chunk(h) => {
            structured::check_len(&h)?;
            if h.kind == REPLY_TYPE_NONE && !h.done() {
                return Err(Error::Corrupt("NBD_REPLY_TYPE_NONE without DONE".into()));
            }
            (h.cookie, h.done())
        }
    };
    let mut p = inflight.take(cookie)?;
    let applied = match header {
        ReplyHeader::Simple { error, .. } => simple(r, &mut p, error).await,
        ReplyHeader::Chunk(h) => chunk(r, &mut p, h).await,
    };
    match applied {
        Ok(()) if done => p.finish(),
        Ok(()) => inflight.put_back(cookie, p),
        Err(e) => {
            let why = e.to_string();
            let _ = p.done.send(Err(e));
            return Err(Error::Closed(why));
        }
    }
    Ok(())
}

async fn simple<R: AsyncRead + Unpin>(r: &mut R, p: &mut Pending, error: u32) -> Result<()> {
    if error != 0 {
        p.error = Some(Error::Server { errno: error, message: String::new(), offset: None });
        return Ok(());
    }
    match &mut p.state {
        State::Read { buf, got, .. } => {
            r.read_exact(buf).await?;
            got.clear();
            got.insert(0, buf.len() as u64);
            Ok(())
        }
        State::Status { .. } => Err(Error::Corrupt("simple reply to BLOCK_STATUS".into())),
        State::Plain => Ok(()),
    }
}

async fn chunk<R: AsyncRead + Unpin>(r: &mut R, p: &mut Pending, h: ChunkHeader) -> Result<()> {
    if h.kind == REPLY_TYPE_OFFSET_DATA {
        let offset = r.read_u64().await?;
        let range = p.claim(offset, u64::from(h.len - 8))?;
        let State::Read { buf, .. } = &mut p.state else { unreachable!("claim checked the state") };
        r.read_exact(&mut buf[range]).await?;
        Ok(())
    } else {
        // check_len bounded the length by MAX_CHUNK_META.
        let mut payload = vec![0u8; h.len as usize];
        r.read_exact(&mut payload).await?;
        p.apply(structured::parse(h.kind, &payload)?)
    }
}

/// Fuzz entry: `data` as the reply stream of a hostile server while a READ
/// (cookie 1, 4096 bytes at 0), a BLOCK_STATUS (cookie 2) and a FLUSH
/// (cookie 3) are in flight. Errors are expected; panics, hangs and large
/// allocations are bugs.
pub fn fuzz_entry(data: &[u8]) {
    use futures_util::FutureExt;
    let inflight = InFlight::default();
    let mut waiting = Vec::new();
    let states = [
        State::Read { offset: 0, buf: vec![0; 4096], got: BTreeMap::new() },
        State::Status { contexts: HashMap::new() },
        State::Plain,
    ];
    for (cookie, state) in (1..).zip(states) {
        let (tx, rx) = oneshot::channel();
        waiting.push(rx);
        crate::util::lock(&inflight.map).insert(cookie, Pending { state, error: None, done: tx });
    }
    let mut r = data;
    // A slice never makes a read wait: each call completes at once.
    while let Some(Ok(())) = receive_one(&mut r, &inflight).now_or_never() {}
    for mut rx in waiting {
        if let Ok(Ok(Outcome::Data(buf))) = rx.try_recv() {
            assert_eq!(buf.len(), 4096);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::structured::{encode_data_header, encode_hole};

    #[test]
    fn replies_in_any_order_complete_their_requests() {
        let mut stream = encode_hole(0, 1, 0, 1024);
        stream.extend_from_slice(&crate::nbd::reply::encode_simple(0, 3));
        stream.extend_from_slice(&encode_data_header(REPLY_FLAG_DONE, 1, 1024, 3072));
        stream.extend_from_slice(&[7u8; 3072]);
        fuzz_entry(&stream);
        // Truncated and garbage streams end quietly.
        fuzz_entry(&stream[..30]);
        fuzz_entry(&[0xff; 64]);
    }
}
