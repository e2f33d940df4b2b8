//! Pooled embeddings on a context of their own, created on first use so that
//! models never asked for embeddings pay nothing for it, and the embedding
//! requests in progress, run a bounded slice per decode step.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::progress::Progress;
use super::{EmbedJob, EngineError};
use crate::params::ModelParams;

/// Embeds inputs one at a time, each in one decode (pooling needs a whole
/// input in one batch) of at most [`max_input_tokens`] tokens.
pub(super) struct Embedder<'m> {
    backend: &'m LlamaBackend,
    model: &'m LlamaModel,
    config: ModelParams,
    ctx: Option<LlamaContext<'m>>,
    progress: &'m Progress,
}

impl<'m> Embedder<'m> {
    pub(super) fn new(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        config: ModelParams,
        progress: &'m Progress,
    ) -> Self {
        Embedder {
            backend,
            model,
            config,
            ctx: None,
            progress,
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
            let n = max_input_tokens(self.config);
            let threads = super::llama_threads(self.config.threads);
            let params = LlamaContextParams::default()
                .with_embeddings(true)
                .with_pooling_type(self.pooling())
                .with_n_ctx(super::non_zero(n))
                .with_n_batch(n)
                .with_n_ubatch(n)
                .with_n_seq_max(1)
                .with_n_threads(threads)
                .with_n_threads_batch(threads);
            // Created on the first request: the start-up limit applies.
            self.progress.warming(true);
            let ctx = self.model.new_context(self.backend, params);
            self.progress.warming(false);
            let ctx = ctx.map_err(|e| {
                EngineError::Unsupported(format!("this model cannot compute embeddings: {e}"))
            })?;
            self.ctx = Some(ctx);
        }
        self.ctx.as_mut().ok_or(EngineError::Stopped)
    }

    /// The vector of one input (1 ..= `ctx_size` tokens, checked by [`EmbedTask::new`]).
    fn embed_one(
        &mut self,
        tokens: &[LlamaToken],
        normalize: bool,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.context()?;
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
        Ok(vector)
    }
}

/// Most tokens of one embedding input: `batch_size` (and the context), the
/// same bound as every other decode step, as llama-server has it.
fn max_input_tokens(config: ModelParams) -> u32 {
    config.batch_size.min(config.ctx_size).max(1)
}

/// An embedding request in progress. The decode loop runs it one input at
/// a time between generation steps, so a batch of thousands of
/// inputs neither stalls the streams nor holds the engine past a liveness step.
pub(super) struct EmbedTask {
    job: EmbedJob,
    done: Vec<Vec<f32>>,
}

impl EmbedTask {
    /// Checks every input up front (no work is wasted on a batch that is
    /// refused at its last input); a refused job is answered here.
    pub(super) fn new(job: EmbedJob, config: ModelParams) -> Option<Self> {
        let limit = usize::try_from(max_input_tokens(config)).unwrap_or(usize::MAX);
        let refusal = if let Some(long) = job.inputs.iter().find(|i| i.len() > limit) {
            Some(format!(
                "an input has {} tokens; embedding inputs are at most {limit} tokens (config keys batch_size and ctx_size)",
                long.len()
            ))
        } else if job.inputs.iter().any(Vec::is_empty) {
            Some("an input has no tokens".to_owned())
        } else {
            None
        };
        if let Some(why) = refusal {
            let _ = job.reply.send(Err(EngineError::InvalidRequest(why)));
            return None;
        }
        let done = Vec::with_capacity(job.inputs.len());
        Some(EmbedTask { job, done })
    }

    /// The client is gone: no point going on.
    pub(super) fn cancelled(&self) -> bool {
        self.job.reply.is_closed()
    }

    /// Embeds the next input: one decode, at most `batch_size` tokens (each
    /// input is its own decode anyway, so going one at a time costs nothing
    /// and lets a generation step run between any two). Returns the task
    /// while inputs remain; once all are done or one fails, the reply is sent
    /// and None returned.
    pub(super) fn step(mut self, embedder: &mut Embedder<'_>) -> Option<Self> {
        if let Some(tokens) = self.job.inputs.get(self.done.len()) {
            match embedder.embed_one(tokens, self.job.normalize) {
                Ok(vector) => self.done.push(vector),
                Err(e) => {
                    let _ = self.job.reply.send(Err(e));
                    return None;
                }
            }
            if self.done.len() < self.job.inputs.len() {
                return Some(self);
            }
        }
        let _ = self.job.reply.send(Ok(self.done));
        None
    }
}
