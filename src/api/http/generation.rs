//! What the API families share when they read the inference layer's
//! pieces: why a generation did not finish (every family says it in the same
//! words), and for the newer ones (Anthropic's Messages, OpenAI's Responses)
//! the next piece as text or the last one, a whole answer collected, unique
//! response ids and an SSE channel whose receiver is the response body.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use crate::inference::Pieces;
use crate::proto::pb::{self, FinishReason};

/// A stream that ended without its last piece: the worker went away.
pub fn worker_gone() -> ApiError {
    ApiError::unavailable("the generation ended without finishing (worker gone)")
}

/// Why a generation whose last piece did not finish it ended: cancelled
/// (the model is stopping) or failed (the worker's words).
pub fn piece_error(piece: &pb::GenerateResponse) -> ApiError {
    let message = match piece.finish_reason() {
        FinishReason::Cancelled => {
            "the generation was cancelled (the model is stopping)".to_owned()
        }
        _ => format!("generation failed: {}", piece.error),
    };
    ApiError::unavailable(message)
}

/// One step of a generation as a handler reads it.
#[derive(Debug)]
pub enum Next {
    /// More text (possibly empty).
    Text(String),
    /// The last piece, which ended with `Stop` or `Length`; its text is the tail.
    Last(pb::GenerateResponse),
}

/// The next step; a broken stream, a cancelled or failed generation is an error.
pub async fn next(pieces: &mut Pieces) -> Result<Next, ApiError> {
    let piece = match pieces.next().await {
        None => return Err(worker_gone()),
        Some(piece) => piece?,
    };
    match piece.finish_reason() {
        FinishReason::Unspecified => Ok(Next::Text(piece.text)),
        FinishReason::Stop | FinishReason::Length | FinishReason::ToolCalls => {
            Ok(Next::Last(piece))
        }
        FinishReason::Cancelled | FinishReason::Error => Err(piece_error(&piece)),
    }
}

/// The whole text and the last piece (finish reason, usage, stop string).
/// Dropped with the request when the client leaves, which cancels the generation.
pub async fn collect(mut pieces: Pieces) -> Result<(String, pb::GenerateResponse), ApiError> {
    let mut text = String::new();
    loop {
        match next(&mut pieces).await? {
            Next::Text(t) => text.push_str(&t),
            Next::Last(last) => {
                text.push_str(&last.text);
                return Ok((text, last));
            }
        }
    }
}

/// The prompt and generated token counts of the last piece.
pub fn counts(last: &pb::GenerateResponse) -> (u32, u32) {
    last.usage
        .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens))
}

/// A response id unique in this daemon's lifetime: `{prefix}{pid}{time}{n}` in hex.
pub fn response_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{prefix}{:x}{now:x}{:04x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where a streaming handler sends its events.
pub type EventSender = mpsc::Sender<Result<Event, Infallible>>;

/// An SSE response and the sender its events go through; the stream ends
/// when every sender is dropped. Comments keep an idle connection alive.
pub fn sse_channel() -> (EventSender, impl IntoResponse) {
    let (tx, rx) = mpsc::channel(32);
    (
        tx,
        Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()),
    )
}

/// Sends a named event with a JSON body; false once the client has left.
pub async fn send(tx: &EventSender, name: &str, data: &serde_json::Value) -> bool {
    tx.send(Ok(Event::default().event(name).data(data.to_string())))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_prefixed() {
        let (a, b) = (response_id("msg_"), response_id("msg_"));
        assert!(a.starts_with("msg_") && a != b, "{a} {b}");
        assert!(a.chars().skip(4).all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    fn stream(pieces: Vec<pb::GenerateResponse>) -> Pieces {
        Box::pin(tokio_stream::iter(pieces.into_iter().map(Ok)))
    }

    fn piece(text: &str, finish: FinishReason) -> pb::GenerateResponse {
        pb::GenerateResponse {
            text: text.into(),
            finish_reason: finish.into(),
            stop_sequence: if finish == FinishReason::Stop {
                "END".into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn collect_joins_text_and_keeps_the_last_piece() {
        let pieces = stream(vec![
            piece("a", FinishReason::Unspecified),
            piece("b", FinishReason::Stop),
        ]);
        let (text, last) = collect(pieces).await.unwrap();
        assert_eq!((text.as_str(), last.stop_sequence.as_str()), ("ab", "END"));
        let broken = stream(vec![piece("x", FinishReason::Unspecified)]);
        assert_eq!(collect(broken).await.unwrap_err().status.as_u16(), 503);
        assert!(
            collect(stream(vec![piece("", FinishReason::Error)]))
                .await
                .is_err()
        );
    }
}
