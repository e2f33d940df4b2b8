//! A spare worker (`llama-router worker-standby`): started by the daemon
//! before any model needs it (`worker::spare`), it pays what every worker
//! pays before it knows its model: the process start, the runtime, and
//! llama.cpp's backends and device registry (a Vulkan, CUDA or HIP instance
//! and its device list, tens to hundreds of milliseconds). Then it waits for
//! its `worker` command line on stdin and runs as that worker, so a swap's
//! load begins with the model's file.

use std::io::Read;

use llama_cpp_2::llama_backend::LlamaBackend;

use super::server::WorkerError;
use crate::worker::WorkerArgs;
use crate::worker::args::{MAX_STANDBY_INPUT, StandbyArgs};

/// Initialises llama.cpp, then blocks until the daemon sends the worker's
/// command line (all of stdin); returns it with the initialised backend.
pub fn wait_for_model(standby: &StandbyArgs) -> Result<(WorkerArgs, LlamaBackend), WorkerError> {
    let backend = LlamaBackend::init().map_err(|e| WorkerError::Llama(e.to_string()))?;
    // The device list brings up ggml's registry: every backend's instance.
    let devices = llama_cpp_2::list_llama_ggml_backend_devices();
    tracing::debug!(devices = devices.len(), "spare worker: waiting for a model");
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STANDBY_INPUT.saturating_add(1))
        .read_to_end(&mut input)
        .map_err(|source| WorkerError::Io {
            what: "reading the worker's command line".to_owned(),
            source,
        })?;
    if input.is_empty() {
        // The daemon let the spare go (it exits, or it was never needed).
        return Err(WorkerError::Settings(
            "spare worker: stdin closed before a model came".to_owned(),
        ));
    }
    let args = WorkerArgs::from_standby_input(&input)
        .map_err(|e| WorkerError::Settings(format!("spare worker: {e}")))?;
    if args.parent_pid != standby.parent_pid {
        return Err(WorkerError::Settings(format!(
            "spare worker: the command line names parent {}, not {}",
            args.parent_pid, standby.parent_pid
        )));
    }
    Ok((args, backend))
}
