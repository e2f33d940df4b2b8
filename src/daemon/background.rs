//! The tasks the daemon runs beside its servers: start-up loads and GPU
//! discovery (systemd's are in `notify`).

use crate::config::Config;
use crate::supervisor::SupervisorHandle;

/// Loads the `load_on_startup` models in the background: READY does not wait for them.
pub(super) fn spawn_startup_loads(config: &Config, supervisor: &SupervisorHandle) {
    let ids = config.profiles().map(|p| p.startup()).unwrap_or_default();
    if ids.is_empty() {
        return;
    }
    let supervisor = supervisor.clone();
    tokio::spawn(async move {
        for id in ids {
            match supervisor.load_and_wait(&id).await {
                Ok(_) => tracing::info!(model = %id, "loaded at start-up (load_on_startup)"),
                Err(e) => {
                    tracing::error!(model = %id, error = %e, "load_on_startup of {id} failed: {e}")
                }
            }
        }
    });
}

/// Discovers the GPUs (in a child process) and says what it found.
pub(super) async fn discover_gpus() -> crate::gpu::devices::GpuSet {
    use crate::gpu::probe;
    let found = match std::env::current_exe() {
        Ok(exe) => probe::discover(&exe, probe::PROBE_TIMEOUT).await,
        Err(e) => crate::gpu::Discovery {
            devices: Vec::new(),
            notes: vec![format!("cannot find our own binary to probe GPUs: {e}")],
        },
    };
    for d in &found.devices {
        tracing::info!(
            backend = d.backend.name(),
            device = d.index,
            name = %d.name,
            arch = d.arch.as_deref().unwrap_or(""),
            total_bytes = d.total_bytes,
            free_bytes = d.free_bytes,
            usable = d.backend.usable(),
            "GPU {}:{} {}: {} of {} free{}",
            d.backend.name(),
            d.index,
            d.name,
            crate::util::human_bytes(d.free_bytes),
            crate::util::human_bytes(d.total_bytes),
            if d.backend.usable() { "" } else { " (this build has no engine for it: CPU only)" }
        );
    }
    if found.devices.is_empty() {
        tracing::info!(notes = %found.notes.join("; "), "no GPU found, serving on CPU: {}", found.notes.join("; "));
    }
    crate::gpu::devices::GpuSet::new(found)
}
