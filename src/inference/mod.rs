//! The inference layer: what one request for tokens, a tokenization or an
//! embedding needs between an interface and a worker. It checks the
//! request's bounds, leases the model from the supervisor (loading it and
//! starting its worker as needed, counted as queued while it waits and as
//! active while it holds the lease), calls the worker's private gRPC over its
//! Unix socket and relays the answer. A failure is an [`InferenceError`].
//!
//! gRPC (`api::inference`) and HTTP (`api::http`) both call this directly and
//! each maps the error to its own status once; before, HTTP built gRPC
//! requests, called the tonic service in-process and turned its statuses
//! back into HTTP errors.
//!
//! The data types are the public v1 messages from `proto`: they are the
//! worker protocol's messages too, so relaying them needs no copy. The layer
//! ranks above supervisor and below api; it never imports api, cli or daemon.

mod error;
mod relay;

use std::future::Future;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status};

pub use self::error::InferenceError;
pub use self::relay::Pieces;
use self::relay::{ActiveLease, relay};
use crate::engine::limits::{
    RequestLimits, check_blocks, check_grammar, check_messages, check_stops, check_tools,
};
use crate::metrics::Metrics;
use crate::proto::pb;
use crate::proto::pb::inference_service_client::InferenceServiceClient;
use crate::supervisor::{AcquireOptions, Lease, SupervisorHandle};

/// How long a broken call waits to learn why the worker ended: the daemon
/// first lets the worker's stderr drain (up to 1 s) and writes its crash
/// report, and a loaded machine is slow at both.
const EXIT_REASON_WAIT: Duration = Duration::from_secs(5);

/// A handle on the inference layer; cheap to clone, one shared by every
/// interface so that requests are counted in one place.
#[derive(Clone)]
pub struct Inference {
    supervisor: SupervisorHandle,
    metrics: Metrics,
    limits: RequestLimits,
    /// What this handle's requests ask of the supervisor (autoload or not).
    options: AcquireOptions,
    /// The interface its requests come in on (`grpc`, `http`), for crash reports.
    client: &'static str,
}

impl Inference {
    /// A layer that leases models from `supervisor`, counts requests in
    /// `metrics` and refuses requests past `limits` before leasing anything.
    pub fn new(supervisor: SupervisorHandle, metrics: Metrics, limits: RequestLimits) -> Self {
        Inference {
            supervisor,
            metrics,
            limits,
            options: AcquireOptions::default(),
            client: "grpc",
        }
    }

    /// This layer for requests that come in on `client` (`http`, `grpc`).
    pub fn for_client(&self, client: &'static str) -> Self {
        Inference {
            client,
            ..self.clone()
        }
    }

    /// This layer for one request whose model is loaded for it or not as
    /// `autoload` says (`None`: as `--models-autoload` says).
    pub fn autoload(&self, autoload: Option<bool>) -> Self {
        Inference {
            options: AcquireOptions { autoload },
            ..self.clone()
        }
    }

    /// Generates from a prompt: a stream of pieces, the last with the
    /// finish reason and usage.
    pub async fn generate(&self, request: pb::GenerateRequest) -> Result<Pieces, InferenceError> {
        if let Some(infill) = &request.infill {
            check_blocks(infill.extra.len())?;
        }
        check_stops(&request.stop)?;
        check_grammar(grammar(request.sampling.as_ref()))?;
        let model = request.model.clone();
        let (active, upstream) = self
            .on_worker(&model, "generate", |mut c| async move {
                c.generate(request).await
            })
            .await?;
        Ok(relay(active, self.metrics.clone(), upstream.into_inner()))
    }

    /// Chats: the messages through the model's template, then as `generate`.
    pub async fn chat(&self, request: pb::ChatRequest) -> Result<Pieces, InferenceError> {
        check_messages(request.messages.len())?;
        check_tools(request.tools.len(), most_calls(&request.messages))?;
        check_stops(&request.stop)?;
        check_grammar(grammar(request.sampling.as_ref()))?;
        let model = request.model.clone();
        let (active, upstream) = self
            .on_worker(&model, "chat", |mut c| async move { c.chat(request).await })
            .await?;
        Ok(relay(active, self.metrics.clone(), upstream.into_inner()))
    }

    /// The prompt `chat` would generate from for these messages, and its
    /// length in tokens; nothing is generated.
    pub async fn apply_template(
        &self,
        request: pb::ApplyTemplateRequest,
    ) -> Result<pb::ApplyTemplateResponse, InferenceError> {
        check_messages(request.messages.len())?;
        check_tools(request.tools.len(), most_calls(&request.messages))?;
        let model = request.model.clone();
        let (_, reply) = self
            .on_worker(&model, "apply_template", |mut c| async move {
                c.apply_template(request).await
            })
            .await?;
        Ok(reply.into_inner())
    }

    /// Text to the model's token ids.
    pub async fn tokenize(
        &self,
        request: pb::TokenizeRequest,
    ) -> Result<pb::TokenizeResponse, InferenceError> {
        let model = request.model.clone();
        let (_, reply) = self
            .on_worker(&model, "tokenize", |mut c| async move {
                c.tokenize(request).await
            })
            .await?;
        Ok(reply.into_inner())
    }

    /// Token ids back to text.
    pub async fn detokenize(
        &self,
        request: pb::DetokenizeRequest,
    ) -> Result<pb::DetokenizeResponse, InferenceError> {
        let model = request.model.clone();
        let (_, reply) = self
            .on_worker(&model, "detokenize", |mut c| async move {
                c.detokenize(request).await
            })
            .await?;
        Ok(reply.into_inner())
    }

    /// One vector per input.
    pub async fn embed(
        &self,
        request: pb::EmbedRequest,
    ) -> Result<pb::EmbedResponse, InferenceError> {
        self.limits.check_embed(request.input.len())?;
        let model = request.model.clone();
        let (_, reply) = self
            .on_worker(
                &model,
                "embed",
                |mut c| async move { c.embed(request).await },
            )
            .await?;
        Ok(reply.into_inner())
    }

    /// Leases `model` (loading it and starting its worker as needed) and runs
    /// `call` on the worker. The lease comes back with the reply, so that a
    /// stream can keep it for as long as it runs.
    async fn on_worker<R, F, Fut>(
        &self,
        model: &str,
        kind: &'static str,
        call: F,
    ) -> Result<(ActiveLease, R), InferenceError>
    where
        F: FnOnce(InferenceServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        if model.is_empty() {
            return Err(InferenceError::NoModel);
        }
        let queued = self.metrics.queued();
        let lease = self.supervisor.acquire_with(model, self.options).await?;
        drop(queued);
        let active = ActiveLease::new(lease, &self.metrics, kind, self.client);
        let client = InferenceServiceClient::new(active.lease.worker().channel.clone());
        match call(client).await {
            Ok(reply) => Ok((active, reply)),
            Err(status) => Err(worker_error(&active.lease, status).await),
        }
    }
}

/// A request's grammar, if it has one.
/// The request's constraint (a GBNF grammar, else a JSON schema), whose
/// length is bounded here before it reaches a worker.
/// The most tool calls one message of a conversation holds.
fn most_calls(messages: &[pb::ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.tool_calls.len())
        .max()
        .unwrap_or(0)
}

fn grammar(sampling: Option<&pb::SamplingParams>) -> Option<&str> {
    let grammar = sampling.and_then(|s| s.grammar.as_deref());
    let schema = sampling.and_then(|s| s.json_schema.as_deref());
    match (grammar, schema) {
        (Some(g), Some(s)) => Some(if g.len() >= s.len() { g } else { s }),
        (g, s) => g.or(s),
    }
}

/// What a worker's error status means: its own refusals pass through; a
/// broken connection is explained by how the worker ended, when it did.
async fn worker_error(lease: &Lease, status: Status) -> InferenceError {
    let refused = matches!(
        status.code(),
        Code::InvalidArgument | Code::FailedPrecondition | Code::ResourceExhausted | Code::NotFound
    );
    if refused {
        return InferenceError::Worker(status);
    }
    match lease.worker().exit_reason(EXIT_REASON_WAIT).await {
        Some(exit) if exit.crashed() => InferenceError::WorkerFailed {
            model: lease.model().to_owned(),
            exit,
        },
        Some(_) => InferenceError::WorkerStopped {
            model: lease.model().to_owned(),
        },
        None => InferenceError::Worker(status),
    }
}
