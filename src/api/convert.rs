//! Conversions between supervisor types and their gRPC messages and statuses.

use std::time::SystemTime;

use tonic::Status;

use crate::loader::{Phase, Progress};
use crate::proto::pb;
use crate::supervisor::{ModelEvent, ModelState, ModelView, SupervisorError};

/// Milliseconds since the Unix epoch (0 for None or times before it).
pub fn unix_ms(t: Option<SystemTime>) -> i64 {
    t.map_or(0, |t| {
        i64::try_from(crate::util::unix_ms(t)).unwrap_or(i64::MAX)
    })
}

/// The proto enum for a state.
pub fn state(s: ModelState) -> pb::ModelState {
    match s {
        ModelState::Discovered => pb::ModelState::Discovered,
        ModelState::Loading => pb::ModelState::Loading,
        ModelState::Ready => pb::ModelState::Ready,
        ModelState::Unloading => pb::ModelState::Unloading,
        ModelState::Parked => pb::ModelState::Parked,
        ModelState::Unloaded => pb::ModelState::Unloaded,
        ModelState::Failed => pb::ModelState::Failed,
    }
}

/// Lower-case name of a proto state (`ready`), as the CLI prints it.
pub fn state_name(s: i32) -> &'static str {
    match pb::ModelState::try_from(s) {
        Ok(pb::ModelState::Discovered) => "discovered",
        Ok(pb::ModelState::Loading) => "loading",
        Ok(pb::ModelState::Ready) => "ready",
        Ok(pb::ModelState::Unloading) => "unloading",
        Ok(pb::ModelState::Parked) => "parked",
        Ok(pb::ModelState::Unloaded) => "unloaded",
        Ok(pb::ModelState::Failed) => "failed",
        _ => "unknown",
    }
}

/// A model view as a message.
pub fn model(v: &ModelView) -> pb::Model {
    pb::Model {
        id: v.id.clone(),
        state: state(v.state).into(),
        files: v.files.iter().map(|f| f.display().to_string()).collect(),
        size_bytes: v.size_bytes,
        architecture: v.architecture.clone(),
        quantization: v.quantization.clone(),
        parameter_count: v.parameter_count,
        context_length: v.context_length,
        failure_reason: v.failure_reason.clone().unwrap_or_default(),
        last_used_unix_ms: unix_ms(v.last_used),
        pinned: v.pinned,
        projector: v
            .projector
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        name: v.name.clone(),
        resident_bytes: v.resident_bytes,
        worker_pid: v.worker_pid.unwrap_or(0),
        aliases: v.aliases.clone(),
        settings: Some(settings(&v.settings)),
        gpu: v.gpu.as_ref().map(model_gpu),
        note: v.note.clone().unwrap_or_default(),
    }
}

/// What a model's worker holds on a GPU, as the wire message.
fn model_gpu(g: &crate::gpu::placement::GpuUse) -> pb::ModelGpu {
    pb::ModelGpu {
        device: g.device.clone(),
        layers: g.layers,
        max_layers: g.max_layers,
        estimate_bytes: g.estimate_bytes,
        measured_bytes: g.measured_bytes.unwrap_or(0),
        reserved_bytes: g.reserved_bytes,
        upload_seconds: g.upload_seconds,
        upload_bytes_per_second: g.upload_bytes_per_second,
    }
}

/// A dry run's answer as the wire message.
pub fn plan(p: &crate::supervisor::dry_run::LoadPlan) -> pb::LoadPlan {
    pb::LoadPlan {
        model: p.model.clone(),
        evicts: p.evicts.clone(),
        device: p.device.clone().unwrap_or_default(),
        layers: p.layers,
        max_layers: p.max_layers,
        need_bytes: p.need_bytes,
        free_bytes: p.free_bytes,
        gpu_evicts: p.gpu_evicts.clone(),
        refused: p.refused.clone().unwrap_or_default(),
    }
}

/// An event as a message.
pub fn event(e: &ModelEvent) -> pb::ModelEvent {
    pb::ModelEvent {
        id: e.id.clone(),
        state: state(e.state).into(),
        previous: state(e.previous).into(),
        reason: e.reason.clone().unwrap_or_default(),
        at_unix_ms: unix_ms(Some(e.at)),
    }
}

/// Load progress as a message.
pub fn progress(p: &Progress) -> pb::LoadProgress {
    let phase = match p.phase {
        Phase::Mapping => pb::load_progress::Phase::Mapping,
        Phase::Prefetching => pb::load_progress::Phase::Prefetching,
    };
    pb::LoadProgress {
        phase: phase.into(),
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        model: None,
        plan: None,
    }
}

/// The gRPC status for a supervisor error.
pub fn status(e: SupervisorError) -> Status {
    let message = e.to_string();
    match e {
        SupervisorError::NotFound(_) => Status::not_found(message),
        SupervisorError::FailedPrecondition(_) => Status::failed_precondition(message),
        SupervisorError::ResourceExhausted(_) => Status::resource_exhausted(message),
        SupervisorError::Unavailable(_) | SupervisorError::Stopped => Status::unavailable(message),
    }
}

/// A model's effective settings as the wire message.
pub fn settings(e: &crate::settings::Effective) -> pb::EffectiveSettings {
    let mut out = pb::EffectiveSettings {
        mlock: e.mlock,
        idle_ttl_seconds: e.idle_ttl.map_or(0, |t| t.as_secs()),
        env: e.extras.env.keys().cloned().collect(),
        chat_template: e
            .extras
            .chat_template
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        gpu_layers: crate::params::GpuLayers::Auto.to_proto(),
        ..Default::default()
    };
    if let Some(p) = &e.params {
        out.ctx_size = p.ctx_size;
        out.parallel = p.parallel;
        out.threads = p.threads;
        out.batch_size = p.batch_size;
        out.gpu_layers = p.gpu_layers.to_proto();
        out.flash_attn = p.flash_attn.to_string();
        out.cache_type_k = p.cache_type_k.to_string();
        out.cache_type_v = p.cache_type_v.to_string();
        out.cache_prompt = p.cache_prompt;
    }
    out
}

/// The GPUs with their ledgers, as the wire message.
pub fn gpus(set: &crate::gpu::devices::GpuSet) -> Vec<pb::GpuDevice> {
    set.devices()
        .iter()
        .map(|g| {
            let (free, holders) = g.usage();
            let d = &g.device;
            pb::GpuDevice {
                kind: d.kind.name().to_owned(),
                ggml_name: d.ggml_name.clone().unwrap_or_default(),
                arch_override: d.arch_override.clone().unwrap_or_default(),
                budget_bytes: g.capacity().1.unwrap_or(0),
                backend: d.backend.name().to_owned(),
                index: d.index,
                name: d.name.clone(),
                arch: d.arch.clone().unwrap_or_default(),
                total_bytes: d.total_bytes,
                free_bytes: free,
                usable: d.usable,
                reserved_by_model: holders.into_iter().collect(),
            }
        })
        .collect()
}
