//! The command line of `llama-router worker`: one definition for the daemon
//! that builds it and the worker that parses it.

use std::path::PathBuf;

use crate::settings::{CacheType, FlashAttn, value_name};

/// Arguments of the hidden `worker` subcommand (started by the daemon only).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct WorkerArgs {
    /// Model id, for logs.
    #[arg(long)]
    pub model_id: String,
    /// Unix socket to serve on.
    #[arg(long)]
    pub socket: PathBuf,
    /// Sequences decoded together.
    #[arg(long)]
    pub parallel: u32,
    /// Context per sequence, in tokens.
    #[arg(long)]
    pub ctx_size: u32,
    /// Tokens per decode step.
    #[arg(long)]
    pub batch_size: u32,
    /// CPU threads for llama.cpp.
    #[arg(long)]
    pub threads: i32,
    /// Requests that may wait for a free sequence.
    #[arg(long)]
    pub queue: usize,
    /// The daemon's pid: the worker exits at once if its parent is another process.
    #[arg(long)]
    pub parent_pid: u32,
    /// Log filter.
    #[arg(long)]
    pub log_level: String,
    /// Sampling defaults of this model (JSON of `SamplingSettings`).
    #[arg(long, default_value = "{}")]
    pub sampling: String,
    /// A chat template file used instead of the model's own.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Layers offloaded to the GPU (llama.cpp's default when absent).
    #[arg(long)]
    pub gpu_layers: Option<u32>,
    /// Which GPU holds the model (its index among the engine's devices).
    #[arg(long, default_value_t = 0)]
    pub main_gpu: u32,
    /// Flash attention.
    #[arg(long, value_enum, default_value = "auto")]
    pub flash_attn: FlashAttn,
    /// KV cache type of keys.
    #[arg(long, value_enum, default_value = "f16")]
    pub cache_type_k: CacheType,
    /// KV cache type of values.
    #[arg(long, value_enum, default_value = "f16")]
    pub cache_type_v: CacheType,
    /// The model's files in shard order, as the daemon's GGUF reader resolved them.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

impl WorkerArgs {
    /// The argv after the binary's path: `worker --model-id ... SHARD...`.
    pub fn to_argv(&self) -> Vec<std::ffi::OsString> {
        let mut argv: Vec<std::ffi::OsString> = vec!["worker".into()];
        let mut flag = |name: &str, value: std::ffi::OsString| {
            argv.push(format!("--{name}").into());
            argv.push(value);
        };
        flag("model-id", self.model_id.clone().into());
        flag("socket", self.socket.clone().into());
        flag("parallel", self.parallel.to_string().into());
        flag("ctx-size", self.ctx_size.to_string().into());
        flag("batch-size", self.batch_size.to_string().into());
        flag("threads", self.threads.to_string().into());
        flag("queue", self.queue.to_string().into());
        flag("parent-pid", self.parent_pid.to_string().into());
        flag("log-level", self.log_level.clone().into());
        flag("sampling", self.sampling.clone().into());
        if let Some(template) = &self.chat_template {
            flag("chat-template", template.clone().into());
        }
        if let Some(layers) = self.gpu_layers {
            flag("gpu-layers", layers.to_string().into());
        }
        flag("main-gpu", self.main_gpu.to_string().into());
        flag("flash-attn", value_name(self.flash_attn).into());
        flag("cache-type-k", value_name(self.cache_type_k).into());
        flag("cache-type-v", value_name(self.cache_type_v).into());
        argv.push("--".into());
        argv.extend(self.shards.iter().map(|s| s.clone().into_os_string()));
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            parallel: 4,
            ctx_size: 4096,
            batch_size: 512,
            threads: 2,
            queue: 64,
            parent_pid: 42,
            log_level: "info".into(),
            sampling: r#"{"temperature":0.0}"#.into(),
            chat_template: Some("/t.jinja".into()),
            gpu_layers: Some(12),
            main_gpu: 1,
            flash_attn: FlashAttn::On,
            cache_type_k: CacheType::Q8_0,
            cache_type_v: CacheType::Q4_0,
            shards: vec![
                "/m/-a-00001-of-00002.gguf".into(),
                "/m/-a-00002-of-00002.gguf".into(),
            ],
        };
        let mut argv = vec![std::ffi::OsString::from("llama-router")];
        argv.extend(args.to_argv());
        let Sub::Worker(parsed) = Wrapper::parse_from(argv).command;
        assert_eq!(parsed, args);
    }
}
