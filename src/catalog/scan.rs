//! One scan of the models directory: which models exist and what their headers say.
//!
//! Rules (as llama.cpp's router, minus its split-set bug): each top-level
//! `.gguf` is a model named after the file; the shards of a split set are ONE
//! model named after the set's prefix; each first-level folder is one model
//! named after the folder (its `-00001-of-` shard or its one `.gguf`, with a
//! file whose name contains `mmproj` attached as the projector). Deeper
//! levels, hidden entries and other files are ignored; symlinks count only if
//! they resolve inside the directory.
//!
//! An I/O error is never read as "the models are gone": a directory that
//! cannot be listed fails the scan ([`ScanError`]), and a folder or file that
//! cannot be read keeps the entry the previous scan had for it and is named in
//! [`ScanResult::problems`] so the caller retries. Only what was read removes
//! models.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::gguf::{Decode, GgufError, GgufModel, HeaderLimits, ModelSummary, SplitName};

use super::layout::{Candidate, candidates};
pub use super::layout::{DirItem, ListDir, list_dir};

/// Longest failure reason an entry keeps: `ListModels` serves every reason.
pub const MAX_REASON_BYTES: usize = 1024;

/// Size and modification time of each of a model's files: a change to either means re-read.
pub type Fingerprint = Vec<(u64, SystemTime)>;

/// One model found in the directory.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The name requests use.
    pub id: String,
    /// The model's files in shard order (those that exist, when some are missing).
    pub files: Vec<PathBuf>,
    /// Attached multimodal projector.
    pub projector: Option<PathBuf>,
    /// What its headers say, or why they could not be read.
    pub info: Result<ModelSummary, String>,
    /// Sizes and modification times of the files, to notice changes.
    pub fingerprint: Fingerprint,
}

/// The result of a scan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanResult {
    /// Models, sorted by id.
    pub entries: Vec<CatalogEntry>,
    /// Some file is still changing (being copied); scan again after the settle time.
    pub pending: bool,
    /// Folders and files that could not be read this time (their previous
    /// entries were kept): scan again later.
    pub problems: Vec<String>,
}

/// The models directory itself could not be listed; nothing was learnt.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the models directory {}: {source}", path.display())]
pub struct ScanError {
    /// The directory.
    pub path: PathBuf,
    /// What the OS said.
    #[source]
    pub source: io::Error,
}

/// Header reads kept between scans, keyed by the model's first file.
#[derive(Debug, Default)]
pub struct HeaderCache {
    entries: HashMap<PathBuf, Cached>,
}

#[derive(Debug)]
struct Cached {
    fingerprint: Fingerprint,
    files: Vec<PathBuf>,
    info: Result<ModelSummary, String>,
    /// Since when the files have had this fingerprint (epoch: since before we looked).
    stable_since: SystemTime,
}

/// Scans `root`. Files whose header does not validate and that changed less
/// than `settle` ago are held back (`pending`): they are probably being copied.
/// `last` is the last list: what cannot be read this time is kept from it.
pub fn scan(
    root: &Path,
    last: &[CatalogEntry],
    cache: &mut HeaderCache,
    settle: Duration,
    caps: &HeaderLimits,
) -> Result<ScanResult, ScanError> {
    scan_with(root, last, cache, settle, caps, &list_dir)
}

/// [`scan`] with the directory listing given.
pub fn scan_with(
    root: &Path,
    last: &[CatalogEntry],
    cache: &mut HeaderCache,
    settle: Duration,
    caps: &HeaderLimits,
    list: ListDir<'_>,
) -> Result<ScanResult, ScanError> {
    let root_error = |source| ScanError {
        path: root.to_path_buf(),
        source,
    };
    let canonical_root = root.canonicalize().map_err(root_error)?;
    let mut result = ScanResult::default();
    let mut carried: Vec<String> = Vec::new();
    let found = candidates(&canonical_root, list, &mut result.problems, &mut carried)
        .map_err(root_error)?;
    let now = SystemTime::now();
    let mut candidates: Vec<(Candidate, Vec<PathBuf>, Fingerprint)> = Vec::new();
    for c in found {
        match model_files(&c.main) {
            Ok((files, fingerprint)) => candidates.push((c, files, fingerprint)),
            Err(e) => {
                result
                    .problems
                    .push(format!("cannot read {}: {e}", c.main.display()));
                carried.push(c.id);
            }
        }
    }
    // Header reads are the slow part (a large vocabulary takes ~20 ms): only
    // for new or changed files, spread over the cores.
    let to_read: Vec<&Path> = candidates
        .iter()
        .filter(|(c, _, fp)| {
            c.problem.is_none()
                && cache
                    .entries
                    .get(&c.main)
                    .is_none_or(|e| &e.fingerprint != fp)
        })
        .map(|(c, _, _)| c.main.as_path())
        .collect();
    let mut fresh: HashMap<PathBuf, Read> = read_all(&to_read, caps);

    let mut keep = HashSet::new();
    for (c, files, fingerprint) in candidates {
        let key = c.main.clone();
        let previous = cache.entries.get(&key);
        let hit = previous.filter(|e| e.fingerprint == fingerprint);
        let stable_since = match (previous, hit) {
            (_, Some(hit)) => hit.stable_since,
            // Changed since the last scan.
            (Some(_), None) => now,
            // First sight: only the modification times can tell.
            (None, _) => SystemTime::UNIX_EPOCH,
        };
        // A read the OS failed is not remembered, so the retry reads again.
        let mut cacheable = true;
        let (info, files) = match (&c.problem, hit, fresh.remove(&key)) {
            (Some(problem), _, _) => (Err(problem.clone()), files),
            (None, Some(hit), _) => (hit.info.clone(), hit.files.clone()),
            (None, None, Some(Ok((summary, shards)))) => (Ok(summary), shards),
            // The OS failed the read (EMFILE, EIO...): that says nothing about
            // the file. Keep what the last scan knew, or show why, and retry.
            (None, None, Some(Err(Failure { reason, io: true }))) => {
                result.problems.push(reason.clone());
                if last.iter().any(|e| e.id == c.id) {
                    keep.insert(key);
                    carried.push(c.id);
                    continue;
                }
                cacheable = false;
                (Err(reason), files)
            }
            (None, None, Some(Err(Failure { reason, io: false }))) => (Err(reason), files),
            (None, None, None) => (Err("header not read".to_owned()), files),
        };
        let recent = |t: SystemTime| now.duration_since(t).unwrap_or_default() < settle;
        let changing = recent(stable_since) || fingerprint.iter().any(|&(_, mtime)| recent(mtime));
        keep.insert(key.clone());
        if cacheable {
            cache.entries.insert(
                key,
                Cached {
                    fingerprint: fingerprint.clone(),
                    files: files.clone(),
                    info: info.clone(),
                    stable_since,
                },
            );
        }
        if info.is_err() && changing && c.problem.is_none() {
            result.pending = true;
            continue;
        }
        result.entries.push(CatalogEntry {
            id: c.id,
            files,
            projector: c.projector,
            info,
            fingerprint,
        });
    }
    for id in carried {
        let kept = last.iter().find(|e| e.id == id);
        if let Some(entry) = kept.filter(|e| !result.entries.iter().any(|r| r.id == e.id)) {
            keep.extend(entry.files.iter().cloned());
            result.entries.push(entry.clone());
        }
    }
    cache.entries.retain(|k, _| keep.contains(k));
    result.entries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(result)
}

/// Why a model's headers could not be read.
#[derive(Debug)]
struct Failure {
    /// What to show (bounded to [`MAX_REASON_BYTES`]).
    reason: String,
    /// The OS failed the read: the file may be fine.
    io: bool,
}

/// A model's summary and shard files, or why its headers could not be read.
type Read = Result<(ModelSummary, Vec<PathBuf>), Failure>;

fn read_model(main: &Path, caps: &HeaderLimits) -> Read {
    // The summary needs a vocabulary's length, not its tokens.
    GgufModel::open_with(main, caps, Decode::Summary)
        .map(|model| {
            let files = model.shards().map(|s| s.path.clone()).collect();
            // Only the summary is kept: the metadata is dropped here.
            (ModelSummary::of(&model), files)
        })
        .map_err(|e| Failure {
            io: matches!(e, GgufError::Io { .. }),
            reason: bounded_reason(e.to_string()),
        })
}

/// `reason` cut on a character boundary to at most [`MAX_REASON_BYTES`].
pub fn bounded_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES.saturating_sub(3);
        while !reason.is_char_boundary(cut) {
            cut = cut.saturating_sub(1);
        }
        reason.truncate(cut);
        reason.push_str("...");
    }
    reason
}

/// Reads the models at `paths` on up to one thread per core.
fn read_all(paths: &[&Path], caps: &HeaderLimits) -> HashMap<PathBuf, Read> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let per_thread = paths.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|p| (p.to_path_buf(), read_model(p, caps)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A worker that panicked leaves its models unread; they show as failed.
        workers
            .into_iter()
            .filter_map(|w| w.join().ok())
            .flatten()
            .collect()
    })
}

/// The model's shard files (those present) and their fingerprint.
fn model_files(main: &Path) -> io::Result<(Vec<PathBuf>, Fingerprint)> {
    let files = match SplitName::parse(main) {
        Some(split) => (1..=split.count)
            .map(|i| split.shard_path(i))
            .filter(|p| p.is_file())
            .collect(),
        None => vec![main.to_path_buf()],
    };
    let fingerprint = files
        .iter()
        .map(|f| {
            std::fs::metadata(f).map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
        })
        .collect::<io::Result<_>>()?;
    Ok((files, fingerprint))
}
