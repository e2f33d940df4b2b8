//! `llama-router serve`: starts the actors, serves gRPC on a Unix socket (and
//! TCP when configured) and HTTP, rescans on SIGHUP, drains on SIGTERM/SIGINT.
//! The settings derived from the configuration live in `settings`, the
//! SIGHUP path in `reload`, the side tasks (start-up loads, GPU discovery,
//! systemd STATUS and watchdog) in `background`.

mod background;
mod reload;
mod settings;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::Gid;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::api::auth::GrpcAuth;
use crate::api::grpc::ModelServiceImpl;
use crate::api::http::HttpState;
use crate::api::inference::InferenceServiceImpl;
use crate::api::listen::{self, ConnectionBudget};
use crate::api_key::ApiKey;
use crate::catalog::CatalogHandle;
use crate::config::{Config, ConfigError};
use crate::inference::Inference;
use crate::metrics::Metrics;
use crate::proto::pb;
use crate::proto::pb::inference_service_server::InferenceServiceServer;
use crate::proto::pb::model_service_server::ModelServiceServer;
use crate::runtime_dir;
use crate::supervisor::SupervisorHandle;
use crate::systemd;
use crate::telemetry::LogLevelHandle;
use crate::worker::process::WorkerEnv;

use self::background::{
    discover_gpus, spawn_startup_loads, spawn_status_updates, spawn_watchdog, status_line,
};
use self::reload::reload;
use self::settings::{check_aliases, header_limits, supervisor_settings, warn_unknown_tables};

/// How often gRPC connections are pinged.
const GRPC_KEEPALIVE: Duration = Duration::from_secs(30);

/// How long in-flight calls get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon answers on the socket.
    #[error("another llama-router is already listening on {}", .0.display())]
    SocketInUse(PathBuf),
    /// A listener could not be set up.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// The socket path or address.
        what: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    /// Reflection could not be built from the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The configuration contradicts the models directory.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::settings::SettingsError),
    /// The runtime directory or socket cannot be trusted or set up.
    #[error(transparent)]
    RuntimeDir(#[from] crate::runtime_dir::RuntimeDirError),
    /// An actor stopped during start-up.
    #[error("{0} stopped during start-up")]
    ActorStopped(&'static str),
    /// The workers' socket directory is not safe to use.
    #[error(transparent)]
    WorkerSockets(crate::runtime_dir::RuntimeDirError),
}

fn listen_error(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.to_string();
    move |source| DaemonError::Listen { what, source }
}

/// Makes (or checks) the socket's directory, then removes a stale socket
/// file; refuses when a daemon still answers on it.
async fn prepare_socket(path: &Path, group: Option<Gid>) -> Result<(), DaemonError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        runtime_dir::prepare_dir(dir, group)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(DaemonError::SocketInUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(listen_error(path.display()))?;
    }
    Ok(())
}

/// The gRPC services; all but health (and reflection) check the API key.
async fn router(
    service: &ModelServiceImpl,
    inference: &InferenceServiceImpl,
    api_key: Option<&ApiKey>,
) -> Result<Router, DaemonError> {
    let auth = GrpcAuth::new(api_key.cloned());
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ModelServiceServer<ModelServiceImpl>>()
        .await;
    health_reporter
        .set_serving::<InferenceServiceServer<InferenceServiceImpl>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Pings on every connection: a heartbeat for long streams, and a peer
    // that stopped answering is dropped (with its place in the budget).
    Ok(Server::builder()
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE))
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(InterceptedService::new(
            ModelServiceServer::new(service.clone()),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            InferenceServiceServer::new(inference.clone()),
            auth,
        )))
}

/// A TCP listener on `host:port`, when a port is configured.
async fn bind_tcp(host: &str, port: Option<u16>) -> Result<Option<TcpListener>, DaemonError> {
    let Some(port) = port else {
        return Ok(None);
    };
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(listen_error(&addr))?;
    Ok(Some(listener))
}

async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Re-reads the configuration (file, environment, flags) on SIGHUP.
pub type ConfigReload = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Runs the daemon until SIGTERM or SIGINT; `reread` loads the config again on SIGHUP.
pub async fn serve(
    mut config: Config,
    reread: ConfigReload,
    log: LogLevelHandle,
) -> Result<(), DaemonError> {
    let descriptors = listen::raise_descriptor_limit();
    let models_dir = config.models_dir.clone();
    let catalog = CatalogHandle::spawn(
        models_dir.clone(),
        Duration::from_millis(config.watch_debounce_ms),
        header_limits(&config),
    );
    let first = catalog
        .rescan()
        .await
        .map_err(|_| DaemonError::ActorStopped("catalog"))?;
    tracing::info!(dir = %models_dir.display(), models = first.entries.len(), "catalog loaded");
    warn_unknown_tables(&config, &first);
    check_aliases(&config, first.entries.iter().map(|e| e.id.as_str()))?;
    let limits = supervisor_settings(&config);
    let socket = config.socket_path();
    // The runtime directory first (with its mode and group), then the workers' inside it.
    let socket_group = config
        .socket_group
        .as_deref()
        .map(runtime_dir::resolve_group)
        .transpose()?;
    prepare_socket(&socket, socket_group).await?;
    let runtime_dir = socket
        .parent()
        .map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    let worker_env = WorkerEnv {
        exe: std::env::current_exe().map_err(listen_error("finding our own binary"))?,
        wrapper: config.worker_wrapper.clone(),
        socket_dir: crate::worker::sockets::prepare_dir(&runtime_dir)
            .map_err(DaemonError::WorkerSockets)?,
        log_level: crate::telemetry::effective_level(config.log_level.as_deref()),
        gpus: discover_gpus().await,
    };
    let gpus = worker_env.gpus.clone();
    let supervisor = SupervisorHandle::spawn(catalog.clone(), limits, worker_env);
    supervisor
        .ping()
        .await
        .map_err(|_| DaemonError::ActorStopped("supervisor"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = ModelServiceImpl::new(
        supervisor.clone(),
        models_dir.display().to_string(),
        stop_rx.clone(),
        gpus.clone(),
    );

    let metrics = Metrics::new();
    crate::metrics::recorder::spawn(metrics.clone(), supervisor.events());
    let request_limits = crate::engine::limits::RequestLimits {
        embed_max_inputs: config.embed_max_inputs,
    };
    let inference = Inference::new(supervisor.clone(), metrics.clone(), request_limits);
    let inference_service = InferenceServiceImpl::new(inference.clone());
    let uds = UnixListener::bind(&socket).map_err(listen_error(socket.display()))?;
    runtime_dir::secure_socket(&socket, socket_group)?;
    let (http_budget, grpc_budget) = listen::tcp_budgets(
        descriptors,
        config.http_max_connections,
        config.grpc_max_connections,
        config.port.is_some(),
    );
    let tcp = bind_tcp(&config.host, config.port).await?;
    let http = bind_tcp(&config.http_host, config.http_port).await?;
    let api_key = config.api_key.as_ref();
    let grpc = router(&service, &inference_service, api_key).await?;
    let stop = shutdown_signal(stop_rx.clone());
    let mut servers = vec![tokio::spawn(async move {
        grpc.serve_with_incoming_shutdown(listen::unix_incoming(uds), stop)
            .await
            .map_err(DaemonError::Grpc)
    })];
    if let Some(tcp) = tcp {
        let addr = tcp.local_addr().map_err(listen_error("tcp"))?;
        tracing::info!(%addr, max_connections = grpc_budget, "listening on TCP (gRPC)");
        let grpc = router(&service, &inference_service, api_key).await?;
        let stop = shutdown_signal(stop_rx.clone());
        let incoming = listen::tcp_incoming(tcp, ConnectionBudget::new("grpc", grpc_budget));
        servers.push(tokio::spawn(async move {
            grpc.serve_with_incoming_shutdown(incoming, stop)
                .await
                .map_err(DaemonError::Grpc)
        }));
    }
    if let Some(http) = http {
        let addr = http.local_addr().map_err(listen_error("http"))?;
        tracing::info!(%addr, auth = api_key.is_some(), max_connections = http_budget, "listening on HTTP (OpenAI-compatible API)");
        let app = crate::api::http::router(HttpState {
            inference: inference.clone(),
            supervisor: supervisor.clone(),
            metrics: metrics.clone(),
            stopping: stop_rx.clone(),
            api_key: api_key.cloned(),
            gpus: gpus.clone(),
        });
        let stop = shutdown_signal(stop_rx.clone());
        let limits = crate::api::http::HttpLimits {
            budget: ConnectionBudget::new("http", http_budget),
            header_timeout: Duration::from_secs(config.http_header_timeout.max(1)),
        };
        servers.push(tokio::spawn(async move {
            crate::api::http::serve(http, app, limits, stop)
                .await
                .map_err(DaemonError::Http)
        }));
    }
    tracing::info!(socket = %socket.display(), "listening");
    systemd::ready(&status_line(&supervisor).await);
    spawn_startup_loads(&config, &supervisor);
    spawn_status_updates(supervisor.clone());
    spawn_watchdog(supervisor.clone(), catalog.clone());

    let mut hangup = signal(SignalKind::hangup()).map_err(listen_error("SIGHUP"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(listen_error("SIGTERM"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(listen_error("SIGINT"))?;
    loop {
        tokio::select! {
            _ = hangup.recv() => reload(&mut config, &reread, &supervisor, &log).await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    systemd::stopping();
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    drop(service);
    drop(inference_service);
    drop(inference);
    for server in servers {
        match tokio::time::timeout(DRAIN, server).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server ended with an error: {e}"),
            Err(_) => tracing::warn!(
                "in-flight calls did not finish within {} s",
                DRAIN.as_secs()
            ),
            _ => {}
        }
    }
    // Stop the workers gracefully (each gets --stop-timeout, then SIGKILL).
    let grace = Duration::from_secs(config.stop_timeout).saturating_add(Duration::from_secs(5));
    if tokio::time::timeout(grace, supervisor.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "models still releasing after {} s; exiting anyway",
            grace.as_secs()
        );
    }
    drop(supervisor);
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}
