//! The daemon's GPUs: one handle per device holding its VRAM ledger and its
//! upload gate (one model uploads at a time, so two loads do not halve each
//! other's PCIe bandwidth). A reservation lives as long as the worker using it.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

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
    /// Counts releases, so a model waiting for room learns when some was given back.
    released: Arc<watch::Sender<u64>>,
}

impl GpuHandle {
    fn new(device: Device, budget: Option<u64>) -> Self {
        GpuHandle {
            ledger: Arc::new(Mutex::new(Ledger::new(&device, budget))),
            upload: Arc::new(Semaphore::new(1)),
            released: Arc::new(watch::channel(0).0),
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
        let (estimate, reserved) =
            self.ledger()
                .admit(model, &self.label(), shape, context, wanted)?;
        Ok(Reservation {
            gpu: self.clone(),
            model: model.to_owned(),
            estimate,
            context,
            reserved,
        })
    }

    /// What [`GpuHandle::admit`] would decide now, reserving nothing.
    pub fn plan(
        &self,
        model: &str,
        shape: &Shape,
        context: Context,
        wanted: GpuLayers,
    ) -> Result<(Estimate, u64), NoRoom> {
        self.ledger()
            .plan(model, &self.label(), shape, context, wanted)
    }

    /// Fires each time a reservation on this device is given back.
    pub fn releases(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }

    /// What our models may hold here in all, and the budget when one is set.
    pub fn capacity(&self) -> (u64, Option<u64>) {
        let ledger = self.ledger();
        (ledger.capacity(), ledger.budget())
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
    context: Context,
    reserved: u64,
}

impl Reservation {
    /// The device.
    pub fn gpu(&self) -> &GpuHandle {
        &self.gpu
    }

    /// Bytes the ledger holds for it.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// llama.cpp allocated `bytes` on the device for this worker: the ledger
    /// holds that from now on, and counts it at the model's next admission.
    pub fn measured(&mut self, bytes: u64) {
        self.gpu
            .ledger()
            .record_measured(&self.model, self.estimate.layers, self.context, bytes);
        self.reserved = bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gpu.ledger().release(&self.model);
        self.gpu.released.send_modify(|n| *n = n.wrapping_add(1));
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
    /// Handles for what discovery found; `budget` caps what our models
    /// hold on each device they can offload to (`gpu_memory_budget`).
    pub fn new(found: Discovery, budget: Option<u64>) -> Self {
        GpuSet {
            devices: found
                .devices
                .into_iter()
                .map(|d| {
                    let budget = budget.filter(|_| d.usable);
                    GpuHandle::new(d, budget)
                })
                .collect(),
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
            .filter(|g| g.device.usable)
            .nth(main_gpu as usize)
    }

    /// The device labelled `label` ([`GpuHandle::label`]).
    pub fn by_label(&self, label: &str) -> Option<&GpuHandle> {
        self.devices.iter().find(|g| g.label() == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Backend;
    use crate::gpu::estimate::tests::{context, shape};

    fn fake() -> GpuSet {
        fake_with(None)
    }

    fn fake_with(budget: Option<u64>) -> GpuSet {
        GpuSet::new(
            Discovery {
                devices: vec![Device {
                    backend: Backend::Cuda,
                    index: 0,
                    name: "fake".into(),
                    arch: None,
                    total_bytes: 8 << 30,
                    free_bytes: 8 << 30,
                    kind: crate::gpu::DeviceKind::Discrete,
                    ggml_name: Some("CUDA0".into()),
                    usable: true,
                    arch_override: None,
                }],
                notes: vec![],
            },
            budget,
        )
    }

    #[test]
    fn a_reservation_is_given_back_when_its_worker_ends() {
        let set = fake();
        let gpu = &set.devices()[0];
        let r = gpu.admit("m", &shape(), context(), GpuLayers::All).unwrap();
        assert_eq!(r.estimate.layers, 5);
        assert_eq!(r.reserved(), r.estimate.total());
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
    fn only_devices_llama_cpp_offloads_to_are_targets() {
        assert!(fake().main(0).is_some());
        assert!(fake().main(1).is_none());
        let mut cpu = fake();
        if let Some(g) = cpu.devices.first_mut() {
            g.device.usable = false;
        }
        assert!(cpu.main(0).is_none());
    }

    #[tokio::test]
    async fn a_release_wakes_whoever_waits_for_room_and_measured_bytes_are_held() {
        let set = fake_with(Some(1 << 30));
        let gpu = &set.devices()[0];
        assert_eq!(gpu.capacity(), (1 << 30, Some(1 << 30)));
        let mut r = gpu.admit("m", &shape(), context(), GpuLayers::All).unwrap();
        r.measured(100 << 20);
        assert_eq!(
            gpu.usage(),
            ((1 << 30) - (100 << 20), vec![("m".to_owned(), 100 << 20)])
        );
        let mut releases = gpu.releases();
        releases.borrow_and_update();
        drop(r);
        tokio::time::timeout(std::time::Duration::from_secs(1), releases.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gpu.usage().0, 1 << 30);
    }
}
