//! Daemon configuration: built-in defaults < config file < `LLAMA_ROUTER_*`
//! environment < command-line flags, merged with figment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};

use crate::params::ModelParams;
use crate::settings::{ModelProfiles, ModelSettings, SettingsError};

/// Config file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/llama-router/config.toml";
/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "LLAMA_ROUTER_";
/// Environment variables with the prefix that are not config keys.
const NON_CONFIG_ENV: &[&str] = &["endpoint"];

/// Everything `llama-router serve` can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory scanned for models.
    pub models_dir: PathBuf,
    /// Most models loaded at once (0 = no limit).
    pub models_max: u32,
    /// Load a model on first request instead of refusing it.
    pub models_autoload: bool,
    /// Address the TCP listener binds (only with `port`).
    pub host: String,
    /// TCP port for gRPC; none means Unix socket only.
    pub port: Option<u16>,
    /// Address the OpenAI-compatible HTTP API binds (only with `http_port`).
    pub http_host: String,
    /// TCP port of the OpenAI-compatible HTTP API; none means no HTTP.
    pub http_port: Option<u16>,
    /// Host names (besides IP literals, `localhost`, `http_host` and this
    /// machine's name) HTTP requests may carry in `Host` when there is no
    /// API key; others are refused, against DNS rebinding.
    pub http_allowed_hosts: Vec<String>,
    /// Most HTTP connections open at once (0 = derived from the descriptor limit).
    pub http_max_connections: usize,
    /// Most gRPC TCP connections open at once (0 = derived from the descriptor limit).
    pub grpc_max_connections: usize,
    /// Seconds an HTTP client may take to send a request's headers, and may
    /// keep a connection idle between requests.
    pub http_header_timeout: u64,
    /// Bearer token every HTTP and gRPC request must carry (except health checks); none: open.
    pub api_key: Option<crate::api_key::ApiKey>,
    /// Unix socket path; none means the default in the runtime directory.
    pub socket: Option<PathBuf>,
    /// Group (name or number) that may use the socket: the runtime directory
    /// becomes 0750 and the socket's group this one. None: owner only.
    pub socket_group: Option<String>,
    /// Seconds an idle, unpinned model stays loaded (0 = forever).
    pub idle_ttl: u64,
    /// Bytes of host RAM the resident tier may hold (0 = no limit).
    pub host_cache_bytes: u64,
    /// Bytes of host RAM evicted models may keep with their worker, parked
    /// without a context, so that a request wakes them instead of loading
    /// them (0 = none: an evicted model is released).
    pub park_bytes: u64,
    /// Bytes of GPU memory our models may hold on each device (0 = what the
    /// device has free at start): for a GPU shared with other work, and what
    /// VRAM-pressure eviction counts against.
    pub gpu_memory_budget: u64,
    /// Lock loaded models' pages in RAM (mlock).
    pub mlock: bool,
    /// Keep one worker process started ahead of need, llama.cpp initialised
    /// and no model loaded, for the next load to take (`worker::spare`).
    pub spare_worker: bool,
    /// Load requests that may wait for a free slot before RESOURCE_EXHAUSTED.
    pub load_queue: usize,
    /// Threads reading a model into RAM.
    pub prefetch_threads: usize,
    /// Milliseconds the directory watcher waits for changes to settle.
    pub watch_debounce_ms: u64,
    /// Most bytes one metadata value of a model header may take (a string, or
    /// an array with its elements); a model past it is listed as failed.
    /// 64 MiB: twice the largest real value (a 33 MiB embedded tokenizer.json).
    pub max_metadata_value_bytes: u64,
    /// Most bytes all of a model header's metadata may take together; a model
    /// past it is listed as failed. 128 MiB: real headers stay under 64 MiB.
    pub max_metadata_bytes: u64,
    /// Log level or filter (`info`, `llama_router=debug,info`); none: `RUST_LOG`, else `info`.
    pub log_level: Option<String>,
    /// Log output: auto (journal under systemd, else text), text, json, journald.
    pub log_format: crate::telemetry::LogFormat,
    /// Every model's engine settings (`ctx_size`, `parallel`, `gpu_layers`,
    /// ...), top-level keys; a model's table overrides each.
    #[serde(flatten)]
    pub params: ModelParams,
    /// Requests per model that may wait for a free slot before RESOURCE_EXHAUSTED.
    pub request_queue: usize,
    /// Seconds a stopping worker may finish in-flight requests before SIGKILL.
    pub stop_timeout: u64,
    /// Seconds a worker process may take to answer a liveness ping before it counts as hung.
    pub worker_ping_timeout: u64,
    /// Seconds one decode step may run before the engine counts as stuck (0 = `worker_ping_timeout`).
    pub worker_step_timeout: u64,
    /// Seconds a worker may take to load its model and answer.
    pub worker_start_timeout: u64,
    /// Inputs one embeddings request may carry (OpenAI's limit is 2,048).
    pub embed_max_inputs: usize,
    /// Command prefixed to every worker's argv (numactl, taskset); empty: none.
    pub worker_wrapper: Vec<String>,
    /// Where crash reports are kept; none: `$STATE_DIRECTORY/crashes`, else
    /// `$XDG_STATE_HOME/llama-router/crashes`, else `~/.local/state/llama-router/crashes`.
    pub crash_dir: Option<PathBuf>,
    /// Most crash reports kept (the oldest go first).
    pub crash_reports_max: usize,
    /// Most bytes of crash reports kept.
    pub crash_reports_max_bytes: u64,
    /// Settings every model gets unless its own table says otherwise.
    pub defaults: ModelSettings,
    /// Per-model tables, by model id.
    pub models: BTreeMap<String, ModelSettings>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            models_dir: PathBuf::from("/var/lib/llama/models"),
            models_max: 4,
            models_autoload: true,
            host: "127.0.0.1".to_owned(),
            port: None,
            http_host: "127.0.0.1".to_owned(),
            http_port: None,
            http_allowed_hosts: Vec::new(),
            http_max_connections: 0,
            grpc_max_connections: 0,
            http_header_timeout: 20,
            api_key: None,
            socket: None,
            socket_group: None,
            idle_ttl: 0,
            host_cache_bytes: 0,
            park_bytes: 0,
            gpu_memory_budget: 0,
            mlock: false,
            spare_worker: true,
            load_queue: 64,
            prefetch_threads: 4,
            watch_debounce_ms: 500,
            max_metadata_value_bytes: crate::gguf::DEFAULT_MAX_VALUE_BYTES,
            max_metadata_bytes: crate::gguf::DEFAULT_MAX_METADATA_BYTES,
            log_level: None,
            log_format: crate::telemetry::LogFormat::Auto,
            params: ModelParams::default(),
            request_queue: 64,
            stop_timeout: 10,
            worker_ping_timeout: 30,
            worker_step_timeout: 0,
            worker_start_timeout: 300,
            embed_max_inputs: 2048,
            worker_wrapper: Vec::new(),
            crash_dir: None,
            crash_reports_max: 50,
            crash_reports_max_bytes: 16 << 20,
            defaults: ModelSettings::default(),
            models: BTreeMap::new(),
        }
    }
}

/// A configuration that could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` does not exist.
    #[error("config file {} not found", .0.display())]
    FileNotFound(PathBuf),
    /// A key is unknown or has a bad value; figment names the key and its source.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// The per-model tables contradict each other.
    #[error("invalid configuration: {0}")]
    Models(#[from] SettingsError),
    /// A llama-server preset file (`--models-preset`) could not be used.
    #[error("{0}")]
    Preset(#[from] crate::settings::preset::PresetError),
}

impl Config {
    /// Merges defaults, `file` (or the default file if present), the environment and `flags`.
    ///
    /// `flags` holds only what was given on the command line.
    pub fn load(file: Option<&Path>, flags: impl Serialize) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.is_file() => return Err(ConfigError::FileNotFound(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
            }
            None => {}
        }
        let figment = figment
            .merge(Env::prefixed(ENV_PREFIX).ignore(NON_CONFIG_ENV))
            .merge(Serialized::defaults(flags));
        let invalid = |e| ConfigError::Invalid(Box::new(e));
        // `params` is flattened, and serde reads a flattened struct from a
        // copy that has lost which source each key came from. Read it on its
        // own first (a bad value then names its key and file), and check the
        // top-level keys here, so that errors say where they are.
        figment.extract::<ModelParams>().map_err(invalid)?;
        check_keys(&figment)?;
        let config: Config = figment.extract().map_err(invalid)?;
        config.profiles()?.check_startup(config.models_max)?;
        Ok(config)
    }

    /// The per-model tables, checked and indexed.
    pub fn profiles(&self) -> Result<ModelProfiles, SettingsError> {
        ModelProfiles::new(self.defaults.clone(), self.models.clone())
    }

    /// Seconds one decode step may run: `worker_step_timeout`, or the ping timeout when 0.
    pub fn step_timeout(&self) -> u64 {
        match self.worker_step_timeout {
            0 => self.worker_ping_timeout,
            n => n,
        }
    }

    /// Where crash reports are kept (see `crash_dir`).
    pub fn crash_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.crash_dir {
            return Some(dir.clone());
        }
        let first = |var: &str| first_path(var).filter(|p| p.is_absolute());
        first("STATE_DIRECTORY")
            .or_else(|| first("XDG_STATE_HOME").map(|d| d.join("llama-router")))
            .or_else(|| first("HOME").map(|h| h.join(".local/state/llama-router")))
            .map(|d| d.join("crashes"))
    }

    /// The Unix socket to listen on (or to connect to).
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(default_socket_path)
    }
}

/// Refuses a top-level key that `Config::default()` does not have (every
/// key is in it, an unset one as empty), naming the key and its source.
fn check_keys(figment: &Figment) -> Result<(), ConfigError> {
    let invalid = |e| ConfigError::Invalid(Box::new(e));
    let known = Serialized::defaults(Config::default())
        .data()
        .map_err(invalid)?;
    let known: Vec<&String> = known.values().flat_map(|dict| dict.keys()).collect();
    for (profile, dict) in figment.data().map_err(invalid)? {
        if let Some(key) = dict.keys().find(|k| !known.contains(k)) {
            let mut e = figment::Error::from(format!("unknown key `{key}`"));
            e.profile = Some(profile);
            e.metadata = figment.find_metadata(key).cloned();
            e.path = vec![key.clone()];
            return Err(invalid(e));
        }
    }
    Ok(())
}

/// `$RUNTIME_DIRECTORY` (set by systemd), else `/run/llama-router` when
/// writable, else `$XDG_RUNTIME_DIR`, else the temp dir; plus `llama-router.sock`.
pub fn default_socket_path() -> PathBuf {
    const NAME: &str = "llama-router.sock";
    if let Some(dir) = first_path("RUNTIME_DIRECTORY") {
        return dir.join(NAME);
    }
    let system = Path::new("/run/llama-router");
    if system.is_dir() && is_writable(system) {
        return system.join(NAME);
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("llama-router")
        .join(NAME)
}

/// The first path of environment variable `var`: systemd may list several
/// directories separated by ':' (`RUNTIME_DIRECTORY`, `STATE_DIRECTORY`);
/// the first is ours.
fn first_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(|v| PathBuf::from(v.to_string_lossy().split(':').next().unwrap_or_default()))
}

fn is_writable(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| !m.permissions().readonly()) && tempfile_probe(dir)
}

/// Whether a file can be created in `dir` (permissions alone do not say, for root or ACLs).
fn tempfile_probe(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

// figment::Jail's closures return figment::Error, which is large.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        models_max: Option<u32>,
    }

    #[test]
    fn layers_apply_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "models_max = 2\nidle_ttl = 30\nmlock = true\n")?;
            jail.set_env("LLAMA_ROUTER_IDLE_TTL", "60");
            jail.set_env("LLAMA_ROUTER_ENDPOINT", "unix:/x"); // the client's, not config
            let c = Config::load(Some(Path::new("c.toml")), Flags::default())
                .map_err(|e| e.to_string())?;
            assert_eq!((c.models_max, c.idle_ttl, c.mlock), (2, 60, true));
            let c = Config::load(
                Some(Path::new("c.toml")),
                Flags {
                    models_max: Some(7),
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(c.models_max, 7);
            assert_eq!(c.load_queue, Config::default().load_queue);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_name_key_and_source() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "models_maxx = 2\n")?;
            let err = Config::load(Some(Path::new("c.toml")), Flags::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("models_maxx") && err.contains("c.toml"),
                "{err}"
            );
            jail.create_file("d.toml", "models_max = \"lots\"\n")?;
            let err = Config::load(Some(Path::new("d.toml")), Flags::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("models_max") && err.contains("d.toml"),
                "{err}"
            );
            jail.set_env("LLAMA_ROUTER_MODELS_MAX", "-1");
            let err = Config::load(None, Flags::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("MODELS_MAX") && err.contains("LLAMA_ROUTER_"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn engine_keys_resolve_like_the_others_and_their_errors_name_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "ctx_size = 512\nflash_attn = \"on\"\n")?;
            jail.set_env("LLAMA_ROUTER_GPU_LAYERS", "all");
            let c = Config::load(Some(Path::new("c.toml")), Flags::default())
                .map_err(|e| e.to_string())?;
            let p = c.params;
            assert_eq!(p.ctx_size, 512);
            assert_eq!(p.flash_attn, crate::params::FlashAttn::On);
            assert_eq!(p.gpu_layers, crate::params::GpuLayers::All);
            assert_eq!(p.parallel, ModelParams::default().parallel);
            jail.create_file("d.toml", "ctx_size = \"lots\"\n")?;
            let err = Config::load(Some(Path::new("d.toml")), Flags::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("ctx_size") && err.contains("d.toml"), "{err}");
            jail.create_file("e.toml", "[models.m]\nctx_siz = 1\n")?;
            let err = Config::load(Some(Path::new("e.toml")), Flags::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("ctx_siz") && err.contains("e.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_documented_config_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/llama-router.toml");
        Jail::expect_with(|_| {
            let c = Config::load(Some(&path), Flags::default()).map_err(|e| e.to_string())?;
            assert_eq!(c, Config::default());
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err =
            Config::load(Some(Path::new("/nonexistent/c.toml")), Flags::default()).unwrap_err();
        assert!(matches!(err, ConfigError::FileNotFound(_)));
    }

    #[test]
    fn runtime_directory_decides_the_socket() {
        Jail::expect_with(|jail| {
            jail.set_env("RUNTIME_DIRECTORY", "/run/x:/run/y");
            assert_eq!(
                default_socket_path(),
                PathBuf::from("/run/x/llama-router.sock")
            );
            Ok(())
        });
    }
}
