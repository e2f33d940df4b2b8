//! Turns the supervisor's model events into counters and load durations.

use std::collections::HashMap;
use std::time::SystemTime;

use tokio::sync::broadcast::{self, error::RecvError};

use super::Metrics;
use crate::supervisor::{ModelEvent, ModelState};

/// Counts what `event` means; `loading_since` remembers when loads began.
pub fn record(
    metrics: &Metrics,
    loading_since: &mut HashMap<String, SystemTime>,
    event: &ModelEvent,
) {
    use ModelState::{Failed, Loading, Ready, Unloading};
    if event.state == event.previous {
        return;
    }
    match (event.previous, event.state) {
        (_, Loading) => {
            loading_since.insert(event.id.clone(), event.at);
        }
        (Loading, Ready) => {
            let took = loading_since
                .remove(&event.id)
                .and_then(|since| event.at.duration_since(since).ok());
            metrics.loaded(&event.id, took);
        }
        (Loading, Failed) => {
            loading_since.remove(&event.id);
            metrics.load_failed(&event.id);
        }
        // A ready model fails only when its worker does.
        (Ready, Failed) => metrics.crashed(&event.id),
        (_, Unloading) => {
            loading_since.remove(&event.id);
            metrics.unloading(&event.id, event.is_eviction());
        }
        _ => {}
    }
}

/// Records `events` until the supervisor is gone.
pub fn spawn(metrics: Metrics, mut events: broadcast::Receiver<ModelEvent>) {
    tokio::spawn(async move {
        let mut loading_since = HashMap::new();
        loop {
            match events.recv().await {
                Ok(event) => record(&metrics, &mut loading_since, &event),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "metrics missed {missed} model events (counters undercount)"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::supervisor::UnloadCause;

    fn event(
        id: &str,
        previous: ModelState,
        state: ModelState,
        reason: Option<&str>,
        at: SystemTime,
    ) -> ModelEvent {
        ModelEvent {
            id: id.to_owned(),
            state,
            previous,
            reason: reason.map(str::to_owned),
            // The reasons these tests use for unloads, as the supervisor types them.
            cause: match reason {
                Some("evicted (least recently used) to load c") => Some(UnloadCause::Evicted(
                    crate::supervisor::Eviction::ToLoad("c".into()),
                )),
                Some("requested") => Some(UnloadCause::Requested),
                _ => None,
            },
            at,
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn events_become_counters_and_load_durations() {
        use ModelState::*;
        let metrics = Metrics::new();
        let mut since = HashMap::new();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let t1 = t0 + Duration::from_millis(1_500);
        for e in [
            event("a", Discovered, Loading, None, t0),
            event("a", Loading, Ready, None, t1),
            event("a", Ready, Failed, Some("worker killed by SIGSEGV"), t1),
            event("b", Discovered, Loading, None, t0),
            event("b", Loading, Failed, Some("truncated"), t1),
            event(
                "a",
                Ready,
                Unloading,
                Some("evicted (least recently used) to load c"),
                t1,
            ),
            event("a", Ready, Unloading, Some("requested"), t1),
            event("a", Ready, Ready, Some("no change"), t1),
        ] {
            record(&metrics, &mut since, &e);
        }
        let text = metrics.render(&crate::supervisor::StatusView {
            models_max: 1,
            host_cache_used: 5,
            host_cache_limit: 0,
            by_state: vec![(Ready, 2), (Failed, 1)],
        });
        let expect = [
            "llama_router_model_loads_total{model=\"a\"} 1",
            "llama_router_model_load_failures_total{model=\"b\"} 1",
            "llama_router_worker_crashes_total{model=\"a\"} 1",
            "llama_router_model_unloads_total{model=\"a\"} 2",
            "llama_router_model_evictions_total{model=\"a\"} 1",
            "llama_router_model_load_duration_seconds_sum{model=\"a\"} 1.5",
            "llama_router_model_load_duration_seconds_count{model=\"a\"} 1",
            "llama_router_models{state=\"ready\"} 2",
            "llama_router_models{state=\"failed\"} 1",
            "llama_router_host_cache_bytes 5",
        ];
        for want in expect {
            assert!(line(&text, want).is_some(), "missing {want:?} in\n{text}");
        }
        assert!(line(&text, "llama_router_model_loads_total{model=\"b\"}").is_none());
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn request_gauges_follow_their_guards_and_generations_fill_histograms() {
        let metrics = Metrics::new();
        let queued = metrics.queued();
        let active = metrics.active("m");
        let status = crate::supervisor::StatusView {
            models_max: 0,
            host_cache_used: 0,
            host_cache_limit: 0,
            by_state: vec![],
        };
        let text = metrics.render(&status);
        assert!(
            line(&text, "llama_router_requests_queued 1").is_some(),
            "{text}"
        );
        assert!(
            line(&text, "llama_router_requests_active{model=\"m\"} 1").is_some(),
            "{text}"
        );
        drop((queued, active));
        metrics.tokens("m", 10);
        metrics.finished("m", 7, 10, Duration::from_millis(20), 50.0);
        metrics.tokens("m", 1);
        metrics.finished("m", 3, 1, Duration::from_millis(40), f64::INFINITY);
        let text = metrics.render(&status);
        for want in [
            "llama_router_requests_queued 0",
            "llama_router_requests_active{model=\"m\"} 0",
            "llama_router_prompt_tokens_total{model=\"m\"} 10",
            "llama_router_generated_tokens_total{model=\"m\"} 11",
            "llama_router_time_to_first_token_seconds_count{model=\"m\"} 2",
            "llama_router_generation_tokens_per_second_count{model=\"m\"} 1",
        ] {
            assert!(line(&text, want).is_some(), "missing {want:?} in\n{text}");
        }
    }
}
