//! How a model's worker runs, as the configuration resolves it.

use std::time::Duration;

use crate::params::ModelParams;

/// How workers run (from the config; applies to workers started after a
/// reload): the engine settings, plus how the daemon controls the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerSettings {
    /// The model's engine settings, resolved (`ModelProfiles::worker`).
    pub params: ModelParams,
    /// Requests that may wait for a free sequence.
    pub queue: usize,
    /// Grace period for in-flight requests when a worker stops.
    pub stop_timeout: Duration,
    /// How long the worker process may take to answer a liveness ping.
    pub ping_timeout: Duration,
    /// How long one decode step may run before the engine counts as stuck.
    pub step_timeout: Duration,
    /// How long a worker may take to load its model and answer.
    pub start_timeout: Duration,
}
