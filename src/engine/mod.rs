//! The inference engine inside a worker process: one llama.cpp model, one
//! context with `parallel` sequences, and a decode loop with continuous
//! batching on a thread of its own. Requests reach it through [`EngineHandle`].

mod active;
pub mod chat;
mod decode;
mod embed;
pub mod grammar;
pub mod infill;
pub mod limits;
pub mod logprobs;
mod metadata_dump;
pub mod offload;
mod progress;
mod prompt_cache;
pub mod sampling;
mod sleep;
pub mod templates;
pub mod text;
pub mod tools;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::KvCacheType;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

pub use progress::Liveness;
pub use sampling::{Sampling, SamplingRequest};

use crate::params::{CacheType, ModelParams};

/// llama.cpp's thread count (the daemon resolved `0` to its cores).
fn llama_threads(threads: u32) -> i32 {
    i32::try_from(threads).unwrap_or(i32::MAX)
}

/// llama-cpp-2's name for a cache type.
fn kv_type(t: CacheType) -> KvCacheType {
    match t {
        CacheType::F32 => KvCacheType::F32,
        CacheType::F16 => KvCacheType::F16,
        CacheType::Q8_0 => KvCacheType::Q8_0,
        CacheType::Q5_1 => KvCacheType::Q5_1,
        CacheType::Q5_0 => KvCacheType::Q5_0,
        CacheType::Q4_1 => KvCacheType::Q4_1,
        CacheType::Q4_0 => KvCacheType::Q4_0,
    }
}

/// Why the engine refused or failed a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong.
    #[error("{0}")]
    InvalidRequest(String),
    /// The model cannot do this (no chat template, no embeddings).
    #[error("{0}")]
    Unsupported(String),
    /// Every slot is taken and the queue is full.
    #[error("{0}")]
    Busy(String),
    /// llama.cpp failed.
    #[error("{0}")]
    Llama(String),
    /// The engine thread has stopped.
    #[error("the inference engine has stopped")]
    Stopped,
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// End of generation token.
    Stop,
    /// This stop string was reached.
    StopString(String),
    /// `max_tokens` or the end of the slot's context.
    Length,
    /// The engine failed mid-stream.
    Error(String),
}

/// Counts and timings of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Of those, the ones whose KV an earlier request left (not evaluated again).
    pub cached_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// From the engine receiving the request to the first generated token.
    pub time_to_first_token: Duration,
    /// Generated tokens per second after the first.
    pub tokens_per_second: f64,
}

/// One piece of a generation stream; the last carries `finish` and `usage`.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// Text released by these tokens.
    pub text: String,
    /// Token ids sampled since the previous piece.
    pub token_ids: Vec<i32>,
    /// Their log-probabilities, when the request asked for them.
    pub logprobs: Vec<logprobs::TokenLogprob>,
    /// Set on the last piece.
    pub finish: Option<(Finish, Usage)>,
}

/// A generation request, tokenized.
#[derive(Debug)]
pub struct GenerateRequest {
    /// Prompt tokens (at least one, shorter than the slot's context).
    pub prompt: Vec<LlamaToken>,
    /// Most tokens to generate; 0 = until the model stops or the context is full.
    pub max_tokens: u32,
    /// Sampling settings.
    pub sampling: Sampling,
    /// Stop strings.
    pub stops: Vec<String>,
    /// The request's grammar sampler, compiled (so a bad grammar was refused
    /// before the request reached the engine); it masks tokens first, and
    /// never sees the prompt.
    pub grammar: Option<LlamaSampler>,
    /// When the request arrived.
    pub received: Instant,
    /// Report each token's log-probability with this many alternatives
    /// (at most [`logprobs::MAX_TOP_LOGPROBS`]); `None`: none.
    pub logprobs: Option<u32>,
    /// Write control tokens as their text, for a tool call's markers
    /// (Mistral's `[TOOL_CALLS]`, Llama 3.x's `<|python_tag|>`), which the
    /// worker parses out again; otherwise they are written as nothing.
    pub special_text: bool,
    /// Start from what an earlier request with the same prefix left in the
    /// KV cache (llama-server's `cache_prompt`; the model's `cache_prompt`
    /// setting can turn it off for all).
    pub cache_prompt: bool,
}

/// A generation inside the engine.
#[derive(Debug)]
struct GenerateJob {
    request: GenerateRequest,
    /// Where pieces go; the request is cancelled once the receiver is dropped.
    pieces: mpsc::UnboundedSender<Piece>,
    /// Its place among the `parallel + queue` admitted requests; given back
    /// before the last piece is sent (see `Active::finish`).
    admitted: Option<OwnedSemaphorePermit>,
}

/// A pooled embedding request, tokenized.
#[derive(Debug)]
pub struct EmbedJob {
    /// One token list per input.
    pub inputs: Vec<Vec<LlamaToken>>,
    /// Scale to unit length.
    pub normalize: bool,
    /// The vectors, in input order.
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
}

enum Job {
    Generate(GenerateJob),
    Embed(EmbedJob),
    /// Drop the context; answered once it is gone.
    Park(sleep::ParkReply),
    /// Make the context again (answered at once when it is there).
    Wake(sleep::WakeReply),
}

/// Talks to the engine thread; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Job>,
    model: Arc<LlamaModel>,
    /// The model's settings as the engine runs them.
    params: ModelParams,
    /// Requests that may wait for a free sequence (`request_queue`).
    queue: usize,
    /// Permits for requests decoding or waiting: past them, Busy.
    admission: Arc<Semaphore>,
    /// What the decode thread says about itself, read without waiting on it.
    progress: Arc<progress::Progress>,
}

impl EngineHandle {
    /// Starts the decode loop on its own thread over `model`; fails if the
    /// context cannot be created.
    pub fn start(
        backend: Arc<LlamaBackend>,
        model: Arc<LlamaModel>,
        params: ModelParams,
        queue: usize,
    ) -> Result<Self, EngineError> {
        let params = params.normalized();
        // Every generating sequence needs a place in each batch: the
        // engine's own rule (admission and the display keep the configured size).
        let params = ModelParams {
            batch_size: params.batch_size.max(params.parallel),
            ..params
        };

        let (tx, rx) = mpsc::channel(1024);
        let (started_tx, started) = std::sync::mpsc::channel();
        let thread_model = model.clone();
        let progress = progress::Progress::new();
        let thread_progress = progress.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                let progress = progress::StopOnDrop(thread_progress);
                decode::run(&backend, &thread_model, params, rx, started_tx, &progress.0);
            })
            .map_err(|e| EngineError::Llama(format!("cannot start the engine thread: {e}")))?;
        started.recv().map_err(|_| EngineError::Stopped)??;
        let admission = Arc::new(Semaphore::new(
            usize::try_from(params.parallel)
                .unwrap_or(usize::MAX)
                .saturating_add(queue),
        ));
        Ok(EngineHandle {
            tx,
            model,
            params,
            queue,
            admission,
            progress,
        })
    }

    /// The model.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// The model's settings as the engine runs them (normalized, batch at least `parallel`).
    pub fn params(&self) -> ModelParams {
        self.params
    }

    /// Queues a generation; its pieces arrive on the returned channel, and
    /// dropping that channel cancels it. Busy when every slot and queue place is taken.
    pub async fn generate(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Piece>, EngineError> {
        let admitted = self.admission.clone().try_acquire_owned().map_err(|_| {
            EngineError::Busy(format!(
                "all {} slots are busy and {} requests are already waiting (--parallel, --request-queue)",
                self.params.parallel, self.queue
            ))
        })?;
        let (pieces, rx) = mpsc::unbounded_channel();
        let job = GenerateJob {
            request,
            pieces,
            admitted: Some(admitted),
        };
        self.tx
            .send(Job::Generate(job))
            .await
            .map_err(|_| EngineError::Stopped)?;
        Ok(rx)
    }

    /// Pooled embeddings of each input.
    pub async fn embed(
        &self,
        inputs: Vec<Vec<LlamaToken>>,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.ask(|reply| {
            Job::Embed(EmbedJob {
                inputs,
                normalize,
                reply,
            })
        })
        .await?
    }

    /// Frees the context (KV cache, compute buffers) and keeps the model;
    /// answers once it is gone. Requests still running end with an error.
    pub async fn park(&self) -> Result<(), EngineError> {
        self.ask(Job::Park).await
    }

    /// Makes the context again after a park (at once when it is there).
    pub async fn wake(&self) -> Result<(), EngineError> {
        self.ask(Job::Wake).await?
    }

    /// Sends the job `make` builds around a reply channel and awaits the
    /// reply; Stopped when the decode thread is gone before answering.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Steps done and how long the running one has taken, read without
    /// waiting for the decode thread (a long step must not look like a hang,
    /// and a stuck one shows as a step that never ends); Stopped once the
    /// thread is gone.
    pub fn liveness(&self) -> Result<Liveness, EngineError> {
        self.progress.read().ok_or(EngineError::Stopped)
    }

    /// Tokens of `text`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<LlamaToken> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, parse_special)
    }

    /// Text of `tokens`; ids outside the vocabulary are refused.
    pub fn detokenize(&self, tokens: &[i32]) -> Result<String, EngineError> {
        let tokens = self.checked_tokens(tokens)?;
        let bytes = self.model.vocab().detokenize(&tokens, false, false);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `tokens` as llama tokens, each checked against the vocabulary.
    pub fn checked_tokens(&self, tokens: &[i32]) -> Result<Vec<LlamaToken>, EngineError> {
        let n_vocab = self.model.n_vocab();
        tokens
            .iter()
            .map(|&t| {
                if (0..n_vocab).contains(&t) {
                    Ok(LlamaToken::new(t))
                } else {
                    Err(EngineError::InvalidRequest(format!(
                        "token id {t} is outside the vocabulary (0..{n_vocab})"
                    )))
                }
            })
            .collect()
    }
}

fn non_zero(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}
