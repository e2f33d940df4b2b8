//! Which sequence a new request takes, and how much of its prompt that
//! sequence's KV cache already holds (llama-server's `cache_prompt`).
//!
//! A request that ends leaves its tokens' KV in its sequence. The next
//! request takes the free sequence whose kept tokens share the longest
//! prefix with its prompt, if that prefix is more than a tenth of the
//! prompt (llama-server's `--slot-prompt-similarity` 0.1), else the free
//! sequence used least recently, and evaluates only what follows the shared
//! prefix. A client that sends the same system prompt, or a conversation
//! one turn longer, pays for the new tokens only.
//!
//! [`PromptCache`] is plain state, tested directly; [`trim`] removes the KV
//! past the prefix, or all of it when llama.cpp cannot keep the prefix.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;

/// The part of the prompt a kept prefix must cover to choose its sequence
/// over the least recently used one.
const SIMILARITY: f64 = 0.1;

/// The tokens each sequence's KV holds, and when each was last used.
#[derive(Debug)]
pub(super) struct PromptCache {
    seqs: Vec<Kept>,
    clock: u64,
}

#[derive(Debug, Default)]
struct Kept {
    tokens: Vec<LlamaToken>,
    /// 0: never used.
    used: u64,
}

/// The sequence a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Choice {
    /// Its index.
    pub seq: usize,
    /// Prompt tokens whose KV it holds already; always short of the whole
    /// prompt, since the last prompt token's logits start the answer.
    pub reuse: usize,
}

impl PromptCache {
    /// `n` sequences, all empty.
    pub fn new(n: usize) -> Self {
        PromptCache {
            seqs: (0..n).map(|_| Kept::default()).collect(),
            clock: 0,
        }
    }

    /// The sequence among `free` for `prompt`; `reuse` stays 0 unless
    /// `cache` (the request may share a prefix). None when nothing is free.
    pub fn choose(
        &self,
        free: impl IntoIterator<Item = usize>,
        prompt: &[LlamaToken],
        cache: bool,
    ) -> Option<Choice> {
        // (sequence, tokens it shares with the prompt)
        let mut best: Option<(usize, usize)> = None;
        // (sequence, tokens it shares, when it was last used)
        let mut oldest: Option<(usize, usize, u64)> = None;
        for seq in free {
            let Some(kept) = self.seqs.get(seq) else {
                continue;
            };
            let shared = common_prefix(&kept.tokens, prompt);
            if oldest.is_none_or(|(_, _, used)| kept.used < used) {
                oldest = Some((seq, shared, kept.used));
            }
            if best.is_none_or(|(_, n)| shared > n) {
                best = Some((seq, shared));
            }
        }
        let similar = |&(_, shared): &(usize, usize)| {
            cache && shared as f64 > SIMILARITY * prompt.len() as f64
        };
        let (seq, shared) = best
            .filter(similar)
            .or(oldest.map(|(seq, shared, _)| (seq, shared)))?;
        Some(Choice {
            seq,
            reuse: if cache {
                shared.min(prompt.len().saturating_sub(1))
            } else {
                0
            },
        })
    }

    /// The tokens `seq` holds, handed to the request that takes it.
    pub fn take(&mut self, seq: usize) -> Vec<LlamaToken> {
        self.seqs
            .get_mut(seq)
            .map_or_else(Vec::new, |kept| std::mem::take(&mut kept.tokens))
    }

    /// A request in `seq` ended (now: the sequence was last used when its
    /// request ended, not when it began) and its KV holds `tokens`.
    pub fn keep(&mut self, seq: usize, tokens: Vec<LlamaToken>) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(kept) = self.seqs.get_mut(seq) {
            kept.tokens = tokens;
            kept.used = clock;
        }
    }
}

/// Cuts `seq`'s KV to its first `reuse` tokens and says how many it kept:
/// `reuse`, or 0 (the sequence emptied) where llama.cpp cannot keep a prefix
/// (a recurrent model) or has dropped part of it (a sliding-window cache
/// whose oldest cells were overwritten).
pub(super) fn trim(ctx: &mut LlamaContext<'_>, seq: usize, reuse: usize) -> usize {
    let (Ok(id), Ok(from)) = (i32::try_from(seq), u32::try_from(reuse)) else {
        return 0;
    };
    let whole = |ctx: &mut LlamaContext<'_>| {
        let _ = ctx.clear_kv_cache_seq(u32::try_from(id).ok(), None, None);
        0
    };
    if reuse == 0 || ctx.kv_cache_seq_pos_min(id) != 0 {
        return whole(ctx);
    }
    match ctx.clear_kv_cache_seq(u32::try_from(id).ok(), Some(from), None) {
        Ok(true) => reuse,
        _ => whole(ctx),
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().copied().map(LlamaToken::new).collect()
    }

    #[test]
    fn the_same_prompt_again_reuses_all_but_its_last_token() {
        let mut cache = PromptCache::new(2);
        let prompt = tokens(&[1, 2, 3, 4]);
        let first = cache.choose([0, 1], &prompt, true).unwrap();
        assert_eq!(first, Choice { seq: 0, reuse: 0 });
        let mut held = cache.take(0);
        held.extend(prompt.iter().copied().chain(tokens(&[9, 9])));
        cache.keep(0, held);
        assert_eq!(
            cache.choose([0, 1], &prompt, true),
            Some(Choice { seq: 0, reuse: 3 })
        );
        // Asked not to: the least recently used sequence, nothing reused.
        assert_eq!(
            cache.choose([0, 1], &prompt, false),
            Some(Choice { seq: 1, reuse: 0 })
        );
    }

    #[test]
    fn the_longest_shared_prefix_wins_and_a_small_one_does_not_count() {
        let mut cache = PromptCache::new(3);
        // Sequence 2 is the least recently used.
        for (seq, kept) in [(2, vec![5]), (0, vec![1, 2, 7]), (1, vec![1, 2, 3, 4, 8])] {
            cache.take(seq);
            cache.keep(seq, tokens(&kept));
        }
        let prompt = tokens(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            cache.choose([0, 1, 2], &prompt, true),
            Some(Choice { seq: 1, reuse: 4 })
        );
        // A busy sequence is not offered, whatever it holds; 2 of 6 shared
        // beats the least recently used.
        assert_eq!(
            cache.choose([0, 2], &prompt, true),
            Some(Choice { seq: 0, reuse: 2 })
        );
        // 1 token of 20 is under a tenth: the least recently used instead.
        let long: Vec<LlamaToken> = tokens(&[1]).into_iter().chain(tokens(&[0; 19])).collect();
        assert_eq!(
            cache.choose([0, 2], &long, true),
            Some(Choice { seq: 2, reuse: 0 })
        );
        assert_eq!(cache.choose([], &prompt, true), None);
    }

    #[test]
    fn empty_sequences_go_first_then_the_least_recently_used() {
        let mut cache = PromptCache::new(3);
        let prompt = tokens(&[4, 4]);
        for expected in [0, 1, 2] {
            let choice = cache.choose([0, 1, 2], &prompt, true).unwrap();
            assert_eq!(choice.seq, expected);
            cache.take(choice.seq);
            cache.keep(choice.seq, tokens(&[expected as i32 + 10]));
        }
        cache.take(0);
        cache.keep(0, tokens(&[10]));
        assert_eq!(cache.choose([0, 1, 2], &prompt, true).unwrap().seq, 1);
    }

    #[test]
    fn a_one_token_prompt_reuses_nothing() {
        let mut cache = PromptCache::new(1);
        cache.take(0);
        cache.keep(0, tokens(&[3]));
        assert_eq!(
            cache.choose([0], &tokens(&[3]), true),
            Some(Choice { seq: 0, reuse: 0 })
        );
    }
}
