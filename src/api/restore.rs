//! Restore session routes: open a session over a backup, list them, close
//! one, and list a folder of a session page by page. The sessions
//! themselves live in `restore::Sessions`.

use super::backups::json_body;
use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::{AppState, St};
use crate::restore::Session;
use crate::restore::entry::Entry;
use crate::tree;
use crate::volume::fs::NodeKind;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Entries per listing page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u64 = 1000;
/// Entries per listing page, at most.
pub const MAX_LIMIT: u64 = 10_000;

/// The live session `id`, marked as used.
pub fn session(state: &AppState, id: &str) -> ApiResult<Arc<Session>> {
    Ok(state.sessions.get(id)?)
}

#[derive(Deserialize)]
struct MountReq {
    backup_id: String,
    #[serde(default)]
    disk_index: Option<usize>,
}

pub async fn mount(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let req: MountReq = json_body(body)?;
    let state = st.clone();
    let (session, root) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        let session = state.sessions.open(&state.repo, &req.backup_id, req.disk_index)?;
        let root = session.tree.read_dir(tree::ROOT)?;
        let entries: Vec<Entry> = root.entries.iter().map(|n| Entry::new(b"/", n, None)).collect();
        Ok((session, entries))
    })
    .await??;
    let mut v = json!(session.info());
    v["vm"] = json!(session.vm);
    v["expires_after_idle_seconds"] = json!(st.sessions.limits().idle.as_secs());
    v["entries"] = json!(root);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn mounts(State(st): St) -> Json<Value> {
    Json(json!({"mounts": st.sessions.list()}))
}

pub async fn unmount(State(st): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    if st.sessions.close(&id) {
        Ok(Json(json!({"deleted": id})))
    } else {
        Err(ApiError::not_found(format!("no restore session {id}")))
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
            // An unreadable attribute block costs the entry its names only.
            let xattrs = tree.xattrs(n.ino).unwrap_or_default();
            entries.push(Entry::new(&path, n, target).with_xattrs(&xattrs));
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
