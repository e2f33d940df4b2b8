//! The catalog actor: owns the list of models in `--models-dir` and keeps it
//! current (inotify with a debounce, a scan every minute for what inotify
//! cannot see, `Rescan`, SIGHUP).
//!
//! Snapshots are published on a `watch` channel; the supervisor reconciles
//! its models against each new one. A scan that cannot read the directory
//! (EMFILE, EACCES, EIO, the directory renamed away) keeps the previous list,
//! says why in [`Snapshot::problem`], warns and retries with back-off: only a
//! scan that read the directory removes models.

mod layout;
pub mod scan;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::gguf::HeaderLimits;
pub use scan::{CatalogEntry, HeaderCache, ScanError, ScanResult};

/// How often the actor checks whether a missing directory has appeared.
const DIR_POLL: Duration = Duration::from_secs(2);
/// How often the directory is scanned with no event to prompt it: inotify
/// sees no change another NFS, CIFS or FUSE client makes. A scan of unchanged
/// files costs one `stat` each (~5 ms for 1,000 models).
const SAFETY_RESCAN: Duration = Duration::from_secs(60);
/// First retry after a scan that could not read everything; doubled each time.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between retries: a directory that stays unreadable costs one
/// cheap listing a minute.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The models directory's contents at one point in time.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Increases with every change.
    pub generation: u64,
    /// Whether the directory exists.
    pub dir_exists: bool,
    /// Models, sorted by id.
    pub entries: Vec<CatalogEntry>,
    /// Why the last scan could not list the directory; `entries` are then
    /// the last list a scan could read.
    pub problem: Option<String>,
}

/// The catalog actor has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the catalog actor has stopped")]
pub struct CatalogStopped;

enum Msg {
    Rescan(oneshot::Sender<Arc<Snapshot>>),
    Ping(oneshot::Sender<()>),
}

/// Talks to the catalog actor; cheap to clone.
#[derive(Clone)]
pub struct CatalogHandle {
    tx: mpsc::Sender<Msg>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    scans: Arc<AtomicU64>,
}

impl CatalogHandle {
    /// Starts the actor on `root`, reading headers within `caps`; the first
    /// snapshot comes from `rescan`.
    pub fn spawn(root: PathBuf, debounce: Duration, caps: HeaderLimits) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let (snap_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let scans = Arc::new(AtomicU64::new(0));
        let actor = CatalogActor {
            root,
            debounce,
            caps,
            cache: HeaderCache::default(),
            snapshots: snap_tx,
            watcher: None,
            retry: RETRY_FIRST,
            problems: Vec::new(),
            scans: scans.clone(),
        };
        tokio::spawn(actor.run(rx));
        CatalogHandle {
            tx,
            snapshots,
            scans,
        }
    }

    /// How many times the directory has been scanned since the start.
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    /// Scans now and returns the resulting snapshot (also published).
    pub async fn rescan(&self) -> Result<Arc<Snapshot>, CatalogStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Rescan(reply))
            .await
            .map_err(|_| CatalogStopped)?;
        rx.await.map_err(|_| CatalogStopped)
    }

    /// Answers once the actor has handled everything sent before (liveness probe).
    pub async fn ping(&self) -> Result<(), CatalogStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Ping(reply))
            .await
            .map_err(|_| CatalogStopped)?;
        rx.await.map_err(|_| CatalogStopped)
    }

    /// New snapshots as they are published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }
}

struct CatalogActor {
    root: PathBuf,
    debounce: Duration,
    caps: HeaderLimits,
    cache: HeaderCache,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// The watch, and the directory it is on: inotify follows an inode, so a
    /// directory renamed over the path (or a symlink retargeted) needs a new one.
    watcher: Option<(RecommendedWatcher, DirId)>,
    /// Wait before the next retry while scans keep failing.
    retry: Duration,
    /// What the last scan could not read (warned about once, not every retry).
    problems: Vec<String>,
    scans: Arc<AtomicU64>,
}

impl CatalogActor {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let (fs_tx, mut fs_rx) = mpsc::channel::<()>(1);
        let mut poll = tokio::time::interval(DIR_POLL);
        let mut safety = tokio::time::interval_at(Instant::now() + SAFETY_RESCAN, SAFETY_RESCAN);
        safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rescan_at: Option<Instant> = None;
        loop {
            let deadline = rescan_at;
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => break,
                    Some(Msg::Rescan(reply)) => {
                        let snapshot = self.scan(&mut rescan_at).await;
                        let _ = reply.send(snapshot);
                    }
                    Some(Msg::Ping(reply)) => {
                        let _ = reply.send(());
                    }
                },
                Some(()) = fs_rx.recv() => {
                    // Coalesce a burst of events into one scan after it settles.
                    rescan_at = Some(Instant::now() + self.debounce);
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    rescan_at = None;
                    self.scan(&mut rescan_at).await;
                }
                _ = poll.tick() => self.check_watch(&fs_tx, &mut rescan_at),
                _ = safety.tick() => due(&mut rescan_at, Duration::ZERO),
            }
        }
    }

    /// Starts watching when the directory appears; notices when it goes away.
    fn check_watch(&mut self, fs_tx: &mpsc::Sender<()>, rescan_at: &mut Option<Instant>) {
        let dir = DirId::of(&self.root);
        if let (Some((_, watched)), Some(now)) = (&self.watcher, dir)
            && *watched != now
        {
            tracing::info!(dir = %self.root.display(), "the models directory was replaced; watching the new one");
            self.watcher = None;
        }
        match (&self.watcher, dir) {
            (None, Some(now)) => {
                let tx = fs_tx.clone();
                let watcher =
                    notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                        if res.as_ref().is_ok_and(|event| !may_change_the_list(&event.kind)) {
                            return;
                        }
                        if let Err(e) = &res {
                            // Events may have been lost (queue overflow): look again.
                            tracing::warn!(error = %e, "the models directory watch reported an error; rescanning");
                        }
                        // Full means a scan is already due; dropping is fine.
                        let _ = tx.try_send(());
                    })
                    .and_then(|mut w| w.watch(&self.root, RecursiveMode::Recursive).map(|()| w));
                match watcher {
                    Ok(w) => {
                        tracing::info!(dir = %self.root.display(), "watching the models directory");
                        self.watcher = Some((w, now));
                        *rescan_at = Some(Instant::now());
                    }
                    Err(e) => {
                        tracing::warn!(dir = %self.root.display(), error = %e, "cannot watch the models directory; will retry")
                    }
                }
            }
            (Some(_), None) => {
                tracing::warn!(dir = %self.root.display(), "the models directory disappeared; keeping its models listed and waiting for it to come back");
                self.watcher = None;
                *rescan_at = Some(Instant::now());
            }
            _ => {}
        }
    }

    async fn scan(&mut self, rescan_at: &mut Option<Instant>) -> Arc<Snapshot> {
        self.scans.fetch_add(1, Ordering::Relaxed);
        let root = self.root.clone();
        let settle = self.debounce;
        let caps = self.caps;
        let current = self.snapshots.borrow().clone();
        let last = current.clone();
        let mut cache = std::mem::take(&mut self.cache);
        let scanned = tokio::task::spawn_blocking(move || {
            let result = scan::scan(&root, &last.entries, &mut cache, settle, &caps);
            (result, cache, root.is_dir())
        })
        .await;
        let (result, dir_exists) = match scanned {
            Ok((result, cache, exists)) => {
                self.cache = cache;
                (result, exists)
            }
            Err(e) => {
                tracing::error!(error = %e, "catalog scan panicked; keeping the previous list");
                self.retry_later(vec![format!("the scan panicked: {e}")], rescan_at);
                return current;
            }
        };
        let (entries, problem) = match result {
            Ok(result) => {
                if result.pending {
                    // A file is still being written: look again once it may have settled.
                    due(rescan_at, self.debounce);
                }
                self.retry_later(result.problems, rescan_at);
                (result.entries, None)
            }
            Err(e) => {
                let problem = format!(
                    "{e}; keeping the last list ({} models) and retrying",
                    current.entries.len()
                );
                self.retry_later(vec![problem.clone()], rescan_at);
                (current.entries.clone(), Some(problem))
            }
        };
        warn_invalid(&current.entries, &entries);
        if current.entries == entries
            && current.dir_exists == dir_exists
            && current.problem == problem
            && current.generation > 0
        {
            return current;
        }
        let snapshot = Arc::new(Snapshot {
            generation: current.generation.saturating_add(1),
            dir_exists,
            entries,
            problem,
        });
        tracing::debug!(
            models = snapshot.entries.len(),
            generation = snapshot.generation,
            "catalog updated"
        );
        self.snapshots.send_replace(snapshot.clone());
        snapshot
    }
}

/// Logs each model whose files fail validation once per change (a new file,
/// or a changed one that still fails): at WARNING, with the model and why.
fn warn_invalid(previous: &[CatalogEntry], now: &[CatalogEntry]) {
    for entry in now {
        let Err(reason) = &entry.info else {
            continue;
        };
        let seen = previous
            .iter()
            .any(|p| p.id == entry.id && p.fingerprint == entry.fingerprint && p.info.is_err());
        if !seen {
            tracing::warn!(model = %entry.id, error = %reason, "model {} cannot be used: {reason}", entry.id);
        }
    }
}

impl CatalogActor {
    /// Schedules a retry with back-off while `problems` is not empty, and
    /// warns when what could not be read changes.
    fn retry_later(&mut self, problems: Vec<String>, rescan_at: &mut Option<Instant>) {
        if problems.is_empty() {
            if !self.problems.is_empty() {
                tracing::info!(dir = %self.root.display(), "the models directory reads cleanly again");
            }
            self.retry = RETRY_FIRST;
            self.problems = problems;
            return;
        }
        if problems != self.problems {
            for p in &problems {
                tracing::warn!(dir = %self.root.display(), retry_in_s = self.retry.as_secs(), "catalog scan: {p}");
            }
        } else {
            tracing::debug!(dir = %self.root.display(), problems = problems.len(), retry_in_s = self.retry.as_secs(), "catalog scan still incomplete");
        }
        due(rescan_at, self.retry);
        self.retry = self.retry.saturating_mul(2).min(RETRY_MAX);
        self.problems = problems;
    }
}

/// Which directory a path names now (device and inode, through symlinks);
/// None when it is not a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirId {
    dev: u64,
    ino: u64,
}

impl DirId {
    fn of(path: &std::path::Path) -> Option<DirId> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| DirId {
                dev: m.dev(),
                ino: m.ino(),
            })
    }
}

/// Whether a watch event may change what a scan finds. Opening or reading a
/// file does not (and the scan itself opens the directory: counting that
/// rescanned an idle directory every debounce, forever); a file closed after
/// writing does (a copy just finished).
fn may_change_the_list(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Makes a scan due within `after`, keeping an earlier one already due.
fn due(rescan_at: &mut Option<Instant>, after: Duration) {
    let at = Instant::now() + after;
    *rescan_at = Some(rescan_at.map_or(at, |earlier| earlier.min(at)));
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
