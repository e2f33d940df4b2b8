//! Crash reports over gRPC: the store's reports as `pb` messages, and its
//! errors as statuses.

use tonic::Status;

use crate::crashes::{CrashError, CrashReport, CrashStore};
use crate::proto::pb;

/// The short form of `report`.
pub fn summary(report: &CrashReport) -> pb::CrashSummary {
    pb::CrashSummary {
        id: report.id.clone(),
        time: report.time.clone(),
        model: report.model.clone(),
        worker_pid: report.worker_pid,
        signal: report.exit.signal_name.clone().unwrap_or_default(),
        exit_code: report.exit.code,
        reason: report.exit.reason.clone(),
    }
}

/// `report` whole: its summary and its JSON.
pub fn report(report: &CrashReport) -> Result<pb::CrashReport, Status> {
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| Status::internal(format!("cannot encode the crash report: {e}")))?;
    Ok(pb::CrashReport {
        summary: Some(summary(report)),
        json,
    })
}

/// The store, or why there is none.
pub fn store(store: Option<&CrashStore>) -> Result<&CrashStore, Status> {
    store.ok_or_else(|| {
        Status::failed_precondition(
            "crash reports are off: the daemon has no directory for them (set crash_dir)",
        )
    })
}

/// A store error as the client should see it.
pub fn status(e: CrashError) -> Status {
    match e {
        CrashError::NotFound(_) => Status::not_found(e.to_string()),
        CrashError::BadId(_) => Status::invalid_argument(e.to_string()),
        CrashError::Dir(_)
        | CrashError::Io { .. }
        | CrashError::Format { .. }
        | CrashError::Task(_) => Status::internal(e.to_string()),
    }
}
