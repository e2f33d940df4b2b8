//! Crash reports: what is known about each worker that died of a fault
//! signal or a panic, kept as one JSON file per crash in a private directory
//! (`$STATE_DIRECTORY/crashes` under systemd). Storage is bounded in count
//! and bytes, the oldest report goes first, and reports survive restarts.
//!
//! This module owns the format, the storage, and the daemon's end of
//! in-process capture ([`capture`]: a minidump of the crashed worker, taken
//! from outside it, and [`analyze`]: its stacks symbolized). The daemon's side
//! of a worker writes a report when one ends (`worker::process`); gRPC
//! (`ListCrashes`, `GetCrash`) and `llama-router crashes` read them.

pub mod analyze;
pub mod capture;
mod cfi;
mod store;

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use analyze::{Analysis, FaultFile, Frame, ThreadStack};
pub use capture::{CaptureServer, Captured, SigInfo};
pub use store::{CrashLimits, CrashStore};

use crate::params::ModelParams;

/// The format version written in every report.
pub const REPORT_VERSION: u32 = 2;

/// Most stderr lines a report keeps.
pub const STDERR_LINES: usize = 64;

/// Signals that mean the worker itself faulted (not a kill from outside).
pub const FAULT_SIGNALS: [i32; 7] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// The exit code of a Rust program that panicked.
pub const PANIC_EXIT_CODE: i32 = 101;

/// One crash, as written to disk and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    /// Format version ([`REPORT_VERSION`]).
    pub version: u32,
    /// Unique, sortable by time: `20261201T174100Z-12345`.
    pub id: String,
    /// When the daemon saw the worker end (RFC 3339, UTC).
    pub time: String,
    /// The model the worker served.
    pub model: String,
    /// The model's files, in shard order.
    pub files: Vec<PathBuf>,
    /// The worker's process id.
    pub worker_pid: u32,
    /// This build: version and backends.
    pub build: String,
    /// The engine settings the worker ran with.
    pub settings: ModelParams,
    /// How it ended.
    pub exit: CrashExit,
    /// The last stderr lines (at most [`STDERR_LINES`]).
    pub stderr: Vec<String>,
    /// The requests the worker was serving (never their text).
    #[serde(default)]
    pub requests: Vec<CrashRequest>,
    /// How the report was made: captured in the worker (a minidump,
    /// symbolized), or, when capture failed, what the daemon saw, and why.
    pub capture: String,
    /// How the signal came, in words: the fault kind (`address not mapped`),
    /// or who sent it.
    #[serde(default)]
    pub signal_detail: Option<String>,
    /// The process that sent the signal, when another one did.
    #[serde(default)]
    pub sender: Option<SignalSender>,
    /// The fault address, and the mapped file it lies in.
    #[serde(default)]
    pub fault: Option<Fault>,
    /// The crashing thread's stack, innermost first, symbolized.
    #[serde(default)]
    pub backtrace: Vec<Frame>,
    /// The other threads' stacks.
    #[serde(default)]
    pub threads: Vec<ThreadStack>,
    /// The devices the daemon saw (backend, kind, whether llama.cpp offloads to it).
    #[serde(default)]
    pub devices: Vec<String>,
}

/// Who sent a signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalSender {
    /// Its pid.
    pub pid: u32,
    /// Its uid.
    pub uid: u32,
    /// Its command (`/proc/PID/comm`), if it still runs.
    pub command: Option<String>,
}

/// Where a fault happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The address, `0x…`.
    pub address: String,
    /// The mapped file it lies in, if any.
    pub file: Option<FaultFile>,
}

/// How the crashed worker ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashExit {
    /// The signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// Its name (`SIGSEGV`).
    pub signal_name: Option<String>,
    /// Whether it left a core dump.
    pub core_dumped: bool,
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// In words, as the model's failure reason says it.
    pub reason: String,
}

impl CrashExit {
    /// Whether this ending deserves a report: a fault signal or a panic.
    pub fn is_crash(&self) -> bool {
        self.signal.is_some_and(|s| FAULT_SIGNALS.contains(&s))
            || self.code == Some(PANIC_EXIT_CODE)
    }
}

/// A request the worker was serving when it crashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashRequest {
    /// The daemon's number for it (per worker).
    pub id: u64,
    /// `generate`, `chat`, `embed`, `tokenize`, ...
    pub kind: String,
    /// The interface it came in on: `http` or `grpc`.
    pub client: String,
    /// How long it had run.
    pub running_ms: u64,
    /// Tokens that had come back.
    pub generated_tokens: u64,
}

/// What the daemon knows of a worker that ended, to make a report from.
#[derive(Debug, Clone)]
pub struct CrashFacts {
    /// The model.
    pub model: String,
    /// Its files.
    pub files: Vec<PathBuf>,
    /// The worker's pid.
    pub worker_pid: u32,
    /// Its engine settings.
    pub settings: ModelParams,
    /// How it ended.
    pub exit: CrashExit,
    /// Its stderr tail (the last [`STDERR_LINES`] are kept).
    pub stderr: Vec<String>,
    /// The requests it was serving.
    pub requests: Vec<CrashRequest>,
    /// The devices discovery found (`vulkan:0 (llvmpipe ...), discrete, usable`).
    pub devices: Vec<String>,
    /// When it ended.
    pub at: SystemTime,
}

impl CrashReport {
    /// A report of `facts`, made by the daemon without in-process capture.
    pub fn from_facts(facts: CrashFacts) -> Self {
        let secs = facts
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let time = humantime::format_rfc3339_seconds(at).to_string();
        let compact: String = time.chars().filter(|c| *c != '-' && *c != ':').collect();
        let skip = facts.stderr.len().saturating_sub(STDERR_LINES);
        CrashReport {
            version: REPORT_VERSION,
            id: format!("{compact}-{}", facts.worker_pid),
            time,
            model: facts.model,
            files: facts.files,
            worker_pid: facts.worker_pid,
            build: build(),
            settings: facts.settings,
            exit: facts.exit,
            stderr: facts.stderr.into_iter().skip(skip).collect(),
            requests: facts.requests,
            capture: "not captured in the worker: this report holds what the daemon saw \
                      (how the worker ended and its stderr)"
                .to_owned(),
            signal_detail: None,
            sender: None,
            fault: None,
            backtrace: Vec::new(),
            threads: Vec::new(),
            devices: facts.devices,
        }
    }

    /// Adds what capture in the worker found: the signal's origin
    /// ([`Self::with_signal`]) and the symbolized minidump
    /// ([`Self::with_analysis`]).
    pub fn with_capture(
        self,
        captured: &Captured,
        analysis: Option<Result<Analysis, String>>,
    ) -> Self {
        self.with_signal(captured).with_analysis(captured, analysis)
    }

    /// Adds the signal's origin: how it came, who sent it (read from
    /// `/proc` now, while the sender may still run), the fault address.
    pub fn with_signal(mut self, captured: &Captured) -> Self {
        if let Some(info) = captured.siginfo {
            let signo = i32::try_from(info.signo).unwrap_or(0);
            let mut detail = capture::describe_code(signo, info.code);
            if info.code <= 0 {
                if info.pid == self.worker_pid {
                    detail = "raised by the worker itself (abort or raise)".to_owned();
                } else {
                    let command = std::fs::read_to_string(format!("/proc/{}/comm", info.pid))
                        .ok()
                        .map(|c| c.trim().to_owned());
                    detail = format!(
                        "{detail}: sent by pid {} (uid {}{})",
                        info.pid,
                        info.uid,
                        command
                            .as_deref()
                            .map(|c| format!(", {c}"))
                            .unwrap_or_default()
                    );
                    self.sender = Some(SignalSender {
                        pid: info.pid,
                        uid: info.uid,
                        command,
                    });
                }
            } else {
                self.fault = Some(Fault {
                    address: format!("{:#x}", info.addr),
                    file: None,
                });
            }
            self.signal_detail = Some(detail);
        }
        self
    }

    /// Adds the minidump's analysis (or why there is none, which `capture`
    /// then says): the stacks, and the mapped file the fault lies in.
    pub fn with_analysis(
        mut self,
        captured: &Captured,
        analysis: Option<Result<Analysis, String>>,
    ) -> Self {
        self.capture = match (&captured.minidump, analysis) {
            (None, _) => "not captured in the worker: it asked for no minidump (it crashed \
                          before its crash handler was set up, or the handler could not reach \
                          the daemon); this report holds what the daemon saw"
                .to_owned(),
            (Some(Err(why)), _) => {
                format!("capture failed ({why}); this report holds what the daemon saw")
            }
            (Some(Ok(_)), None) => "captured a minidump, not analyzed".to_owned(),
            (Some(Ok(_)), Some(Err(why))) => {
                format!("captured a minidump, but it could not be read: {why}")
            }
            (Some(Ok(_)), Some(Ok(a))) => {
                // Only a fault has an address (set above from the signal's
                // own siginfo); the dump adds the file it lies in.
                if let Some(fault) = self.fault.as_mut() {
                    fault.file = a.fault_file;
                }
                self.backtrace = a.crashing.map(|t| t.frames).unwrap_or_default();
                self.threads = a.others;
                format!(
                    "captured in the worker (minidump, {}), unwound and symbolized with the binary's own debug info",
                    a.reason.as_deref().unwrap_or("no exception record")
                )
            }
        };
        self
    }

    /// The innermost frames in one line, for the journal.
    pub fn top_frames(&self, n: usize) -> String {
        self.backtrace
            .iter()
            .take(n)
            .map(Frame::one_line)
            .collect::<Vec<_>>()
            .join(" < ")
    }
}

/// This build, as reports name it.
pub fn build() -> String {
    format!(
        "llama-router {} (backends: {}; {})",
        env!("CARGO_PKG_VERSION"),
        env!("ROUTER_BUILD_BACKENDS"),
        env!("ROUTER_LLAMA_CPP")
    )
}

/// Why a crash report could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    /// The reports' directory cannot be trusted or made.
    #[error(transparent)]
    Dir(#[from] crate::runtime_dir::RuntimeDirError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A report is not valid JSON of the known format.
    #[error("{}: not a crash report: {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// No report has this id.
    #[error("no crash report {0:?}")]
    NotFound(String),
    /// An id that cannot be one (ids are letters, digits and `-`).
    #[error("{0:?} is not a crash report id")]
    BadId(String),
    /// The task reading or writing the store panicked.
    #[error("the crash store's task failed: {0}")]
    Task(String),
}

#[cfg(test)]
mod tests;
