//! The HTTP API (`/api/v1`, see docs/api.md): backups, restore sessions,
//! listings, file downloads with ranges, and folders as streamed zip or
//! tar.gz archives.
//!
//! Handlers are async; everything that reads disks or the tree runs on
//! `spawn_blocking`, and streamed bodies are fed through bounded channels so
//! memory stays bounded whatever is downloaded. This module holds only the
//! handlers and the router: jobs live in `engine::jobs`, sessions in
//! `restore`, and `daemon` assembles the server.

mod backups;
mod chunks;
mod conn;
mod download;
mod error;
mod exports;
mod policies;
mod prune;
mod push;
mod query;
mod restore;
mod tickets;

pub use error::ApiError;

use crate::engine::Jobs;
use crate::repo::Repo;
use crate::restore::{SessionLimits, Sessions};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted (the JSON of a request is small).
pub const MAX_BODY: usize = 1 << 20;

pub use conn::{HEADER_TIMEOUT, MAX_CONNECTIONS};

/// Server settings that tests set directly.
#[derive(Clone)]
pub struct Options {
    /// The bearer token every request but `/health` must present. `serve`
    /// always sets one (`daemon::token`); `None` is for tests of other
    /// things only.
    pub token: Option<String>,
    pub session_idle: Duration,
    pub max_sessions: usize,
    /// Roots under which requests may name local disk sources.
    pub source_dirs: Vec<std::path::PathBuf>,
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// Restore-point exports, when the daemon runs an NBD listener.
    pub exports: Option<Arc<crate::restore::exports::Exports>>,
    /// The daemon's NBD listener: push targets (and exports) are published
    /// there; `None` leaves them unavailable.
    pub nbd: Option<crate::nbd::server::NbdService>,
    /// A push job with no write for this long is aborted.
    pub push_idle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        let limits = SessionLimits::default();
        Self {
            token: None,
            session_idle: limits.idle,
            max_sessions: limits.max,
            source_dirs: Vec::new(),
            header_timeout: HEADER_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            exports: None,
            nbd: None,
            push_idle: crate::engine::push::DEFAULT_IDLE,
        }
    }
}

pub(crate) struct AppState {
    repo: Arc<Repo>,
    token: Option<blake3::Hash>,
    sessions: Sessions,
    jobs: Jobs,
    confine: crate::source::confine::Confinement,
    tickets: crate::restore::tickets::Tickets,
    exports: Option<Arc<crate::restore::exports::Exports>>,
    pushes: Option<Arc<crate::engine::push::Pushes>>,
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
        repo: repo.clone(),
        token: opts.token.as_deref().map(|t| blake3::hash(t.as_bytes())),
        sessions: Sessions::new(SessionLimits { idle: opts.session_idle, max: opts.max_sessions }),
        jobs: Jobs::default(),
        confine: crate::source::confine::Confinement::new(&opts.source_dirs),
        tickets: Default::default(),
        exports: opts.exports,
        pushes: opts.nbd.map(|n| Arc::new(crate::engine::push::Pushes::new(repo, n, opts.push_idle))),
    });
    let sweeper = tokio::spawn(sweep_forever(state.clone()));
    let pushes = state.pushes.clone().map(|p| tokio::spawn(expire_pushes(p)));
    let app = router(state.clone());
    let r = conn::serve(listener, app, opts.header_timeout, opts.max_connections, shutdown).await;
    sweeper.abort();
    if let Some(p) = pushes {
        p.abort();
    }
    tokio::task::spawn_blocking(move || push::shutdown(&state)).await?;
    r
}

/// Aborts push jobs that time out, for as long as the server runs.
async fn expire_pushes(pushes: Arc<crate::engine::push::Pushes>) {
    let mut tick = tokio::time::interval(pushes.sweep_interval());
    loop {
        tick.tick().await;
        let p = pushes.clone();
        let _ = tokio::task::spawn_blocking(move || p.expire()).await;
    }
}

/// Expires idle restore sessions, for as long as the server runs.
async fn sweep_forever(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.sessions.sweep_interval());
    loop {
        tick.tick().await;
        state.sessions.expire();
    }
}

fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/vms", get(backups::vms))
        .route("/backups", post(backups::start).get(backups::list))
        .route("/backups/chain/{vm}", get(backups::chain))
        .route("/backups/changeid", get(push::changeid))
        .route("/backups/{id}", get(backups::detail).delete(backups::delete))
        .route("/backups/{id}/complete", post(backups::complete))
        .route("/prune", post(prune::prune))
        .route("/restore/mount", post(restore::mount))
        .route("/restore/mounts", get(restore::mounts))
        .route("/restore/{mount}", axum::routing::delete(restore::unmount))
        .route("/restore/{mount}/files", get(restore::files))
        .route("/restore/{mount}/download", get(download::download))
        .route("/restore/{mount}/download-directory", get(download::download_directory))
        .route("/restore/{mount}/tickets", post(tickets::ticket))
        .route("/exports", post(exports::create).get(exports::list))
        .route("/exports/{id}", axum::routing::delete(exports::delete))
        .route("/policies", post(policies::create).get(policies::list))
        .route("/policies/{name}", get(policies::show).put(policies::replace).delete(policies::remove))
        .route("/policies/{name}/run", post(policies::run))
        .route("/jobs", get(policies::jobs))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let metrics = Router::new()
        .route("/metrics", get(policies::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(index))
        .route("/api/v1/health", get(health))
        .nest("/api/v1", api)
        .merge(metrics)
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
    match tickets::ticket_grant(&state, &req) {
        // A download ticket stands for the token, once, for its own URL.
        Some(Ok(())) => return next.run(req).await,
        Some(Err(e)) => return e.into_response(),
        None => {}
    }
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
