//! API errors: `{"error": {"code", "message"}}` with a fitting status.

use crate::archive::ArchiveError;
use crate::catalog::CatalogError;
use crate::engine::EngineError;
use crate::repo::RepoError;
use crate::restore::RestoreError;
use crate::tree::TreeError;
use crate::volume::fs::FsError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(m) => Self::not_found(m),
            CatalogError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::BadRequest(m) => Self::bad_request(m),
            EngineError::NoParent(m) => Self::new(StatusCode::CONFLICT, "no_parent", m),
            EngineError::Busy(m) => Self::new(StatusCode::CONFLICT, "busy", m),
            EngineError::NotFound(m) => Self::not_found(m),
            EngineError::Catalog(c) => c.into(),
            EngineError::RestorePoint(r) => r.into(),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::BadName(m) => Self::bad_request(m),
            RepoError::Catalog(c) => c.into(),
            RepoError::NoBackup(_) | RepoError::NoDisk { .. } => Self::not_found(e.to_string()),
            RepoError::NotCompleted { .. } => Self::new(StatusCode::CONFLICT, "not_completed", e.to_string()),
            RepoError::Merging(_) => Self::new(StatusCode::CONFLICT, "busy", e.to_string()),
            RepoError::Image { .. } => Self::new(StatusCode::CONFLICT, "unavailable", e.to_string()),
            RepoError::Io { .. } | RepoError::Missing(_) | RepoError::CatalogLost { .. } => {
                Self::internal(e.to_string())
            }
        }
    }
}

impl From<RestoreError> for ApiError {
    fn from(e: RestoreError) -> Self {
        match e {
            RestoreError::Repo(r) => r.into(),
            RestoreError::Tree(t) => t.into(),
            RestoreError::NoSession(_) | RestoreError::Expired(_) => Self::not_found(e.to_string()),
            RestoreError::TooMany(_) => Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_sessions", e.to_string()),
        }
    }
}

impl From<TreeError> for ApiError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::Fs(FsError::NotFound) => Self::not_found("no such file or folder"),
            TreeError::Fs(FsError::NotADirectory) => {
                Self::new(StatusCode::BAD_REQUEST, "not_a_directory", "not a folder")
            }
            TreeError::Fs(FsError::IsADirectory) => Self::new(StatusCode::BAD_REQUEST, "is_a_directory", "is a folder"),
            TreeError::Fs(FsError::NotASymlink) => Self::bad_request("not a symbolic link"),
            TreeError::InvalidPath(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_path", m),
            TreeError::Unavailable(m) => Self::new(StatusCode::CONFLICT, "unavailable", m),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> Self {
        Self::internal(e.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(format!("worker failed: {e}"))
    }
}
