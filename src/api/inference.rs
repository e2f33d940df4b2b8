//! `llama_router.v1.InferenceService` in the daemon: a thin adapter over the
//! inference layer ([`crate::inference`]), which leases, relays and fails
//! with a typed [`InferenceError`]. This is the one place that error becomes
//! a gRPC status.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::convert;
use crate::engine::limits::LimitError;
use crate::inference::{Inference, InferenceError, Pieces};
use crate::proto::pb;
use crate::proto::pb::inference_service_server::InferenceService;

/// A request past a bound is the client's error. The worker's own service
/// refuses with this too (for the bounds it checks again), so both gRPC
/// servers say it the same way.
impl From<LimitError> for Status {
    fn from(e: LimitError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// The gRPC status a client sees for an inference error.
impl From<InferenceError> for Status {
    fn from(e: InferenceError) -> Self {
        match e {
            // Missing or past a bound: the client's error.
            InferenceError::NoModel => Status::invalid_argument(e.to_string()),
            InferenceError::Limit(e) => e.into(),
            InferenceError::Supervisor(e) => convert::status(e),
            // The worker died under the request: try again (it restarts).
            InferenceError::WorkerFailed { .. } | InferenceError::WorkerStopped { .. } => {
                Status::unavailable(e.to_string())
            }
            InferenceError::Worker(status) => status,
        }
    }
}

type PieceStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateResponse, Status>> + Send>>;

/// The stream as gRPC sends it. Dropping it (the client left) drops the
/// layer's stream, which cancels the generation.
fn statuses(pieces: Pieces) -> PieceStream {
    Box::pin(pieces.map(|piece| piece.map_err(Status::from)))
}

/// The data-plane service.
#[derive(Clone)]
pub struct InferenceServiceImpl {
    inference: Inference,
}

impl InferenceServiceImpl {
    /// The service over `inference`, which HTTP shares.
    pub fn new(inference: Inference) -> Self {
        InferenceServiceImpl { inference }
    }
}

#[tonic::async_trait]
impl InferenceService for InferenceServiceImpl {
    type GenerateStream = PieceStream;
    type ChatStream = PieceStream;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let pieces = self.inference.generate(request.into_inner()).await?;
        Ok(Response::new(statuses(pieces)))
    }

    async fn chat(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let pieces = self.inference.chat(request.into_inner()).await?;
        Ok(Response::new(statuses(pieces)))
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        Ok(Response::new(
            self.inference.tokenize(request.into_inner()).await?,
        ))
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        Ok(Response::new(
            self.inference.detokenize(request.into_inner()).await?,
        ))
    }

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        Ok(Response::new(
            self.inference.embed(request.into_inner()).await?,
        ))
    }

    async fn apply_template(
        &self,
        request: Request<pb::ApplyTemplateRequest>,
    ) -> Result<Response<pb::ApplyTemplateResponse>, Status> {
        Ok(Response::new(
            self.inference.apply_template(request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::supervisor::SupervisorError;

    fn status(e: InferenceError) -> (Code, String) {
        let s = Status::from(e);
        (s.code(), s.message().to_owned())
    }

    #[test]
    fn a_request_past_a_bound_is_invalid_argument() {
        let (code, message) = status(LimitError::StopTooLong { len: 1 }.into());
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains("1 bytes"), "{message}");
        let (code, message) = status(InferenceError::NoModel);
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains("model is empty"), "{message}");
    }

    #[test]
    fn supervisor_errors_keep_their_codes() {
        let cases = [
            (SupervisorError::NotFound("m".into()), Code::NotFound),
            (
                SupervisorError::FailedPrecondition("bad".into()),
                Code::FailedPrecondition,
            ),
            (
                SupervisorError::ResourceExhausted("full".into()),
                Code::ResourceExhausted,
            ),
            (SupervisorError::Unavailable("no".into()), Code::Unavailable),
            (SupervisorError::Stopped, Code::Unavailable),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            assert_eq!(status(e.into()), (code, text));
        }
        let (_, message) = status(SupervisorError::NotFound("nope".into()).into());
        assert!(message.contains("no model named \"nope\""), "{message}");
    }

    #[test]
    fn a_worker_that_died_is_unavailable_with_how() {
        let failed = InferenceError::WorkerFailed {
            model: "gemma".into(),
            exit: crate::worker::WorkerEnded::from(crate::worker::WorkerExit::Signaled {
                signal: libc::SIGSEGV,
                core_dumped: false,
            }),
        };
        assert_eq!(
            status(failed),
            (
                Code::Unavailable,
                "worker for model gemma failed: worker killed by SIGSEGV".to_owned()
            )
        );
        let stopped = InferenceError::WorkerStopped {
            model: "gemma".into(),
        };
        assert_eq!(
            status(stopped),
            (Code::Unavailable, "model gemma was unloaded".to_owned())
        );
    }

    #[test]
    fn a_workers_own_status_passes_through() {
        for code in [Code::InvalidArgument, Code::Cancelled, Code::Internal] {
            let e = InferenceError::Worker(Status::new(code, "why"));
            assert_eq!(status(e), (code, "why".to_owned()));
        }
    }
}
