//! Log-probabilities of generated tokens, for clients that ask for them
//! (OpenAI's `logprobs`/`top_logprobs`, llama-server's `n_probs`): the
//! log-softmax of the model's raw logits at the step that sampled the token,
//! before any sampler reshaped them, with the most likely alternatives.

/// Most alternatives a request may ask for per token (OpenAI's bound).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// One token's log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token id.
    pub id: i32,
    /// Its bytes as the model writes them (not always valid UTF-8 alone).
    pub piece: Vec<u8>,
    /// Natural log of its probability.
    pub logprob: f32,
    /// The most likely tokens at that step, most likely first (empty for
    /// an alternative itself).
    pub top: Vec<TokenLogprob>,
}

/// The sampled token's log-probability and the `top` (at most
/// [`MAX_TOP_LOGPROBS`]) most likely ids with theirs, from a step's logits.
pub fn of(logits: &[f32], chosen: i32, top: usize) -> (f32, Vec<(i32, f32)>) {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits
        .iter()
        .filter(|l| l.is_finite())
        .map(|l| f64::from(l - max).exp())
        .sum();
    let norm = max + sum.ln() as f32;
    let logprob = |logit: f32| {
        if logit.is_finite() {
            logit - norm
        } else {
            f32::NEG_INFINITY
        }
    };
    let chosen_lp = usize::try_from(chosen)
        .ok()
        .and_then(|i| logits.get(i))
        .map_or(f32::NEG_INFINITY, |l| logprob(*l));
    let top = top.min(MAX_TOP_LOGPROBS as usize);
    // The `top` largest, kept sorted (most likely first): a scan of the
    // vocabulary with at most `top` insertions into a short vector.
    let mut best: Vec<(i32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (id, logit) in (0_i32..).zip(logits.iter().copied()) {
            if !logit.is_finite() {
                continue;
            }
            if best.len() == top && best.last().is_some_and(|(_, l)| *l >= logit) {
                continue;
            }
            let at = best.partition_point(|(_, l)| *l >= logit);
            best.insert(at, (id, logit));
            best.truncate(top);
        }
    }
    let best = best.into_iter().map(|(id, l)| (id, logprob(l))).collect();
    (chosen_lp, best)
}

/// The sampled token's entry, with its `top` alternatives; `piece_of`
/// gives an alternative's bytes.
pub fn entry(
    logits: &[f32],
    chosen: i32,
    piece: Vec<u8>,
    top: u32,
    piece_of: impl Fn(i32) -> Vec<u8>,
) -> TokenLogprob {
    let (logprob, best) = of(logits, chosen, top as usize);
    TokenLogprob {
        id: chosen,
        piece,
        logprob,
        top: best
            .into_iter()
            .map(|(id, logprob)| TokenLogprob {
                id,
                piece: piece_of(id),
                logprob,
                top: Vec::new(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_with_the_most_likely_first() {
        let logits = [1.0_f32, 3.0, 2.0, f32::NEG_INFINITY, 0.5];
        let (chosen, top) = of(&logits, 2, 3);
        let probs: f32 = logits
            .iter()
            .filter(|l| l.is_finite())
            .map(|l| l.exp())
            .sum();
        assert!((chosen - (2.0_f32.exp() / probs).ln()).abs() < 1e-5);
        let ids: Vec<i32> = top.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 2, 0]);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(top.iter().all(|(_, lp)| *lp <= 0.0));
        let total: f32 = of(&logits, 0, 20).1.iter().map(|(_, lp)| lp.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert_eq!(
            of(&logits, 0, 20).1.len(),
            4,
            "a masked token is no alternative"
        );
        assert!(of(&logits, 0, 0).1.is_empty());
        assert_eq!(of(&logits, 99, 1).0, f32::NEG_INFINITY);
        let e = entry(&logits, 1, b"b".to_vec(), 2, |id| vec![b'a' + id as u8]);
        assert_eq!((e.id, e.piece.as_slice(), e.top.len()), (1, &b"b"[..], 2));
        assert_eq!(e.top[0].piece, b"b");
        assert_eq!(e.top[0].logprob, e.logprob);
    }
}
