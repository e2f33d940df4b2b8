//! A crashed worker becomes a crash report: what the daemon saw (how it
//! ended, its stderr, its model and settings) written to the crash store.

use std::path::PathBuf;
use std::time::SystemTime;

use super::exit::{WorkerEnded, WorkerExit};
use crate::crashes::{CaptureServer, Captured, CrashExit, CrashFacts, CrashReport, CrashStore};
use crate::params::ModelParams;

/// The worker a report is about.
pub(super) struct Crashed<'a> {
    pub(super) model: &'a str,
    pub(super) files: &'a [PathBuf],
    pub(super) pid: u32,
    pub(super) settings: ModelParams,
    pub(super) exit: &'a WorkerExit,
    pub(super) reason: String,
    pub(super) stderr: Vec<String>,
    pub(super) requests: Vec<crate::crashes::CrashRequest>,
    pub(super) captured: &'a Captured,
    pub(super) devices: Vec<String>,
}

/// Frames the journal event names.
const TOP_FRAMES: usize = 5;

/// How long symbolizing a minidump may take (it runs after the model has
/// been told how its worker ended; the report is completed then).
const ANALYSIS_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How `exit` reads in a report; None when it is no crash a report is kept
/// for (a kill from outside, a hang, a clean exit).
fn crash_exit(exit: &WorkerExit, reason: String) -> Option<CrashExit> {
    let report = match *exit {
        WorkerExit::Signaled {
            signal,
            core_dumped,
        } => CrashExit {
            signal: Some(signal),
            signal_name: exit.signal_name().map(str::to_owned),
            core_dumped,
            code: None,
            reason,
        },
        WorkerExit::Exited { code } => CrashExit {
            signal: None,
            signal_name: None,
            core_dumped: false,
            code: Some(code),
            reason,
        },
        _ => return None,
    };
    report.is_crash().then_some(report)
}

/// Writes the report of `crashed` to `store` at once, with what capture
/// told about the signal but without its backtrace, and returns it (None
/// when it is no crash a report is kept for, or it cannot be written: that
/// is logged, never fatal). [`symbolize`] completes it.
pub(super) async fn record(store: &CrashStore, crashed: Crashed<'_>) -> Option<CrashReport> {
    let exit = crash_exit(crashed.exit, crashed.reason)?;
    let has_dump = matches!(crashed.captured.minidump, Some(Ok(_)));
    let mut report = CrashReport::from_facts(CrashFacts {
        model: crashed.model.to_owned(),
        files: crashed.files.to_vec(),
        worker_pid: crashed.pid,
        settings: crashed.settings,
        exit,
        stderr: crashed.stderr,
        requests: crashed.requests,
        devices: crashed.devices,
        at: SystemTime::now(),
    })
    .with_capture(crashed.captured, None);
    if has_dump {
        report.capture =
            "captured in the worker (minidump); its stacks are being symbolized".into();
    }
    let stored = report.clone();
    match store.off_thread(move |s| s.write(&stored)).await {
        Ok(()) => Some(report),
        Err(e) => {
            tracing::error!(model = %crashed.model, error = %e, "cannot store the crash report of {}'s worker: {e}", crashed.model);
            None
        }
    }
}

/// The crash capture server of one worker start (its socket and dump
/// paths given); none, with a warning, when it cannot listen.
pub(super) fn capture_server(model: &str, socket: PathBuf, dump: PathBuf) -> Option<CaptureServer> {
    CaptureServer::start(socket, dump)
        .map_err(|e| tracing::warn!(model = %model, error = %e, "no crash capture for {model}'s worker: {e}"))
        .ok()
}

/// The devices discovery found, as a crash report names them.
pub(super) fn device_names(gpus: &crate::gpu::devices::GpuSet) -> Vec<String> {
    gpus.devices()
        .iter()
        .map(|g| {
            let d = &g.device;
            let target = if d.usable {
                "offload target"
            } else {
                "not an offload target"
            };
            format!("{}, {}, {target}", g.label(), d.kind.name())
        })
        .collect()
}

/// A stored report still to be completed with its worker's minidump.
pub(super) struct Pending {
    pub(super) store: CrashStore,
    pub(super) report: CrashReport,
    pub(super) captured: Captured,
}

/// The crash's one ERROR event, logged once `pending` (if any) is
/// symbolized, so that it carries the top frames; off the caller's path:
/// the model has already learned how its worker ended.
pub(super) fn log_when_symbolized(
    pending: Option<Pending>,
    failed: WorkerEnded,
    model: String,
    pid: u32,
    stderr: String,
) {
    tokio::spawn(async move {
        let top_frames = match pending {
            Some(p) => symbolize(&p.store, p.report, p.captured).await,
            None => String::new(),
        };
        let signal = failed.exit.signal_name().unwrap_or_default();
        tracing::error!(
            model = %model,
            worker_pid = pid,
            error = %failed,
            stderr = %stderr,
            crash_id = failed.crash_id.as_deref().unwrap_or_default(),
            signal,
            top_frames = %top_frames,
            "worker for {model} failed: {failed}"
        );
    });
}

/// Completes `report` with its worker's minidump (stacks unwound and
/// symbolized, bounded by [`ANALYSIS_LIMIT`]), rewrites it, and returns its
/// top frames for the journal.
pub(super) async fn symbolize(
    store: &CrashStore,
    report: CrashReport,
    mut captured: Captured,
) -> String {
    let Some(Ok(dump)) = captured.minidump.as_mut() else {
        return String::new();
    };
    // The blocking task takes the bytes (no copy of a dump of megabytes);
    // `captured` still says that there was one, all `with_analysis` reads.
    let dump = std::mem::take(dump);
    // A fault's address; none for a signal another process sent.
    let fault_address = captured.siginfo.filter(|s| s.code > 0).map(|s| s.addr);
    let runtime = tokio::runtime::Handle::current();
    let analyzed = tokio::task::spawn_blocking(move || {
        runtime.block_on(async {
            tokio::time::timeout(
                ANALYSIS_LIMIT,
                crate::crashes::analyze::analyze(dump, fault_address),
            )
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "symbolizing took longer than {} s",
                    ANALYSIS_LIMIT.as_secs()
                ))
            })
        })
    })
    .await
    .unwrap_or_else(|e| Err(format!("the analysis panicked: {e}")));
    // The signal's part is in the report already (written at the crash).
    let report = report.with_analysis(&captured, Some(analyzed));
    let top = report.top_frames(TOP_FRAMES);
    let model = report.model.clone();
    if let Err(e) = store.off_thread(move |s| s.update(&report)).await {
        tracing::error!(model = %model, error = %e, "cannot complete the crash report of {model}'s worker: {e}");
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_faults_and_panics_become_reports() {
        let segv = WorkerExit::Signaled {
            signal: libc::SIGBUS,
            core_dumped: true,
        };
        let exit = crash_exit(&segv, "worker killed by SIGBUS".into()).unwrap();
        assert_eq!(exit.signal_name.as_deref(), Some("SIGBUS"));
        assert!(exit.core_dumped);
        assert!(crash_exit(&WorkerExit::Exited { code: 101 }, String::new()).is_some());
        let kill = WorkerExit::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false,
        };
        assert!(crash_exit(&kill, String::new()).is_none());
        assert!(crash_exit(&WorkerExit::Exited { code: 1 }, String::new()).is_none());
        assert!(crash_exit(&WorkerExit::Stopped, String::new()).is_none());
    }
}
