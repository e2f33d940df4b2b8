//! The command line: `llama-router <command>`.

pub mod client;
pub mod crashes;
pub mod dry_run;
pub mod generate;
pub mod inspect;
pub mod llama_server;
pub mod load;
pub mod serve;

use clap::{Parser, Subcommand};

/// Version and the backends this build was compiled with.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (backends: ",
    env!("ROUTER_BUILD_BACKENDS"),
    "; ",
    env!("ROUTER_LLAMA_CPP"),
    ")"
);

/// Serve many GGUF models from one directory.
#[derive(Debug, Parser)]
#[command(name = "llama-router", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where client commands reach the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArg {
    /// Daemon address: a Unix socket path or http://HOST:PORT [default: the daemon's socket].
    #[arg(long, env = "LLAMA_ROUTER_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// Bearer token of a daemon started with --api-key (prefer the environment variable: flags show in `ps`).
    #[arg(
        long,
        env = "LLAMA_ROUTER_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub api_key: Option<crate::api_key::ApiKey>,
}

impl EndpointArg {
    /// The endpoint and key to use.
    pub fn resolve(&self) -> client::Target {
        client::Target {
            endpoint: self
                .endpoint
                .clone()
                .unwrap_or_else(client::default_endpoint),
            api_key: self.api_key.clone(),
        }
    }
}

/// The subcommands.
// Parsed once per process: the size of the `serve` flags costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(serve::ServeArgs),
    /// Run the daemon with llama-server's router-mode flags (also: start the binary as `llama-server`).
    LlamaServer(llama_server::LlamaServerArgs),
    /// Show a GGUF model's summary and tensors (any shard of a split set opens the set).
    Inspect(inspect::InspectArgs),
    /// List the daemon's models.
    Models {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Where the daemon is.
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// Load a model into RAM and wait until it is ready.
    Load {
        /// Model id.
        name: String,
        /// Say what loading would evict and how many layers it would offload; do nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also start its worker (and upload its GPU layers), so the first request finds it answering.
        #[arg(long, conflicts_with = "dry_run")]
        start_worker: bool,
        /// JSON instead of text (with --dry-run).
        #[arg(long)]
        json: bool,
        /// Where the daemon is.
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// Unload a model.
    Unload {
        /// Model id.
        name: String,
        /// Where the daemon is.
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// Pin a model so it is never evicted (or unpin it with --off).
    Pin {
        /// Model id.
        name: String,
        /// Unpin instead.
        #[arg(long)]
        off: bool,
        /// Where the daemon is.
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// Print model state changes as they happen.
    Watch {
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Where the daemon is.
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// Generate text from a prompt and stream it to stdout.
    Generate(generate::GenerateArgs),
    /// Chat with a model interactively (its own chat template).
    Chat(generate::ChatArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Runs one model's inference engine (started by the daemon, not by hand).
    #[command(hide = true)]
    Worker(crate::worker::WorkerArgs),
    /// A spare worker: initialises llama.cpp, then reads its `worker` command line on stdin.
    #[command(hide = true)]
    WorkerStandby(crate::worker::args::StandbyArgs),
    /// Prints the GPUs this machine has as JSON (what the daemon runs at start-up).
    #[command(hide = true)]
    GpuProbe,
    /// List the crash reports of workers that died of a fault or panicked (newest first).
    Crashes {
        /// `show ID`: one report whole.
        #[command(subcommand)]
        command: Option<CrashesCommand>,
        /// JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        /// Where the daemon is.
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// Show the daemon's status.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Where the daemon is.
        #[command(flatten)]
        endpoint: EndpointArg,
    },
}

/// `llama-router crashes ...`.
#[derive(Debug, Subcommand)]
pub enum CrashesCommand {
    /// Show one crash report.
    Show {
        /// The report's id (from `llama-router crashes`, or the model's failure reason).
        id: String,
    },
}

/// `llama-router config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (with the LLAMA_ROUTER_* environment) without starting anything.
    Check {
        /// The file.
        file: std::path::PathBuf,
    },
}

/// `config check FILE`: the configuration it gives, summarised, or every error with its key path.
pub fn config_check(file: &std::path::Path) -> Result<String, crate::config::ConfigError> {
    let config = crate::config::Config::load(Some(file), serde_json::json!({}))?;
    let profiles = config.profiles()?;
    let aliases = profiles.aliases().count();
    Ok(format!(
        "{}: ok: models_dir {}, models_max {}, {} model table(s), {} alias(es)\n",
        file.display(),
        config.models_dir.display(),
        config.models_max,
        config.models.len(),
        aliases
    ))
}
