//! llama-server's router-mode model endpoints, and ours beside them:
//! - `GET /models`: every model in llama-server's shape (`{"object":
//!   "list", "data": [{"id", "object": "model", "path", "status": {"value",
//!   "failed", "exit_code"}, "architecture": {"input_modalities",
//!   "output_modalities"}}]}`), plus our own fields (the GGUF architecture
//!   is `gguf_architecture`); `?reload=1` rescans the models directory
//!   first, as llama-server's does (kept for its clients, and refused to
//!   other sites' pages, see [`super::origin`]); `POST /models/reload` is
//!   the same without a side effect on a GET;
//! - `POST /models/load` and `POST /models/unload` with `{"model": ...}`,
//!   answering `{"success": true}` as llama-server does;
//! - ours: `POST /models/pin` (`{"model", "pinned"}`), `GET
//!   /models/{id}/logs` (the worker's recent log lines) and `GET
//!   /models/{id}/timings` (recent generations' TTFT and tokens/s).
//!
//! The console reads these, and `/events` carries the same model JSON.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{ModelPath, Params};
use super::origin::require_json;
use super::{HttpState, parse_json};
use crate::supervisor::{ModelState, ModelView};

/// Log lines `GET /models/{id}/logs` returns unless asked for fewer.
const DEFAULT_LOG_LINES: usize = 200;

/// llama-server's `status` object for a model: `value` is `loaded`,
/// `loading` or `unloaded` (a model still unloading counts as loaded), and a
/// failed model is `unloaded` with `failed: true`; `reason` is ours, and so
/// is `parked: true` on a parked model (`unloaded`: it takes no slot, and a
/// request brings it back).
pub fn status_json(state: ModelState, reason: Option<&str>) -> Value {
    let value = match state {
        ModelState::Ready | ModelState::Unloading => "loaded",
        ModelState::Loading => "loading",
        ModelState::Discovered | ModelState::Unloaded | ModelState::Failed | ModelState::Parked => {
            "unloaded"
        }
    };
    if state == ModelState::Parked {
        return json!({"value": value, "parked": true});
    }
    if state == ModelState::Failed {
        let reason = reason.unwrap_or_default();
        let mut s = json!({"value": value, "failed": true, "reason": reason});
        if let (Some(code), Some(map)) = (exit_code(reason), s.as_object_mut()) {
            map.insert("exit_code".to_owned(), json!(code));
        }
        s
    } else {
        json!({"value": value})
    }
}

/// The exit code of a worker that exited by itself, as its failure reason
/// words it (`worker exited with code 1`); none for a signal, a hang, a
/// refused file, ...
fn exit_code(reason: &str) -> Option<i32> {
    let (_, rest) = reason.split_once("worker exited with code ")?;
    let digits: &str = rest
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .next()?;
    digits.parse().ok()
}

/// llama-server's `architecture` object: what the model takes and gives.
/// Text in and out; images in too with a projector.
fn modalities(m: &ModelView) -> Value {
    let input: &[&str] = if m.projector.is_some() {
        &["text", "image"]
    } else {
        &["text"]
    };
    json!({"input_modalities": input, "output_modalities": ["text"]})
}

/// A model's effective settings (environment names only: values may be secrets).
fn settings_json(e: &crate::settings::Effective) -> Value {
    json!({
        "engine": e.params.as_ref().map(serde_json::to_value).and_then(Result::ok),
        "sampling": serde_json::to_value(e.extras.sampling).ok(),
        "mlock": e.mlock,
        "idle_ttl_seconds": e.idle_ttl.map(|t| t.as_secs()),
        "env": e.extras.env.keys().collect::<Vec<_>>(),
        "chat_template": e.extras.chat_template.as_ref().map(|p| p.display().to_string()),
    })
}

/// A model as `GET /models` and `/events` show it: llama-server's fields
/// (`id`, `object`, `path`, `status`, `architecture`), then ours.
pub fn model_json(m: &ModelView) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "path": m.files.first().map(|f| f.display().to_string()),
        "status": status_json(m.state, m.failure_reason.as_deref()),
        "architecture": modalities(m),
        "state": m.state.name(),
        "aliases": m.aliases,
        "name": m.name,
        "gguf_architecture": m.architecture,
        "quantization": m.quantization,
        "parameter_count": m.parameter_count,
        "size_bytes": m.size_bytes,
        "context_length": m.context_length,
        "files": m.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "worker_pid": m.worker_pid,
        "resident_bytes": m.resident_bytes,
        "last_used_unix_ms": m.last_used.map(crate::util::unix_ms),
        "pinned": m.pinned,
        "failure_reason": m.failure_reason,
        "settings": settings_json(&m.settings),
    })
}

/// `{"model": ...}`, and for a pin whether to pin (default: yes).
#[derive(Debug, Deserialize)]
struct ModelRequest {
    model: String,
    #[serde(default)]
    pinned: Option<bool>,
}

impl ModelRequest {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let request: ModelRequest = parse_json(body)?;
        if request.model.is_empty() {
            return Err(ApiError::bad_request("\"model\" is empty"));
        }
        Ok(request)
    }
}

fn answer(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn listing(state: &HttpState, reload: bool) -> Result<Value, ApiError> {
    if reload {
        state.supervisor.rescan().await?;
    }
    let models = state.supervisor.list().await?;
    Ok(json!({
        "object": "list",
        "data": models.iter().map(model_json).collect::<Vec<_>>(),
    }))
}

/// `GET /models`; with `?reload=1` (as llama-server) the models directory is rescanned first.
pub async fn list(State(state): State<HttpState>, query: Params) -> Response {
    answer(listing(&state, query.flag("reload")).await)
}

/// `POST /models/reload` (ours): rescans the models directory, then lists.
pub async fn reload(State(state): State<HttpState>) -> Response {
    answer(listing(&state, true).await)
}

/// `POST /models/load`: answers once the model is loaded, or with why it failed.
pub async fn load(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        require_json(&headers)?;
        let request = ModelRequest::parse(&body)?;
        let view = state.supervisor.load_and_wait(&request.model).await?;
        Ok(json!({"success": true, "model": model_json(&view)}))
    };
    answer(result.await)
}

/// `POST /models/unload`.
pub async fn unload(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        require_json(&headers)?;
        let request = ModelRequest::parse(&body)?;
        let view = state.supervisor.unload(&request.model).await?;
        Ok(json!({"success": true, "model": model_json(&view)}))
    };
    answer(result.await)
}

/// `POST /models/pin` (ours): `{"model", "pinned": true|false}`.
pub async fn pin(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        require_json(&headers)?;
        let request = ModelRequest::parse(&body)?;
        let pinned = request.pinned.unwrap_or(true);
        let view = state.supervisor.pin(&request.model, pinned).await?;
        Ok(json!({"success": true, "model": model_json(&view)}))
    };
    answer(result.await)
}

/// `GET /models/{id}/logs` (ours): the model's recent worker log lines, oldest first.
pub async fn logs(
    State(state): State<HttpState>,
    ModelPath(model): ModelPath,
    query: Params,
) -> Response {
    let result = async {
        let n = query.number("lines")?;
        let id = state.supervisor.get(&model).await?.id;
        let n = n
            .unwrap_or(DEFAULT_LOG_LINES)
            .min(crate::worker::logbook::LINES);
        let lines: Vec<Value> = state
            .logs
            .recent(&id, n)
            .into_iter()
            .map(|l| json!({"at_unix_ms": l.at_unix_ms, "level": l.level, "text": l.text}))
            .collect();
        Ok(json!({"model": id, "lines": lines}))
    };
    answer(result.await)
}

/// `GET /models/{id}/timings` (ours): the model's recent generations.
pub async fn timings(State(state): State<HttpState>, ModelPath(model): ModelPath) -> Response {
    let result = async {
        let id = state.supervisor.get(&model).await?.id;
        let timings: Vec<Value> = state
            .metrics
            .timings()
            .recent(&id, SystemTime::now())
            .into_iter()
            .map(|t| {
                json!({
                    "at_unix_ms": t.at_unix_ms,
                    "ttft_ms": t.ttft_ms,
                    "tokens_per_second": t.tokens_per_second,
                    "prompt_tokens": t.prompt_tokens,
                    "completion_tokens": t.completion_tokens,
                })
            })
            .collect();
        Ok(json!({"model": id, "timings": timings}))
    };
    answer(result.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_onto_llama_servers_status_values() {
        let cases = [
            (ModelState::Discovered, "unloaded"),
            (ModelState::Loading, "loading"),
            (ModelState::Ready, "loaded"),
            (ModelState::Unloading, "loaded"),
            (ModelState::Parked, "unloaded"),
            (ModelState::Unloaded, "unloaded"),
            (ModelState::Failed, "unloaded"),
        ];
        for (state, value) in cases {
            let s = status_json(state, None);
            assert_eq!(s["value"], value, "{state:?}");
            assert_eq!(s.get("failed").is_some(), state == ModelState::Failed);
            assert_eq!(s.get("parked").is_some(), state == ModelState::Parked);
        }
        let failed = status_json(ModelState::Failed, Some("killed by SIGSEGV"));
        assert_eq!(
            failed,
            json!({"value": "unloaded", "failed": true, "reason": "killed by SIGSEGV"})
        );
    }

    #[test]
    fn requests_need_a_model() {
        assert!(ModelRequest::parse(br#"{"model": ""}"#).is_err());
        assert!(ModelRequest::parse(b"{}").is_err());
        assert!(ModelRequest::parse(b"nonsense").is_err());
        let r = ModelRequest::parse(br#"{"model": "m", "pinned": false, "extra": 1}"#).unwrap();
        assert_eq!((r.model.as_str(), r.pinned), ("m", Some(false)));
    }

    #[test]
    fn a_view_has_llama_servers_fields_and_ours() {
        let view = ModelView {
            id: "m".into(),
            state: ModelState::Ready,
            files: vec!["/models/m.gguf".into()],
            projector: None,
            size_bytes: 10,
            name: "M".into(),
            architecture: "gemma3".into(),
            quantization: "Q4_K_M".into(),
            parameter_count: 1,
            context_length: 2048,
            failure_reason: None,
            last_used: None,
            pinned: true,
            resident_bytes: 10,
            worker_pid: Some(42),
            aliases: vec!["a".into()],
            settings: Default::default(),
            gpu: None,
            note: None,
        };
        let j = model_json(&view);
        assert_eq!(j["id"], "m");
        assert_eq!(j["path"], "/models/m.gguf");
        assert_eq!(j["status"]["value"], "loaded");
        assert_eq!(j["state"], "ready");
        assert_eq!(j["worker_pid"], 42);
        assert_eq!(j["pinned"], true);
        assert_eq!(j["settings"]["engine"], Value::Null);
        assert_eq!(j["object"], "model");
        assert_eq!(
            j["architecture"],
            json!({"input_modalities": ["text"], "output_modalities": ["text"]})
        );
        assert_eq!(j["gguf_architecture"], "gemma3");
        let with_projector = ModelView {
            projector: Some("/models/mmproj.gguf".into()),
            ..view
        };
        assert_eq!(
            model_json(&with_projector)["architecture"]["input_modalities"],
            json!(["text", "image"])
        );
    }

    #[test]
    fn a_failed_status_has_the_exit_code_when_the_worker_exited_by_itself() {
        let exited = status_json(
            ModelState::Failed,
            Some("worker exited with code 3; last stderr: boom"),
        );
        assert_eq!(exited["exit_code"], 3);
        let killed = status_json(ModelState::Failed, Some("worker killed by SIGSEGV"));
        assert!(killed.get("exit_code").is_none());
        assert_eq!(exit_code("worker exited with code -1"), Some(-1));
        assert_eq!(exit_code("worker exited with code x"), None);
    }
}
