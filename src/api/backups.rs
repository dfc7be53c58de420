//! Backup routes: start a job (202), follow it, list, chain, delete, and
//! the change ids that push agents report.

use super::St;
use super::error::{ApiError, ApiResult};
use crate::catalog::CatalogError;
use crate::engine::backup::{self, BackupRequest, Requested};
use crate::engine::push::DiskSpec;
use crate::engine::{Job, JobState};
use crate::repo::check_vm_name;
use crate::source::confine::Refused;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// A job's progress and outcome as JSON.
fn job_json(job: &Job) -> Value {
    let (status, error) = match job.state() {
        JobState::Running => ("running", None),
        JobState::Completed => ("completed", None),
        JobState::Failed(e) => ("failed", Some(e)),
    };
    json!({
        "status": status,
        "error": error,
        "bytes_done": job.done(),
        "bytes_total": job.total(),
        "vm": job.vm,
        "started_at": job.started_at,
    })
}

/// Parses a JSON body, answering 400/413 as JSON when it does not fit.
pub fn json_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body.map_err(|r| {
        let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "bad_request" };
        ApiError::new(r.status(), code, r.body_text())
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A disk to back up: read from `source`, or pushed by an agent
/// (`{push: {size}}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskReq {
    source: Option<String>,
    push: Option<PushReq>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushReq {
    size: u64,
}

#[derive(Deserialize)]
struct StartReq {
    vm_name: String,
    disks: Vec<DiskReq>,
    #[serde(default)]
    backup_type: Option<String>,
}

pub async fn start(axum::extract::State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let req: StartReq = json_body(body)?;
    check_vm_name(&req.vm_name)?;
    if req.disks.is_empty() {
        return Err(ApiError::bad_request("a backup needs at least one disk"));
    }
    let kind = match req.backup_type.as_deref().unwrap_or("auto") {
        "auto" => Requested::Auto,
        "full" => Requested::Full,
        "incremental" => Requested::Incremental,
        other => return Err(ApiError::bad_request(format!("backup_type {other:?}: use auto, full or incremental"))),
    };
    let mut disks = Vec::new();
    for (i, d) in req.disks.into_iter().enumerate() {
        match (d.source, d.push) {
            (Some(source), None) => {
                st.confine.check(&source).map_err(|e| match e {
                    Refused::Unreadable(..) => ApiError::bad_request(e.to_string()),
                    _ => ApiError::new(StatusCode::FORBIDDEN, "source_not_allowed", e.to_string()),
                })?;
                disks.push(DiskSpec::Source(source));
            }
            (None, Some(p)) => disks.push(DiskSpec::Push { size: p.size }),
            _ => return Err(ApiError::bad_request(format!("disk {i}: give either source or push"))),
        }
    }
    if disks.iter().any(|d| matches!(d, DiskSpec::Push { .. })) {
        return super::push::start(&st, req.vm_name, disks, kind).await;
    }
    let id = backup::new_backup_id();
    let request = BackupRequest {
        vm: req.vm_name,
        disks: disks.into_iter().filter_map(|d| if let DiskSpec::Source(s) = d { Some(s) } else { None }).collect(),
        kind,
        compression: None,
        id: Some(id.clone()),
    };
    st.jobs.start(st.repo.clone(), request);
    Ok((StatusCode::ACCEPTED, Json(json!({"backup_id": id, "status": "running"}))).into_response())
}

pub async fn detail(axum::extract::State(st): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let job = st.jobs.get(&id);
    let row = st.repo.catalog.backup(&id).await;
    match (row, job) {
        (Ok(b), job) => {
            let mut v = serde_json::to_value(&b).map_err(|e| ApiError::internal(e.to_string()))?;
            let progress = match &job {
                Some(j) => json!({"bytes_done": j.done(), "bytes_total": j.total()}),
                None => json!({"bytes_done": b.bytes_read, "bytes_total": b.bytes_total}),
            };
            v["progress"] = progress;
            if let Some(p) = super::push::detail(&st, &id) {
                v["status"] = json!(p.status);
                v["error"] = json!(p.error);
                v["push"] = json!({"disks": p.disks});
            }
            // The catalog row is written before the job ends: the job knows
            // first whether it failed before its commit.
            if let Some(j) = job
                && let JobState::Failed(e) = j.state()
            {
                v["status"] = json!("failed");
                v["error"] = json!(e);
            }
            Ok(Json(v))
        }
        (Err(CatalogError::NotFound(_)), Some(j)) => {
            let mut v = job_json(&j);
            v["id"] = json!(id);
            v["progress"] = json!({"bytes_done": v["bytes_done"], "bytes_total": v["bytes_total"]});
            Ok(Json(v))
        }
        (Err(e), _) => Err(e.into()),
    }
}

pub async fn list(axum::extract::State(st): St, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let q = super::query::Query::parse(q.as_deref())?;
    let vm = q.str("vm_name")?;
    let backups = st.repo.catalog.list_backups(vm).await?;
    Ok(Json(json!({"backups": backups})))
}

pub async fn vms(axum::extract::State(st): St) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"vms": st.repo.catalog.vms().await?})))
}

pub async fn chain(axum::extract::State(st): St, Path(vm): Path<String>) -> ApiResult<Json<Value>> {
    let chains = st.repo.catalog.chains(&vm).await?;
    if chains.is_empty() && st.repo.catalog.vm_id(&vm, false).await?.is_none() {
        return Err(ApiError::not_found(format!("no VM {vm}")));
    }
    Ok(Json(json!({"vm_name": vm, "chains": chains})))
}

#[derive(Deserialize)]
struct CompleteReq {
    disk_index: i64,
    change_id: String,
}

pub async fn complete(
    axum::extract::State(st): St,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: CompleteReq = json_body(body)?;
    if let Some(done) = super::push::complete(&st, &id, req.disk_index, req.change_id.clone()).await {
        return done;
    }
    if req.change_id.is_empty() || req.change_id.len() > 1024 {
        return Err(ApiError::bad_request("change_id must be 1 to 1024 characters"));
    }
    st.repo.catalog.set_change_id(&id, req.disk_index, &req.change_id).await?;
    Ok(Json(json!({"backup_id": id, "disk_index": req.disk_index, "change_id": req.change_id})))
}

pub async fn delete(axum::extract::State(st): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    if let Some(aborted) = super::push::abort(&st, &id).await {
        return aborted;
    }
    if st.jobs.get(&id).is_some_and(|j| j.is_running()) {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", format!("backup {id} is still running")));
    }
    let repo = st.repo.clone();
    let gone = id.clone();
    let done = tokio::task::spawn_blocking(move || crate::engine::delete_point(&repo, &gone)).await??;
    st.jobs.remove(&id);
    Ok(Json(json!({"deleted": id, "merges": done.merges, "bytes_reclaimed": done.bytes_reclaimed})))
}
