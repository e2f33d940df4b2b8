//! How a worker process ended, typed. The supervisor counts crashes by it,
//! a request broken mid-stream explains itself with it, and its words are
//! the reason users read in a model's `failed` state and in the journal.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use crate::util::describe_signal;

/// Why a worker is no more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerExit {
    /// Stopped on purpose: its model was unloaded.
    Stopped,
    /// It exited by itself with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it left a core dump.
        core_dumped: bool,
    },
    /// It stopped making progress or answering; it was killed.
    Hung(Hang),
    /// It did not load its model and answer within `worker_start_timeout`.
    StartTimeout(Duration),
    /// It wrote more output than a worker may; it was killed.
    Flooded(Flood),
    /// It could not be started at all.
    SpawnFailed {
        /// The program (with its wrapper, if any).
        program: String,
        /// What the OS said.
        error: String,
    },
    /// It started but its socket could not be reached.
    NoSocket(String),
    /// Waiting for it failed, so how it ended is unknown.
    Lost(String),
}

impl WorkerExit {
    /// How a process with `status` ended.
    pub fn of_status(status: ExitStatus) -> Self {
        if let Some(signal) = status.signal() {
            return WorkerExit::Signaled {
                signal,
                core_dumped: status.core_dumped(),
            };
        }
        match status.code() {
            Some(code) => WorkerExit::Exited { code },
            None => WorkerExit::Lost(format!("it ended with status {status}")),
        }
    }

    /// Crashed, hung or failed to start, rather than stopped on purpose.
    pub fn is_crash(&self) -> bool {
        *self != WorkerExit::Stopped
    }

    /// The name of the signal that ended it (`SIGSEGV`), when one did.
    pub fn signal_name(&self) -> Option<&'static str> {
        match *self {
            WorkerExit::Signaled { signal, .. } => crate::util::signal_name(signal),
            _ => None,
        }
    }
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerExit::Stopped => f.write_str("worker stopped: its model was unloaded"),
            WorkerExit::Exited { code } => write!(f, "worker exited with code {code}"),
            WorkerExit::Signaled {
                signal,
                core_dumped,
            } => f.write_str(&describe_signal("worker", *signal, *core_dumped)),
            WorkerExit::Hung(hang) => hang.fmt(f),
            WorkerExit::StartTimeout(limit) => {
                write!(f, "worker did not start within {} s", limit.as_secs())
            }
            WorkerExit::Flooded(flood) => flood.fmt(f),
            WorkerExit::SpawnFailed { program, error } => {
                write!(f, "cannot start the worker {program}: {error}")
            }
            WorkerExit::NoSocket(error) => {
                write!(f, "cannot connect to the worker's socket: {error}")
            }
            WorkerExit::Lost(error) => write!(f, "lost track of the worker: {error}"),
        }
    }
}

/// How a worker showed it hung.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hang {
    /// Its engine spent too long on one step (or on preparing a context).
    Step {
        /// Preparing a context (warm-up), not decoding.
        preparing: bool,
        /// How long the step had run.
        running: Duration,
        /// The limit it passed (`worker_start_timeout` or `worker_step_timeout`).
        limit: Duration,
        /// Steps it had completed.
        steps: u64,
    },
    /// No answer to a liveness ping within this.
    PingTimeout(Duration),
    /// Its pings kept failing; the last error.
    PingErrors(String),
}

impl fmt::Display for Hang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hang::Step {
                preparing,
                running,
                limit,
                steps,
            } => {
                let (what, key) = if *preparing {
                    ("preparing a context", "worker_start_timeout")
                } else {
                    ("in one decode step", "worker_step_timeout")
                };
                write!(
                    f,
                    "worker hung: its engine has been {what} for {:.1} s ({key} {} s, after {steps} steps); killed",
                    running.as_secs_f64(),
                    limit.as_secs_f64(),
                )
            }
            Hang::PingTimeout(limit) => write!(
                f,
                "worker hung: no answer to a liveness ping within {} s; killed",
                limit.as_secs_f64()
            ),
            Hang::PingErrors(error) => {
                write!(f, "worker stopped answering liveness pings: {error}")
            }
        }
    }
}

/// A worker's output past its bound within one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// The bound it passed.
    pub limit: FloodLimit,
    /// The period the bound is per.
    pub period: Duration,
}

/// Which output bound a worker passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodLimit {
    /// Bytes.
    Bytes(u64),
    /// Lines.
    Lines(u64),
}

impl fmt::Display for Flood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.period.as_secs();
        match self.limit {
            FloodLimit::Bytes(limit) => write!(
                f,
                "worker killed: it wrote more than {} MiB of output in {secs} s",
                limit >> 20
            ),
            FloodLimit::Lines(limit) => write!(
                f,
                "worker killed: it wrote more than {limit} lines of output in {secs} s"
            ),
        }
    }
}

/// How a worker ended, with the last lines it wrote to stderr (for a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEnded {
    /// How.
    pub exit: WorkerExit,
    /// Its last stderr lines, each cut for quoting; empty after a clean stop.
    pub last_stderr: Vec<String>,
    /// The crash report written for it (`llama-router crashes show ID`).
    pub crash_id: Option<String>,
}

impl WorkerEnded {
    /// Crashed, hung or failed to start, rather than stopped on purpose.
    pub fn crashed(&self) -> bool {
        self.exit.is_crash()
    }
}

impl From<WorkerExit> for WorkerEnded {
    fn from(exit: WorkerExit) -> Self {
        WorkerEnded {
            exit,
            last_stderr: Vec::new(),
            crash_id: None,
        }
    }
}

impl fmt::Display for WorkerEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.exit.fmt(f)?;
        if !self.last_stderr.is_empty() {
            write!(f, "; last stderr: {}", self.last_stderr.join(" | "))?;
        }
        if let Some(id) = &self.crash_id {
            write!(f, "; crash report {id}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_users_have_always_seen_them() {
        let cases = [
            (WorkerExit::Exited { code: 3 }, "worker exited with code 3"),
            (
                WorkerExit::Signaled {
                    signal: libc::SIGSEGV,
                    core_dumped: true,
                },
                "worker killed by SIGSEGV (core dumped)",
            ),
            (
                WorkerExit::Signaled {
                    signal: libc::SIGKILL,
                    core_dumped: false,
                },
                "worker killed by SIGKILL (by the out-of-memory killer or an operator)",
            ),
            (
                WorkerExit::StartTimeout(Duration::from_secs(2)),
                "worker did not start within 2 s",
            ),
            (
                WorkerExit::Hung(Hang::PingTimeout(Duration::from_secs(5))),
                "worker hung: no answer to a liveness ping within 5 s; killed",
            ),
            (
                WorkerExit::Flooded(Flood {
                    limit: FloodLimit::Lines(1000),
                    period: Duration::from_secs(10),
                }),
                "worker killed: it wrote more than 1000 lines of output in 10 s",
            ),
        ];
        for (exit, words) in cases {
            assert_eq!(exit.to_string(), words);
            assert!(exit.is_crash());
        }
        assert!(!WorkerExit::Stopped.is_crash());
    }

    #[test]
    fn a_crash_quotes_the_last_stderr_lines() {
        let mut ended = WorkerEnded {
            exit: WorkerExit::Exited { code: 1 },
            last_stderr: vec!["a".into(), "b".into()],
            crash_id: None,
        };
        assert_eq!(
            ended.to_string(),
            "worker exited with code 1; last stderr: a | b"
        );
        assert!(ended.crashed());
        ended.crash_id = Some("20261201T000000Z-7".into());
        assert!(
            ended
                .to_string()
                .ends_with("; crash report 20261201T000000Z-7")
        );
        assert_eq!(
            WorkerEnded::from(WorkerExit::Stopped).to_string(),
            "worker stopped: its model was unloaded"
        );
    }

    #[test]
    fn statuses_become_exits() {
        let exited = ExitStatus::from_raw(3 << 8);
        assert_eq!(
            WorkerExit::of_status(exited),
            WorkerExit::Exited { code: 3 }
        );
        let killed = ExitStatus::from_raw(libc::SIGABRT | 0x80);
        assert_eq!(
            WorkerExit::of_status(killed),
            WorkerExit::Signaled {
                signal: libc::SIGABRT,
                core_dumped: true
            }
        );
    }
}
