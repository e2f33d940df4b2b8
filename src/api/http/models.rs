//! `GET /v1/models`, `GET /v1/models/{model}` and `POST /v1/embeddings`.

use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::autoload::Autoload;
use super::embeddings::EmbeddingRequest;
use super::error::ApiError;
use super::{HttpState, parse_json};
use crate::supervisor::ModelView;

/// A model as OpenAI lists it, plus what we know of it.
fn model_json(m: &ModelView) -> Value {
    // The file's modification time is the closest thing to "created" we have.
    let created = m
        .files
        .first()
        .and_then(|f| std::fs::metadata(f).ok())
        .and_then(|md| md.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    json!({
        "id": m.id,
        "object": "model",
        "created": created,
        "owned_by": "llama-router",
        "state": m.state.name(),
        "aliases": m.aliases,
        "architecture": m.architecture,
        "quantization": m.quantization,
        "size_bytes": m.size_bytes,
        "context_length": m.context_length,
        "failure_reason": m.failure_reason,
        "worker_pid": m.worker_pid,
    })
}

/// `GET /v1/models`.
pub async fn list(State(state): State<HttpState>) -> Response {
    match state.supervisor.list().await {
        Ok(models) => {
            let data: Vec<Value> = models.iter().map(model_json).collect();
            axum::Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /v1/models/{model}` (an alias finds its model).
pub async fn one(
    State(state): State<HttpState>,
    super::extract::ModelPath(model): super::extract::ModelPath,
) -> Response {
    match state.supervisor.get(&model).await {
        Ok(m) => axum::Json(model_json(&m)).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A vector as little-endian f32 bytes in base64 (OpenAI's `encoding_format: base64`).
fn base64_vector(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<HttpState>,
    autoload: Autoload,
    body: Bytes,
) -> Response {
    let state = state.autoload(autoload);
    let result = async {
        let request: EmbeddingRequest = parse_json(&body)?;
        let reply = state.inference.embed(request.to_pb()?).await?;
        let data: Vec<Value> = reply
            .embeddings
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let embedding = if request.base64() {
                    json!(base64_vector(&e.values))
                } else {
                    json!(e.values)
                };
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        Ok::<_, ApiError>(json!({
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": reply.prompt_tokens, "total_tokens": reply.prompt_tokens},
        }))
    }
    .await;
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors_are_little_endian_f32() {
        let encoded = base64_vector(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(bytes.len(), 8);
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), -2.5);
    }
}
