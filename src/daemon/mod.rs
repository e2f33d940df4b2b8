//! `llama-router serve`: start-up and shutdown. This file starts the actors
//! and drains on SIGTERM/SIGINT; the listeners (gRPC on a Unix socket and
//! TCP, HTTP) are in `listeners`, the settings derived from the
//! configuration in `settings`, the SIGHUP path in `reload`, systemd's
//! STATUS and watchdog in `notify`, and start-up loads and GPU discovery in
//! `background`.

mod background;
mod listeners;
mod notify;
mod reload;
mod settings;

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::api::grpc::ModelServiceImpl;
use crate::api::http::HttpState;
use crate::api::inference::InferenceServiceImpl;
use crate::api::listen;
use crate::catalog::CatalogHandle;
use crate::config::{Config, ConfigError};
use crate::inference::Inference;
use crate::metrics::Metrics;
use crate::runtime_dir;
use crate::supervisor::SupervisorHandle;
use crate::systemd;
use crate::telemetry::LogLevelHandle;
use crate::worker::process::WorkerEnv;

use self::background::{discover_gpus, open_crash_store, spawn_startup_loads};
use self::listeners::{Services, listen_error, prepare_socket, start_servers};
use self::notify::{spawn_status_updates, spawn_watchdog, status_line};
use self::reload::reload;
use self::settings::{check_aliases, header_limits, supervisor_settings, warn_unknown_tables};

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
    let metrics = Metrics::new();
    let worker_env = WorkerEnv {
        exe: std::env::current_exe().map_err(listen_error("finding our own binary"))?,
        wrapper: config.worker_wrapper.clone(),
        socket_dir: crate::worker::sockets::prepare_dir(&runtime_dir)
            .map_err(DaemonError::WorkerSockets)?,
        log_level: crate::telemetry::effective_level(config.log_level.as_deref()),
        gpus: discover_gpus(config.gpu_memory_budget).await,
        logs: crate::worker::LogBook::default(),
        crashes: open_crash_store(&config, &metrics),
        spares: crate::worker::spare::Spares::new(config.spare_worker),
    };
    warn_offload_without_gpu(&config.params, &worker_env.gpus);
    let crashes = worker_env.crashes.clone();
    let logs = worker_env.logs.clone();
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
        crashes.clone(),
    );

    crate::metrics::recorder::spawn(metrics.clone(), supervisor.events());
    let request_limits = crate::engine::limits::RequestLimits {
        embed_max_inputs: config.embed_max_inputs,
    };
    let inference = Inference::new(supervisor.clone(), metrics.clone(), request_limits);
    let inference_service = InferenceServiceImpl::new(inference.clone());
    let services = Services {
        model: service,
        inference: inference_service,
        http: HttpState {
            inference: inference.for_client("http"),
            supervisor: supervisor.clone(),
            metrics: metrics.clone(),
            stopping: stop_rx.clone(),
            api_key: config.api_key.clone(),
            gpus: gpus.clone(),
            logs,
            crashes,
            started: std::time::Instant::now(),
            models_autoload: config.models_autoload,
            events: crate::api::http::EventHub::default(),
            hosts: std::sync::Arc::new(host_policy(&config)),
        },
    };
    let servers = start_servers(
        &config,
        &socket,
        socket_group,
        descriptors,
        &services,
        &stop_rx,
    )
    .await?;
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
    drop(services);
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

/// The host names the HTTP API answers to without a key: `http_host`, this
/// machine's name, `http_allowed_hosts` (and always IP literals, localhost).
fn host_policy(config: &Config) -> crate::api::http::HostPolicy {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let names = [config.http_host.as_str(), hostname.trim()]
        .into_iter()
        .chain(config.http_allowed_hosts.iter().map(String::as_str));
    crate::api::http::HostPolicy::new(names)
}

/// `--gpu-layers all` (or a count) with no device to take it is said once at
/// start, loudly; each model that runs on the CPU because of it gets a note.
fn warn_offload_without_gpu(
    params: &crate::params::ModelParams,
    gpus: &crate::gpu::devices::GpuSet,
) {
    use crate::params::GpuLayers;
    if matches!(params.gpu_layers, GpuLayers::Auto | GpuLayers::Count(0)) {
        return;
    }
    if gpus.main(params.main_gpu).is_none() {
        let why = gpus.notes().join("; ");
        tracing::warn!(
            gpu_layers = %params.gpu_layers,
            main_gpu = params.main_gpu,
            notes = %why,
            "--gpu-layers {} asks for GPU offload, but there is no usable GPU {}: models run on the CPU ({why})",
            params.gpu_layers,
            params.main_gpu
        );
    }
}
