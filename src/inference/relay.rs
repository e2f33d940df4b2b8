//! Relaying a worker's token stream to whichever interface asked for it,
//! holding the model's lease (and its active-request gauge) until the
//! stream ends or the client leaves.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::{InferenceError, worker_error};
use crate::metrics::{GaugeGuard, Metrics};
use crate::proto::pb;
use crate::supervisor::Lease;
use crate::worker::in_flight::Tracked;

/// A relayed stream of generated pieces; an error ends it.
pub type Pieces = Pin<Box<dyn Stream<Item = Result<pb::GenerateResponse, InferenceError>> + Send>>;

/// A lease, counted as an active request while it lives.
pub(super) struct ActiveLease {
    pub(super) lease: Lease,
    _active: GaugeGuard,
    /// Listed among the worker's requests (for its crash report) meanwhile.
    pub(super) tracked: Tracked,
}

impl ActiveLease {
    pub(super) fn new(
        lease: Lease,
        metrics: &Metrics,
        kind: &'static str,
        client: &'static str,
    ) -> Self {
        ActiveLease {
            _active: metrics.active(lease.model()),
            tracked: lease.worker().in_flight.begin(kind, client),
            lease,
        }
    }
}

/// Relays a worker's stream; the lease lives as long as the relay, and a
/// client that leaves drops the returned stream, which ends the relay and
/// drops the worker's stream, which cancels the request there.
/// The last piece's usage goes into the metrics.
pub(super) fn relay(
    active: ActiveLease,
    metrics: Metrics,
    mut upstream: Streaming<pb::GenerateResponse>,
) -> Pieces {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        // Take the whole of `active`: naming only `active.lease` below would
        // move just that field in, and the active-request guard would be
        // dropped as soon as the stream started.
        let active = active;
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = upstream.message() => next,
            };
            let item = match next {
                Ok(Some(piece)) => {
                    metrics.tokens(active.lease.model(), piece.token_ids.len());
                    active.tracked.generated(piece.token_ids.len());
                    if let Some(u) = &piece.usage {
                        metrics.finished(
                            active.lease.model(),
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
                Err(status) => Err(worker_error(&active.lease, status).await),
            };
            let last = item.is_err();
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
