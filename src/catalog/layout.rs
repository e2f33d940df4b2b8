//! Which files form which model: the directory layout rules.
//!
//! Each top-level `.gguf` is a model named after the file; the shards of a
//! split set are ONE model named after the set's prefix; each first-level
//! folder is one model named after the folder. A listing that fails is an
//! error for the caller to handle, never an empty directory.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::gguf::SplitName;

/// One directory entry as the scan sees it.
#[derive(Debug, Clone)]
pub struct DirItem {
    /// File name (entries whose name is not UTF-8 are left out).
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Whether the entry itself is a symbolic link.
    pub is_symlink: bool,
}

/// Lists a directory; the seam tests use to inject I/O errors.
pub type ListDir<'a> = &'a (dyn Fn(&Path) -> io::Result<Vec<DirItem>> + Sync);

/// Lists `dir` with `read_dir`; any error, even on one entry, fails the listing.
pub fn list_dir(dir: &Path) -> io::Result<Vec<DirItem>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let is_symlink = entry.file_type()?.is_symlink();
        if let Some(name) = entry.file_name().to_str() {
            out.push(DirItem {
                name: name.to_owned(),
                path: entry.path(),
                is_symlink,
            });
        }
    }
    Ok(out)
}

/// A model's files before their headers are read.
#[derive(Debug)]
pub(super) struct Candidate {
    pub(super) id: String,
    /// A file of the model (any shard opens a split set).
    pub(super) main: PathBuf,
    pub(super) projector: Option<PathBuf>,
    /// A folder that holds no single model.
    pub(super) problem: Option<String>,
}

fn is_gguf(name: &str) -> bool {
    name.ends_with(".gguf") && !name.starts_with('.')
}

/// Entries of `dir` that resolve inside `root`, with their resolved paths, sorted by name.
fn entries_inside(
    dir: &Path,
    root: &Path,
    list: ListDir<'_>,
) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = list(dir)?
        .into_iter()
        .filter_map(|e| {
            let DirItem {
                name,
                path,
                is_symlink,
            } = e;
            if name.starts_with('.') {
                return None;
            }
            if is_symlink {
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
    Ok(out)
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

/// The models in `root`. A folder that cannot be listed is named in
/// `problems` and its id added to `carried`; only `root` failing is an error.
pub(super) fn candidates(
    root: &Path,
    list: ListDir<'_>,
    problems: &mut Vec<String>,
    carried: &mut Vec<String>,
) -> io::Result<Vec<Candidate>> {
    let mut out: BTreeMap<String, Candidate> = BTreeMap::new();
    for (name, path) in entries_inside(root, root, list)? {
        if path.is_dir() {
            match folder_candidate(&name, &path, root, list) {
                Ok(Some(c)) => add_candidate(&mut out, c),
                Ok(None) => {}
                Err(e) => {
                    problems.push(format!("cannot read folder {}: {e}", path.display()));
                    carried.push(name);
                }
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
    Ok(out.into_values().collect())
}

fn folder_candidate(
    name: &str,
    dir: &Path,
    root: &Path,
    list: ListDir<'_>,
) -> io::Result<Option<Candidate>> {
    let ggufs: Vec<(String, PathBuf)> = entries_inside(dir, root, list)?
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
    let Some(&first) = models.first() else {
        return Ok(None);
    };
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
    Ok(Some(Candidate {
        id: name.to_owned(),
        main: first.clone(),
        projector,
        problem,
    }))
}
