//! systemd integration through `sd_notify`: READY/RELOADING/STOPPING, a
//! one-line STATUS kept current, and a watchdog that pings only while the
//! actors answer a liveness probe (a deadlocked daemon stops pinging and
//! systemd restarts it). Without `NOTIFY_SOCKET` every call is a no-op.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::supervisor::{ModelState, ModelView};

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Start-up finished (listeners bound, catalog loaded).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A configuration reload starts (SIGHUP); `ready` must follow.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read CLOCK_MONOTONIC for the reload notification");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Replaces the one-line status `systemctl status` shows.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// "3 models, 1 running: gemma-3-270m; 0 failed".
pub fn status_line(models: &[ModelView]) -> String {
    let running: Vec<&str> = models
        .iter()
        .filter(|m| matches!(m.state, ModelState::Ready | ModelState::Loading))
        .map(|m| m.id.as_str())
        .collect();
    let failed = models
        .iter()
        .filter(|m| m.state == ModelState::Failed)
        .count();
    let names = if running.is_empty() {
        String::new()
    } else {
        format!(": {}", running.join(", "))
    };
    let plural = if models.len() == 1 { "" } else { "s" };
    format!(
        "{} model{plural}, {} running{names}; {failed} failed",
        models.len(),
        running.len()
    )
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Every `period / 2`, runs `probe` (bounded by `period / 4`) and calls `ping`
/// only when it succeeded. Never returns.
pub async fn watchdog_loop<P, F>(period: Duration, probe: P, mut ping: impl FnMut())
where
    P: Fn() -> F,
    F: Future<Output = Result<(), String>>,
{
    let mut tick = tokio::time::interval(period / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(period / 4, probe()).await {
            Ok(Ok(())) => ping(),
            Ok(Err(who)) => {
                tracing::error!(actor = %who, "liveness probe failed; withholding the watchdog ping")
            }
            Err(_) => tracing::error!(
                "an actor did not answer its liveness probe within {} ms; withholding the watchdog ping",
                (period / 4).as_millis()
            ),
        }
    }
}

/// Sends `WATCHDOG=1`.
pub fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn view(id: &str, state: ModelState) -> ModelView {
        ModelView {
            id: id.into(),
            state,
            files: vec![],
            projector: None,
            size_bytes: 0,
            name: String::new(),
            architecture: String::new(),
            quantization: String::new(),
            parameter_count: 0,
            context_length: 0,
            failure_reason: None,
            last_used: None,
            pinned: false,
            resident_bytes: 0,
            worker_pid: None,
            aliases: Vec::new(),
            settings: Default::default(),
            gpu: None,
            note: None,
        }
    }

    #[test]
    fn status_line_names_running_models() {
        let models = [
            view("gemma-3-270m", ModelState::Ready),
            view("qwen", ModelState::Discovered),
            view("bad", ModelState::Failed),
        ];
        assert_eq!(
            status_line(&models),
            "3 models, 1 running: gemma-3-270m; 1 failed"
        );
        assert_eq!(status_line(&[]), "0 models, 0 running; 0 failed");
        assert_eq!(
            status_line(&[view("solo", ModelState::Discovered)]),
            "1 model, 0 running; 0 failed"
        );
    }

    async fn pings_with(probe_ok: bool, stalls: bool) -> usize {
        let pings = Arc::new(AtomicUsize::new(0));
        let counter = pings.clone();
        let task = tokio::spawn(watchdog_loop(
            Duration::from_millis(400),
            move || async move {
                if stalls {
                    std::future::pending::<()>().await;
                }
                if probe_ok {
                    Ok(())
                } else {
                    Err("catalog".to_owned())
                }
            },
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
        ));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        task.abort();
        pings.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn pings_only_while_the_actors_answer() {
        assert!(pings_with(true, false).await >= 9, "ping every half period");
        assert_eq!(
            pings_with(true, true).await,
            0,
            "a stalled actor stops the pings"
        );
        assert_eq!(
            pings_with(false, false).await,
            0,
            "a stopped actor stops the pings"
        );
    }
}
