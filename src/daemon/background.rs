//! The tasks the daemon runs beside its servers: start-up loads and GPU
//! discovery (systemd's are in `notify`); and the crash store they report to.

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
pub(super) async fn discover_gpus(budget: u64) -> crate::gpu::devices::GpuSet {
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
            kind = d.kind.name(),
            ggml_name = d.ggml_name.as_deref().unwrap_or(""),
            name = %d.name,
            arch = d.arch.as_deref().unwrap_or(""),
            arch_override = d.arch_override.as_deref().unwrap_or(""),
            total_bytes = d.total_bytes,
            free_bytes = d.free_bytes,
            usable = d.usable,
            "device {}:{} {} ({}{}): {} of {} free{}",
            d.backend.name(),
            d.index,
            d.name,
            d.kind.name(),
            d.arch.as_deref().map(|a| format!(", {a}")).unwrap_or_default(),
            crate::util::human_bytes(d.free_bytes),
            crate::util::human_bytes(d.total_bytes),
            match (d.usable, d.backend) {
                (true, _) => String::new(),
                (false, crate::gpu::Backend::Cpu) => " (the host CPU)".to_owned(),
                (false, _) => " (llama.cpp in this build does not offload to it)".to_owned(),
            }
        );
    }
    if !found.devices.iter().any(|d| d.usable) {
        tracing::info!(notes = %found.notes.join("; "), "no usable GPU, serving on the CPU: {}", found.notes.join("; "));
    }
    crate::gpu::devices::GpuSet::new(found, (budget > 0).then_some(budget))
}

/// Opens the crash reports' directory; without one the daemon still runs
/// (crashes are then only in the journal), and says why.
pub(super) fn open_crash_store(
    config: &Config,
    metrics: &crate::metrics::Metrics,
) -> Option<crate::crashes::CrashStore> {
    let Some(dir) = config.crash_dir() else {
        tracing::warn!("no directory for crash reports (set crash_dir): crashes are only logged");
        return None;
    };
    let limits = crate::crashes::CrashLimits {
        max_reports: config.crash_reports_max.max(1),
        max_bytes: config.crash_reports_max_bytes,
    };
    match crate::crashes::CrashStore::open(dir.clone(), limits) {
        Ok(store) => {
            tracing::info!(dir = %dir.display(), "crash reports go to {}", dir.display());
            let metrics = metrics.clone();
            Some(store.observed(std::sync::Arc::new(move |report| {
                let signal = report
                    .exit
                    .signal_name
                    .clone()
                    .unwrap_or_else(|| "panic".to_owned());
                metrics.crash_reported(&report.model, &signal);
            })))
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot keep crash reports: {e}; crashes are only logged");
            None
        }
    }
}
