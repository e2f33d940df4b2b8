//! The daemon's GPUs: one handle per device holding its VRAM ledger and its
//! upload gate (one model uploads at a time, so two loads do not halve each
//! other's PCIe bandwidth). A reservation lives as long as the worker using it.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::estimate::{Context, Estimate, Shape};
use super::ledger::{GpuLayers, Ledger, NoRoom};
use super::{Device, Discovery};

/// One device: what discovery saw, its ledger and its upload gate.
#[derive(Debug, Clone)]
pub struct GpuHandle {
    /// The device.
    pub device: Device,
    ledger: Arc<Mutex<Ledger>>,
    upload: Arc<Semaphore>,
}

impl GpuHandle {
    fn new(device: Device) -> Self {
        GpuHandle {
            ledger: Arc::new(Mutex::new(Ledger::new(&device))),
            upload: Arc::new(Semaphore::new(1)),
            device,
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger is plain data: a panic elsewhere cannot leave it half-updated.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `rocm:0 (AMD Radeon 8060S)`.
    pub fn label(&self) -> String {
        format!(
            "{}:{} ({})",
            self.device.backend.name(),
            self.device.index,
            self.device.name
        )
    }

    /// Reserves what `model` needs for `wanted` layers (see [`Ledger::admit`]).
    pub fn admit(
        &self,
        model: &str,
        shape: &Shape,
        context: Context,
        wanted: GpuLayers,
    ) -> Result<Reservation, NoRoom> {
        let estimate = self
            .ledger()
            .admit(model, &self.label(), shape, context, wanted)?;
        Ok(Reservation {
            gpu: self.clone(),
            model: model.to_owned(),
            estimate,
        })
    }

    /// Waits for this device's upload turn; the upload ends with the permit.
    pub async fn upload_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.upload.clone().acquire_owned().await.ok()
    }

    /// Free bytes and our models' holdings.
    pub fn usage(&self) -> (u64, Vec<(String, u64)>) {
        let ledger = self.ledger();
        let holders = ledger.holders().map(|(m, b)| (m.to_owned(), b)).collect();
        (ledger.free(), holders)
    }
}

/// VRAM held for one model's worker; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    gpu: GpuHandle,
    model: String,
    /// What was planned.
    pub estimate: Estimate,
}

impl Reservation {
    /// The device.
    pub fn gpu(&self) -> &GpuHandle {
        &self.gpu
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gpu.ledger().release(&self.model);
    }
}

/// Every device discovery found, and its notes.
#[derive(Debug, Clone, Default)]
pub struct GpuSet {
    devices: Vec<GpuHandle>,
    notes: Vec<String>,
}

/// Two sets are equal when discovery found the same (ledgers aside).
impl PartialEq for GpuSet {
    fn eq(&self, other: &Self) -> bool {
        self.notes == other.notes
            && self.devices.len() == other.devices.len()
            && self
                .devices
                .iter()
                .zip(&other.devices)
                .all(|(a, b)| a.device == b.device)
    }
}

impl GpuSet {
    /// Handles for what discovery found.
    pub fn new(found: Discovery) -> Self {
        GpuSet {
            devices: found.devices.into_iter().map(GpuHandle::new).collect(),
            notes: found.notes,
        }
    }

    /// Every device.
    pub fn devices(&self) -> &[GpuHandle] {
        &self.devices
    }

    /// Why sources found nothing.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The device models offload to: the `main_gpu`-th one this build's
    /// engine can use (none on a CPU-only build or machine).
    pub fn main(&self, main_gpu: u32) -> Option<&GpuHandle> {
        self.devices
            .iter()
            .filter(|g| g.device.backend.usable())
            .nth(main_gpu as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Backend;
    use crate::gpu::estimate::tests::{context, shape};

    fn fake() -> GpuSet {
        GpuSet::new(Discovery {
            devices: vec![Device {
                backend: Backend::Cuda,
                index: 0,
                name: "fake".into(),
                arch: None,
                total_bytes: 8 << 30,
                free_bytes: 8 << 30,
            }],
            notes: vec![],
        })
    }

    #[test]
    fn a_reservation_is_given_back_when_its_worker_ends() {
        let set = fake();
        let gpu = &set.devices()[0];
        let r = gpu.admit("m", &shape(), context(), GpuLayers::All).unwrap();
        assert_eq!(r.estimate.layers, 5);
        let (free, holders) = gpu.usage();
        assert_eq!(holders, vec![("m".to_owned(), r.estimate.total())]);
        assert_eq!(free, (8 << 30) - r.estimate.total());
        drop(r);
        assert_eq!(gpu.usage(), (8 << 30, vec![]));
    }

    #[tokio::test]
    async fn uploads_take_turns() {
        let set = fake();
        let gpu = set.devices()[0].clone();
        let first = gpu.upload_turn().await.unwrap();
        let waiting = tokio::spawn({
            let gpu = gpu.clone();
            async move { gpu.upload_turn().await.is_some() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a second upload must wait for the first"
        );
        drop(first);
        assert!(waiting.await.unwrap());
    }

    #[test]
    fn only_devices_this_build_can_use_are_offload_targets() {
        assert_eq!(fake().main(0).is_some(), cfg!(feature = "cuda"));
        assert!(fake().main(1).is_none());
    }
}
