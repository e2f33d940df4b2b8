//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`
//! with the HTTP status a client library expects.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tonic::Code;

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's error type (`invalid_request_error`, `server_error`, ...).
    pub kind: &'static str,
    /// A short machine-readable code.
    pub code: &'static str,
    /// What happened, in words.
    pub message: String,
}

impl ApiError {
    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// 401: no or the wrong API key.
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: "invalid_api_key",
            message: "missing or wrong API key: send `Authorization: Bearer <key>`".to_owned(),
        }
    }

    /// The error of a gRPC status from the inference or model service.
    pub fn from_status(status: &tonic::Status) -> Self {
        let message = status.message().to_owned();
        let (http, kind, code) = match status.code() {
            Code::NotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            Code::InvalidArgument | Code::OutOfRange => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            // Autoload off, no chat template, a model whose files are bad.
            Code::FailedPrecondition => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "model_not_usable",
            ),
            Code::ResourceExhausted => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
            ),
            Code::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "worker_unavailable",
            ),
            Code::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            Code::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "cancelled"),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
        };
        ApiError {
            status: http,
            kind,
            code,
            message,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": null,
                "code": self.code,
            }
        })
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        ApiError::from_status(&status)
    }
}

impl From<crate::supervisor::SupervisorError> for ApiError {
    fn from(e: crate::supervisor::SupervisorError) -> Self {
        ApiError::from_status(&crate::api::convert::status(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_as_openai_clients_expect() {
        let cases = [
            (Code::NotFound, 404),
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::Unauthenticated, 401),
            (Code::Internal, 500),
        ];
        for (code, http) in cases {
            let e = ApiError::from_status(&tonic::Status::new(code, "why"));
            assert_eq!(e.status.as_u16(), http, "{code:?}");
            assert_eq!(e.body()["error"]["message"], "why");
        }
    }
}
