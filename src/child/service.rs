//! The worker's gRPC services: `InferenceService` over its engine (the model
//! field is ignored: a worker serves one model) and the private `WorkerService`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::tools::{Offer, message_of};
use crate::engine::chat::{ChatError, ChatTemplate};
use crate::engine::grammar;
use crate::engine::limits::check_stops;
use crate::engine::logprobs::{MAX_TOP_LOGPROBS, TokenLogprob};
use crate::engine::tools::{Style, generic_messages};
use crate::engine::{
    EngineError, EngineHandle, Finish, GenerateRequest, Piece, Sampling, SamplingRequest,
};
use crate::proto::pb::inference_service_server::InferenceService;
use crate::proto::pb::{self};
use crate::proto::worker_pb::worker_service_server::WorkerService;
use crate::proto::worker_pb::{
    OffloadBuffer, OffloadReply, OffloadRequest, ParkReply, ParkRequest, PingReply, PingRequest,
    WakeReply, WakeRequest,
};

/// A stream of generation pieces.
pub type PieceStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateResponse, Status>> + Send>>;

/// Serves one model's engine.
#[derive(Clone)]
pub struct WorkerInference {
    engine: EngineHandle,
    /// The model's chat template, if it has one (compiled once).
    template: Arc<Result<ChatTemplate, ChatError>>,
    /// How its template takes tools.
    tool_style: Style,
    /// The BOS token's text: a prompt that starts with it gets no second BOS.
    bos_text: Arc<str>,
    /// This model's sampling defaults (built-in, with its config table over them).
    sampling: Sampling,
}

impl WorkerInference {
    /// Wraps `engine`; `template` is the model's compiled chat template.
    pub fn new(
        engine: EngineHandle,
        template: Result<ChatTemplate, ChatError>,
        sampling: Sampling,
    ) -> Self {
        let vocab = engine.model().vocab();
        let bos = String::from_utf8_lossy(&vocab.token_to_piece(vocab.bos(), true, None)).into();
        let tool_style = match &template {
            Ok(t) if t.renders_tools() => Style::Native,
            _ => Style::Generic,
        };
        WorkerInference {
            engine,
            tool_style,
            template: Arc::new(template),
            bos_text: bos,
            sampling,
        }
    }

    /// Tokens of a prompt with special tokens parsed and exactly one BOS
    /// (when the model uses one): none is added if the text starts with it.
    fn prompt_tokens(&self, text: &str) -> Vec<llama_cpp_2::token::LlamaToken> {
        let has_bos = !self.bos_text.is_empty() && text.starts_with(&*self.bos_text);
        self.engine.tokenize(text, !has_bos, true)
    }

    /// The messages through the model's chat template, with the tools
    /// `offer` makes: given to a template that renders them, or described in
    /// a system prompt for one that does not (whose tool turns are rewritten).
    fn render(&self, messages: Vec<pb::ChatMessage>, offer: &Offer) -> Result<String, Status> {
        let template = match self.template.as_ref() {
            Ok(t) => t,
            Err(e) => return Err(Status::failed_precondition(e.to_string())),
        };
        let messages: Vec<_> = messages.into_iter().map(message_of).collect();
        let offered = offer.choice.as_ref().map(|c| (offer.tools.as_slice(), c));
        let rendered = match self.tool_style {
            Style::Native => {
                template.render_with_tools(&messages, offered.map_or(&[], |(tools, _)| tools))
            }
            Style::Generic => template.render(&generic_messages(&messages, offered)),
        };
        rendered.map_err(|e| match e {
            ChatError::NoMessages => Status::invalid_argument(e.to_string()),
            _ => Status::failed_precondition(e.to_string()),
        })
    }

    async fn stream(
        &self,
        prompt: Vec<llama_cpp_2::token::LlamaToken>,
        max_tokens: u32,
        sampling: Option<&pb::SamplingParams>,
        stops: Vec<String>,
        special_text: bool,
    ) -> Result<PieceStream, Status> {
        let received = Instant::now();
        let ctx = self.engine.params().ctx_size;
        if prompt.is_empty() {
            return Err(Status::invalid_argument("the prompt is empty"));
        }
        if prompt.len() >= usize::try_from(ctx).unwrap_or(usize::MAX) {
            return Err(Status::invalid_argument(format!(
                "the prompt has {} tokens; each request's context holds {ctx} (--ctx-size)",
                prompt.len()
            )));
        }
        // max_tokens needs no bound of its own: the engine ends every
        // generation when its context is full (finish_reason length).
        check_stops(&stops)?;
        let gbnf = sampling
            .and_then(|s| s.grammar.as_deref())
            .filter(|g| !g.is_empty());
        let schema = sampling
            .and_then(|s| s.json_schema.as_deref())
            .filter(|g| !g.is_empty());
        let grammar = match (gbnf, schema) {
            (Some(_), Some(_)) => {
                return Err(Status::invalid_argument(
                    "send either a grammar or a json_schema, not both",
                ));
            }
            (Some(g), None) => Some(g.to_owned()),
            (None, Some(s)) => Some(grammar::from_json_schema(s).map_err(engine_status)?),
            (None, None) => None,
        };
        let grammar = match grammar {
            Some(g) => Some(grammar::compile(self.engine.model(), &g).map_err(engine_status)?),
            None => None,
        };
        let logprobs = sampling.and_then(|s| s.top_logprobs);
        let cache_prompt = sampling.and_then(|s| s.cache_prompt).unwrap_or(true);
        if let Some(n) = logprobs.filter(|n| *n > MAX_TOP_LOGPROBS) {
            return Err(Status::invalid_argument(format!(
                "top_logprobs is {n}; at most {MAX_TOP_LOGPROBS}"
            )));
        }
        let sampling = sampling.map(sampling_request);
        let sampling = Sampling::from_request(sampling.as_ref(), random_seed(), &self.sampling)
            .map_err(engine_status)?;
        let rx = self
            .engine
            .generate(GenerateRequest {
                prompt,
                max_tokens,
                sampling,
                stops,
                grammar,
                received,
                logprobs,
                special_text,
                cache_prompt,
            })
            .await
            .map_err(engine_status)?;
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|p| Ok(to_pb(p)));
        Ok(Box::pin(stream))
    }
}

/// The wire's sampling fields in the engine's terms.
fn sampling_request(p: &pb::SamplingParams) -> SamplingRequest {
    SamplingRequest {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        repeat_penalty: p.repeat_penalty,
        presence_penalty: p.presence_penalty,
        frequency_penalty: p.frequency_penalty,
        penalty_last_n: p.penalty_last_n,
        seed: p.seed,
    }
}

/// A seed for requests that set none.
fn random_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

/// An engine piece as the wire message.
pub fn to_pb(piece: Piece) -> pb::GenerateResponse {
    let (finish_reason, usage, error, stop_sequence) = match piece.finish {
        None => (
            pb::FinishReason::Unspecified,
            None,
            String::new(),
            String::new(),
        ),
        Some((finish, usage)) => {
            let (reason, error, stop) = match finish {
                Finish::Stop => (pb::FinishReason::Stop, String::new(), String::new()),
                Finish::StopString(s) => (pb::FinishReason::Stop, String::new(), s),
                Finish::Length => (pb::FinishReason::Length, String::new(), String::new()),
                Finish::Error(e) => (pb::FinishReason::Error, e, String::new()),
            };
            let usage = pb::Usage {
                prompt_tokens: usage.prompt_tokens,
                cached_tokens: usage.cached_tokens,
                completion_tokens: usage.completion_tokens,
                time_to_first_token_ms: usage.time_to_first_token.as_secs_f64() * 1e3,
                tokens_per_second: usage.tokens_per_second,
            };
            (reason, Some(usage), error, stop)
        }
    };
    pb::GenerateResponse {
        logprobs: piece.logprobs.into_iter().map(logprob_pb).collect(),
        text: piece.text,
        token_ids: piece.token_ids,
        finish_reason: finish_reason.into(),
        usage,
        error,
        stop_sequence,
        tool_calls: Vec::new(),
    }
}

fn logprob_pb(t: TokenLogprob) -> pb::TokenLogprob {
    pb::TokenLogprob {
        id: t.id,
        piece: t.piece,
        logprob: t.logprob,
        top: t.top.into_iter().map(logprob_pb).collect(),
    }
}

/// The gRPC status for an engine error.
pub fn engine_status(e: EngineError) -> Status {
    match e {
        EngineError::InvalidRequest(m) => Status::invalid_argument(m),
        EngineError::Unsupported(m) => Status::failed_precondition(m),
        EngineError::Busy(m) => Status::resource_exhausted(m),
        EngineError::Llama(m) => Status::internal(m),
        EngineError::Stopped => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl InferenceService for WorkerInference {
    type GenerateStream = PieceStream;
    type ChatStream = PieceStream;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let r = request.into_inner();
        let prompt = match &r.infill {
            None => self.prompt_tokens(&r.prompt),
            Some(infill) => super::infill::tokens(&self.engine, infill, &r.prompt)?,
        };
        let stream = self
            .stream(prompt, r.max_tokens, r.sampling.as_ref(), r.stop, false)
            .await?;
        Ok(Response::new(stream))
    }

    async fn chat(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let mut r = request.into_inner();
        let offer = Offer::of(&r.tools, r.tool_choice(), &r.tool_name)?;
        offer.constrain(self.tool_style, &mut r.sampling)?;
        let prompt = self.render(r.messages, &offer)?;
        // A native template's calls may start with a control token.
        let markers = offer.choice.is_some() && self.tool_style == Style::Native;
        // Templates usually write the BOS token themselves: no second one.
        let tokens = self.prompt_tokens(&prompt);
        let stream = self
            .stream(tokens, r.max_tokens, r.sampling.as_ref(), r.stop, markers)
            .await?;
        Ok(Response::new(offer.parse_calls(self.tool_style, stream)))
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let r = request.into_inner();
        let tokens = self
            .engine
            .tokenize(&r.text, r.add_special, r.parse_special);
        let pieces = if r.with_pieces {
            let vocab = self.engine.model().vocab();
            tokens
                .iter()
                .map(|t| vocab.token_to_piece(*t, true, None))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::TokenizeResponse {
            tokens: tokens.into_iter().map(|t| t.0).collect(),
            pieces,
        }))
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        let r = request.into_inner();
        let text = self.engine.detokenize(&r.tokens).map_err(engine_status)?;
        Ok(Response::new(pb::DetokenizeResponse { text }))
    }

    async fn apply_template(
        &self,
        request: Request<pb::ApplyTemplateRequest>,
    ) -> Result<Response<pb::ApplyTemplateResponse>, Status> {
        let r = request.into_inner();
        let offer = Offer::of(&r.tools, pb::ToolChoice::Auto, "")?;
        let prompt = self.render(r.messages, &offer)?;
        let tokens = self.prompt_tokens(&prompt).len();
        Ok(Response::new(pb::ApplyTemplateResponse {
            prompt,
            prompt_tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        }))
    }

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let r = request.into_inner();
        let normalize = r.normalize;
        if r.input.is_empty() {
            return Err(Status::invalid_argument(
                "an embedding request needs at least one input",
            ));
        }
        // Off the runtime's threads: thousands of inputs take a while to tokenize.
        let engine = self.engine.clone();
        let inputs: Vec<_> = tokio::task::spawn_blocking(move || {
            r.input
                .iter()
                .map(|text| engine.tokenize(text, true, false))
                .collect()
        })
        .await
        .map_err(|e| Status::internal(format!("tokenizing the inputs failed: {e}")))?;
        let prompt_tokens = inputs.iter().map(Vec::len).sum::<usize>();
        let vectors = self
            .engine
            .embed(inputs, normalize)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(pb::EmbedResponse {
            embeddings: vectors
                .into_iter()
                .map(|values| pb::Embedding { values })
                .collect(),
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
        }))
    }
}

/// Liveness (what the engine thread last published, read without waiting
/// on it), the offload figures, and parking.
#[derive(Clone)]
pub struct WorkerControl {
    engine: EngineHandle,
}

impl WorkerControl {
    /// Wraps `engine`.
    pub fn new(engine: EngineHandle) -> Self {
        WorkerControl { engine }
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerControl {
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        let live = self.engine.liveness().map_err(engine_status)?;
        Ok(Response::new(PingReply {
            active: live.active,
            queued: live.queued,
            slots: self.engine.params().parallel,
            steps: live.steps,
            step_running_ms: u64::try_from(live.step_running.as_millis()).unwrap_or(u64::MAX),
            warming: live.warming,
        }))
    }

    async fn park(&self, _: Request<ParkRequest>) -> Result<Response<ParkReply>, Status> {
        self.engine.park().await.map_err(engine_status)?;
        Ok(Response::new(ParkReply {}))
    }

    async fn wake(&self, _: Request<WakeRequest>) -> Result<Response<WakeReply>, Status> {
        self.engine.wake().await.map_err(engine_status)?;
        Ok(Response::new(WakeReply {}))
    }

    async fn offload(&self, _: Request<OffloadRequest>) -> Result<Response<OffloadReply>, Status> {
        let seen = crate::engine::offload::seen();
        let (done, total) = seen.layers.unwrap_or((0, 0));
        Ok(Response::new(OffloadReply {
            layers_offloaded: done,
            layers_total: total,
            buffers: seen
                .buffers
                .into_iter()
                .map(|b| OffloadBuffer {
                    name: b.name,
                    kind: b.kind,
                    bytes: b.bytes,
                })
                .collect(),
        }))
    }
}
