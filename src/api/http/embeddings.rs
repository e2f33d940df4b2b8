//! OpenAI's `POST /v1/embeddings` body and how it becomes the v1 request:
//! text inputs only (token ids would be another tokenizer's), unit vectors,
//! `float` or `base64` encoding.

use serde::Deserialize;

use super::error::ApiError;
use crate::proto::pb;

/// `input` of an embeddings request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// Token ids (refused: they would be another tokenizer's).
    Tokens(serde_json::Value),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    /// Model id or alias.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32, what the `openai` package asks for).
    pub encoding_format: Option<String>,
}

impl EmbeddingRequest {
    /// The v1 request (vectors scaled to unit length, as OpenAI's are).
    pub fn to_pb(&self) -> Result<pb::EmbedRequest, ApiError> {
        let input = match &self.input {
            EmbeddingInput::One(s) => vec![s.clone()],
            EmbeddingInput::Many(v) if !v.is_empty() => v.clone(),
            EmbeddingInput::Many(_) => return Err(ApiError::bad_request("input is empty")),
            EmbeddingInput::Tokens(_) => {
                return Err(ApiError::bad_request(
                    "input as token ids is not supported: send text (with LangChain, set check_embedding_ctx_length=False)",
                ));
            }
        };
        match self.encoding_format.as_deref() {
            None | Some("float") | Some("base64") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "encoding_format {other:?} is not supported: use float or base64"
                )));
            }
        }
        Ok(pb::EmbedRequest {
            model: self.model.clone(),
            input,
            normalize: true,
        })
    }

    /// Whether vectors go out as base64.
    pub fn base64(&self) -> bool {
        self.encoding_format.as_deref() == Some("base64")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn embeddings_take_text_and_refuse_token_ids() {
        let parse = |b| serde_json::from_value::<EmbeddingRequest>(b).unwrap();
        let r = parse(json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64"}));
        assert!(r.base64());
        assert_eq!(r.to_pb().unwrap().input, vec!["a", "b"]);
        assert!(
            parse(json!({"model": "m", "input": [[1, 2]]}))
                .to_pb()
                .is_err()
        );
        assert!(
            parse(json!({"model": "m", "input": "x", "encoding_format": "int8"}))
                .to_pb()
                .is_err()
        );
    }
}
