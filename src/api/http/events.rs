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

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::HttpState;
use super::router_models::model_json;
use super::status::status_json;
use crate::supervisor::ModelEvent;

/// How often the status, and views changed without an event, are sent.
const TICK: Duration = Duration::from_secs(2);
/// The heartbeat, as for the completion streams.
const HEARTBEAT: Duration = Duration::from_secs(15);

type Tx = mpsc::Sender<Result<Event, Infallible>>;

async fn send(tx: &Tx, name: &str, data: &Value) -> bool {
    let event = Event::default().event(name).data(data.to_string());
    tx.send(Ok(event)).await.is_ok()
}

/// What the watcher was last sent of each model.
type Sent = HashMap<String, Value>;

/// Every model; an error (supervisor stopped) ends the stream.
async fn snapshot(state: &HttpState, tx: &Tx, sent: &mut Sent) -> bool {
    match state.supervisor.list().await {
        Ok(models) => {
            let models: Vec<Value> = models.iter().map(model_json).collect();
            *sent = models
                .iter()
                .filter_map(|m| Some((m.get("id")?.as_str()?.to_owned(), m.clone())))
                .collect();
            send(tx, "snapshot", &json!({"models": models})).await
        }
        Err(e) => {
            let _ = send(tx, "error", &json!({"message": e.to_string()})).await;
            false
        }
    }
}

/// The models whose view changed since they were last sent, as `update` events.
async fn updates(state: &HttpState, tx: &Tx, sent: &mut Sent) -> bool {
    let Ok(models) = state.supervisor.list().await else {
        return true;
    };
    for m in &models {
        let view = model_json(m);
        if sent.get(&m.id) == Some(&view) {
            continue;
        }
        let data = json!({
            "id": m.id,
            "state": m.state.name(),
            "previous": m.state.name(),
            "reason": null,
            "cause": null,
            "at_unix_ms": crate::api::convert::unix_ms(Some(SystemTime::now())),
            "update": true,
            "model": view,
        });
        sent.insert(m.id.clone(), view);
        if !send(tx, "model", &data).await {
            return false;
        }
    }
    true
}

async fn status(state: &HttpState, tx: &Tx) -> bool {
    match status_json(state).await {
        Ok(s) => send(tx, "status", &s).await,
        Err(e) => {
            let _ = send(tx, "error", &json!({"message": e.message})).await;
            false
        }
    }
}

/// An event with the model as it is now (null once it is gone).
async fn model_event(state: &HttpState, e: &ModelEvent) -> Value {
    let view = state.supervisor.get(&e.id).await.ok();
    json!({
        "id": e.id,
        "state": e.state.name(),
        "previous": e.previous.name(),
        "reason": e.reason,
        "cause": e.cause.as_ref().map(ToString::to_string),
        "at_unix_ms": crate::api::convert::unix_ms(Some(e.at)),
        "model": view.as_ref().map(model_json),
    })
}

/// Resolves once the daemon stops (or its sender is gone).
async fn stopped(mut stopping: tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

async fn run(state: HttpState, mut events: broadcast::Receiver<ModelEvent>, tx: Tx) {
    let mut sent = Sent::new();
    if !snapshot(&state, &tx, &mut sent).await || !status(&state, &tx).await {
        return;
    }
    let stop = stopped(state.stopping.clone());
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    loop {
        let alive = tokio::select! {
            () = &mut stop => return,
            () = tx.closed() => return,
            _ = tick.tick() => {
                updates(&state, &tx, &mut sent).await && status(&state, &tx).await
            }
            event = events.recv() => match event {
                Ok(e) => {
                    let data = model_event(&state, &e).await;
                    match data.get("model").filter(|m| !m.is_null()) {
                        Some(view) => sent.insert(e.id.clone(), view.clone()),
                        None => sent.remove(&e.id),
                    };
                    send(&tx, "model", &data).await && status(&state, &tx).await
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    snapshot(&state, &tx, &mut sent).await
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if !alive {
            return;
        }
    }
}

/// `GET /events`.
pub async fn events(State(state): State<HttpState>) -> impl IntoResponse {
    // Subscribe before the snapshot is taken, so no change falls between them.
    let events = state.supervisor.events();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(run(state, events, tx));
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(HEARTBEAT))
}
