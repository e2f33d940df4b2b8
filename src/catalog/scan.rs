//! One scan of the models directory: which models exist and what their headers say.
//!
//! Rules (as llama.cpp's router, minus its split-set bug): each top-level
//! `.gguf` is a model named after the file; the shards of a split set are ONE
//! model named after the set's prefix; each first-level folder is one model
//! named after the folder (its `-00001-of-` shard or its one `.gguf`, with a
//! file whose name contains `mmproj` attached as the projector). Deeper
//! levels, hidden entries and other files are ignored; symlinks count only if
//! they resolve inside the directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::gguf::{GgufModel, ModelSummary, SplitName};

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
}

/// A model's files before their headers are read.
#[derive(Debug)]
struct Candidate {
    id: String,
    /// A file of the model (any shard opens a split set).
    main: PathBuf,
    projector: Option<PathBuf>,
    /// A folder that holds no single model.
    problem: Option<String>,
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
pub fn scan(root: &Path, cache: &mut HeaderCache, settle: Duration) -> ScanResult {
    let Ok(canonical_root) = root.canonicalize() else {
        cache.entries.clear();
        return ScanResult::default();
    };
    let now = SystemTime::now();
    let candidates: Vec<(Candidate, Vec<PathBuf>, Fingerprint)> = candidates(&canonical_root)
        .into_iter()
        .map(|c| {
            let (files, fingerprint) = model_files(&c.main);
            (c, files, fingerprint)
        })
        .collect();
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
    let mut fresh: HashMap<PathBuf, Read> = read_all(&to_read);

    let mut result = ScanResult::default();
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
        let (info, files) = match (&c.problem, hit, fresh.remove(&key)) {
            (Some(problem), _, _) => (Err(problem.clone()), files),
            (None, Some(hit), _) => (hit.info.clone(), hit.files.clone()),
            (None, None, Some(Ok((summary, shards)))) => (Ok(summary), shards),
            (None, None, Some(Err(e))) => (Err(e), files),
            (None, None, None) => (Err("header not read".to_owned()), files),
        };
        let recent = |t: SystemTime| now.duration_since(t).unwrap_or_default() < settle;
        let changing = recent(stable_since) || fingerprint.iter().any(|&(_, mtime)| recent(mtime));
        keep.insert(key.clone());
        cache.entries.insert(
            key,
            Cached {
                fingerprint: fingerprint.clone(),
                files: files.clone(),
                info: info.clone(),
                stable_since,
            },
        );
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
    cache.entries.retain(|k, _| keep.contains(k));
    result.entries.sort_by(|a, b| a.id.cmp(&b.id));
    result
}

/// A model's summary and shard files, or why its headers could not be read.
type Read = Result<(ModelSummary, Vec<PathBuf>), String>;

fn read_model(main: &Path) -> Read {
    GgufModel::open(main)
        .map(|model| {
            let files = model.shards().map(|s| s.path.clone()).collect();
            (ModelSummary::of(&model), files)
        })
        .map_err(|e| e.to_string())
}

/// Reads the models at `paths` on up to one thread per core.
fn read_all(paths: &[&Path]) -> HashMap<PathBuf, Read> {
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
                        .map(|p| (p.to_path_buf(), read_model(p)))
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
fn model_files(main: &Path) -> (Vec<PathBuf>, Fingerprint) {
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
            std::fs::metadata(f).map_or((0, SystemTime::UNIX_EPOCH), |m| {
                (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH))
            })
        })
        .collect();
    (files, fingerprint)
}

fn is_gguf(name: &str) -> bool {
    name.ends_with(".gguf") && !name.starts_with('.')
}

/// Entries of `dir` that resolve inside `root`, with their resolved paths, sorted by name.
fn entries_inside(dir: &Path, root: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = read
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if name.starts_with('.') {
                return None;
            }
            let path = e.path();
            let is_link = e.file_type().ok()?.is_symlink();
            if is_link {
                // Followed only when the target is inside the models directory.
                let target = path.canonicalize().ok()?;
                if !target.starts_with(root) {
                    tracing::debug!(link = %path.display(), target = %target.display(), "ignoring symlink leading outside the models directory");
                    return None;
                }
            }
            Some((name, path))
        })
        .collect();
    out.sort();
    out
}

fn add_candidate(out: &mut BTreeMap<String, Candidate>, c: Candidate) {
    match out.get(&c.id) {
        // Later shards of a set join the entry its first-seen shard made.
        Some(existing)
            if SplitName::parse(&c.main).is_some_and(|s| {
                Some(s.prefix) == SplitName::parse(&existing.main).map(|e| e.prefix)
            }) => {}
        Some(existing) => {
            tracing::warn!(model = %c.id, kept = %existing.main.display(), ignored = %c.main.display(), "two models have the same name; ignoring the second");
        }
        None => {
            out.insert(c.id.clone(), c);
        }
    }
}

fn candidates(root: &Path) -> Vec<Candidate> {
    let mut out: BTreeMap<String, Candidate> = BTreeMap::new();
    for (name, path) in entries_inside(root, root) {
        if path.is_dir() {
            if let Some(c) = folder_candidate(&name, &path, root) {
                add_candidate(&mut out, c);
            }
        } else if path.is_file() && is_gguf(&name) && !name.contains("mmproj") {
            let id = match SplitName::parse(&path) {
                Some(split) => split.set_name(),
                None => name.trim_end_matches(".gguf").to_owned(),
            };
            let c = Candidate {
                id,
                main: path,
                projector: None,
                problem: None,
            };
            add_candidate(&mut out, c);
        }
    }
    out.into_values().collect()
}

fn folder_candidate(name: &str, dir: &Path, root: &Path) -> Option<Candidate> {
    let ggufs: Vec<(String, PathBuf)> = entries_inside(dir, root)
        .into_iter()
        .filter(|(n, p)| is_gguf(n) && p.is_file())
        .collect();
    let projector = ggufs
        .iter()
        .find(|(n, _)| n.contains("mmproj"))
        .map(|(_, p)| p.clone());
    let models: Vec<&PathBuf> = ggufs
        .iter()
        .filter(|(n, _)| !n.contains("mmproj"))
        .map(|(_, p)| p)
        .collect();
    let first = *models.first()?;
    let one_set = SplitName::parse(first).is_some_and(|s| {
        models.iter().all(|p| {
            SplitName::parse(p).is_some_and(|o| o.prefix == s.prefix && o.count == s.count)
        })
    });
    let problem = (models.len() > 1 && !one_set).then(|| {
        format!(
            "folder {} holds {} GGUF models; a folder must hold one model (a file or a split set)",
            dir.display(),
            models.len()
        )
    });
    Some(Candidate {
        id: name.to_owned(),
        main: first.clone(),
        projector,
        problem,
    })
}
