//! The OpenAI-compatible HTTP API (axum): `/v1/models`, `/v1/chat/completions`,
//! `/v1/completions`, `/v1/embeddings`, `/v1/responses` ([`responses`]);
//! Anthropic's `/v1/messages` ([`anthropic`]); llama-server's own endpoints
//! (`/props`, `/tokenize`, `/detokenize`, `/apply-template`, `/completion`,
//! `/embedding`), plus
//! `/health` and `/metrics`; and the web console (`/`, [`console`]) with
//! what it reads: llama-server's `/models*` ([`router_models`]), `/events`
//! ([`events`]) and `/status`. [`origin`] keeps other sites' pages off
//! it; [`extract`] answers malformed query strings and paths in OpenAI's
//! error shape, as the fallbacks do unknown paths (404) and methods (405).
//! Inference calls the same layer as gRPC ([`crate::inference`]), so model
//! resolution, autoload, leases and errors are one code path; its typed
//! error becomes an HTTP status once, in [`error`].

mod anthropic;
mod autoload;
mod completions;
mod console;
mod crash_reports;
pub mod embeddings;
pub mod error;
mod events;
mod extract;
mod generation;
mod llama_server;
mod logprobs;
mod models;
mod models_sse;
mod native_completion;
pub mod openai;
pub mod origin;
mod responses;
pub mod router_models;
mod status;
mod structured;
mod tools;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use self::error::ApiError;
pub use self::events::{EventHub, MAX_WATCHERS};
pub use self::origin::HostPolicy;
use super::listen::{AcceptBackoff, ConnectionBudget, accept_budgeted};
use crate::api_key::ApiKey;
use crate::inference::Inference;
use crate::metrics::Metrics;
use crate::supervisor::SupervisorHandle;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The inference layer gRPC serves too.
    pub inference: Inference,
    /// The supervisor, for listings, health and metrics.
    pub supervisor: SupervisorHandle,
    /// The daemon's metrics.
    pub metrics: Metrics,
    /// Becomes true when the daemon is stopping.
    pub stopping: watch::Receiver<bool>,
    /// Requests must carry this bearer token (none: open).
    pub api_key: Option<ApiKey>,
    /// The GPUs, for the VRAM gauges.
    pub gpus: crate::gpu::devices::GpuSet,
    /// The workers' recent log lines, for the console.
    pub logs: crate::worker::LogBook,
    /// Crash reports (none: not kept).
    pub crashes: Option<crate::crashes::CrashStore>,
    /// When the daemon started (uptime in `/status`).
    pub started: Instant,
    /// Whether models load on their first request (`GET /props` says so).
    pub models_autoload: bool,
    /// The one task behind every `/events` stream, and their bound.
    pub events: EventHub,
    /// Host names requests may carry when there is no API key ([`origin`]).
    pub hosts: std::sync::Arc<HostPolicy>,
}

impl HttpState {
    /// The state for one request, its inference loading models or not as
    /// its `?autoload=` says.
    fn autoload(mut self, autoload: autoload::Autoload) -> Self {
        self.inference = self.inference.autoload(autoload.0);
        self
    }
}

/// Parses a JSON body; a bad one is a 400 in OpenAI's shape.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Every route; all but `/health` and the console's static shell need the
/// API key when one is set.
pub fn router(state: HttpState) -> Router {
    let guarded = Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{model}", get(models::one))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(models::embeddings))
        .route("/v1/messages", post(anthropic::create))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/responses", post(responses::create))
        .route("/props", get(llama_server::props))
        .route("/tokenize", post(llama_server::tokenize))
        .route("/detokenize", post(llama_server::detokenize))
        .route("/apply-template", post(llama_server::apply_template))
        .route("/embedding", post(llama_server::embedding))
        .route("/completion", post(native_completion::completion))
        .route("/infill", post(native_completion::infill))
        .route("/completions", post(native_completion::completion))
        .route("/metrics", get(metrics))
        .route("/events", get(events::events))
        .route("/status", get(status::status))
        .route("/crashes", get(crash_reports::list))
        .route("/crashes/{id}", get(crash_reports::one))
        .route("/models", get(router_models::list))
        .route("/models/reload", post(router_models::reload))
        .route("/models/load", post(router_models::load))
        .route("/models/sse", get(models_sse::models_sse))
        .route("/models/unload", post(router_models::unload))
        .route("/models/pin", post(router_models::pin))
        .route("/models/{model}/logs", get(router_models::logs))
        .route("/models/{model}/timings", get(router_models::timings))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), origin::guard));
    Router::new()
        .route("/health", get(health))
        .route("/", get(console::index))
        .route("/console/app.js", get(console::script))
        .route("/console/playground.js", get(console::playground))
        .route("/console/app.css", get(console::style))
        .merge(guarded)
        .with_state(state)
}

/// The key may come as `Authorization: Bearer KEY` or, as Anthropic's
/// clients send it, `x-api-key: KEY`; both are compared in constant time.
/// Anthropic's endpoints refuse in Anthropic's error shape.
async fn require_key(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let headers = request.headers();
        let bearer = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        let x_api_key = headers.get("x-api-key").map(|v| v.as_bytes());
        // Both are checked, so the time taken does not say which one was sent.
        let by_bearer = key.accepts(bearer);
        let by_x_api_key = key.is(x_api_key);
        if !(by_bearer | by_x_api_key) {
            let refused = ApiError::unauthorized();
            if request.uri().path().starts_with("/v1/messages") {
                return anthropic::AnthropicError(ApiError {
                    message: "missing or wrong API key: send `x-api-key: <key>` or `Authorization: Bearer <key>`".into(),
                    ..refused
                })
                .into_response();
            }
            return refused.into_response();
        }
    }
    next.run(request).await
}

async fn not_found(request: Request) -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: "unknown_url",
        message: format!(
            "no such endpoint: {} {}",
            request.method(),
            request.uri().path()
        ),
    }
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    ApiError::method_not_allowed(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
    .into_response()
}

/// `GET /health`: 200 while the daemon serves, 503 when stopping or stuck.
async fn health(State(state): State<HttpState>) -> Response {
    if *state.stopping.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "stopping"})),
        )
            .into_response();
    }
    match state.supervisor.status().await {
        Ok(status) => {
            let models: serde_json::Map<_, _> = status
                .by_state
                .iter()
                .map(|(s, n)| (s.name().to_owned(), json!(n)))
                .collect();
            axum::Json(json!({"status": "ok", "models": models})).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "error": e.to_string()})),
        )
            .into_response(),
    }
}

/// `?model=` of `GET /metrics`.
#[derive(Debug, serde::Deserialize)]
struct MetricsQuery {
    model: Option<String>,
}

/// `GET /metrics`: Prometheus (OpenMetrics) text; with `?model=ID`, that
/// model's figures under llama-server's `llamacpp:*` names, as its router
/// mode answers.
async fn metrics(
    State(state): State<HttpState>,
    axum::extract::Query(query): axum::extract::Query<MetricsQuery>,
) -> Response {
    if let Some(model) = query.model {
        return match state.supervisor.get(&model).await {
            Ok(view) => (
                [(
                    header::CONTENT_TYPE,
                    crate::metrics::LLAMA_SERVER_CONTENT_TYPE,
                )],
                state.metrics.llama_server(&view.id),
            )
                .into_response(),
            Err(e) => ApiError::from(e).into_response(),
        };
    }
    for gpu in state.gpus.devices() {
        let (free, _) = gpu.usage();
        let d = &gpu.device;
        let label = crate::metrics::DeviceLabel {
            backend: d.backend.name().to_owned(),
            device: d.index.to_string(),
            name: d.name.clone(),
            kind: d.kind.name().to_owned(),
        };
        state
            .metrics
            .device(&label, d.total_bytes, d.total_bytes.saturating_sub(free));
    }
    match state.supervisor.status().await {
        Ok(status) => (
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            state.metrics.render(&status),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// How the HTTP listener treats connections.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once; past this a client gets 503 with `Retry-After`.
    pub budget: ConnectionBudget,
    /// How long a client may take to send a request's headers, and how long
    /// a kept-alive connection may sit idle between requests (slowloris).
    pub header_timeout: Duration,
}

/// What a connection past the budget reads before it is closed: a 503 in
/// OpenAI's error shape, with `Retry-After`.
static BUDGET_SPENT: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = json!({"error": {
        "message": "too many connections: the server's connection budget is spent (http_max_connections); retry shortly",
        "type": "server_error",
        "param": null,
        "code": "overloaded",
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Serves `router` on `listener` within `limits` until `shutdown` resolves;
/// streams still open then are waited for (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            () = &mut shutdown => break,
            conn = accept_budgeted(&listener, &limits.budget, BUDGET_SPENT.as_slice(), &mut backoff) => conn,
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|r: Request<hyper::body::Incoming>| r.map(axum::body::Body::new)),
        );
        let served = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), service)
            .into_owned();
        let served = graceful.watch(served);
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::trace!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
