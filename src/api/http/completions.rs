//! `POST /v1/chat/completions` and `POST /v1/completions`: the same leases
//! and worker streams as gRPC's Chat and Generate, answered whole or as
//! server-sent events ending with `data: [DONE]`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::autoload::Autoload;
use super::error::ApiError;
use super::generation::{piece_error, worker_gone};
use super::logprobs::{chat_content, text_completion, text_len};
use super::openai::{ChatCompletionRequest, CompletionRequest, Sampling};
use super::tools::{calls_delta, calls_json};
use super::{HttpState, parse_json};
use crate::inference::Pieces;
use crate::proto::pb::{self, FinishReason};

/// Chat or text completion: what the JSON says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// What every answer to one request repeats.
#[derive(Debug, Clone)]
struct Header {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

impl Header {
    fn new(kind: Kind, model: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Text => "cmpl",
        };
        Header {
            kind,
            id: format!(
                "{prefix}-{:x}-{:x}-{:x}",
                std::process::id(),
                created,
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            created,
            model: model.to_owned(),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        })
    }

    /// A streamed chunk of `text` (chat: a delta), or the last one with its finish reason.
    fn chunk(&self, text: Option<&str>, finish: Option<&str>) -> Value {
        self.chunk_with(text, Value::Null, finish)
    }

    /// Likewise, with the log-probabilities of its tokens (in this API's shape).
    fn chunk_with(&self, text: Option<&str>, logprobs: Value, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let delta = text.map_or_else(|| json!({}), |t| json!({"content": t}));
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Kind::Text => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish})
            }
        };
        self.envelope(true, json!([choice]), Value::Null)
    }

    /// `probs` in this API's shape (`offset`: where their text starts), or
    /// null when none were asked for.
    fn logprobs(&self, asked: bool, probs: &[pb::TokenLogprob], offset: usize) -> Value {
        match (asked, self.kind) {
            (false, _) => Value::Null,
            (true, Kind::Chat) => json!({"content": chat_content(probs)}),
            (true, Kind::Text) => text_completion(probs, offset),
        }
    }
}

fn usage_json(usage: Option<&pb::Usage>) -> Value {
    let (prompt, completion) = usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    let cached = usage.map_or(0, |u| u.cached_tokens);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// OpenAI's finish reason for ours; `None` for one that is an error.
fn finish_name(finish: FinishReason) -> Option<&'static str> {
    match finish {
        FinishReason::Stop => Some("stop"),
        FinishReason::Length => Some("length"),
        FinishReason::ToolCalls => Some("tool_calls"),
        FinishReason::Unspecified | FinishReason::Cancelled | FinishReason::Error => None,
    }
}

/// What the shared completion path needs of a request body.
trait CompletionBody: serde::de::DeserializeOwned {
    /// The model as the client named it, and its sampling fields.
    fn head(&self) -> (String, Sampling);
}

impl CompletionBody for ChatCompletionRequest {
    fn head(&self) -> (String, Sampling) {
        (self.model.clone(), self.sampling.clone())
    }
}

impl CompletionBody for CompletionRequest {
    fn head(&self) -> (String, Sampling) {
        (self.model.clone(), self.sampling.clone())
    }
}

/// Parses a body, starts its generation with `call`, and answers it.
async fn complete<R, F, Fut>(kind: Kind, body: &[u8], call: F) -> Response
where
    R: CompletionBody,
    F: FnOnce(R) -> Fut,
    Fut: std::future::Future<Output = Result<Pieces, ApiError>>,
{
    let request: R = match parse_json(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (model, sampling) = request.head();
    match call(request).await {
        Ok(pieces) => answer(Header::new(kind, &model), &sampling, pieces).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(state): State<HttpState>, autoload: Autoload, body: Bytes) -> Response {
    let state = state.autoload(autoload);
    complete(Kind::Chat, &body, |r: ChatCompletionRequest| async move {
        Ok(state.inference.chat(r.to_pb()?).await?)
    })
    .await
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<HttpState>,
    autoload: Autoload,
    body: Bytes,
) -> Response {
    let state = state.autoload(autoload);
    complete(Kind::Text, &body, |r: CompletionRequest| async move {
        Ok(state.inference.generate(r.to_pb()?).await?)
    })
    .await
}

async fn answer(header: Header, sampling: &Sampling, pieces: Pieces) -> Response {
    let logprobs = matches!(sampling.top_logprobs(), Ok(Some(_)));
    if sampling.stream {
        stream(header, sampling.include_usage(), logprobs, pieces).into_response()
    } else {
        match whole(&header, logprobs, pieces).await {
            Ok(body) => axum::Json(body).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// Collects the pieces into one answer. Dropped with the request when the
/// client leaves, which drops the stream and cancels the generation.
async fn whole(header: &Header, logprobs: bool, mut pieces: Pieces) -> Result<Value, ApiError> {
    let mut text = String::new();
    let mut probs = Vec::new();
    while let Some(piece) = pieces.next().await {
        let mut piece = piece?;
        text.push_str(&piece.text);
        probs.append(&mut piece.logprobs);
        let finish = piece.finish_reason();
        if finish == FinishReason::Unspecified {
            continue;
        }
        let Some(reason) = finish_name(finish) else {
            return Err(piece_error(&piece));
        };
        let choice = match header.kind {
            Kind::Chat => {
                let message = if piece.tool_calls.is_empty() {
                    json!({"role": "assistant", "content": text})
                } else {
                    // OpenAI's shape: no text beside the calls is null content.
                    let content = Some(text.as_str()).filter(|t| !t.is_empty());
                    json!({
                        "role": "assistant",
                        "content": content,
                        "tool_calls": calls_json(&piece.tool_calls),
                    })
                };
                json!({
                    "index": 0,
                    "message": message,
                    "logprobs": header.logprobs(logprobs, &probs, 0),
                    "finish_reason": reason,
                })
            }
            Kind::Text => {
                let logprobs = header.logprobs(logprobs, &probs, 0);
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason})
            }
        };
        return Ok(header.envelope(false, json!([choice]), usage_json(piece.usage.as_ref())));
    }
    Err(worker_gone())
}

fn event(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

/// Server-sent events: a role chunk (chat), a chunk per piece of text, the
/// finish chunk, the usage chunk when asked for, then `[DONE]`. An error
/// mid-stream is sent as `{"error": ...}` and ends the stream.
fn stream(
    header: Header,
    include_usage: bool,
    logprobs: bool,
    mut pieces: Pieces,
) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(32);
    tokio::spawn(async move {
        let send = |value: Value| {
            let tx = tx.clone();
            async move { tx.send(Ok(event(&value))).await.is_ok() }
        };
        if header.kind == Kind::Chat {
            let role = json!([{
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            }]);
            if !send(header.envelope(true, role, Value::Null)).await {
                return;
            }
        }
        // Characters of the tokens sent so far (text completions' `text_offset`).
        let mut offset = 0;
        loop {
            let next = tokio::select! {
                // The client left: dropping `pieces` cancels the generation.
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
                    let _ = send(piece_error(&pb::GenerateResponse::default()).body()).await;
                    return;
                }
            };
            let has_probs = logprobs && !piece.logprobs.is_empty();
            if !piece.text.is_empty() || has_probs {
                let probs = header.logprobs(has_probs, &piece.logprobs, offset);
                offset += text_len(&piece.logprobs);
                if !send(header.chunk_with(Some(&piece.text), probs, None)).await {
                    return;
                }
            }
            if !piece.tool_calls.is_empty() {
                let delta = json!([{
                    "index": 0,
                    "delta": calls_delta(&piece.tool_calls),
                    "logprobs": null,
                    "finish_reason": null,
                }]);
                if !send(header.envelope(true, delta, Value::Null)).await {
                    return;
                }
            }
            let finish = piece.finish_reason();
            if finish == FinishReason::Unspecified {
                continue;
            }
            let Some(reason) = finish_name(finish) else {
                let _ = send(piece_error(&piece).body()).await;
                return;
            };
            if !send(header.chunk(None, Some(reason))).await {
                return;
            }
            if include_usage {
                let usage = header.envelope(true, json!([]), usage_json(piece.usage.as_ref()));
                if !send(usage).await {
                    return;
                }
            }
            let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
            return;
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_have_openai_shapes() {
        let chat = Header::new(Kind::Chat, "m");
        assert!(chat.id.starts_with("chatcmpl-"));
        let c = chat.chunk(Some("hi"), None);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["content"], "hi");
        assert_eq!(
            chat.chunk(None, Some("stop"))["choices"][0]["delta"],
            json!({})
        );
        let text = Header::new(Kind::Text, "m");
        assert_eq!(
            text.chunk(Some("x"), Some("length"))["choices"][0]["text"],
            "x"
        );
        assert_eq!(text.chunk(None, None)["object"], "text_completion");
        assert_ne!(Header::new(Kind::Text, "m").id, text.id);
        let u = usage_json(Some(&pb::Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            ..Default::default()
        }));
        assert_eq!(u["total_tokens"], 7);
    }
}
