//! The daemon's liveness watch over one running worker: pings it and
//! judges the answer (a frozen process, a stuck engine step, a broken worker).

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::exit::Hang;
use crate::proto::worker_pb::PingRequest;
use crate::proto::worker_pb::worker_service_client::WorkerServiceClient;
use crate::settings::WorkerSettings;

/// Consecutive failed pings (not timeouts) that count as a broken worker.
const PING_ERRORS_TOLERATED: u32 = 3;

/// Pings the worker (from READY on: start-up has `start_timeout`); reports
/// a hang: no answer within `ping_timeout` (a frozen process), or an engine
/// whose current decode step has run longer than `step_timeout` (a stuck
/// engine; the worker answers pings off the decode thread, so a long batch
/// that still makes steps is not a hang), or one-time preparation longer
/// than `start_timeout`; or a broken worker.
pub(super) async fn liveness(
    mut client: WorkerServiceClient<Channel>,
    settings: WorkerSettings,
    hung: mpsc::Sender<Hang>,
) {
    let (timeout, step_timeout) = (settings.ping_timeout, settings.step_timeout);
    let interval = (timeout.min(step_timeout) / 2).max(Duration::from_millis(100));
    let mut errors = 0u32;
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, client.ping(PingRequest {})).await {
            Ok(Ok(reply)) => {
                errors = 0;
                let reply = reply.into_inner();
                let running = Duration::from_millis(reply.step_running_ms);
                let limit = if reply.warming {
                    settings.start_timeout
                } else {
                    step_timeout
                };
                if running > limit {
                    let hang = Hang::Step {
                        preparing: reply.warming,
                        running,
                        limit,
                        steps: reply.steps,
                    };
                    let _ = hung.send(hang).await;
                    return;
                }
            }
            Ok(Err(status)) => {
                errors += 1;
                if errors >= PING_ERRORS_TOLERATED {
                    let error = status.message().to_owned();
                    let _ = hung.send(Hang::PingErrors(error)).await;
                    return;
                }
            }
            Err(_) => {
                let _ = hung.send(Hang::PingTimeout(timeout)).await;
                return;
            }
        }
    }
}
