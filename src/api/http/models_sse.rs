//! `GET /models/sse`: llama-server's router-mode stream of model events, as
//! `data:` lines of `{"model", "event": "model_status", "data": {"status"}}`
//! (`status` as `GET /models` words it: loading, loaded, unloaded, with
//! `failed` and `reason` for a failed model), `model_remove` when a model's
//! files left the directory, and `{"model": "*", "event": "models_reload"}`
//! when a watcher fell behind and should list the models again. Watchers
//! share `/events`'s bound.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::HttpState;
use super::events::{HEARTBEAT, stopped};
use super::router_models::status_json;
use crate::supervisor::{ModelEvent, ModelState, UnloadCause};

/// llama-server's events for one of ours.
fn llama_server_events(e: &ModelEvent) -> Vec<Value> {
    // `GET /models`'s status object, its `value` named `status` as here.
    let mut data = status_json(e.state, e.reason.as_deref());
    if let Some(fields) = data.as_object_mut() {
        let value = fields.remove("value").unwrap_or(Value::Null);
        fields.insert("status".into(), value);
    }
    let mut events = vec![json!({"model": e.id, "event": "model_status", "data": data})];
    if e.state == ModelState::Unloaded && matches!(e.cause, Some(UnloadCause::Removed)) {
        events.push(json!({"model": e.id, "event": "model_remove"}));
    }
    events
}

/// `GET /models/sse`.
pub async fn models_sse(State(state): State<HttpState>) -> Response {
    let place = match state.events.admit() {
        Ok(place) => place,
        Err(e) => return e.into_response(),
    };
    let mut events = state.supervisor.events();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(16);
    let stopping = state.stopping.clone();
    tokio::spawn(async move {
        let _place = place;
        let stop = stopped(stopping);
        tokio::pin!(stop);
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                () = &mut stop => return,
                next = events.recv() => next,
            };
            let out = match next {
                Ok(e) => llama_server_events(&e),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    vec![json!({"model": "*", "event": "models_reload"})]
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for data in out {
                let event = Event::default().data(data.to_string());
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn event(state: ModelState, cause: Option<UnloadCause>, reason: Option<&str>) -> ModelEvent {
        ModelEvent {
            id: "m".into(),
            state,
            previous: ModelState::Ready,
            reason: reason.map(Into::into),
            cause,
            at: SystemTime::now(),
        }
    }

    #[test]
    fn events_have_llama_servers_shape() {
        let loaded = llama_server_events(&event(ModelState::Ready, None, None));
        assert_eq!(
            loaded,
            [json!({"model": "m", "event": "model_status", "data": {"status": "loaded"}})]
        );
        let failed = llama_server_events(&event(
            ModelState::Failed,
            None,
            Some("worker exited with code 3"),
        ));
        assert_eq!(failed[0]["data"]["status"], "unloaded");
        assert_eq!(failed[0]["data"]["failed"], true);
        assert_eq!(failed[0]["data"]["exit_code"], 3);
        let removed = llama_server_events(&event(
            ModelState::Unloaded,
            Some(UnloadCause::Removed),
            None,
        ));
        assert_eq!(removed[1], json!({"model": "m", "event": "model_remove"}));
    }
}
