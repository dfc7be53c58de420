//! Restore-point export routes: export a disk of a backup over NBD, list
//! the exports, delete one. The exports themselves live in
//! `restore::exports`; the listener in `daemon`.

use super::backups::json_body;
use super::error::{ApiError, ApiResult};
use super::{AppState, St};
use crate::restore::exports::{ExportError, Exports};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Repo(r) => r.into(),
            ExportError::Catalog(c) => c.into(),
            ExportError::NotFound(_) => Self::not_found(e.to_string()),
            ExportError::Busy(_) => Self::new(StatusCode::CONFLICT, "busy", e.to_string()),
            other => Self::internal(other.to_string()),
        }
    }
}

fn exports(state: &AppState) -> ApiResult<Arc<Exports>> {
    state.exports.clone().ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "nbd_disabled", "this server runs no NBD listener (serve --nbd-listen)")
    })
}

#[derive(Deserialize)]
struct CreateReq {
    backup_id: String,
    disk_index: usize,
    #[serde(default)]
    writable: bool,
}

pub async fn create(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let req: CreateReq = json_body(body)?;
    let ex = exports(&st)?;
    let info = tokio::task::spawn_blocking(move || ex.create(&req.backup_id, req.disk_index, req.writable)).await??;
    Ok((StatusCode::CREATED, Json(json!(info))).into_response())
}

pub async fn list(State(st): St) -> ApiResult<Json<Value>> {
    let list = match &st.exports {
        Some(ex) => ex.list(),
        None => Vec::new(),
    };
    Ok(Json(json!({ "exports": list })))
}

pub async fn delete(State(st): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let ex = exports(&st)?;
    let gone = id.clone();
    tokio::task::spawn_blocking(move || ex.delete(&gone)).await??;
    Ok(Json(json!({ "deleted": id })))
}
