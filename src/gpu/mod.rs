//! GPUs: discovery (HIP, NVML, sysfs; probed in a child process so a faulting
//! driver cannot take the daemon down), the VRAM estimate of a model, and the
//! per-device ledger that admits workers and serializes their uploads.

pub mod devices;
mod dl;
pub mod estimate;
mod hip;
pub mod ledger;
mod nvml;
pub mod probe;
pub mod sysfs;

use serde::{Deserialize, Serialize};

/// Where a device's figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The HIP runtime (AMD ROCm).
    Rocm,
    /// NVML (NVIDIA).
    Cuda,
    /// `/sys/class/drm` (AMD, when HIP is not available).
    Sysfs,
}

impl Backend {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Rocm => "rocm",
            Backend::Cuda => "cuda",
            Backend::Sysfs => "sysfs",
        }
    }

    /// Whether this build's engine can offload to devices of this backend.
    pub fn usable(self) -> bool {
        match self {
            Backend::Rocm | Backend::Sysfs => cfg!(feature = "rocm"),
            Backend::Cuda => cfg!(feature = "cuda"),
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
}

/// What discovery found, and why it found nothing where it found nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Devices found.
    pub devices: Vec<Device>,
    /// One line per source that found nothing or failed (`rocm: libamdhip64.so: cannot open ...`).
    pub notes: Vec<String>,
}
