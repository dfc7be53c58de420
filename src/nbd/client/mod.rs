//! The NBD client: negotiate, then issue requests concurrently on one
//! connection. Requests carry a cookie; a reader task ([`receive`]) routes
//! each reply to its request. A request that times out, or any protocol
//! error, closes the connection and fails every request in flight: a
//! stalled or broken server fails the job, it never hangs it.

mod negotiate;
mod receive;

pub use negotiate::Negotiated;
pub use receive::fuzz_entry as fuzz_replies;

use super::consts::*;
use super::error::{Error, Result};
use super::request::Request;
use super::structured::Descriptor;
use receive::{InFlight, Outcome, Pending, State};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    pub export: String,
    /// Metadata contexts to ask for (exact names).
    pub contexts: Vec<String>,
    /// Ask for structured replies (needed for block status and holes).
    pub structured: bool,
    /// For the TCP or unix connect and the whole negotiation.
    pub connect_timeout: Duration,
    /// For each request, from send to its last reply chunk.
    pub request_timeout: Duration,
}

impl Options {
    pub fn new(export: &str) -> Self {
        Options {
            export: export.into(),
            contexts: vec![CONTEXT_BASE_ALLOCATION.into()],
            structured: true,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// One extent of a metadata context, in absolute bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub flags: u32,
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A negotiated connection in the transmission phase. Share it (`&self`
/// methods): requests from many tasks run concurrently.
pub struct Client {
    info: Negotiated,
    writer: tokio::sync::Mutex<Writer>,
    inflight: Arc<InFlight>,
    /// Why the connection is unusable, once it is.
    dead: Arc<Mutex<Option<String>>>,
    next_cookie: AtomicU64,
    request_timeout: Duration,
    reader: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects and negotiates, all within `opts.connect_timeout`.
    pub async fn connect(endpoint: &Endpoint, opts: &Options) -> Result<Client> {
        let fut = async {
            match endpoint {
                Endpoint::Tcp { host, port } => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Client::handshake(s, opts).await
                }
                Endpoint::Unix(path) => Client::handshake(tokio::net::UnixStream::connect(path).await?, opts).await,
            }
        };
        tokio::time::timeout(opts.connect_timeout, fut).await.map_err(|_| Error::Timeout(opts.connect_timeout))?
    }

    /// Negotiates over an established stream (tests use in-memory pipes).
    pub async fn handshake<S>(mut stream: S, opts: &Options) -> Result<Client>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let info = negotiate::negotiate(&mut stream, &opts.export, &opts.contexts, opts.structured).await?;
        let (mut r, w) = tokio::io::split(stream);
        let inflight = Arc::new(InFlight::default());
        let dead = Arc::new(Mutex::new(None));
        let (inflight2, dead2) = (inflight.clone(), dead.clone());
        let reader = tokio::spawn(async move {
            let why = loop {
                if let Err(e) = receive::receive_one(&mut r, &inflight2).await {
                    break e.to_string();
                }
            };
            mark_dead(&dead2, &inflight2, &why);
        });
        Ok(Client {
            info,
            writer: tokio::sync::Mutex::new(Box::new(w)),
            inflight,
            dead,
            next_cookie: AtomicU64::new(1),
            request_timeout: opts.request_timeout,
            reader,
        })
    }

    /// What negotiation settled: size, flags, block sizes, contexts.
    pub fn info(&self) -> &Negotiated {
        &self.info
    }

    /// Reads `len` bytes at `offset`. The range must lie inside the export,
    /// be aligned to the minimum block size and be at most the maximum.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.check(offset, len)?;
        let state = State::Read { offset, buf: vec![0u8; len as usize], got: BTreeMap::new() };
        match self.request(CMD_READ, 0, offset, len, state).await? {
            Outcome::Data(buf) => Ok(buf),
            o => Err(Error::Corrupt(format!("read answered with {o:?}"))),
        }
    }

    /// One BLOCK_STATUS request for `[offset, offset + len)`: the extents
    /// of context `id` from `offset`, clipped to the request. They may
    /// cover less than asked (ask again from their end); never nothing.
    pub async fn block_status(&self, id: u32, offset: u64, len: u32) -> Result<Vec<Extent>> {
        if !self.info.contexts.iter().any(|c| c.id == id) {
            return Err(Error::Range(format!("context id {id} was not granted")));
        }
        self.check_range(offset, len)?;
        let state = State::Status { contexts: HashMap::new() };
        let Outcome::Status(mut all) = self.request(CMD_BLOCK_STATUS, 0, offset, len, state).await? else {
            return Err(Error::Corrupt("block status answered without status".into()));
        };
        let descriptors = all.remove(&id).ok_or_else(|| Error::Corrupt(format!("no block status for context {id}")))?;
        Ok(clip(&descriptors, offset, offset + u64::from(len)))
    }

    /// NBD_CMD_FLUSH, when the server offers it (a no-op otherwise).
    pub async fn flush(&self) -> Result<()> {
        if self.info.flags & TFLAG_SEND_FLUSH == 0 {
            return Ok(());
        }
        self.request(CMD_FLUSH, 0, 0, 0, State::Plain).await.map(|_| ())
    }

    /// Sends NBD_CMD_DISC and closes the connection.
    pub async fn disconnect(&self) -> Result<()> {
        let req = Request { flags: 0, kind: CMD_DISC, cookie: 0, offset: 0, len: 0 };
        let mut w = self.writer.lock().await;
        w.write_all(&req.encode()).await?;
        w.shutdown().await?;
        mark_dead(&self.dead, &self.inflight, "disconnected");
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u32) -> Result<()> {
        let end = offset.checked_add(u64::from(len)).filter(|&e| e <= self.info.size && len > 0);
        match end {
            Some(_) => Ok(()),
            None => Err(Error::Range(format!("{len} bytes at {offset} of a {}-byte export", self.info.size))),
        }
    }

    fn check(&self, offset: u64, len: u32) -> Result<()> {
        self.check_range(offset, len)?;
        let b = &self.info.block;
        let min = u64::from(b.minimum);
        // The last block of an export whose size is not a multiple of the
        // minimum can only be read short.
        let tail = offset + u64::from(len) == self.info.size;
        if len > b.max_request() || !offset.is_multiple_of(min) || (!u64::from(len).is_multiple_of(min) && !tail) {
            return Err(Error::Range(format!("{len} bytes at {offset} breaks the block sizes {b:?}")));
        }
        Ok(())
    }

    async fn request(&self, kind: u16, flags: u16, offset: u64, len: u32, state: State) -> Result<Outcome> {
        let cookie = self.next_cookie.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            // Registered under the lock that mark_dead takes, so a request
            // never waits on a connection that is already gone.
            let dead = crate::util::lock(&self.dead);
            if let Some(why) = dead.as_ref() {
                return Err(Error::Closed(why.clone()));
            }
            let p = Pending { state, error: None, done: tx };
            crate::util::lock(&self.inflight.map).insert(cookie, p);
        }
        let req = Request { flags, kind, cookie, offset, len };
        let sent = async {
            let mut w = self.writer.lock().await;
            w.write_all(&req.encode()).await?;
            w.flush().await
        };
        let waited = async {
            sent.await.map_err(Error::Io)?;
            rx.await.map_err(|_| Error::Closed(String::new()))?
        };
        match tokio::time::timeout(self.request_timeout, waited).await {
            Ok(Err(e)) => {
                if matches!(e, Error::Io(_)) {
                    self.poison(&e.to_string());
                }
                Err(e)
            }
            Ok(Ok(o)) => Ok(o),
            Err(_) => {
                self.poison(&format!("no reply within {:?}", self.request_timeout));
                Err(Error::Timeout(self.request_timeout))
            }
        }
    }

    /// Closes the connection for good: a late reply could otherwise land
    /// in a reused buffer, and a stalled server would hold every caller.
    fn poison(&self, why: &str) {
        self.reader.abort();
        mark_dead(&self.dead, &self.inflight, why);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn mark_dead(dead: &Mutex<Option<String>>, inflight: &InFlight, why: &str) {
    let mut d = crate::util::lock(dead);
    d.get_or_insert_with(|| why.to_string());
    inflight.fail_all(why);
}

/// Descriptors starting at `start`, as absolute extents cut at `end` (the
/// last one may run past the request; the spec allows it).
fn clip(descriptors: &[Descriptor], start: u64, end: u64) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut at = start;
    for d in descriptors {
        if at >= end {
            break;
        }
        let len = u64::from(d.len).min(end - at);
        out.push(Extent { offset: at, len, flags: d.flags });
        at += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_the_overrun() {
        let d =
            [Descriptor { len: 100, flags: 1 }, Descriptor { len: 1000, flags: 0 }, Descriptor { len: 5, flags: 1 }];
        let e = clip(&d, 50, 300);
        assert_eq!(e, vec![Extent { offset: 50, len: 100, flags: 1 }, Extent { offset: 150, len: 150, flags: 0 }]);
    }
}
