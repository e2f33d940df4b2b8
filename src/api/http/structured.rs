//! Structured output: what an OpenAI `response_format`, a Responses
//! `text.format` or llama-server's fields ask the answer to be (a JSON
//! object, or a JSON schema the worker turns into a grammar), put into the
//! v1 request's sampling.

use crate::api::http::error::ApiError;
use crate::engine::grammar::JSON_OBJECT;
use crate::proto::pb;

/// What a structured-output request asks the answer to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// A GBNF grammar (`json_object`'s).
    Grammar(String),
    /// A JSON schema, as JSON text (the worker turns it into a grammar).
    Schema(String),
}

/// The constraint of an output format: `text` (none), `json_object`, or
/// `json_schema` with its `schema`; `field` names the format in errors.
pub fn output_constraint(
    kind: Option<&str>,
    schema: Option<&serde_json::Value>,
    field: &str,
) -> Result<Option<Constraint>, ApiError> {
    match kind {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::Grammar(JSON_OBJECT.to_owned()))),
        Some("json_schema") => match schema.filter(|s| !s.is_null()) {
            Some(schema) => Ok(Some(Constraint::Schema(schema.to_string()))),
            None => Err(ApiError::bad_request(format!(
                "{field} json_schema needs its schema"
            ))),
        },
        Some(other) => Err(ApiError::bad_request(format!(
            "{field} type {other:?} is not one of text, json_object, json_schema"
        ))),
    }
}

/// Puts `constraint` into `sampling`; a `grammar` given beside it is a 400.
pub fn constrain(
    sampling: &mut pb::SamplingParams,
    constraint: Option<Constraint>,
    field: &str,
) -> Result<(), ApiError> {
    let Some(constraint) = constraint else {
        return Ok(());
    };
    if sampling.grammar.is_some() || sampling.json_schema.is_some() {
        return Err(ApiError::bad_request(format!(
            "send either {field} or grammar, not both"
        )));
    }
    match constraint {
        Constraint::Grammar(g) => sampling.grammar = Some(g),
        Constraint::Schema(s) => sampling.json_schema = Some(s),
    }
    Ok(())
}

/// The constraint a chat `response_format` asks for
/// (`{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`).
pub fn response_format(format: Option<&serde_json::Value>) -> Result<Option<Constraint>, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    output_constraint(
        format.get("type").and_then(serde_json::Value::as_str),
        format.pointer("/json_schema/schema"),
        "response_format",
    )
}
