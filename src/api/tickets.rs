//! Download tickets over HTTP: `POST /restore/{mount}/tickets` with
//! `{path, route?, format?}` answers `{url}`, a URL that downloads that one
//! file or folder once, within a minute, without the bearer token, so a
//! browser streams it to disk (see `restore::tickets`).

use super::backups::json_body;
use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::restore::session;
use super::{AppState, St};
use crate::restore::entry::encode_path;
use crate::restore::tickets::{Grant, TICKET_TTL, TicketError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// The routes a ticket can open.
const ROUTES: [&str; 2] = ["download", "download-directory"];

#[derive(Deserialize)]
struct TicketReq {
    /// The path as text, or `path_encoded` (percent-encoded bytes, as the
    /// listing gives it) for names that are not UTF-8.
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    path_encoded: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

fn ticket_error(e: TicketError) -> ApiError {
    match e {
        TicketError::Full => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_tickets", e.to_string()),
        TicketError::Invalid => ApiError::new(StatusCode::FORBIDDEN, "invalid_ticket", e.to_string()),
        TicketError::Random(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

pub async fn ticket(
    State(st): St,
    Path(mount): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: TicketReq = json_body(body)?;
    session(&st, &mount)?;
    let route = req.route.unwrap_or_else(|| ROUTES[0].to_string());
    if !ROUTES.contains(&route.as_str()) {
        return Err(ApiError::bad_request(format!("route {route:?}: use download or download-directory")));
    }
    // The path as the download will parse it, so the grant compares equal.
    let query = match (&req.path, &req.path_encoded) {
        (_, Some(enc)) => format!("path={}", encode_path(&Query::parse(Some(&format!("path={enc}")))?.path()?)),
        (Some(p), None) => format!("path={}", encode_path(p.as_bytes())),
        (None, None) => return Err(ApiError::bad_request("a ticket needs path or path_encoded")),
    };
    let path = Query::parse(Some(&query))?.path()?;
    let grant = Grant { session: mount.clone(), route: route.clone(), path: path.clone() };
    let ticket = st.tickets.issue(grant).map_err(ticket_error)?;
    let mut url = format!("/api/v1/restore/{mount}/{route}?{query}&ticket={ticket}");
    if let Some(f) = req.format {
        url.push_str(&format!("&format={}", encode_path(f.as_bytes())));
    }
    Ok(Json(json!({"url": url, "expires_in": TICKET_TTL.as_secs()})))
}

/// For a request carrying `ticket=`: whether the ticket opens exactly this
/// download (then it is used up). `None`: no ticket, the token decides.
pub fn ticket_grant(state: &AppState, req: &Request) -> Option<ApiResult<()>> {
    let q = Query::parse(req.uri().query()).ok()?;
    let ticket = q.str("ticket").ok().flatten()?.to_string();
    let segs: Vec<&str> = req.uri().path().trim_end_matches('/').rsplit('/').take(3).collect();
    let check = || -> ApiResult<()> {
        let [route, mount, "restore"] = segs.as_slice() else {
            return Err(ticket_error(TicketError::Invalid));
        };
        if req.method() != axum::http::Method::GET || !ROUTES.contains(route) {
            return Err(ticket_error(TicketError::Invalid));
        }
        let grant = Grant { session: mount.to_string(), route: route.to_string(), path: q.path()? };
        state.tickets.redeem(&ticket, &grant).map_err(ticket_error)
    };
    Some(check())
}
