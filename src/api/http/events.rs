//! `GET /events` (ours): the model events gRPC's WatchEvents carries, as
//! server-sent events, so that a page needs no polling. The stream opens
//! with a `snapshot` of every model, then sends one `model` event per state
//! change (with the model as `GET /models` shows it), and a `status` event
//! (as `GET /status`) after each change and every `TICK`. On each tick,
//! models whose view changed without a state change (a worker started, its
//! pid, last use) are sent as `model` events with `"update": true`. A
//! watcher that falls behind gets a fresh `snapshot` instead of an error. A
//! comment line every 15 s keeps proxies from closing it; it ends when the
//! daemon stops.
//!
//! However many pages watch, the supervisor is asked once: one [`EventHub`]
//! task (started by the first watcher) turns the supervisor's events and the
//! clock into these messages and publishes them on a broadcast channel,
//! keeping the last view of every model and the last status for the
//! snapshot a new watcher starts with. Each watcher only forwards. At most
//! [`MAX_WATCHERS`] watch at once; one more gets a 503 (`overloaded`, with
//! `Retry-After`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::HttpState;
use super::error::ApiError;
use super::router_models::model_json;
use super::status::status_json;
use crate::supervisor::{ModelEvent, SupervisorError};

/// How often the status, and views changed without an event, are sent.
const TICK: Duration = Duration::from_secs(2);
/// The heartbeat, as for the completion streams.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(15);
/// Watchers (`GET /events` streams) open at once.
pub const MAX_WATCHERS: usize = 32;
/// Messages the hub keeps for a slow watcher before it gets a new snapshot.
const BACKLOG: usize = 64;

/// One message to every watcher: its SSE event name and JSON text.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    name: &'static str,
    data: String,
}

/// What a new watcher starts with: every model's last view, the last status.
#[derive(Debug, Default)]
struct Frame {
    models: BTreeMap<String, Value>,
    status: Option<Value>,
}

impl Frame {
    fn snapshot(&self) -> Message {
        let models: Vec<&Value> = self.models.values().collect();
        message("snapshot", &json!({"models": models}))
    }
}

/// The hub's last frame: none before its first listing, an error when the
/// supervisor could not be listed.
type Latest = Option<Result<Arc<Frame>, String>>;

/// The one task that asks the supervisor, and the watchers' admission.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

struct Inner {
    watchers: Arc<Semaphore>,
    max: usize,
    messages: broadcast::Sender<Message>,
    latest: watch::Sender<Latest>,
    running: AtomicBool,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new(MAX_WATCHERS)
    }
}

impl EventHub {
    /// A hub that lets at most `max` watchers in at once.
    pub fn new(max: usize) -> Self {
        let (messages, _) = broadcast::channel(BACKLOG);
        let (latest, _) = watch::channel(None);
        EventHub {
            inner: Arc::new(Inner {
                watchers: Arc::new(Semaphore::new(max)),
                max,
                messages,
                latest,
                running: AtomicBool::new(false),
            }),
        }
    }

    /// A watcher's place, or the 503 of one too many.
    pub(super) fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.inner.watchers)
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::overloaded(format!(
                    "too many event watchers: at most {} may watch /events and /models/sse at once; retry shortly",
                    self.inner.max
                ))
            })
    }

    /// Starts the hub's task unless it runs.
    fn start(&self, state: &HttpState) {
        if !self.inner.running.swap(true, Ordering::AcqRel) {
            // A failed start before this one is retried, not repeated to watchers.
            if matches!(&*self.inner.latest.borrow(), Some(Err(_))) {
                self.inner.latest.send_replace(None);
            }
            // Subscribe before the first listing, so no change falls between them.
            let events = state.supervisor.events();
            tokio::spawn(run_hub(self.clone(), state.clone(), events));
        }
    }

    fn publish(&self, name: &'static str, data: &Value) {
        // No watcher is no error.
        let _ = self.inner.messages.send(message(name, data));
    }

    fn frame(&self) -> Option<Arc<Frame>> {
        match &*self.inner.latest.borrow() {
            Some(Ok(frame)) => Some(Arc::clone(frame)),
            _ => None,
        }
    }

    fn set_frame(&self, frame: Frame) {
        self.inner.latest.send_replace(Some(Ok(Arc::new(frame))));
    }
}

fn message(name: &'static str, data: &Value) -> Message {
    Message {
        name,
        data: data.to_string(),
    }
}

/// What an event says of its model: its view; null only once it is gone
/// (not found); otherwise (the supervisor could not say) the last view sent,
/// if any, so that a page never drops a model on a passing error.
fn event_model(got: Result<Value, SupervisorError>, last: Option<&Value>) -> Option<Value> {
    match got {
        Ok(view) => Some(view),
        Err(SupervisorError::NotFound(_)) => Some(Value::Null),
        Err(_) => last.cloned(),
    }
}

/// The event of a state change, with the model as it is now.
fn model_event(e: &ModelEvent, model: Option<&Value>) -> Value {
    let mut data = json!({
        "id": e.id,
        "state": e.state.name(),
        "previous": e.previous.name(),
        "reason": e.reason,
        "cause": e.cause.as_ref().map(ToString::to_string),
        "at_unix_ms": crate::util::unix_ms(e.at),
    });
    if let (Some(model), Some(map)) = (model, data.as_object_mut()) {
        map.insert("model".to_owned(), model.clone());
    }
    data
}

/// Every model's view, by id; `None` when the supervisor cannot list.
async fn views(state: &HttpState) -> Result<BTreeMap<String, Value>, SupervisorError> {
    let models = state.supervisor.list().await?;
    Ok(models
        .iter()
        .map(|m| (m.id.clone(), model_json(m)))
        .collect())
}

/// Resolves once the daemon stops (or its sender is gone).
pub(super) async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// The hub: one listing and status per tick and per event, for every watcher.
async fn run_hub(hub: EventHub, state: HttpState, mut events: broadcast::Receiver<ModelEvent>) {
    let first = match views(&state).await {
        Ok(models) => models,
        Err(e) => {
            hub.inner.latest.send_replace(Some(Err(e.to_string())));
            hub.inner.running.store(false, Ordering::Release);
            return;
        }
    };
    let mut frame = Frame {
        models: first,
        status: status_json(&state).await.ok(),
    };
    hub.set_frame(Frame {
        models: frame.models.clone(),
        status: frame.status.clone(),
    });
    let stop = stopped(state.stopping.clone());
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                // Nobody watching: nothing to ask; the next tick with a watcher catches up.
                if hub.inner.messages.receiver_count() == 0 {
                    continue;
                }
                if let Ok(now) = views(&state).await {
                    for (id, view) in &now {
                        if frame.models.get(id) != Some(view) {
                            hub.publish("model", &update(id, view));
                        }
                    }
                    frame.models = now;
                }
                frame.status = publish_status(&hub, &state).await.or(frame.status.take());
            }
            event = events.recv() => match event {
                Ok(e) => {
                    let got = state.supervisor.get(&e.id).await.map(|m| model_json(&m));
                    let model = event_model(got, frame.models.get(&e.id));
                    match &model {
                        Some(Value::Null) => { frame.models.remove(&e.id); }
                        Some(view) => { frame.models.insert(e.id.clone(), view.clone()); }
                        None => {}
                    }
                    hub.publish("model", &model_event(&e, model.as_ref()));
                    frame.status = publish_status(&hub, &state).await.or(frame.status.take());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Ok(now) = views(&state).await {
                        frame.models = now;
                        let _ = hub.inner.messages.send(frame.snapshot());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
        hub.set_frame(Frame {
            models: frame.models.clone(),
            status: frame.status.clone(),
        });
    }
    hub.inner.running.store(false, Ordering::Release);
}

/// A view that changed without a state change.
fn update(id: &str, view: &Value) -> Value {
    let state = view.get("state").cloned().unwrap_or(Value::Null);
    json!({
        "id": id,
        "state": state,
        "previous": state,
        "reason": null,
        "cause": null,
        "at_unix_ms": crate::util::unix_ms(SystemTime::now()),
        "update": true,
        "model": view,
    })
}

async fn publish_status(hub: &EventHub, state: &HttpState) -> Option<Value> {
    match status_json(state).await {
        Ok(s) => {
            hub.publish("status", &s);
            Some(s)
        }
        Err(e) => {
            hub.publish("error", &json!({"message": e.message}));
            None
        }
    }
}

type Tx = mpsc::Sender<Result<Event, Infallible>>;

async fn send(tx: &Tx, m: Message) -> bool {
    let event = Event::default().event(m.name).data(m.data);
    tx.send(Ok(event)).await.is_ok()
}

/// One watcher: the snapshot, then whatever the hub publishes.
async fn forward(
    hub: EventHub,
    mut messages: broadcast::Receiver<Message>,
    tx: Tx,
    _place: OwnedSemaphorePermit,
) {
    let mut latest = hub.inner.latest.subscribe();
    let first: Latest = match latest.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    };
    drop(latest);
    let frame = match first {
        Some(Ok(frame)) => frame,
        Some(Err(why)) => {
            let _ = send(&tx, message("error", &json!({"message": why}))).await;
            return;
        }
        None => return,
    };
    if !send(&tx, frame.snapshot()).await {
        return;
    }
    if let Some(status) = &frame.status {
        if !send(&tx, message("status", status)).await {
            return;
        }
    }
    loop {
        let m = tokio::select! {
            () = tx.closed() => return,
            m = messages.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(broadcast::error::RecvError::Lagged(_)) => match hub.frame() {
                Some(frame) => frame.snapshot(),
                None => return,
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !send(&tx, m).await {
            return;
        }
    }
}

/// `GET /events`.
pub async fn events(State(state): State<HttpState>) -> Response {
    let hub = state.events.clone();
    let place = match hub.admit() {
        Ok(place) => place,
        Err(e) => return e.into_response(),
    };
    // Subscribe before the snapshot is read, so no message falls between them.
    let messages = hub.inner.messages.subscribe();
    hub.start(&state);
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(forward(hub, messages, tx, place));
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_watcher_past_the_bound_is_refused_with_a_503() {
        let hub = EventHub::new(2);
        let first = hub.admit().unwrap();
        let _second = hub.admit().unwrap();
        let refused = hub.admit().unwrap_err();
        assert_eq!(refused.status.as_u16(), 503);
        assert_eq!(refused.code, "overloaded");
        assert!(refused.message.contains("at most 2"), "{}", refused.message);
        let response = refused.into_response();
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "2");
        drop(first);
        assert!(hub.admit().is_ok(), "a closed watcher frees its place");
    }

    #[test]
    fn only_a_model_not_found_is_sent_as_gone() {
        let last = json!({"id": "m", "state": "ready"});
        let gone = event_model(Err(SupervisorError::NotFound("m".into())), Some(&last));
        assert_eq!(gone, Some(Value::Null));
        let busy = Err(SupervisorError::Unavailable("busy".into()));
        assert_eq!(event_model(busy, Some(&last)), Some(last.clone()));
        assert_eq!(event_model(Err(SupervisorError::Stopped), None), None);
        let now = json!({"id": "m", "state": "loading"});
        assert_eq!(event_model(Ok(now.clone()), Some(&last)), Some(now));
    }

    #[test]
    fn an_event_without_a_known_view_carries_no_model_key() {
        let e = ModelEvent {
            id: "m".into(),
            state: crate::supervisor::ModelState::Ready,
            previous: crate::supervisor::ModelState::Loading,
            reason: None,
            cause: None,
            at: SystemTime::now(),
        };
        assert!(model_event(&e, None).get("model").is_none());
        assert_eq!(model_event(&e, Some(&Value::Null))["model"], Value::Null);
    }
}
