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
    reserved: BTreeMap<String, u64>,
}

/// A model that does not fit, with the numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "model {model} needs {} of VRAM on {device} for {layers} layers (weights {} + KV cache {} + buffers {}) but {} is free ({} held by {held_by} other models); lower --gpu-layers, --ctx-size or --parallel, or use --gpu-layers auto",
    human_bytes(estimate.total()),
    human_bytes(estimate.weights_bytes),
    human_bytes(estimate.kv_bytes),
    human_bytes(estimate.overhead_bytes),
    human_bytes(*free),
    human_bytes(*held),
    layers = estimate.layers
)]
pub struct NoRoom {
    /// Model id.
    pub model: String,
    /// Device in words.
    pub device: String,
    /// What it needs.
    pub estimate: Estimate,
    /// What is free.
    pub free: u64,
    /// What our other models hold there.
    pub held: u64,
    /// How many models hold it.
    pub held_by: usize,
}

impl Ledger {
    /// A ledger for `device` as discovery saw it.
    pub fn new(device: &Device) -> Self {
        Ledger {
            total: device.total_bytes,
            used_by_others: device.total_bytes.saturating_sub(device.free_bytes),
            reserved: BTreeMap::new(),
        }
    }

    /// Bytes nobody holds.
    pub fn free(&self) -> u64 {
        let reserved: u64 = self.reserved.values().sum();
        self.total
            .saturating_sub(self.used_by_others)
            .saturating_sub(reserved)
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
    ) -> Result<Estimate, NoRoom> {
        self.release(model);
        let free = self.free();
        let plan = match wanted {
            GpuLayers::Auto => estimate::fit(shape, context, free),
            GpuLayers::All => estimate::estimate(shape, context, u32::MAX),
            GpuLayers::Count(n) => estimate::estimate(shape, context, n),
        };
        if plan.total() > free {
            return Err(NoRoom {
                model: model.to_owned(),
                device: device.to_owned(),
                estimate: plan,
                free,
                held: self.reserved(),
                held_by: self.reserved.len(),
            });
        }
        if plan.layers > 0 {
            self.reserved.insert(model.to_owned(), plan.total());
        }
        Ok(plan)
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
        }
    }

    #[test]
    fn models_are_admitted_until_vram_runs_out_and_release_gives_it_back() {
        let full = estimate::estimate(&shape(), context(), u32::MAX).total();
        let mut ledger = Ledger::new(&device(1300, 1200));
        assert_eq!(ledger.free(), 1200 << 20);
        let a = ledger
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
        let b = ledger
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
        let mut ledger = Ledger::new(&device(1024, 10));
        let e = ledger
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
                .layers,
            0
        );
    }
}
