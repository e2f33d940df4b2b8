//! What the supervisor tells the outside world: model views, states, events, errors.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::loader::Progress;

/// Where a model is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelState {
    /// Listed; nothing loaded.
    Discovered,
    /// Being mapped and prefetched.
    Loading,
    /// Resident in host RAM and ready; its worker starts on the first request.
    Ready,
    /// Being released.
    Unloading,
    /// Evicted, but its worker was kept under `--park-bytes`: the model and
    /// its worker stay in RAM without a context, and a request wakes it
    /// (a new context) instead of loading it. Takes no `--models-max` slot.
    Parked,
    /// Released after having been loaded.
    Unloaded,
    /// Unusable; see the failure reason.
    Failed,
}

impl ModelState {
    /// Every state.
    pub const ALL: [ModelState; 7] = [
        ModelState::Discovered,
        ModelState::Loading,
        ModelState::Ready,
        ModelState::Unloading,
        ModelState::Parked,
        ModelState::Unloaded,
        ModelState::Failed,
    ];

    /// Lower-case name (`ready`).
    pub fn name(self) -> &'static str {
        match self {
            ModelState::Discovered => "discovered",
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Unloading => "unloading",
            ModelState::Parked => "parked",
            ModelState::Unloaded => "unloaded",
            ModelState::Failed => "failed",
        }
    }

    /// Whether the model occupies a slot under `--models-max`.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ModelState::Loading | ModelState::Ready | ModelState::Unloading
        )
    }
}

/// A model as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelView {
    /// Name.
    pub id: String,
    /// State.
    pub state: ModelState,
    /// Files in shard order.
    pub files: Vec<PathBuf>,
    /// Attached projector.
    pub projector: Option<PathBuf>,
    /// Total size of the files.
    pub size_bytes: u64,
    /// `general.name`.
    pub name: String,
    /// Architecture.
    pub architecture: String,
    /// File type or dominant tensor type.
    pub quantization: String,
    /// Parameters.
    pub parameter_count: u64,
    /// Context length.
    pub context_length: u64,
    /// Why it is failed.
    pub failure_reason: Option<String>,
    /// Last load or use.
    pub last_used: Option<SystemTime>,
    /// Never evicted.
    pub pinned: bool,
    /// Bytes resident in host RAM.
    pub resident_bytes: u64,
    /// The worker's process id while one serves the model.
    pub worker_pid: Option<u32>,
    /// Other names for it (config file).
    pub aliases: Vec<String>,
    /// What its worker runs with.
    pub settings: crate::settings::Effective,
    /// What its running worker holds on a GPU (layers, estimate, measured).
    pub gpu: Option<crate::gpu::placement::GpuUse>,
    /// How it runs, when the user should know (asked for a GPU, runs on the CPU).
    pub note: Option<String>,
}

/// Why a model is being unloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnloadCause {
    /// Its place was needed.
    Evicted(Eviction),
    /// Unused for its idle TTL.
    Idle(Duration),
    /// A client asked.
    Requested,
    /// Its files changed on disk.
    FilesChanged,
    /// Its files left the models directory.
    Removed,
    /// Its settings changed in a config reload; it loads again with the new ones.
    Reload,
}

/// What an eviction made room for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// A load of this model (the evicted one was the least recently used).
    ToLoad(String),
    /// A config reload lowered `--models-max` to this.
    ModelsMaxLowered(u32),
    /// It was the oldest parked model, and this one is parked in its place
    /// under `--park-bytes` (or a reload lowered it).
    ParkFull(Option<String>),
    /// `model`'s offload needed the GPU memory it held on `device`.
    GpuMemory {
        /// The model that needed the room.
        model: String,
        /// The device's label.
        device: String,
    },
}

impl fmt::Display for UnloadCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnloadCause::Evicted(Eviction::ToLoad(id)) => {
                write!(f, "evicted (least recently used) to load {id}")
            }
            UnloadCause::Evicted(Eviction::ModelsMaxLowered(max)) => {
                write!(f, "evicted: --models-max lowered to {max}")
            }
            UnloadCause::Evicted(Eviction::ParkFull(Some(id))) => {
                write!(f, "evicted (oldest parked) to park {id} under --park-bytes")
            }
            UnloadCause::Evicted(Eviction::ParkFull(None)) => {
                f.write_str("evicted (oldest parked): over --park-bytes")
            }
            UnloadCause::Evicted(Eviction::GpuMemory { model, device }) => {
                write!(
                    f,
                    "evicted (least recently used on {device}) to make GPU memory for {model}"
                )
            }
            UnloadCause::Idle(ttl) => write!(f, "idle for {} s (idle_ttl)", ttl.as_secs()),
            UnloadCause::Requested => f.write_str("unload requested"),
            UnloadCause::FilesChanged => f.write_str("its files changed on disk"),
            UnloadCause::Removed => f.write_str("removed from the models directory"),
            UnloadCause::Reload => f.write_str("its settings changed (config reload)"),
        }
    }
}

/// A state change.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEvent {
    /// Which model.
    pub id: String,
    /// New state.
    pub state: ModelState,
    /// Previous state.
    pub previous: ModelState,
    /// Why, when there is more to say.
    pub reason: Option<String>,
    /// Why it is being unloaded (set on the move to unloading, and to unloaded for a removed model).
    pub cause: Option<UnloadCause>,
    /// When.
    pub at: SystemTime,
}

impl ModelEvent {
    /// Whether this is a model being unloaded to make room.
    pub fn is_eviction(&self) -> bool {
        self.state == ModelState::Unloading && matches!(self.cause, Some(UnloadCause::Evicted(_)))
    }
}

/// Where a load request stands; the last value is `Ready` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadStatus {
    /// Waiting for a slot.
    Queued,
    /// Loading.
    Loading(Progress),
    /// Done.
    Ready(Box<ModelView>),
    /// Failed or cancelled.
    Failed(SupervisorError),
}

/// The daemon's state in numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    /// `--models-max` (0 = no limit).
    pub models_max: u32,
    /// Bytes held by loaded and parked models.
    pub host_cache_used: u64,
    /// `--host-cache-bytes` (0 = no limit).
    pub host_cache_limit: u64,
    /// Models per state.
    pub by_state: Vec<(ModelState, u32)>,
}

/// What changed in a rescan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescanSummary {
    /// Models listed now.
    pub models: u32,
    /// New ones.
    pub added: u32,
    /// Gone ones.
    pub removed: u32,
    /// Ones whose files changed.
    pub changed: u32,
}

/// How one request may use its model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcquireOptions {
    /// Whether a model that is not loaded is loaded for this request:
    /// `None` follows `--models-autoload`; `Some` overrides it for this
    /// request only (llama-server's `?autoload=`).
    pub autoload: Option<bool>,
}

/// Why a supervisor request failed; maps onto gRPC status codes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SupervisorError {
    /// No model has this id.
    #[error("no model named {0:?}")]
    NotFound(String),
    /// The model's files are bad, or autoload is off.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too many waiting loads, or the model cannot fit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The load failed or was cancelled.
    #[error("{0}")]
    Unavailable(String),
    /// The supervisor is not running (shutting down).
    #[error("the supervisor has stopped")]
    Stopped,
}
