//! Why an inference request failed, as one typed error both interfaces map
//! to their own status once: gRPC in `api::inference`, HTTP in
//! `api::http::error`. The causes keep what each interface needs to say (the
//! supervisor's reason, how a worker ended); the worker's own refusals stay
//! the `tonic::Status` it sent, because the worker is a gRPC peer and its
//! status code is the typed part of what it said.

use crate::engine::limits::LimitError;
use crate::supervisor::SupervisorError;
use crate::worker::WorkerEnded;

/// An inference request that did not get (or finish) its answer.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The request names no model.
    #[error("model is empty: name one (see ListModels)")]
    NoModel,
    /// A count in the request is past a bound; refused before any lease.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The supervisor could not lease the model (unknown, unusable, queue
    /// full, load failed, stopping).
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The model's worker crashed, hung or failed to start during the call.
    #[error("worker for model {model} failed: {exit}")]
    WorkerFailed {
        /// The model it served.
        model: String,
        /// How it ended (`worker killed by SIGSEGV`, with its last stderr lines).
        exit: WorkerEnded,
    },
    /// The model's worker was stopped on purpose (unload, eviction, shutdown)
    /// during the call.
    #[error("model {model} was unloaded")]
    WorkerStopped {
        /// The model it served.
        model: String,
    },
    /// The worker refused the call or it broke for a reason the worker's
    /// exit does not explain; its status passes through as it was.
    #[error("{}", .0.message())]
    Worker(tonic::Status),
}
