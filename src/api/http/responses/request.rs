//! The Responses request body and how it becomes the v1 chat request:
//! `input` as a string or messages (`developer` is the system role; text
//! parts only), `instructions` first as the system message,
//! `max_output_tokens`, `temperature`, `top_p`, `stop` (an extension).
//! What we cannot honour is a 400 naming the field.

use serde::Deserialize;
use serde_json::Value;

use crate::api::http::error::ApiError;
use crate::api::http::openai::Stop;
use crate::api::http::structured::{constrain, output_constraint};
use crate::engine::limits::{check_blocks, check_messages};
use crate::proto::pb;

/// `input`: one user message, or messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Item>),
}

/// An input item; only messages (`type` absent or `message`) are supported.
#[derive(Debug, Clone, Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    content: Option<Content>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

/// `POST /v1/responses`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ResponsesRequest {
    pub(super) model: String,
    input: Input,
    pub(super) instructions: Option<String>,
    pub(super) max_output_tokens: Option<u32>,
    pub(super) temperature: Option<f32>,
    pub(super) top_p: Option<f32>,
    #[serde(default)]
    pub(super) stream: bool,
    #[serde(default)]
    tools: Vec<Value>,
    previous_response_id: Option<String>,
    conversation: Option<Value>,
    #[serde(default)]
    background: bool,
    text: Option<Value>,
    prompt: Option<Value>,
    /// An extension, as on chat completions: stop strings.
    stop: Option<Stop>,
}

/// The text of a message's content; `at` names it in errors.
fn text_of(content: &Content, at: &str) -> Result<String, ApiError> {
    match content {
        Content::Text(t) => Ok(t.clone()),
        Content::Parts(parts) => {
            check_blocks(parts.len()).map_err(|e| ApiError::bad_request(format!("{at}: {e}")))?;
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.kind.as_str(), &part.text) {
                    ("input_text" | "output_text" | "text", Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::bad_request(format!(
                            "{at}[{j}].type: content of type {kind:?} is not supported yet by llama-router: send input_text"
                        )));
                    }
                }
            }
            Ok(text)
        }
    }
}

impl ResponsesRequest {
    fn check(&self) -> Result<(), ApiError> {
        let unsupported = [
            (!self.tools.is_empty(), "tools"),
            (
                self.previous_response_id.is_some(),
                "previous_response_id: responses are not stored",
            ),
            (
                self.conversation.is_some(),
                "conversation: responses are not stored",
            ),
            (self.background, "background"),
            (self.prompt.is_some(), "prompt: stored prompts are not kept"),
        ];
        match unsupported.iter().find(|(given, _)| *given) {
            Some((_, name)) => Err(ApiError::bad_request(format!(
                "{name} is not supported yet by llama-router's /v1/responses"
            ))),
            None => Ok(()),
        }
    }

    fn messages(&self) -> Result<Vec<pb::ChatMessage>, ApiError> {
        let mut out = Vec::new();
        if let Some(instructions) = self.instructions.as_ref().filter(|i| !i.is_empty()) {
            out.push(pb::ChatMessage {
                role: "system".into(),
                content: instructions.clone(),
                ..Default::default()
            });
        }
        match &self.input {
            Input::Text(t) => out.push(pb::ChatMessage {
                role: "user".into(),
                content: t.clone(),
                ..Default::default()
            }),
            Input::Items(items) => {
                check_messages(items.len()).map_err(|e| ApiError::bad_request(e.to_string()))?;
                for (i, item) in items.iter().enumerate() {
                    out.push(message(item, i)?);
                }
            }
        }
        if out.iter().all(|m| m.role == "system") {
            return Err(ApiError::bad_request(
                "input: at least one message is required",
            ));
        }
        Ok(out)
    }

    pub(super) fn to_chat(&self) -> Result<pb::ChatRequest, ApiError> {
        self.check()?;
        let mut sampling = pb::SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            ..Default::default()
        };
        // `text.format`: {"type": "json_schema", "name": ..., "schema": {...}}.
        let format = self.text.as_ref().and_then(|t| t.get("format"));
        let constraint = output_constraint(
            format.and_then(|f| f.get("type")).and_then(Value::as_str),
            format.and_then(|f| f.get("schema")),
            "text.format",
        )?;
        constrain(&mut sampling, constraint, "text.format")?;
        Ok(pb::ChatRequest {
            model: self.model.clone(),
            messages: self.messages()?,
            max_tokens: self.max_output_tokens.unwrap_or(0),
            sampling: Some(sampling),
            stop: Stop::strings(self.stop.as_ref()),
            ..Default::default()
        })
    }
}

/// One input item as a chat message; `developer` is the system role.
fn message(item: &Item, i: usize) -> Result<pb::ChatMessage, ApiError> {
    match item.kind.as_deref() {
        None | Some("message") => {}
        Some(kind) => {
            return Err(ApiError::bad_request(format!(
                "input[{i}].type: items of type {kind:?} are not supported yet by llama-router: send messages"
            )));
        }
    }
    let role = match item.role.as_deref() {
        Some("developer" | "system") => "system",
        Some(r @ ("user" | "assistant")) => r,
        other => {
            return Err(ApiError::bad_request(format!(
                "input[{i}].role: {other:?} is not one of user, assistant, system, developer"
            )));
        }
    };
    let content = match &item.content {
        Some(c) => text_of(c, &format!("input[{i}].content"))?,
        None => String::new(),
    };
    Ok(pb::ChatMessage {
        role: role.into(),
        content,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<pb::ChatRequest, ApiError> {
        serde_json::from_value::<ResponsesRequest>(v)
            .unwrap()
            .to_chat()
    }

    #[test]
    fn input_and_instructions_become_chat_messages() {
        let r = parse(json!({"model": "m", "input": "hi", "instructions": "be brief", "max_output_tokens": 9}))
            .unwrap();
        let got: Vec<_> = r
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(got, [("system", "be brief"), ("user", "hi")]);
        assert_eq!(r.max_tokens, 9);
        let r = parse(json!({"model": "m", "input": "hi", "stop": "\n"})).unwrap();
        assert_eq!(r.stop, ["\n"]);
        let r = parse(json!({"model": "m", "input": [
            {"role": "developer", "content": "d"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "c"}]}
        ]}))
        .unwrap();
        let got: Vec<_> = r
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(got, [("system", "d"), ("user", "ab"), ("assistant", "c")]);
    }

    #[test]
    fn what_we_cannot_honour_is_named() {
        let e = |v: Value| parse(v).unwrap_err().message;
        assert!(
            e(json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}))
                .starts_with("tools")
        );
        assert!(
            e(json!({"model": "m", "input": "x", "previous_response_id": "r"}))
                .starts_with("previous_response_id")
        );
        assert!(
            e(json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}))
                .starts_with("text.format")
        );
        assert!(
            parse(json!({"model": "m", "input": "x", "text": {"format": {"type": "text"}}}))
                .is_ok()
        );
        let image = json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]});
        assert!(e(image).starts_with("input[0].content[0].type"));
        let call = json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]});
        assert!(e(call).starts_with("input[0].type"));
        assert!(e(json!({"model": "m", "input": [], "instructions": "x"})).starts_with("input"));
    }
}
