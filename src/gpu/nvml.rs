//! NVML (`libnvidia-ml.so.1`, part of the NVIDIA driver), loaded at run time
//! for VRAM figures. Only called from the probe child process.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

use libloading::Symbol;

use super::{Backend, Device};

const LIBRARIES: &[&str] = &["libnvidia-ml.so.1", "libnvidia-ml.so"];

type NvmlReturn = c_int;
type NvmlDevice = *mut c_void;

#[repr(C)]
#[derive(Default)]
struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

/// The NVIDIA devices, or why there are none.
pub fn probe() -> Result<Vec<Device>, String> {
    let lib = super::dl::open_first(LIBRARIES)?;
    // SAFETY: the symbol types are NVML's C signatures; handles come from NVML.
    unsafe {
        let error_string: Symbol<unsafe extern "C" fn(NvmlReturn) -> *const c_char> =
            lib.get(b"nvmlErrorString\0").map_err(|e| e.to_string())?;
        let describe = |call: &str, code: NvmlReturn| {
            format!(
                "{call}: {} (error {code})",
                super::dl::c_text(error_string(code))
            )
        };
        let init: Symbol<unsafe extern "C" fn() -> NvmlReturn> =
            lib.get(b"nvmlInit_v2\0").map_err(|e| e.to_string())?;
        let shutdown: Symbol<unsafe extern "C" fn() -> NvmlReturn> =
            lib.get(b"nvmlShutdown\0").map_err(|e| e.to_string())?;
        let count_fn: Symbol<unsafe extern "C" fn(*mut c_uint) -> NvmlReturn> = lib
            .get(b"nvmlDeviceGetCount_v2\0")
            .map_err(|e| e.to_string())?;
        let handle_fn: Symbol<unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> NvmlReturn> = lib
            .get(b"nvmlDeviceGetHandleByIndex_v2\0")
            .map_err(|e| e.to_string())?;
        let name_fn: Symbol<unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> NvmlReturn> =
            lib.get(b"nvmlDeviceGetName\0").map_err(|e| e.to_string())?;
        let mem_fn: Symbol<unsafe extern "C" fn(NvmlDevice, *mut NvmlMemory) -> NvmlReturn> = lib
            .get(b"nvmlDeviceGetMemoryInfo\0")
            .map_err(|e| e.to_string())?;
        let cc_fn: Symbol<unsafe extern "C" fn(NvmlDevice, *mut c_int, *mut c_int) -> NvmlReturn> =
            lib.get(b"nvmlDeviceGetCudaComputeCapability\0")
                .map_err(|e| e.to_string())?;
        let rc = init();
        if rc != 0 {
            return Err(describe("nvmlInit", rc));
        }
        let result = (|| {
            let mut count: c_uint = 0;
            let rc = count_fn(&mut count);
            if rc != 0 {
                return Err(describe("nvmlDeviceGetCount", rc));
            }
            let mut devices = Vec::new();
            for i in 0..count {
                let mut handle: NvmlDevice = std::ptr::null_mut();
                let rc = handle_fn(i, &mut handle);
                if rc != 0 {
                    return Err(describe("nvmlDeviceGetHandleByIndex", rc));
                }
                let mut name = [0 as c_char; 96];
                let name = if name_fn(handle, name.as_mut_ptr(), 96) == 0 {
                    CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()
                } else {
                    format!("NVIDIA device {i}")
                };
                let mut memory = NvmlMemory::default();
                let rc = mem_fn(handle, &mut memory);
                if rc != 0 {
                    return Err(describe("nvmlDeviceGetMemoryInfo", rc));
                }
                let (mut major, mut minor) = (0, 0);
                let arch = (cc_fn(handle, &mut major, &mut minor) == 0)
                    .then(|| format!("sm_{major}{minor}"));
                devices.push(Device {
                    backend: Backend::Cuda,
                    index: i,
                    name,
                    arch,
                    total_bytes: memory.total,
                    free_bytes: memory.free,
                    kind: crate::gpu::DeviceKind::Unknown,
                    ggml_name: None,
                    usable: false,
                    arch_override: None,
                });
            }
            if devices.is_empty() {
                return Err("nvmlDeviceGetCount: 0 devices".to_owned());
            }
            Ok(devices)
        })();
        let _ = shutdown();
        result
    }
}
