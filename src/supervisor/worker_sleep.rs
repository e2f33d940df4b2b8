//! The model actor's side of parking (`park.rs` has the rules): a task that
//! passes the supervisor's park and wake commands to the running worker, one
//! at a time and in order (a wake never overtakes the park before it), and
//! reports each wake, or the failure that makes the worker no use.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::runtime::{ModelReport, RuntimeReport};
use crate::worker::{LogBook, WorkerLink};

/// How long a park may take: dropping a context is quick.
const PARK_WAIT: Duration = Duration::from_secs(30);

/// What the supervisor asks of a parked (or about to be) worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SleepCommand {
    /// Free the context.
    Park,
    /// Make the context again.
    Wake,
}

/// Follows `commands` for `worker` until the channel closes (the model
/// actor aborts it when the worker ends); `wake_wait` bounds a wake, which
/// makes a context and runs a warm-up decode like a start. Each step is
/// logged, and kept in the model's lines for the console (`logs`).
pub(super) async fn follow(
    worker: WorkerLink,
    mut commands: mpsc::UnboundedReceiver<SleepCommand>,
    report: impl Fn(ModelReport<WorkerLink>),
    wake_wait: Duration,
    logs: LogBook,
) {
    let id = worker.model.clone();
    while let Some(command) = commands.recv().await {
        let started = Instant::now();
        let done = match command {
            SleepCommand::Park => worker.park(PARK_WAIT).await,
            SleepCommand::Wake => worker.wake(wake_wait).await,
        };
        let ms = started.elapsed().as_millis();
        match (command, done) {
            (SleepCommand::Park, Ok(())) => {
                tracing::info!(model = %id, worker_pid = worker.pid, ms, "model {id}: worker parked in {ms} ms (context freed, model kept)");
                logs.push(&id, "INFO", format!("worker parked in {ms} ms"));
            }
            (SleepCommand::Wake, Ok(())) => {
                tracing::info!(model = %id, worker_pid = worker.pid, ms, "model {id}: worker woke in {ms} ms (context made again)");
                logs.push(&id, "INFO", format!("worker woke in {ms} ms"));
                report(ModelReport::Woke);
            }
            (_, Err(e)) => {
                tracing::error!(model = %id, worker_pid = worker.pid, error = %e, "model {id}: {e}");
                logs.push(&id, "ERROR", e.to_string());
                report(ModelReport::SleepFailed(e.to_string()));
                return;
            }
        }
    }
}

/// Wraps a report with its model and load, for [`follow`].
pub(super) fn reporter(
    id: String,
    generation: u64,
    reports: mpsc::UnboundedSender<RuntimeReport<WorkerLink>>,
) -> impl Fn(ModelReport<WorkerLink>) {
    move |report| {
        let _ = reports.send(RuntimeReport {
            id: id.clone(),
            generation,
            report,
        });
    }
}
