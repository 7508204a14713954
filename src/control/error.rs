//! API errors as ECS answers them: an HTTP status and `{"__type", "message"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::proto::ErrorBody;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }
    pub fn client(m: impl Into<String>) -> ApiError {
        ApiError::new(400, "ClientException", m)
    }
    pub fn invalid(m: impl Into<String>) -> ApiError {
        ApiError::new(400, "InvalidParameterException", m)
    }
    pub fn cluster_not_found(name: &str) -> ApiError {
        ApiError::new(
            400,
            "ClusterNotFoundException",
            format!("cluster {name:?} not found"),
        )
    }
    pub fn unauthenticated(m: impl Into<String>) -> ApiError {
        ApiError::new(401, "AccessDeniedException", m)
    }
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        ApiError::new(403, "AccessDeniedException", m)
    }
    pub fn too_large() -> ApiError {
        ApiError::new(
            413,
            "ClientException",
            format!(
                "request body is larger than {} bytes",
                crate::proto::MAX_BODY_BYTES
            ),
        )
    }
    pub fn unknown_operation(action: &str) -> ApiError {
        ApiError::new(
            400,
            "UnknownOperationException",
            format!("unknown action {action:?}"),
        )
    }
    pub fn with_kind(status: u16, kind: &'static str, m: impl Into<String>) -> ApiError {
        ApiError::new(status, kind, m)
    }
    pub fn server(m: impl Into<String>) -> ApiError {
        ApiError::new(500, "ServerException", m)
    }
}

impl From<super::store::StoreError> for ApiError {
    fn from(e: super::store::StoreError) -> ApiError {
        tracing::error!("store: {e}");
        ApiError::server(format!("cannot write the store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = ErrorBody {
            kind: self.kind.to_string(),
            message: self.message,
        };
        (
            status,
            [("content-type", "application/x-amz-json-1.1")],
            serde_json::to_string(&body).unwrap_or_default(),
        )
            .into_response()
    }
}
