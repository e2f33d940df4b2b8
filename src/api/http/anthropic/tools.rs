//! Anthropic's client tools in a Messages request: `tools` (name,
//! description, `input_schema`; server tools are refused by name) and
//! `tool_choice` (`auto`, `any`, `tool` with its `name`, `none`), as v1 tools.

use serde::Deserialize;
use serde_json::Value;

use crate::api::http::error::ApiError;
use crate::proto::pb;

/// A client tool.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolDef {
    /// Absent or `custom`; server tools (`web_search_...`) are refused.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Its input's JSON schema.
    pub input_schema: Option<Value>,
}

/// The v1 tools and choice of a request's `tools` and `tool_choice`.
pub(super) fn tools_of(
    tools: Option<&[ToolDef]>,
    choice: Option<&Value>,
) -> Result<(Vec<pb::Tool>, pb::ToolChoice, String), ApiError> {
    let mut out = Vec::new();
    for (i, t) in tools.unwrap_or_default().iter().enumerate() {
        if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
            return Err(ApiError::bad_request(format!(
                "tools[{i}].type: server tools ({kind:?}) are not supported by llama-router: define client tools"
            )));
        }
        out.push(pb::Tool {
            name: t.name.clone(),
            description: t.description.clone().unwrap_or_default(),
            parameters: t
                .input_schema
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
        });
    }
    let kind = choice.and_then(|c| c.get("type")).and_then(Value::as_str);
    let (choice, name) = match kind {
        None | Some("auto") => (pb::ToolChoice::Auto, String::new()),
        Some("none") => (pb::ToolChoice::None, String::new()),
        Some("any") => (pb::ToolChoice::Required, String::new()),
        Some("tool") => match choice.and_then(|c| c.get("name")).and_then(Value::as_str) {
            Some(name) => (pb::ToolChoice::Named, name.to_owned()),
            None => return Err(ApiError::bad_request("tool_choice: type tool needs `name`")),
        },
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "tool_choice.type {other:?} is not one of auto, any, tool, none"
            )));
        }
    };
    Ok((out, choice, name))
}
