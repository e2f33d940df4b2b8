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

/// The most a spare worker reads on its stdin: a worker's command line (the
/// kernel caps a real argv at a few MiB; ours are far shorter).
pub const MAX_STANDBY_INPUT: u64 = 1 << 20;

/// Arguments of the hidden `worker-standby` subcommand: a spare worker,
/// started before any model needs it (`worker::spare`). It reads the
/// `worker` command line it is to run on its stdin.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct StandbyArgs {
    /// The daemon's pid: the worker exits at once if its parent is another process.
    #[arg(long)]
    pub parent_pid: u32,
    /// Log filter.
    #[arg(long)]
    pub log_level: String,
}

impl StandbyArgs {
    /// The argv after the binary's path: `worker-standby --parent-pid ...`.
    pub fn to_argv(&self) -> Vec<OsString> {
        vec![
            "worker-standby".into(),
            "--parent-pid".into(),
            self.parent_pid.to_string().into(),
            "--log-level".into(),
            self.log_level.clone().into(),
        ]
    }
}

/// Why a spare worker could not take the command line it was given.
#[derive(Debug, thiserror::Error)]
pub enum StandbyInputError {
    /// Not a `worker` command line this binary parses.
    #[error("not a worker command line: {0}")]
    Parse(#[from] clap::Error),
    /// Longer than [`MAX_STANDBY_INPUT`].
    #[error("a worker command line over {MAX_STANDBY_INPUT} bytes")]
    TooLong,
}

/// The `worker` command line as a parser sees it.
#[derive(clap::Parser)]
#[command(no_binary_name = true)]
struct WorkerLine {
    #[command(subcommand)]
    command: WorkerCommand,
}

#[derive(clap::Subcommand)]
enum WorkerCommand {
    Worker(WorkerArgs),
}

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

    /// What a spare worker is sent on its stdin: the argv of [`to_argv`](Self::to_argv),
    /// each argument ended by a NUL (no argument holds one; any may hold a newline).
    pub fn to_standby_input(&self) -> Vec<u8> {
        let mut input = Vec::new();
        for arg in self.to_argv() {
            input.extend_from_slice(arg.as_encoded_bytes());
            input.push(0);
        }
        input
    }

    /// Parses what [`to_standby_input`](Self::to_standby_input) wrote.
    pub fn from_standby_input(input: &[u8]) -> Result<Self, StandbyInputError> {
        if input.len() as u64 > MAX_STANDBY_INPUT {
            return Err(StandbyInputError::TooLong);
        }
        let body = input.strip_suffix(&[0]).unwrap_or(input);
        let argv = body.split(|&b| b == 0).map(|arg| {
            use std::os::unix::ffi::OsStrExt;
            std::ffi::OsStr::from_bytes(arg).to_os_string()
        });
        let WorkerCommand::Worker(args) =
            <WorkerLine as clap::Parser>::try_parse_from(argv)?.command;
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{CacheType, FlashAttn, GpuLayers};
    use clap::Parser;
    use std::os::unix::ffi::OsStrExt;

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
        let sent = args.to_standby_input();
        assert_eq!(WorkerArgs::from_standby_input(&sent).unwrap(), args);
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

    #[test]
    fn a_spare_takes_any_path_and_refuses_other_input() {
        let args = WorkerArgs {
            model_id: "m".into(),
            socket: "/run/x/w 1.sock".into(),
            queue: 1,
            parent_pid: 7,
            log_level: "debug".into(),
            chat_template: None,
            crash_socket: None,
            params: ModelParams::default(),
            sampling: SamplingSettings::default(),
            // A newline and bytes that are not UTF-8 are legal in a file name.
            shards: vec![PathBuf::from(std::ffi::OsStr::from_bytes(
                b"/m/a\nb\xff.gguf",
            ))],
        };
        let sent = args.to_standby_input();
        assert_eq!(WorkerArgs::from_standby_input(&sent).unwrap(), args);
        assert!(WorkerArgs::from_standby_input(b"").is_err());
        assert!(WorkerArgs::from_standby_input(b"serve\0--models-dir\0/m\0").is_err());
        let huge = vec![b'x'; (MAX_STANDBY_INPUT + 1) as usize];
        assert!(matches!(
            WorkerArgs::from_standby_input(&huge),
            Err(StandbyInputError::TooLong)
        ));
        let standby = StandbyArgs {
            parent_pid: 7,
            log_level: "info".into(),
        };
        #[derive(Parser)]
        struct Spare {
            #[command(subcommand)]
            command: SpareSub,
        }
        #[derive(clap::Subcommand)]
        enum SpareSub {
            WorkerStandby(StandbyArgs),
        }
        let mut argv = vec![OsString::from("llama-router")];
        argv.extend(standby.to_argv());
        let SpareSub::WorkerStandby(parsed) = Spare::parse_from(argv).command;
        assert_eq!(parsed, standby);
    }
}
