//! What llama.cpp says it put where: the layers it offloaded and the size of
//! every buffer it allocated (`Vulkan0 model buffer size = 152.38 MiB`), read
//! from its own log lines as they pass. A software device's free memory may
//! not move, so these figures, not the device's, are the memory a model uses.

use std::sync::{Mutex, PoisonError};

/// One buffer llama.cpp allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    /// ggml's buffer name: the device (`Vulkan0`, `CUDA0`) or a host kind
    /// (`CPU`, `CPU_Mapped`, `Vulkan_Host`).
    pub name: String,
    /// What it holds: `model`, `KV`, `compute`, `output`, `RS`, `LoRA`.
    pub kind: String,
    /// Bytes (llama.cpp prints MiB with two decimals).
    pub bytes: u64,
}

/// Most buffers kept (a model load and its contexts log a handful).
pub const MAX_BUFFERS: usize = 256;

/// Everything one model load reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offload {
    /// Layers offloaded and the most that could be (`offloaded 19/19 layers`).
    pub layers: Option<(u32, u32)>,
    /// The buffers, in the order they were allocated.
    pub buffers: Vec<Buffer>,
}

impl Offload {
    /// Bytes allocated on the device ggml names `device` (`Vulkan0`).
    pub fn bytes_on(&self, device: &str) -> u64 {
        self.buffers
            .iter()
            .filter(|b| b.name == device)
            .map(|b| b.bytes)
            .sum()
    }

    /// Takes in one log line; lines that are not about offload are ignored.
    pub fn observe(&mut self, line: &str) {
        if let Some(layers) = offloaded_layers(line) {
            self.layers = Some(layers);
        } else if let Some(buffer) = buffer_size(line) {
            // Bounded: a context recreated again and again logs again.
            if self.buffers.len() < MAX_BUFFERS {
                self.buffers.push(buffer);
            }
        }
    }
}

/// `load_tensors: offloaded 19/19 layers to GPU`.
fn offloaded_layers(line: &str) -> Option<(u32, u32)> {
    let rest = line.split("offloaded ").nth(1)?;
    let fraction = rest.trim_end().strip_suffix("layers to GPU")?;
    let (done, total) = fraction.trim().split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// `llama_context:    Vulkan0 compute buffer size =    73.00 MiB`.
fn buffer_size(line: &str) -> Option<Buffer> {
    let (head, size) = line.split_once(" buffer size =")?;
    let mib: f64 = size.trim().strip_suffix("MiB")?.trim().parse().ok()?;
    // head: "func:   NAME KIND" (KIND may be two words: "DSV4 x state").
    let words: Vec<&str> = head.rsplit(':').next()?.split_whitespace().collect();
    let (name, kind) = words.split_first()?;
    if kind.is_empty() || !mib.is_finite() || mib < 0.0 {
        return None;
    }
    Some(Buffer {
        name: (*name).to_owned(),
        kind: kind.join(" "),
        bytes: (mib * 1024.0 * 1024.0).round() as u64,
    })
}

/// The worker's one record of what its model load reported.
static SEEN: Mutex<Offload> = Mutex::new(Offload {
    layers: None,
    buffers: Vec::new(),
});

/// Feeds a log message to the worker's record (the telemetry tap calls it
/// for every message, whatever the log level lets through).
pub fn tap(message: &str) {
    if message.contains("buffer size") || message.contains("layers to GPU") {
        SEEN.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(message);
    }
}

/// What this worker's model load reported so far.
pub fn seen() -> Offload {
    SEEN.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_lines_become_layers_and_buffers() {
        let mut o = Offload::default();
        for line in [
            "load_tensors: offloading 18 repeating layers to GPU",
            "load_tensors: offloaded 19/19 layers to GPU",
            "load_tensors:      Vulkan0 model buffer size =   152.38 MiB",
            "load_tensors:   CPU_Mapped model buffer size =    85.75 MiB",
            "llama_kv_cache:      Vulkan0 KV buffer size =    12.00 MiB",
            "llama_context:  Vulkan_Host  output buffer size =     1.00 MiB",
            "llama_context:      Vulkan0 compute buffer size =    73.00 MiB",
            "llama_context: n_ctx = 512",
            "garbage buffer size = lots MiB",
        ] {
            o.observe(line);
        }
        assert_eq!(o.layers, Some((19, 19)));
        assert_eq!(o.buffers.len(), 5, "{o:?}");
        assert_eq!(o.buffers[2].kind, "KV");
        assert_eq!(o.buffers[3].name, "Vulkan_Host");
        let mib = |x: f64| (x * 1024.0 * 1024.0).round() as u64;
        assert_eq!(o.bytes_on("Vulkan0"), mib(152.38) + mib(12.0) + mib(73.0));
        assert_eq!(o.bytes_on("CUDA0"), 0);
    }

    #[test]
    fn trailing_newlines_and_odd_spacing_are_read() {
        let mut o = Offload::default();
        o.observe("load_tensors: offloaded 0/27 layers to GPU\n");
        o.observe("llama_kv_cache:        CPU KV buffer size =     6.00 MiB\n");
        assert_eq!(o.layers, Some((0, 27)));
        assert_eq!(o.bytes_on("CPU"), 6 << 20);
        for _ in 0..2 * MAX_BUFFERS {
            o.observe("llama_context:        CPU compute buffer size =     1.00 MiB");
        }
        assert_eq!(o.buffers.len(), MAX_BUFFERS);
    }
}
