//! What the daemon and its workers hold during a round, read from `/proc`:
//! resident memory and open descriptors. A sampler thread (off the client
//! runtime, so 1,000 busy clients do not delay it) polls both; the peak
//! resident size is also read from `VmHWM`, reset at the start of each round
//! through `/proc/PID/clear_refs` so that rounds can be compared.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the sampler looks.
const EVERY: Duration = Duration::from_millis(200);

/// Peaks of one process over a round.
#[derive(Debug, Default, Clone, Copy)]
pub struct Peak {
    /// Peak resident set, KiB.
    pub rss_kib: u64,
    /// Most open descriptors seen.
    pub fds: usize,
}

/// Peaks of the daemon and of each worker pid seen during a round.
#[derive(Debug, Default, Clone)]
pub struct Peaks {
    pub daemon: Peak,
    pub workers: BTreeMap<u32, Peak>,
    /// Whether `VmHWM` could be reset (else the peaks are sampled `VmRSS` only).
    pub hwm_reset: bool,
}

impl Peaks {
    /// The workers' peaks added up (one model: one worker, unless it restarted).
    pub fn workers_rss_kib(&self) -> u64 {
        self.workers.values().map(|p| p.rss_kib).sum()
    }

    pub fn workers_fds(&self) -> usize {
        self.workers.values().map(|p| p.fds).max().unwrap_or(0)
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The daemon's children (its workers), from the ppid field of `/proc/*/stat`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // `pid (comm) state ppid ...`; comm may hold spaces and parens.
                    let rest = s.get(s.rfind(')')? + 1..)?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Resets `VmHWM` to the current resident size (Linux 4.0+; own processes).
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn observe(peak: &mut Peak, pid: u32, hwm: bool) {
    let field = if hwm { "VmHWM" } else { "VmRSS" };
    if let Some(kib) = status_kib(pid, field) {
        peak.rss_kib = peak.rss_kib.max(kib);
    }
    if let Some(n) = fd_count(pid) {
        peak.fds = peak.fds.max(n);
    }
}

/// A running sampler; `stop` returns what it saw.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Peaks>,
}

impl Sampler {
    /// Resets the peaks of the daemon `pid` and its workers and starts sampling.
    pub fn start(pid: u32) -> Sampler {
        let mut hwm_reset = reset_hwm(pid);
        for child in children(pid) {
            hwm_reset &= reset_hwm(child);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks {
                hwm_reset,
                ..Peaks::default()
            };
            loop {
                let last = flag.load(Ordering::Relaxed);
                observe(&mut peaks.daemon, pid, false);
                for child in children(pid) {
                    observe(peaks.workers.entry(child).or_default(), child, false);
                }
                if last {
                    break;
                }
                std::thread::sleep(EVERY);
            }
            if peaks.hwm_reset {
                observe(&mut peaks.daemon, pid, true);
                for (child, peak) in &mut peaks.workers {
                    observe(peak, *child, true);
                }
            }
            peaks
        });
        Sampler { stop, thread }
    }

    pub fn stop(self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
