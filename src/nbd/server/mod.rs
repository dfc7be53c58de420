//! The NBD server: `run(listener, exports, shutdown)`, one task per
//! connection (at most [`MAX_CONNECTIONS`]), negotiation
//! ([`negotiate`]), then concurrent requests ([`transmission`],
//! [`command`]) against an [`Export`] found by name in an [`ExportTable`].
//!
//! Restore points are exported read-only over any `ReadAt`
//! ([`ReadOnly`]); writable exports implement [`Writable`] (the push target
//! will, over the image sink).

mod command;
mod export;
mod negotiate;
mod tls;
mod transmission;

pub use export::{Export, ExportTable, MemExport, ReadOnly, Writable};
pub use negotiate::Session;
pub use tls::{Tls, is_local};

use futures_util::future::{Either, select};
use std::io;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 256;
/// Requests of one connection being worked on at once; the reader waits
/// for a free slot before reading the next request.
pub const MAX_OUTSTANDING: usize = 64;
/// READ and WRITE buffers one connection may hold at once: two maximal
/// requests, so one client cannot make the server hold more than this.
pub const MAX_BUFFERED_BYTES: usize = 2 * crate::nbd::consts::MAX_PAYLOAD as usize;
/// Chunks in one structured READ reply before the rest is sent as data.
pub const MAX_READ_CHUNKS: usize = 4096;
/// Descriptors in one BLOCK_STATUS reply (the client asks again).
pub const MAX_STATUS_EXTENTS: usize = 1 << 16;
/// From accept to the end of negotiation: an idle half-open connection
/// cannot hold a slot for longer.
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The default listen address (the IANA port, loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10809";

/// The daemon's one NBD listener as the rest of the daemon sees it: the
/// table that push targets and restore-point exports are published in, and
/// the address clients are told to connect to.
#[derive(Clone)]
pub struct NbdService {
    pub exports: ExportTable,
    /// `HOST:PORT` or `unix:PATH`, as [`Listener::local_addr`] gives it.
    pub addr: String,
}

impl NbdService {
    /// The URI of export `name`: `nbd://HOST:PORT/NAME`, or
    /// `nbd+unix:///NAME?socket=PATH` for a unix socket.
    pub fn uri(&self, name: &str) -> String {
        match self.addr.strip_prefix("unix:") {
            Some(p) => format!("nbd+unix:///{name}?socket={p}"),
            None => format!("nbd://{}/{name}", self.addr),
        }
    }
}

/// A bound listener: TCP or a unix socket.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

impl Listener {
    /// Binds `HOST:PORT` or `unix:PATH`. A unix socket is created with mode
    /// 0600: export names are the only key, so only the owner may connect.
    /// Must be called inside a tokio runtime.
    pub async fn bind(addr: &str) -> io::Result<Listener> {
        if let Some(path) = addr.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            let l = tokio::net::UnixListener::bind(&path)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(Listener::Unix(l, path));
        }
        Ok(Listener::Tcp(tokio::net::TcpListener::bind(addr).await?))
    }

    /// Where it listens: `HOST:PORT` or `unix:PATH`.
    pub fn local_addr(&self) -> io::Result<String> {
        match self {
            Listener::Tcp(l) => Ok(l.local_addr()?.to_string()),
            Listener::Unix(_, p) => Ok(format!("unix:{}", p.display())),
        }
    }

    async fn accept(&self) -> io::Result<Box<dyn Stream>> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Listener::Unix(l, _) => Box::new(l.accept().await?.0),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Serves `exports` on `listener` until `shutdown` completes; then stops
/// accepting, lets every connection finish the requests it has read, and
/// returns.
pub async fn run(listener: Listener, exports: ExportTable, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    run_tls(listener, exports, None, shutdown).await
}

/// [`run`], requiring STARTTLS first when `tls` is set ([`tls`]).
pub async fn run_tls(
    listener: Listener,
    exports: ExportTable,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (tx, rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = pin!(shutdown);
    let mut conns = JoinSet::new();
    loop {
        let accepted = match select(shutdown.as_mut(), pin!(listener.accept())).await {
            Either::Left(_) => break,
            Either::Right((a, _)) => a,
        };
        while conns.try_join_next().is_some() {}
        let stream = match accepted {
            Ok(s) => s,
            // Out of descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let (exports, rx, tls) = (exports.clone(), rx.clone(), tls.clone());
        conns.spawn(async move {
            let _slot = slot;
            connection(stream, exports, tls, rx).await;
        });
    }
    let _ = tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

async fn connection(stream: Box<dyn Stream>, exports: ExportTable, tls: Option<Tls>, shutdown: watch::Receiver<bool>) {
    let negotiated = tokio::time::timeout(NEGOTIATION_TIMEOUT, tls::negotiate(stream, &exports, tls.as_ref())).await;
    if let Ok(Ok(Some((stream, sess)))) = negotiated {
        transmission::serve(stream, sess, exports, shutdown).await;
    }
}
