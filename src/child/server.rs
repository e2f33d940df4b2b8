//! The worker process (`llama-router worker`): loads one model with llama.cpp
//! and serves it on a private Unix socket (0600, its daemon's connections
//! only) until SIGTERM or its parent's death.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use nix::sys::signal::Signal;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use super::accept;
use super::service::{WorkerControl, WorkerInference};
use crate::engine::chat::{ChatError, ChatTemplate};
use crate::engine::templates;
use crate::engine::{EngineHandle, Sampling};
use crate::gguf::SplitName;
use crate::params::GpuLayers;
use crate::proto::pb::inference_service_server::InferenceServiceServer;
use crate::proto::worker_pb::worker_service_server::WorkerServiceServer;
use crate::worker::args::{READY_LINE, WorkerArgs};

/// Why a worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The parent is not the daemon that started it (it died before we could watch it).
    #[error("parent process {expected} is gone")]
    Orphaned {
        /// The pid the daemon passed.
        expected: u32,
    },
    /// The shard list is not what llama.cpp will open.
    #[error("{0}")]
    Shards(String),
    /// llama.cpp could not load the model or make a context.
    #[error("llama.cpp: {0}")]
    Llama(String),
    /// Socket or signal setup failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The settings the daemon passed are unusable.
    #[error("{0}")]
    Settings(String),
    /// The gRPC server failed.
    #[error("serving: {0}")]
    Serve(#[from] tonic::transport::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkerError {
    let what = what.into();
    move |source| WorkerError::Io { what, source }
}

/// Dies with the daemon: SIGKILL when the parent goes, and a check that the
/// parent did not already go before that was set.
pub fn tie_to_parent(expected: u32) -> Result<(), WorkerError> {
    // Failing to set it only loses the orphan guard; the daemon still kills us on exit.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)) {
        tracing::warn!(error = %e, "cannot set PR_SET_PDEATHSIG");
    }
    let parent = u32::try_from(nix::unistd::getppid().as_raw()).unwrap_or(0);
    if parent != expected {
        return Err(WorkerError::Orphaned { expected });
    }
    Ok(())
}

/// Gives SIGSEGV and SIGBUS their default action back. Rust's runtime
/// installs handlers for them to report stack overflows, and those handlers
/// swallow a signal that was *sent* (`kill -SEGV`) rather than raised by a
/// fault. A worker must die of it, so that the daemon can say so.
#[allow(unsafe_code)]
pub fn default_fault_signals() {
    use nix::sys::signal::{SigHandler, signal};
    for sig in [Signal::SIGSEGV, Signal::SIGBUS] {
        // SAFETY: SIG_DFL installs no handler code; nothing can run in signal context.
        if let Err(e) = unsafe { signal(sig, SigHandler::SigDfl) } {
            tracing::warn!(error = %e, "cannot reset the {sig} handler");
        }
    }
}

/// llama.cpp opens a split set from its first shard and derives the others'
/// names itself; make sure that gives exactly the files the daemon resolved.
fn check_shards(shards: &[PathBuf]) -> Result<&Path, WorkerError> {
    let first = shards
        .first()
        .ok_or_else(|| WorkerError::Shards("no model file given".to_owned()))?;
    if shards.len() == 1 {
        return Ok(first);
    }
    let split = SplitName::parse(first).ok_or_else(|| {
        WorkerError::Shards(format!(
            "{} is not named like the first shard of a split set",
            first.display()
        ))
    })?;
    let expected: Vec<PathBuf> = (1..=split.count).map(|i| split.shard_path(i)).collect();
    if split.index != 1 || expected != shards {
        return Err(WorkerError::Shards(format!(
            "llama.cpp would open {expected:?} from {}, not the resolved {shards:?}",
            first.display()
        )));
    }
    Ok(first)
}

/// The chat template: the configured one (a built-in's name such as
/// `chatml`, else a Jinja file), else the model's (GGUF metadata), else
/// ChatML as llama-server falls back to, compiled.
fn chat_template(
    model: &LlamaModel,
    configured: Option<&Path>,
    model_id: &str,
) -> Result<ChatTemplate, ChatError> {
    let source: std::borrow::Cow<'static, str> = match configured {
        Some(path) => match builtin_named(path) {
            Some(source) => source.into(),
            None => std::fs::read_to_string(path)
                .map_err(|e| {
                    ChatError::Template(format!(
                        "cannot read chat template {}: {e} (or name a built-in: {})",
                        path.display(),
                        templates::names()
                    ))
                })?
                .into(),
        },
        None => match model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok())
        {
            Some(own) => own.into(),
            None => {
                // Warn: the daemon forwards a worker's info lines at debug.
                tracing::warn!(
                    model = %model_id,
                    "the model has no chat template (no tokenizer.chat_template): chat uses ChatML, as llama-server does"
                );
                templates::CHATML.into()
            }
        },
    };
    let vocab = model.vocab();
    let text = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    ChatTemplate::new(&source, text(vocab.bos()), text(vocab.eos()))
}

/// The built-in template a configured `chat_template` names: a bare name
/// (no directory part) that is not a file here.
fn builtin_named(path: &Path) -> Option<&'static str> {
    let bare = path.parent().is_none_or(|p| p.as_os_str().is_empty());
    if !bare || path.is_file() {
        return None;
    }
    path.to_str().and_then(templates::builtin)
}

/// Loads the model, serves it, and returns after SIGTERM/SIGINT once in-flight
/// requests end. `backend`: llama.cpp as a spare worker initialised it (None:
/// initialise it here).
pub async fn run(args: WorkerArgs, backend: Option<LlamaBackend>) -> Result<(), WorkerError> {
    // First of all, so that a crash while loading is captured too.
    let _capture = args.crash_socket.as_deref().and_then(|socket| {
        super::capture::install(socket)
            .map_err(|e| tracing::warn!(model = %args.model_id, "crash capture is off: {e}"))
            .ok()
    });
    let first = check_shards(&args.shards)?.to_path_buf();
    let (model, engine) = tokio::task::spawn_blocking({
        let args = args.clone();
        move || load(&first, &args, backend)
    })
    .await
    .map_err(|e| WorkerError::Llama(format!("loading panicked: {e}")))??;
    let template = chat_template(&model, args.chat_template.as_deref(), &args.model_id);
    match (&template, &args.chat_template) {
        // A configured template that does not work is a configuration error.
        (Err(e), Some(_)) => return Err(WorkerError::Settings(e.to_string())),
        (Err(e), None) => tracing::info!(model = %args.model_id, "chat disabled: {e}"),
        _ => {}
    }
    let sampling = Sampling::with_defaults(&args.sampling);
    sampling
        .check()
        .map_err(|e| WorkerError::Settings(format!("sampling defaults: {e}")))?;

    let _ = std::fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket)
        .map_err(io(format!("binding {}", args.socket.display())))?;
    // 0600 whatever the umask; and only the daemon's connections get through.
    accept::restrict_socket(&args.socket)
        .map_err(io(format!("making {} private", args.socket.display())))?;
    let incoming = accept::daemon_only(UnixListenerStream::new(listener), args.parent_pid);
    let mut terminate = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
    let inference = WorkerInference::new(engine.clone(), template, sampling);
    let server = tonic::transport::Server::builder()
        .add_service(InferenceServiceServer::new(inference))
        .add_service(WorkerServiceServer::new(WorkerControl::new(engine)))
        .serve_with_incoming_shutdown(incoming, async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("stopping: finishing in-flight requests");
        });
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{READY_LINE}")
        .and_then(|()| stdout.flush())
        .map_err(io("telling the daemon we are ready"))?;
    tracing::info!(model = %args.model_id, socket = %args.socket.display(), "worker ready");
    let served = server.await;
    let _ = std::fs::remove_file(&args.socket);
    drop(model);
    served.map_err(WorkerError::from)
}

fn load(
    first: &Path,
    args: &WorkerArgs,
    backend: Option<LlamaBackend>,
) -> Result<(Arc<LlamaModel>, EngineHandle), WorkerError> {
    let backend = match backend {
        Some(backend) => backend,
        None => LlamaBackend::init().map_err(|e| WorkerError::Llama(e.to_string()))?,
    };
    let backend = Arc::new(backend);
    let mut params = LlamaModelParams::default();
    // One device, main_gpu: the daemon's ledger holds the model's memory there
    // (llama.cpp's default would spread layers over every GPU it sees).
    params = params
        .with_main_gpu(i32::try_from(args.params.main_gpu).unwrap_or(0))
        .with_split_mode(llama_cpp_2::model::params::LlamaSplitMode::None);
    if let Some(layers) = args.params.gpu_layers.llama_value() {
        params = params.with_n_gpu_layers(layers);
    }
    if args.params.gpu_layers == GpuLayers::Count(0) {
        // No device at all, not merely no layers on one. With a GPU in its
        // list llama.cpp keeps the CPU's weights in that GPU's pinned host
        // buffer (a copy of the whole file, which also bypasses the CPU's
        // weight repack) and sends large prompt batches to the GPU, in
        // memory the ledger does not hold for a model with no layers there.
        // Without one the weights stay in the mapped file, repacked where
        // the CPU has a faster layout, as in a CPU-only build. (main_gpu -1:
        // in split mode none, no main GPU either.)
        params = params
            .with_main_gpu(-1)
            .with_devices(&[])
            .map_err(|e| WorkerError::Llama(format!("cannot leave out the GPUs: {e}")))?;
    }
    let model = LlamaModel::load_from_file(&backend, first, &params)
        .map_err(|e| WorkerError::Llama(format!("cannot load {}: {e}", first.display())))?;
    let model = Arc::new(model);
    let engine = EngineHandle::start(backend, model.clone(), args.params, args.queue)
        .map_err(|e| WorkerError::Llama(e.to_string()))?;
    Ok((model, engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_lists_llama_cpp_would_not_open_are_refused() {
        let one = vec![PathBuf::from("/m/a.gguf")];
        assert_eq!(check_shards(&one).unwrap(), Path::new("/m/a.gguf"));
        let set: Vec<PathBuf> = (1..=3)
            .map(|i| PathBuf::from(format!("/m/a-{i:05}-of-00003.gguf")))
            .collect();
        assert_eq!(check_shards(&set).unwrap(), set[0].as_path());
        let mut reordered = set.clone();
        reordered.swap(1, 2);
        assert!(check_shards(&reordered).is_err());
        assert!(check_shards(&set[..2]).is_err());
        let odd = vec![PathBuf::from("/m/x.gguf"), PathBuf::from("/m/y.gguf")];
        assert!(check_shards(&odd).is_err());
        assert!(check_shards(&[]).is_err());
    }
}
