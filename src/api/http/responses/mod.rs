//! OpenAI's Responses API for text: `POST /v1/responses` with `input` (a
//! string or a list of messages), `instructions`, `max_output_tokens`,
//! `temperature`, `top_p` and `stream`, answered as a `response` object
//! (one assistant message of `output_text`) or as its event stream
//! (`response.created` ... `response.output_text.delta` ...
//! `response.completed`, or `response.incomplete` when `max_output_tokens`
//! was reached, as OpenAI does). `stop` is taken as an extension, as on
//! chat completions. Nothing is stored: `previous_response_id`,
//! tools and non-text formats are a 400 naming the field. The request body
//! is in [`request`].

mod request;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use self::request::ResponsesRequest;
use super::autoload::Autoload;
use super::error::ApiError;
use super::generation::{self, EventSender, Next, collect, counts, response_id};
use super::{HttpState, parse_json};
use crate::inference::Pieces;
use crate::proto::pb::{self, FinishReason};

/// What every event of one response repeats.
struct Head {
    id: String,
    item_id: String,
    created_at: u64,
    request: ResponsesRequest,
}

impl Head {
    /// The output message; `text` none while it is in progress.
    fn item(&self, text: Option<&str>) -> Value {
        let (status, content) = match text {
            None => ("in_progress", json!([])),
            Some(t) => ("completed", json!([part(t)])),
        };
        json!({"type": "message", "id": self.item_id, "status": status, "role": "assistant", "content": content})
    }

    /// The response object: in progress without `done`, else finished with its text and last piece.
    fn response(&self, done: Option<(&str, &pb::GenerateResponse)>) -> Value {
        let (status, incomplete, output, usage) = match done {
            None => ("in_progress", Value::Null, json!([]), Value::Null),
            Some((text, last)) => {
                let (input, output) = counts(last);
                let usage = json!({
                    "input_tokens": input,
                    "input_tokens_details": {
                        "cached_tokens": last.usage.map_or(0, |u| u.cached_tokens)
                    },
                    "output_tokens": output,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": input.saturating_add(output),
                });
                let (status, incomplete) = if last.finish_reason() == FinishReason::Length {
                    ("incomplete", json!({"reason": "max_output_tokens"}))
                } else {
                    ("completed", Value::Null)
                };
                (status, incomplete, json!([self.item(Some(text))]), usage)
            }
        };
        let r = &self.request;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": r.instructions,
            "max_output_tokens": r.max_output_tokens,
            "model": r.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "tool_choice": "auto",
            "tools": [],
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
            "store": false,
        })
    }
}

fn part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// `POST /v1/responses`.
pub async fn create(State(state): State<HttpState>, autoload: Autoload, body: Bytes) -> Response {
    let state = state.autoload(autoload);
    let started = async {
        let request: ResponsesRequest = parse_json(&body)?;
        let pieces = state.inference.chat(request.to_chat()?).await?;
        Ok::<_, ApiError>((request, pieces))
    };
    let (request, pieces) = match started.await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let head = Head {
        id: response_id("resp_"),
        item_id: response_id("msg_"),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        request,
    };
    if head.request.stream {
        return stream(head, pieces).into_response();
    }
    match collect(pieces).await {
        Ok((text, last)) => axum::Json(head.response(Some((&text, &last)))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Numbers the events of one stream, as OpenAI's `sequence_number`.
struct Events<'a> {
    tx: &'a EventSender,
    sequence: u64,
}

impl Events<'_> {
    /// Sends `data` with its `type` and `sequence_number`; false once the client has left.
    async fn send(&mut self, kind: &str, mut data: Value) -> bool {
        if let Some(o) = data.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence = self.sequence.saturating_add(1);
        generation::send(self.tx, kind, &data).await
    }
}

/// The event stream of one response. A failure mid-stream is an `error` event and ends it.
fn stream(head: Head, mut pieces: Pieces) -> impl IntoResponse {
    let (tx, sse) = generation::sse_channel();
    tokio::spawn(async move {
        let mut events = Events {
            tx: &tx,
            sequence: 0,
        };
        let at = json!({"item_id": head.item_id, "output_index": 0, "content_index": 0});
        let with = |extra: Value| {
            let mut v = at.clone();
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            v
        };
        let opening = [
            ("response.created", json!({"response": head.response(None)})),
            (
                "response.in_progress",
                json!({"response": head.response(None)}),
            ),
            (
                "response.output_item.added",
                json!({"output_index": 0, "item": head.item(None)}),
            ),
            (
                "response.content_part.added",
                with(json!({"part": part("")})),
            ),
        ];
        for (kind, data) in opening {
            if !events.send(kind, data).await {
                return;
            }
        }
        let mut text = String::new();
        loop {
            let next = tokio::select! {
                // The client left: dropping `pieces` cancels the generation.
                () = tx.closed() => return,
                next = generation::next(&mut pieces) => next,
            };
            let (delta, last) = match next {
                Ok(Next::Text(t)) => (t, None),
                Ok(Next::Last(last)) => (last.text.clone(), Some(last)),
                Err(e) => {
                    let error = json!({"code": e.code, "message": e.message, "param": null});
                    let _ = events.send("error", error).await;
                    return;
                }
            };
            if !delta.is_empty() {
                text.push_str(&delta);
                let data = with(json!({"delta": delta, "logprobs": []}));
                if !events.send("response.output_text.delta", data).await {
                    return;
                }
            }
            let Some(last) = last else { continue };
            let response = head.response(Some((&text, &last)));
            let end = if last.finish_reason() == FinishReason::Length {
                "response.incomplete"
            } else {
                "response.completed"
            };
            let closing = [
                (
                    "response.output_text.done",
                    with(json!({"text": text, "logprobs": []})),
                ),
                (
                    "response.content_part.done",
                    with(json!({"part": part(&text)})),
                ),
                (
                    "response.output_item.done",
                    json!({"output_index": 0, "item": head.item(Some(&text))}),
                ),
                (end, json!({"response": response})),
            ];
            for (kind, data) in closing {
                if !events.send(kind, data).await {
                    return;
                }
            }
            return;
        }
    });
    sse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_have_openais_shape() {
        let head = Head {
            id: "resp_1".into(),
            item_id: "msg_1".into(),
            created_at: 1,
            request: serde_json::from_value(json!({"model": "m", "input": "x"})).unwrap(),
        };
        let last = |finish: FinishReason| pb::GenerateResponse {
            finish_reason: finish.into(),
            usage: Some(pb::Usage {
                prompt_tokens: 4,
                completion_tokens: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = head.response(Some(("hi", &last(FinishReason::Stop))));
        assert_eq!(
            (r["object"].as_str(), r["status"].as_str()),
            (Some("response"), Some("completed"))
        );
        assert_eq!(r["output"][0]["content"][0]["text"], "hi");
        assert_eq!(r["output"][0]["content"][0]["type"], "output_text");
        assert_eq!(r["usage"]["total_tokens"], 6);
        let r = head.response(Some(("hi", &last(FinishReason::Length))));
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(head.response(None)["output"], json!([]));
    }
}
