//! A worker's minidump, read: the crash reason and address, the mapped file
//! the address lies in (a model file truncated under the worker shows as an
//! offset past its end), and every thread's stack, unwound and symbolized
//! with the binary's own DWARF (function, `file:line`) by minidump-processor,
//! and through frames framehop cannot unwind by [`super::cfi`].

use std::path::{Path, PathBuf};

use minidump::{Minidump, MinidumpLinuxMaps, MinidumpModuleList, MinidumpSystemInfo, Module};
use serde::{Deserialize, Serialize};

/// Most frames kept per thread.
pub const MAX_FRAMES: usize = 64;
/// Most threads kept besides the crashing one.
pub const MAX_THREADS: usize = 64;

/// One frame of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The function, demangled, when the binary's symbols name it.
    pub function: Option<String>,
    /// Its source file and line, from the line tables.
    pub file: Option<String>,
    /// The line.
    pub line: Option<u32>,
    /// The module (binary or library) the instruction is in.
    pub module: Option<String>,
    /// The instruction's offset in that module.
    pub module_offset: u64,
}

impl Frame {
    /// `function (file:line)`, or the module and offset; the file's last
    /// three path components only (enough to find it, short in a journal).
    pub fn one_line(&self) -> String {
        let short = |file: &str| {
            let parts: Vec<&str> = file.rsplit('/').take(3).collect();
            parts.into_iter().rev().collect::<Vec<_>>().join("/")
        };
        let place = match (&self.file, self.line) {
            (Some(file), Some(line)) => format!(" ({}:{line})", short(file)),
            (Some(file), None) => format!(" ({})", short(file)),
            _ => String::new(),
        };
        match &self.function {
            Some(f) => format!("{f}{place}"),
            None => format!(
                "{}+{:#x}",
                self.module.as_deref().unwrap_or("?"),
                self.module_offset
            ),
        }
    }
}

/// One thread's stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStack {
    /// Its kernel thread id.
    pub thread_id: u32,
    /// Its name, when it had one.
    pub name: Option<String>,
    /// Innermost first.
    pub frames: Vec<Frame>,
}

/// Where a fault address lies, when it is inside a mapped file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultFile {
    /// The mapped file.
    pub path: PathBuf,
    /// The byte offset in it.
    pub offset: u64,
    /// Its length now, when it can still be read.
    pub file_len: Option<u64>,
    /// The offset lies past its current end: it was truncated or replaced under the worker.
    pub past_end: bool,
}

/// What a minidump says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// `SIGBUS / BUS_ADRERR`.
    pub reason: Option<String>,
    /// The fault address.
    pub address: Option<u64>,
    /// The file it lies in, if any.
    pub fault_file: Option<FaultFile>,
    /// The thread that crashed.
    pub crashing: Option<ThreadStack>,
    /// The other threads (at most [`MAX_THREADS`]).
    pub others: Vec<ThreadStack>,
}

/// Reads and symbolizes a minidump. `fault_address` is the
/// signal's own address when the worker sent it (the minidump's exception
/// record takes it from crash-handler's misplaced copy of siginfo).
pub async fn analyze(dump: Vec<u8>, fault_address: Option<u64>) -> Result<Analysis, String> {
    let dump = Minidump::read(dump).map_err(|e| format!("reading the minidump: {e}"))?;
    let system: MinidumpSystemInfo = dump
        .get_stream()
        .map_err(|e| format!("the minidump has no system info: {e}"))?;
    let modules: MinidumpModuleList = dump
        .get_stream()
        .map_err(|e| format!("the minidump has no module list: {e}"))?;
    let mut provider = minidump_unwind::MultiSymbolProvider::new();
    // First, for frames whose rules are expressions (framehop unwinds those
    // by guesswork); it leaves every other frame to framehop.
    if system.cpu == minidump::system_info::Cpu::X86_64 {
        provider.add(Box::new(super::cfi::ExpressionCfi::default()));
    }
    provider.add(Box::new(
        minidump_unwind::debuginfo::DebugInfoSymbolProvider::new(&system, &modules).await,
    ));
    let state = minidump_processor::process_minidump(&dump, &provider)
        .await
        .map_err(|e| format!("unwinding the minidump: {e}"))?;
    let exception = state.exception_info.as_ref();
    let address = fault_address.or_else(|| exception.map(|e| e.address.0));
    let maps: Option<MinidumpLinuxMaps> = dump.get_stream().ok();
    let fault_file = address.and_then(|a| maps.as_ref().and_then(|m| mapped_file(m, a)));
    let crashing_index = state.requesting_thread;
    let mut crashing = None;
    let mut others = Vec::new();
    for (i, thread) in state.threads.iter().enumerate() {
        let stack = ThreadStack {
            thread_id: thread.thread_id,
            name: thread.thread_name.clone(),
            frames: thread.frames.iter().take(MAX_FRAMES).map(frame).collect(),
        };
        if Some(i) == crashing_index {
            crashing = Some(stack);
        } else if others.len() < MAX_THREADS {
            others.push(stack);
        }
    }
    Ok(Analysis {
        reason: exception.map(|e| e.reason.to_string()),
        address,
        fault_file,
        crashing,
        others,
    })
}

fn frame(f: &minidump_unwind::StackFrame) -> Frame {
    let module = f.module.as_ref();
    Frame {
        function: f.function_name.clone(),
        file: f.source_file_name.clone(),
        line: f.source_line,
        module: module.map(|m| {
            let file = m.code_file();
            Path::new(file.as_ref())
                .file_name()
                .map_or_else(|| file.to_string(), |n| n.to_string_lossy().into_owned())
        }),
        module_offset: module.map_or(f.instruction, |m| {
            f.instruction.saturating_sub(m.base_address())
        }),
    }
}

/// The file `address` lies in, with its offset, and whether that is past its end now.
fn mapped_file(maps: &MinidumpLinuxMaps, address: u64) -> Option<FaultFile> {
    let info = maps.memory_info_at_address(address)?;
    let procfs_core::process::MMapPath::Path(path) = &info.map.pathname else {
        return None;
    };
    let offset = address
        .checked_sub(info.map.address.0)?
        .checked_add(info.map.offset)?;
    let file_len = std::fs::metadata(path).ok().map(|m| m.len());
    Some(FaultFile {
        path: path.clone(),
        offset,
        file_len,
        past_end: file_len.is_some_and(|len| offset >= len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_as_its_function_and_place_or_its_module_and_offset() {
        let named = Frame {
            function: Some("ggml_compute_forward".into()),
            file: Some("ggml/src/ggml-cpu/ops.cpp".into()),
            line: Some(42),
            module: Some("llama-router".into()),
            module_offset: 0x10,
        };
        assert_eq!(
            named.one_line(),
            "ggml_compute_forward (src/ggml-cpu/ops.cpp:42)"
        );
        let bare = Frame {
            function: None,
            file: None,
            line: None,
            module: Some("libc.so.6".into()),
            module_offset: 0x2a,
        };
        assert_eq!(bare.one_line(), "libc.so.6+0x2a");
    }
}
