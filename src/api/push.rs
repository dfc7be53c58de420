//! Push-target routes (see docs/api.md): `POST /backups` with pushed disks
//! answers 202 with an `nbd_uri` per pushed disk; `/complete`,
//! `/changeid`, and the push side of `GET` and `DELETE /backups/{id}`.
//! The jobs themselves live in `engine::push`.

use super::error::{ApiError, ApiResult};
use super::{AppState, St};
use crate::engine::Requested;
use crate::engine::push::{DiskSpec, PushRequest, PushStatus, Pushes};
use axum::Json;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

fn pushes(st: &AppState) -> ApiResult<Arc<Pushes>> {
    st.pushes.clone().ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "no_nbd", "this server has no NBD listener: push targets are unavailable")
    })
}

/// The job's status as JSON.
fn status_json(s: &PushStatus) -> ApiResult<Value> {
    serde_json::to_value(s).map_err(|e| ApiError::internal(e.to_string()))
}

/// Creates a waiting push job.
pub async fn start(st: &AppState, vm: String, disks: Vec<DiskSpec>, kind: Requested) -> ApiResult<Response> {
    let pushes = pushes(st)?;
    let req = PushRequest { vm, disks, kind, id: None };
    let s = tokio::task::spawn_blocking(move || pushes.create(req)).await??;
    let disks: Vec<Value> = s
        .disks
        .iter()
        .map(|d| match &d.nbd_uri {
            Some(uri) => json!({"disk_index": d.disk_index, "nbd_uri": uri, "size": d.size}),
            None => json!({"disk_index": d.disk_index}),
        })
        .collect();
    let body = json!({"backup_id": s.backup_id, "status": s.status, "disks": disks, "notes": s.notes});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST /backups/{id}/complete` for a push job of this process; `None`
/// when `id` is not one.
pub async fn complete(st: &AppState, id: &str, disk_index: i64, change_id: String) -> Option<ApiResult<Json<Value>>> {
    let pushes = st.pushes.clone().filter(|p| p.holds(id))?;
    let Ok(index) = usize::try_from(disk_index) else {
        return Some(Err(ApiError::not_found(format!("backup {id} has no disk {disk_index}"))));
    };
    let id = id.to_string();
    let done = tokio::task::spawn_blocking(move || pushes.complete(&id, index, &change_id)).await;
    Some(match done {
        Ok(Ok(s)) => status_json(&s).map(Json),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    })
}

/// The push side of `GET /backups/{id}`: the job's state and each disk's
/// bytes, for a push job of this process.
pub fn detail(st: &AppState, id: &str) -> Option<PushStatus> {
    st.pushes.as_ref()?.status(id)
}

/// `DELETE /backups/{id}` of a push job still waiting: aborts it. `None`
/// when `id` is no active push job of this process.
pub async fn abort(st: &AppState, id: &str) -> Option<ApiResult<Json<Value>>> {
    let pushes = st.pushes.clone()?;
    if !pushes.status(id).is_some_and(|s| s.status.is_active()) {
        return None;
    }
    let gone = id.to_string();
    let done = tokio::task::spawn_blocking(move || pushes.abort(&gone, "cancelled by DELETE")).await;
    Some(match done {
        Ok(Ok(s)) => status_json(&s).map(|v| Json(json!({"aborted": id, "backup": v}))),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    })
}

/// `GET /backups/changeid?vm_name=&disk_index=`: the change id of the
/// disk's last committed image, which a CBT agent asks before it queries
/// the changed areas since then.
pub async fn changeid(axum::extract::State(st): St, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let q = super::query::Query::parse(q.as_deref())?;
    let vm = q.str("vm_name")?.ok_or_else(|| ApiError::bad_request("vm_name is required"))?;
    let index = q.u64("disk_index")?.ok_or_else(|| ApiError::bad_request("disk_index is required"))?;
    let index = i64::try_from(index).map_err(|_| ApiError::bad_request("disk_index is too large"))?;
    let vm_id = st.repo.catalog.vm_id(vm, false).await?.ok_or_else(|| ApiError::not_found(format!("no VM {vm}")))?;
    let disk = st.repo.catalog.latest_disk(vm_id, index).await?;
    let Some((backup_id, Some(change_id))) = disk.map(|d| (d.backup_id.clone(), d.change_id.clone())) else {
        return Err(ApiError::not_found(format!("disk {index} of VM {vm} has no committed change id")));
    };
    Ok(Json(json!({"vm_name": vm, "disk_index": index, "change_id": change_id, "backup_id": backup_id})))
}

/// Ends the job of every push target still waiting (the server stops).
pub fn shutdown(st: &AppState) {
    if let Some(p) = &st.pushes {
        p.shutdown();
    }
}
