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
use super::worker_sleep::{self, SleepCommand};
use crate::engine::offload::Offload;
use crate::gpu::devices::Reservation;
use crate::gpu::estimate::{Context, Shape};
use crate::gpu::ledger::{GpuLayers, NoRoom};
use crate::gpu::placement::GpuUse;
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
    room: mpsc::UnboundedSender<bool>,
    sleep: mpsc::UnboundedSender<SleepCommand>,
}

/// How long a worker waits for evicted models to give their GPU memory back.
const ROOM_WAIT: Duration = Duration::from_secs(30);

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
        let (room, room_rx) = mpsc::unbounded_channel();
        let (sleep, sleep_rx) = mpsc::unbounded_channel();
        let actor = Actor {
            id,
            generation,
            spec,
            env,
            reports,
        };
        let channels = Channels {
            unload: unload_rx,
            start_worker: start_rx,
            room: room_rx,
            sleep: sleep_rx,
        };
        tokio::spawn(actor.run(files, cancel.clone(), channels));
        ModelHandle {
            cancel,
            unload: Some(unload),
            start_worker: Some(start_worker),
            room,
            sleep,
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

    fn room(&mut self, evicting: bool) {
        let _ = self.room.send(evicting);
    }

    fn park(&mut self) {
        let _ = self.sleep.send(SleepCommand::Park);
    }

    fn wake(&mut self) {
        let _ = self.sleep.send(SleepCommand::Wake);
    }
}

/// What the supervisor's [`ModelHandle`] sends the actor.
struct Channels {
    unload: oneshot::Receiver<()>,
    start_worker: oneshot::Receiver<()>,
    room: mpsc::UnboundedReceiver<bool>,
    sleep: mpsc::UnboundedReceiver<SleepCommand>,
}

/// Where a worker's layers go.
enum Placed {
    /// On this reservation's device (none: on the CPU).
    Here(Option<Reservation>),
    /// Nowhere: the offload asked for does not fit, even after eviction.
    Refused(NoRoom),
    /// The model was unloaded meanwhile.
    Unloaded,
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

    /// Sends reports from another task.
    fn reporter(&self) -> impl Fn(ModelReport<WorkerLink>) + Send + 'static {
        worker_sleep::reporter(self.id.clone(), self.generation, self.reports.clone())
    }

    async fn run(self, files: Vec<PathBuf>, cancel: Arc<AtomicBool>, channels: Channels) {
        let Channels {
            mut unload,
            start_worker,
            room,
            sleep,
        } = channels;
        if let Some(resident) = self.load(files.clone(), cancel).await {
            self.send(ModelReport::Ready {
                bytes: resident.bytes(),
            });
            // Resident until unloaded; the worker starts when a request needs it.
            tokio::select! {
                _ = &mut unload => {}
                Ok(()) = start_worker => self.serve(&resident, files, unload, room, sleep).await,
            }
            // munmap of a large model can take a while: off the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(resident)).await;
        }
        self.send(ModelReport::Unloaded);
    }

    async fn load(&self, files: Vec<PathBuf>, cancel: Arc<AtomicBool>) -> Option<ResidentModel> {
        let progress = {
            let report = self.reporter();
            move |p| report(ModelReport::Progress(p))
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

    /// Decides how many layers go to the GPU and reserves their memory: the
    /// whole offload when it fits; else once the supervisor evicted idle
    /// models on that device; else fewer layers (`auto`) or a refusal. None
    /// on a CPU-only build or machine (with a note when offload was asked
    /// for), or with `--gpu-layers 0`.
    async fn place(
        &self,
        resident: &ResidentModel,
        unload: &mut oneshot::Receiver<()>,
        room: &mut mpsc::UnboundedReceiver<bool>,
    ) -> Placed {
        let worker = self.spec.worker.params;
        if worker.gpu_layers == GpuLayers::Count(0) {
            return Placed::Here(None);
        }
        let Some(gpu) = self.env.gpus.main(worker.main_gpu) else {
            if worker.gpu_layers != GpuLayers::Auto {
                let why = self.env.gpus.notes().join("; ");
                let note = format!(
                    "--gpu-layers {} asks for GPU offload but there is no usable GPU{}: running on the CPU{}",
                    worker.gpu_layers,
                    if worker.main_gpu > 0 {
                        format!(" number {}", worker.main_gpu)
                    } else {
                        String::new()
                    },
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                );
                tracing::warn!(model = %self.id, "model {}: {note}", self.id);
                self.send(ModelReport::Note(note));
            }
            return Placed::Here(None);
        };
        let Some(shape) = Shape::of(resident.model()) else {
            return Placed::Here(None);
        };
        let context = Context::of(&worker);
        let whole = worker.gpu_layers.whole();
        let mut releases = gpu.releases();
        let mut no_room = match gpu.admit(&self.id, &shape, context, whole) {
            Ok(r) => return Placed::Here(Some(r)),
            Err(no_room) => no_room,
        };
        self.send(ModelReport::NeedsRoom {
            device: gpu.label(),
            need: no_room.need,
            free: no_room.free,
        });
        let evicting = tokio::select! {
            answer = room.recv() => answer.unwrap_or(false),
            _ = &mut *unload => return Placed::Unloaded,
        };
        if evicting {
            let deadline = tokio::time::sleep(ROOM_WAIT);
            tokio::pin!(deadline);
            loop {
                // Room may be there already (given back since we asked).
                match gpu.admit(&self.id, &shape, context, whole) {
                    Ok(r) => return Placed::Here(Some(r)),
                    Err(e) => no_room = e,
                }
                tokio::select! {
                    changed = releases.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                    _ = &mut deadline => break,
                    _ = &mut *unload => return Placed::Unloaded,
                }
            }
        }
        if worker.gpu_layers != GpuLayers::Auto {
            return Placed::Refused(no_room);
        }
        match gpu.admit(&self.id, &shape, context, GpuLayers::Auto) {
            Ok(r) => Placed::Here(Some(r)),
            Err(e) => Placed::Refused(e),
        }
    }

    /// Starts the worker and watches it until unload, a crash or a hang;
    /// parks and wakes it meanwhile as the supervisor says (`sleep`).
    async fn serve(
        &self,
        resident: &ResidentModel,
        files: Vec<PathBuf>,
        mut unload: oneshot::Receiver<()>,
        mut room: mpsc::UnboundedReceiver<bool>,
        sleep: mpsc::UnboundedReceiver<SleepCommand>,
    ) {
        let mut settings = self.spec.worker;
        let mut reservation = match self.place(resident, &mut unload, &mut room).await {
            Placed::Here(r) => r,
            Placed::Unloaded => return,
            Placed::Refused(no_room) => {
                tracing::warn!(model = %self.id, error = %no_room, "not starting the worker of {}: {no_room}", self.id);
                self.send(ModelReport::WorkerRefused(no_room.to_string()));
                return;
            }
        };
        // Without a reservation the worker runs on the CPU: llama.cpp must not
        // offload what the ledger does not hold (a model whose shape is unknown).
        if reservation.is_none() {
            settings.params.gpu_layers = GpuLayers::Count(0);
        }
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
        let took = upload_started.elapsed();
        match started {
            Ok(worker) => {
                if let Some(r) = reservation.as_mut() {
                    let offload = worker.offload().await;
                    self.send(ModelReport::Offloaded(offloaded(
                        &self.id, r, offload, took,
                    )));
                }
                self.send(ModelReport::WorkerReady(worker.link()));
                let wake_wait = self.spec.worker.start_timeout;
                let sleeping = tokio::spawn(worker_sleep::follow(
                    worker.link(),
                    sleep,
                    self.reporter(),
                    wake_wait,
                    self.env.logs.clone(),
                ));
                let exit = worker.supervise(unload).await;
                sleeping.abort();
                if let Some(exit) = exit {
                    self.send(ModelReport::WorkerFailed(exit));
                }
            }
            Err(exit) => self.send(ModelReport::WorkerFailed(exit)),
        }
    }
}

/// What went to the GPU and how fast: llama.cpp's own figures when the
/// worker gave them (the ledger then holds those), else the estimate; logged
/// once, with the upload time from the worker's start to its answering.
fn offloaded(id: &str, r: &mut Reservation, offload: Option<Offload>, took: Duration) -> GpuUse {
    let e = r.estimate;
    let device = r.gpu().device.clone();
    let offload = offload.unwrap_or_default();
    let measured = device
        .ggml_name
        .as_deref()
        .map(|name| offload.bytes_on(name))
        .filter(|&b| b > 0);
    if let Some(bytes) = measured {
        r.measured(bytes);
    }
    let secs = took.as_secs_f64();
    let bandwidth = if secs > 0.0 {
        (e.weights_bytes as f64 / secs) as u64
    } else {
        0
    };
    let (layers, max_layers) = offload.layers.unwrap_or((e.layers, e.layers));
    let used = GpuUse {
        device: r.gpu().label(),
        layers,
        max_layers,
        estimate_bytes: e.total(),
        measured_bytes: measured,
        reserved_bytes: r.reserved(),
        upload_seconds: secs,
        upload_bytes_per_second: bandwidth,
    };
    let human = crate::util::human_bytes;
    tracing::info!(
        model = %id,
        device = %used.device,
        gpu_layers = layers,
        gpu_layers_max = max_layers,
        offloaded_bytes = e.weights_bytes,
        estimate_bytes = used.estimate_bytes,
        measured_bytes = measured.unwrap_or(0),
        upload_seconds = secs,
        upload_bytes_per_second = bandwidth,
        "model {id}: {layers}/{max_layers} layers ({}) on {} in {secs:.2} s ({}/s); GPU memory {} measured, {} estimated",
        human(e.weights_bytes),
        used.device,
        human(bandwidth),
        measured.map_or_else(|| "not".to_owned(), human),
        human(used.estimate_bytes),
    );
    used
}
