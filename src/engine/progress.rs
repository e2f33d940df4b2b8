//! What the decode thread publishes about itself for liveness: how many
//! steps it has finished, when the current one began, and how many requests
//! it holds. Written by the decode thread, read by the Ping RPC without
//! waiting on it, so a long but moving step is told apart from a stuck one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared between the decode thread and the handles.
#[derive(Debug)]
pub(super) struct Progress {
    /// Reference point of the `*_ms` fields (they hold "ms since origin + 1").
    origin: Instant,
    steps: AtomicU64,
    /// When the running step began; 0 while the thread waits for work.
    step_started_ms: AtomicU64,
    /// The running step is one-time preparation (a context's first use):
    /// judged by the start-up limit, as GPU backends compile kernels then.
    warming: AtomicBool,
    active: AtomicU32,
    queued: AtomicU32,
    stopped: AtomicBool,
}

/// One reading of [`Progress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Steps finished since the engine started.
    pub steps: u64,
    /// How long the running step has taken so far; zero while idle.
    pub step_running: Duration,
    /// The running step is one-time preparation, not a decode step.
    pub warming: bool,
    /// Sequences decoding.
    pub active: u32,
    /// Requests waiting for a sequence (generations and embedding batches).
    pub queued: u32,
}

impl Progress {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Progress {
            origin: Instant::now(),
            steps: AtomicU64::new(0),
            step_started_ms: AtomicU64::new(0),
            warming: AtomicBool::new(false),
            active: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            stopped: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The previous step (if any) is done and another begins now.
    pub(super) fn step(&self, active: usize, queued: usize) {
        if self.step_started_ms.load(Ordering::Relaxed) != 0 {
            self.steps.fetch_add(1, Ordering::Relaxed);
        }
        self.active
            .store(u32::try_from(active).unwrap_or(u32::MAX), Ordering::Relaxed);
        self.queued
            .store(u32::try_from(queued).unwrap_or(u32::MAX), Ordering::Relaxed);
        self.step_started_ms.store(self.now_ms(), Ordering::Release);
    }

    /// One-time preparation begins (`true`) inside the running step, or has
    /// ended (`false`): the step's clock restarts, so the preparation is
    /// never counted against the per-step limit.
    pub(super) fn warming(&self, on: bool) {
        self.warming.store(on, Ordering::Release);
        self.step_started_ms.store(self.now_ms(), Ordering::Release);
    }

    /// The last step is done and the thread waits for work (no clock runs).
    pub(super) fn idle(&self) {
        if self.step_started_ms.swap(0, Ordering::AcqRel) != 0 {
            self.steps.fetch_add(1, Ordering::Relaxed);
        }
        self.active.store(0, Ordering::Relaxed);
        self.queued.store(0, Ordering::Relaxed);
    }

    /// The decode thread has ended.
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// None once the decode thread has ended.
    pub(super) fn read(&self) -> Option<Liveness> {
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        let started = self.step_started_ms.load(Ordering::Acquire);
        let step_running = if started == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(self.now_ms().saturating_sub(started))
        };
        Some(Liveness {
            steps: self.steps.load(Ordering::Relaxed),
            step_running,
            warming: self.warming.load(Ordering::Acquire),
            active: self.active.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        })
    }
}

/// Marks the engine stopped when the decode thread ends, however it ends
/// (a panic included), so pings fail instead of reporting a frozen step.
pub(super) struct StopOnDrop(pub(super) Arc<Progress>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_count_and_the_running_step_has_a_clock_only_while_busy() {
        let p = Progress::new();
        assert_eq!(p.read().unwrap(), Liveness::default());
        p.step(2, 1);
        std::thread::sleep(Duration::from_millis(20));
        let busy = p.read().unwrap();
        assert_eq!((busy.steps, busy.active, busy.queued), (0, 2, 1));
        assert!(busy.step_running >= Duration::from_millis(20), "{busy:?}");
        p.warming(true);
        assert!(p.read().unwrap().warming);
        p.warming(false);
        assert!(!p.read().unwrap().warming);
        p.step(2, 0);
        assert_eq!(p.read().unwrap().steps, 1);
        assert!(p.read().unwrap().step_running < Duration::from_millis(20));
        p.idle();
        let idle = p.read().unwrap();
        assert_eq!((idle.steps, idle.step_running), (2, Duration::ZERO));
        drop(StopOnDrop(p.clone()));
        assert_eq!(p.read(), None);
    }
}
