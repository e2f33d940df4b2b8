//! The loader: maps a model's shards, validates them and brings them into host RAM.
//!
//! Pages are brought in by reading the file (`read`: `sendfile` to
//! `/dev/null`, plus `MADV_WILLNEED` on the mapping), never by touching the
//! mapping: a file that shrinks or vanishes mid-load then gives a short read
//! and a clean error, not a SIGBUS in the daemon. A chunk already in the page
//! cache (`mincore`, which reads page tables only) is not read again, only
//! checked to still be in the file: a swap back to a model read moments ago
//! reads nothing. Each shard
//! keeps its own mapping (and its mlock, when asked) until the model is
//! unloaded.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use memmap2::{Advice, Mmap};

use read::{Sink, resident};

use crate::gguf::{Decode, GgufError, GgufModel, HeaderLimits, Shard, read_header_of};

/// Bytes read per prefetch request.
const CHUNK: u64 = 8 << 20;

/// How a model is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Lock the pages in RAM once read.
    pub mlock: bool,
    /// Threads reading in parallel.
    pub threads: usize,
    /// Caps on the headers read again at load (the catalog's, so a file
    /// swapped since the scan is held to them too).
    pub header: HeaderLimits,
}

/// What the loader is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening and mapping the files.
    Mapping,
    /// Reading the files into RAM (and, beside it, parsing and validating
    /// the headers).
    Prefetching,
}

/// Progress of one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Bytes read so far.
    pub bytes_done: u64,
    /// Bytes to read in all.
    pub bytes_total: u64,
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file is not a valid GGUF model (or split set).
    #[error(transparent)]
    Invalid(#[from] GgufError),
    /// A file could not be opened, mapped or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file changed size (was truncated, replaced or removed) during the load.
    #[error("{}: file changed during load: expected {expected} bytes, found {found}", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// Length when the load started.
        expected: u64,
        /// Length now.
        found: u64,
    },
    /// mlock failed, usually RLIMIT_MEMLOCK (systemd: LimitMEMLOCK=infinity).
    #[error("{}: cannot lock {bytes} bytes in RAM: {source} (raise the memlock limit or drop --mlock)", path.display())]
    Mlock {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The load was cancelled (the model was unloaded or removed meanwhile).
    #[error("load cancelled")]
    Cancelled,
}

/// One mapped shard.
struct MappedShard {
    path: PathBuf,
    file: File,
    map: Mmap,
    /// Its length when opened.
    len: u64,
}

impl MappedShard {
    fn open(path: &Path) -> Result<Self, LoadError> {
        let file = File::open(path).map_err(io_error(path))?;
        let len = file.metadata().map_err(io_error(path))?.len();
        // SAFETY: read-only private mapping. The daemon never dereferences it
        // for tensor data (prefetch reads the file: `read`), so a file
        // truncated under it cannot raise SIGBUS here.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
        // Readahead is advisory; a refusal is harmless.
        let _ = map.advise(Advice::WillNeed);
        Ok(MappedShard {
            path: path.to_path_buf(),
            file,
            map,
            len,
        })
    }

    /// `Changed` when the file is no longer as long as when it was opened.
    fn changed(&self) -> Option<LoadError> {
        let found = self.file.metadata().ok()?.len();
        (found != self.len).then(|| LoadError::Changed {
            path: self.path.clone(),
            expected: self.len,
            found,
        })
    }
}

/// A model resident in host RAM: its validated headers and one mapping per shard.
pub struct ResidentModel {
    model: GgufModel,
    shards: Vec<MappedShard>,
}

impl ResidentModel {
    /// The validated model.
    pub fn model(&self) -> &GgufModel {
        &self.model
    }

    /// Bytes held (all shard files).
    pub fn bytes(&self) -> u64 {
        self.model.total_bytes()
    }

    /// The mapped bytes of shard `index`, for code that checked the file still has its length.
    pub fn mapping(&self, index: usize) -> Option<&[u8]> {
        self.shards.get(index).map(|s| &s.map[..])
    }
}

impl std::fmt::Debug for ResidentModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResidentModel")
            .field("bytes", &self.bytes())
            .finish()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the model made of `files` (in shard order).
///
/// Blocking: run it on a blocking thread. `progress` is called from the
/// reading threads; `cancel` is checked between chunks. The reads need only
/// the files' lengths, so they start before the headers are parsed and run
/// beside the parse (a cold load's header reads then wait on the same I/O
/// instead of ahead of it); a header that fails stops these reads (not the
/// kernel's readahead, which `MADV_WILLNEED` asked for).
pub fn load(
    files: &[PathBuf],
    options: LoadOptions,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<ResidentModel, LoadError> {
    let mut mapped = Vec::with_capacity(files.len());
    for path in files {
        mapped.push(MappedShard::open(path)?);
        progress(Progress {
            phase: Phase::Mapping,
            bytes_done: 0,
            bytes_total: 0,
        });
    }
    let stop = AtomicBool::new(false);
    let (model, read) = std::thread::scope(|scope| {
        let reading = scope.spawn(|| prefetch(&mapped, options.threads, cancel, &stop, progress));
        let model = parse_headers(&mapped, &options.header);
        if model.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // A reader's panic stays a panic (the caller reports it), as when
        // the reads ran on this thread.
        let read = reading
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (model, read)
    });
    let model = match model {
        Ok(model) => model,
        // A header cut short by a file that changed since it was opened says
        // less than the change does.
        Err(e) => return Err(mapped.iter().find_map(MappedShard::changed).unwrap_or(e)),
    };
    read?;
    if options.mlock {
        for m in &mapped {
            check_len(&m.file, &m.path, m.len)?;
            m.map.lock().map_err(|source| LoadError::Mlock {
                path: m.path.clone(),
                bytes: m.len,
                source,
            })?;
        }
    }
    Ok(ResidentModel {
        model,
        shards: mapped,
    })
}

/// The shards' headers, validated as one model whose files are as long as
/// when they were opened.
fn parse_headers(mapped: &[MappedShard], caps: &HeaderLimits) -> Result<GgufModel, LoadError> {
    let mut shards = Vec::with_capacity(mapped.len());
    for m in mapped {
        // llama.cpp reads the vocabulary itself; the loader needs the tensors.
        // From the file opened and mapped, not whatever the path names now.
        let header = read_header_of(&m.file, &m.path, caps, Decode::Summary)?;
        if header.file_len != m.len {
            return Err(LoadError::Changed {
                path: m.path.clone(),
                expected: m.len,
                found: header.file_len,
            });
        }
        shards.push(Shard {
            path: m.path.clone(),
            header,
        });
    }
    let mut shards = shards.into_iter();
    let first = shards.next().ok_or_else(|| LoadError::Io {
        path: PathBuf::new(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "model has no files"),
    })?;
    Ok(GgufModel::from_shards(first, shards.collect())?)
}

fn check_len(file: &File, path: &Path, expected: u64) -> Result<(), LoadError> {
    let found = file.metadata().map_err(io_error(path))?.len();
    if found < expected {
        return Err(LoadError::Changed {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    Ok(())
}

/// Reads every byte of every shard once, in parallel, reporting progress;
/// stops at `cancel` (the caller's) or `stop` (the header parse or another
/// reader failed).
fn prefetch(
    mapped: &[MappedShard],
    threads: usize,
    cancel: &AtomicBool,
    stop: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(), LoadError> {
    let total = mapped.iter().map(|m| m.len).sum();
    let chunks: Vec<(&MappedShard, u64, u64)> = mapped
        .iter()
        .flat_map(|m| {
            (0..m.len.div_ceil(CHUNK)).map(move |i| {
                let start = i.saturating_mul(CHUNK);
                (m, start, CHUNK.min(m.len.saturating_sub(start)))
            })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    progress(Progress {
        phase: Phase::Prefetching,
        bytes_done: 0,
        bytes_total: total,
    });
    let reader = || -> Result<(), LoadError> {
        let mut sink = Sink::open();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(shard, start, len)) = chunks.get(i) else {
                return Ok(());
            };
            if cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                return Err(LoadError::Cancelled);
            }
            let read = if resident(&shard.map, start, len) {
                // In the page cache already: only make sure the file still holds it.
                check_len(&shard.file, &shard.path, start.saturating_add(len))
            } else {
                sink.read(&shard.file, &shard.path, start, len)
            };
            if read.is_err() {
                // The other readers stop at their next chunk.
                stop.store(true, Ordering::Relaxed);
                return read;
            }
            let now = done.fetch_add(len, Ordering::Relaxed).saturating_add(len);
            progress(Progress {
                phase: Phase::Prefetching,
                bytes_done: now,
                bytes_total: total,
            });
        }
    };
    let threads = threads.clamp(1, chunks.len().max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(reader)).collect();
        let errors: Vec<LoadError> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or(Err(LoadError::Cancelled)).err())
            .collect();
        // The error that stopped the others, over their Cancelled (the first
        // of the least: min_by_key keeps the first of equals).
        errors
            .into_iter()
            .min_by_key(|e| matches!(e, LoadError::Cancelled))
            .map_or(Ok(()), Err)
    })
}

mod read;

#[cfg(test)]
mod tests;
