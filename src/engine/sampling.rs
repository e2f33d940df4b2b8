//! Sampling settings: the request's fields with defaults filled in, checked,
//! and turned into a llama.cpp sampler chain.

use llama_cpp_2::sampling::LlamaSampler;

use super::EngineError;
use crate::params::SamplingSettings;

/// What a request asks of sampling; an unset field takes the model's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplingRequest {
    /// 0 = greedy.
    pub temperature: Option<f32>,
    /// 0 = off.
    pub top_k: Option<i32>,
    /// 1 = off.
    pub top_p: Option<f32>,
    /// 0 = off.
    pub min_p: Option<f32>,
    /// 1 = off.
    pub repeat_penalty: Option<f32>,
    /// 0 = off.
    pub presence_penalty: Option<f32>,
    /// 0 = off.
    pub frequency_penalty: Option<f32>,
    /// Tokens the penalties look back over (-1: the whole context).
    pub penalty_last_n: Option<i32>,
    /// Seed of the random choice (unset: a random one).
    pub seed: Option<u32>,
}

/// Sampling settings with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: i32,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off.
    pub repeat_penalty: f32,
    /// 0 = off.
    pub presence_penalty: f32,
    /// 0 = off.
    pub frequency_penalty: f32,
    /// Tokens the penalties look back over.
    pub penalty_last_n: i32,
    /// Seed of the random choice.
    pub seed: u32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
        }
    }
}

impl Sampling {
    /// The built-in defaults with a model's configured defaults over them.
    pub fn with_defaults(model: &SamplingSettings) -> Self {
        let d = Sampling::default();
        Sampling {
            temperature: model.temperature.unwrap_or(d.temperature),
            top_k: model.top_k.unwrap_or(d.top_k),
            top_p: model.top_p.unwrap_or(d.top_p),
            min_p: model.min_p.unwrap_or(d.min_p),
            repeat_penalty: model.repeat_penalty.unwrap_or(d.repeat_penalty),
            presence_penalty: model.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: model.frequency_penalty.unwrap_or(d.frequency_penalty),
            penalty_last_n: model.penalty_last_n.unwrap_or(d.penalty_last_n),
            seed: d.seed,
        }
    }

    /// Resolves a request's settings over `defaults` (the model's); `random_seed`
    /// is used when it sets none.
    pub fn from_request(
        params: Option<&SamplingRequest>,
        random_seed: u32,
        defaults: &Sampling,
    ) -> Result<Self, EngineError> {
        let d = defaults.clone();
        let Some(p) = params else {
            let s = Sampling {
                seed: random_seed,
                ..d
            };
            s.check()?;
            return Ok(s);
        };
        let s = Sampling {
            temperature: p.temperature.unwrap_or(d.temperature),
            top_k: p.top_k.unwrap_or(d.top_k),
            top_p: p.top_p.unwrap_or(d.top_p),
            min_p: p.min_p.unwrap_or(d.min_p),
            repeat_penalty: p.repeat_penalty.unwrap_or(d.repeat_penalty),
            presence_penalty: p.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: p.frequency_penalty.unwrap_or(d.frequency_penalty),
            penalty_last_n: p.penalty_last_n.unwrap_or(d.penalty_last_n),
            seed: p.seed.unwrap_or(random_seed),
        };
        s.check()?;
        Ok(s)
    }

    /// Refuses out-of-range settings, naming the field (requests and configured defaults alike).
    pub fn check(&self) -> Result<(), EngineError> {
        let bad = |what: String| Err(EngineError::InvalidRequest(what));
        let finite = [
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("min_p", self.min_p),
            ("repeat_penalty", self.repeat_penalty),
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ];
        if let Some((name, v)) = finite.iter().find(|(_, v)| !v.is_finite()) {
            return bad(format!("{name} must be a finite number, not {v}"));
        }
        if self.temperature < 0.0 {
            return bad(format!(
                "temperature must be 0 (greedy) or more, not {}",
                self.temperature
            ));
        }
        if self.top_k < 0 {
            return bad(format!("top_k must be 0 (off) or more, not {}", self.top_k));
        }
        if !(0.0..=1.0).contains(&self.top_p) || !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!(
                "top_p and min_p must lie in [0, 1], not {} and {}",
                self.top_p, self.min_p
            ));
        }
        if self.repeat_penalty <= 0.0 {
            return bad(format!(
                "repeat_penalty must be above 0 (1 is off), not {}",
                self.repeat_penalty
            ));
        }
        if self.penalty_last_n < -1 {
            return bad(format!(
                "penalty_last_n must be -1 (whole context), 0 (off) or more, not {}",
                self.penalty_last_n
            ));
        }
        Ok(())
    }

    /// Whether every token is the most likely one.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Whether the chain has the penalties sampler.
    fn is_penalised(&self) -> bool {
        let any = self.repeat_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0;
        any && self.penalty_last_n != 0
    }

    /// Greedy with nothing before it in the chain: the token is the argmax
    /// of the logits ([`argmax`]), with no candidate array to build.
    pub fn is_plain_greedy(&self) -> bool {
        self.is_greedy() && !self.is_penalised()
    }

    /// Tokens the penalties look back over in a context of `ctx_size`: -1
    /// (the whole context) and anything longer are the context. llama.cpp
    /// allocates its window up front, so an unclamped `i32::MAX` would ask
    /// for 8 GiB (and -1 would silently turn the penalties off).
    pub fn penalty_window(&self, ctx_size: u32) -> i32 {
        let ctx = i32::try_from(ctx_size).unwrap_or(i32::MAX);
        if self.penalty_last_n < 0 || self.penalty_last_n > ctx {
            ctx
        } else {
            self.penalty_last_n
        }
    }

    /// The llama.cpp sampler chain, in llama-server's order, for a sequence
    /// whose context holds `ctx_size` tokens.
    pub fn sampler(&self, n_vocab: i32, ctx_size: u32) -> LlamaSampler {
        let mut chain = Vec::new();
        if self.is_penalised() {
            chain.push(LlamaSampler::penalties(
                n_vocab,
                self.penalty_window(ctx_size),
                self.repeat_penalty,
                self.frequency_penalty,
                self.presence_penalty,
            ));
        }
        if self.is_greedy() {
            chain.push(LlamaSampler::greedy());
            return LlamaSampler::chain_simple(chain);
        }
        if self.top_k > 0 {
            chain.push(LlamaSampler::top_k(self.top_k));
        }
        if self.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(self.top_p, 1));
        }
        if self.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(self.min_p, 1));
        }
        chain.push(LlamaSampler::temp(self.temperature));
        chain.push(LlamaSampler::dist(self.seed));
        LlamaSampler::chain_simple(chain)
    }
}

/// The token llama.cpp's greedy sampler picks from `logits`: the first of
/// the largest (NaN never wins). Its sampler first copies the whole vocabulary
/// into a candidate array and then scans it with a carried index, about four
/// times the time of this pass (per sequence, per step, on the decode thread
/// while the other compute threads wait): lanes keep their own maxima, so
/// the scan vectorises, and a second pass finds where the largest is.
pub fn argmax(logits: &[f32]) -> usize {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (best, &x) in lanes.iter_mut().zip(chunk) {
            if x > *best {
                *best = x;
            }
        }
    }
    let largest = lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a });
    logits.iter().position(|&x| x == largest).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's greedy scan (`llama_sampler_greedy_apply`), as it is.
    fn greedy_scan(logits: &[f32]) -> usize {
        let mut selected = 0;
        for (i, &x) in logits.iter().enumerate().skip(1) {
            if logits.get(selected).is_some_and(|&best| x > best) {
                selected = i;
            }
        }
        selected
    }

    #[test]
    fn argmax_picks_what_the_greedy_sampler_picks() {
        let mut state = 0x2545_f491_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            // Few distinct values, so ties are common.
            f32::from(u16::try_from((state >> 33) % 97).unwrap_or(0)) - 40.0
        };
        for len in [1, 2, 15, 16, 17, 31, 262_144, 262_145] {
            let logits: Vec<f32> = (0..len).map(|_| next()).collect();
            assert_eq!(argmax(&logits), greedy_scan(&logits), "length {len}");
        }
        // The first of equal largest ones, wherever the lanes put them.
        let mut ties = vec![0.0_f32; 100];
        ties[37] = 5.0;
        ties[21] = 5.0;
        ties[99] = 5.0;
        assert_eq!(argmax(&ties), 21);
        // The largest in the tail after the last full lane chunk.
        let mut tail = vec![-1.0_f32; 35];
        tail[34] = 2.0;
        assert_eq!(argmax(&tail), 34);
        // NaN is never chosen over a number; all -inf is the first token.
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN, 3.0, 2.0]), 3);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 40]), 0);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn only_an_unpenalised_greedy_chain_is_plain() {
        let greedy = Sampling {
            temperature: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            ..Sampling::default()
        };
        assert!(greedy.is_plain_greedy());
        let penalised = Sampling {
            repeat_penalty: 1.1,
            ..greedy.clone()
        };
        assert!(!penalised.is_plain_greedy());
        // A penalty over no tokens is no penalty: llama.cpp gets none.
        let windowless = Sampling {
            penalty_last_n: 0,
            ..penalised
        };
        assert!(windowless.is_plain_greedy());
        let sampled = Sampling {
            temperature: 0.8,
            ..greedy
        };
        assert!(!sampled.is_plain_greedy());
    }

    #[test]
    fn the_penalty_window_never_exceeds_the_context() {
        let window = |n| {
            Sampling {
                penalty_last_n: n,
                ..Sampling::default()
            }
            .penalty_window(4096)
        };
        assert_eq!(window(64), 64);
        assert_eq!(window(0), 0);
        assert_eq!(window(-1), 4096);
        assert_eq!(window(i32::MAX), 4096);
    }

    #[test]
    fn unset_fields_take_the_defaults_and_the_random_seed() {
        let s = Sampling::from_request(None, 7, &Sampling::default()).unwrap();
        assert_eq!(
            s,
            Sampling {
                seed: 7,
                ..Sampling::default()
            }
        );
        let p = SamplingRequest {
            temperature: Some(0.0),
            seed: Some(42),
            ..Default::default()
        };
        let s = Sampling::from_request(Some(&p), 7, &Sampling::default()).unwrap();
        assert!(s.is_greedy());
        assert_eq!((s.seed, s.top_k), (42, 40));
    }

    #[test]
    fn out_of_range_settings_are_refused_with_the_field_named() {
        let cases = [
            (
                SamplingRequest {
                    temperature: Some(-1.0),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingRequest {
                    temperature: Some(f32::NAN),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingRequest {
                    top_k: Some(-3),
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SamplingRequest {
                    top_p: Some(1.5),
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingRequest {
                    repeat_penalty: Some(0.0),
                    ..Default::default()
                },
                "repeat_penalty",
            ),
            (
                SamplingRequest {
                    penalty_last_n: Some(-2),
                    ..Default::default()
                },
                "penalty_last_n",
            ),
        ];
        for (params, field) in cases {
            let err = Sampling::from_request(Some(&params), 0, &Sampling::default()).unwrap_err();
            assert!(
                matches!(&err, EngineError::InvalidRequest(m) if m.contains(field)),
                "{params:?}: {err}"
            );
        }
    }
}
