//! OpenAI's chat and text completion bodies and how they become the v1
//! requests the inference layer takes (the gRPC API's messages); embeddings
//! are in `embeddings`, tools in `tools`. Fields we do not know are ignored,
//! as OpenAI-compatible servers do; fields we know but cannot honour
//! (`n` > 1, images, token arrays) are a clear 400.

use serde::Deserialize;

use super::error::ApiError;
use super::structured::{constrain, response_format};
use super::tools::{CallDef, ToolDef, calls_pb, tool_choice, tools_pb};
use crate::proto::pb;

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings of a request's `stop`, none when it has none.
    pub fn strings(stop: Option<&Stop>) -> Vec<String> {
        match stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }
}

/// Sampling and length fields shared by chat and text completions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens` (chat).
    pub max_completion_tokens: Option<u32>,
    /// 0 = greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// llama.cpp extension.
    pub top_k: Option<i32>,
    /// llama.cpp extension.
    pub min_p: Option<f32>,
    /// llama.cpp extension.
    pub repeat_penalty: Option<f32>,
    /// OpenAI's presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI's frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Any integer; folded into 32 bits.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Choices per request; only 1.
    pub n: Option<u32>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// `{"include_usage": true}` adds a last chunk with usage.
    pub stream_options: Option<StreamOptions>,
    /// llama.cpp extension: a GBNF grammar the answer must match.
    pub grammar: Option<String>,
    /// Chat: `true` reports each token's log-probability; text
    /// completions: how many alternatives to report with it.
    pub logprobs: Option<serde_json::Value>,
    /// Chat: how many alternatives (0 to 20) with `logprobs: true`.
    pub top_logprobs: Option<u32>,
    /// llama.cpp extension: reuse an earlier request's KV for the shared
    /// prompt prefix [default: true].
    pub cache_prompt: Option<bool>,
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct StreamOptions {
    /// Send usage in a last chunk.
    #[serde(default)]
    pub include_usage: bool,
}

impl Sampling {
    fn check(&self) -> Result<(), ApiError> {
        self.top_logprobs()?;
        match self.n {
            None | Some(1) => Ok(()),
            Some(n) => Err(ApiError::bad_request(format!(
                "n = {n} is not supported: each request returns one choice (send n = 1)"
            ))),
        }
    }

    /// How many alternatives `logprobs` asks for, if it does.
    pub fn top_logprobs(&self) -> Result<Option<u32>, ApiError> {
        super::logprobs::requested(self.logprobs.as_ref(), self.top_logprobs)
    }

    fn max_tokens(&self) -> u32 {
        self.max_completion_tokens.or(self.max_tokens).unwrap_or(0)
    }

    fn params(&self) -> pb::SamplingParams {
        pb::SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_last_n: None,
            // Any integer is a valid seed to OpenAI; the same one still gives the same tokens.
            seed: self.seed.map(|s| s as u32),
            grammar: self.grammar.clone(),
            json_schema: None,
            // Checked by `check`.
            top_logprobs: self.top_logprobs().ok().flatten(),
            cache_prompt: self.cache_prompt,
        }
    }

    fn stops(&self) -> Vec<String> {
        Stop::strings(self.stop.as_ref())
    }

    /// Whether a stream ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options.is_some_and(|o| o.include_usage)
    }
}

/// A chat message's content: text, or parts of which only text is supported.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": ...}, ...]`.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// A chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// system, user, assistant, tool.
    pub role: String,
    /// Its content (null for an assistant turn that only called tools).
    pub content: Option<Content>,
    /// An assistant turn's calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<CallDef>>,
    /// A tool turn: the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// A tool turn: the function's name.
    #[serde(default)]
    pub name: Option<String>,
}

impl Message {
    /// Its text: plain, or the text parts joined; any other part is a 400.
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(Content::Text(t)) => Ok(t.clone()),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(format!(
                                "message content of type {kind:?} is not supported: send text"
                            )));
                        }
                    }
                }
                Ok(text)
            }
        }
    }
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model id or alias.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling and streaming.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// `{"type": "text"}`, `{"type": "json_object"}` or
    /// `{"type": "json_schema", "json_schema": {"schema": {...}}}`.
    pub response_format: Option<serde_json::Value>,
    /// Functions the model may call.
    #[serde(default)]
    pub tools: Option<Vec<ToolDef>>,
    /// `auto`, `none`, `required` or a named function.
    #[serde(default)]
    pub tool_choice: Option<serde_json::Value>,
}

/// The v1 messages of OpenAI chat messages (text only; other parts are a 400).
pub fn chat_messages(messages: &[Message]) -> Result<Vec<pb::ChatMessage>, ApiError> {
    messages
        .iter()
        .map(|m| {
            Ok(pb::ChatMessage {
                role: m.role.clone(),
                content: m.text()?,
                tool_calls: calls_pb(m.tool_calls.as_deref()),
                tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
                name: m.name.clone().unwrap_or_default(),
            })
        })
        .collect()
}

impl ChatCompletionRequest {
    /// The v1 request.
    pub fn to_pb(&self) -> Result<pb::ChatRequest, ApiError> {
        self.sampling.check()?;
        if self.messages.is_empty() {
            return Err(ApiError::bad_request("messages is empty"));
        }
        let messages = chat_messages(&self.messages)?;
        let mut sampling = self.sampling.params();
        let constraint = response_format(self.response_format.as_ref())?;
        constrain(&mut sampling, constraint, "response_format")?;
        let (choice, tool_name) = tool_choice(self.tool_choice.as_ref())?;
        let mut request = pb::ChatRequest {
            model: self.model.clone(),
            messages,
            max_tokens: self.sampling.max_tokens(),
            sampling: Some(sampling),
            stop: self.sampling.stops(),
            tools: tools_pb(self.tools.as_deref())?,
            tool_name,
            ..Default::default()
        };
        request.set_tool_choice(choice);
        Ok(request)
    }
}

/// `prompt`: text, or OpenAI's other shapes that we refuse clearly.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    One(String),
    /// Several prompts, or token ids.
    Other(serde_json::Value),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// Model id or alias.
    pub model: String,
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling and streaming.
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl CompletionRequest {
    /// The v1 request.
    pub fn to_pb(&self) -> Result<pb::GenerateRequest, ApiError> {
        self.sampling.check()?;
        let prompt = match &self.prompt {
            Prompt::One(p) => p.clone(),
            Prompt::Other(serde_json::Value::Array(items)) if items.len() == 1 => {
                match items.first().and_then(|v| v.as_str()) {
                    Some(p) => p.to_owned(),
                    None => return Err(token_prompts()),
                }
            }
            Prompt::Other(serde_json::Value::Array(_)) => {
                return Err(ApiError::bad_request(
                    "one prompt per request is supported: send a string",
                ));
            }
            Prompt::Other(_) => return Err(token_prompts()),
        };
        Ok(pb::GenerateRequest {
            model: self.model.clone(),
            prompt,
            // OpenAI's default for text completions is 16 tokens.
            max_tokens: self
                .sampling
                .max_completion_tokens
                .or(self.sampling.max_tokens)
                .unwrap_or(16),
            sampling: Some(self.sampling.params()),
            stop: self.sampling.stops(),
            ..Default::default()
        })
    }
}

fn token_prompts() -> ApiError {
    ApiError::bad_request("prompts as token ids are not supported: send text")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chat(body: serde_json::Value) -> Result<pb::ChatRequest, ApiError> {
        serde_json::from_value::<ChatCompletionRequest>(body)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .to_pb()
    }

    #[test]
    fn chat_requests_carry_what_openai_clients_send() {
        let r = chat(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null}
            ],
            "max_completion_tokens": 7, "temperature": 0, "seed": -1,
            "stop": "\n", "n": 1, "stream": true, "user": "ignored"
        }))
        .unwrap();
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[1].content, "hi there");
        assert_eq!(r.max_tokens, 7);
        assert_eq!(r.stop, vec!["\n"]);
        let s = r.sampling.unwrap();
        assert_eq!(s.temperature, Some(0.0));
        assert_eq!(s.seed, Some(u32::MAX));
    }

    #[test]
    fn what_we_cannot_honour_is_a_bad_request() {
        let base = |extra: serde_json::Value| {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            chat(body)
        };
        assert!(base(json!({"n": 2})).unwrap_err().message.contains("n = 2"));
        let image = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]});
        assert!(base(image).unwrap_err().message.contains("image_url"));
        assert!(base(json!({"messages": []})).is_err());
        let json_object = base(json!({"response_format": {"type": "json_object"}})).unwrap();
        assert_eq!(
            json_object.sampling.unwrap().grammar.as_deref(),
            Some(crate::engine::grammar::JSON_OBJECT)
        );
        let text = base(json!({"response_format": {"type": "text"}, "grammar": "root ::= \"a\""}))
            .unwrap();
        assert_eq!(
            text.sampling.unwrap().grammar.as_deref(),
            Some("root ::= \"a\"")
        );
        let schema = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}});
        let sampling = base(schema).unwrap().sampling.unwrap();
        assert_eq!(
            sampling.json_schema.as_deref(),
            Some(r#"{"type":"object"}"#)
        );
        assert_eq!(sampling.grammar, None);
        let no_schema =
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}});
        assert!(
            base(no_schema)
                .unwrap_err()
                .message
                .contains("needs its schema")
        );
        let both = json!({"response_format": {"type": "json_object"}, "grammar": "root ::= \"a\""});
        assert!(base(both).is_err());
        assert!(chat(json!({"messages": []})).is_err(), "model is required");
    }

    #[test]
    fn completions_take_one_text_prompt_and_default_to_16_tokens() {
        let parse = |b| {
            serde_json::from_value::<CompletionRequest>(b)
                .unwrap()
                .to_pb()
        };
        let r = parse(json!({"model": "m", "prompt": "abc"})).unwrap();
        assert_eq!((r.prompt.as_str(), r.max_tokens), ("abc", 16));
        let r = parse(json!({"model": "m", "prompt": ["abc"], "max_tokens": 3})).unwrap();
        assert_eq!((r.prompt.as_str(), r.max_tokens), ("abc", 3));
        assert!(parse(json!({"model": "m", "prompt": [1, 2, 3]})).is_err());
        assert!(parse(json!({"model": "m", "prompt": ["a", "b"]})).is_err());
    }
}
