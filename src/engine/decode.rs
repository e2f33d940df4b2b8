//! The decode loop: continuous batching over `parallel` sequences.
//!
//! Each step feeds one token for every generating sequence first, then fills
//! what is left of the batch with prompt chunks, so a long prompt never stalls
//! the streams already running. An embedding batch advances by one input
//! per step, between generation steps. Between steps the loop
//! takes new requests, publishes its progress for liveness pings, and ends
//! every request whose client left. A request that ends leaves its KV in
//! its sequence for the next one with the same prefix (`prompt_cache`).

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use super::active::Active;
use super::embed::{EmbedTask, Embedder};
use super::logprobs;
use super::progress::Progress;
use super::prompt_cache::{self, PromptCache};
use super::sampling;
use super::sleep::{self, ParkReply};
use super::text::{Released, TextStream};
use super::{EngineError, Finish, GenerateJob, Job, Piece};
use crate::params::ModelParams;

/// Runs until every handle is gone; reports on `started` whether it could
/// begin. Between a park and the next wake it holds no context (`sleep`).
pub(super) fn run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    config: ModelParams,
    mut jobs: mpsc::Receiver<Job>,
    started: std_mpsc::Sender<Result<(), EngineError>>,
    progress: &Progress,
) {
    let mut ctx = match sleep::new_context(backend, model, config) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    sleep::warm_up(model, &mut ctx);
    let _ = started.send(Ok(()));
    let mut first = None;
    loop {
        let Some(parked) = serve(backend, model, config, ctx, &mut jobs, progress, first) else {
            return;
        };
        let Some((awake, job)) = sleep::park(backend, model, config, &mut jobs, progress, parked)
        else {
            return;
        };
        ctx = awake;
        first = job;
    }
}

/// Decodes over `ctx` until every handle is gone (None) or a park asks for
/// the context back (its reply, once `ctx` is dropped). `first` is a job
/// that woke the engine.
fn serve<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    config: ModelParams,
    mut ctx: LlamaContext<'m>,
    jobs: &mut mpsc::Receiver<Job>,
    progress: &Progress,
    first: Option<Job>,
) -> Option<ParkReply> {
    let parallel = config.parallel.max(1);
    let mut embedder = Embedder::new(backend, model, config, progress);
    let batch_size = usize::try_from(config.batch_size.max(1)).unwrap_or(512);
    let mut batch = LlamaBatch::new(batch_size, 1);
    let mut slots: Vec<Option<Active>> = (0..parallel).map(|_| None).collect();
    let mut cache = PromptCache::new(slots.len());
    let mut waiting: VecDeque<GenerateJob> = VecDeque::new();
    let mut embeds: VecDeque<EmbedTask> = VecDeque::new();
    let mut next_prompt_slot = 0usize;
    let mut park = first.and_then(|job| take(job, &mut waiting, &mut embeds, config));
    loop {
        let busy = slots.iter().any(Option::is_some) || !waiting.is_empty() || !embeds.is_empty();
        if !busy && park.is_none() {
            // Idle: sleep until a job arrives, or end once every handle is gone.
            progress.idle();
            match jobs.blocking_recv() {
                Some(job) => park = take(job, &mut waiting, &mut embeds, config),
                None => return None,
            }
        }
        while park.is_none() {
            let Ok(job) = jobs.try_recv() else { break };
            park = take(job, &mut waiting, &mut embeds, config);
        }
        if let Some(reply) = park {
            // The supervisor parks idle models only: whatever is left here
            // ends with an error, and the KV goes with the context.
            for slot in &mut slots {
                fail(&mut ctx, slot, "the model was parked".to_owned());
            }
            drop((waiting, embeds, embedder, ctx));
            return Some(reply);
        }
        // One step: at most one input of an embedding batch and one decode
        // of `batch_size` tokens, so each step's time stays bounded.
        let active = slots.iter().filter(|s| s.is_some()).count();
        progress.step(active, waiting.len() + embeds.len());
        drop_cancelled(&mut cache, &mut slots, &mut waiting);
        embeds.retain(|task| !task.cancelled());
        admit(
            model,
            &mut ctx,
            &mut cache,
            &mut slots,
            &mut waiting,
            config,
        );
        if let Some(task) = embeds.pop_front() {
            if let Some(rest) = task.step(&mut embedder) {
                embeds.push_front(rest);
            }
        }
        if fill_batch(&mut batch, &mut slots, batch_size, &mut next_prompt_slot) == 0 {
            continue;
        }
        if let Err(e) = ctx.decode(&mut batch) {
            let reason = format!("llama.cpp decode failed: {e}");
            tracing::error!(error = %reason, "decode step failed");
            for slot in &mut slots {
                if slot.as_ref().is_some_and(|a| a.in_batch) {
                    fail(&mut ctx, slot, reason.clone());
                }
            }
            continue;
        }
        sample(model, &mut ctx, &mut cache, &mut slots, config.ctx_size);
    }
}

/// Takes one job: queues a generation, or an embedding batch (checked
/// first); a park is handed back, a wake is answered (the engine is awake).
fn take(
    job: Job,
    waiting: &mut VecDeque<GenerateJob>,
    embeds: &mut VecDeque<EmbedTask>,
    config: ModelParams,
) -> Option<ParkReply> {
    match job {
        Job::Generate(job) => waiting.push_back(job),
        Job::Embed(job) => embeds.extend(EmbedTask::new(job, config)),
        Job::Park(reply) => return Some(reply),
        Job::Wake(reply) => {
            let _ = reply.send(Ok(()));
        }
    }
    None
}

/// Ends every request whose client is gone; what its sequence holds is
/// kept (between steps, every token in it was decoded).
fn drop_cancelled(
    cache: &mut PromptCache,
    slots: &mut [Option<Active>],
    waiting: &mut VecDeque<GenerateJob>,
) {
    waiting.retain(|job| !job.pieces.is_closed());
    for slot in slots.iter_mut() {
        if slot.as_ref().is_some_and(|a| a.job.pieces.is_closed()) {
            if let Some(active) = slot.take() {
                tracing::debug!(seq = active.seq, "request cancelled; sequence freed");
                keep(cache, active);
            }
        }
    }
}

/// Moves waiting requests into free sequences, each into the one that
/// holds the longest prefix of its prompt (`prompt_cache`).
fn admit(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    cache: &mut PromptCache,
    slots: &mut [Option<Active>],
    waiting: &mut VecDeque<GenerateJob>,
    config: ModelParams,
) {
    while let Some(job) = waiting.front() {
        let free = slots.iter().enumerate().filter(|(_, s)| s.is_none());
        let wants = config.cache_prompt && job.request.cache_prompt;
        let Some(choice) = cache.choose(free.map(|(i, _)| i), &job.request.prompt, wants) else {
            return;
        };
        let (Some(mut job), Some(slot)) = (waiting.pop_front(), slots.get_mut(choice.seq)) else {
            return;
        };
        let mut held = cache.take(choice.seq);
        let reused = prompt_cache::trim(ctx, choice.seq, choice.reuse);
        held.truncate(reused);
        let seq = i32::try_from(choice.seq).unwrap_or(i32::MAX);
        let mut sampler = job
            .request
            .sampling
            .sampler(model.n_vocab(), config.ctx_size);
        if !job.request.sampling.is_greedy() || job.request.sampling.repeat_penalty != 1.0 {
            // Penalties look at the prompt too, as llama-server's do.
            sampler.accept_many(job.request.prompt.iter());
        }
        // The grammar stays outside the chain that saw the prompt: it only
        // ever accepts generated tokens.
        let grammar = job.request.grammar.take();
        let text = TextStream::new(job.request.stops.clone());
        *slot = Some(Active {
            seq,
            job,
            sampler,
            grammar,
            fed: reused,
            cached: reused,
            held,
            next: None,
            logits_at: None,
            in_batch: false,
            generated: 0,
            text,
            ids: Vec::new(),
            probs: Vec::new(),
            first_token: None,
        });
    }
}

/// Builds the next batch: generating sequences first, then prompt chunks
/// (round robin, so several long prompts share the rest). Returns its size.
fn fill_batch(
    batch: &mut LlamaBatch<'_>,
    slots: &mut [Option<Active>],
    capacity: usize,
    next_prompt_slot: &mut usize,
) -> usize {
    batch.clear();
    let mut used = 0usize;
    for active in slots.iter_mut().flatten() {
        active.logits_at = None;
        active.in_batch = false;
        if let Some(token) = active.next.take() {
            let at = i32::try_from(used).unwrap_or(i32::MAX);
            if used < capacity && batch.add(token, active.pos(), &[active.seq], true).is_ok() {
                active.held.push(token);
                active.logits_at = Some(at);
                active.in_batch = true;
                used += 1;
            } else {
                active.next = Some(token); // no room this step: next one
            }
        }
    }
    let n = slots.len();
    for k in 0..n {
        let index = (*next_prompt_slot + k) % n.max(1);
        let Some(Some(active)) = slots.get_mut(index) else {
            continue;
        };
        let remaining = active.job.request.prompt.len().saturating_sub(active.fed);
        let room = capacity.saturating_sub(used);
        if remaining == 0 || room == 0 {
            continue;
        }
        let take = remaining.min(room);
        let end = active.fed + take;
        for i in active.fed..end {
            let Some(&token) = active.job.request.prompt.get(i) else {
                break;
            };
            let last = i + 1 == active.job.request.prompt.len();
            let at = i32::try_from(used).unwrap_or(i32::MAX);
            if batch.add(token, active.pos(), &[active.seq], last).is_err() {
                break;
            }
            if last {
                active.logits_at = Some(at);
            }
            active.held.push(token);
            active.in_batch = true;
            active.fed = i + 1;
            used += 1;
        }
        *next_prompt_slot = (index + 1) % n.max(1);
    }
    used
}

/// Samples a token for every sequence that has logits in this batch, sends
/// the text it releases and ends the sequences that are done.
fn sample(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    cache: &mut PromptCache,
    slots: &mut [Option<Active>],
    ctx_size: u32,
) {
    let vocab = model.vocab();
    for slot in slots.iter_mut() {
        let Some(active) = slot.as_mut() else {
            continue;
        };
        let Some(at) = active.logits_at.take() else {
            continue;
        };
        let token = match active.grammar.as_mut() {
            // The chain is llama.cpp's greedy sampler alone, whose accept
            // keeps nothing: the argmax is its choice, found faster.
            None if active.job.request.sampling.is_plain_greedy() => {
                let id = sampling::argmax(ctx.get_logits_ith(at));
                LlamaToken::new(i32::try_from(id).unwrap_or(0))
            }
            None => active.sampler.sample(ctx, at),
            Some(grammar) => match constrained(ctx, at, grammar, &mut active.sampler) {
                Some(token) => token,
                None => {
                    let why = "the grammar allows no token here: it cannot be completed \
                               with this model's vocabulary"
                        .to_owned();
                    end_with(cache, slot, Finish::Error(why), String::new());
                    continue;
                }
            },
        };
        active.generated = active.generated.saturating_add(1);
        if active.first_token.is_none() {
            active.first_token = Some(Instant::now());
        }
        if vocab.is_eog(token) {
            let tail = active.text.finish();
            end_with(cache, slot, Finish::Stop, tail);
            continue;
        }
        active.ids.push(token.0);
        let special = active.job.request.special_text;
        let bytes = vocab.token_to_piece(token, special, None);
        if let Some(top) = active.job.request.logprobs {
            let piece_of = |id| vocab.token_to_piece(LlamaToken::new(id), false, None);
            let logits = ctx.get_logits_ith(at);
            let entry = logprobs::entry(logits, token.0, bytes.clone(), top, piece_of);
            active.probs.push(entry);
        }
        match active.text.push(&bytes) {
            Released::Stopped(text) => {
                let finish = active
                    .text
                    .hit()
                    .map_or(Finish::Stop, |s| Finish::StopString(s.to_owned()));
                end_with(cache, slot, finish, text);
                continue;
            }
            Released::Text(text) => {
                let limit_reached = active.job.request.max_tokens > 0
                    && active.generated >= active.job.request.max_tokens;
                let context_full = u32::try_from(active.pos()).unwrap_or(u32::MAX) >= ctx_size;
                if limit_reached || context_full {
                    let tail = text + &active.text.finish();
                    end_with(cache, slot, Finish::Length, tail);
                    continue;
                }
                let _ = active.job.pieces.send(Piece {
                    text,
                    token_ids: std::mem::take(&mut active.ids),
                    logprobs: std::mem::take(&mut active.probs),
                    finish: None,
                });
                active.next = Some(token);
            }
        }
    }
}

/// Ends a request whose step failed: what its sequence holds is unknown, so
/// it is emptied.
fn fail(ctx: &mut LlamaContext<'_>, slot: &mut Option<Active>, reason: String) {
    if let Some(mut active) = slot.take() {
        active.finish(Finish::Error(reason), String::new());
        if let Ok(seq) = u32::try_from(active.seq) {
            let _ = ctx.clear_kv_cache_seq(Some(seq), None, None);
        }
    }
}

/// Samples under `grammar`: the grammar masks what it forbids, `sampler`
/// chooses among the rest, and both accept the choice. None when the grammar
/// forbids every token (accepting one would abort the worker).
fn constrained(
    ctx: &LlamaContext<'_>,
    at: i32,
    grammar: &mut LlamaSampler,
    sampler: &mut LlamaSampler,
) -> Option<LlamaToken> {
    let mut candidates = ctx.token_data_array_ith(at);
    candidates.apply_sampler(grammar);
    if !candidates.data.iter().any(|t| t.logit().is_finite()) {
        return None;
    }
    candidates.apply_sampler(sampler);
    let token = candidates.selected_token()?;
    grammar.accept(token);
    sampler.accept(token);
    Some(token)
}

/// Sends the last piece and frees the sequence, keeping its KV.
fn end_with(cache: &mut PromptCache, slot: &mut Option<Active>, finish: Finish, tail: String) {
    if let Some(mut active) = slot.take() {
        active.finish(finish, tail);
        keep(cache, active);
    }
}

/// Leaves what `active`'s sequence holds for the next request.
fn keep(cache: &mut PromptCache, active: Active) {
    if let Ok(seq) = usize::try_from(active.seq) {
        cache.keep(seq, active.held);
    }
}
