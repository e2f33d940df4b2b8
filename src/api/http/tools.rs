//! OpenAI's tool calling shapes: `tools`, `tool_choice`, an assistant
//! turn's `tool_calls` and a `tool` turn, in a request; `tool_calls` in an
//! answer and as streamed deltas. The worker offers the tools to the model
//! and parses its calls (`child::tools`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::proto::pb;

/// One entry of `tools`.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolDef {
    /// Only `function`.
    #[serde(rename = "type", default = "function")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
}

fn function() -> String {
    "function".into()
}

/// A function's name, description and parameters' schema.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDef {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// Its arguments' JSON schema.
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// One call in an assistant turn of the history.
#[derive(Debug, Clone, Deserialize)]
pub struct CallDef {
    /// Its id, which the tool turn answering it names.
    #[serde(default)]
    pub id: Option<String>,
    /// The function and its arguments.
    pub function: CalledFunction,
}

/// The function a call called.
#[derive(Debug, Clone, Deserialize)]
pub struct CalledFunction {
    /// Its name.
    pub name: String,
    /// JSON text, as OpenAI sends it (an object is taken too).
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// The v1 tools of a request's `tools`.
pub fn tools_pb(tools: Option<&[ToolDef]>) -> Result<Vec<pb::Tool>, ApiError> {
    tools
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.kind != "function" {
                return Err(ApiError::bad_request(format!(
                    "tools[{i}].type {:?} is not supported: only function tools",
                    t.kind
                )));
            }
            Ok(pb::Tool {
                name: t.function.name.clone(),
                description: t.function.description.clone().unwrap_or_default(),
                parameters: t
                    .function
                    .parameters
                    .as_ref()
                    .filter(|p| !p.is_null())
                    .map(Value::to_string)
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// `tool_choice`: `auto`, `none`, `required`, or
/// `{"type": "function", "function": {"name": ...}}`; the tool's name with it.
pub fn tool_choice(choice: Option<&Value>) -> Result<(pb::ToolChoice, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "tool_choice is one of \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )
    };
    match choice {
        None | Some(Value::Null) => Ok((pb::ToolChoice::Auto, String::new())),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok((pb::ToolChoice::Auto, String::new())),
            "none" => Ok((pb::ToolChoice::None, String::new())),
            "required" => Ok((pb::ToolChoice::Required, String::new())),
            _ => Err(bad()),
        },
        Some(named) => named
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|name| (pb::ToolChoice::Named, name.to_owned()))
            .ok_or_else(bad),
    }
}

/// The v1 calls of an assistant turn's `tool_calls`.
pub fn calls_pb(calls: Option<&[CallDef]>) -> Vec<pb::ToolCall> {
    calls
        .unwrap_or_default()
        .iter()
        .map(|c| pb::ToolCall {
            id: c.id.clone().unwrap_or_default(),
            name: c.function.name.clone(),
            arguments: match &c.function.arguments {
                None | Some(Value::Null) => "{}".into(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            },
        })
        .collect()
}

/// An answer's `tool_calls`, as a message holds them.
pub fn calls_json(calls: &[pb::ToolCall]) -> Value {
    calls.iter().map(call_json).collect()
}

/// One call in OpenAI's shape.
fn call_json(c: &pb::ToolCall) -> Value {
    json!({
        "id": c.id,
        "type": "function",
        "function": {"name": c.name, "arguments": c.arguments},
    })
}

/// The calls as one streamed delta (each with its `index`).
pub fn calls_delta(calls: &[pb::ToolCall]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let mut call = call_json(c);
            if let Some(fields) = call.as_object_mut() {
                fields.insert("index".into(), index.into());
            }
            call
        })
        .collect();
    json!({"tool_calls": calls})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_and_tools_read_as_openai_sends_them() {
        assert_eq!(tool_choice(None).unwrap().0, pb::ToolChoice::Auto);
        assert_eq!(
            tool_choice(Some(&json!("required"))).unwrap().0,
            pb::ToolChoice::Required
        );
        assert_eq!(
            tool_choice(Some(
                &json!({"type": "function", "function": {"name": "f"}})
            ))
            .unwrap(),
            (pb::ToolChoice::Named, "f".into())
        );
        assert!(tool_choice(Some(&json!("always"))).is_err());
        let tools: Vec<ToolDef> = serde_json::from_value(json!([
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ]))
        .unwrap();
        let got = tools_pb(Some(&tools)).unwrap();
        assert_eq!(got[0].parameters, r#"{"type":"object"}"#);
        let web: Vec<ToolDef> =
            serde_json::from_value(json!([{"type": "web_search", "function": {"name": "w"}}]))
                .unwrap();
        assert!(
            tools_pb(Some(&web))
                .unwrap_err()
                .message
                .contains("web_search")
        );
        let calls: Vec<CallDef> = serde_json::from_value(json!([
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
        ]))
        .unwrap();
        let pb_calls = calls_pb(Some(&calls));
        assert_eq!(pb_calls[0].arguments, "{\"a\":1}");
        assert_eq!(calls_json(&pb_calls)[0]["function"]["name"], "f");
        assert_eq!(calls_delta(&pb_calls)["tool_calls"][0]["index"], 0);
    }
}
