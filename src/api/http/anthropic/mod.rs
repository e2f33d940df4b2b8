//! Anthropic's Messages API: `POST /v1/messages` (whole, or streamed as
//! Anthropic's named server-sent events) and `POST /v1/messages/count_tokens`,
//! over the same inference layer as the OpenAI handlers. Errors come in
//! Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`) with
//! the HTTP status its SDK maps to the matching exception. The request body
//! is in [`request`].

mod request;
mod tools;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use self::request::MessagesRequest;
use super::autoload::Autoload;
use super::error::ApiError;
use super::generation::{self, EventSender, Next, collect, counts, response_id, send};
use super::{HttpState, parse_json};
use crate::inference::{InferenceError, Pieces};
use crate::proto::pb::{self, FinishReason};

/// Anthropic's `overloaded_error` status.
const OVERLOADED: u16 = 529;

/// An error in Anthropic's shape; made from ours by its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicError(pub ApiError);

impl AnthropicError {
    /// Anthropic's status and error type for ours.
    fn shape(&self) -> (StatusCode, &'static str) {
        let status = self.0.status;
        let kind = match status.as_u16() {
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | OVERLOADED => "overloaded_error",
            _ => "api_error",
        };
        let status = if kind == "overloaded_error" {
            StatusCode::from_u16(OVERLOADED).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        } else {
            status
        };
        (status, kind)
    }

    /// The JSON body (also an SSE `error` event's data).
    pub fn body(&self) -> Value {
        let (_, kind) = self.shape();
        json!({"type": "error", "error": {"type": kind, "message": self.0.message}})
    }
}

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        AnthropicError(e)
    }
}

impl From<InferenceError> for AnthropicError {
    fn from(e: InferenceError) -> Self {
        AnthropicError(e.into())
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let (status, _) = self.shape();
        (status, axum::Json(self.body())).into_response()
    }
}

/// Anthropic's `stop_reason` and `stop_sequence` for how a generation ended.
fn stop_reason(last: &pb::GenerateResponse) -> (&'static str, Value) {
    match last.finish_reason() {
        FinishReason::Length => ("max_tokens", Value::Null),
        FinishReason::ToolCalls => ("tool_use", Value::Null),
        _ if !last.stop_sequence.is_empty() => ("stop_sequence", json!(last.stop_sequence)),
        _ => ("end_turn", Value::Null),
    }
}

/// A message object; `content` empty and no stop reason while streaming starts.
fn message(
    id: &str,
    model: &str,
    text: Option<&str>,
    last: Option<&pb::GenerateResponse>,
) -> Value {
    let calls = last.map_or(&[][..], |l| l.tool_calls.as_slice());
    let mut content: Vec<Value> = text
        .filter(|t| !t.is_empty() || calls.is_empty())
        .map(|t| json!({"type": "text", "text": t}))
        .into_iter()
        .collect();
    content.extend(calls.iter().map(tool_use));
    let (reason, sequence) = last.map_or((Value::Null, Value::Null), |l| {
        let (r, s) = stop_reason(l);
        (json!(r), s)
    });
    let (input, output) = last.map_or((0, 0), counts);
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {"input_tokens": input, "output_tokens": output},
    })
}

/// A call as a `tool_use` block.
fn tool_use(call: &pb::ToolCall) -> Value {
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call)})
}

/// A call's arguments as a `tool_use` block's `input` (an object).
fn tool_input(call: &pb::ToolCall) -> Value {
    serde_json::from_str::<Value>(&call.arguments).unwrap_or_else(|_| json!({}))
}

/// `POST /v1/messages`.
pub async fn create(State(state): State<HttpState>, autoload: Autoload, body: Bytes) -> Response {
    let state = state.autoload(autoload);
    match start(&state, &body).await {
        Ok((request, pieces)) => {
            let id = response_id("msg_");
            if request.stream {
                stream(id, request.model, pieces).into_response()
            } else {
                match collect(pieces).await {
                    Ok((text, last)) => {
                        axum::Json(message(&id, &request.model, Some(&text), Some(&last)))
                            .into_response()
                    }
                    Err(e) => AnthropicError(e).into_response(),
                }
            }
        }
        Err(e) => e.into_response(),
    }
}

async fn start(
    state: &HttpState,
    body: &[u8],
) -> Result<(MessagesRequest, Pieces), AnthropicError> {
    let request: MessagesRequest = parse_json(body)?;
    let chat = request.to_chat()?;
    let pieces = state.inference.chat(chat).await?;
    Ok((request, pieces))
}

/// `POST /v1/messages/count_tokens`: the rendered prompt's length.
pub async fn count_tokens(
    State(state): State<HttpState>,
    autoload: Autoload,
    body: Bytes,
) -> Response {
    let state = state.autoload(autoload);
    let counted = async {
        let request: MessagesRequest = parse_json(&body)?;
        let reply = state
            .inference
            .apply_template(request.to_template()?)
            .await?;
        Ok::<_, AnthropicError>(json!({"input_tokens": reply.prompt_tokens}))
    };
    match counted.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Anthropic's event sequence: `message_start`, `content_block_start`,
/// `ping`, a `content_block_delta` per piece of text, `content_block_stop`,
/// `message_delta` (stop reason, usage), `message_stop`. A failure
/// mid-stream is an `error` event and ends it. The prompt's token count is
/// known at the end only: `message_start` says 0 and `message_delta`'s
/// usage carries it.
fn stream(id: String, model: String, mut pieces: Pieces) -> impl IntoResponse {
    let (tx, sse) = generation::sse_channel();
    tokio::spawn(async move {
        let opening = [
            (
                "message_start",
                json!({"type": "message_start", "message": message(&id, &model, None, None)}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({"type": "ping"})),
        ];
        for (name, data) in &opening {
            if !send(&tx, name, data).await {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                // The client left: dropping `pieces` cancels the generation.
                () = tx.closed() => return,
                next = generation::next(&mut pieces) => next,
            };
            match next {
                Ok(Next::Text(text)) => {
                    if !delta(&tx, &text).await {
                        return;
                    }
                }
                Ok(Next::Last(last)) => {
                    if delta(&tx, &last.text).await {
                        closing(&tx, &last).await;
                    }
                    return;
                }
                Err(e) => {
                    let _ = send(&tx, "error", &AnthropicError(e).body()).await;
                    return;
                }
            }
        }
    });
    sse
}

/// A text delta; nothing for empty text. False once the client has left.
async fn delta(tx: &EventSender, text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    let data = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}});
    send(tx, "content_block_delta", &data).await
}

/// `content_block_stop`, a `tool_use` block per call (its input as one
/// `input_json_delta`), `message_delta`, `message_stop`.
async fn closing(tx: &EventSender, last: &pb::GenerateResponse) {
    let (reason, sequence) = stop_reason(last);
    let (input, output) = counts(last);
    let mut events = vec![(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    )];
    for (i, call) in last.tool_calls.iter().enumerate() {
        let index = i + 1;
        let block = json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}});
        // The block starts with empty input; the whole input comes as one delta.
        let arguments = tool_input(call).to_string();
        events.extend([
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": block}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ),
        ]);
    }
    events.extend([
        (
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": {"input_tokens": input, "output_tokens": output},
            }),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    for (name, data) in &events {
        if !send(tx, name, data).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(finish: FinishReason, stop: &str) -> pb::GenerateResponse {
        pb::GenerateResponse {
            finish_reason: finish.into(),
            stop_sequence: stop.into(),
            usage: Some(pb::Usage {
                prompt_tokens: 7,
                completion_tokens: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn messages_have_anthropics_shape() {
        let m = message(
            "msg_1",
            "m",
            Some("hi"),
            Some(&last(FinishReason::Stop, "")),
        );
        assert_eq!(m["content"], json!([{"type": "text", "text": "hi"}]));
        assert_eq!(
            (m["stop_reason"].as_str(), m["stop_sequence"].is_null()),
            (Some("end_turn"), true)
        );
        assert_eq!(m["usage"], json!({"input_tokens": 7, "output_tokens": 3}));
        let m = message(
            "msg_1",
            "m",
            Some(""),
            Some(&last(FinishReason::Stop, "END")),
        );
        assert_eq!(
            (m["stop_reason"].as_str(), m["stop_sequence"].as_str()),
            (Some("stop_sequence"), Some("END"))
        );
        let m = message(
            "msg_1",
            "m",
            Some(""),
            Some(&last(FinishReason::Length, "")),
        );
        assert_eq!(m["stop_reason"], "max_tokens");
        let start = message("msg_1", "m", None, None);
        assert_eq!(
            (start["content"].clone(), start["stop_reason"].clone()),
            (json!([]), Value::Null)
        );
    }

    #[test]
    fn errors_have_anthropics_types_and_statuses() {
        let cases = [
            (ApiError::bad_request("x"), 400, "invalid_request_error"),
            (ApiError::unauthorized(), 401, "authentication_error"),
            (ApiError::unavailable("x"), 529, "overloaded_error"),
            (
                ApiError::from(crate::supervisor::SupervisorError::NotFound("m".into())),
                404,
                "not_found_error",
            ),
            (
                ApiError::from(crate::supervisor::SupervisorError::ResourceExhausted(
                    "m".into(),
                )),
                429,
                "rate_limit_error",
            ),
        ];
        for (e, status, kind) in cases {
            let a = AnthropicError(e);
            assert_eq!(a.shape(), (StatusCode::from_u16(status).unwrap(), kind));
            assert_eq!(a.body()["type"], "error");
            assert_eq!(a.body()["error"]["type"], kind);
        }
    }
}
