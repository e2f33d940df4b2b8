//! The reader's error type: which file, which byte, what is wrong.

use std::io;
use std::path::PathBuf;

use super::value::ValueType;

/// Everything that can go wrong reading a GGUF file or split set.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The bytes of the file break the format or one of the reader's checks.
    #[error("{}: at byte {offset}: {problem}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Where in the file the problem was found.
        offset: u64,
        /// What is wrong.
        problem: Problem,
    },
    /// A shard of a split set is not on disk.
    #[error("{}: split set is missing shard {index} of {count} ({})", set.display(), missing.display())]
    MissingShard {
        /// The path the set was opened through.
        set: PathBuf,
        /// The shard that is not there.
        missing: PathBuf,
        /// Its 1-based number.
        index: u32,
        /// Shards in the set.
        count: u32,
    },
}

impl GgufError {
    /// Attaches a file to a problem found at `offset`.
    pub(crate) fn format(path: impl Into<PathBuf>, offset: u64, problem: Problem) -> Self {
        GgufError::Format {
            path: path.into(),
            offset,
            problem,
        }
    }

    /// The problem, when the error is about the file's contents.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            GgufError::Format { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// What is wrong with the bytes at some offset of a GGUF file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[allow(missing_docs)]
pub enum Problem {
    #[error("not a GGUF file: it starts with {found:?}, not \"GGUF\"")]
    NotGguf { found: String },
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error("the file is big-endian (GGUF v{0}); only little-endian files are supported")]
    BigEndian(u32),
    #[error("the file ends inside {what}: {needed} bytes needed, {available} left")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("{what} count {count} cannot fit in the {remaining} bytes left in the file")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: u64,
    },
    #[error("the header is larger than the {limit}-byte limit")]
    HeaderTooLarge { limit: u64 },
    #[error(
        "metadata value {key:?} is at least {size} bytes, past the {limit}-byte limit on one value (config key max_metadata_value_bytes)"
    )]
    ValueTooLarge { key: String, size: u64, limit: u64 },
    #[error(
        "metadata reaches at least {size} bytes at key {key:?}, past the {limit}-byte limit on all metadata (config key max_metadata_bytes)"
    )]
    MetadataTooLarge { key: String, size: u64, limit: u64 },
    #[error("metadata key is {len} bytes long; the GGUF limit is {limit}")]
    KeyTooLong { len: u64, limit: u64 },
    #[error("unknown metadata value type {0}")]
    UnknownValueType(u32),
    #[error("boolean value is {0}, not 0 or 1")]
    InvalidBool(u8),
    #[error("arrays nested deeper than {limit} levels")]
    ArrayTooDeep { limit: usize },
    #[error("metadata key is empty")]
    EmptyKey,
    #[error("metadata key is not valid UTF-8")]
    KeyNotUtf8,
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongKeyType {
        key: &'static str,
        found: ValueType,
        expected: &'static str,
    },
    #[error("general.alignment is {0}; it must be a non-zero power of two")]
    BadAlignment(u64),
    #[error("tensor name is empty")]
    EmptyTensorName,
    #[error("tensor name is not valid UTF-8")]
    TensorNameNotUtf8,
    #[error("tensor name {name:?} is {len} bytes long; the limit is {limit}")]
    TensorNameTooLong {
        name: String,
        len: usize,
        limit: usize,
    },
    #[error("tensor {0:?} appears twice")]
    DuplicateTensor(String),
    #[error("tensor {name:?} appears in this shard and in {other_shard}")]
    DuplicateTensorAcrossShards { name: String, other_shard: String },
    #[error("tensor {name:?} has {n_dims} dimensions; at most {limit} are allowed")]
    TooManyDims {
        name: String,
        n_dims: u32,
        limit: u32,
    },
    #[error("tensor {name:?} has size 0 in dimension {axis}")]
    ZeroDim { name: String, axis: usize },
    #[error("tensor {name:?} uses ggml type {id} ({type_name}), which ggml has removed")]
    RemovedType {
        name: String,
        id: u32,
        type_name: &'static str,
    },
    #[error("tensor {name:?} uses unknown ggml type {id}")]
    UnknownType { name: String, id: u32 },
    #[error("tensor {name:?} has more elements than fit in 64 bits")]
    ElementCountOverflow { name: String },
    #[error("tensor {name:?} has a byte size that does not fit in memory addresses")]
    ByteSizeOverflow { name: String },
    #[error(
        "tensor {name:?} has rows of {ne0} elements, not a multiple of {ggml_type}'s block size {block_size}"
    )]
    RowNotBlockMultiple {
        name: String,
        ne0: u64,
        ggml_type: &'static str,
        block_size: u64,
    },
    #[error(
        "tensor {name:?} starts at data offset {offset}, not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor {name:?} spans bytes {start}..{end} but the file is {file_len} bytes long")]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error("tensor {name:?} overlaps tensor {other:?}")]
    TensorOverlap { name: String, other: String },
    #[error("split key {key} is missing")]
    SplitKeyMissing { key: &'static str },
    #[error("split key {key} is {found}, expected {expected}")]
    SplitKeyMismatch {
        key: &'static str,
        found: String,
        expected: u64,
    },
    #[error(
        "file says it is shard {index} of {count} but its name is not NAME-{index:05}-of-{count:05}.gguf"
    )]
    SplitNameMismatch { index: u64, count: u64 },
}
