//! `GET /status` (ours): what the console's status strip shows, in one
//! object: version, uptime, `--models-max`, host-cache use, models per
//! state, the GPUs with their memory, and requests active and queued. The
//! figures are the ones gRPC's GetStatus and `/metrics` report.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HttpState;
use super::error::ApiError;

/// The status object (also sent on `/events` as `status` events).
pub async fn status_json(state: &HttpState) -> Result<Value, ApiError> {
    let s = state.supervisor.status().await?;
    let by_state: serde_json::Map<String, Value> = s
        .by_state
        .iter()
        .map(|(st, n)| (st.name().to_owned(), json!(n)))
        .collect();
    let gpus: Vec<Value> = state
        .gpus
        .devices()
        .iter()
        .map(|g| {
            let (free, holders) = g.usage();
            let d = &g.device;
            json!({
                "backend": d.backend.name(),
                "index": d.index,
                "kind": d.kind.name(),
                "ggml_name": d.ggml_name,
                "name": d.name,
                "arch": d.arch,
                "arch_override": d.arch_override,
                "total_bytes": d.total_bytes,
                "free_bytes": free,
                "used_bytes": d.total_bytes.saturating_sub(free),
                "usable": d.usable,
                "reserved_by_model": holders
                    .into_iter()
                    .map(|(model, bytes)| (model, json!(bytes)))
                    .collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    let (active, queued) = state.metrics.requests();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "models_max": s.models_max,
        "host_cache_bytes_used": s.host_cache_used,
        "host_cache_bytes_limit": s.host_cache_limit,
        "models_by_state": by_state,
        "gpus": gpus,
        "gpu_notes": state.gpus.notes(),
        "requests_active": active,
        "requests_queued": queued,
    }))
}

/// `GET /status`.
pub async fn status(State(state): State<HttpState>) -> Response {
    match status_json(&state).await {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}
