//! llama-server's native `POST /completion` (and `POST /infill`, the same
//! with `input_prefix`, `input_suffix` and `input_extra` around the cursor
//! for a model with FIM tokens): `prompt`, `n_predict`, `stop`,
//! `stream` and the sampling fields by llama-server's names, answered in its
//! shape (`content`, `stop`, `stop_type`, `tokens_predicted`, `timings`),
//! streamed as server-sent events of the same objects (no `[DONE]`, as
//! llama-server). `grammar` (GBNF) constrains the answer; `json_schema`
//! constrains it by llama.cpp's own schema-to-grammar converter; `n_probs`
//! adds `completion_probabilities` (each token with its most likely
//! alternatives).

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::autoload::Autoload;
use super::error::ApiError;
use super::generation::{piece_error, worker_gone};
use super::logprobs::llama_server;
use super::openai::Stop;
use super::{HttpState, parse_json};
use crate::engine::logprobs::MAX_TOP_LOGPROBS;
use crate::inference::Pieces;
use crate::proto::pb::{self, FinishReason};

/// `POST /completion`'s body.
#[derive(Debug, Deserialize)]
struct CompletionBody {
    #[serde(default)]
    model: String,
    /// Required by `/completion`; `/infill` puts it after FIM_MID.
    prompt: Option<String>,
    /// `/infill`: the text before the cursor.
    input_prefix: Option<String>,
    /// `/infill`: the text after it.
    input_suffix: Option<String>,
    /// `/infill`: other files, `{"filename", "text"}`.
    #[serde(default)]
    input_extra: Vec<ExtraChunk>,
    /// -1 (default): until the model stops or the context is full.
    n_predict: Option<i64>,
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f32>,
    top_k: Option<i32>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    /// -1: random.
    seed: Option<i64>,
    #[serde(default)]
    n_probs: u32,
    grammar: Option<String>,
    json_schema: Option<Value>,
    #[serde(default)]
    return_tokens: bool,
    cache_prompt: Option<bool>,
}

/// One of `/infill`'s `input_extra` files.
#[derive(Debug, Deserialize)]
struct ExtraChunk {
    #[serde(default)]
    filename: String,
    text: String,
}

impl CompletionBody {
    /// The v1 request; `infill` for `/infill`'s fill-in-the-middle.
    fn to_pb(&self, infill: bool) -> Result<pb::GenerateRequest, ApiError> {
        let prompt = match (&self.prompt, infill) {
            (Some(p), _) => p.clone(),
            (None, true) => String::new(),
            (None, false) => return Err(ApiError::bad_request("prompt: field required")),
        };
        let infill = infill.then(|| pb::Infill {
            prefix: self.input_prefix.clone().unwrap_or_default(),
            suffix: self.input_suffix.clone().unwrap_or_default(),
            extra: self
                .input_extra
                .iter()
                .map(|c| pb::InfillChunk {
                    filename: c.filename.clone(),
                    text: c.text.clone(),
                })
                .collect(),
        });
        let top_logprobs = match self.n_probs {
            0 => None,
            n if n <= MAX_TOP_LOGPROBS => Some(n),
            n => {
                return Err(ApiError::bad_request(format!(
                    "n_probs is {n}; at most {MAX_TOP_LOGPROBS}"
                )));
            }
        };
        let json_schema = self
            .json_schema
            .as_ref()
            .filter(|s| !s.is_null())
            .map(Value::to_string);
        let grammar = self.grammar.clone().filter(|g| !g.is_empty());
        if grammar.is_some() && json_schema.is_some() {
            return Err(ApiError::bad_request(
                "send either grammar or json_schema, not both",
            ));
        }
        let stop = Stop::strings(self.stop.as_ref());
        Ok(pb::GenerateRequest {
            model: self.model.clone(),
            prompt,
            // 0 = until the model stops or the context is full.
            max_tokens: self
                .n_predict
                .filter(|n| *n >= 0)
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            sampling: Some(pb::SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                penalty_last_n: self.repeat_last_n,
                // Negative: llama-server's "random".
                seed: self.seed.filter(|s| *s >= 0).map(|s| s as u32),
                grammar,
                json_schema,
                top_logprobs,
                cache_prompt: self.cache_prompt,
            }),
            stop,
            infill,
        })
    }
}

/// What one answer repeats: its model and prompt.
struct Header {
    model: String,
    return_tokens: bool,
    n_predict: i64,
    /// `n_probs` > 0: answers carry `completion_probabilities`.
    probs: bool,
}

/// llama-server's `stop_type` for how the generation ended.
fn stop_type(piece: &pb::GenerateResponse) -> &'static str {
    match piece.finish_reason() {
        FinishReason::Length => "limit",
        _ if !piece.stop_sequence.is_empty() => "word",
        _ => "eos",
    }
}

/// The last object: the whole `content` (or the last piece when streaming), with timings.
fn last(
    header: &Header,
    content: &str,
    tokens: &[i32],
    probs: &[pb::TokenLogprob],
    piece: &pb::GenerateResponse,
) -> Value {
    let usage = piece.usage.unwrap_or_default();
    let mut last = json!({
        "index": 0,
        "content": content,
        "tokens": if header.return_tokens { tokens } else { &[] },
        "id_slot": -1,
        "stop": true,
        "model": header.model,
        "tokens_predicted": usage.completion_tokens,
        "tokens_evaluated": usage.prompt_tokens,
        "generation_settings": {"n_predict": header.n_predict},
        "has_new_line": content.contains('\n'),
        "truncated": false,
        "stop_type": stop_type(piece),
        "stopping_word": piece.stop_sequence,
        // What the slot holds now, as llama-server counts it: the last
        // token sampled is never decoded.
        "tokens_cached": usage
            .prompt_tokens
            .saturating_add(usage.completion_tokens)
            .saturating_sub(1),
        "timings": {
            "cache_n": usage.cached_tokens,
            "prompt_n": usage.prompt_tokens.saturating_sub(usage.cached_tokens),
            "predicted_n": usage.completion_tokens,
            "predicted_per_second": usage.tokens_per_second,
            "prompt_ms": usage.time_to_first_token_ms,
        },
    });
    if let Some(fields) = last.as_object_mut().filter(|_| header.probs) {
        fields.insert("completion_probabilities".into(), llama_server(probs));
    }
    last
}

fn finished(piece: &pb::GenerateResponse) -> Option<Result<(), ApiError>> {
    match piece.finish_reason() {
        FinishReason::Unspecified => None,
        FinishReason::Stop | FinishReason::Length | FinishReason::ToolCalls => Some(Ok(())),
        FinishReason::Cancelled | FinishReason::Error => Some(Err(piece_error(piece))),
    }
}

async fn whole(header: &Header, mut pieces: Pieces) -> Result<Value, ApiError> {
    let (mut text, mut tokens, mut probs) = (String::new(), Vec::new(), Vec::new());
    while let Some(piece) = pieces.next().await {
        let mut piece = piece?;
        text.push_str(&piece.text);
        tokens.extend_from_slice(&piece.token_ids);
        probs.append(&mut piece.logprobs);
        if let Some(done) = finished(&piece) {
            done?;
            return Ok(last(header, &text, &tokens, &probs, &piece));
        }
    }
    Err(worker_gone())
}

fn stream(header: Header, mut pieces: Pieces) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(32);
    tokio::spawn(async move {
        let send = |value: Value| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(Event::default().data(value.to_string())))
                    .await
                    .is_ok()
            }
        };
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = pieces.next() => next,
            };
            let piece = match next {
                Some(Ok(piece)) => piece,
                Some(Err(e)) => {
                    let _ = send(ApiError::from(e).body()).await;
                    return;
                }
                None => {
                    let _ = send(worker_gone().body()).await;
                    return;
                }
            };
            match finished(&piece) {
                None => {
                    let mut chunk = json!({
                        "index": 0, "content": piece.text, "tokens": piece.token_ids,
                        "stop": false, "id_slot": -1, "tokens_predicted": 0, "tokens_evaluated": 0,
                    });
                    if let Some(fields) = chunk.as_object_mut().filter(|_| header.probs) {
                        let probs = llama_server(&piece.logprobs);
                        fields.insert("completion_probabilities".into(), probs);
                    }
                    if !send(chunk).await {
                        return;
                    }
                }
                Some(Ok(())) => {
                    let tokens = &piece.token_ids;
                    let _ = send(last(&header, &piece.text, tokens, &piece.logprobs, &piece)).await;
                    return;
                }
                Some(Err(e)) => {
                    let _ = send(e.body()).await;
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

/// `POST /completion`.
pub async fn completion(
    State(state): State<HttpState>,
    autoload: Autoload,
    body: Bytes,
) -> Response {
    answer(state.autoload(autoload), &body, false).await
}

/// `POST /infill`.
pub async fn infill(State(state): State<HttpState>, autoload: Autoload, body: Bytes) -> Response {
    answer(state.autoload(autoload), &body, true).await
}

async fn answer(state: HttpState, body: &[u8], infill: bool) -> Response {
    let request: CompletionBody = match parse_json(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let generate = match request.to_pb(infill) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let header = Header {
        model: request.model.clone(),
        return_tokens: request.return_tokens,
        n_predict: request.n_predict.unwrap_or(-1),
        probs: request.n_probs > 0,
    };
    let pieces = match state.inference.generate(generate).await {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if request.stream {
        stream(header, pieces).into_response()
    } else {
        match whole(&header, pieces).await {
            Ok(body) => axum::Json(body).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> CompletionBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn native_fields_become_the_generate_request() {
        let r = body(json!({"model": "m", "prompt": "p", "n_predict": 5, "stop": ["\n"], "seed": -1, "top_k": 3, "repeat_last_n": 8}))
            .to_pb(false)
            .unwrap();
        assert_eq!((r.max_tokens, r.stop.len()), (5, 1));
        let s = r.sampling.unwrap();
        assert_eq!(
            (s.seed, s.top_k, s.penalty_last_n),
            (None, Some(3), Some(8))
        );
        assert_eq!(
            body(json!({"prompt": "p", "n_predict": -1}))
                .to_pb(false)
                .unwrap()
                .max_tokens,
            0
        );
        let g = body(json!({"prompt": "p", "grammar": "root ::= \"a\""}))
            .to_pb(false)
            .unwrap();
        assert_eq!(
            g.sampling.unwrap().grammar.as_deref(),
            Some("root ::= \"a\"")
        );
        let schema = body(json!({"prompt": "p", "json_schema": {"type": "object"}}))
            .to_pb(false)
            .unwrap();
        assert_eq!(
            schema.sampling.unwrap().json_schema.as_deref(),
            Some(r#"{"type":"object"}"#)
        );
        let err = body(
            json!({"prompt": "p", "json_schema": {"type": "object"}, "grammar": "root ::= \"a\""}),
        )
        .to_pb(false)
        .unwrap_err();
        assert!(err.message.contains("json_schema"), "{err:?}");
    }
}
