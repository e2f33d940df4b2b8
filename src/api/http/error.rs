//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`
//! with the HTTP status a client library expects. This is the one place an
//! [`InferenceError`] (or a supervisor error, for listings) becomes an HTTP
//! status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tonic::Code;

use crate::inference::InferenceError;
use crate::supervisor::SupervisorError;

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
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    /// 401: no or the wrong API key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "missing or wrong API key: send `Authorization: Bearer <key>`",
        )
    }

    /// 404: no model has this name.
    fn model_not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            message,
        )
    }

    /// 400: the model cannot serve this (autoload off, no chat template,
    /// bad files).
    fn model_not_usable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model_not_usable",
            message,
        )
    }

    /// 429: the queue is full or the model does not fit now.
    fn queue_full(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "queue_full",
            message,
        )
    }

    /// 404: nothing by that name.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message,
        )
    }

    /// 500: the daemon itself failed to answer.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            message,
        )
    }

    /// 503: the worker (or the daemon) cannot answer now; a retry may.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "worker_unavailable",
            message,
        )
    }

    /// 403: a browser request from another site, or for a host name this
    /// server does not answer to (DNS rebinding).
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            message,
        )
    }

    /// 415: the body must be JSON (`Content-Type: application/json`).
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            message,
        )
    }

    /// 503 with `Retry-After`: too many of something at once; retry shortly.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            message,
        )
    }

    /// The error of a status the worker sent, by its code.
    fn from_worker(status: &tonic::Status) -> Self {
        let message = status.message();
        match status.code() {
            Code::NotFound => Self::model_not_found(message),
            Code::InvalidArgument | Code::OutOfRange => Self::bad_request(message),
            Code::FailedPrecondition => Self::model_not_usable(message),
            Code::ResourceExhausted => Self::queue_full(message),
            Code::Unavailable => Self::unavailable(message),
            Code::Unauthenticated => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                message,
            ),
            Code::Cancelled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "cancelled",
                message,
            ),
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                message,
            ),
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

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        let message = e.to_string();
        match e {
            SupervisorError::NotFound(_) => Self::model_not_found(message),
            SupervisorError::FailedPrecondition(_) => Self::model_not_usable(message),
            SupervisorError::ResourceExhausted(_) => Self::queue_full(message),
            SupervisorError::Unavailable(_) | SupervisorError::Stopped => {
                Self::unavailable(message)
            }
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> Self {
        match e {
            InferenceError::NoModel | InferenceError::Limit(_) => Self::bad_request(e.to_string()),
            InferenceError::Supervisor(e) => e.into(),
            InferenceError::WorkerFailed { .. } | InferenceError::WorkerStopped { .. } => {
                Self::unavailable(e.to_string())
            }
            InferenceError::Worker(status) => Self::from_worker(&status),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let overloaded = self.code == "overloaded";
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if overloaded {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// What an `overloaded` answer's `Retry-After` says.
const RETRY_AFTER_SECONDS: &str = "2";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::limits::LimitError;

    fn shape(e: impl Into<ApiError>) -> (u16, &'static str, &'static str, String) {
        let e = e.into();
        (e.status.as_u16(), e.kind, e.code, e.message)
    }

    #[test]
    fn worker_statuses_map_as_openai_clients_expect() {
        let cases = [
            (Code::NotFound, 404, "model_not_found"),
            (Code::InvalidArgument, 400, "invalid_request"),
            (Code::OutOfRange, 400, "invalid_request"),
            (Code::FailedPrecondition, 400, "model_not_usable"),
            (Code::ResourceExhausted, 429, "queue_full"),
            (Code::Unavailable, 503, "worker_unavailable"),
            (Code::Unauthenticated, 401, "invalid_api_key"),
            (Code::Cancelled, 503, "cancelled"),
            (Code::Internal, 500, "internal_error"),
        ];
        for (code, http, name) in cases {
            let e = ApiError::from(InferenceError::Worker(tonic::Status::new(code, "why")));
            assert_eq!((e.status.as_u16(), e.code), (http, name), "{code:?}");
            assert_eq!(e.body()["error"]["message"], "why");
            assert_eq!(e.body()["error"]["code"], name);
        }
    }

    #[test]
    fn supervisor_errors_map_to_their_http_statuses() {
        let nope = SupervisorError::NotFound("nope".into());
        let (http, kind, code, message) = shape(InferenceError::Supervisor(nope));
        assert_eq!(
            (http, kind, code),
            (404, "invalid_request_error", "model_not_found")
        );
        assert!(message.contains("nope"), "{message}");
        let cases = [
            (
                SupervisorError::FailedPrecondition("x".into()),
                400,
                "model_not_usable",
            ),
            (
                SupervisorError::ResourceExhausted("x".into()),
                429,
                "queue_full",
            ),
            (
                SupervisorError::Unavailable("x".into()),
                503,
                "worker_unavailable",
            ),
            (SupervisorError::Stopped, 503, "worker_unavailable"),
        ];
        for (e, http, code) in cases {
            let text = e.to_string();
            let got = shape(InferenceError::Supervisor(e));
            assert_eq!((got.0, got.2, got.3), (http, code, text));
        }
        assert_eq!(
            shape(SupervisorError::ResourceExhausted("x".into())).1,
            "rate_limit_error"
        );
    }

    #[test]
    fn refused_requests_are_400_and_dead_workers_503() {
        let (http, _, code, message) =
            shape(InferenceError::from(LimitError::TooManyStops { count: 17 }));
        assert_eq!((http, code), (400, "invalid_request"));
        assert!(message.contains("17 stop strings"), "{message}");
        assert_eq!(shape(InferenceError::NoModel).0, 400);
        let failed = shape(InferenceError::WorkerFailed {
            model: "gemma".into(),
            exit: crate::worker::WorkerEnded::from(crate::worker::WorkerExit::Signaled {
                signal: libc::SIGSEGV,
                core_dumped: false,
            }),
        });
        assert_eq!(
            (failed.0, failed.2, failed.3.as_str()),
            (
                503,
                "worker_unavailable",
                "worker for model gemma failed: worker killed by SIGSEGV"
            )
        );
        let stopped = shape(InferenceError::WorkerStopped {
            model: "gemma".into(),
        });
        assert_eq!(
            (stopped.0, stopped.3.as_str()),
            (503, "model gemma was unloaded")
        );
    }
}
