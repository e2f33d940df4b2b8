//! Split sets (`NAME-0000k-of-0000N.gguf`) and the model they form together.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{GgufError, Problem};
use super::file::read_header_with;
use super::header::{GgufHeader, TensorInfo};
use super::limits::HeaderLimits;
use super::metadata::{Decode, Metadata};

/// Key holding a shard's 0-based index.
pub const KEY_SPLIT_NO: &str = "split.no";
/// Key holding the number of shards.
pub const KEY_SPLIT_COUNT: &str = "split.count";
/// Key holding the number of tensors across all shards.
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// Where metadata starts in a GGUF file (after magic, version and two counts):
/// the offset reported for a key that is missing.
const METADATA_START: u64 = 24;

/// The parts of a shard's file name: `{prefix}-{index:05}-of-{count:05}.gguf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitName {
    /// Everything before `-0000k-of-0000N.gguf`, directory included.
    pub prefix: PathBuf,
    /// 1-based shard number.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl SplitName {
    /// Parses a shard's path; None when the name does not follow the pattern.
    pub fn parse(path: &Path) -> Option<Self> {
        let file_name = path.file_name()?.to_str()?;
        let stem = file_name.strip_suffix(".gguf")?;
        let (head, count) = stem.rsplit_once("-of-")?;
        let (prefix, index) = head.rsplit_once('-')?;
        let digits = |s: &str| {
            (s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        let (index, count) = (digits(index)?, digits(count)?);
        if prefix.is_empty() || index == 0 || index > count {
            return None;
        }
        Some(SplitName {
            prefix: path.with_file_name(prefix),
            index,
            count,
        })
    }

    /// The set's name: the prefix's file name.
    pub fn set_name(&self) -> String {
        self.prefix
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Path of shard `index` (1-based) of this set.
    pub fn shard_path(&self, index: u32) -> PathBuf {
        let mut name = self.prefix.as_os_str().to_owned();
        name.push(format!("-{index:05}-of-{:05}.gguf", self.count));
        PathBuf::from(name)
    }
}

/// Every file of the model `path` belongs to, in shard order; checks each exists.
pub fn shard_paths(path: &Path) -> Result<Vec<PathBuf>, GgufError> {
    let Some(split) = SplitName::parse(path) else {
        return Ok(vec![path.to_path_buf()]);
    };
    (1..=split.count)
        .map(|index| {
            let shard = split.shard_path(index);
            if shard.is_file() {
                Ok(shard)
            } else {
                Err(GgufError::MissingShard {
                    set: path.to_path_buf(),
                    missing: shard,
                    index,
                    count: split.count,
                })
            }
        })
        .collect()
}

/// One file of a model and its header.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// The file.
    pub path: PathBuf,
    /// Its validated header.
    pub header: GgufHeader,
}

/// A whole model: one file, or every shard of a split set, checked as a set.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufModel {
    /// The first shard: it holds all the model's metadata.
    first: Shard,
    /// Shards 2..N of a split set.
    rest: Vec<Shard>,
}

impl GgufModel {
    /// Reads the headers of the model at `path` (any shard of a set opens the
    /// whole set), with the default metadata caps.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        Self::open_with(path, &HeaderLimits::default(), Decode::All)
    }

    /// Reads the headers of the model at `path`, each within `caps`,
    /// decoding what `decode` asks for.
    pub fn open_with(path: &Path, caps: &HeaderLimits, decode: Decode) -> Result<Self, GgufError> {
        let mut shards = shard_paths(path)?
            .into_iter()
            .map(|p| read_header_with(&p, caps, decode).map(|header| Shard { path: p, header }));
        let first = match shards.next() {
            Some(first) => first?,
            None => unreachable_empty(path)?,
        };
        Self::from_shards(first, shards.collect::<Result<Vec<_>, _>>()?)
    }

    /// Checks that `first` and `rest` (in shard order) form one consistent model.
    pub fn from_shards(first: Shard, rest: Vec<Shard>) -> Result<Self, GgufError> {
        let model = GgufModel { first, rest };
        let shards: Vec<&Shard> = model.shards().collect();
        check_split_keys(&shards)?;
        check_unique_tensors(&shards)?;
        Ok(model)
    }

    /// The model's files in shard order.
    pub fn shards(&self) -> impl Iterator<Item = &Shard> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    /// Number of files.
    pub fn shard_count(&self) -> usize {
        self.rest.len().saturating_add(1)
    }

    /// The model's metadata: the first shard's, which holds all of it.
    pub fn metadata(&self) -> &Metadata {
        &self.first.header.metadata
    }

    /// The first shard's format version.
    pub fn version(&self) -> u32 {
        self.first.header.version
    }

    /// Every tensor with the index of the shard holding it.
    pub fn tensors(&self) -> impl Iterator<Item = (usize, &TensorInfo)> {
        self.shards()
            .enumerate()
            .flat_map(|(i, s)| s.header.tensors.iter().map(move |t| (i, t)))
    }

    /// Total size of all shard files.
    pub fn total_bytes(&self) -> u64 {
        self.shards()
            .fold(0u64, |acc, s| acc.saturating_add(s.header.file_len))
    }
}

/// `shard_paths` always yields at least the path it was given.
fn unreachable_empty(path: &Path) -> Result<Shard, GgufError> {
    Err(GgufError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no files"),
    })
}

fn key_error(shard: &Shard, key: &'static str, problem: Problem) -> GgufError {
    let offset = shard
        .header
        .metadata
        .offset_of(key)
        .unwrap_or(METADATA_START);
    GgufError::format(&shard.path, offset, problem)
}

/// Checks `key` in `shard` equals `expected`; `required` says whether it may be absent.
fn check_key(
    shard: &Shard,
    key: &'static str,
    expected: u64,
    required: bool,
) -> Result<(), GgufError> {
    match shard.header.metadata.get(key) {
        None if required => Err(key_error(shard, key, Problem::SplitKeyMissing { key })),
        None => Ok(()),
        Some(value) if value.as_u64() == Some(expected) => Ok(()),
        Some(value) => Err(key_error(
            shard,
            key,
            Problem::SplitKeyMismatch {
                key,
                found: shown_value(value),
                expected,
            },
        )),
    }
}

/// A value as an error message quotes it: a split key holding a huge array
/// must not turn into a huge message.
fn shown_value(value: &super::value::Value) -> String {
    const SHOWN: usize = 80;
    let text = format!("{value:?}");
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text,
    }
}

fn check_split_keys(shards: &[&Shard]) -> Result<(), GgufError> {
    let count = shards.len() as u64;
    let tensors: u64 = shards.iter().map(|s| s.header.tensors.len() as u64).sum();
    if count == 1 {
        // A lone file may omit the keys, but must not claim to be part of a larger set.
        if let Some(shard) = shards.first() {
            let claimed = shard.header.metadata.get_u64(KEY_SPLIT_COUNT);
            if claimed.is_some_and(|n| n > 1) {
                let index = shard.header.metadata.get_u64(KEY_SPLIT_NO).unwrap_or(0);
                return Err(key_error(
                    shard,
                    KEY_SPLIT_COUNT,
                    Problem::SplitNameMismatch {
                        index: index.saturating_add(1),
                        count: claimed.unwrap_or(0),
                    },
                ));
            }
            check_key(shard, KEY_SPLIT_TENSORS_COUNT, tensors, false)?;
        }
        return Ok(());
    }
    for (i, shard) in (0u64..).zip(shards) {
        check_key(shard, KEY_SPLIT_NO, i, true)?;
        check_key(shard, KEY_SPLIT_COUNT, count, true)?;
        // gguf-split writes the total in every shard; the first must have it.
        check_key(shard, KEY_SPLIT_TENSORS_COUNT, tensors, i == 0)?;
    }
    Ok(())
}

fn check_unique_tensors(shards: &[&Shard]) -> Result<(), GgufError> {
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for shard in shards {
        for t in &shard.header.tensors {
            if let Some(other) = seen.insert(&t.name, &shard.path) {
                return Err(GgufError::format(
                    &shard.path,
                    t.info_offset,
                    Problem::DuplicateTensorAcrossShards {
                        name: t.name.clone(),
                        other_shard: other.display().to_string(),
                    },
                ));
            }
        }
    }
    Ok(())
}
