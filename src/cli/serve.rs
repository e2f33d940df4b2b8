//! `llama-router serve` flags: llama-server's router-mode names where they overlap.

use std::path::PathBuf;

use serde::Serialize;

use crate::params::ModelParamsPatch;

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
    /// Address for HTTP (only with --http-port) [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    pub http_host: Option<String>,
    /// Serve the OpenAI-compatible HTTP API (and /health, /metrics) on this TCP port.
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Require this bearer token on HTTP and gRPC requests (prefer LLAMA_ROUTER_API_KEY or the config file: flags show in `ps`).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<crate::api_key::ApiKey>,
    /// Unix socket [default: $RUNTIME_DIRECTORY or /run/llama-router, else $XDG_RUNTIME_DIR/llama-router].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Unload idle unpinned models after this many seconds; 0 = never.
    #[arg(long, value_name = "SECONDS")]
    pub idle_ttl: Option<u64>,
    /// Host RAM the loaded models may hold, in bytes; 0 = no limit.
    #[arg(long, value_name = "BYTES")]
    pub host_cache_bytes: Option<u64>,
    /// Host RAM evicted models may keep with their worker (parked: a request
    /// wakes them instead of loading them), in bytes; 0 = none.
    #[arg(long, value_name = "BYTES")]
    pub park_bytes: Option<u64>,
    /// GPU memory our models may hold on each device, in bytes; 0 = what it has free.
    #[arg(long, value_name = "BYTES")]
    pub gpu_memory_budget: Option<u64>,
    /// Lock loaded models in RAM.
    #[arg(long)]
    pub mlock: bool,
    /// Keep no spare worker (a worker process started ahead of the next load).
    #[arg(long)]
    pub no_spare_worker: bool,
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
    /// Every model's engine settings (`--ctx-size`, `--gpu-layers`, ...), each
    /// over the config's top-level key of the same name.
    #[command(flatten)]
    pub params: ModelParamsPatch,
    /// Requests per model that may wait for a slot [default: 64].
    #[arg(long, value_name = "N")]
    pub request_queue: Option<usize>,
    /// Seconds a stopping worker may finish in-flight requests before SIGKILL [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u64>,
    /// Seconds a worker process may take to answer a liveness ping before it counts as hung [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub worker_ping_timeout: Option<u64>,
    /// Seconds one decode step may run before the engine counts as stuck; 0 = the ping timeout [default: 0].
    #[arg(long, value_name = "SECONDS")]
    pub worker_step_timeout: Option<u64>,
    /// Inputs one embeddings request may carry [default: 2048].
    #[arg(long, value_name = "N")]
    pub embed_max_inputs: Option<usize>,
    /// Seconds a worker may take to load its model [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub worker_start_timeout: Option<u64>,
    /// Directory of crash reports [default: $STATE_DIRECTORY/crashes, else ~/.local/state/llama-router/crashes].
    #[arg(long, value_name = "DIR")]
    pub crash_dir: Option<PathBuf>,
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
    http_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<crate::api_key::ApiKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_cache_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    park_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_memory_budget: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mlock: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spare_worker: Option<bool>,
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
    #[serde(flatten)]
    params: ModelParamsPatch,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_ping_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_step_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embed_max_inputs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_start_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crash_dir: Option<PathBuf>,
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
            http_host: self.http_host.clone(),
            http_port: self.http_port,
            api_key: self.api_key.clone(),
            socket: self.socket.clone(),
            idle_ttl: self.idle_ttl,
            host_cache_bytes: self.host_cache_bytes,
            park_bytes: self.park_bytes,
            gpu_memory_budget: self.gpu_memory_budget,
            mlock: self.mlock.then_some(true),
            spare_worker: self.no_spare_worker.then_some(false),
            load_queue: self.load_queue,
            prefetch_threads: self.prefetch_threads,
            watch_debounce_ms: self.watch_debounce_ms,
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            params: self.params,
            request_queue: self.request_queue,
            stop_timeout: self.stop_timeout,
            worker_ping_timeout: self.worker_ping_timeout,
            worker_step_timeout: self.worker_step_timeout,
            embed_max_inputs: self.embed_max_inputs,
            worker_start_timeout: self.worker_start_timeout,
            crash_dir: self.crash_dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn given_engine_flags_become_the_config_keys_of_the_same_name() {
        let args = Wrapper::parse_from(["x", "--ctx-size", "256", "--gpu-layers", "all"]).serve;
        let keys = serde_json::to_value(args.overrides()).unwrap();
        assert_eq!(
            keys,
            serde_json::json!({"ctx_size": 256, "gpu_layers": "all"})
        );
    }
}
