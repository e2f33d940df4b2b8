//! The reports' directory: one `ID.json` per crash (0600, written whole
//! then renamed into place), pruned to its bounds after every write.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CrashError, CrashReport};

/// Largest report file read back (a report is a few KiB; a bigger file is not ours).
const MAX_REPORT_BYTES: u64 = 1 << 20;

/// How much the directory may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLimits {
    /// Most reports kept.
    pub max_reports: usize,
    /// Most bytes of reports kept.
    pub max_bytes: u64,
}

impl Default for CrashLimits {
    fn default() -> Self {
        CrashLimits {
            max_reports: 50,
            max_bytes: 16 << 20,
        }
    }
}

/// Called with each report once it is stored (the daemon counts them).
pub type CrashObserver = Arc<dyn Fn(&CrashReport) + Send + Sync>;

/// The crash reports' directory; cheap to clone.
#[derive(Clone)]
pub struct CrashStore {
    dir: PathBuf,
    limits: CrashLimits,
    observer: Option<CrashObserver>,
}

impl std::fmt::Debug for CrashStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashStore")
            .field("dir", &self.dir)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PartialEq for CrashStore {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir && self.limits == other.limits
    }
}

impl CrashStore {
    /// Opens `dir` (created 0700 with its parents; refused when someone else
    /// owns it or others may write to it).
    pub fn open(dir: PathBuf, limits: CrashLimits) -> Result<Self, CrashError> {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| CrashError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        crate::runtime_dir::prepare_private_dir(&dir)?;
        Ok(CrashStore {
            dir,
            limits,
            observer: None,
        })
    }

    /// The same store, telling `observer` of every report stored.
    pub fn observed(mut self, observer: CrashObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Where the reports are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `io` (`list`, `get`, `write`) off the async threads: the store's
    /// work is file I/O, and a write syncs to disk.
    pub async fn off_thread<T: Send + 'static>(
        &self,
        io: impl FnOnce(&CrashStore) -> Result<T, CrashError> + Send + 'static,
    ) -> Result<T, CrashError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || io(&store))
            .await
            .unwrap_or_else(|e| Err(CrashError::Task(e.to_string())))
    }

    /// Stores `report`, then drops the oldest reports past the bounds.
    pub fn write(&self, report: &CrashReport) -> Result<(), CrashError> {
        self.store(report)?;
        if let Some(observer) = &self.observer {
            observer(report);
        }
        Ok(())
    }

    /// Rewrites a report already written (completed with its backtrace),
    /// without telling the observer again.
    pub fn update(&self, report: &CrashReport) -> Result<(), CrashError> {
        self.store(report)
    }

    fn store(&self, report: &CrashReport) -> Result<(), CrashError> {
        let path = self.path_of(&report.id)?;
        let temp = self.dir.join(format!(".{}.tmp", report.id));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CrashError::Io { path, source }
        };
        let text = serde_json::to_vec_pretty(report).map_err(|source| CrashError::Format {
            path: path.clone(),
            source,
        })?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io(&temp))?;
        file.write_all(&text).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        self.prune()
    }

    /// Every report, newest first; unreadable files are skipped with a warning.
    pub fn list(&self) -> Result<Vec<CrashReport>, CrashError> {
        let mut reports = Vec::new();
        for (path, _) in self.files()?.into_iter().rev() {
            match read(&path) {
                Ok(report) => reports.push(report),
                Err(e) => tracing::warn!(error = %e, "skipping a crash report: {e}"),
            }
        }
        Ok(reports)
    }

    /// The report `id`.
    pub fn get(&self, id: &str) -> Result<CrashReport, CrashError> {
        let path = self.path_of(id)?;
        if !path.exists() {
            return Err(CrashError::NotFound(id.to_owned()));
        }
        read(&path)
    }

    /// `ID.json` in the directory, for an id that cannot leave it.
    fn path_of(&self, id: &str) -> Result<PathBuf, CrashError> {
        let valid = !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(CrashError::BadId(id.to_owned()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// The reports' files with their sizes, oldest first (ids sort by time).
    fn files(&self) -> Result<Vec<(PathBuf, u64)>, CrashError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| CrashError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut files: Vec<(PathBuf, u64)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .map(|p| {
                let len = std::fs::metadata(&p).map_or(0, |m| m.len());
                (p, len)
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Removes the oldest reports until the bounds hold.
    fn prune(&self) -> Result<(), CrashError> {
        let files = self.files()?;
        let mut count = files.len();
        let mut bytes: u64 = files.iter().map(|(_, len)| len).sum();
        for (path, len) in files {
            if count <= self.limits.max_reports && bytes <= self.limits.max_bytes {
                break;
            }
            // Never the report just written: it is the newest, so it comes last.
            if count == 1 {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    count -= 1;
                    bytes = bytes.saturating_sub(len);
                }
                Err(source) => return Err(CrashError::Io { path, source }),
            }
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<CrashReport, CrashError> {
    let io = |source| CrashError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_REPORT_BYTES {
        return Err(CrashError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!("{len} bytes: too big for a report")),
        });
    }
    let text = std::fs::read(path).map_err(io)?;
    serde_json::from_slice(&text).map_err(|source| CrashError::Format {
        path: path.to_path_buf(),
        source,
    })
}
