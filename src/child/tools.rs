//! A chat request's tools in the worker: the wire's tools and turns in the
//! engine's terms, the constraint a tool choice puts on the answer, and the
//! stream that holds back a call's text and sends the parsed calls with the
//! last piece (finish reason `TOOL_CALLS`).

use tokio_stream::StreamExt;
use tonic::Status;

use super::service::PieceStream;
use crate::engine::chat::{Message, ToolCall};
use crate::engine::limits::MAX_GRAMMAR_BYTES;
use crate::engine::tools::parse::Holdback;
use crate::engine::tools::{self, Choice, Style, Tool};
use crate::proto::pb;

/// What a request offers: its tools and how they may be used (`None`: no tools).
pub struct Offer {
    /// The tools.
    pub tools: Vec<Tool>,
    /// Auto, required or named; `None` when no tool is offered.
    pub choice: Option<Choice>,
}

impl Offer {
    /// The request's tools, checked.
    pub fn of(tools: &[pb::Tool], choice: pb::ToolChoice, tool_name: &str) -> Result<Self, Status> {
        let tools = tools.iter().map(tool_of).collect::<Result<Vec<_>, _>>()?;
        let choice = match choice {
            pb::ToolChoice::None => None,
            pb::ToolChoice::Auto if tools.is_empty() => None,
            pb::ToolChoice::Auto => Some(Choice::Auto),
            pb::ToolChoice::Required => Some(Choice::Required),
            pb::ToolChoice::Named => Some(Choice::Named(tool_name.to_owned())),
        };
        if let Some(choice) = &choice {
            tools::check(&tools, choice).map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        Ok(Offer { tools, choice })
    }

    /// Puts the schema a call must match (in `style`) into `sampling`; a
    /// grammar or schema of the client's beside it is refused.
    pub fn constrain(
        &self,
        style: Style,
        sampling: &mut Option<pb::SamplingParams>,
    ) -> Result<(), Status> {
        let Some(choice) = &self.choice else {
            return Ok(());
        };
        let Some(schema) = tools::answer_schema(style, &self.tools, choice) else {
            return Ok(());
        };
        let sampling = sampling.get_or_insert_default();
        let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        if given(&sampling.grammar) || given(&sampling.json_schema) {
            return Err(Status::invalid_argument(
                "tools constrain this answer already: send tools, or a grammar or response format, not both",
            ));
        }
        // llama.cpp walks the grammar at every token: the same bound as a client's.
        let schema = schema.to_string();
        if schema.len() > MAX_GRAMMAR_BYTES {
            return Err(Status::invalid_argument(format!(
                "the tools' parameter schemas come to {} bytes of grammar; at most {MAX_GRAMMAR_BYTES}",
                schema.len()
            )));
        }
        sampling.json_schema = Some(schema);
        Ok(())
    }

    /// `stream` with the calls' text held back and parsed (unchanged when no tool is offered).
    pub fn parse_calls(&self, style: Style, stream: PieceStream) -> PieceStream {
        let Some(choice) = &self.choice else {
            return stream;
        };
        let names = self.tools.iter().map(|t| t.name.clone()).collect();
        let mut hold = Some(Holdback::new(style, choice, names));
        Box::pin(stream.map(move |piece| {
            let mut piece = piece?;
            let Some(h) = hold.as_mut() else {
                return Ok(piece);
            };
            let mut text = h.push(&piece.text);
            let finish = piece.finish_reason();
            if finish != pb::FinishReason::Unspecified {
                if let Some(h) = hold.take() {
                    let parsed = h.finish();
                    text.push_str(&parsed.content);
                    let answered =
                        matches!(finish, pb::FinishReason::Stop | pb::FinishReason::Length);
                    if answered && !parsed.calls.is_empty() {
                        piece.set_finish_reason(pb::FinishReason::ToolCalls);
                        piece.tool_calls = parsed.calls.into_iter().map(call_pb).collect();
                    }
                }
            }
            piece.text = text;
            Ok(piece)
        }))
    }
}

fn tool_of(t: &pb::Tool) -> Result<Tool, Status> {
    let parameters = if t.parameters.trim().is_empty() {
        serde_json::json!({"type": "object"})
    } else {
        serde_json::from_str(&t.parameters).map_err(|e| {
            Status::invalid_argument(format!("tool {:?}: parameters are not JSON: {e}", t.name))
        })?
    };
    Ok(Tool {
        name: t.name.clone(),
        description: t.description.clone(),
        parameters,
    })
}

fn call_pb(c: ToolCall) -> pb::ToolCall {
    pb::ToolCall {
        id: c.id,
        name: c.name,
        arguments: c.arguments,
    }
}

/// A wire message in the engine's terms.
pub fn message_of(m: pb::ChatMessage) -> Message {
    Message {
        role: m.role,
        content: m.content,
        tool_calls: m
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        tool_call_id: m.tool_call_id,
        name: m.name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, parameters: &str) -> pb::Tool {
        pb::Tool {
            name: name.into(),
            description: String::new(),
            parameters: parameters.into(),
        }
    }

    #[test]
    fn a_required_call_is_held_to_its_schema_within_the_grammar_bound() {
        let offer = Offer::of(&[tool("f", "")], pb::ToolChoice::Required, "").unwrap();
        let mut sampling = None;
        offer.constrain(Style::Native, &mut sampling).unwrap();
        let schema = sampling.unwrap().json_schema.unwrap();
        assert!(schema.contains(r#""const":"f""#), "{schema}");
        // Tools whose schemas add up past the bound are refused, not compiled.
        let big = format!(
            r#"{{"type": "object", "description": "{}"}}"#,
            "x".repeat(MAX_GRAMMAR_BYTES / 4)
        );
        let tools: Vec<pb::Tool> = (0..5).map(|i| tool(&format!("t{i}"), &big)).collect();
        let offer = Offer::of(&tools, pb::ToolChoice::Required, "").unwrap();
        let err = offer.constrain(Style::Generic, &mut None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("at most"), "{}", err.message());
        // A client grammar beside a required call is refused.
        let mut grammar = Some(pb::SamplingParams {
            grammar: Some("root ::= \"a\"".into()),
            ..Default::default()
        });
        let offer = Offer::of(&[tool("f", "")], pb::ToolChoice::Required, "").unwrap();
        assert!(offer.constrain(Style::Native, &mut grammar).is_err());
        assert!(Offer::of(&[tool("f", "not json")], pb::ToolChoice::Auto, "").is_err());
    }
}
