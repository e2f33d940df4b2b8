//! The seam between the supervisor's rules and what runs behind a model.
//!
//! The supervisor decides *when* a model loads, starts its worker or goes
//! away; a [`ModelRuntime`] does it. The daemon's runtime
//! ([`super::model_actor::ProcessRuntime`]) spawns a model actor that maps
//! the files and starts a worker process; the unit tests use a fake that
//! records the calls, and deliver the reports themselves.

use std::path::PathBuf;

use crate::loader::{LoadError, LoadOptions, Progress};
use crate::settings::WorkerExtras;
use crate::settings::WorkerSettings;
use crate::worker::{WorkerEnded, WorkerLink};

/// How one load of a model runs, as the supervisor's settings resolve it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// How the files are read into RAM.
    pub load: LoadOptions,
    /// How its worker runs.
    pub worker: WorkerSettings,
    /// This model's own worker environment, sampling defaults and chat template.
    pub extras: WorkerExtras,
}

/// Starts what runs behind a model; reports come back as [`RuntimeReport`]s.
pub trait ModelRuntime {
    /// What a lease hands to a request: the way to its model's worker.
    type Worker: WorkerRef;
    /// Control of one started load.
    type Model: ModelControl;

    /// Starts load `generation` of `id` from `files`; reports tagged with
    /// that generation follow, ending with [`ModelReport::Unloaded`].
    fn start(
        &mut self,
        id: &str,
        generation: u64,
        files: &[PathBuf],
        spec: ModelSpec,
    ) -> Self::Model;
}

/// Control of one started load of a model.
pub trait ModelControl {
    /// Starts the model's worker once it is resident (at most once per load).
    fn start_worker(&mut self);
    /// Cancels the load, or stops the worker and releases the model.
    fn unload(&mut self);
    /// Answers [`ModelReport::NeedsRoom`]: whether idle models are being
    /// evicted to make it (else the worker offloads fewer layers or is refused).
    fn room(&mut self, evicting: bool);
    /// Parks the running worker: it frees its context and keeps the model.
    /// Nothing is reported unless it fails ([`ModelReport::SleepFailed`]).
    fn park(&mut self);
    /// Wakes the parked worker; [`ModelReport::Woke`] or
    /// [`ModelReport::SleepFailed`] follows. Park and wake run in order.
    fn wake(&mut self);
}

/// A running worker as the supervisor sees it.
pub trait WorkerRef: Clone {
    /// Its process id, for display.
    fn pid(&self) -> u32;
}

impl WorkerRef for WorkerLink {
    fn pid(&self) -> u32 {
        self.pid
    }
}

/// What the runtime behind a model reports.
#[derive(Debug)]
pub enum ModelReport<W> {
    /// Load progress.
    Progress(Progress),
    /// Resident; holds this many bytes.
    Ready {
        /// Bytes held in RAM.
        bytes: u64,
    },
    /// The load failed.
    Failed(LoadError),
    /// The worker serves.
    WorkerReady(W),
    /// The worker failed to start, crashed or hung.
    WorkerFailed(WorkerEnded),
    /// The worker was not started: its GPU offload does not fit (the reason has the numbers).
    WorkerRefused(String),
    /// The worker's offload does not fit on `device`: `need` bytes, `free`
    /// there now. The supervisor answers with [`ModelControl::room`].
    NeedsRoom {
        /// The device's label.
        device: String,
        /// Bytes the full offload needs.
        need: u64,
        /// Bytes free there now.
        free: u64,
    },
    /// What the worker holds on its GPU (sent when it starts, again once
    /// llama.cpp's figures are in).
    Offloaded(crate::gpu::placement::GpuUse),
    /// Something the user should know about how the model runs ("asked for
    /// GPU offload, but no usable GPU: on the CPU").
    Note(String),
    /// The parked worker has its context again and serves.
    Woke,
    /// A park or wake failed (the reason); the worker is no use any more.
    SleepFailed(String),
    /// Released (after ready, a failure or a cancelled load); nothing runs any more.
    Unloaded,
}

/// A report with the model and the load it belongs to.
#[derive(Debug)]
pub struct RuntimeReport<W> {
    /// Model id.
    pub id: String,
    /// Which load (stale reports of an earlier load are ignored).
    pub generation: u64,
    /// The report.
    pub report: ModelReport<W>,
}
