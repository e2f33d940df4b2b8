//! How much VRAM a model needs for a number of offloaded layers: the
//! weights of those layers (and of the output layer when every layer goes),
//! their KV cache for the configured context and slots, and a compute-buffer
//! overhead. Read from the GGUF header alone.

use crate::gguf::{GgufModel, Value};
use crate::params::CacheType;

/// Compute buffers and driver allocations that do not scale with the model.
const OVERHEAD_BASE: u64 = 256 << 20;

/// The shape facts the estimate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Repeating layers.
    pub block_count: u32,
    /// Bytes of each layer's weights (`blk.N.*`).
    pub layer_bytes: Vec<u64>,
    /// Bytes of the output layer (the tied embedding when there is no `output.weight`).
    pub output_bytes: u64,
    /// Key plus value elements per token per layer.
    pub kv_elements_per_token: u64,
    /// Vocabulary size (logits).
    pub n_vocab: u64,
}

impl Shape {
    /// The shape of `model`, or `None` when its metadata lacks what is needed.
    pub fn of(model: &GgufModel) -> Option<Shape> {
        let meta = model.metadata();
        let arch = meta.get_str("general.architecture")?;
        let key = |k: &str| meta.get_u64(&format!("{arch}.{k}"));
        let block_count = u32::try_from(key("block_count")?).ok()?;
        let n_embd = key("embedding_length")?;
        let n_head = key("attention.head_count").filter(|&h| h > 0)?;
        // An array of per-layer counts is not a u64: take the head count then.
        let n_head_kv = key("attention.head_count_kv").unwrap_or(n_head);
        let k_len = key("attention.key_length").unwrap_or(n_embd / n_head);
        let v_len = key("attention.value_length").unwrap_or(k_len);
        let mut layer_bytes = vec![0u64; usize::try_from(block_count).ok()?];
        let (mut output, mut embedding) = (0u64, 0u64);
        for (_, t) in model.tensors() {
            if let Some(rest) = t.name.strip_prefix("blk.") {
                let layer = rest.split('.').next().and_then(|n| n.parse::<usize>().ok());
                if let Some(bytes) = layer.and_then(|l| layer_bytes.get_mut(l)) {
                    *bytes = bytes.saturating_add(t.size);
                }
            } else if t.name.starts_with("output") {
                output = output.saturating_add(t.size);
            } else if t.name == "token_embd.weight" {
                embedding = t.size;
            }
        }
        if !model.tensors().any(|(_, t)| t.name == "output.weight") {
            output = output.saturating_add(embedding); // tied: llama.cpp copies it to the GPU
        }
        Some(Shape {
            block_count,
            layer_bytes,
            output_bytes: output,
            kv_elements_per_token: n_head_kv.saturating_mul(k_len.saturating_add(v_len)),
            n_vocab: match meta.get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens.len() as u64,
                _ => 0,
            },
        })
    }

    /// The most layers llama.cpp can offload (every block plus the output layer).
    pub fn max_layers(&self) -> u32 {
        self.block_count.saturating_add(1)
    }
}

/// The context the worker will run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Tokens of KV cache in all: `ctx_size × parallel`.
    pub tokens: u64,
    /// Tokens per decode step.
    pub batch: u64,
    /// K cache type.
    pub cache_k: CacheType,
    /// V cache type.
    pub cache_v: CacheType,
}

impl Context {
    /// The context a worker with these settings runs with.
    pub fn of(params: &crate::params::ModelParams) -> Self {
        Context {
            tokens: u64::from(params.ctx_size) * u64::from(params.parallel),
            batch: u64::from(params.batch_size),
            cache_k: params.cache_type_k,
            cache_v: params.cache_type_v,
        }
    }
}

/// Bytes per element of a cache type, in 32nds (block types pack 32 elements).
fn cache_32nds(t: CacheType) -> u64 {
    match t {
        CacheType::F32 => 128,
        CacheType::F16 => 64,
        CacheType::Q8_0 => 34,
        CacheType::Q5_1 => 24,
        CacheType::Q5_0 => 22,
        CacheType::Q4_1 => 20,
        CacheType::Q4_0 => 18,
    }
}

/// What a model needs on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Layers offloaded (llama.cpp's `n_gpu_layers`).
    pub layers: u32,
    /// Bytes of weights uploaded.
    pub weights_bytes: u64,
    /// Bytes of KV cache.
    pub kv_bytes: u64,
    /// Compute buffers.
    pub overhead_bytes: u64,
}

impl Estimate {
    /// Everything.
    pub fn total(&self) -> u64 {
        self.weights_bytes
            .saturating_add(self.kv_bytes)
            .saturating_add(self.overhead_bytes)
    }
}

/// The estimate for offloading `layers` (clamped to what the model has):
/// llama.cpp offloads the last blocks first, and the output layer only when
/// `layers` exceeds the block count.
pub fn estimate(shape: &Shape, context: Context, layers: u32) -> Estimate {
    let layers = layers.min(shape.max_layers());
    if layers == 0 {
        return Estimate {
            layers: 0,
            weights_bytes: 0,
            kv_bytes: 0,
            overhead_bytes: 0,
        };
    }
    let blocks = layers.min(shape.block_count) as usize;
    let mut weights: u64 = shape.layer_bytes.iter().rev().take(blocks).sum();
    if layers > shape.block_count {
        weights = weights.saturating_add(shape.output_bytes);
    }
    let per_token_32nds = shape
        .kv_elements_per_token
        .saturating_mul((cache_32nds(context.cache_k) + cache_32nds(context.cache_v)) / 2);
    let kv = per_token_32nds
        .saturating_mul(context.tokens)
        .saturating_mul(blocks as u64)
        / 32;
    let logits = context
        .batch
        .saturating_mul(shape.n_vocab)
        .saturating_mul(4);
    Estimate {
        layers,
        weights_bytes: weights,
        kv_bytes: kv,
        overhead_bytes: OVERHEAD_BASE.saturating_add(logits),
    }
}

/// The most layers whose estimate fits in `free` bytes (0 when none do).
pub fn fit(shape: &Shape, context: Context, free: u64) -> Estimate {
    (0..=shape.max_layers())
        .rev()
        .map(|layers| estimate(shape, context, layers))
        .find(|e| e.total() <= free)
        .unwrap_or(estimate(shape, context, 0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 4 layers of 100 MiB, a 50 MiB output, 1,024 KV elements per token.
    pub(crate) fn shape() -> Shape {
        Shape {
            block_count: 4,
            layer_bytes: vec![100 << 20; 4],
            output_bytes: 50 << 20,
            kv_elements_per_token: 1024,
            n_vocab: 1000,
        }
    }

    pub(crate) fn context() -> Context {
        Context {
            tokens: 4096,
            batch: 512,
            cache_k: CacheType::F16,
            cache_v: CacheType::F16,
        }
    }

    #[test]
    fn layers_weights_kv_and_overhead_add_up() {
        let e = estimate(&shape(), context(), 2);
        assert_eq!(e.weights_bytes, 200 << 20);
        // 1,024 elements × 2 bytes × 4,096 tokens × 2 layers.
        assert_eq!(e.kv_bytes, 1024 * 2 * 4096 * 2);
        assert_eq!(e.overhead_bytes, OVERHEAD_BASE + 512 * 1000 * 4);
        let all = estimate(&shape(), context(), u32::MAX);
        assert_eq!(all.layers, 5);
        assert_eq!(all.weights_bytes, (400 << 20) + (50 << 20));
        assert_eq!(estimate(&shape(), context(), 0).total(), 0);
        let q8 = Context {
            cache_k: CacheType::Q8_0,
            cache_v: CacheType::Q8_0,
            ..context()
        };
        assert_eq!(
            estimate(&shape(), q8, 4).kv_bytes,
            1024 * 34 * 4096 * 4 / 32
        );
    }

    #[test]
    fn fit_takes_the_most_layers_that_fit() {
        let full = estimate(&shape(), context(), 5).total();
        assert_eq!(fit(&shape(), context(), full).layers, 5);
        assert_eq!(fit(&shape(), context(), full - 1).layers, 4);
        let two = estimate(&shape(), context(), 2).total();
        assert_eq!(fit(&shape(), context(), two + 1).layers, 2);
        assert_eq!(fit(&shape(), context(), 1 << 20).layers, 0);
    }
}
