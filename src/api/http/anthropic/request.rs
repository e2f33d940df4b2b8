//! Anthropic's Messages request body and how it becomes the v1 chat request:
//! `system` (text or text blocks), `messages` of text (a string or text
//! blocks), `max_tokens`, `temperature`, `top_p`, `top_k`,
//! `stop_sequences`, `stream`. Fields Anthropic defines that we cannot
//! honour yet (tools, images, documents, thinking) are a 400 naming them;
//! fields we do not know are ignored, as Anthropic's API does for `metadata`.

use serde::Deserialize;
use serde_json::Value;

use crate::api::http::error::ApiError;
use crate::engine::limits::{check_blocks, check_messages};
use crate::proto::pb;

/// Text, or content blocks of which only `text` ones are supported.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": ...}, ...]`.
    Blocks(Vec<Block>),
}

/// One content block.
#[derive(Debug, Clone, Deserialize)]
pub struct Block {
    /// `text`, `image`, `tool_use`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` block.
    pub text: Option<String>,
}

/// One turn.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    /// What it says.
    pub content: Content,
}

/// `POST /v1/messages` and `/v1/messages/count_tokens`.
#[derive(Debug, Clone, Deserialize)]
pub struct MessagesRequest {
    /// Model id or alias.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// The system prompt.
    pub system: Option<Content>,
    /// Required by `create` (count_tokens takes none).
    pub max_tokens: Option<u32>,
    /// 0..1 in Anthropic's API; passed on as is.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k sampling.
    pub top_k: Option<i32>,
    /// Custom stop strings.
    pub stop_sequences: Option<Vec<String>>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    thinking: Option<Value>,
    mcp_servers: Option<Value>,
    container: Option<Value>,
    output_config: Option<Value>,
}

/// The text of `content`; `at` names it in errors (`messages[2].content`).
fn text_of(content: &Content, at: &str) -> Result<String, ApiError> {
    match content {
        Content::Text(t) => Ok(t.clone()),
        Content::Blocks(blocks) => {
            check_blocks(blocks.len()).map_err(|e| ApiError::bad_request(format!("{at}: {e}")))?;
            let mut parts = Vec::with_capacity(blocks.len());
            for (j, block) in blocks.iter().enumerate() {
                match (block.kind.as_str(), &block.text) {
                    ("text", Some(t)) => parts.push(t.as_str()),
                    ("text", None) => {
                        return Err(ApiError::bad_request(format!(
                            "{at}[{j}]: a text block needs `text`"
                        )));
                    }
                    (kind, _) => {
                        return Err(ApiError::bad_request(format!(
                            "{at}[{j}].type: content blocks of type {kind:?} are not supported yet by llama-router: send text"
                        )));
                    }
                }
            }
            Ok(parts.join("\n"))
        }
    }
}

impl MessagesRequest {
    /// Refuses what we cannot honour, naming the field.
    fn check(&self) -> Result<(), ApiError> {
        let unsupported = [
            (self.tools.is_some(), "tools"),
            (self.tool_choice.is_some(), "tool_choice"),
            (self.thinking.is_some(), "thinking"),
            (self.mcp_servers.is_some(), "mcp_servers"),
            (self.container.is_some(), "container"),
            (
                self.output_config
                    .as_ref()
                    .and_then(|c| c.get("format"))
                    .is_some_and(|f| !f.is_null()),
                "output_config.format",
            ),
        ];
        if let Some((_, name)) = unsupported.iter().find(|(given, _)| *given) {
            return Err(ApiError::bad_request(format!(
                "{name}: not supported yet by llama-router's /v1/messages"
            )));
        }
        if self.messages.is_empty() {
            return Err(ApiError::bad_request(
                "messages: at least one message is required",
            ));
        }
        check_messages(self.messages.len()).map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// The conversation as v1 messages: the system prompt first; consecutive
    /// turns of one role are joined, as Anthropic combines them.
    pub fn chat_messages(&self) -> Result<Vec<pb::ChatMessage>, ApiError> {
        self.check()?;
        let mut out: Vec<pb::ChatMessage> = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = &self.system {
            let content = text_of(system, "system")?;
            if !content.is_empty() {
                out.push(pb::ChatMessage {
                    role: "system".into(),
                    content,
                });
            }
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.role != "user" && m.role != "assistant" {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role: {:?} is not one of user, assistant (the system prompt goes in `system`)",
                    m.role
                )));
            }
            let content = text_of(&m.content, &format!("messages[{i}].content"))?;
            match out.last_mut() {
                Some(last) if last.role == m.role => {
                    last.content.push_str("\n\n");
                    last.content.push_str(&content);
                }
                _ => out.push(pb::ChatMessage {
                    role: m.role.clone(),
                    content,
                }),
            }
        }
        Ok(out)
    }

    /// The v1 chat request `create` generates from.
    pub fn to_chat(&self) -> Result<pb::ChatRequest, ApiError> {
        let max_tokens = match self.max_tokens {
            None => return Err(ApiError::bad_request("max_tokens: field required")),
            Some(0) => return Err(ApiError::bad_request("max_tokens: must be at least 1")),
            Some(n) => n,
        };
        Ok(pb::ChatRequest {
            model: self.model.clone(),
            messages: self.chat_messages()?,
            max_tokens,
            sampling: Some(pb::SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                ..Default::default()
            }),
            stop: self.stop_sequences.clone().unwrap_or_default(),
        })
    }

    /// The template request `count_tokens` counts.
    pub fn to_template(&self) -> Result<pb::ApplyTemplateRequest, ApiError> {
        Ok(pb::ApplyTemplateRequest {
            model: self.model.clone(),
            messages: self.chat_messages()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> MessagesRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn system_blocks_and_turns_become_chat_messages() {
        let r = parse(json!({
            "model": "m", "max_tokens": 5, "stop_sequences": ["END"], "top_k": 3,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": [{"type": "text", "text": "there"}, {"type": "text", "text": "you"}]},
                {"role": "assistant", "content": "Hello"}
            ],
            "metadata": {"user_id": "ignored"}
        }))
        .to_chat()
        .unwrap();
        let got: Vec<_> = r
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("system", "Be brief."),
                ("user", "Hi\n\nthere\nyou"),
                ("assistant", "Hello")
            ]
        );
        assert_eq!((r.max_tokens, r.stop.len()), (5, 1));
        assert_eq!(r.sampling.unwrap().top_k, Some(3));
    }

    #[test]
    fn what_we_cannot_honour_is_named() {
        let base =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b.as_object_mut().unwrap().insert(k.into(), v);
            parse(b).to_chat().unwrap_err().message
        };
        assert!(with("tools", json!([])).starts_with("tools:"));
        assert!(with("thinking", json!({"type": "enabled"})).starts_with("thinking:"));
        let format = json!({"format": {"type": "json_schema", "schema": {}}});
        assert!(with("output_config", format).starts_with("output_config.format:"));
        assert!(parse(json!({"model": "m", "max_tokens": 1, "output_config": {"effort": "low"}, "messages": [{"role": "user", "content": "x"}]})).to_chat().is_ok());
        let image = json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "source": {}}]}]);
        let e = with("messages", image);
        assert!(e.starts_with("messages[0].content[1].type"), "{e}");
        assert!(e.contains("\"image\""), "{e}");
        assert!(with("messages", json!([{"role": "system", "content": "x"}])).contains("role"));
        assert!(with("messages", json!([])).starts_with("messages"));
        assert!(with("max_tokens", json!(0)).starts_with("max_tokens"));
        let mut no_max = base.clone();
        no_max.as_object_mut().unwrap().remove("max_tokens");
        assert!(parse(no_max.clone()).to_chat().is_err());
        assert_eq!(parse(no_max).to_template().unwrap().messages.len(), 1);
        let blocks = vec![json!({"type": "text", "text": "x"}); 257];
        let e = with("messages", json!([{"role": "user", "content": blocks}]));
        assert!(e.contains("257 content blocks"), "{e}");
    }
}
