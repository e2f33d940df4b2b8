//! `llama_router.v1.InferenceService` in the daemon: each request leases its
//! model from the supervisor (loading it and starting its worker as needed)
//! and is relayed to the worker over its Unix socket. When the worker dies
//! mid-request, the client gets UNAVAILABLE with the reason in words.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert;
use crate::engine::limits::{LimitError, RequestLimits, check_stops};
use crate::metrics::{GaugeGuard, Metrics};
use crate::proto::pb::inference_service_client::InferenceServiceClient;
use crate::proto::pb::inference_service_server::InferenceService;
use crate::proto::pb::{self};
use crate::supervisor::{Lease, SupervisorHandle};

/// How long a broken call waits to learn why the worker ended.
const EXIT_REASON_WAIT: Duration = Duration::from_secs(2);

/// A request past a bound is the client's error.
impl From<LimitError> for Status {
    fn from(e: LimitError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

type PieceStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateResponse, Status>> + Send>>;

/// The data-plane service.
#[derive(Clone)]
pub struct InferenceServiceImpl {
    supervisor: SupervisorHandle,
    metrics: Metrics,
    limits: RequestLimits,
}

/// A lease, counted as an active request while it lives.
struct Held {
    lease: Lease,
    _active: GaugeGuard,
}

impl InferenceServiceImpl {
    /// A service that leases models from `supervisor`, counts requests in
    /// `metrics` and refuses requests past `limits` before leasing anything.
    pub fn new(supervisor: SupervisorHandle, metrics: Metrics, limits: RequestLimits) -> Self {
        InferenceServiceImpl {
            supervisor,
            metrics,
            limits,
        }
    }

    /// Leases `model` (loading it and starting its worker as needed) and runs
    /// `call` on the worker; a failure reads as the client should see it.
    async fn on_worker<R, F, Fut>(&self, model: &str, call: F) -> Result<(Held, R), Status>
    where
        F: FnOnce(InferenceServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        if model.is_empty() {
            return Err(Status::invalid_argument(
                "model is empty: name one (see ListModels)",
            ));
        }
        let queued = self.metrics.queued();
        let lease = self
            .supervisor
            .acquire(model)
            .await
            .map_err(convert::status)?;
        drop(queued);
        let held = Held {
            _active: self.metrics.active(lease.model()),
            lease,
        };
        let client = InferenceServiceClient::new(held.lease.worker().channel.clone());
        match call(client).await {
            Ok(reply) => Ok((held, reply)),
            Err(status) => Err(worker_status(&held.lease, status).await),
        }
    }
}

/// The status a client sees for a worker's error: the worker's own refusals
/// pass through; a broken connection becomes UNAVAILABLE with why it broke.
async fn worker_status(lease: &Lease, status: Status) -> Status {
    let refused = matches!(
        status.code(),
        Code::InvalidArgument | Code::FailedPrecondition | Code::ResourceExhausted | Code::NotFound
    );
    if refused {
        return status;
    }
    match lease.worker().exit_reason(EXIT_REASON_WAIT).await {
        Some(exit) if exit.crashed => Status::unavailable(format!(
            "worker for model {} failed: {}",
            lease.model(),
            exit.reason
        )),
        Some(exit) => Status::unavailable(exit.reason),
        None => status,
    }
}

/// Relays a worker's stream; the lease lives as long as the relay, and a
/// client that leaves drops the worker's stream, which cancels the request there.
/// The last piece's usage goes into the metrics.
fn relay(
    held: Held,
    metrics: Metrics,
    mut upstream: Streaming<pb::GenerateResponse>,
) -> PieceStream {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        // Take the whole of `held`: naming only `held.lease` below would move
        // just that field in, and the active-request guard would be dropped here.
        let held = held;
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = upstream.message() => next,
            };
            let item = match next {
                Ok(Some(piece)) => {
                    metrics.tokens(held.lease.model(), piece.token_ids.len());
                    if let Some(u) = &piece.usage {
                        metrics.finished(
                            held.lease.model(),
                            u.prompt_tokens,
                            u.completion_tokens,
                            Duration::try_from_secs_f64(u.time_to_first_token_ms / 1000.0)
                                .unwrap_or_default(),
                            u.tokens_per_second,
                        );
                    }
                    Ok(piece)
                }
                Ok(None) => return,
                Err(status) => Err(worker_status(&held.lease, status).await),
            };
            let last = item.is_err();
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl InferenceService for InferenceServiceImpl {
    type GenerateStream = PieceStream;
    type ChatStream = PieceStream;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let r = request.into_inner();
        check_stops(&r.stop)?;
        let model = r.model.clone();
        let (held, upstream) = self
            .on_worker(&model, |mut c| async move { c.generate(r).await })
            .await?;
        Ok(Response::new(relay(
            held,
            self.metrics.clone(),
            upstream.into_inner(),
        )))
    }

    async fn chat(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let r = request.into_inner();
        check_stops(&r.stop)?;
        let model = r.model.clone();
        let (held, upstream) = self
            .on_worker(&model, |mut c| async move { c.chat(r).await })
            .await?;
        Ok(Response::new(relay(
            held,
            self.metrics.clone(),
            upstream.into_inner(),
        )))
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let r = request.into_inner();
        let model = r.model.clone();
        let (_, reply) = self
            .on_worker(&model, |mut c| async move { c.tokenize(r).await })
            .await?;
        Ok(reply)
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        let r = request.into_inner();
        let model = r.model.clone();
        let (_, reply) = self
            .on_worker(&model, |mut c| async move { c.detokenize(r).await })
            .await?;
        Ok(reply)
    }

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let r = request.into_inner();
        self.limits.check_embed(r.input.len())?;
        let model = r.model.clone();
        let (_, reply) = self
            .on_worker(&model, |mut c| async move { c.embed(r).await })
            .await?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_past_a_bound_is_invalid_argument() {
        let status = Status::from(LimitError::StopTooLong { len: 1 });
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
