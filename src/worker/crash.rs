//! A crashed worker becomes a crash report: what the daemon saw (how it
//! ended, its stderr, its model and settings) written to the crash store.

use std::path::PathBuf;
use std::time::SystemTime;

use super::exit::WorkerExit;
use crate::crashes::{Captured, CrashExit, CrashFacts, CrashReport, CrashStore};
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
    pub(super) captured: Captured,
}

/// Frames the journal event names.
const TOP_FRAMES: usize = 5;

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

/// Writes the report of `crashed` to `store` (its minidump symbolized and
/// the file written off the async threads) and returns its id and top
/// frames; a report that cannot be written is logged, never fatal.
pub(super) async fn record(store: &CrashStore, crashed: Crashed<'_>) -> Option<(String, String)> {
    let exit = crash_exit(crashed.exit, crashed.reason)?;
    // A fault's address; none for a signal another process sent.
    let fault_address = crashed
        .captured
        .siginfo
        .filter(|s| s.code > 0)
        .map(|s| s.addr);
    let analysis = match &crashed.captured.minidump {
        Some(Ok(path)) => {
            let path = path.clone();
            let runtime = tokio::runtime::Handle::current();
            let analyzed = tokio::task::spawn_blocking(move || {
                runtime.block_on(crate::crashes::analyze::analyze(&path, fault_address))
            })
            .await;
            Some(analyzed.unwrap_or_else(|e| Err(format!("the analysis panicked: {e}"))))
        }
        _ => None,
    };
    let report = CrashReport::from_facts(CrashFacts {
        model: crashed.model.to_owned(),
        files: crashed.files.to_vec(),
        worker_pid: crashed.pid,
        settings: crashed.settings,
        exit,
        stderr: crashed.stderr,
        requests: crashed.requests,
        at: SystemTime::now(),
    })
    .with_capture(crashed.captured, analysis);
    let id = report.id.clone();
    let top = report.top_frames(TOP_FRAMES);
    match store.off_thread(move |s| s.write(&report)).await {
        Ok(()) => Some((id, top)),
        Err(e) => {
            tracing::error!(model = %crashed.model, error = %e, "cannot store the crash report of {}'s worker: {e}", crashed.model);
            None
        }
    }
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
