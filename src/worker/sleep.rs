//! Parking a running worker, the daemon's side: the `Park` and `Wake` calls
//! (the worker's side is `engine/sleep.rs`), each bounded in time.

use std::time::Duration;

use crate::proto::worker_pb::worker_service_client::WorkerServiceClient;
use crate::proto::worker_pb::{ParkRequest, WakeRequest};

use super::process::WorkerLink;

/// Why a park or a wake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SleepError {
    /// No answer in time.
    #[error("the worker did not {0} within {1:?}")]
    Timeout(&'static str, Duration),
    /// The worker answered with an error (its message).
    #[error("the worker could not {0}: {1}")]
    Failed(&'static str, String),
}

impl WorkerLink {
    /// Parks the worker: it frees its context and keeps the model.
    pub async fn park(&self, wait: Duration) -> Result<(), SleepError> {
        let mut client = WorkerServiceClient::new(self.channel.clone());
        bounded("park", wait, client.park(ParkRequest {})).await
    }

    /// Wakes the parked worker: it makes its context again.
    pub async fn wake(&self, wait: Duration) -> Result<(), SleepError> {
        let mut client = WorkerServiceClient::new(self.channel.clone());
        bounded("wake", wait, client.wake(WakeRequest {})).await
    }
}

async fn bounded<T>(
    what: &'static str,
    wait: Duration,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<(), SleepError> {
    match tokio::time::timeout(wait, call).await {
        Err(_) => Err(SleepError::Timeout(what, wait)),
        Ok(Err(status)) => Err(SleepError::Failed(what, status.message().to_owned())),
        Ok(Ok(_)) => Ok(()),
    }
}
