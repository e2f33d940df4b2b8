//! The actors' settings as a configuration says them: the supervisor's
//! limits, the header caps, the alias checks, and which keys only a restart changes.

use std::time::Duration;

use crate::config::Config;
use crate::loader::LoadOptions;
use crate::settings::WorkerSettings;
use crate::supervisor::SupervisorSettings;

/// The caps on model headers from a configuration.
pub(super) fn header_limits(config: &Config) -> crate::gguf::HeaderLimits {
    crate::gguf::HeaderLimits {
        max_value_bytes: config.max_metadata_value_bytes,
        max_metadata_bytes: config.max_metadata_bytes,
    }
}

/// The supervisor's limits from a configuration.
pub(super) fn supervisor_settings(config: &Config) -> SupervisorSettings {
    SupervisorSettings {
        models_max: config.models_max,
        host_cache_bytes: config.host_cache_bytes,
        host_cache_reserved: if config.spare_worker {
            crate::worker::spare::SPARE_BYTES
        } else {
            0
        },
        park_bytes: config.park_bytes,
        load_queue: config.load_queue,
        idle_ttl: (config.idle_ttl > 0).then(|| Duration::from_secs(config.idle_ttl)),
        load: LoadOptions {
            mlock: config.mlock,
            threads: config.prefetch_threads.max(1),
            header: header_limits(config),
        },
        autoload: config.models_autoload,
        profiles: std::sync::Arc::new(config.profiles().unwrap_or_default()),
        // Each model's table goes over these, and the result is normalized,
        // in `ModelProfiles::worker`.
        worker: WorkerSettings {
            params: config.params,
            queue: config.request_queue,
            stop_timeout: Duration::from_secs(config.stop_timeout),
            ping_timeout: Duration::from_secs(config.worker_ping_timeout.max(1)),
            step_timeout: Duration::from_secs(config.step_timeout().max(1)),
            start_timeout: Duration::from_secs(config.worker_start_timeout.max(1)),
        },
    }
}

/// An alias that is also the id of a model in the directory (`ids`) is a configuration error.
pub(super) fn check_aliases<'a>(
    config: &Config,
    ids: impl Iterator<Item = &'a str>,
) -> Result<(), crate::settings::SettingsError> {
    match config.profiles()?.alias_shadowing(ids) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A table for a model that is not in the directory is only a warning: its file may come later.
pub(super) fn warn_unknown_tables(config: &Config, snapshot: &crate::catalog::Snapshot) {
    for id in config.models.keys() {
        if !snapshot.entries.iter().any(|e| &e.id == id) {
            tracing::warn!(model = %id, "the config has a [models.\"{id}\"] table but no such model is in the models directory (yet)");
        }
    }
}

/// Keys that only take effect at start-up.
pub(super) fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.models_dir != new.models_dir {
        keys.push("models_dir");
    }
    if old.socket_path() != new.socket_path() {
        keys.push("socket");
    }
    if old.port != new.port || old.host != new.host {
        keys.push("host/port");
    }
    if old.http_port != new.http_port || old.http_host != new.http_host {
        keys.push("http_host/http_port");
    }
    if old.socket_group != new.socket_group {
        keys.push("socket_group");
    }
    if old.http_max_connections != new.http_max_connections
        || old.grpc_max_connections != new.grpc_max_connections
        || old.http_header_timeout != new.http_header_timeout
    {
        keys.push("http_max_connections/grpc_max_connections/http_header_timeout");
    }
    if old.api_key != new.api_key {
        keys.push("api_key");
    }
    if old.watch_debounce_ms != new.watch_debounce_ms {
        keys.push("watch_debounce_ms");
    }
    // The catalog reads headers with the caps it started with.
    if header_limits(old) != header_limits(new) {
        keys.push("max_metadata_value_bytes/max_metadata_bytes");
    }
    if old.worker_wrapper != new.worker_wrapper {
        keys.push("worker_wrapper");
    }
    if old.spare_worker != new.spare_worker {
        keys.push("spare_worker");
    }
    keys
}
