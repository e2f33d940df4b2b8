//! Parsing and validating one GGUF file's header: metadata and tensor infos.

use std::collections::HashSet;

use indexmap::IndexMap;

use super::cursor::{Cursor, Parse, Stop, align_up};
use super::error::Problem;
use super::ggml_type::{GgmlType, TypeIdError};
use super::value::{Array, StringArray, Value, ValueType};

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

/// Metadata key/value pairs, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: IndexMap<String, Value>,
    /// File offset of each entry's key, index-aligned with `entries`.
    offsets: Vec<u64>,
}

impl Metadata {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)
    }

    /// The value of `key` as a non-negative integer.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// The value of `key` as text.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// Where `key`'s entry starts in the file.
    pub fn offset_of(&self, key: &str) -> Option<u64> {
        self.entries
            .get_index_of(key)
            .and_then(|i| self.offsets.get(i).copied())
    }

    /// All entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
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
pub(crate) fn parse_prefix(buf: &[u8], file_len: u64) -> Parse<GgufHeader> {
    let mut cur = Cursor::new(buf, file_len);
    let version = read_preamble(&mut cur)?;
    let tensor_count = cur.u64("tensor count")?;
    let kv_count = cur.u64("metadata count")?;
    let metadata = read_metadata(&mut cur, kv_count)?;
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

/// How many bytes the header spans (to the end of the tensor infos), found by
/// walking its structure without building any value: far cheaper than a parse,
/// so the header-only reader can size its read before parsing once.
///
/// It applies the same bounds as the parse; content checks are left to it.
pub(crate) fn header_extent(buf: &[u8], file_len: u64) -> Parse<u64> {
    let mut cur = Cursor::new(buf, file_len);
    read_preamble(&mut cur)?;
    let tensor_count = cur.u64("tensor count")?;
    let kv_count = cur.u64("metadata count")?;
    cur.count(kv_count, 8 + 4 + 1, "metadata")?;
    for _ in 0..kv_count {
        cur.string_bytes("metadata key")?;
        let value_type = read_value_type(&mut cur)?;
        skip_value(&mut cur, value_type, 0)?;
    }
    cur.count(tensor_count, 8 + 1 + 4 + 4 + 8, "tensor")?;
    for _ in 0..tensor_count {
        read_tensor_info(&mut cur)?;
    }
    Ok(cur.offset())
}

fn skip_value(cur: &mut Cursor<'_>, ty: ValueType, depth: usize) -> Parse<()> {
    match (ty, ty.fixed_size()) {
        (_, Some(size)) => cur.take(size, "metadata value").map(drop),
        (ValueType::String, None) => cur.string_bytes("string value").map(drop),
        _ => skip_array(cur, depth.saturating_add(1)),
    }
}

fn skip_array(cur: &mut Cursor<'_>, depth: usize) -> Parse<()> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(Stop::bad(
            cur.offset(),
            Problem::ArrayTooDeep {
                limit: MAX_ARRAY_DEPTH,
            },
        ));
    }
    let element_type = read_value_type(cur)?;
    let len = cur.u64("array length")?;
    cur.count(len, element_type.min_size(), "array element")?;
    if let Some(size) = element_type.fixed_size() {
        return cur
            .take(len.saturating_mul(size), "array elements")
            .map(drop);
    }
    for _ in 0..len {
        skip_value(cur, element_type, depth)?;
    }
    Ok(())
}

fn read_preamble(cur: &mut Cursor<'_>) -> Parse<u32> {
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

fn read_metadata(cur: &mut Cursor<'_>, count: u64) -> Parse<Metadata> {
    // key length + value type + smallest value
    let capacity = cur.count(count, 8 + 4 + 1, "metadata")?;
    let mut metadata = Metadata {
        entries: IndexMap::with_capacity(capacity),
        offsets: Vec::with_capacity(capacity),
    };
    for _ in 0..count {
        let key_offset = cur.offset();
        let key_bytes = cur.string_bytes("metadata key")?;
        if key_bytes.is_empty() {
            return Err(Stop::bad(key_offset, Problem::EmptyKey));
        }
        let key = std::str::from_utf8(key_bytes)
            .map_err(|_| Stop::bad(key_offset, Problem::KeyNotUtf8))?;
        let value_type = read_value_type(cur)?;
        let value = read_value(cur, value_type, 0)?;
        if metadata.entries.contains_key(key) {
            return Err(Stop::bad(key_offset, Problem::DuplicateKey(key.to_owned())));
        }
        metadata.entries.insert(key.to_owned(), value);
        metadata.offsets.push(key_offset);
    }
    Ok(metadata)
}

fn read_value_type(cur: &mut Cursor<'_>) -> Parse<ValueType> {
    let at = cur.offset();
    let id = cur.u32("value type")?;
    ValueType::from_id(id).ok_or_else(|| Stop::bad(at, Problem::UnknownValueType(id)))
}

fn read_bool(cur: &mut Cursor<'_>) -> Parse<bool> {
    let at = cur.offset();
    match cur.u8("bool value")? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(Stop::bad(at, Problem::InvalidBool(b))),
    }
}

fn read_value(cur: &mut Cursor<'_>, ty: ValueType, depth: usize) -> Parse<Value> {
    fn le<const N: usize>(cur: &mut Cursor<'_>) -> Parse<[u8; N]> {
        let bytes = cur.take(N as u64, "metadata value")?;
        bytes
            .first_chunk::<N>()
            .copied()
            .ok_or(Stop::NeedBytes(cur.offset()))
    }
    Ok(match ty {
        ValueType::U8 => Value::U8(cur.u8("metadata value")?),
        ValueType::I8 => Value::I8(i8::from_le_bytes(le(cur)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(le(cur)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(le(cur)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(le(cur)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(le(cur)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(le(cur)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(le(cur)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(le(cur)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(le(cur)?)),
        ValueType::Bool => Value::Bool(read_bool(cur)?),
        ValueType::String => Value::String(lossy(cur.string_bytes("string value")?)),
        ValueType::Array => Value::Array(read_array(cur, depth.saturating_add(1))?),
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes a packed run of `N`-byte little-endian values.
fn decode<const N: usize, T>(bytes: &[u8], from_le: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .filter_map(|chunk| chunk.first_chunk::<N>())
        .map(|chunk| from_le(*chunk))
        .collect()
}

fn read_array(cur: &mut Cursor<'_>, depth: usize) -> Parse<Array> {
    let at = cur.offset();
    if depth > MAX_ARRAY_DEPTH {
        return Err(Stop::bad(
            at,
            Problem::ArrayTooDeep {
                limit: MAX_ARRAY_DEPTH,
            },
        ));
    }
    let element_type = read_value_type(cur)?;
    let len = cur.u64("array length")?;
    let capacity = cur.count(len, element_type.min_size(), "array element")?;
    if let Some(size) = element_type.fixed_size() {
        // `count` checked len * size against the file, so this cannot overflow.
        let bytes = cur.take(len.saturating_mul(size), "array elements")?;
        return Ok(match element_type {
            ValueType::U8 => Array::U8(bytes.to_vec()),
            ValueType::I8 => Array::I8(decode(bytes, i8::from_le_bytes)),
            ValueType::U16 => Array::U16(decode(bytes, u16::from_le_bytes)),
            ValueType::I16 => Array::I16(decode(bytes, i16::from_le_bytes)),
            ValueType::U32 => Array::U32(decode(bytes, u32::from_le_bytes)),
            ValueType::I32 => Array::I32(decode(bytes, i32::from_le_bytes)),
            ValueType::F32 => Array::F32(decode(bytes, f32::from_le_bytes)),
            ValueType::U64 => Array::U64(decode(bytes, u64::from_le_bytes)),
            ValueType::I64 => Array::I64(decode(bytes, i64::from_le_bytes)),
            ValueType::F64 => Array::F64(decode(bytes, f64::from_le_bytes)),
            ValueType::Bool => {
                let start = cur.offset().saturating_sub(len);
                let mut out = Vec::with_capacity(bytes.len());
                for (i, &b) in (0u64..).zip(bytes) {
                    match b {
                        0 | 1 => out.push(b == 1),
                        _ => {
                            return Err(Stop::bad(
                                start.saturating_add(i),
                                Problem::InvalidBool(b),
                            ));
                        }
                    }
                }
                Array::Bool(out)
            }
            ValueType::String | ValueType::Array => Array::U8(Vec::new()),
        });
    }
    if element_type == ValueType::String {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(capacity);
        for _ in 0..len {
            bytes.extend_from_slice(cur.string_bytes("string element")?);
            ends.push(bytes.len());
        }
        Ok(Array::String(StringArray::from_utf8_lossy(bytes, ends)))
    } else {
        let mut out = Vec::with_capacity(capacity);
        for _ in 0..len {
            out.push(read_array(cur, depth.saturating_add(1))?);
        }
        Ok(Array::Array(out))
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
    // name length + 1-byte name + n_dims + type + offset
    let capacity = cur.count(count, 8 + 1 + 4 + 4 + 8, "tensor")?;
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

fn read_tensor_info(cur: &mut Cursor<'_>) -> Parse<TensorInfo> {
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
