//! `backchain serve`: assembles the daemon out of the library. It builds the
//! runtime, opens the repository (filling it with the demo when asked),
//! keeps a FUSE mount of the whole repository when asked, and runs the HTTP
//! API, the NBD listener (push targets, exports) and the policy scheduler
//! until Ctrl-C or SIGTERM.

pub mod config;
mod demo;
mod exports;
pub mod token;

use crate::api;
use crate::engine::EngineError;
use crate::nbd::server as nbd;
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
    /// The NBD listener: `HOST:PORT` or `unix:PATH`.
    pub nbd_listen: String,
    /// A push job with no write for this long is aborted.
    pub push_idle: Duration,
    /// Scheduler jobs run at once.
    pub max_jobs: usize,
    /// Job history older than this many days is forgotten.
    pub job_history_days: u32,
    /// How long running jobs may take to end after SIGTERM.
    pub shutdown_grace: Duration,
    /// PEM certificate and key: NBD over TLS (required off loopback).
    pub nbd_tls_cert: Option<PathBuf>,
    pub nbd_tls_key: Option<PathBuf>,
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

/// Removes the unix socket of `unix:PATH` when nothing answers on it: a
/// daemon that was killed leaves its socket behind. A live one stays (and
/// the bind then fails, as it should).
fn clear_stale_socket(addr: &str) {
    use std::os::unix::fs::FileTypeExt;
    let Some(path) = addr.strip_prefix("unix:").map(Path::new) else { return };
    let socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// `backchain serve`: opens the repository, optionally fills it with the
/// demo, and serves until Ctrl-C or SIGTERM.
pub fn serve(config: Config) -> Result<(), ServeError> {
    init_logging();
    if let Some(f) = &config.token_file {
        token::read(f)?;
    }
    let nbd_tls = exports::tls(&config.nbd_listen, config.nbd_tls_cert.as_deref(), config.nbd_tls_key.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let addrs: Vec<SocketAddr> = rt
        .block_on(tokio::net::lookup_host(&config.listen))
        .map_err(|e| ServeError::Config(format!("--listen {}: {e}", config.listen)))?
        .collect();
    let repo = Arc::new(Repo::open(&config.repo, rt.handle().clone())?);
    let (token, token_path) = token::load_or_create(&config.repo, config.token_file.as_deref())?;
    let demo_ids = if config.demo { demo::fill(&repo)? } else { Vec::new() };
    // Jobs of a dead daemon are `interrupted` before anyone can ask.
    let scheduler = crate::schedule::Scheduler::new(
        repo.clone(),
        crate::schedule::SchedulerOptions {
            max_jobs: config.max_jobs,
            history_days: config.job_history_days,
            shutdown_grace: config.shutdown_grace,
            ..Default::default()
        },
    );
    rt.block_on(scheduler.recover()).map_err(|e| ServeError::Engine(e.into()))?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(addrs.as_slice()))?;
    clear_stale_socket(&config.nbd_listen);
    let nbd_listener = rt
        .block_on(nbd::Listener::bind(&config.nbd_listen))
        .map_err(|e| ServeError::Config(format!("--nbd-listen {}: {e}", config.nbd_listen)))?;
    let nbd = nbd::NbdService { exports: nbd::ExportTable::new(), addr: nbd_listener.local_addr()? };
    let exports = rt.block_on(exports::start(repo.clone(), nbd.exports.clone(), &nbd.addr, nbd_tls.is_some()))?;
    let _mount = config.mount.as_deref().map(|dir| mount_repository(&repo, dir)).transpose()?;
    let addr = listener.local_addr()?;
    eprintln!("backchain: serving {} on http://{addr}/api/v1 (Ctrl-C stops)", config.repo.display());
    eprintln!("backchain: NBD (push targets, exports) on {}", nbd.addr);
    eprintln!("backchain: requests need the bearer token in {}", token_path.display());
    if config.demo {
        eprintln!("{}", demo::examples(&format!("http://{addr}"), &token_path, &demo_ids));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        stop_signal().await;
        tracing::info!("stopping: no new jobs; running jobs get the shutdown grace");
        let _ = stop.send(true);
    });
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let jobs = rt.spawn(scheduler.run(until(stopped.clone())));
    let opts = api::Options {
        token: Some(token),
        session_idle: config.session_idle,
        max_sessions: config.max_sessions,
        source_dirs: config.source_dirs,
        nbd: Some(nbd.clone()),
        push_idle: config.push_idle,
        exports: Some(exports.clone()),
        ..Default::default()
    };
    let (stop_nbd, nbd_stopped) = tokio::sync::oneshot::channel::<()>();
    let nbd_task = rt.spawn(nbd::run_tls(nbd_listener, nbd.exports, nbd_tls, async {
        let _ = nbd_stopped.await;
    }));
    let r = rt.block_on(api::run(listener, repo.clone(), opts, until(stopped)));
    let _ = stop_nbd.send(());
    match rt.block_on(jobs) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the scheduler stopped with an error"),
        Err(e) => tracing::error!(error = %e, "the scheduler failed"),
    }
    // Connections finish the requests they have read; a stuck one does not hold the exit.
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), nbd_task).await });
    // Overlays left clean; the exports stay recorded for the next start.
    if let Err(e) = exports.close_all() {
        eprintln!("backchain: closing exports: {e}");
    }
    repo.close();
    // A job past the grace still holds a blocking thread: do not wait for
    // it (its files are cleaned up at the next start).
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(r?)
}

/// Ctrl-C or SIGTERM (systemd's stop).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Structured log lines on stderr (the journal under systemd). `RUST_LOG`
/// is not read: the level is info.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).try_init();
}
