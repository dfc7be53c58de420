//! `backchain serve`: assembles the daemon out of the library. It builds the
//! runtime, opens the repository (filling it with the demo when asked),
//! keeps a FUSE mount of the whole repository when asked, and runs the HTTP
//! API until Ctrl-C. The NBD listener and the scheduler will be started here
//! too.

mod demo;

use crate::api;
use crate::engine::EngineError;
use crate::repo::{Repo, RepoError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::restore::{DEFAULT_IDLE_SECS, DEFAULT_MAX_SESSIONS};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8082";
/// Shortest bearer token accepted.
const MIN_TOKEN_LEN: usize = 16;

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
}

/// Reads the token file: its first line, trimmed.
fn read_token(path: &Path) -> Result<String, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < MIN_TOKEN_LEN {
        return Err(ServeError::Config(format!(
            "{}: the token must be at least {MIN_TOKEN_LEN} characters",
            path.display()
        )));
    }
    Ok(token)
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
    let token = config.token_file.as_deref().map(read_token).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let addrs: Vec<SocketAddr> = rt
        .block_on(tokio::net::lookup_host(&config.listen))
        .map_err(|e| ServeError::Config(format!("--listen {}: {e}", config.listen)))?
        .collect();
    if token.is_none() && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(ServeError::Config(format!(
            "refusing to serve on non-loopback address {} without --token-file",
            config.listen
        )));
    }
    let repo = Arc::new(Repo::open(&config.repo, rt.handle().clone())?);
    let demo_ids = if config.demo { demo::fill(&repo)? } else { Vec::new() };
    let listener = rt.block_on(tokio::net::TcpListener::bind(addrs.as_slice()))?;
    let _mount = config.mount.as_deref().map(|dir| mount_repository(&repo, dir)).transpose()?;
    let addr = listener.local_addr()?;
    eprintln!("backchain: serving {} on http://{addr}/api/v1 (Ctrl-C stops)", config.repo.display());
    if config.demo {
        eprintln!("{}", demo::examples(&format!("http://{addr}"), &demo_ids));
    }
    let opts = api::Options { token, session_idle: config.session_idle, max_sessions: config.max_sessions };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let r = rt.block_on(api::run(listener, repo.clone(), opts, shutdown));
    repo.close();
    Ok(r?)
}
