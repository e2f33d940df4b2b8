//! Anthropic's Messages request body and how it becomes the v1 chat request:
//! `system` (text or text blocks), `messages` of text (a string or text
//! blocks), `max_tokens`, `temperature`, `top_p`, `top_k`,
//! `stop_sequences`, `stream`, and client tools: `tools`, `tool_choice`,
//! `tool_use` blocks in assistant turns and `tool_result` blocks in user
//! turns. Fields Anthropic defines that we cannot honour yet (server tools,
//! images, documents, thinking) are a 400 naming them; fields we do not
//! know are ignored, as Anthropic's API does for `metadata`.

use serde::Deserialize;
use serde_json::Value;

use super::tools::{ToolDef, tools_of};
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
    /// `text`, `tool_use`, `tool_result`, `image`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` block.
    pub text: Option<String>,
    /// A `tool_use` block's id.
    pub id: Option<String>,
    /// A `tool_use` block's tool.
    pub name: Option<String>,
    /// A `tool_use` block's input.
    pub input: Option<Value>,
    /// The `tool_use` a `tool_result` answers.
    pub tool_use_id: Option<String>,
    /// A `tool_result`'s content: text or text blocks.
    pub content: Option<Content>,
    /// A `tool_result` that reports a failure.
    pub is_error: Option<bool>,
}

/// What one turn's blocks hold.
#[derive(Debug, Default)]
struct Turn {
    text: String,
    calls: Vec<pb::ToolCall>,
    /// `tool_result`s: the call's id, the result's text.
    results: Vec<(String, String)>,
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
    /// Client tools the model may call.
    pub tools: Option<Vec<ToolDef>>,
    /// `{"type": "auto" | "any" | "tool" | "none", "name"}`.
    pub tool_choice: Option<Value>,
    thinking: Option<Value>,
    mcp_servers: Option<Value>,
    container: Option<Value>,
    output_config: Option<Value>,
}

/// The text of `content`; `at` names it in errors (`messages[2].content`).
fn text_of(content: &Content, at: &str) -> Result<String, ApiError> {
    let turn = turn_of(content, at)?;
    if !turn.calls.is_empty() || !turn.results.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{at}: tool blocks belong in messages"
        )));
    }
    Ok(turn.text)
}

/// The text, calls and tool results of `content`.
fn turn_of(content: &Content, at: &str) -> Result<Turn, ApiError> {
    let blocks = match content {
        Content::Text(t) => {
            return Ok(Turn {
                text: t.clone(),
                ..Turn::default()
            });
        }
        Content::Blocks(blocks) => blocks,
    };
    check_blocks(blocks.len()).map_err(|e| ApiError::bad_request(format!("{at}: {e}")))?;
    let mut parts = Vec::with_capacity(blocks.len());
    let mut turn = Turn::default();
    for (j, block) in blocks.iter().enumerate() {
        let missing = |field: &str| {
            ApiError::bad_request(format!("{at}[{j}]: a {} block needs `{field}`", block.kind))
        };
        match block.kind.as_str() {
            "text" => parts.push(block.text.as_deref().ok_or_else(|| missing("text"))?),
            "tool_use" => turn.calls.push(pb::ToolCall {
                id: block.id.clone().ok_or_else(|| missing("id"))?,
                name: block.name.clone().ok_or_else(|| missing("name"))?,
                arguments: block
                    .input
                    .as_ref()
                    .map_or_else(|| "{}".into(), Value::to_string),
            }),
            "tool_result" => {
                let id = block
                    .tool_use_id
                    .clone()
                    .ok_or_else(|| missing("tool_use_id"))?;
                let mut result = match &block.content {
                    None => String::new(),
                    Some(c) => text_of(c, &format!("{at}[{j}].content"))?,
                };
                if block.is_error == Some(true) {
                    result = format!("Error: {result}");
                }
                turn.results.push((id, result));
            }
            kind => {
                return Err(ApiError::bad_request(format!(
                    "{at}[{j}].type: content blocks of type {kind:?} are not supported yet by llama-router: send text"
                )));
            }
        }
    }
    turn.text = parts.join("\n");
    Ok(turn)
}

impl MessagesRequest {
    /// Refuses what we cannot honour, naming the field.
    fn check(&self) -> Result<(), ApiError> {
        let unsupported = [
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
    /// turns of one role are joined, as Anthropic combines them; a
    /// `tool_result` becomes a tool turn, named after the call it answers.
    pub fn chat_messages(&self) -> Result<Vec<pb::ChatMessage>, ApiError> {
        self.check()?;
        let mut out: Vec<pb::ChatMessage> = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = &self.system {
            let content = text_of(system, "system")?;
            if !content.is_empty() {
                out.push(pb::ChatMessage {
                    role: "system".into(),
                    content,
                    ..Default::default()
                });
            }
        }
        // Each call's tool by its id, for the tool_result that answers it.
        let mut names: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for (i, m) in self.messages.iter().enumerate() {
            if m.role != "user" && m.role != "assistant" {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role: {:?} is not one of user, assistant (the system prompt goes in `system`)",
                    m.role
                )));
            }
            let turn = turn_of(&m.content, &format!("messages[{i}].content"))?;
            for (id, result) in turn.results {
                let name = names.get(&id).cloned().unwrap_or_default();
                out.push(pb::ChatMessage {
                    role: "tool".into(),
                    content: result,
                    tool_call_id: id,
                    name,
                    ..Default::default()
                });
            }
            names.extend(turn.calls.iter().map(|c| (c.id.clone(), c.name.clone())));
            if turn.text.is_empty()
                && turn.calls.is_empty()
                && out.last().is_some_and(|l| l.role == "tool")
            {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.role == m.role => {
                    if !turn.text.is_empty() {
                        last.content.push_str("\n\n");
                        last.content.push_str(&turn.text);
                    }
                    last.tool_calls.extend(turn.calls);
                }
                _ => out.push(pb::ChatMessage {
                    role: m.role.clone(),
                    content: turn.text,
                    tool_calls: turn.calls,
                    ..Default::default()
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
        let (tools, choice, tool_name) =
            tools_of(self.tools.as_deref(), self.tool_choice.as_ref())?;
        let mut chat = pb::ChatRequest {
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
            tools,
            tool_name,
            ..Default::default()
        };
        chat.set_tool_choice(choice);
        Ok(chat)
    }

    /// The template request `count_tokens` counts.
    pub fn to_template(&self) -> Result<pb::ApplyTemplateRequest, ApiError> {
        let (tools, choice, _) = tools_of(self.tools.as_deref(), self.tool_choice.as_ref())?;
        // With tool_choice none the chat offers no tools: neither does the count.
        let tools = if choice == pb::ToolChoice::None {
            Vec::new()
        } else {
            tools
        };
        Ok(pb::ApplyTemplateRequest {
            model: self.model.clone(),
            messages: self.chat_messages()?,
            tools,
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
    fn tool_use_and_tool_result_blocks_become_calls_and_tool_turns() {
        let r = parse(json!({
            "model": "m", "max_tokens": 5,
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "-3 C"}]},
                    {"type": "text", "text": "And tomorrow?"}
                ]}
            ]
        }))
        .to_chat()
        .unwrap();
        assert_eq!(r.tool_choice(), pb::ToolChoice::Required);
        // count_tokens counts what the chat renders: no tools under tool_choice none.
        let none = parse(json!({
            "model": "m",
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "none"},
            "messages": [{"role": "user", "content": "x"}]
        }));
        assert!(none.to_template().unwrap().tools.is_empty());
        assert_eq!(r.tools[0].parameters, r#"{"type":"object"}"#);
        let roles: Vec<_> = r.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool", "user"]);
        let call = &r.messages[1].tool_calls[0];
        assert_eq!(
            (
                call.id.as_str(),
                call.name.as_str(),
                call.arguments.as_str()
            ),
            ("toolu_1", "get_weather", r#"{"city":"Oslo"}"#)
        );
        assert_eq!(r.messages[1].content, "Checking.");
        let result = &r.messages[2];
        assert_eq!(
            (
                result.content.as_str(),
                result.tool_call_id.as_str(),
                result.name.as_str()
            ),
            ("-3 C", "toolu_1", "get_weather")
        );
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
        let server_tool = json!([{"type": "web_search_20250305", "name": "web_search"}]);
        assert!(with("tools", server_tool).starts_with("tools[0].type"));
        assert!(with("tool_choice", json!({"type": "tool"})).contains("name"));
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
