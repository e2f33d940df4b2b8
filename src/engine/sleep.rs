//! The engine's context: made at start, dropped when the worker is parked,
//! made again when it wakes. A parked engine keeps the model (weights,
//! vocabulary, CPU repacks) and frees its KV cache and compute buffers, so
//! waking costs one context and one warm-up decode instead of a model load.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::progress::Progress;
use super::{EngineError, Job};
use crate::params::ModelParams;

/// Answered once the context is gone.
pub(super) type ParkReply = oneshot::Sender<()>;

/// Answered once the context is back, or why it could not be made.
pub(super) type WakeReply = oneshot::Sender<Result<(), EngineError>>;

/// The context of `parallel` sequences of `ctx_size` tokens each.
pub(super) fn new_context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    config: ModelParams,
) -> Result<LlamaContext<'m>, EngineError> {
    let parallel = config.parallel.max(1);
    let threads = super::llama_threads(config.threads);
    let params = LlamaContextParams::default()
        .with_n_ctx(super::non_zero(config.ctx_size.saturating_mul(parallel)))
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size)
        .with_n_seq_max(parallel)
        .with_kv_unified(false)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_flash_attention_policy(config.flash_attn.llama_value())
        .with_type_k(super::kv_type(config.cache_type_k))
        .with_type_v(super::kv_type(config.cache_type_v));
    model.new_context(backend, params).map_err(|e| {
        EngineError::Llama(format!(
            "cannot create a context of {parallel} x {} tokens: {e}",
            config.ctx_size
        ))
    })
}

/// Parked: the caller has dropped the context. Waits for a wake (or any
/// request, which wakes it too) and makes the context again; returns it with
/// the request that woke it, or None once every handle is gone. A context
/// that cannot be made fails the wake and the engine stays parked.
pub(super) fn park<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    config: ModelParams,
    jobs: &mut mpsc::Receiver<Job>,
    progress: &Progress,
    parked: ParkReply,
) -> Option<(LlamaContext<'m>, Option<Job>)> {
    progress.idle();
    tracing::info!("parked: context and KV cache freed, the model stays loaded");
    let _ = parked.send(());
    loop {
        let (job, reply) = match jobs.blocking_recv()? {
            Job::Park(again) => {
                let _ = again.send(());
                continue;
            }
            Job::Wake(reply) => (None, Some(reply)),
            job => (Some(job), None),
        };
        let started = Instant::now();
        // Judged by the start-up limit, like the first context.
        progress.step(0, 0);
        progress.warming(true);
        let made = new_context(backend, model, config).map(|mut ctx| {
            warm_up(model, &mut ctx);
            ctx
        });
        progress.warming(false);
        progress.idle();
        match made {
            Ok(ctx) => {
                tracing::info!(
                    ms = started.elapsed().as_millis(),
                    "woke: context made again"
                );
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
                return Some((ctx, job));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot wake: {e}");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
                // A request that woke it ends unanswered: its stream closes.
            }
        }
    }
}

/// One decode before the worker says READY, as llama.cpp's own tools do: the
/// first decode pays one-time costs (buffers, thread pool, a GPU backend
/// compiling its kernels) under the start-up limit, not the per-step one.
pub(super) fn warm_up(model: &LlamaModel, ctx: &mut LlamaContext<'_>) {
    let started = Instant::now();
    let bos = model.vocab().bos();
    let token = if bos.0 >= 0 { bos } else { LlamaToken::new(0) };
    let mut batch = LlamaBatch::new(1, 1);
    let decoded = batch
        .add(token, 0, &[0], true)
        .map_err(|e| e.to_string())
        .and_then(|()| ctx.decode(&mut batch).map_err(|e| e.to_string()));
    ctx.clear_kv_cache();
    match decoded {
        Ok(()) => tracing::debug!(ms = started.elapsed().as_millis(), "engine warmed up"),
        Err(e) => tracing::warn!(error = %e, "warm-up decode failed"),
    }
}
