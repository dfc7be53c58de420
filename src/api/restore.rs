//! Restore sessions: a read-only tree over one backup (all disks, or one),
//! listed page by page, closed on request or after an idle time.

use super::backups::json_body;
use super::entry::Entry;
use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::{AppState, St};
use crate::tree::{self, Tree};
use crate::util::time::now_rfc3339;
use crate::volume::fs::NodeKind;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries per listing page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u64 = 1000;
/// Entries per listing page, at most.
pub const MAX_LIMIT: u64 = 10_000;

pub struct Session {
    pub id: String,
    pub backup_id: String,
    pub disk_index: Option<usize>,
    pub tree: Tree,
    created_at: String,
    opened: Instant,
    /// Milliseconds since `opened` at the last use.
    last_used: AtomicU64,
    /// Downloads whose bytes are still being produced.
    transfers: AtomicUsize,
}

/// A download in progress in a session, until its last clone is dropped
/// (one goes with the task producing the bytes, one with the response body):
/// a session never expires under a running download (a 100 GB file may take
/// hours), and its idle time counts from the end of the last one.
#[derive(Clone)]
pub struct Transfer {
    _end: Arc<TransferEnd>,
}

struct TransferEnd(Arc<Session>);

impl Drop for TransferEnd {
    fn drop(&mut self) {
        self.0.touch();
        self.0.transfers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Session {
    fn touch(&self) {
        self.last_used.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// Marks a download in progress until the guard is dropped.
    pub fn transfer(self: &Arc<Self>) -> Transfer {
        self.transfers.fetch_add(1, Ordering::SeqCst);
        Transfer { _end: Arc::new(TransferEnd(self.clone())) }
    }
    fn idle(&self) -> Duration {
        if self.transfers.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.opened.elapsed().saturating_sub(Duration::from_millis(self.last_used.load(Ordering::Relaxed)))
    }
    fn json(&self) -> Value {
        json!({
            "mount_id": self.id,
            "backup_id": self.backup_id,
            "disk_index": self.disk_index,
            "created_at": self.created_at,
            "idle_seconds": self.idle().as_secs(),
            "active_downloads": self.transfers.load(Ordering::SeqCst),
        })
    }
}

#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Arc<Session>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the sessions idle for longer than `idle`.
    fn expire(&self, idle: Duration) {
        self.lock().retain(|_, s| s.idle() <= idle);
    }

    /// Closes the sessions over a backup (it is being deleted).
    pub fn close_backup(&self, backup_id: &str) {
        self.lock().retain(|_, s| s.backup_id != backup_id);
    }
}

/// Expires idle sessions every `every`, for as long as the server runs.
pub async fn sweep_forever(state: Arc<AppState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        state.sessions.expire(state.opts.session_idle);
    }
}

/// The live session `id`, marked as used.
pub fn session(state: &AppState, id: &str) -> ApiResult<Arc<Session>> {
    let mut map = state.sessions.lock();
    let s = map.get(id).cloned().ok_or_else(|| ApiError::not_found(format!("no restore session {id}")))?;
    if s.idle() > state.opts.session_idle {
        map.remove(id);
        return Err(ApiError::not_found(format!("restore session {id} expired")));
    }
    s.touch();
    Ok(s)
}

/// An id no one can guess from the others.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{nanos}-{n}-{}-{:p}", std::process::id(), &COUNTER);
    blake3::hash(seed.as_bytes()).to_hex()[..24].to_string()
}

#[derive(Deserialize)]
struct MountReq {
    backup_id: String,
    #[serde(default)]
    disk_index: Option<usize>,
}

pub async fn mount(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let req: MountReq = json_body(body)?;
    st.sessions.expire(st.opts.session_idle);
    if st.sessions.lock().len() >= st.opts.max_sessions {
        return Err(too_many(st.opts.max_sessions));
    }
    let b = st.repo.catalog.backup(&req.backup_id).await?;
    if b.status != "completed" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_completed",
            format!("backup {} is {}, not completed", b.id, b.status),
        ));
    }
    if let Some(n) = req.disk_index
        && !b.disks.iter().any(|d| d.disk_index == n as i64)
    {
        return Err(ApiError::not_found(format!("backup {} has no disk {n}", b.id)));
    }
    let repo = st.repo.clone();
    let (id, disk) = (req.backup_id.clone(), req.disk_index);
    let (tree, root) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        let tree = tree::for_backup(&repo, &id, disk)?;
        let root = tree.read_dir(tree::ROOT)?;
        let entries: Vec<Entry> = root.entries.iter().map(|n| Entry::new(b"/", n, None)).collect();
        Ok((tree, entries))
    })
    .await??;
    let session = Arc::new(Session {
        id: new_id(),
        backup_id: req.backup_id,
        disk_index: req.disk_index,
        tree,
        created_at: now_rfc3339(),
        opened: Instant::now(),
        last_used: AtomicU64::new(0),
        transfers: AtomicUsize::new(0),
    });
    {
        let mut map = st.sessions.lock();
        // Checked again: other sessions may have opened meanwhile.
        if map.len() >= st.opts.max_sessions {
            return Err(too_many(st.opts.max_sessions));
        }
        map.insert(session.id.clone(), session.clone());
    }
    let mut v = session.json();
    v["vm"] = json!(b.vm);
    v["expires_after_idle_seconds"] = json!(st.opts.session_idle.as_secs());
    v["entries"] = json!(root);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

fn too_many(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_sessions",
        format!("{max} restore sessions are open: close one (DELETE /api/v1/restore/ID) or wait for one to expire"),
    )
}

pub async fn mounts(State(st): St) -> Json<Value> {
    st.sessions.expire(st.opts.session_idle);
    let mut list: Vec<Value> = st.sessions.lock().values().map(|s| s.json()).collect();
    list.sort_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()));
    Json(json!({"mounts": list}))
}

pub async fn unmount(State(st): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    match st.sessions.lock().remove(&id) {
        Some(_) => Ok(Json(json!({"deleted": id}))),
        None => Err(ApiError::not_found(format!("no restore session {id}"))),
    }
}

pub async fn files(State(st): St, Path(id): Path<String>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let s = session(&st, &id)?;
    let q = Query::parse(q.as_deref())?;
    let path = q.path()?;
    let offset = q.u64("offset")?.unwrap_or(0);
    let limit = q.u64("limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let v = tokio::task::spawn_blocking(move || -> ApiResult<Value> {
        let tree = &s.tree;
        let node = tree.resolve_bytes(&path)?;
        if node.kind != NodeKind::Directory {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "not_a_directory", "not a folder: download it instead"));
        }
        let listing = tree.read_dir(node.ino)?;
        let total = listing.entries.len() as u64;
        let from = usize::try_from(offset.min(total)).unwrap_or(usize::MAX);
        let to = usize::try_from(offset.saturating_add(limit).min(total)).unwrap_or(usize::MAX);
        let mut entries = Vec::with_capacity(to.saturating_sub(from));
        for n in &listing.entries[from..to] {
            let target = if n.kind == NodeKind::Symlink { Some(tree.read_link(n.ino)?) } else { None };
            entries.push(Entry::new(&path, n, target));
        }
        Ok(json!({
            "path": String::from_utf8_lossy(&path),
            "total": total,
            "offset": offset,
            "limit": limit,
            "entries": entries,
        }))
    })
    .await??;
    Ok(Json(v))
}
