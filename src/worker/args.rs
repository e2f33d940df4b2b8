//! The command line of `llama-router worker`: one definition for the daemon
//! that builds it and the worker that parses it. The engine settings and the
//! sampling defaults are their own structs flattened with clap, written back
//! by `params::to_argv`, so a setting added there reaches the worker without
//! a line here. Nothing secret goes in it (`ps` shows it): a model's `env`
//! travels in the environment.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::params::{ModelParams, SamplingSettings, to_argv};

/// What the worker prints on stdout once it serves (the daemon waits for it).
pub const READY_LINE: &str = "READY";

/// Arguments of the hidden `worker` subcommand (started by the daemon only).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct WorkerArgs {
    /// Model id, for logs.
    #[arg(long)]
    pub model_id: String,
    /// Unix socket to serve on.
    #[arg(long)]
    pub socket: PathBuf,
    /// Requests that may wait for a free sequence.
    #[arg(long)]
    pub queue: usize,
    /// The daemon's pid: the worker exits at once if its parent is another process.
    #[arg(long)]
    pub parent_pid: u32,
    /// Log filter.
    #[arg(long)]
    pub log_level: String,
    /// A chat template file used instead of the model's own.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// The daemon's crash capture socket for this worker (see `crashes::capture`).
    #[arg(long)]
    pub crash_socket: Option<PathBuf>,
    /// The engine settings (`threads` already resolved: never 0).
    #[command(flatten)]
    pub params: ModelParams,
    /// Sampling defaults of this model.
    #[command(flatten)]
    pub sampling: SamplingSettings,
    /// The model's files in shard order, as the daemon's GGUF reader resolved them.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

impl WorkerArgs {
    /// The argv after the binary's path: `worker --model-id ... SHARD...`.
    pub fn to_argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec!["worker".into()];
        let mut flag = |name: &str, value: OsString| {
            argv.push(format!("--{name}").into());
            argv.push(value);
        };
        flag("model-id", self.model_id.clone().into());
        flag("socket", self.socket.clone().into());
        flag("queue", self.queue.to_string().into());
        flag("parent-pid", self.parent_pid.to_string().into());
        flag("log-level", self.log_level.clone().into());
        if let Some(template) = &self.chat_template {
            flag("chat-template", template.clone().into());
        }
        if let Some(socket) = &self.crash_socket {
            flag("crash-socket", socket.clone().into());
        }
        argv.extend(to_argv(&self.params));
        argv.extend(to_argv(&self.sampling));
        argv.push("--".into());
        argv.extend(self.shards.iter().map(|s| s.clone().into_os_string()));
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{CacheType, FlashAttn, GpuLayers};
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Worker(WorkerArgs),
    }

    #[test]
    fn argv_parses_back_to_the_same_arguments() {
        let args = WorkerArgs {
            model_id: "m".into(),
            socket: "/run/x/w-1.sock".into(),
            queue: 64,
            parent_pid: 42,
            log_level: "info".into(),
            chat_template: Some("/t.jinja".into()),
            crash_socket: Some("/run/x/w-1.crash".into()),
            params: ModelParams {
                parallel: 4,
                ctx_size: 4096,
                batch_size: 512,
                threads: 2,
                gpu_layers: GpuLayers::Count(12),
                main_gpu: 1,
                flash_attn: FlashAttn::On,
                cache_type_k: CacheType::Q8_0,
                cache_type_v: CacheType::Q4_0,
                cache_prompt: false,
            },
            sampling: SamplingSettings {
                temperature: Some(0.2),
                top_p: Some(0.9),
                penalty_last_n: Some(-1),
                ..SamplingSettings::default()
            },
            shards: vec![
                "/m/-a-00001-of-00002.gguf".into(),
                "/m/-a-00002-of-00002.gguf".into(),
            ],
        };
        let mut argv = vec![OsString::from("llama-router")];
        argv.extend(args.to_argv());
        let Sub::Worker(parsed) = Wrapper::parse_from(argv).command;
        assert_eq!(parsed, args);
        for layers in [GpuLayers::All, GpuLayers::Auto] {
            let args = WorkerArgs {
                params: ModelParams {
                    gpu_layers: layers,
                    ..args.params
                },
                sampling: SamplingSettings::default(),
                ..args.clone()
            };
            let mut argv = vec![OsString::from("llama-router")];
            argv.extend(args.to_argv());
            let Sub::Worker(parsed) = Wrapper::parse_from(argv).command;
            assert_eq!(parsed, args);
        }
    }
}
