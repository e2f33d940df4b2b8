//! The GGUF reader: one parser for headers, metadata, tensor infos and split sets.
//!
//! Nothing read from a file is trusted: every count is bounded by the bytes
//! left in the file before anything is allocated, every offset and size is
//! overflow-checked, and a bad file yields a [`GgufError`] naming the file,
//! the byte offset and the problem — never a panic.

#![warn(clippy::arithmetic_side_effects)]

mod cursor;
mod error;
mod extent;
mod file;
mod ggml_type;
mod header;
mod json;
mod limits;
mod metadata;
mod split;
mod summary;
mod value;
pub mod writer;

#[cfg(test)]
mod tests;

pub use error::{GgufError, Problem};
pub use file::{
    MAX_HEADER_BYTES, MappedFile, parse_slice, read_header, read_header_of, read_header_with,
};
pub use ggml_type::{GgmlType, TypeIdError};
pub use header::{
    DEFAULT_ALIGNMENT, GgufHeader, KEY_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_TENSOR_NAME_BYTES,
    TensorInfo,
};
pub use json::value_to_json;
pub use limits::{
    DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_VALUE_BYTES, HeaderLimits, MAX_KEY_BYTES,
};
pub use metadata::{Decode, Metadata, SUMMARY_ARRAY_LEN};
pub use split::{
    GgufModel, KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT, Shard, SplitName,
    shard_paths,
};
pub use summary::{MAX_SUMMARY_TEXT_BYTES, ModelSummary, file_type_name};
pub use value::{Array, StringArray, UnreadArray, Value, ValueType};
