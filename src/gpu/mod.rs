//! GPUs: discovery (ggml's own device list, merged with HIP, NVML and sysfs;
//! probed in a child process so a faulting driver cannot take the daemon
//! down), the VRAM estimate of a model, and the per-device ledger that admits
//! workers, picks what to evict under memory pressure and serializes uploads.

pub mod devices;
mod dl;
pub mod estimate;
pub mod ggml;
mod hip;
pub mod ledger;
mod nvml;
pub mod placement;
pub mod probe;
pub mod sysfs;

use serde::{Deserialize, Serialize};

/// The backend a device is driven by (ggml's), or the source that saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// llama.cpp's Vulkan backend (RADV, NVIDIA, lavapipe).
    Vulkan,
    /// The HIP runtime (AMD ROCm).
    Rocm,
    /// NVML (NVIDIA).
    Cuda,
    /// `/sys/class/drm` (AMD, seen by no backend of this build).
    Sysfs,
    /// ggml's CPU device (listed, never an offload target).
    Cpu,
}

impl Backend {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vulkan => "vulkan",
            Backend::Rocm => "rocm",
            Backend::Cuda => "cuda",
            Backend::Sysfs => "sysfs",
            Backend::Cpu => "cpu",
        }
    }
}

/// What kind of device, as ggml types it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A GPU with its own memory (ggml's GPU type; lavapipe counts as one).
    Discrete,
    /// A GPU sharing host memory (UMA: Strix Halo, laptops).
    Integrated,
    /// The host CPU.
    Cpu,
    /// An accelerator that is not a GPU (BLAS, NPU).
    Accelerator,
    /// Seen by a vendor probe only.
    #[default]
    Unknown,
}

impl DeviceKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Discrete => "discrete",
            DeviceKind::Integrated => "integrated",
            DeviceKind::Cpu => "cpu",
            DeviceKind::Accelerator => "accelerator",
            DeviceKind::Unknown => "unknown",
        }
    }
}

/// One GPU as discovery saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Who reported it.
    pub backend: Backend,
    /// Index within its backend (llama.cpp's device index for that backend).
    pub index: u32,
    /// Marketing name.
    pub name: String,
    /// `gfx1151`, `sm_90`, when known.
    pub arch: Option<String>,
    /// Bytes of VRAM.
    pub total_bytes: u64,
    /// Bytes free when it was probed.
    pub free_bytes: u64,
    /// What kind of device.
    #[serde(default)]
    pub kind: DeviceKind,
    /// ggml's name for it (`Vulkan0`, `ROCm0`), when ggml lists it.
    #[serde(default)]
    pub ggml_name: Option<String>,
    /// Whether llama.cpp in this build offloads to it (ggml lists it as a GPU).
    #[serde(default)]
    pub usable: bool,
    /// `HSA_OVERRIDE_GFX_VERSION` in effect for this AMD device, if any.
    #[serde(default)]
    pub arch_override: Option<String>,
}

/// `HSA_OVERRIDE_GFX_VERSION` as this process sees it (gfx1151 on many ROCm
/// releases needs one, such as `11.0.0` or `11.5.1`).
pub fn amd_arch_override() -> Option<String> {
    std::env::var("HSA_OVERRIDE_GFX_VERSION")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// What discovery found, and why it found nothing where it found nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Devices found.
    pub devices: Vec<Device>,
    /// One line per source that found nothing or failed (`rocm: libamdhip64.so: cannot open ...`).
    pub notes: Vec<String>,
}
