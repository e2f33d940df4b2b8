//! Crash reports over HTTP (ours; the console links a failed model to its
//! report): `GET /crashes` lists them newest first, `GET /crashes/{id}` is
//! one report whole, as stored.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HttpState;
use super::error::ApiError;
use super::extract::ModelPath;
use crate::crashes::{CrashError, CrashStore};

/// A store error as HTTP: an unknown id is a 404, a malformed one a 400.
fn api_error(e: CrashError) -> ApiError {
    match e {
        CrashError::NotFound(_) => ApiError::not_found(e.to_string()),
        CrashError::BadId(_) => ApiError::bad_request(e.to_string()),
        CrashError::Dir(_)
        | CrashError::Io { .. }
        | CrashError::Format { .. }
        | CrashError::Task(_) => ApiError::internal(e.to_string()),
    }
}

fn store(state: &HttpState) -> Result<CrashStore, ApiError> {
    state.crashes.clone().ok_or_else(|| {
        ApiError::not_found(
            "crash reports are off: the daemon has no directory for them (set crash_dir)",
        )
    })
}

/// `GET /crashes`.
pub async fn list(State(state): State<HttpState>) -> Response {
    let answer = async {
        let store = store(&state)?;
        let dir = store.dir().display().to_string();
        let reports = store
            .off_thread(CrashStore::list)
            .await
            .map_err(api_error)?;
        let data: Vec<Value> = reports
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "time": r.time,
                    "model": r.model,
                    "worker_pid": r.worker_pid,
                    "signal": r.exit.signal_name,
                    "exit_code": r.exit.code,
                    "reason": r.exit.reason,
                })
            })
            .collect();
        Ok::<_, ApiError>(axum::Json(
            json!({"object": "list", "data": data, "dir": dir}),
        ))
    };
    answer.await.into_response()
}

/// `GET /crashes/{id}`.
pub async fn one(State(state): State<HttpState>, ModelPath(id): ModelPath) -> Response {
    let answer = async {
        let store = store(&state)?;
        let report = store
            .off_thread(move |s| s.get(&id))
            .await
            .map_err(api_error)?;
        Ok::<_, ApiError>(axum::Json(report))
    };
    answer.await.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_http_statuses() {
        use axum::http::StatusCode;
        let cases = [
            (CrashError::NotFound("x".into()), StatusCode::NOT_FOUND),
            (CrashError::BadId("../x".into()), StatusCode::BAD_REQUEST),
            (
                CrashError::Io {
                    path: "/x".into(),
                    source: std::io::Error::other("disk"),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(api_error(e).status, status);
        }
    }
}
