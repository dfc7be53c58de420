//! Policy routes (`/policies`), the job history (`/jobs`) and the metrics
//! page (`/metrics`). Thin: checks and storage are `schedule::policy` and
//! `schedule::store`; the scheduler picks up changes at its next tick.

use super::St;
use super::backups::json_body;
use super::error::{ApiError, ApiResult};
use crate::catalog::JobFilter;
use crate::schedule::metrics;
use crate::schedule::policy::{PolicyError, PolicySpec};
use crate::schedule::store::{self, StoreError};
use crate::util::time::UtcTime;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Catalog(c) => c.into(),
            StoreError::Policy(p @ PolicyError::Forbidden { .. }) => {
                ApiError::new(StatusCode::FORBIDDEN, "source_not_allowed", p.to_string())
            }
            StoreError::Policy(p) => ApiError::bad_request(p.to_string()),
        }
    }
}

/// The body as a checked policy; local sources confined to the server's
/// `--source-dir` roots.
fn checked(st: &super::AppState, body: Result<Bytes, BytesRejection>) -> ApiResult<crate::schedule::policy::Policy> {
    let spec: PolicySpec = json_body(body)?;
    Ok(spec.check(Some(&st.confine)).map_err(StoreError::from)?)
}

pub async fn create(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let p = checked(&st, body)?;
    let view = store::add(&st.repo.catalog, &p, UtcTime::now()).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub async fn list(State(st): St) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"policies": store::list(&st.repo.catalog).await?})))
}

pub async fn show(State(st): St, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(store::show(&st.repo.catalog, &name).await?).into_response())
}

pub async fn replace(
    State(st): St,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let p = checked(&st, body)?;
    Ok(Json(store::replace(&st.repo.catalog, &name, &p, UtcTime::now()).await?).into_response())
}

pub async fn remove(State(st): St, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    store::remove(&st.repo.catalog, &name).await?;
    Ok(Json(json!({"deleted": name})))
}

/// Queues a backup of every VM of the policy now: 202 with the jobs.
pub async fn run(State(st): St, Path(name): Path<String>) -> ApiResult<Response> {
    let jobs = store::run_now(&st.repo.catalog, &name, UtcTime::now()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"policy": name, "jobs": jobs}))).into_response())
}

/// `GET /jobs?policy=&vm_name=&state=&limit=`, newest first.
pub async fn jobs(State(st): St, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let q = super::query::Query::parse(q.as_deref())?;
    let state = match q.str("state")? {
        Some(s) => Some(
            crate::catalog::RunState::parse(s).ok_or_else(|| ApiError::bad_request(format!("unknown state {s:?}")))?,
        ),
        None => None,
    };
    let limit = q.u64("limit")?.map(|n| n.min(i64::MAX as u64) as i64);
    let filter = JobFilter { policy: q.str("policy")?, vm: q.str("vm_name")?, state, limit };
    Ok(Json(json!({"jobs": st.repo.catalog.jobs(&filter).await?})))
}

/// `GET /metrics`, Prometheus text format.
pub async fn metrics(State(st): St) -> ApiResult<Response> {
    let live = metrics::Live { restore_sessions: st.sessions.list().len(), nbd_exports: None };
    let repo = st.repo.clone();
    let page = tokio::task::spawn_blocking(move || metrics::render(&repo, &live)).await??;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], page).into_response())
}
