//! The error body of the REST API: `{code, message, hint}`, a 4xx for the caller's mistakes and
//! a 503 (never an internal detail) when the metadata database cannot answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tern_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub hint: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// The database failed: logged here, answered without detail.
    pub fn unavailable(e: StoreError) -> ApiError {
        tracing::error!("API: metadata database: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the metadata database did not answer",
            "retry shortly; the server log has the cause",
        )
    }

    /// A store error: not found and conflicts are the caller's; anything else is unavailable.
    pub fn from_store(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m, ""),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m, ""),
            StoreError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", m, ""),
            other => ApiError::unavailable(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"code": self.code, "message": self.message, "hint": self.hint})),
        )
            .into_response()
    }
}
