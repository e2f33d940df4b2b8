//! The dry run of a load: what loading a model would evict (under
//! `--models-max`, the host cache, and GPU memory), and how many layers its
//! worker would offload, decided by the same rules as a real load and
//! changing nothing.

use serde::Serialize;

use super::{SupervisorError, SupervisorHandle};
use crate::gguf::{Decode, GgufModel, HeaderLimits};
use crate::gpu::devices::GpuSet;
use crate::gpu::estimate::{self, Context, Shape};
use crate::gpu::ledger::GpuLayers;
use crate::gpu::placement::victims;

/// The answer of a dry run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadPlan {
    /// The model.
    pub model: String,
    /// Models `--models-max` or the host cache would evict first.
    pub evicts: Vec<String>,
    /// The device its layers would go to; none: the CPU.
    pub device: Option<String>,
    /// Layers it would offload, of `max_layers`.
    pub layers: u32,
    /// Every block plus the output layer.
    pub max_layers: u32,
    /// GPU bytes that needs (measured on its last run when it had one with these settings).
    pub need_bytes: u64,
    /// GPU bytes free there now.
    pub free_bytes: u64,
    /// Idle models that would be evicted from the device to make room.
    pub gpu_evicts: Vec<String>,
    /// Why the load's worker would be refused (RESOURCE_EXHAUSTED), with the numbers.
    pub refused: Option<String>,
}

/// What loading `id` would do, and nothing done.
pub async fn dry_run(
    supervisor: &SupervisorHandle,
    gpus: &GpuSet,
    id: &str,
) -> Result<LoadPlan, SupervisorError> {
    let preview = supervisor.preview(id).await?;
    let model = preview.model;
    let mut plan = LoadPlan {
        model: model.id.clone(),
        evicts: preview.evicts,
        ..LoadPlan::default()
    };
    let Some(params) = model.settings.params else {
        return Ok(plan);
    };
    let Some(gpu) = gpus.main(params.main_gpu) else {
        return Ok(plan);
    };
    if params.gpu_layers == GpuLayers::Count(0) {
        return Ok(plan);
    }
    let Some(first) = model.files.first().cloned() else {
        return Ok(plan);
    };
    let header = tokio::task::spawn_blocking(move || {
        GgufModel::open_with(&first, &HeaderLimits::default(), Decode::Summary)
    })
    .await
    .map_err(|e| SupervisorError::Unavailable(format!("reading the model header: {e}")))?
    .map_err(|e| SupervisorError::FailedPrecondition(format!("model {id}: {e}")))?;
    let Some(shape) = Shape::of(&header) else {
        return Ok(plan);
    };
    let context = Context::of(&params);
    plan.device = Some(gpu.label());
    plan.max_layers = shape.max_layers();
    let (capacity, _) = gpu.capacity();
    match gpu.plan(&model.id, &shape, context, params.gpu_layers.whole()) {
        Ok((e, need)) => {
            plan.layers = e.layers;
            plan.need_bytes = need;
            plan.free_bytes = gpu.usage().0;
        }
        Err(no_room) => {
            plan.need_bytes = no_room.need;
            plan.free_bytes = no_room.free;
            let on_device: Vec<_> = preview
                .gpu_holders
                .into_iter()
                .filter(|(device, _)| *device == gpu.label())
                .map(|(_, h)| h)
                .collect();
            match victims(no_room.need, no_room.free, &on_device) {
                Some(chosen) if !chosen.is_empty() => {
                    plan.layers = no_room.estimate.layers;
                    plan.gpu_evicts = chosen;
                }
                _ if params.gpu_layers == GpuLayers::Auto => {
                    let fit = estimate::fit(&shape, context, no_room.free.min(capacity));
                    plan.layers = fit.layers;
                    plan.need_bytes = fit.total();
                }
                _ => plan.refused = Some(no_room.to_string()),
            }
        }
    }
    Ok(plan)
}
