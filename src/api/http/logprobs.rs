//! Token log-probabilities in each API's shape: OpenAI chat's
//! `logprobs.content`, OpenAI text completions' `tokens`/`token_logprobs`/
//! `top_logprobs`/`text_offset`, and llama-server's
//! `completion_probabilities`. The worker computes them
//! (`engine::logprobs`) when `SamplingParams.top_logprobs` is set.

use serde_json::{Map, Value, json};

use super::error::ApiError;
use crate::engine::logprobs::MAX_TOP_LOGPROBS;
use crate::proto::pb;

/// How many alternatives a request's `logprobs` and `top_logprobs` ask for:
/// chat's `logprobs: true` (with `top_logprobs`, default 0), a text
/// completion's `logprobs: N`; `None` when not asked.
pub fn requested(logprobs: Option<&Value>, top: Option<u32>) -> Result<Option<u32>, ApiError> {
    let n = match logprobs {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {
            if top.is_some_and(|t| t > 0) {
                return Err(ApiError::bad_request("top_logprobs needs logprobs: true"));
            }
            return Ok(None);
        }
        Some(Value::Bool(true)) => top.unwrap_or(0),
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => n,
            None => return Err(ApiError::bad_request("logprobs is a count from 0")),
        },
        Some(_) => return Err(ApiError::bad_request("logprobs is true, false or a count")),
    };
    if n > MAX_TOP_LOGPROBS {
        return Err(ApiError::bad_request(format!(
            "top_logprobs is {n}; at most {MAX_TOP_LOGPROBS}"
        )));
    }
    Ok(Some(n))
}

/// A token's text (lossy where its bytes are part of a character).
fn text(t: &pb::TokenLogprob) -> String {
    String::from_utf8_lossy(&t.piece).into_owned()
}

/// OpenAI chat's entries: `{token, logprob, bytes, top_logprobs: [...]}`.
pub fn chat_content(probs: &[pb::TokenLogprob]) -> Value {
    let entry =
        |t: &pb::TokenLogprob| json!({"token": text(t), "logprob": t.logprob, "bytes": t.piece});
    probs
        .iter()
        .map(|t| {
            json!({
                "token": text(t),
                "logprob": t.logprob,
                "bytes": t.piece,
                "top_logprobs": t.top.iter().map(entry).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// How many characters the tokens' text holds (OpenAI's `text_offset`
/// counts characters).
pub fn text_len(probs: &[pb::TokenLogprob]) -> usize {
    probs.iter().map(|t| text(t).chars().count()).sum()
}

/// OpenAI text completions' `logprobs`; `offset` is where these tokens'
/// text starts in the whole answer, in characters (for `text_offset`).
pub fn text_completion(probs: &[pb::TokenLogprob], offset: usize) -> Value {
    let mut at = offset;
    let mut offsets = Vec::with_capacity(probs.len());
    for t in probs {
        offsets.push(at);
        at += text(t).chars().count();
    }
    let top: Vec<Value> = probs
        .iter()
        .map(|t| {
            let map: Map<String, Value> =
                t.top.iter().map(|a| (text(a), json!(a.logprob))).collect();
            Value::Object(map)
        })
        .collect();
    json!({
        "tokens": probs.iter().map(text).collect::<Vec<_>>(),
        "token_logprobs": probs.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": offsets,
    })
}

/// llama-server's `completion_probabilities`.
pub fn llama_server(probs: &[pb::TokenLogprob]) -> Value {
    let entry = |t: &pb::TokenLogprob| json!({"id": t.id, "token": text(t), "bytes": t.piece, "logprob": t.logprob});
    probs
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "token": text(t),
                "bytes": t.piece,
                "logprob": t.logprob,
                "top_logprobs": t.top.iter().map(entry).collect::<Vec<_>>(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: i32, piece: &str, logprob: f32, top: Vec<pb::TokenLogprob>) -> pb::TokenLogprob {
        pb::TokenLogprob {
            id,
            piece: piece.as_bytes().to_vec(),
            logprob,
            top,
        }
    }

    #[test]
    fn requests_and_answers_have_each_apis_shape() {
        assert_eq!(requested(None, None).unwrap(), None);
        assert_eq!(requested(Some(&json!(true)), Some(3)).unwrap(), Some(3));
        assert_eq!(requested(Some(&json!(true)), None).unwrap(), Some(0));
        assert_eq!(requested(Some(&json!(2)), None).unwrap(), Some(2));
        assert!(requested(None, Some(2)).is_err());
        assert!(requested(Some(&json!(true)), Some(21)).is_err());
        assert!(requested(Some(&json!("yes")), None).is_err());
        let probs = [
            token(
                1,
                "Hi",
                -0.5,
                vec![token(1, "Hi", -0.5, vec![]), token(2, "Yo", -1.5, vec![])],
            ),
            token(3, " there", -0.25, vec![]),
        ];
        let chat = chat_content(&probs);
        assert_eq!(chat[0]["token"], "Hi");
        assert_eq!(chat[0]["bytes"], json!([72, 105]));
        assert_eq!(chat[0]["top_logprobs"][1]["token"], "Yo");
        let text = text_completion(&probs, 4);
        assert_eq!(text["text_offset"], json!([4, 6]));
        assert_eq!(text["top_logprobs"][0]["Yo"], json!(-1.5));
        assert_eq!(text["tokens"], json!(["Hi", " there"]));
        assert_eq!(llama_server(&probs)[1]["id"], 3);
    }
}
