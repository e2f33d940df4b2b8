//! A generation that holds a sequence of the decode loop: its sampler,
//! where it stands in its prompt, what the sequence's KV holds, and how it
//! reports its pieces and its end.

use std::time::Instant;

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::logprobs::TokenLogprob;
use super::text::TextStream;
use super::{Finish, GenerateJob, Piece, Usage};

/// A request holding a sequence.
pub(super) struct Active {
    pub(super) seq: i32,
    pub(super) job: GenerateJob,
    pub(super) sampler: LlamaSampler,
    /// The request's grammar, applied before `sampler` and checked: a
    /// grammar that allows no token ends the request (llama.cpp would
    /// abort the worker on accepting a token it forbids).
    pub(super) grammar: Option<LlamaSampler>,
    /// Prompt tokens already in the batch (or in the KV, from an earlier request).
    pub(super) fed: usize,
    /// Prompt tokens whose KV an earlier request left.
    pub(super) cached: usize,
    /// The tokens whose KV the sequence holds, in order: kept for the next
    /// request when this one ends. Their count is the next token's position.
    pub(super) held: Vec<LlamaToken>,
    /// Sampled and not yet decoded.
    pub(super) next: Option<LlamaToken>,
    /// Where its logits are in the current batch.
    pub(super) logits_at: Option<i32>,
    /// Has tokens in the current batch.
    pub(super) in_batch: bool,
    pub(super) generated: u32,
    pub(super) text: TextStream,
    pub(super) ids: Vec<i32>,
    /// The log-probabilities of `ids`, when asked for.
    pub(super) probs: Vec<TokenLogprob>,
    pub(super) first_token: Option<Instant>,
}

impl Active {
    /// Position of the next token in the sequence.
    pub(super) fn pos(&self) -> i32 {
        i32::try_from(self.held.len()).unwrap_or(i32::MAX)
    }

    pub(super) fn usage(&self) -> Usage {
        let prompt_tokens = u32::try_from(self.job.request.prompt.len()).unwrap_or(u32::MAX);
        let (ttft, tps) = match self.first_token {
            Some(first) => {
                let after = first.elapsed().as_secs_f64();
                let rest = f64::from(self.generated.saturating_sub(1));
                let tps = if after > 0.0 { rest / after } else { 0.0 };
                (
                    first.saturating_duration_since(self.job.request.received),
                    tps,
                )
            }
            None => (self.job.request.received.elapsed(), 0.0),
        };
        Usage {
            prompt_tokens,
            cached_tokens: u32::try_from(self.cached).unwrap_or(u32::MAX),
            completion_tokens: self.generated,
            time_to_first_token: ttft,
            tokens_per_second: tps,
        }
    }

    /// Sends the last piece; the client may have gone, which is fine. The
    /// request's admission place is given back first: a client that sends
    /// its next request as soon as this one ends must not find it taken.
    pub(super) fn finish(&mut self, finish: Finish, tail: String) {
        drop(self.job.admitted.take());
        let usage = self.usage();
        let _ = self.job.pieces.send(Piece {
            text: tail,
            token_ids: std::mem::take(&mut self.ids),
            logprobs: std::mem::take(&mut self.probs),
            finish: Some((finish, usage)),
        });
    }
}
