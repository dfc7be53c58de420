//! The HTTP API (`/api/v1`, see docs/api.md): backups, restore sessions,
//! listings, file downloads with ranges, and folders as streamed zip or
//! tar.gz archives.
//!
//! Handlers are async; everything that reads disks or the tree runs on
//! `spawn_blocking`, and streamed bodies are fed through bounded channels so
//! memory stays bounded whatever is downloaded.

mod backups;
mod chunks;
mod demo;
mod download;
pub mod entry;
mod error;
mod query;
mod restore;

pub use error::ApiError;

use crate::engine::{EngineError, Repo};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8082";
/// Seconds after which an unused restore session closes.
pub const DEFAULT_IDLE_SECS: u64 = 3600;
/// Restore sessions open at once, at most.
pub const DEFAULT_MAX_SESSIONS: usize = 64;
/// Largest request body accepted (the JSON of a request is small).
pub const MAX_BODY: usize = 1 << 20;
/// Longest interval between two sweeps of idle sessions.
const MAX_SWEEP: Duration = Duration::from_secs(30);

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

/// Server settings that tests set directly.
#[derive(Clone)]
pub struct Options {
    /// The bearer token every request but `/health` must present.
    pub token: Option<String>,
    pub session_idle: Duration,
    pub max_sessions: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { token: None, session_idle: Duration::from_secs(DEFAULT_IDLE_SECS), max_sessions: DEFAULT_MAX_SESSIONS }
    }
}

pub(crate) struct AppState {
    repo: Arc<Repo>,
    token: Option<blake3::Hash>,
    opts: Options,
    sessions: restore::Sessions,
    jobs: backups::Jobs,
}

type St = State<Arc<AppState>>;

/// Serves the API on `listener` until `shutdown` completes. The repository
/// must have been opened outside the runtime (its calls block).
pub async fn run(
    listener: tokio::net::TcpListener,
    repo: Arc<Repo>,
    opts: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(AppState {
        repo,
        token: opts.token.as_deref().map(|t| blake3::hash(t.as_bytes())),
        sessions: restore::Sessions::default(),
        jobs: backups::Jobs::default(),
        opts,
    });
    let sweeper = tokio::spawn(restore::sweep_forever(state.clone(), sweep_interval(state.opts.session_idle)));
    let app = router(state);
    let r = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    sweeper.abort();
    r
}

fn sweep_interval(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(100), MAX_SWEEP)
}

fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/vms", get(backups::vms))
        .route("/backups", post(backups::start).get(backups::list))
        .route("/backups/chain/{vm}", get(backups::chain))
        .route("/backups/{id}", get(backups::detail).delete(backups::delete))
        .route("/backups/{id}/complete", post(backups::complete))
        .route("/restore/mount", post(restore::mount))
        .route("/restore/mounts", get(restore::mounts))
        .route("/restore/{mount}", axum::routing::delete(restore::unmount))
        .route("/restore/{mount}/files", get(restore::files))
        .route("/restore/{mount}/download", get(download::download))
        .route("/restore/{mount}/download-directory", get(download::download_directory))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(index))
        .route("/api/v1/health", get(health))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The web file browser: one static page over the API.
const INDEX_HTML: &str = include_str!("index.html");

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response()
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

/// Checks `Authorization: Bearer <token>`. The hashes of the expected and
/// the given token are compared (blake3's `Hash` equality is constant-time),
/// so neither content nor length leaks through timing.
async fn auth(State(state): St, req: Request, next: Next) -> Response {
    if let Some(want) = state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .map(blake3::hash);
        if given != Some(want) {
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
                .into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// Reads the token file: its first line, trimmed.
fn read_token(path: &std::path::Path) -> Result<String, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        return Err(ServeError::Config(format!("{}: the token must be at least 16 characters", path.display())));
    }
    Ok(token)
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
    // The whole repository as a folder too, for as long as the server runs
    // (dropping the handle unmounts).
    let _mount = match &config.mount {
        Some(dir) => {
            backchain_fuse::clean_stale_mount(dir)?;
            let tree = crate::tree::fuse::FuseTree(crate::tree::for_repo(repo.clone()));
            let opts = backchain_fuse::MountOptions { fsname: "backchain-repo".into(), ..Default::default() };
            let handle = backchain_fuse::mount(Arc::new(tree), dir, &opts)?;
            eprintln!("backchain: repository mounted at {}", handle.mountpoint().display());
            Some(handle)
        }
        None => None,
    };
    let addr = listener.local_addr()?;
    eprintln!("backchain: serving {} on http://{addr}/api/v1 (Ctrl-C stops)", config.repo.display());
    if config.demo {
        eprintln!("{}", demo::examples(&format!("http://{addr}"), &demo_ids));
    }
    let opts = Options { token, session_idle: config.session_idle, max_sessions: config.max_sessions };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let r = rt.block_on(run(listener, repo.clone(), opts, shutdown));
    rt.block_on(repo.catalog.close());
    Ok(r?)
}
