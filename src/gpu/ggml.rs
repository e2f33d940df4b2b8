//! The devices llama.cpp will actually use: ggml's backend registry (Vulkan,
//! ROCm, CUDA and the CPU, as this build has them), merged with what the
//! vendor probes (HIP, NVML, sysfs) know and ggml does not, such as the
//! gfx arch. Only called from the probe child process: listing initialises
//! the backends, and a driver that faults there costs the daemon nothing.

use super::{Backend, Device, DeviceKind};

/// One device as ggml's registry lists it (`llama_cpp_2::LlamaBackendDevice`, owned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgmlDevice {
    /// `Vulkan0`, `ROCm0`, `CUDA0`, `CPU`.
    pub name: String,
    /// `AMD Radeon 8060S (RADV GFX1151)`, `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub description: String,
    /// `Vulkan`, `ROCm`, `CUDA`, `CPU`.
    pub backend: String,
    /// Bytes in all.
    pub total_bytes: u64,
    /// Bytes free.
    pub free_bytes: u64,
    /// What kind of device.
    pub kind: DeviceKind,
}

/// ggml's devices in this process.
pub fn list() -> Vec<GgmlDevice> {
    use llama_cpp_2::LlamaBackendDeviceType as T;
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| GgmlDevice {
            name: d.name,
            description: d.description,
            backend: d.backend,
            total_bytes: d.memory_total as u64,
            free_bytes: d.memory_free as u64,
            kind: match d.device_type {
                T::Cpu => DeviceKind::Cpu,
                T::Gpu => DeviceKind::Discrete,
                T::IntegratedGpu => DeviceKind::Integrated,
                T::Accelerator => DeviceKind::Accelerator,
                T::Unknown => DeviceKind::Unknown,
            },
        })
        .collect()
}

fn backend_of(ggml: &str) -> Option<Backend> {
    match ggml.to_ascii_lowercase().as_str() {
        "vulkan" => Some(Backend::Vulkan),
        "rocm" | "hip" => Some(Backend::Rocm),
        "cuda" => Some(Backend::Cuda),
        "cpu" => Some(Backend::Cpu),
        _ => None,
    }
}

/// `gfx1151` from a RADV description (`AMD Radeon 8060S (RADV GFX1151)`).
fn radv_arch(description: &str) -> Option<String> {
    let start = description.find("(RADV ")? + "(RADV ".len();
    let rest = description.get(start..)?;
    let arch = rest.split(')').next()?.trim().to_ascii_lowercase();
    arch.starts_with("gfx").then_some(arch)
}

/// Whether a vendor-probe device and a ggml device are the same card: the
/// same backend, or a Vulkan device of that vendor.
fn same_vendor(probed: &Device, ggml: &GgmlDevice, backend: Backend) -> bool {
    let text = ggml.description.to_ascii_lowercase();
    match (probed.backend, backend) {
        (a, b) if a == b => true,
        (Backend::Rocm | Backend::Sysfs, Backend::Vulkan) => {
            text.contains("amd") || text.contains("radeon") || text.contains("radv")
        }
        (Backend::Cuda, Backend::Vulkan) => text.contains("nvidia"),
        _ => false,
    }
}

/// Merges ggml's list into the vendor probes' devices: every ggml device is
/// one [`Device`], usable for offload unless it is the CPU; a vendor device
/// matched to it (in order, per vendor) lends its arch and, for an integrated
/// GPU, its shared memory. Vendor devices nobody matched stay, not usable:
/// llama.cpp does not see them (a build without that backend).
pub fn merge(probed: Vec<Device>, ggml: Vec<GgmlDevice>) -> Vec<Device> {
    let mut probed: Vec<Option<Device>> = probed.into_iter().map(Some).collect();
    let mut merged = Vec::new();
    // llama.cpp offloads to its GPUs, and to integrated ones only when it has
    // no discrete one; main_gpu counts those, in registry order.
    let discrete = ggml.iter().any(|g| g.kind == DeviceKind::Discrete);
    let mut gpu_index = 0u32;
    for g in ggml {
        let Some(backend) = backend_of(&g.backend) else {
            continue;
        };
        let vendor = probed
            .iter_mut()
            .find(|p| p.as_ref().is_some_and(|p| same_vendor(p, &g, backend)))
            .and_then(Option::take);
        let usable = backend != Backend::Cpu
            && match g.kind {
                DeviceKind::Discrete => true,
                DeviceKind::Integrated => !discrete,
                DeviceKind::Cpu | DeviceKind::Accelerator | DeviceKind::Unknown => false,
            };
        let index = if usable {
            gpu_index += 1;
            gpu_index - 1
        } else {
            0
        };
        let arch = vendor
            .as_ref()
            .and_then(|v| v.arch.clone())
            .or_else(|| radv_arch(&g.description));
        // A UMA device can use shared memory (GTT) beyond its carve-out; take
        // whichever source saw more of it, so the ledger does not refuse what fits.
        let (total, free) = match &vendor {
            Some(v) if g.kind == DeviceKind::Integrated && v.total_bytes > g.total_bytes => {
                (v.total_bytes, v.free_bytes)
            }
            _ => (g.total_bytes, g.free_bytes),
        };
        merged.push(Device {
            backend,
            index,
            name: if g.description.is_empty() {
                g.name.clone()
            } else {
                g.description.clone()
            },
            arch,
            total_bytes: total,
            free_bytes: free.min(total),
            kind: g.kind,
            ggml_name: Some(g.name),
            usable,
            arch_override: vendor.and_then(|v| v.arch_override),
        });
    }
    merged.extend(probed.into_iter().flatten().map(|mut d| {
        d.usable = false;
        d
    }));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ggml(name: &str, description: &str, backend: &str, kind: DeviceKind) -> GgmlDevice {
        GgmlDevice {
            name: name.into(),
            description: description.into(),
            backend: backend.into(),
            total_bytes: 8 << 30,
            free_bytes: 6 << 30,
            kind,
        }
    }

    fn sysfs(arch: &str, total: u64) -> Device {
        Device {
            backend: Backend::Sysfs,
            index: 0,
            name: "AMD Radeon 8060S".into(),
            arch: Some(arch.into()),
            total_bytes: total,
            free_bytes: total / 2,
            kind: DeviceKind::Unknown,
            ggml_name: None,
            usable: false,
            arch_override: Some("11.0.0".into()),
        }
    }

    #[test]
    fn a_vulkan_device_takes_the_vendor_facts_of_its_card() {
        let out = merge(
            vec![sysfs("gfx1151", 96 << 30)],
            vec![
                ggml(
                    "Vulkan0",
                    "AMD Radeon 8060S (RADV GFX1151)",
                    "Vulkan",
                    DeviceKind::Integrated,
                ),
                ggml("CPU", "AMD Ryzen AI MAX+ 395", "CPU", DeviceKind::Cpu),
            ],
        );
        assert_eq!(out.len(), 2, "{out:?}");
        let gpu = &out[0];
        assert_eq!(
            (gpu.backend, gpu.index, gpu.usable),
            (Backend::Vulkan, 0, true)
        );
        assert_eq!(gpu.arch.as_deref(), Some("gfx1151"));
        assert_eq!(gpu.arch_override.as_deref(), Some("11.0.0"));
        assert_eq!(gpu.ggml_name.as_deref(), Some("Vulkan0"));
        // UMA: the shared memory sysfs saw counts, not only the carve-out.
        assert_eq!(gpu.total_bytes, 96 << 30);
        let cpu = &out[1];
        assert_eq!(
            (cpu.backend, cpu.kind, cpu.usable),
            (Backend::Cpu, DeviceKind::Cpu, false)
        );
    }

    #[test]
    fn vendor_devices_ggml_does_not_list_are_kept_but_not_usable() {
        let nvidia = Device {
            backend: Backend::Cuda,
            name: "H200".into(),
            ..sysfs("sm_90", 140 << 30)
        };
        let out = merge(
            vec![nvidia],
            vec![ggml(
                "Vulkan0",
                "llvmpipe (LLVM 15.0.6, 256 bits)",
                "Vulkan",
                DeviceKind::Discrete,
            )],
        );
        // lavapipe is a Vulkan device ggml counts as a GPU: a real offload target.
        assert_eq!(out[0].backend, Backend::Vulkan);
        assert!(out[0].usable);
        assert_eq!(out[0].arch, None);
        assert_eq!((out[1].name.as_str(), out[1].usable), ("H200", false));
    }

    #[test]
    fn gpu_indices_count_gpus_only_and_radv_names_its_arch() {
        let out = merge(
            vec![],
            vec![
                ggml("CPU", "cpu", "CPU", DeviceKind::Cpu),
                ggml(
                    "Vulkan0",
                    "AMD Radeon RX 7900 XTX (RADV GFX1100)",
                    "Vulkan",
                    DeviceKind::Discrete,
                ),
                ggml("Vulkan1", "NVIDIA RTX 4090", "Vulkan", DeviceKind::Discrete),
                ggml(
                    "Vulkan2",
                    "AMD Radeon 780M (RADV GFX1103)",
                    "Vulkan",
                    DeviceKind::Integrated,
                ),
                ggml("Weird0", "?", "Metalish", DeviceKind::Unknown),
            ],
        );
        let seen: Vec<_> = out.iter().map(|d| (d.backend, d.index, d.usable)).collect();
        // With a discrete GPU at hand llama.cpp leaves the integrated one alone.
        assert_eq!(
            seen,
            vec![
                (Backend::Cpu, 0, false),
                (Backend::Vulkan, 0, true),
                (Backend::Vulkan, 1, true),
                (Backend::Vulkan, 0, false)
            ]
        );
        assert_eq!(out[1].arch.as_deref(), Some("gfx1100"));
    }
}
