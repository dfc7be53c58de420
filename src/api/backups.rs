//! Backup routes: start a job (202), follow it, list, chain, delete, and
//! the change ids that push agents report.

use super::St;
use super::error::{ApiError, ApiResult};
use crate::engine::Progress;
use crate::engine::backup::{self, BackupRequest, Requested};
use crate::engine::repo::check_vm_name;
use crate::util::time::now_rfc3339;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Jobs remembered after they end (their outcome stays in the catalog).
const KEPT_JOBS: usize = 1024;

/// The jobs this server started, by backup id.
#[derive(Default)]
pub struct Jobs(Mutex<HashMap<String, Arc<Job>>>);

pub struct Job {
    vm: String,
    started_at: String,
    total: AtomicU64,
    done: AtomicU64,
    state: Mutex<JobState>,
}

#[derive(Clone)]
enum JobState {
    Running,
    Completed,
    Failed(String),
}

impl Progress for Job {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Job {
    fn json(&self) -> Value {
        let (status, error) = match &*self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            JobState::Running => ("running", None),
            JobState::Completed => ("completed", None),
            JobState::Failed(e) => ("failed", Some(e.clone())),
        };
        json!({
            "status": status,
            "error": error,
            "bytes_done": self.done.load(Ordering::Relaxed),
            "bytes_total": self.total.load(Ordering::Relaxed),
            "vm": self.vm,
            "started_at": self.started_at,
        })
    }
}

/// Parses a JSON body, answering 400/413 as JSON when it does not fit.
pub fn json_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body.map_err(|r| {
        let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "bad_request" };
        ApiError::new(r.status(), code, r.body_text())
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
struct DiskReq {
    source: String,
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
    let id = backup::new_backup_id();
    let job = Arc::new(Job {
        vm: req.vm_name.clone(),
        started_at: now_rfc3339(),
        total: AtomicU64::new(0),
        done: AtomicU64::new(0),
        state: Mutex::new(JobState::Running),
    });
    st.jobs.insert(&id, job.clone());
    let request = BackupRequest {
        vm: req.vm_name,
        disks: req.disks.into_iter().map(|d| d.source).collect(),
        kind,
        compression: None,
        id: Some(id.clone()),
    };
    let repo = st.repo.clone();
    tokio::task::spawn_blocking(move || {
        let outcome = backup::run(&repo, &request, &*job);
        *job.state.lock().unwrap_or_else(|p| p.into_inner()) = match outcome {
            Ok(_) => JobState::Completed,
            Err(e) => JobState::Failed(e.to_string()),
        };
    });
    Ok((StatusCode::ACCEPTED, Json(json!({"backup_id": id, "status": "running"}))).into_response())
}

impl Jobs {
    fn insert(&self, id: &str, job: Arc<Job>) {
        let mut jobs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.len() >= KEPT_JOBS {
            jobs.retain(|_, j| matches!(*j.state.lock().unwrap_or_else(|p| p.into_inner()), JobState::Running));
        }
        jobs.insert(id.to_string(), job);
    }

    fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }
}

pub async fn detail(axum::extract::State(st): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let job = st.jobs.get(&id);
    let row = st.repo.catalog.backup(&id).await;
    match (row, job) {
        (Ok(b), job) => {
            let mut v = serde_json::to_value(&b).map_err(|e| ApiError::internal(e.to_string()))?;
            let progress = match &job {
                Some(j) => {
                    json!({"bytes_done": j.done.load(Ordering::Relaxed), "bytes_total": j.total.load(Ordering::Relaxed)})
                }
                None => json!({"bytes_done": b.bytes_read, "bytes_total": b.bytes_total}),
            };
            v["progress"] = progress;
            // The catalog row is written before the job ends: the job knows
            // first whether it failed before its commit.
            if let Some(j) = job
                && let JobState::Failed(e) = &*j.state.lock().unwrap_or_else(|p| p.into_inner())
            {
                v["status"] = json!("failed");
                v["error"] = json!(e);
            }
            Ok(Json(v))
        }
        (Err(crate::catalog::CatalogError::NotFound(_)), Some(j)) => {
            let mut v = j.json();
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
    if req.change_id.is_empty() || req.change_id.len() > 1024 {
        return Err(ApiError::bad_request("change_id must be 1 to 1024 characters"));
    }
    st.repo.catalog.set_change_id(&id, req.disk_index, &req.change_id).await?;
    Ok(Json(json!({"backup_id": id, "disk_index": req.disk_index, "change_id": req.change_id})))
}

pub async fn delete(axum::extract::State(st): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    if st.jobs.get(&id).is_some_and(|j| matches!(*j.state.lock().unwrap_or_else(|p| p.into_inner()), JobState::Running))
    {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", format!("backup {id} is still running")));
    }
    let disks = st.repo.catalog.delete_backup(&id).await?;
    st.sessions.close_backup(&id);
    st.jobs.remove(&id);
    let repo = st.repo.clone();
    let mut removed = Vec::new();
    for d in &disks {
        for rel in [&d.image_path, &d.digest_path] {
            let path = repo.path(rel);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => removed.push(rel.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ApiError::internal(format!("{}: {e}", path.display()))),
            }
        }
    }
    Ok(Json(json!({"deleted": id, "files_removed": removed})))
}
