//! llama-server's own endpoints, in its shapes: `GET /props` (the router's
//! role; `?model=ID` for one model's effective settings), `POST /tokenize`
//! (`with_pieces`), `POST /detokenize`, `POST /apply-template` (the
//! prompt a chat renders to, by the worker's template) and `POST /embedding`. They call the
//! inference layer like the OpenAI handlers; `/completion` is in
//! `native_completion.rs`. (`/models`, `/models/load`, `/models/unload`
//! belong to the web console's module.)

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::autoload::Autoload;
use super::error::ApiError;
use super::{HttpState, parse_json};
use crate::params::value_name;
use crate::proto::pb;
use crate::supervisor::ModelView;

fn answer(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /props`: the router's properties, or with `?model=ID` that model's
/// effective settings (its preset's and config's values, resolved), read
/// without loading it.
pub async fn props(
    State(state): State<HttpState>,
    super::extract::Params(query): super::extract::Params,
) -> Response {
    let result = async {
        match query.get("model").filter(|m| !m.is_empty()) {
            None => {
                let status = state.supervisor.status().await?;
                Ok(json!({
                    "role": "router",
                    "max_instances": status.models_max,
                    "models_autoload": state.models_autoload,
                    "model_alias": "llama-server",
                    "model_path": "none",
                    "default_generation_settings": {"params": {}, "n_ctx": 0},
                    "build_info": concat!("llama-router ", env!("CARGO_PKG_VERSION")),
                }))
            }
            Some(model) => Ok(model_props(&state.supervisor.get(model).await?)),
        }
    }
    .await;
    answer(result)
}

/// One model's `/props`, as its llama-server instance would answer, plus
/// `llama_router.settings`: everything its worker runs with.
fn model_props(m: &ModelView) -> Value {
    let s = &m.settings;
    let p = s.params.unwrap_or_default();
    let sampling = s.extras.sampling;
    let template = s
        .extras
        .chat_template
        .as_ref()
        .map(|t| t.display().to_string());
    json!({
        "model_alias": m.id,
        "model_path": m.files.first(),
        "total_slots": p.parallel,
        "default_generation_settings": {
            "n_ctx": p.ctx_size,
            "params": {
                "temperature": sampling.temperature,
                "top_k": sampling.top_k,
                "top_p": sampling.top_p,
                "min_p": sampling.min_p,
                "repeat_penalty": sampling.repeat_penalty,
                "presence_penalty": sampling.presence_penalty,
                "frequency_penalty": sampling.frequency_penalty,
                "repeat_last_n": sampling.penalty_last_n,
                "n_predict": -1,
            },
        },
        "chat_template": template,
        "modalities": {"vision": false, "audio": false},
        "is_sleeping": m.worker_pid.is_none(),
        "llama_router": {
            "state": m.state.name(),
            "aliases": m.aliases,
            "settings": {
                "ctx_size": p.ctx_size,
                "parallel": p.parallel,
                "batch_size": p.batch_size,
                "threads": p.threads,
                "gpu_layers": p.gpu_layers.to_string(),
                "main_gpu": p.main_gpu,
                "flash_attn": value_name(p.flash_attn),
                "cache_type_k": value_name(p.cache_type_k),
                "cache_type_v": value_name(p.cache_type_v),
                "cache_prompt": p.cache_prompt,
                "mlock": s.mlock,
                "idle_ttl": s.idle_ttl.map(|d| d.as_secs()),
                "chat_template": s.extras.chat_template,
                "sampling": sampling,
            },
        },
    })
}

/// `POST /tokenize`.
#[derive(Debug, Deserialize)]
struct TokenizeBody {
    #[serde(default)]
    model: String,
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default = "yes")]
    parse_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

/// A piece as llama-server writes it: text when it is valid UTF-8, else its bytes.
fn piece_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!(text),
        Err(_) => json!(bytes),
    }
}

/// `POST /tokenize`: `{"tokens": [ids]}`, or `[{"id", "piece"}]` with `with_pieces`.
pub async fn tokenize(State(state): State<HttpState>, autoload: Autoload, body: Bytes) -> Response {
    let state = state.autoload(autoload);
    let result = async {
        let r: TokenizeBody = parse_json(&body)?;
        let reply = state
            .inference
            .tokenize(pb::TokenizeRequest {
                model: r.model,
                text: r.content,
                add_special: r.add_special,
                parse_special: r.parse_special,
                with_pieces: r.with_pieces,
            })
            .await?;
        let tokens: Vec<Value> = if r.with_pieces {
            reply
                .tokens
                .iter()
                .zip(&reply.pieces)
                .map(|(id, piece)| json!({"id": id, "piece": piece_json(piece)}))
                .collect()
        } else {
            reply.tokens.iter().map(|id| json!(id)).collect()
        };
        Ok(json!({"tokens": tokens}))
    }
    .await;
    answer(result)
}

/// `POST /detokenize`.
/// `POST /apply-template`'s body: OpenAI chat messages.
#[derive(Debug, Deserialize)]
struct ApplyTemplateBody {
    #[serde(default)]
    model: String,
    messages: Vec<super::openai::Message>,
    #[serde(default)]
    tools: Option<Vec<super::tools::ToolDef>>,
}

/// `POST /apply-template`: `{"prompt": ...}`, what the model's chat template
/// makes of the messages, ending where the answer starts; nothing is generated.
pub async fn apply_template(
    State(state): State<HttpState>,
    autoload: Autoload,
    body: Bytes,
) -> Response {
    let state = state.autoload(autoload);
    let result = async {
        let r: ApplyTemplateBody = parse_json(&body)?;
        let messages = super::openai::chat_messages(&r.messages)?;
        let reply = state
            .inference
            .apply_template(pb::ApplyTemplateRequest {
                model: r.model,
                messages,
                tools: super::tools::tools_pb(r.tools.as_deref())?,
            })
            .await?;
        Ok(json!({"prompt": reply.prompt}))
    }
    .await;
    answer(result)
}

#[derive(Debug, Deserialize)]
struct DetokenizeBody {
    #[serde(default)]
    model: String,
    tokens: Vec<i32>,
}

/// `POST /detokenize`: `{"content": text}`.
pub async fn detokenize(
    State(state): State<HttpState>,
    autoload: Autoload,
    body: Bytes,
) -> Response {
    let state = state.autoload(autoload);
    let result = async {
        let r: DetokenizeBody = parse_json(&body)?;
        let reply = state
            .inference
            .detokenize(pb::DetokenizeRequest {
                model: r.model,
                tokens: r.tokens,
            })
            .await?;
        Ok(json!({"content": reply.text}))
    }
    .await;
    answer(result)
}

/// `content` of `/embedding`: one text or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingContent {
    One(String),
    Many(Vec<String>),
}

/// `POST /embedding`.
#[derive(Debug, Deserialize)]
struct EmbeddingBody {
    #[serde(default)]
    model: String,
    #[serde(alias = "input")]
    content: EmbeddingContent,
    /// 2 (default): Euclidean; -1: none. Others are refused.
    embd_normalize: Option<i32>,
}

/// `POST /embedding`: `[{"index": i, "embedding": [[pooled vector]]}]`.
pub async fn embedding(
    State(state): State<HttpState>,
    autoload: Autoload,
    body: Bytes,
) -> Response {
    let state = state.autoload(autoload);
    let result = async {
        let r: EmbeddingBody = parse_json(&body)?;
        let normalize = match r.embd_normalize {
            None | Some(2) => true,
            Some(-1) => false,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "embd_normalize {other} is not supported: use 2 (Euclidean) or -1 (none)"
                )));
            }
        };
        let input = match r.content {
            EmbeddingContent::One(text) => vec![text],
            EmbeddingContent::Many(texts) if !texts.is_empty() => texts,
            EmbeddingContent::Many(_) => return Err(ApiError::bad_request("content is empty")),
        };
        let reply = state
            .inference
            .embed(pb::EmbedRequest {
                model: r.model,
                input,
                normalize,
            })
            .await?;
        let rows: Vec<Value> = reply
            .embeddings
            .iter()
            .enumerate()
            .map(|(index, e)| json!({"index": index, "embedding": [e.values]}))
            .collect();
        Ok(Value::Array(rows))
    }
    .await;
    answer(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_text_when_they_can_be_and_bytes_otherwise() {
        assert_eq!(piece_json(b" hello"), json!(" hello"));
        assert_eq!(piece_json(&[0xC3]), json!([195]));
    }
}
