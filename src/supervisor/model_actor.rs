//! The model actor: one per loaded model. Runs the loader (the model becomes
//! resident in host RAM: *ready*), starts the model's worker process when the
//! first request needs it (*running*), watches it, stops it on unload, and
//! reports every step to the supervisor.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use std::time::{Duration, Instant};

use super::runtime::{ModelControl, ModelReport, ModelRuntime, ModelSpec, RuntimeReport};
use crate::gpu::devices::Reservation;
use crate::gpu::estimate::{Context, Shape};
use crate::gpu::ledger::{GpuLayers, NoRoom};
use crate::loader::{self, LoadError, ResidentModel};
use crate::worker::process::WorkerEnv;
use crate::worker::{WorkerLink, WorkerProcess};

/// The daemon's [`ModelRuntime`]: one model actor per load, workers as
/// processes started from `env`; reports go to the supervisor's channel.
pub struct ProcessRuntime {
    env: Arc<WorkerEnv>,
    reports: mpsc::UnboundedSender<Report>,
}

impl ProcessRuntime {
    /// Starts workers as `env` says; sends what happens to `reports`.
    pub fn new(env: WorkerEnv, reports: mpsc::UnboundedSender<Report>) -> Self {
        ProcessRuntime {
            env: Arc::new(env),
            reports,
        }
    }
}

impl ModelRuntime for ProcessRuntime {
    type Worker = WorkerLink;
    type Model = ModelHandle;

    fn start(
        &mut self,
        id: &str,
        generation: u64,
        files: &[PathBuf],
        spec: ModelSpec,
    ) -> ModelHandle {
        ModelHandle::spawn(
            id.to_owned(),
            generation,
            files.to_vec(),
            spec,
            self.env.clone(),
            self.reports.clone(),
        )
    }
}

/// What a model actor reports.
pub type Report = RuntimeReport<WorkerLink>;

/// Controls one model actor.
#[derive(Debug)]
pub struct ModelHandle {
    cancel: Arc<AtomicBool>,
    unload: Option<oneshot::Sender<()>>,
    start_worker: Option<oneshot::Sender<()>>,
}

impl ModelHandle {
    /// Starts loading `files`; reports arrive on `reports`.
    pub fn spawn(
        id: String,
        generation: u64,
        files: Vec<PathBuf>,
        spec: ModelSpec,
        env: Arc<WorkerEnv>,
        reports: mpsc::UnboundedSender<Report>,
    ) -> Self {
        let cancel = Arc::new(AtomicBool::new(false));
        let (unload, unload_rx) = oneshot::channel();
        let (start_worker, start_rx) = oneshot::channel();
        let actor = Actor {
            id,
            generation,
            spec,
            env,
            reports,
        };
        tokio::spawn(actor.run(files, cancel.clone(), unload_rx, start_rx));
        ModelHandle {
            cancel,
            unload: Some(unload),
            start_worker: Some(start_worker),
        }
    }
}

impl ModelControl for ModelHandle {
    fn start_worker(&mut self) {
        if let Some(tx) = self.start_worker.take() {
            let _ = tx.send(());
        }
    }

    fn unload(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(tx) = self.unload.take() {
            let _ = tx.send(());
        }
    }
}

struct Actor {
    id: String,
    generation: u64,
    spec: ModelSpec,
    env: Arc<WorkerEnv>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Actor {
    fn send(&self, report: ModelReport<WorkerLink>) {
        let _ = self.reports.send(RuntimeReport {
            id: self.id.clone(),
            generation: self.generation,
            report,
        });
    }

    async fn run(
        self,
        files: Vec<PathBuf>,
        cancel: Arc<AtomicBool>,
        mut unload: oneshot::Receiver<()>,
        start_worker: oneshot::Receiver<()>,
    ) {
        if let Some(resident) = self.load(files.clone(), cancel).await {
            self.send(ModelReport::Ready {
                bytes: resident.bytes(),
            });
            // Resident until unloaded; the worker starts when a request needs it.
            tokio::select! {
                _ = &mut unload => {}
                Ok(()) = start_worker => self.serve(&resident, files, unload).await,
            }
            // munmap of a large model can take a while: off the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(resident)).await;
        }
        self.send(ModelReport::Unloaded);
    }

    async fn load(&self, files: Vec<PathBuf>, cancel: Arc<AtomicBool>) -> Option<ResidentModel> {
        let progress = {
            let (id, generation, reports) =
                (self.id.clone(), self.generation, self.reports.clone());
            move |p| {
                let _ = reports.send(RuntimeReport {
                    id: id.clone(),
                    generation,
                    report: ModelReport::Progress(p),
                });
            }
        };
        let options = self.spec.load;
        let loaded =
            tokio::task::spawn_blocking(move || loader::load(&files, options, &cancel, &progress))
                .await;
        match loaded {
            Ok(Ok(resident)) => Some(resident),
            Ok(Err(e)) => {
                self.send(ModelReport::Failed(e));
                None
            }
            Err(join) => {
                tracing::error!(model = %self.id, error = %join, "loader panicked");
                self.send(ModelReport::Failed(LoadError::Io {
                    path: PathBuf::new(),
                    source: std::io::Error::other(format!("loader panicked: {join}")),
                }));
                None
            }
        }
    }

    /// Decides how many layers go to the GPU and reserves their VRAM
    /// (none on a CPU-only build or machine, or with `--gpu-layers 0`).
    fn place(&self, resident: &ResidentModel) -> Result<Option<Reservation>, NoRoom> {
        let worker = self.spec.worker.params;
        if worker.gpu_layers == GpuLayers::Count(0) {
            return Ok(None);
        }
        let (Some(gpu), Some(shape)) = (
            self.env.gpus.main(worker.main_gpu),
            Shape::of(resident.model()),
        ) else {
            return Ok(None);
        };
        let context = Context {
            tokens: u64::from(worker.ctx_size) * u64::from(worker.parallel),
            batch: u64::from(worker.batch_size),
            cache_k: worker.cache_type_k,
            cache_v: worker.cache_type_v,
        };
        gpu.admit(&self.id, &shape, context, worker.gpu_layers)
            .map(Some)
    }

    /// Starts the worker and watches it until unload, a crash or a hang.
    async fn serve(
        &self,
        resident: &ResidentModel,
        files: Vec<PathBuf>,
        mut unload: oneshot::Receiver<()>,
    ) {
        let mut settings = self.spec.worker;
        let reservation = match self.place(resident) {
            Ok(r) => r,
            Err(no_room) => {
                tracing::warn!(model = %self.id, error = %no_room, "not starting the worker of {}: {no_room}", self.id);
                self.send(ModelReport::WorkerRefused(no_room.to_string()));
                return;
            }
        };
        // One upload per device at a time; the turn ends when the worker is ready.
        let mut turn = None;
        if let Some(r) = &reservation {
            settings.params.gpu_layers = GpuLayers::Count(r.estimate.layers);
            if r.estimate.layers > 0 {
                turn = tokio::select! {
                    turn = r.gpu().upload_turn() => turn,
                    _ = &mut unload => return,
                };
            }
        }
        let upload_started = Instant::now();
        // The worker maps the same files: it finds them in the page cache the loader filled.
        let start = WorkerProcess::start(
            &self.id,
            files,
            self.generation,
            settings,
            &self.env,
            &self.spec.extras,
        );
        let started = tokio::select! {
            started = start => started,
            _ = &mut unload => return, // dropping the start kills the child
        };
        drop(turn);
        if let (Ok(_), Some(r)) = (&started, &reservation) {
            log_upload(&self.id, r, upload_started.elapsed());
        }
        match started {
            Ok(worker) => {
                self.send(ModelReport::WorkerReady(worker.link()));
                if let Some(exit) = worker.supervise(unload).await {
                    self.send(ModelReport::WorkerFailed(exit));
                }
            }
            Err(exit) => self.send(ModelReport::WorkerFailed(exit)),
        }
    }
}

/// Logs what went to the GPU and how fast: bytes offloaded over the time
/// from the worker's start to its model being loaded and answering.
fn log_upload(id: &str, r: &Reservation, took: Duration) {
    let e = r.estimate;
    let secs = took.as_secs_f64();
    let bandwidth = if secs > 0.0 {
        e.weights_bytes as f64 / secs
    } else {
        0.0
    };
    tracing::info!(
        model = %id,
        device = %r.gpu().label(),
        gpu_layers = e.layers,
        offloaded_bytes = e.weights_bytes,
        reserved_bytes = e.total(),
        upload_seconds = secs,
        upload_bytes_per_second = bandwidth,
        "model {id}: {} layers ({}) on {} in {secs:.2} s ({}/s; {} reserved with KV cache and buffers)",
        e.layers,
        crate::util::human_bytes(e.weights_bytes),
        r.gpu().label(),
        crate::util::human_bytes(bandwidth as u64),
        crate::util::human_bytes(e.total()),
    );
}
