//! Parsing and validating one GGUF file's header: metadata and tensor infos.

use std::collections::HashSet;

use super::cursor::{Cursor, Parse, Stop, align_up};
use super::error::Problem;
#[cfg(doc)]
use super::extent::HeaderWalk;
use super::extent::MIN_TENSOR_INFO_BYTES;
use super::ggml_type::{GgmlType, TypeIdError};
use super::limits::HeaderLimits;
use super::metadata::{Decode, Metadata, lossy, read_metadata};
use super::value::Value;

/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest tensor name the GGUF spec allows, in bytes.
pub const MAX_TENSOR_NAME_BYTES: usize = 64;
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays inside arrays the reader accepts.
pub const MAX_ARRAY_DEPTH: usize = 16;
/// Metadata key that sets the data alignment.
pub const KEY_ALIGNMENT: &str = "general.alignment";

const MAGIC: &[u8; 4] = b"GGUF";

/// One tensor's description: where its bytes are and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, unique within the model.
    pub name: String,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Shape in ggml order (`ne0`, the contiguous dimension, first).
    pub dims: Vec<u64>,
    /// Number of elements (product of `dims`).
    pub n_elements: u64,
    /// Absolute offset of the first data byte in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
    /// Offset of this tensor's info record in the header (for error messages).
    pub info_offset: u64,
}

/// A parsed and validated GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata entries.
    pub metadata: Metadata,
    /// Tensor infos in file order, validated against the file length.
    pub tensors: Vec<TensorInfo>,
    /// Data section alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Length of the file the header was read from.
    pub file_len: u64,
}

/// Parses the header in `buf`, the first bytes of a file `file_len` bytes long.
///
/// `entry_ends` is where each metadata entry ends, as a [`HeaderWalk`] of the
/// same bytes found it (or empty): a [`Decode::Summary`] parse jumps over its
/// unread arrays instead of walking them again.
pub(crate) fn parse_prefix(
    buf: &[u8],
    file_len: u64,
    caps: &HeaderLimits,
    decode: Decode,
    entry_ends: &[u64],
) -> Parse<GgufHeader> {
    let mut cur = Cursor::new(buf, file_len);
    let version = read_preamble(&mut cur)?;
    let tensor_count = cur.u64("tensor count")?;
    let kv_count = cur.u64("metadata count")?;
    let metadata = read_metadata(&mut cur, kv_count, caps, decode, entry_ends)?;
    let alignment = alignment_of(&metadata)?;
    let mut tensors = read_tensor_infos(&mut cur, tensor_count)?;
    let end_of_infos = cur.offset();
    // Overflow needs a header near 2^64 bytes; treat it as "no room", which fails every tensor.
    let data_offset = align_up(end_of_infos, alignment).unwrap_or(u64::MAX);
    place_tensors(&mut tensors, data_offset, alignment, cur.file_len())?;
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        file_len: cur.file_len(),
    })
}

/// How many bytes the header spans (to the end of the tensor infos), walked
/// in one go over `buf`: see [`HeaderWalk`] for the resumable form.
#[cfg(test)]
pub(crate) fn header_extent(buf: &[u8], file_len: u64, caps: &HeaderLimits) -> Parse<u64> {
    super::extent::HeaderWalk::default().advance(buf, file_len, caps)
}

pub(super) fn read_preamble(cur: &mut Cursor<'_>) -> Parse<u32> {
    let magic = cur.take(4, "magic")?;
    if magic != MAGIC {
        return Err(Stop::bad(
            0,
            Problem::NotGguf {
                found: String::from_utf8_lossy(magic).into_owned(),
            },
        ));
    }
    let version = cur.u32("version")?;
    match version {
        2 | 3 => Ok(version),
        // A big-endian writer stores small versions with the low bytes zero.
        v if v & 0xFFFF == 0 && matches!(v.swap_bytes(), 1..=3) => {
            Err(Stop::bad(4, Problem::BigEndian(v.swap_bytes())))
        }
        v => Err(Stop::bad(4, Problem::UnsupportedVersion(v))),
    }
}

fn alignment_of(metadata: &Metadata) -> Parse<u64> {
    let Some(value) = metadata.get(KEY_ALIGNMENT) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let at = metadata.offset_of(KEY_ALIGNMENT).unwrap_or(0);
    let Value::U32(alignment) = *value else {
        return Err(Stop::bad(
            at,
            Problem::WrongKeyType {
                key: KEY_ALIGNMENT,
                found: value.value_type(),
                expected: "UINT32",
            },
        ));
    };
    let alignment = u64::from(alignment);
    if !alignment.is_power_of_two() {
        return Err(Stop::bad(at, Problem::BadAlignment(alignment)));
    }
    Ok(alignment)
}

fn read_tensor_infos(cur: &mut Cursor<'_>, count: u64) -> Parse<Vec<TensorInfo>> {
    let capacity = cur.count(count, MIN_TENSOR_INFO_BYTES, "tensor")?;
    let mut tensors = Vec::with_capacity(capacity);
    let mut names = HashSet::with_capacity(capacity);
    for _ in 0..count {
        let info = read_tensor_info(cur)?;
        if !names.insert(info.name.clone()) {
            return Err(Stop::bad(
                info.info_offset,
                Problem::DuplicateTensor(info.name),
            ));
        }
        tensors.push(info);
    }
    Ok(tensors)
}

pub(super) fn read_tensor_info(cur: &mut Cursor<'_>) -> Parse<TensorInfo> {
    let at = cur.offset();
    let name = read_tensor_name(cur)?;
    let n_dims = cur.u32("tensor dimension count")?;
    if n_dims > MAX_DIMS {
        return Err(Stop::bad(
            at,
            Problem::TooManyDims {
                name,
                n_dims,
                limit: MAX_DIMS,
            },
        ));
    }
    let mut dims = Vec::with_capacity(MAX_DIMS as usize);
    for axis in 0..n_dims as usize {
        let dim = cur.u64("tensor dimension")?;
        if dim == 0 {
            return Err(Stop::bad(at, Problem::ZeroDim { name, axis }));
        }
        dims.push(dim);
    }
    let type_id = cur.u32("tensor type")?;
    let ggml_type = GgmlType::from_id(type_id).map_err(|e| {
        let name = name.clone();
        Stop::bad(
            at,
            match e {
                TypeIdError::Removed(type_name) => Problem::RemovedType {
                    name,
                    id: type_id,
                    type_name,
                },
                TypeIdError::Unknown => Problem::UnknownType { name, id: type_id },
            },
        )
    })?;
    let relative_offset = cur.u64("tensor offset")?;
    let (n_elements, size) = tensor_size(&name, &dims, ggml_type).map_err(|p| Stop::bad(at, p))?;
    Ok(TensorInfo {
        name,
        ggml_type,
        dims,
        n_elements,
        offset: relative_offset,
        size,
        info_offset: at,
    })
}

fn read_tensor_name(cur: &mut Cursor<'_>) -> Parse<String> {
    let at = cur.offset();
    let len = cur.u64("tensor name length")?;
    if len > MAX_TENSOR_NAME_BYTES as u64 {
        // Show what fits of the name; its full length is in the message.
        let shown = cur.take(len.min(MAX_TENSOR_NAME_BYTES as u64), "tensor name")?;
        return Err(Stop::bad(
            at,
            Problem::TensorNameTooLong {
                name: format!("{}...", lossy(shown)),
                len: usize::try_from(len).unwrap_or(usize::MAX),
                limit: MAX_TENSOR_NAME_BYTES,
            },
        ));
    }
    let bytes = cur.take(len, "tensor name")?;
    if bytes.is_empty() {
        return Err(Stop::bad(at, Problem::EmptyTensorName));
    }
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| Stop::bad(at, Problem::TensorNameNotUtf8))
}

/// Element count and byte size of a tensor, with every product overflow-checked.
fn tensor_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<(u64, u64), Problem> {
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Problem::ElementCountOverflow {
            name: name.to_owned(),
        })?;
    let ne0 = dims.first().copied().unwrap_or(1);
    let block_size = ty.block_size();
    if ne0.checked_rem(block_size) != Some(0) {
        return Err(Problem::RowNotBlockMultiple {
            name: name.to_owned(),
            ne0,
            ggml_type: ty.name(),
            block_size,
        });
    }
    let rows = n_elements.checked_div(ne0).unwrap_or(0);
    let size = ne0
        .checked_div(block_size)
        .and_then(|blocks| blocks.checked_mul(ty.type_size()))
        .and_then(|row_bytes| row_bytes.checked_mul(rows))
        .filter(|&size| usize::try_from(size).is_ok())
        .ok_or_else(|| Problem::ByteSizeOverflow {
            name: name.to_owned(),
        })?;
    Ok((n_elements, size))
}

/// Turns relative offsets into absolute ones and checks alignment, bounds and overlaps.
fn place_tensors(
    tensors: &mut [TensorInfo],
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Parse<()> {
    for t in tensors.iter_mut() {
        if t.offset.checked_rem(alignment) != Some(0) {
            return Err(Stop::bad(
                t.info_offset,
                Problem::MisalignedTensor {
                    name: t.name.clone(),
                    offset: t.offset,
                    alignment,
                },
            ));
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => t.offset = start,
            _ => {
                return Err(Stop::bad(
                    t.info_offset,
                    Problem::TensorOutOfBounds {
                        name: t.name.clone(),
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        file_len,
                    },
                ));
            }
        }
    }
    check_overlaps(tensors)
}

fn check_overlaps(tensors: &[TensorInfo]) -> Parse<()> {
    let mut by_start: Vec<&TensorInfo> = tensors.iter().collect();
    by_start.sort_by_key(|t| (t.offset, t.info_offset));
    // Sorted by start, ranges are disjoint exactly when each ends before the next begins.
    for pair in by_start.windows(2) {
        let [a, b] = pair else { continue };
        if b.offset < a.offset.saturating_add(a.size) {
            let (first, second) = if a.info_offset < b.info_offset {
                (a, b)
            } else {
                (b, a)
            };
            return Err(Stop::bad(
                second.info_offset,
                Problem::TensorOverlap {
                    name: second.name.clone(),
                    other: first.name.clone(),
                },
            ));
        }
    }
    Ok(())
}
