//! The connection loop: axum's `serve` has no header-read timeout and no
//! connection cap, so 1,100 clients that never finish their headers held
//! every file descriptor and `/health` went unanswered (issue 12 item 3,
//! before the token check, from the network). Here every connection must
//! send a complete request head within the header timeout (which also
//! closes idle keep-alive connections), and at most `max_connections` are
//! served at once: further clients wait in the listen backlog until one
//! ends, while the descriptors left serve the repository's files.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// How long a client has to send a whole request head, and how long an
/// idle keep-alive connection stays open.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections served at once by default; the daemon lowers it to fit
/// the open-file limit.
pub const MAX_CONNECTIONS: usize = 512;

/// Serves `app` on `listener` until `shutdown`, then lets the requests in
/// flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                // Out of descriptors or a client gone mid-handshake: the
                // listener is fine, try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let svc = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    // Wait for the connections to finish their requests.
    let _ = slots.acquire_many(max_connections.max(1) as u32).await;
    Ok(())
}
