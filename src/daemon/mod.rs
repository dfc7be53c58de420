//! `backchain serve`: assembles the daemon out of the library. It builds the
//! runtime, opens the repository (filling it with the demo when asked),
//! keeps a FUSE mount of the whole repository when asked, and runs the HTTP
//! API and the NBD listener ([`nbd`]) until Ctrl-C or SIGTERM. The
//! scheduler will be started here too.

mod demo;
pub mod nbd;
pub mod token;

use crate::api;
use crate::engine::EngineError;
use crate::repo::{Repo, RepoError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::restore::{DEFAULT_IDLE_SECS, DEFAULT_MAX_SESSIONS};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8082";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Mount(#[from] backchain_fuse::MountError),
}

impl From<RepoError> for ServeError {
    fn from(e: RepoError) -> Self {
        ServeError::Engine(e.into())
    }
}

/// What `backchain serve` was asked for.
pub struct Config {
    pub repo: PathBuf,
    pub listen: String,
    pub token_file: Option<PathBuf>,
    pub mount: Option<PathBuf>,
    pub demo: bool,
    pub session_idle: Duration,
    pub max_sessions: usize,
    /// Roots under which HTTP requests may name local disk sources.
    pub source_dirs: Vec<PathBuf>,
    pub nbd: nbd::NbdConfig,
}

/// The whole repository as a folder, for as long as the server runs
/// (dropping the handle unmounts).
fn mount_repository(repo: &Arc<Repo>, dir: &Path) -> Result<backchain_fuse::MountHandle, ServeError> {
    backchain_fuse::clean_stale_mount(dir)?;
    let tree = crate::tree::fuse::FuseTree(crate::restore::repository_tree(repo.clone()));
    let opts = backchain_fuse::MountOptions { fsname: "backchain-repo".into(), ..Default::default() };
    let handle = backchain_fuse::mount(Arc::new(tree), dir, &opts)?;
    eprintln!("backchain: repository mounted at {}", handle.mountpoint().display());
    Ok(handle)
}

/// `backchain serve`: opens the repository, optionally fills it with the
/// demo, and serves until Ctrl-C.
pub fn serve(config: Config) -> Result<(), ServeError> {
    if let Some(f) = &config.token_file {
        token::read(f)?;
    }
    let nbd_tls = nbd::tls(&config.nbd)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let addrs: Vec<SocketAddr> = rt
        .block_on(tokio::net::lookup_host(&config.listen))
        .map_err(|e| ServeError::Config(format!("--listen {}: {e}", config.listen)))?
        .collect();
    let repo = Arc::new(Repo::open(&config.repo, rt.handle().clone())?);
    let (token, token_path) = token::load_or_create(&config.repo, config.token_file.as_deref())?;
    let demo_ids = if config.demo { demo::fill(&repo)? } else { Vec::new() };
    let listener = rt.block_on(tokio::net::TcpListener::bind(addrs.as_slice()))?;
    let _mount = config.mount.as_deref().map(|dir| mount_repository(&repo, dir)).transpose()?;
    let addr = listener.local_addr()?;
    eprintln!("backchain: serving {} on http://{addr}/api/v1 (Ctrl-C stops)", config.repo.display());
    eprintln!("backchain: requests need the bearer token in {}", token_path.display());
    if config.demo {
        eprintln!("{}", demo::examples(&format!("http://{addr}"), &token_path, &demo_ids));
    }
    let nbd = rt.block_on(nbd::bind(repo.clone(), &config.nbd, nbd_tls))?;
    let opts = api::Options {
        token: Some(token),
        session_idle: config.session_idle,
        max_sessions: config.max_sessions,
        source_dirs: config.source_dirs,
        exports: nbd.as_ref().map(|n| n.exports.clone()),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        stop_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    let nbd = nbd.map(|n| {
        let run = crate::nbd::server::run_tls(n.listener, n.table, n.tls, stopped(stop_rx.clone()));
        (rt.spawn(run), n.exports)
    });
    let r = rt.block_on(api::run(listener, repo.clone(), opts, stopped(stop_rx)));
    if let Some((task, exports)) = nbd {
        let _ = rt.block_on(task);
        // Overlays left clean; the exports stay recorded for the next start.
        if let Err(e) = exports.close_all() {
            eprintln!("backchain: closing exports: {e}");
        }
    }
    repo.close();
    Ok(r?)
}

/// Ctrl-C or SIGTERM (systemd's stop).
async fn stop_signal() {
    use futures_util::future::select;
    use std::pin::pin;
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    let _ = select(pin!(tokio::signal::ctrl_c()), pin!(term.recv())).await;
}
