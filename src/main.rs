//! The `llama-router` binary: parses the command line and runs a command.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use llama_router::cli::{
    Cli, Command, ConfigCommand, client, inspect, llama_server, serve::ServeArgs,
};
use llama_router::config::Config;
use llama_router::telemetry;

/// Exit status for input the program refuses (a bad file, a bad request).
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    // Started as `llama-server` (a symlink): llama-server's command line.
    let mut argv = std::env::args_os();
    let started_as = argv.next().map(std::path::PathBuf::from);
    if started_as.as_deref().and_then(|p| p.file_name()) == Some("llama-server".as_ref()) {
        let args: Vec<String> = argv.map(|a| a.to_string_lossy().into_owned()).collect();
        return llama_server(args);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(args) => match inspect::render(&args) {
            Ok(text) => write_stdout(text.as_bytes()),
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
        Command::Serve(args) => serve(&args),
        Command::LlamaServer(args) => llama_server(args.args),
        Command::Config(ConfigCommand::Check { file }) => {
            match llama_router::cli::config_check(&file) {
                Ok(text) => write_stdout(text.as_bytes()),
                Err(err) => {
                    eprintln!("error: {}: {err}", file.display());
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            }
        }
        Command::Worker(args) => worker(args.parent_pid, &args.log_level.clone(), |rt| {
            rt.block_on(llama_router::child::server::run(args, None))
        }),
        Command::WorkerStandby(standby) => {
            worker(standby.parent_pid, &standby.log_level.clone(), |rt| {
                let (args, backend) = llama_router::child::standby::wait_for_model(&standby)?;
                rt.block_on(llama_router::child::server::run(args, Some(backend)))
            })
        }
        Command::GpuProbe => {
            let found = llama_router::gpu::probe::discover_here();
            match serde_json::to_vec(&found) {
                Ok(mut json) => {
                    json.push(b'\n');
                    write_stdout(&json)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        command => run_client(command),
    }
}

/// How the daemon's run ended, as its exit status (an error is logged and printed).
fn daemon_exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "llama-router stopped");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(args: &ServeArgs) -> ExitCode {
    let result = (|| -> anyhow::Result<()> {
        let config = Config::load(args.config.as_deref(), args.overrides())?;
        let level = telemetry::effective_level(config.log_level.as_deref());
        let log = telemetry::init(config.log_format, &level)?;
        let (file, flags) = (args.config.clone(), args.overrides());
        let reread = Box::new(move || Config::load(file.as_deref(), &flags));
        runtime()?.block_on(llama_router::daemon::serve(config, reread, log))?;
        Ok(())
    })();
    daemon_exit(result)
}

/// llama-server's router mode: its flags resolve into the same `Config`
/// as `serve`; the preset file is read again on every SIGHUP.
fn llama_server(args: Vec<String>) -> ExitCode {
    let router = match llama_server::parse(&args, std::env::vars()) {
        Ok(llama_server::Parsed::Run(router)) => router,
        Ok(llama_server::Parsed::Help(text)) => return write_stdout(text.as_bytes()),
        Ok(llama_server::Parsed::Version) => {
            return write_stdout(
                format!("llama-router {}\n", llama_router::cli::VERSION).as_bytes(),
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let result = (|| -> anyhow::Result<()> {
        let (config, ignored) = router.config()?;
        let level = telemetry::effective_level(config.log_level.as_deref());
        let log = telemetry::init(config.log_format, &level)?;
        if !ignored.is_empty() {
            tracing::warn!(
                "llama-server options that have no effect in llama-router: {}",
                ignored.join(", ")
            );
        }
        let reread = Box::new(move || router.config().map(|(config, _)| config));
        runtime()?.block_on(llama_router::daemon::serve(config, reread, log))?;
        Ok(())
    })();
    daemon_exit(result)
}

/// The hidden `worker` and `worker-standby` subcommands: log JSON lines on
/// stderr for the daemon to forward, die with the daemon, then `serve`.
fn worker(
    parent_pid: u32,
    log_level: &str,
    serve: impl FnOnce(&tokio::runtime::Runtime) -> Result<(), llama_router::child::server::WorkerError>,
) -> ExitCode {
    let result = (|| -> anyhow::Result<()> {
        telemetry::init_with_tap(
            telemetry::LogFormat::Json,
            log_level,
            Some(llama_router::engine::offload::tap),
        )?;
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        llama_router::child::server::tie_to_parent(parent_pid)?;
        llama_router::child::server::default_fault_signals();
        serve(&runtime()?)?;
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "worker stopped: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(command: Command) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match command {
            Command::Models { json, endpoint } => client::models(&endpoint.resolve(), json).await,
            Command::Load {
                name,
                dry_run: true,
                json,
                endpoint,
                ..
            } => llama_router::cli::dry_run::load_dry_run(&endpoint.resolve(), &name, json).await,
            Command::Load {
                name,
                start_worker,
                endpoint,
                ..
            } => llama_router::cli::load::load(&endpoint.resolve(), &name, start_worker).await,
            Command::Unload { name, endpoint } => client::unload(&endpoint.resolve(), &name).await,
            Command::Pin {
                name,
                off,
                endpoint,
            } => client::pin(&endpoint.resolve(), &name, !off).await,
            Command::Watch { json, endpoint } => client::watch(&endpoint.resolve(), json).await,
            Command::Status { json, endpoint } => client::status(&endpoint.resolve(), json).await,
            Command::Crashes {
                command,
                json,
                endpoint,
            } => llama_router::cli::crashes::run(&endpoint.resolve(), command, json).await,
            Command::Generate(args) => llama_router::cli::generate::generate(&args).await,
            Command::Chat(args) => llama_router::cli::generate::chat(&args).await,
            Command::Serve(_)
            | Command::LlamaServer(_)
            | Command::Inspect(_)
            | Command::Worker(_)
            | Command::WorkerStandby(_)
            | Command::GpuProbe
            | Command::Config(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Writes all of `bytes`; a closed pipe (`| head`) is a normal end, not an error.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            ExitCode::FAILURE
        }
    }
}
