//! The VRAM ledger of one device: what discovery saw in use by others, and
//! what each of our models reserved. Admission asks it before a worker loads.

use std::collections::BTreeMap;

use super::Device;
use super::estimate::{self, Context, Estimate, Shape};
pub use crate::params::GpuLayers;
use crate::util::human_bytes;

/// Bytes on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    total: u64,
    used_by_others: u64,
    /// The most our models may hold together (`gpu_memory_budget`).
    budget: Option<u64>,
    reserved: BTreeMap<String, u64>,
    /// What each model's last worker really allocated, by the layers and
    /// context it ran with: the next admission of the same shape counts it.
    measured: BTreeMap<String, Measured>,
}

/// What llama.cpp reported a model's worker allocated on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Measured {
    layers: u32,
    context: Context,
    bytes: u64,
}

/// A model that does not fit, with the numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "model {model} needs {} of GPU memory on {device} for {layers} layers (weights {} + KV cache {} + buffers {}{}) but {} is free ({} held by {held_by} other models); lower --gpu-layers, --ctx-size or --parallel, use --gpu-layers auto, or raise gpu_memory_budget",
    human_bytes(*need),
    human_bytes(estimate.weights_bytes),
    human_bytes(estimate.kv_bytes),
    human_bytes(estimate.overhead_bytes),
    if *need == estimate.total() { "" } else { "; as measured on its last run" },
    human_bytes(*free),
    human_bytes(*held),
    layers = estimate.layers
)]
pub struct NoRoom {
    /// Model id.
    pub model: String,
    /// Device in words.
    pub device: String,
    /// The estimate of what it needs.
    pub estimate: Estimate,
    /// What it needs: the estimate, or what it used last time with the same layers and context.
    pub need: u64,
    /// What is free.
    pub free: u64,
    /// What our other models hold there.
    pub held: u64,
    /// How many models hold it.
    pub held_by: usize,
}

/// Head-room over a measured figure at the next admission: buffers
/// llama.cpp allocates later (an embeddings context on first use, a
/// compute buffer that grows) and driver overhead: a tenth, at least 32 MiB.
pub fn measured_margin(bytes: u64) -> u64 {
    (bytes / 10).max(32 << 20)
}

impl Ledger {
    /// A ledger for `device` as discovery saw it; our models together hold
    /// at most `budget` bytes there when one is set.
    pub fn new(device: &Device, budget: Option<u64>) -> Self {
        Ledger {
            total: device.total_bytes,
            used_by_others: device.total_bytes.saturating_sub(device.free_bytes),
            budget,
            reserved: BTreeMap::new(),
            measured: BTreeMap::new(),
        }
    }

    /// Bytes our models may hold in all: what others leave, within the budget.
    pub fn capacity(&self) -> u64 {
        let left = self.total.saturating_sub(self.used_by_others);
        self.budget.map_or(left, |b| left.min(b))
    }

    /// The budget, when one is set.
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Bytes nobody holds.
    pub fn free(&self) -> u64 {
        self.capacity().saturating_sub(self.reserved())
    }

    /// Bytes our models hold.
    pub fn reserved(&self) -> u64 {
        self.reserved.values().sum()
    }

    /// Our models and what each holds.
    pub fn holders(&self) -> impl Iterator<Item = (&str, u64)> {
        self.reserved.iter().map(|(m, b)| (m.as_str(), *b))
    }

    /// Decides how many layers of `model` go to this device and reserves
    /// their bytes: `Auto` takes what fits (maybe nothing), `All` and
    /// `Count` fit or are refused with the numbers.
    pub fn admit(
        &mut self,
        model: &str,
        device: &str,
        shape: &Shape,
        context: Context,
        wanted: GpuLayers,
    ) -> Result<(Estimate, u64), NoRoom> {
        self.release(model);
        let (plan, need) = self.plan(model, device, shape, context, wanted)?;
        if plan.layers > 0 {
            self.reserved.insert(model.to_owned(), need);
        }
        Ok((plan, need))
    }

    /// What [`Ledger::admit`] would decide, reserving nothing (a dry run);
    /// `model`'s own reservation, if any, counts as free.
    pub fn plan(
        &self,
        model: &str,
        device: &str,
        shape: &Shape,
        context: Context,
        wanted: GpuLayers,
    ) -> Result<(Estimate, u64), NoRoom> {
        let own = self.reserved.get(model).copied().unwrap_or(0);
        let free = self.free().saturating_add(own);
        let plan = match wanted {
            GpuLayers::Auto => estimate::fit(shape, context, free),
            GpuLayers::All => estimate::estimate(shape, context, u32::MAX),
            GpuLayers::Count(n) => estimate::estimate(shape, context, n),
        };
        let need = self.need(model, &plan, context);
        if need > free {
            let others = self.reserved.keys().filter(|m| m.as_str() != model).count();
            return Err(NoRoom {
                model: model.to_owned(),
                device: device.to_owned(),
                estimate: plan,
                need,
                free,
                held: self.reserved().saturating_sub(own),
                held_by: others,
            });
        }
        Ok((plan, need))
    }

    /// What `plan` of `model` needs: what it measured last time with the
    /// same layers and context (plus [`measured_margin`], never more than
    /// the estimate), else the estimate.
    pub fn need(&self, model: &str, plan: &Estimate, context: Context) -> u64 {
        match self.measured.get(model) {
            Some(m) if m.layers == plan.layers && m.context == context && plan.layers > 0 => m
                .bytes
                .saturating_add(measured_margin(m.bytes))
                .min(plan.total()),
            _ => plan.total(),
        }
    }

    /// Records what `model`'s running worker really allocated: the ledger
    /// holds that for it from now on (even with no layers offloaded, when the
    /// backend still put compute buffers there), and its next admission
    /// with the same layers and context counts it.
    pub fn record_measured(&mut self, model: &str, layers: u32, context: Context, bytes: u64) {
        self.measured.insert(
            model.to_owned(),
            Measured {
                layers,
                context,
                bytes,
            },
        );
        self.reserved.insert(model.to_owned(), bytes);
    }

    /// Gives back what `model` held.
    pub fn release(&mut self, model: &str) {
        self.reserved.remove(model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Backend;
    use crate::gpu::estimate::tests::{context, shape};

    fn device(total_mib: u64, free_mib: u64) -> Device {
        Device {
            backend: Backend::Rocm,
            index: 0,
            name: "fake".into(),
            arch: None,
            total_bytes: total_mib << 20,
            free_bytes: free_mib << 20,
            kind: crate::gpu::DeviceKind::Discrete,
            ggml_name: None,
            usable: true,
            arch_override: None,
        }
    }

    #[test]
    fn models_are_admitted_until_vram_runs_out_and_release_gives_it_back() {
        let full = estimate::estimate(&shape(), context(), u32::MAX).total();
        let mut ledger = Ledger::new(&device(1300, 1200), None);
        assert_eq!(ledger.free(), 1200 << 20);
        let (a, _) = ledger
            .admit("a", "gpu0", &shape(), context(), GpuLayers::All)
            .unwrap();
        assert_eq!((a.layers, a.total()), (5, full));
        assert_eq!(ledger.free(), (1200 << 20) - full);
        // Re-admitting the same model replaces its reservation.
        ledger
            .admit("a", "gpu0", &shape(), context(), GpuLayers::All)
            .unwrap();
        assert_eq!(ledger.reserved(), full);
        // b fits only partly: auto takes fewer layers, all is refused with numbers.
        let free = ledger.free();
        let err = ledger
            .admit("b", "gpu0", &shape(), context(), GpuLayers::All)
            .unwrap_err();
        assert_eq!((err.free, err.held, err.held_by), (free, full, 1));
        assert!(err.to_string().contains("model b needs"), "{err}");
        assert!(err.to_string().contains("1 other models"), "{err}");
        let (b, _) = ledger
            .admit("b", "gpu0", &shape(), context(), GpuLayers::Auto)
            .unwrap();
        assert_eq!(b.layers, 1, "{b:?}");
        assert!(b.total() <= free);
        ledger.release("a");
        ledger.release("b");
        assert_eq!(ledger.free(), 1200 << 20);
    }

    #[test]
    fn auto_with_no_room_runs_on_the_cpu_and_reserves_nothing() {
        let mut ledger = Ledger::new(&device(1024, 10), None);
        let (e, _) = ledger
            .admit("a", "gpu0", &shape(), context(), GpuLayers::Auto)
            .unwrap();
        assert_eq!(e.layers, 0);
        assert_eq!(ledger.reserved(), 0);
        assert!(
            ledger
                .admit("a", "gpu0", &shape(), context(), GpuLayers::Count(1))
                .is_err()
        );
        assert_eq!(
            ledger
                .admit("a", "gpu0", &shape(), context(), GpuLayers::Count(0))
                .unwrap()
                .0
                .layers,
            0
        );
    }

    #[test]
    fn a_budget_caps_what_our_models_hold_and_measured_memory_counts_next_time() {
        let full = estimate::estimate(&shape(), context(), u32::MAX).total();
        let mut ledger = Ledger::new(&device(64 << 10, 60 << 10), Some(full + 10));
        assert_eq!(ledger.capacity(), full + 10);
        ledger
            .admit("a", "gpu0", &shape(), context(), GpuLayers::All)
            .unwrap();
        assert!(
            ledger
                .admit("b", "gpu0", &shape(), context(), GpuLayers::All)
                .is_err(),
            "the budget, not the device's free memory, is what admission counts"
        );
        // llama.cpp said a uses less than estimated: its reservation shrinks,
        // and its next admission with the same layers and context counts that.
        ledger.record_measured("a", 5, context(), full / 2);
        assert_eq!(ledger.reserved(), full / 2);
        ledger.release("a");
        let (_, need) = ledger
            .admit("a", "gpu0", &shape(), context(), GpuLayers::All)
            .unwrap();
        assert_eq!(need, full / 2 + measured_margin(full / 2));
        let err = ledger
            .admit("b", "gpu0", &shape(), context(), GpuLayers::All)
            .unwrap_err();
        assert_eq!((err.need, err.free), (full, full + 10 - need));
        // Measured on a worker that offloaded nothing, the backend's buffers still count.
        ledger.release("a");
        ledger.record_measured("z", 0, context(), 7 << 20);
        assert_eq!(ledger.reserved(), 7 << 20);
    }
}
