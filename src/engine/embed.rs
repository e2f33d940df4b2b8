//! Pooled embeddings on a context of their own, created on first use so that
//! models never asked for embeddings pay nothing for it.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::{EngineConfig, EngineError};

/// Embeds inputs one at a time (each fits one batch of `ctx_size` tokens).
pub(super) struct Embedder<'m> {
    backend: &'m LlamaBackend,
    model: &'m LlamaModel,
    config: EngineConfig,
    ctx: Option<LlamaContext<'m>>,
}

impl<'m> Embedder<'m> {
    pub(super) fn new(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        config: EngineConfig,
    ) -> Self {
        Embedder {
            backend,
            model,
            config,
            ctx: None,
        }
    }

    /// The pooling the model declares (`<arch>.pooling_type`), else mean.
    fn pooling(&self) -> LlamaPoolingType {
        let declared = self
            .model
            .meta_val_str("general.architecture")
            .ok()
            .and_then(|arch| {
                self.model
                    .meta_val_str(&format!("{arch}.pooling_type"))
                    .ok()
            });
        match declared {
            Some(_) => LlamaPoolingType::Unspecified,
            None => LlamaPoolingType::Mean,
        }
    }

    fn context(&mut self) -> Result<&mut LlamaContext<'m>, EngineError> {
        if self.ctx.is_none() {
            let n = self.config.ctx_size;
            let params = LlamaContextParams::default()
                .with_embeddings(true)
                .with_pooling_type(self.pooling())
                .with_n_ctx(super::non_zero(n))
                .with_n_batch(n)
                .with_n_ubatch(n)
                .with_n_seq_max(1)
                .with_n_threads(self.config.threads)
                .with_n_threads_batch(self.config.threads);
            let ctx = self.model.new_context(self.backend, params).map_err(|e| {
                EngineError::Unsupported(format!("this model cannot compute embeddings: {e}"))
            })?;
            self.ctx = Some(ctx);
        }
        self.ctx.as_mut().ok_or(EngineError::Stopped)
    }

    /// One vector per input, in order.
    pub(super) fn embed(
        &mut self,
        inputs: &[Vec<LlamaToken>],
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let limit = usize::try_from(self.config.ctx_size).unwrap_or(usize::MAX);
        if let Some(long) = inputs.iter().find(|i| i.len() > limit) {
            return Err(EngineError::InvalidRequest(format!(
                "an input has {} tokens; embeddings take at most {limit} (--ctx-size)",
                long.len()
            )));
        }
        let ctx = self.context()?;
        let mut out = Vec::with_capacity(inputs.len());
        for tokens in inputs {
            if tokens.is_empty() {
                return Err(EngineError::InvalidRequest(
                    "an input has no tokens".to_owned(),
                ));
            }
            ctx.clear_kv_cache();
            let mut batch = LlamaBatch::new(tokens.len(), 1);
            batch
                .add_sequence(tokens, 0, true)
                .map_err(|e| EngineError::Llama(format!("embedding batch: {e}")))?;
            ctx.decode(&mut batch)
                .map_err(|e| EngineError::Llama(format!("embedding decode failed: {e}")))?;
            let vector = ctx.embeddings_seq_ith(0).map_err(|_| {
                EngineError::Unsupported(
                    "this model gives no pooled embeddings (pooling type none)".to_owned(),
                )
            })?;
            let mut vector = vector.to_vec();
            if normalize {
                let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm > 0.0 {
                    vector.iter_mut().for_each(|v| *v /= norm);
                }
            }
            out.push(vector);
        }
        Ok(out)
    }
}
