//! Tool calling inside the worker. A model's template takes tools one of two
//! ways ([`Style`]): natively, when it renders the `tools` list itself
//! (Qwen/Hermes, Llama 3.x, Mistral...), or the generic way llama.cpp uses
//! for the rest: the tools described in a system prompt and an answer in
//! JSON, either `{"tool_call": ...}` or `{"response": ...}`, enforced by a
//! grammar. This module writes that prompt and the schema that constrains a
//! call; [`parse`] finds the calls in what the model wrote.

pub mod parse;

use serde_json::{Value, json};

use super::chat::{Message, ToolCall};
use super::limits::MAX_TOOLS;
/// Most bytes of a tool's name.
pub const MAX_TOOL_NAME: usize = 64;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name (letters, digits, `_` and `-`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// Its arguments' JSON schema.
    pub parameters: Value,
}

impl Tool {
    /// OpenAI's shape, which Hugging Face templates render.
    pub fn to_openai(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }
}

/// Which answers the request allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Text or calls, as the model decides.
    Auto,
    /// A call of one of the tools.
    Required,
    /// A call of this tool.
    Named(String),
}

/// How a model's template takes tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// It renders the `tools` list and tool turns itself.
    Native,
    /// It knows nothing of tools: we describe them in a system prompt and
    /// constrain the answer to JSON.
    Generic,
}

/// Why a request's tools cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// More tools than [`MAX_TOOLS`].
    #[error("{0} tools given; a request takes at most {MAX_TOOLS}")]
    TooMany(usize),
    /// A name that is empty, too long or has other characters.
    #[error("tool name {0:?}: a name is 1 to {MAX_TOOL_NAME} letters, digits, '_' or '-'")]
    BadName(String),
    /// Two tools of one name.
    #[error("two tools are named {0:?}")]
    Duplicate(String),
    /// Parameters that are not a JSON schema object.
    #[error("tool {0:?}: parameters must be a JSON schema object")]
    BadParameters(String),
    /// `tool_choice` names a tool that is not offered.
    #[error("tool_choice names {0:?}, which is not one of the tools")]
    UnknownChoice(String),
    /// `tool_choice` asks for a call with no tools.
    #[error("tool_choice asks for a tool call, but no tools are given")]
    NoTools,
}

/// Checks a request's tools and choice.
pub fn check(tools: &[Tool], choice: &Choice) -> Result<(), ToolError> {
    if tools.len() > MAX_TOOLS {
        return Err(ToolError::TooMany(tools.len()));
    }
    for (i, tool) in tools.iter().enumerate() {
        let valid = !tool.name.is_empty()
            && tool.name.len() <= MAX_TOOL_NAME
            && tool
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ToolError::BadName(tool.name.clone()));
        }
        if !tool.parameters.is_object() {
            return Err(ToolError::BadParameters(tool.name.clone()));
        }
        if tools.iter().take(i).any(|t| t.name == tool.name) {
            return Err(ToolError::Duplicate(tool.name.clone()));
        }
    }
    match choice {
        Choice::Auto => Ok(()),
        _ if tools.is_empty() => Err(ToolError::NoTools),
        Choice::Required => Ok(()),
        Choice::Named(name) if tools.iter().any(|t| &t.name == name) => Ok(()),
        Choice::Named(name) => Err(ToolError::UnknownChoice(name.clone())),
    }
}

/// The tools a choice allows the model to call.
fn allowed<'a>(tools: &'a [Tool], choice: &'a Choice) -> impl Iterator<Item = &'a Tool> {
    tools.iter().filter(move |t| match choice {
        Choice::Named(name) => &t.name == name,
        _ => true,
    })
}

/// The schema of one call of any tool the choice allows:
/// `{"name": <its name>, "arguments": <its parameters>}`, name first.
fn call_schema(tools: &[Tool], choice: &Choice) -> Value {
    let calls: Vec<Value> = allowed(tools, choice)
        .map(|t| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": t.name},
                    "arguments": t.parameters,
                },
                "required": ["name", "arguments"],
                // Nothing else: the answer ends once the call is written.
                "additionalProperties": false,
            })
        })
        .collect();
    match <[Value; 1]>::try_from(calls) {
        Ok([one]) => one,
        Err(calls) => json!({"anyOf": calls}),
    }
}

/// The JSON schema the answer is held to, if any: in the generic style
/// always (a call, or with `auto` a `response` as well); natively only
/// when a call is required, as a bare call object.
pub fn answer_schema(style: Style, tools: &[Tool], choice: &Choice) -> Option<Value> {
    let call = call_schema(tools, choice);
    match (style, choice) {
        (Style::Native, Choice::Auto) => None,
        (Style::Native, _) => Some(call),
        (Style::Generic, choice) => {
            let tool_call = json!({
                "type": "object",
                "properties": {"tool_call": call},
                "required": ["tool_call"],
                "additionalProperties": false,
            });
            Some(match choice {
                Choice::Auto => json!({"anyOf": [tool_call, {
                    "type": "object",
                    "properties": {"response": {"type": "string"}},
                    "required": ["response"],
                    "additionalProperties": false,
                }]}),
                _ => tool_call,
            })
        }
    }
}

/// The system prompt that offers the tools in the generic style.
fn generic_prompt(tools: &[Tool], choice: &Choice) -> String {
    let mut prompt = String::from("You can call these tools:\n");
    for tool in allowed(tools, choice) {
        prompt.push_str(&tool.to_openai().to_string());
        prompt.push('\n');
    }
    prompt.push_str(match choice {
        Choice::Auto => {
            "\nRespond in JSON format, either with `tool_call` (a request to call tools) or with `response` reply to the user's request: {\"tool_call\": {\"name\": \"...\", \"arguments\": {...}}} or {\"response\": \"...\"}."
        }
        _ => {
            "\nRespond in JSON format with `tool_call`, a request to call a tool: {\"tool_call\": {\"name\": \"...\", \"arguments\": {...}}}."
        }
    });
    prompt
}

/// A call as the JSON the generic style writes for it.
fn call_json(call: &ToolCall) -> Value {
    json!({"name": call.name, "arguments": call.arguments_json(), "id": call.id})
}

/// The conversation for a template that knows no tools: the tools (when
/// offered) in the system prompt, an assistant's calls written as the JSON
/// it was asked for, a tool's result as a user turn, and turns of one role
/// that now follow each other joined (templates insist on alternation).
pub fn generic_messages(messages: &[Message], offered: Option<(&[Tool], &Choice)>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len() + 1);
    if let Some((tools, choice)) = offered.filter(|(tools, _)| !tools.is_empty()) {
        out.push(Message::text("system", generic_prompt(tools, choice)));
    }
    for m in messages {
        let (role, content) = match m.role.as_str() {
            "tool" => {
                let response = json!({"tool_response": {
                    "tool": m.name,
                    "tool_call_id": m.tool_call_id,
                    "content": m.content,
                }});
                ("user", response.to_string())
            }
            "assistant" if !m.tool_calls.is_empty() => {
                let calls = match m.tool_calls.as_slice() {
                    [one] => json!({"tool_call": call_json(one)}),
                    many => json!({"tool_calls": many.iter().map(call_json).collect::<Vec<_>>()}),
                };
                let content = if m.content.is_empty() {
                    calls.to_string()
                } else {
                    format!("{}\n{calls}", m.content)
                };
                ("assistant", content)
            }
            role => (role, m.content.clone()),
        };
        match out.last_mut() {
            Some(last) if last.role == role => {
                last.content.push_str("\n\n");
                last.content.push_str(&content);
            }
            _ => out.push(Message::text(role, content)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
