//! The daemon's listeners: the gRPC services on the Unix socket (and TCP
//! when configured) and the HTTP API, each TCP listener within its
//! connection budget, all stopping when `stop` turns true.

use std::path::Path;
use std::time::Duration;

use nix::unistd::Gid;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::Router;

use super::DaemonError;
use crate::api::auth::GrpcAuth;
use crate::api::grpc::ModelServiceImpl;
use crate::api::http::HttpState;
use crate::api::inference::InferenceServiceImpl;
use crate::api::listen::{self, ConnectionBudget};
use crate::api_key::ApiKey;
use crate::config::Config;
use crate::proto::pb;
use crate::proto::pb::inference_service_server::InferenceServiceServer;
use crate::proto::pb::model_service_server::ModelServiceServer;
use crate::runtime_dir;

/// How often gRPC connections are pinged.
const GRPC_KEEPALIVE: Duration = Duration::from_secs(30);

/// What the listeners serve.
pub(super) struct Services {
    /// gRPC `ModelService`.
    pub(super) model: ModelServiceImpl,
    /// gRPC `InferenceService`.
    pub(super) inference: InferenceServiceImpl,
    /// The HTTP API's handles.
    pub(super) http: HttpState,
}

/// A running server; ends when `stop` turns true, or with its error.
pub(super) type ServerTask = JoinHandle<Result<(), DaemonError>>;

/// Binds the Unix socket (its mode and group set) and the configured TCP
/// ports, and serves `services` on them until `stop`.
pub(super) async fn start_servers(
    config: &Config,
    socket: &Path,
    socket_group: Option<Gid>,
    descriptors: u64,
    services: &Services,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<ServerTask>, DaemonError> {
    let uds = UnixListener::bind(socket).map_err(listen_error(socket.display()))?;
    runtime_dir::secure_socket(socket, socket_group)?;
    let (http_budget, grpc_budget) = listen::tcp_budgets(
        descriptors,
        config.http_max_connections,
        config.grpc_max_connections,
        config.port.is_some(),
    );
    let tcp = bind_tcp(&config.host, config.port).await?;
    let http = bind_tcp(&config.http_host, config.http_port).await?;
    let api_key = config.api_key.as_ref();
    let grpc = grpc_router(&services.model, &services.inference, api_key).await?;
    let stopped = shutdown_signal(stop.clone());
    let mut servers = vec![tokio::spawn(async move {
        grpc.serve_with_incoming_shutdown(listen::unix_incoming(uds), stopped)
            .await
            .map_err(DaemonError::Grpc)
    })];
    if let Some(tcp) = tcp {
        let addr = tcp.local_addr().map_err(listen_error("tcp"))?;
        tracing::info!(%addr, max_connections = grpc_budget, "listening on TCP (gRPC)");
        let grpc = grpc_router(&services.model, &services.inference, api_key).await?;
        let stopped = shutdown_signal(stop.clone());
        let incoming = listen::tcp_incoming(tcp, ConnectionBudget::new("grpc", grpc_budget));
        servers.push(tokio::spawn(async move {
            grpc.serve_with_incoming_shutdown(incoming, stopped)
                .await
                .map_err(DaemonError::Grpc)
        }));
    }
    if let Some(http) = http {
        let addr = http.local_addr().map_err(listen_error("http"))?;
        tracing::info!(%addr, auth = api_key.is_some(), max_connections = http_budget, "listening on HTTP (OpenAI-compatible API)");
        let app = crate::api::http::router(services.http.clone());
        let stopped = shutdown_signal(stop.clone());
        let limits = crate::api::http::HttpLimits {
            budget: ConnectionBudget::new("http", http_budget),
            header_timeout: Duration::from_secs(config.http_header_timeout.max(1)),
        };
        servers.push(tokio::spawn(async move {
            crate::api::http::serve(http, app, limits, stopped)
                .await
                .map_err(DaemonError::Http)
        }));
    }
    Ok(servers)
}

pub(super) fn listen_error(
    what: impl std::fmt::Display,
) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.to_string();
    move |source| DaemonError::Listen { what, source }
}

/// Makes (or checks) the socket's directory, then removes a stale socket
/// file; refuses when a daemon still answers on it.
pub(super) async fn prepare_socket(path: &Path, group: Option<Gid>) -> Result<(), DaemonError> {
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
async fn grpc_router(
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
