//! A crashed worker becomes a crash report: what the daemon saw (how it
//! ended, its stderr, its model and settings) written to the crash store.

use std::path::PathBuf;
use std::time::SystemTime;

use super::exit::WorkerExit;
use crate::crashes::{CrashExit, CrashFacts, CrashReport, CrashStore};
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
}

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

/// Writes the report of `crashed` to `store` (off the async threads) and
/// returns its id; a report that cannot be written is logged, never fatal.
pub(super) async fn record(store: &CrashStore, crashed: Crashed<'_>) -> Option<String> {
    let exit = crash_exit(crashed.exit, crashed.reason)?;
    let report = CrashReport::from_facts(CrashFacts {
        model: crashed.model.to_owned(),
        files: crashed.files.to_vec(),
        worker_pid: crashed.pid,
        settings: crashed.settings,
        exit,
        stderr: crashed.stderr,
        requests: crashed.requests,
        at: SystemTime::now(),
    });
    let id = report.id.clone();
    match store.off_thread(move |s| s.write(&report)).await {
        Ok(()) => Some(id),
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
