//! `llama-router serve` flags: llama-server's router-mode names where they overlap.

use std::path::PathBuf;

use serde::Serialize;

/// Arguments of `serve`; each given flag overrides the config file and environment.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (default: /etc/llama-router/config.toml if it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of GGUF models.
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Most models loaded at once; 0 = no limit [default: 4].
    #[arg(long, value_name = "N")]
    pub models_max: Option<u32>,
    /// Load a model on its first request [default].
    #[arg(long, overrides_with = "no_models_autoload")]
    pub models_autoload: bool,
    /// Refuse requests for models that are not loaded.
    #[arg(long)]
    pub no_models_autoload: bool,
    /// Address for TCP (only with --port) [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
    /// Also serve gRPC on this TCP port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Unix socket [default: $RUNTIME_DIRECTORY or /run/llama-router, else $XDG_RUNTIME_DIR/llama-router].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Unload idle unpinned models after this many seconds; 0 = never.
    #[arg(long, value_name = "SECONDS")]
    pub idle_ttl: Option<u64>,
    /// Host RAM the loaded models may hold, in bytes; 0 = no limit.
    #[arg(long, value_name = "BYTES")]
    pub host_cache_bytes: Option<u64>,
    /// Lock loaded models in RAM.
    #[arg(long)]
    pub mlock: bool,
    /// Load requests that may wait for a slot [default: 64].
    #[arg(long, value_name = "N")]
    pub load_queue: Option<usize>,
    /// Threads reading a model into RAM [default: 4].
    #[arg(long, value_name = "N")]
    pub prefetch_threads: Option<usize>,
    /// Milliseconds the directory watcher lets changes settle [default: 500].
    #[arg(long, value_name = "MS")]
    pub watch_debounce_ms: Option<u64>,
    /// Log level or filter, e.g. debug or llama_router=debug,info [default: $RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log output [default: auto: the journal under systemd, else text].
    #[arg(long, value_enum)]
    pub log_format: Option<crate::telemetry::LogFormat>,
}

/// The flags that were given, as config keys (absent ones are left out).
#[derive(Debug, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    models_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    models_max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    models_autoload: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_cache_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mlock: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefetch_threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    watch_debounce_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<crate::telemetry::LogFormat>,
}

impl ServeArgs {
    /// The given flags as a figment layer.
    pub fn overrides(&self) -> FlagOverrides {
        let autoload = match (self.models_autoload, self.no_models_autoload) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        FlagOverrides {
            models_dir: self.models_dir.clone(),
            models_max: self.models_max,
            models_autoload: autoload,
            host: self.host.clone(),
            port: self.port,
            socket: self.socket.clone(),
            idle_ttl: self.idle_ttl,
            host_cache_bytes: self.host_cache_bytes,
            mlock: self.mlock.then_some(true),
            load_queue: self.load_queue,
            prefetch_threads: self.prefetch_threads,
            watch_debounce_ms: self.watch_debounce_ms,
            log_level: self.log_level.clone(),
            log_format: self.log_format,
        }
    }
}
