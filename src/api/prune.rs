//! `POST /prune`: retention over HTTP, as `backchain prune` (the logic is
//! `engine::prune`). A prune that found points to drop held by readers
//! answers 409 with the report: the rest was pruned.

use super::St;
use super::backups::json_body;
use super::error::{ApiError, ApiResult};
use crate::engine::prune::{PruneRequest, prune_vm};
use crate::engine::retention::KeepOptions;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneBody {
    vm_name: String,
    /// The same as keep_last.
    keep: Option<u32>,
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    #[serde(default)]
    dry_run: bool,
}

pub async fn prune(axum::extract::State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let b: PruneBody = json_body(body)?;
    if b.keep.is_some() && b.keep_last.is_some() {
        return Err(ApiError::bad_request("give keep or keep_last, not both"));
    }
    let keep = KeepOptions {
        keep_last: b.keep_last.or(b.keep),
        keep_hourly: b.keep_hourly,
        keep_daily: b.keep_daily,
        keep_weekly: b.keep_weekly,
        keep_monthly: b.keep_monthly,
        keep_yearly: b.keep_yearly,
    };
    let req = PruneRequest { vm: b.vm_name, keep, dry_run: b.dry_run };
    let repo = st.repo.clone();
    let report = tokio::task::spawn_blocking(move || prune_vm(&repo, &req, &crate::util::time::local_offset)).await??;
    let body = serde_json::to_value(&report).map_err(|e| ApiError::internal(e.to_string()))?;
    if report.busy.is_empty() {
        return Ok(Json(body).into_response());
    }
    let message = format!(
        "restore points in use by readers (restore sessions, mounts or exports) were not dropped: {}; \
         close them and prune again",
        report.busy.join(", ")
    );
    let err = serde_json::json!({"error": {"code": "busy", "message": message}, "report": body});
    Ok((StatusCode::CONFLICT, Json(err)).into_response())
}
