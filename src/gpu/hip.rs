//! The HIP runtime, loaded at run time (`libamdhip64.so`) so that a build
//! with ROCm support still starts on a machine without it. Only called from
//! the probe child process.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int};

use libloading::Symbol;

use super::{Backend, Device};

const LIBRARIES: &[&str] = &["libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"];

type HipError = c_int;

/// The HIP devices, or why there are none.
pub fn probe() -> Result<Vec<Device>, String> {
    let lib = super::dl::open_first(LIBRARIES)?;
    // SAFETY: the symbol types are the HIP runtime API's C signatures.
    unsafe {
        let error_string: Symbol<unsafe extern "C" fn(HipError) -> *const c_char> =
            lib.get(b"hipGetErrorString\0").map_err(|e| e.to_string())?;
        let describe = |call: &str, code: HipError| {
            format!(
                "{call}: {} (error {code})",
                super::dl::c_text(error_string(code))
            )
        };
        let count_fn: Symbol<unsafe extern "C" fn(*mut c_int) -> HipError> =
            lib.get(b"hipGetDeviceCount\0").map_err(|e| e.to_string())?;
        let name_fn: Symbol<unsafe extern "C" fn(*mut c_char, c_int, c_int) -> HipError> =
            lib.get(b"hipDeviceGetName\0").map_err(|e| e.to_string())?;
        let set_fn: Symbol<unsafe extern "C" fn(c_int) -> HipError> =
            lib.get(b"hipSetDevice\0").map_err(|e| e.to_string())?;
        let mem_fn: Symbol<unsafe extern "C" fn(*mut usize, *mut usize) -> HipError> =
            lib.get(b"hipMemGetInfo\0").map_err(|e| e.to_string())?;
        let mut count: c_int = 0;
        let rc = count_fn(&mut count);
        if rc != 0 {
            return Err(describe("hipGetDeviceCount", rc));
        }
        let mut devices = Vec::new();
        for i in 0..count.max(0) {
            let mut name = [0 as c_char; 256];
            let name = if name_fn(name.as_mut_ptr(), 255, i) == 0 {
                CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()
            } else {
                format!("HIP device {i}")
            };
            let rc = set_fn(i);
            if rc != 0 {
                return Err(describe("hipSetDevice", rc));
            }
            let (mut free, mut total) = (0usize, 0usize);
            let rc = mem_fn(&mut free, &mut total);
            if rc != 0 {
                return Err(describe("hipMemGetInfo", rc));
            }
            devices.push(Device {
                backend: Backend::Rocm,
                index: u32::try_from(i).unwrap_or(0),
                name,
                arch: None,
                total_bytes: total as u64,
                free_bytes: free as u64,
                kind: crate::gpu::DeviceKind::Unknown,
                ggml_name: None,
                usable: false,
                arch_override: crate::gpu::amd_arch_override(),
            });
        }
        if devices.is_empty() {
            return Err("hipGetDeviceCount: 0 devices".to_owned());
        }
        Ok(devices)
    }
}
